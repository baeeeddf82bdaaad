// recipient_checks.hpp — the daemon's side of the learn/verify recipient
// checks: it teaches the recipient book from deliveries and callouts, tells
// the SMTP session whether a customer's server can be asked, asks it, and
// keeps the store in step.
//
// Purpose: glue between gateway/recipient_book (memory), the delivery agent
// (what servers answered), the recipient prober (callouts), the router and
// scheduler (is the server reachable now) and the store (known_recipients,
// written in batches: at most one transaction per `write_interval`). Expiry
// runs every `expire_interval`: known-good addresses go `good_lifetime`
// after they were last seen, known-bad ones after `bad_lifetime`.
// Security: only the customer's own server's answers are learned; callouts
// go only to a link or host route that is up and answering, never over a
// dial-up link (its line is the customer's bottleneck), at most
// probes_per_minute per customer (the prober's limit), each bounded in time.
// Errors: a store write that fails is logged and retried with the next batch;
// what is in memory keeps answering RCPT meanwhile.
#pragma once

#include "gateway/customer_directory.hpp"
#include "gateway/flush/router.hpp"
#include "gateway/flush/scheduler.hpp"
#include "gateway/recipient_book.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace flushgate::control {

class recipient_checks {
 public:
  struct settings {
    std::chrono::seconds good_lifetime{std::chrono::hours(24 * 90)};
    std::chrono::seconds bad_lifetime{std::chrono::hours(24)};
    std::chrono::milliseconds write_interval{std::chrono::seconds(1)};
    std::chrono::milliseconds expire_interval{std::chrono::hours(1)};
  };
  // Asks the customer's server about an address over route `r` (the recipient prober).
  using probe_function = std::function<boost::asio::awaitable<gateway::known_state>(
      std::int64_t customer_id, gateway::route r, std::string address)>;

  recipient_checks(boost::asio::io_context& io, queue::store_worker& store,
                   gateway::customer_directory& customers, gateway::router& routes,
                   gateway::scheduler& scheduler, gateway::recipient_book& book, settings s);

  void set_probe(probe_function f) { probe_ = std::move(f); }

  // The delivery agent's answer hook: learns for learn/verify customers only.
  void delivery_answer(std::int64_t customer_id, const std::string& address, bool good);
  // May the customer's server be asked now: a deliverable route, and its last run reached it.
  bool server_reachable(std::int64_t customer_id) const;
  // A callout (verify customers, route not over a dial-up link); learns the answer.
  boost::asio::awaitable<gateway::known_state> verify(std::int64_t customer_id, std::string address);

  // Writes what was learned and expires old entries until stop().
  boost::asio::awaitable<void> run();
  // Writes what is pending now (tests, shutdown).
  boost::asio::awaitable<void> write_pending();
  void stop();

 private:
  boost::asio::io_context& io_;
  queue::store_worker& store_;
  gateway::customer_directory& customers_;
  gateway::router& routes_;
  gateway::scheduler& scheduler_;
  gateway::recipient_book& book_;
  settings settings_;
  probe_function probe_;
  boost::asio::steady_timer timer_;
  bool stopped_ = false;
};

}  // namespace flushgate::control
