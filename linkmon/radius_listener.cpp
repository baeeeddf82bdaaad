// radius_listener.cpp — see radius_listener.hpp.
#include "linkmon/radius_listener.hpp"

#include "core/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <array>
#include <bit>
#include <exception>
#include <memory>
#include <system_error>

namespace flushgate::linkmon {

namespace asio = boost::asio;
using asio::ip::udp;

namespace {

// One octet more than the largest datagram accepted: a read that fills the
// whole buffer was truncated by the kernel (RFC 2866 §3: at most 4095 octets;
// up to 4096 is let through as padding past Length).
constexpr std::size_t receive_buffer_size = 4097;

// "192.0.2.1:1813" or "[2001:db8::1]:1813" for logs: an IPv6 address in
// brackets, so that its port cannot be read as its last group.
std::string endpoint_text(const udp::endpoint& peer) {
  const auto address = peer.address().to_string();
  const auto port = std::to_string(peer.port());
  return peer.address().is_v6() ? "[" + address + "]:" + port : address + ":" + port;
}

// Counts a drop; logs it at warning level when the count is a power of two.
void count_drop(std::atomic<std::uint64_t>& counter, const char* what, const udp::endpoint& peer) {
  const auto n = ++counter;
  if (std::has_single_bit(n)) {
    core::log_warning("radius: dropped a packet from {}: {} ({} so far)", endpoint_text(peer), what, n);
  } else {
    core::log_debug("radius: dropped a packet from {}: {}", endpoint_text(peer), what);
  }
}

const char* kind_name(link_event::kind k) {
  switch (k) {
    case link_event::kind::up: return "up";
    case link_event::kind::down: return "down";
    case link_event::kind::nas_reset: return "nas_reset";
  }
  return "?";
}

}  // namespace

radius_listener::radius_listener(asio::any_io_executor ex, radius_listener_options options,
                                 link_event_handler handler)
    : ex_(std::move(ex)), options_(std::move(options)), handler_(std::move(handler)), idle_(ex_) {}

void radius_listener::open() {
  for (const auto& ep : options_.addresses) {
    udp::socket s(ex_);
    boost::system::error_code ec;
    s.open(ep.protocol(), ec);
    // IPv6 only: lets "[::]:1813" sit beside "0.0.0.0:1813" on the same port,
    // and IPv4 NASes never arrive as IPv4-mapped sources (as smtpd_listen).
    if (!ec && ep.address().is_v6()) s.set_option(asio::ip::v6_only(true), ec);
    if (!ec) s.bind(ep, ec);
    if (ec) throw std::system_error(ec, "radius: cannot listen on " + endpoint_text(ep));
    sockets_.push_back(std::move(s));
  }
}

std::vector<udp::endpoint> radius_listener::local_endpoints() const {
  std::vector<udp::endpoint> out;
  for (const auto& s : sockets_) {
    boost::system::error_code ec;
    auto ep = s.local_endpoint(ec);
    if (!ec) out.push_back(ep);
  }
  return out;
}

void radius_listener::spawn(asio::awaitable<void> task) {
  ++active_;
  asio::co_spawn(ex_, std::move(task), [this](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        core::log_error("radius: internal error: {}", ex.what());
      }
    }
    if (--active_ == 0) idle_.cancel();
  });
}

asio::awaitable<void> radius_listener::run() {
  for (std::size_t i = 0; i < sockets_.size(); ++i) spawn(receive_loop(i));
  // Wait until every receive loop and every lane has finished (after stop()).
  while (active_ > 0) {
    idle_.expires_at(asio::steady_timer::time_point::max());
    co_await idle_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

void radius_listener::stop() {
  asio::post(ex_, [this] {
    stopped_ = true;
    for (auto& s : sockets_) {
      boost::system::error_code ignored;
      s.close(ignored);
    }
  });
}

radius_counters radius_listener::counters() const {
  radius_counters c;
  c.received = counters_.received.load();
  c.answered = counters_.answered.load();
  c.ignored = counters_.ignored.load();
  c.dropped_unknown_source = counters_.dropped_unknown_source.load();
  c.dropped_bad_authenticator = counters_.dropped_bad_authenticator.load();
  c.dropped_malformed = counters_.dropped_malformed.load();
  c.dropped_busy = counters_.dropped_busy.load();
  c.duplicates = counters_.duplicates.load();
  c.handler_failures = counters_.handler_failures.load();
  return c;
}

asio::awaitable<void> radius_listener::receive_loop(std::size_t index) {
  auto buffer = std::make_unique<std::array<std::uint8_t, receive_buffer_size>>();
  while (!stopped_) {
    udp::endpoint peer;
    auto [ec, n] = co_await sockets_[index].async_receive_from(asio::buffer(*buffer), peer,
                                                               asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (stopped_ || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) break;
      core::log_warning("radius: receive failed: {}", ec.message());
      continue;
    }
    handle_datagram(index, peer, std::span<const std::uint8_t>(buffer->data(), n));
  }
}

void radius_listener::handle_datagram(std::size_t index, const udp::endpoint& peer,
                                      std::span<const std::uint8_t> datagram) {
  ++counters_.received;
  if (datagram.size() >= receive_buffer_size) {
    count_drop(counters_.dropped_malformed, "datagram longer than 4096 octets", peer);
    return;
  }
  // Only configured NASes, each with its own secret (PROTOCOLS.md §10 item 12).
  const nas_client* nas = options_.clients.find(peer.address());
  if (nas == nullptr) {
    count_drop(counters_.dropped_unknown_source, "source is not a configured NAS", peer);
    return;
  }
  auto parsed = parse_accounting_request(datagram, nas->secret);
  if (!parsed) {
    if (parsed.error() == radius_errc::bad_authenticator) {
      count_drop(counters_.dropped_bad_authenticator, "bad Request Authenticator (wrong secret?)", peer);
    } else {
      ++counters_.dropped_malformed;
      core::log_debug("radius: dropped a packet from NAS {} ({}): {}", nas->name, endpoint_text(peer),
                      parsed.error().message());
    }
    return;
  }
  const auto& request = *parsed;
  const auto now = clock::now();
  expire_cache(now);

  // Retransmission? Same socket, source, port and Identifier, same authenticator.
  const cache_key key{index, peer, request.identifier};
  if (auto it = cache_.find(key); it != cache_.end()) {
    if (it->second.authenticator == request.authenticator) {
      ++counters_.duplicates;
      if (!it->second.response.empty()) send(key, it->second.response);
      // Still with the handler: the answer goes out when it returns.
      return;
    }
    cache_.erase(it);  // a new request that reuses the Identifier
  }

  auto response = build_accounting_response(request, nas->secret);
  auto event = to_link_event(request, peer.address().to_string(), "radius");
  if (!event) {
    // Nothing for flushgate in it, but the NAS must hear that it arrived.
    ++counters_.ignored;
    remember(key, request.authenticator, response);
    send(key, std::move(response));
    return;
  }
  if (in_flight_ >= options_.max_in_flight) {
    count_drop(counters_.dropped_busy, "too many requests in flight", peer);
    return;
  }
  core::log_debug("radius: {} from NAS {}: user={}, session={}, address={}, ipv6={}, prefix={}",
                  kind_name(event->k), nas->name, event->user, event->session_id, event->address,
                  event->ipv6_address, event->ipv6_prefix);
  cache_.emplace(key, cache_entry{request.authenticator, {}, clock::time_point::max()});
  std::string lane = event->k == link_event::kind::nas_reset ? "n:" + event->nas : "u:" + event->user;
  auto& queue = lanes_[lane];
  queue.push_back(job{key, request.authenticator, std::move(*event), std::move(response)});
  ++in_flight_;
  if (queue.size() == 1) spawn(process_lane(std::move(lane)));
}

asio::awaitable<void> radius_listener::process_lane(std::string lane) {
  // One event of a user (or NAS) at a time, in arrival order.
  for (;;) {
    auto it = lanes_.find(lane);
    if (it == lanes_.end() || it->second.empty()) break;
    job j = std::move(it->second.front());  // the front stays as the "busy" marker
    bool ok = false;
    try {
      ok = co_await handler_(j.event);
    } catch (const std::exception& e) {
      core::log_error("radius: link event handler failed for user {}: {}", j.event.user, e.what());
    }
    finish(j, ok);
    it = lanes_.find(lane);
    it->second.pop_front();
    --in_flight_;
    if (it->second.empty()) {
      lanes_.erase(it);
      break;
    }
  }
}

void radius_listener::finish(job& j, bool ok) {
  auto it = cache_.find(j.key);
  const bool current = it != cache_.end() && it->second.authenticator == j.authenticator;
  if (!ok) {
    // Not recorded: no answer (RFC 2866 §4.1), and forget the request so that
    // the NAS's retransmission is handled afresh.
    ++counters_.handler_failures;
    if (current) cache_.erase(it);
    return;
  }
  if (!current) return;  // the NAS has moved on to a new request with this Identifier
  cache_.erase(it);
  remember(j.key, j.authenticator, j.response);
  send(j.key, std::move(j.response));
}

void radius_listener::remember(const cache_key& key, const radius_authenticator& authenticator,
                               std::vector<std::uint8_t> response) {
  const auto expires = clock::now() + options_.duplicate_window;
  // Bounded: when full, forget the oldest answers first (entries still with
  // the handler are at most max_in_flight and are never in expiry_).
  while (cache_.size() >= options_.max_remembered && !expiry_.empty()) {
    auto [when, old] = expiry_.front();
    expiry_.pop_front();
    if (auto it = cache_.find(old); it != cache_.end() && it->second.expires == when) cache_.erase(it);
  }
  cache_[key] = cache_entry{authenticator, std::move(response), expires};
  expiry_.emplace_back(expires, key);
}

void radius_listener::expire_cache(clock::time_point now) {
  while (!expiry_.empty() && expiry_.front().first <= now) {
    auto [when, key] = expiry_.front();
    expiry_.pop_front();
    // The entry may have been replaced since; only remove the one this record is for.
    if (auto it = cache_.find(key); it != cache_.end() && it->second.expires == when) cache_.erase(it);
  }
}

void radius_listener::send(const cache_key& key, std::vector<std::uint8_t> response) {
  auto& socket = sockets_[std::get<0>(key)];
  if (!socket.is_open()) return;
  auto buffer = std::make_shared<std::vector<std::uint8_t>>(std::move(response));
  ++counters_.answered;
  socket.async_send_to(asio::buffer(*buffer), std::get<1>(key),
                       [buffer](const boost::system::error_code& ec, std::size_t) {
                         if (ec && ec != asio::error::operation_aborted) {
                           core::log_warning("radius: sending a response failed: {}", ec.message());
                         }
                       });
}

}  // namespace flushgate::linkmon
