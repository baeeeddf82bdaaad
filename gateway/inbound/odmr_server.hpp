// odmr_server.hpp — On-Demand Mail Relay, the provider side (RFC 2645).
//
// Purpose: a customer with a dynamic address connects (usually fetchmail in
// ODMR mode), authenticates, and asks with ATRN for its domains' mail; the
// gateway answers 250, the roles swap on the same TCP connection (TLS kept),
// and the gateway delivers to the customer's server behind it with the
// ordinary SMTP client.
// States (RFC 2645 §5): initial (EHLO, AUTH, QUIT, STARTTLS) → authenticated
// (ATRN, QUIT) → reversed. Other commands get 502.
// Security: ATRN hands out only domains the authenticated customer owns
// (invariant 5): any other domain in the list refuses the whole request
// (450). CRAM-MD5 always (RFC 2645 requires it, fetchmail sends nothing
// else); PLAIN and LOGIN only under TLS. Failed logins are slowed down and the
// third ends the session. Lines are bounded, every read has a timeout, the
// session has a deadline.
// Errors: every outcome is a one-line reply (FETCHMAIL.md: fetchmail reads one
// line per ATRN/AUTH step): 250, 450, 451, 453, 502, 530 (RFC 2645 §7).
// See also: RFC 2645, RFC 4954, FETCHMAIL.md.
#pragma once

#include "gateway/customer_directory.hpp"
#include "gateway/flush/delivery.hpp"
#include "gateway/flush/lease_keeper.hpp"
#include "gateway/flush/scheduler.hpp"
#include "gateway/inbound/smtp_server.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include <chrono>
#include <list>
#include <memory>
#include <string>

namespace flushgate::core {
class config;
}

namespace flushgate::gateway {

struct odmr_settings {
  std::string hostname = "localhost";
  std::chrono::seconds timeout{300};          // each command
  std::chrono::seconds session_timeout{3600};
  std::size_t command_line_limit = 512;
  std::size_t max_connections = 100;

  static odmr_settings from_config(const core::config& cfg, const std::string& hostname);
};

struct odmr_services {
  customer_directory& customers;
  queue::store_worker& store;
  scheduler& flushes;
  delivery_agent& delivery;
  boost::asio::ssl::context* tls = nullptr;  // STARTTLS on the plain port; required for implicit TLS
  lease_keeper* leases = nullptr;  // the ATRN session holds the customer's delivery lease; null: none
};

class odmr_server {
 public:
  // `plain` listen with STARTTLS offered; `implicit_tls` speak TLS from the first byte.
  odmr_server(boost::asio::io_context& io, odmr_settings settings, odmr_services services,
              acceptor_list plain, acceptor_list implicit_tls);
  ~odmr_server();

  void start();
  // Stops accepting and cuts every session off (a reversed session's
  // undelivered mail stays queued).
  void stop();

  const odmr_settings& settings() const { return settings_; }
  odmr_services& services() { return services_; }

 private:
  class session;
  boost::asio::awaitable<void> accept_loop(boost::asio::ip::tcp::acceptor& acceptor, bool implicit_tls);

  boost::asio::io_context& io_;
  odmr_settings settings_;
  odmr_services services_;
  acceptor_list plain_;
  acceptor_list implicit_tls_;
  std::list<std::weak_ptr<session>> sessions_;
  std::uint64_t next_id_ = 1;
};

}  // namespace flushgate::gateway
