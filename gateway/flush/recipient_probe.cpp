// recipient_probe.cpp — see recipient_probe.hpp.
//
// A probe, step by step:
//   1. refuse at once what is never probed (route kind, shutdown) and what
//      the customer's rate window does not allow;
//   2. wait for the customer's turn (one probe per customer at a time), at
//      most until the probe's deadline;
//   3. take the pooled connection if it is for the same route and still in
//      step, else resolve and connect (host, then fallback), sharing the time
//      left among the addresses so that a blackholed first address leaves
//      time for the second;
//   4. greeting/EHLO/STARTTLS (a new connection) and MAIL/RCPT/RSET under a
//      watchdog that closes the connection at the deadline — every step of
//      smtp_client has its own (RFC 5321) timeout, but those are minutes;
//   5. pool the connection again (idle timer) or retire it (QUIT, bounded).
#include "gateway/flush/recipient_probe.hpp"

#include "gateway/smtp_reply.hpp"

#include "gateway/gateway_metrics.hpp"

#include "core/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

namespace flushgate::gateway {

namespace asio = boost::asio;
using boost::system::error_code;
using steady = std::chrono::steady_clock;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr auto rate_window = std::chrono::minutes(1);

probe_result unknown(std::string why) { return {probe_verdict::unknown, std::move(why)}; }

// Closes `stream` at `deadline` unless disarmed first. The handler holds only
// the shared flag block, so a completion queued after disarm() touches nothing.
class watchdog {
 public:
  watchdog(asio::io_context& io, steady::time_point deadline, smtp_stream& stream)
      : timer_(io, deadline), shared_(std::make_shared<flags>()) {
    shared_->stream = &stream;
    timer_.async_wait([s = shared_](const error_code& ec) {
      if (ec || s->stream == nullptr) return;
      s->fired = true;
      s->stream->close();
    });
  }
  ~watchdog() { disarm(); }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  void disarm() {
    shared_->stream = nullptr;
    timer_.cancel();
  }
  bool fired() const { return shared_->fired; }

 private:
  struct flags {
    smtp_stream* stream = nullptr;
    bool fired = false;
  };
  asio::steady_timer timer_;
  std::shared_ptr<flags> shared_;
};

using addresses = boost::system::result<std::vector<asio::ip::address>>;

// mx_resolver ignores cancellation; a name lookup runs on in its own
// coroutine and we stop waiting for it at the deadline (nullopt).
asio::awaitable<std::optional<addresses>> resolve_until(asio::io_context& io,
                                                        mx_resolver& resolver,
                                                        const std::string& host,
                                                        steady::time_point deadline) {
  error_code ec;
  const auto literal = asio::ip::make_address(host, ec);
  if (!ec) co_return addresses(std::vector<asio::ip::address>{literal});
  struct box {
    explicit box(asio::io_context& io) : timer(io) {}
    asio::steady_timer timer;
    std::optional<addresses> value;
  };
  auto b = std::make_shared<box>(io);
  b->timer.expires_at(deadline);
  asio::co_spawn(
      io,
      [](std::shared_ptr<box> into, mx_resolver& r, std::string name) -> asio::awaitable<void> {
        into->value = co_await r.resolve_host(std::move(name));
        into->timer.cancel();
      }(b, resolver, host),
      asio::detached);
  co_await b->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return std::move(b->value);
}

// "[192.0.2.7]:25", "mail.acme.test[192.0.2.7]:25" (as delivery words it).
std::string describe_peer(const std::string& name, const asio::ip::address& a, std::uint16_t port) {
  const std::string literal = a.to_string();
  return (name == literal ? "" : name) + "[" + literal + "]:" + std::to_string(port);
}

}  // namespace

const char* to_string(probe_verdict v) noexcept {
  switch (v) {
    case probe_verdict::good: return "good";
    case probe_verdict::bad: return "bad";
    case probe_verdict::unknown: return "unknown";
  }
  return "unknown";
}

probe_verdict classify_rcpt_reply(const peer_reply& reply) {
  if (reply.positive()) return probe_verdict::good;
  // The one rule delivery learns by too (smtp_reply.hpp).
  return refuses_unknown_user(reply.code, reply.enhanced) ? probe_verdict::bad : probe_verdict::unknown;
}

struct recipient_prober::connection {
  route r;                  // the route it was opened for
  std::string where;        // "[127.0.0.1]:25"
  std::unique_ptr<smtp_stream> stream;
  std::unique_ptr<smtp_client> client;
  bool opened = false;      // greeting, EHLO and STARTTLS done
  std::size_t refusals = 0;  // RCPTs the server refused on this connection
};

struct recipient_prober::waiter {
  explicit waiter(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;  // expires at the waiter's deadline; cancelled to hand it the turn
  bool granted = false;
};

struct recipient_prober::customer_state {
  explicit customer_state(asio::io_context& io) : idle(io) {}
  bool busy = false;                          // a probe holds the turn
  std::deque<std::shared_ptr<waiter>> waiters;  // next in line first
  std::deque<steady::time_point> recent;      // probes started in the last minute
  std::unique_ptr<connection> conn;           // the pooled connection while unused
  smtp_stream* active = nullptr;              // the connection's stream while a probe uses it
  std::uint64_t generation = 0;               // bumped by forget(): the one in use is not pooled
  std::uint64_t idle_stamp = 0;               // which check-in the idle timer belongs to
  asio::steady_timer idle;
};

recipient_prober::recipient_prober(asio::io_context& io, mx_resolver& resolver,
                                   probe_settings settings)
    : io_(io), resolver_(resolver), settings_(std::move(settings)) {}

recipient_prober::~recipient_prober() {
  for (auto& [id, state] : customers_) {
    state->idle.cancel();
    if (state->conn) state->conn->stream->close();
  }
}

std::size_t recipient_prober::open_connections() const {
  std::size_t n = 0;
  for (const auto& [id, state] : customers_) n += state->conn != nullptr || state->active != nullptr;
  return n;
}

asio::awaitable<probe_result> recipient_prober::probe(std::int64_t customer_id, const route& r,
                                                      const std::string& address) {
  const auto started = steady::now();
  probe_result out;
  if (closing_) {
    out = unknown("shutting down");
  } else if (r.k != route::kind::link && r.k != route::kind::host) {
    out = unknown("not probed");
  } else {
    auto& slot = customers_[customer_id];
    if (!slot) slot = std::make_shared<customer_state>(io_);
    const std::shared_ptr<customer_state> state = slot;
    while (!state->recent.empty() && started - state->recent.front() >= rate_window) {
      state->recent.pop_front();
    }
    if (settings_.per_minute > 0 && state->recent.size() >= settings_.per_minute) {
      out = unknown("rate limit");
    } else {
      state->recent.push_back(started);
      const auto deadline = started + settings_.timeout;
      // (No co_await inside a condition or a ?: here: g++ 12 miscompiles those.)
      const bool turn = co_await take_turn(*state, deadline);
      if (!turn) {
        out = unknown("busy");
      } else if (closing_) {
        release_turn(*state);
        out = unknown("shutting down");
      } else {
        try {
          out = co_await run_probe(state, r, address, deadline);
        } catch (...) {
          release_turn(*state);
          throw;
        }
        release_turn(*state);
      }
    }
  }
  count_recipient_probe(to_string(out.verdict));
  core::log_debug("customer {}: probe <{}> at {}: {} ({}, {} ms)", customer_id, address,
                  r.describe(), to_string(out.verdict), out.reply,
                  std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started)
                      .count());
  co_return out;
}

asio::awaitable<bool> recipient_prober::take_turn(customer_state& s, steady::time_point deadline) {
  if (!s.busy) {
    s.busy = true;
    co_return true;
  }
  auto w = std::make_shared<waiter>(io_);
  w->timer.expires_at(deadline);
  s.waiters.push_back(w);
  co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  // Granted even when the timer fired at the same moment: the turn is ours
  // and the caller's deadline checks cut the probe short.
  if (w->granted) co_return true;
  s.waiters.erase(std::remove(s.waiters.begin(), s.waiters.end(), w), s.waiters.end());
  co_return false;
}

void recipient_prober::release_turn(customer_state& s) {
  if (s.waiters.empty()) {
    s.busy = false;
    return;
  }
  // Hand the turn straight to the next waiter (busy stays true), so nobody
  // can slip in between.
  auto w = std::move(s.waiters.front());
  s.waiters.pop_front();
  w->granted = true;
  w->timer.cancel();
}

asio::awaitable<probe_result> recipient_prober::run_probe(std::shared_ptr<customer_state> state,
                                                          const route& r,
                                                          const std::string& address,
                                                          steady::time_point deadline) {
  customer_state& s = *state;
  s.idle.cancel();
  std::unique_ptr<connection> c = std::move(s.conn);
  if (c && (c->r != r || !c->client->usable())) retire(std::move(c));
  const std::uint64_t generation = s.generation;
  // A pooled connection the server has closed since (its idle timeout, a
  // restart) fails before any reply: then once more on a new connection.
  for (bool reused = c != nullptr;; reused = false) {
    if (!c) {
      std::string error;
      c = co_await open_connection(r, deadline, error);
      if (!c) co_return unknown(error);
      if (s.generation != generation || closing_) {
        retire(std::move(c));
        co_return unknown("route changed");
      }
    }
    s.active = c->stream.get();
    watchdog dog(io_, deadline, *c->stream);
    probe_result out;
    bool answered = false;
    bool lost = false;  // the connection broke before the RCPT reply
    if (!c->opened) {
      auto opened = co_await c->client->open();
      if (opened) {
        c->opened = true;
      } else {
        out = unknown(c->where + ": " + (c->client->last_error().empty()
                                              ? opened.error().message()
                                              : c->client->last_error()));
      }
    }
    if (c->opened) {
      auto reply = co_await c->client->probe_recipient(address);
      if (reply) {
        answered = true;
        out.verdict = classify_rcpt_reply(*reply);
        out.reply = reply->line();
        if (!reply->positive()) ++c->refusals;
      } else {
        lost = reply.error() == client_errc::connection_lost;
        out = unknown(c->where + ": " + (c->client->last_error().empty()
                                              ? reply.error().message()
                                              : c->client->last_error()));
      }
    }
    dog.disarm();
    s.active = nullptr;
    const bool forgotten = s.generation != generation;
    if (!answered && dog.fired()) out = unknown("timed out");
    if (!answered && forgotten) out = unknown("route changed");
    const bool worn = settings_.refusals_per_connection > 0 &&
                      c->refusals >= settings_.refusals_per_connection;
    if (forgotten || closing_ || worn || !c->client->usable()) {
      retire(std::move(c));
    } else {
      check_in(state, std::move(c));
    }
    if (reused && lost && !dog.fired() && !forgotten && !closing_) {
      core::log_debug("probe: pooled connection lost ({}), connecting again", out.reply);
      continue;
    }
    co_return out;
  }
}

asio::awaitable<std::unique_ptr<recipient_prober::connection>> recipient_prober::open_connection(
    const route& r, steady::time_point deadline, std::string& error) {
  struct candidate {
    std::string name;
    asio::ip::address address;
  };
  std::vector<candidate> candidates;
  std::vector<std::string> errors;
  for (const std::string* name : {&r.host, &r.fallback}) {
    if (name->empty()) continue;
    auto found = co_await resolve_until(io_, resolver_, *name, deadline);
    if (!found) {
      errors.push_back("address of " + *name + ": timed out");
    } else if (!*found) {
      errors.push_back("address of " + *name + ": " + found->error().message());
    } else {
      for (const auto& a : **found) candidates.push_back({*name, a});
    }
  }
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const candidate& c = candidates[i];
    const std::string where = describe_peer(c.name, c.address, r.port);
    const auto left = deadline - steady::now();
    if (left <= steady::duration::zero()) {
      errors.push_back("timed out");
      break;
    }
    // A silent first address must leave time for the next (dual stack).
    const auto budget = left / static_cast<long>(candidates.size() - i);
    tcp::socket socket(io_);
    asio::steady_timer timer(io_, budget);
    auto outcome = co_await (socket.async_connect(tcp::endpoint(c.address, r.port),
                                                  asio::as_tuple(asio::use_awaitable)) ||
                             timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (outcome.index() == 1) {
      errors.push_back("connect to " + where + ": timed out");
      continue;
    }
    if (auto [ec] = std::get<0>(outcome); ec) {
      errors.push_back("connect to " + where + ": " + ec.message());
      continue;
    }
    auto conn = std::make_unique<connection>();
    conn->r = r;
    conn->where = where;
    conn->stream = std::make_unique<smtp_stream>(std::move(socket));
    client_settings cs = settings_.client;
    if (cs.tls_server_name.empty()) cs.tls_server_name = c.name;
    conn->client = std::make_unique<smtp_client>(*conn->stream, std::move(cs));
    if (!r.link_user.empty() && i > 0 && c.name != r.host) {
      core::log_info("link {}: probe connected to {} (its first address did not answer)",
                     r.link_user, where);
    }
    co_return conn;
  }
  if (errors.empty()) errors.push_back("no address for " + r.host);
  error.clear();
  for (const auto& e : errors) error += (error.empty() ? "" : "; ") + e;
  co_return nullptr;
}

void recipient_prober::check_in(const std::shared_ptr<customer_state>& state,
                                std::unique_ptr<connection> c) {
  customer_state& s = *state;
  s.conn = std::move(c);
  const std::uint64_t stamp = ++s.idle_stamp;
  s.idle.expires_after(settings_.idle);
  s.idle.async_wait([this, weak = std::weak_ptr<customer_state>(state), stamp](const error_code& ec) {
    auto locked = weak.lock();
    if (ec || !locked || locked->idle_stamp != stamp || !locked->conn) return;
    retire(std::move(locked->conn));
  });
}

void recipient_prober::retire(std::unique_ptr<connection> c) {
  if (!c) return;
  // QUIT (RFC 5321 §4.1.1.10) when the session allows, never longer than one probe.
  asio::co_spawn(
      io_,
      [](std::unique_ptr<connection> owned, asio::io_context& io,
         steady::duration bound) -> asio::awaitable<void> {
        watchdog dog(io, steady::now() + bound, *owned->stream);
        co_await owned->client->quit();
      }(std::move(c), io_, settings_.timeout),
      asio::detached);
}

void recipient_prober::forget(std::int64_t customer_id) {
  const auto it = customers_.find(customer_id);
  if (it == customers_.end()) return;
  customer_state& s = *it->second;
  ++s.generation;
  ++s.idle_stamp;
  s.idle.cancel();
  retire(std::move(s.conn));
  if (s.active != nullptr) s.active->close();  // the probe using it answers unknown
}

void recipient_prober::close_all() {
  closing_ = true;
  for (const auto& [id, state] : customers_) forget(id);
}

}  // namespace flushgate::gateway
