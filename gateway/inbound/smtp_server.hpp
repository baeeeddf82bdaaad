// smtp_server.hpp — the SMTP listener: accepts connections, enforces the
// connection limits, spawns one smtp_session per connection, shuts down
// gracefully.
//
// Purpose: intake of mail for enabled customers (ARCHITECTURE.md).
// Security: connections in total and per client address are bounded
// (smtpd_max_connections, smtpd_max_connections_per_client); excess
// connections get 421 and are closed. Per-session limits live in smtp_session.
// Errors: listen() returns the bind error naming the address; accept errors
// are logged and the loop goes on.
// See also: RFC 5321 §3.8 (421 at shutdown), smtp_session.hpp.
// Wing: gateway/inbound/ takes mail in (SMTP server and session, ODMR
// server, the command, address, DATA and SASL parsers). It may use
// gateway/flush/ (ETRN starts a flush; ODMR hands its turned-around
// connection to delivery), gateway/dns/ and gateway/'s shared pieces;
// nothing outside control/ includes it.
#pragma once

#include "gateway/customer_directory.hpp"
#include "gateway/recipient_book.hpp"
#include "gateway/flush/router.hpp"
#include "gateway/flush/scheduler.hpp"
#include "queue/disk_guard.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

namespace flushgate::core {
class config;
}

namespace flushgate::gateway {

class smtp_session;

// The SMTP server's parameters, read once from the config table.
struct smtpd_settings {
  std::string hostname = "localhost";
  std::string banner = "localhost ESMTP flushgate";
  std::chrono::seconds timeout{300};
  std::chrono::seconds data_timeout{180};
  std::chrono::seconds session_timeout{3600};
  std::chrono::seconds shutdown_grace{30};
  std::uint64_t min_data_rate = 1024;     // bytes/s over the DATA phase; 0 = off
  std::size_t command_line_limit = 512;   // octets incl. CRLF
  std::size_t text_line_limit = 1000;     // octets incl. CRLF
  std::uint64_t message_size_limit = 10 * 1024 * 1024;
  std::size_t recipient_limit = 1000;
  std::size_t max_connections = 500;
  std::size_t max_connections_per_client = 20;
  std::size_t error_limit = 20;
  std::size_t max_hops = 100;
  std::chrono::seconds etrn_min_interval{30};
  bool etrn_report_empty = false;
  // How long after connect a message may wait at commit for the client's
  // reverse name (XFORWARD NAME); 0: no lookup (the name stays unknown).
  std::chrono::milliseconds reverse_lookup_timeout{5000};

  static smtpd_settings from_config(const core::config& cfg, const std::string& hostname);
};

// What a session needs from the rest of the daemon.
struct intake_services {
  customer_directory& customers;
  queue::store_worker& store;
  queue::disk_guard& disk;
  boost::asio::ssl::context* tls = nullptr;  // nullptr: STARTTLS not offered
  // Told about every committed message (the scheduler sends relay mail at once).
  std::function<void(std::int64_t customer_id)> queued;
  // ETRN (and AUTH, which exists for it) are offered when both are set.
  router* routes = nullptr;
  scheduler* flushes = nullptr;
  // learn/verify recipient checks (customer_directory.hpp): what the
  // customers' servers told about, whether a customer's server can be asked
  // now (a deliverable route that is not failing), and asking it (a
  // callout; it records the answer). Unset: an address not known yet always
  // gets the customer's unknown_recipients answer.
  recipient_book* known = nullptr;
  std::function<bool(std::int64_t customer_id)> server_reachable;
  // The client's reverse name, forward-confirmed, or "[UNAVAILABLE]" /
  // "[TEMPUNAVAIL]" (mx_resolver::reverse_name). Unset: no lookup.
  std::function<boost::asio::awaitable<std::string>(boost::asio::ip::address client)> reverse_name;
  std::function<boost::asio::awaitable<known_state>(std::int64_t customer_id, std::string address)>
      verify_recipient;
};

using acceptor_list = std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>>;

// Binds every "host:port" address (port 25 needs root: call this before
// dropping privileges). The sockets are bound, not yet listening: a client
// is refused until start_listening(), so the daemon decides when its ports
// open (after the control socket). On failure returns an empty list and
// names the address.
acceptor_list bind_listeners(boost::asio::io_context& io, const std::vector<std::string>& addresses,
                             std::string& error);
// Makes bound acceptors listen (needs no privilege). On failure returns
// false and names the address in `error` after `what` (the parameter).
bool start_listening(acceptor_list& acceptors, const std::string& what, std::string& error);

class smtp_server {
 public:
  smtp_server(boost::asio::io_context& io, smtpd_settings settings, intake_services services,
              acceptor_list acceptors);
  ~smtp_server();
  // Starts the accept loops.
  void start();
  // Graceful stop: new and idle connections get 421; transactions in progress
  // may finish within shutdown_grace; then every session is cut off.
  boost::asio::awaitable<void> shutdown();

  const smtpd_settings& settings() const { return settings_; }
  intake_services& services() { return services_; }
  bool shutting_down() const { return shutting_down_; }
  std::size_t session_count() const { return sessions_.size(); }
  // The local endpoints actually bound (port 0 resolved), for tests and logs.
  std::vector<boost::asio::ip::tcp::endpoint> local_endpoints() const;

 private:
  friend class smtp_session;
  boost::asio::awaitable<void> accept_loop(boost::asio::ip::tcp::acceptor& acceptor);
  // An ETRN inside etrn_min_interval: one flush for the customer after `wait`.
  void flush_later(std::int64_t customer_id, std::chrono::steady_clock::duration wait);
  boost::asio::awaitable<void> refuse(boost::asio::ip::tcp::socket socket, std::string reply);
  void session_ended(std::list<std::weak_ptr<smtp_session>>::iterator it,
                     const std::string& client_address);

  boost::asio::io_context& io_;
  smtpd_settings settings_;
  intake_services services_;
  acceptor_list acceptors_;
  std::list<std::weak_ptr<smtp_session>> sessions_;
  std::map<std::string, std::size_t> per_client_;
  // When each customer last had an ETRN start a flush (etrn_min_interval).
  std::map<std::int64_t, std::chrono::steady_clock::time_point> last_etrn_;
  std::set<std::int64_t> etrn_pending_;  // customers with a flush_later waiting
  std::uint64_t next_session_id_ = 1;
  bool shutting_down_ = false;
};

}  // namespace flushgate::gateway
