// smtp_server.cpp — see smtp_server.hpp.
#include "gateway/inbound/smtp_server.hpp"

#include "core/config.hpp"
#include "core/log.hpp"
#include "core/units.hpp"
#include "gateway/smtp_reply.hpp"
#include "gateway/gateway_metrics.hpp"
#include "gateway/inbound/smtp_session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace flushgate::gateway {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

smtpd_settings smtpd_settings::from_config(const core::config& cfg, const std::string& hostname) {
  smtpd_settings s;
  s.hostname = hostname;
  s.banner = cfg.text("smtpd_banner");
  s.timeout = cfg.duration("smtpd_timeout");
  s.data_timeout = cfg.duration("smtpd_data_timeout");
  s.session_timeout = cfg.duration("smtpd_session_timeout");
  s.shutdown_grace = cfg.duration("smtpd_shutdown_grace");
  s.min_data_rate = static_cast<std::uint64_t>(cfg.count("smtpd_min_data_rate"));
  s.command_line_limit = static_cast<std::size_t>(cfg.count("smtpd_command_line_limit"));
  s.text_line_limit = static_cast<std::size_t>(cfg.count("smtpd_text_line_limit"));
  s.message_size_limit = cfg.size("message_size_limit");
  s.recipient_limit = static_cast<std::size_t>(cfg.count("smtpd_recipient_limit"));
  s.max_connections = static_cast<std::size_t>(cfg.count("smtpd_max_connections"));
  s.max_connections_per_client =
      static_cast<std::size_t>(cfg.count("smtpd_max_connections_per_client"));
  s.error_limit = static_cast<std::size_t>(cfg.count("smtpd_error_limit"));
  s.max_hops = static_cast<std::size_t>(cfg.count("max_hops"));
  s.etrn_min_interval = cfg.duration("etrn_min_interval");
  s.etrn_report_empty = cfg.flag("etrn_report_empty");
  s.reverse_lookup_timeout = cfg.duration("smtpd_reverse_lookup_timeout");
  return s;
}

smtp_server::smtp_server(asio::io_context& io, smtpd_settings settings, intake_services services,
                         acceptor_list acceptors)
    : io_(io),
      settings_(std::move(settings)),
      services_(services),
      acceptors_(std::move(acceptors)) {}

smtp_server::~smtp_server() = default;

acceptor_list bind_listeners(asio::io_context& io, const std::vector<std::string>& addresses,
                             std::string& error) {
  acceptor_list acceptors;
  for (const auto& text : addresses) {
    auto host_port = core::parse_host_port(text);
    boost::system::error_code ec;
    auto address = host_port ? asio::ip::make_address(host_port->first, ec) : asio::ip::address{};
    if (!host_port || ec) {
      error = "smtpd_listen: \"" + text + "\" is not an IP address with a port";
      return {};
    }
    tcp::endpoint endpoint(address, host_port->second);
    auto acceptor = std::make_unique<tcp::acceptor>(io);
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && endpoint.address().is_v6()) acceptor->set_option(asio::ip::v6_only(true), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (ec) {
      error = "smtpd_listen: cannot listen on " + text + ": " + ec.message();
      return {};
    }
    acceptors.push_back(std::move(acceptor));
  }
  if (acceptors.empty()) error = "smtpd_listen: no address given";
  return acceptors;
}

bool start_listening(acceptor_list& acceptors, const std::string& what, std::string& error) {
  for (auto& acceptor : acceptors) {
    boost::system::error_code ec;
    acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      boost::system::error_code ignored;
      const auto ep = acceptor->local_endpoint(ignored);
      error = what + ": cannot listen on " + ep.address().to_string() + ":" + std::to_string(ep.port()) +
              ": " + ec.message();
      return false;
    }
  }
  return true;
}

std::vector<tcp::endpoint> smtp_server::local_endpoints() const {
  std::vector<tcp::endpoint> out;
  for (const auto& a : acceptors_) {
    boost::system::error_code ec;
    auto ep = a->local_endpoint(ec);
    if (!ec) out.push_back(ep);
  }
  return out;
}

void smtp_server::start() {
  for (auto& acceptor : acceptors_) {
    core::log_info("smtpd: listening on {}", acceptor->local_endpoint().address().to_string() +
                                                 ":" +
                                                 std::to_string(acceptor->local_endpoint().port()));
    asio::co_spawn(io_, accept_loop(*acceptor), asio::detached);
  }
}

asio::awaitable<void> smtp_server::accept_loop(tcp::acceptor& acceptor) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      core::log_warning("smtpd: accept failed: {}", ec.message());
      // Out of descriptors and the like: pause instead of spinning.
      asio::steady_timer pause(io_, 100ms);
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    boost::system::error_code peer_ec;
    std::string client = socket.remote_endpoint(peer_ec).address().to_string();
    if (peer_ec) continue;  // already gone
    if (shutting_down_) {
      count_smtp_connection("refused_shutdown");
      asio::co_spawn(io_, refuse(std::move(socket),
                                 format_reply(421, "4.3.2", settings_.hostname +
                                                                " Service shutting down")),
                     asio::detached);
      continue;
    }
    if (sessions_.size() >= settings_.max_connections) {
      core::log_warning("smtpd: refusing [{}]: {} connections in total", client, sessions_.size());
      count_smtp_connection("refused_limit");
      asio::co_spawn(io_, refuse(std::move(socket),
                                 format_reply(421, "4.7.0", settings_.hostname +
                                                                " Error: too many connections")),
                     asio::detached);
      continue;
    }
    auto& per_client = per_client_[client];
    if (per_client >= settings_.max_connections_per_client) {
      core::log_warning("smtpd: refusing [{}]: {} connections from this address", client,
                        per_client);
      count_smtp_connection("refused_limit");
      asio::co_spawn(io_,
                     refuse(std::move(socket),
                            format_reply(421, "4.7.0",
                                         settings_.hostname +
                                             " Error: too many connections from your address")),
                     asio::detached);
      continue;
    }
    ++per_client;
    count_smtp_connection("accepted");
    auto session = std::make_shared<smtp_session>(*this, std::move(socket), next_session_id_++);
    auto it = sessions_.insert(sessions_.end(), session);
    // The coroutine frame owns the session; the list holds only weak references.
    asio::co_spawn(
        io_, [session]() -> asio::awaitable<void> { co_await session->run(); },
        [this, it, client](std::exception_ptr error) {
          if (error) {
            try {
              std::rethrow_exception(error);
            } catch (const std::exception& e) {
              core::log_error("smtpd: session with [{}] failed: {}", client, e.what());
            }
          }
          session_ended(it, client);
        });
  }
}

void smtp_server::flush_later(std::int64_t customer_id, std::chrono::steady_clock::duration wait) {
  if (!etrn_pending_.insert(customer_id).second) return;  // one is already waiting
  asio::co_spawn(io_, [this, customer_id, wait]() -> asio::awaitable<void> {
    asio::steady_timer timer(io_, wait);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    etrn_pending_.erase(customer_id);
    if (shutting_down_ || services_.flushes == nullptr) co_return;
    if (services_.flushes->request_flush(customer_id, "etrn") == flush_refusal::none) {
      last_etrn_[customer_id] = std::chrono::steady_clock::now();
    }
  }, asio::detached);
}

asio::awaitable<void> smtp_server::refuse(tcp::socket socket, std::string reply) {
  smtp_stream stream(std::move(socket));
  co_await stream.write_all(reply, 10s);
  stream.close();
}

void smtp_server::session_ended(std::list<std::weak_ptr<smtp_session>>::iterator it,
                                const std::string& client_address) {
  sessions_.erase(it);
  auto pc = per_client_.find(client_address);
  if (pc != per_client_.end() && --pc->second == 0) per_client_.erase(pc);
}

asio::awaitable<void> smtp_server::shutdown() {
  shutting_down_ = true;
  for (auto& weak : sessions_) {
    if (auto s = weak.lock()) s->interrupt_if_idle();
  }
  // Bounded wait for transactions in progress, then cut everyone off.
  asio::steady_timer tick(io_);
  auto wait_empty = [&](std::chrono::steady_clock::duration limit) -> asio::awaitable<void> {
    auto until = std::chrono::steady_clock::now() + limit;
    while (!sessions_.empty() && std::chrono::steady_clock::now() < until) {
      tick.expires_after(50ms);
      co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  };
  co_await wait_empty(settings_.shutdown_grace);
  if (!sessions_.empty()) {
    core::log_info("smtpd: shutdown grace over, closing {} sessions", sessions_.size());
    for (auto& weak : sessions_) {
      if (auto s = weak.lock()) s->interrupt();
    }
    co_await wait_empty(15s);
  }
  for (auto& acceptor : acceptors_) {
    boost::system::error_code ignored;
    acceptor->close(ignored);
  }
}

}  // namespace flushgate::gateway
