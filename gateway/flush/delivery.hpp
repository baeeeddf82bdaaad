// delivery.hpp — one delivery run: a customer's queued mail to its route.
//
// Purpose: the scheduler's run_function. Reads the customer's deliverable
// mail in batches (oldest first), connects to the route (a link's address, a
// configured host, or the MX hosts of each recipient domain), sends each batch
// over one connection with the SMTP client (pipelined), and records every
// recipient's fate: 2xx leaves the queue; 5xx leaves it together with its
// failure DSN in the same transaction; 4xx or a lost connection stays queued
// (at-least-once: a message interrupted mid-transfer goes again later, never
// bounced for that). Also the notice sweep: delay DSNs after
// delay_warning_time, failure DSNs at queue_lifetime.
// Security: what goes out never contains a bare CR or LF (smtp_client);
// DSNs are never sent about DSNs (null sender); routes come from the router
// only — never from the connecting client.
// Errors: the run reports what it left behind in run_outcome.error.
// See also: RFC 5321 §4.5.4, §5.1; RFC 3461 §5.2; RFC 3464; ARCHITECTURE.md
// invariants 2 and 6.
// Wing: gateway/flush/ takes mail out (scheduler, router, delivery, SMTP
// client). It may use gateway/dns/ and gateway/'s shared pieces, never
// gateway/inbound/ (the link graph refuses it: flushgate::gateway_flush does
// not link the inbound wing).
#pragma once

#include "gateway/customer_directory.hpp"
#include "gateway/dns/mx_resolver.hpp"
#include "gateway/flush/scheduler.hpp"
#include "gateway/flush/smtp_client.hpp"
#include "queue/dsn.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace flushgate::gateway {

struct delivery_settings {
  std::string hostname;                    // Reporting-MTA, EHLO name
  client_settings client;                  // timeouts, TLS policy
  std::chrono::seconds connect_timeout{30};
  std::size_t batch_messages = 100;        // messages read and sent per batch, at most
  std::uint64_t batch_bytes = 16 << 20;    // and their contents in memory, at most
  std::chrono::seconds queue_lifetime{5 * 24 * 3600};
  std::chrono::seconds delay_warning{4 * 3600};   // 0: no delay notices
  std::string bounce_relay;                // "host[:port]" for notices; "" = MX
  std::size_t connections_per_customer = 1;  // at once, per run (DSL link, host, MX)
  std::size_t dialup_connections = 1;        // at once over a dial-up link
};

class delivery_agent {
 public:
  // `routes` tells a dial-up link from a DSL one (fewer connections); may be null.
  delivery_agent(boost::asio::io_context& io, delivery_settings settings,
                 customer_directory& customers, queue::store_worker& store, mx_resolver& mx,
                 std::int64_t notices_customer_id, const router* routes = nullptr);

  // Called for every DSN the agent queued (so the scheduler can send it).
  // The customer's server answered RCPT for `address`: took it (good) or
  // refused it as an unknown user (smtp_reply.hpp refuses_unknown_user).
  // The recipient checks learn from it (recipient_book.hpp).
  using recipient_answer_function =
      std::function<void(std::int64_t customer_id, const std::string& address, bool good)>;
  void on_recipient_answer(recipient_answer_function f) { recipient_answer_ = std::move(f); }
  void on_notice_queued(std::function<void(std::int64_t customer_id)> f) {
    notice_queued_ = std::move(f);
  }

  // The scheduler's run_function.
  boost::asio::awaitable<run_outcome> run(std::int64_t customer_id, route r,
                                          flush_progress& progress, run_control& control);
  // ODMR (RFC 2645 §5.3): delivers the customer's mail for `domains` over a
  // connection the customer opened and turned around: reads its 220, EHLO,
  // sends, QUIT, closes. EOF before the 220 or mid-transfer leaves every
  // undelivered recipient queued, without a bounce.
  boost::asio::awaitable<run_outcome> run_turned_around(std::int64_t customer_id,
                                                        smtp_stream& stream,
                                                        std::vector<std::string> domains,
                                                        flush_progress& progress,
                                                        run_control& control);
  // The scheduler's sweep_function: delay notices and expiry for every customer.
  boost::asio::awaitable<void> sweep();

 private:
  struct connection;
  struct destination;
  struct work_item;

  // The customer's --forward-client (xforward for an unknown customer or value).
  client_forwarding forwarding_of(std::int64_t customer_id) const;
  // Connects to the first answering address of `d`. On failure: nullptr, a
  // human reason in `error`, and the resolver's error (if DNS failed) in dns_error.
  boost::asio::awaitable<std::unique_ptr<connection>> connect(const destination& d,
                                                              run_control& control,
                                                              std::string& error,
                                                              boost::system::error_code& dns_error,
                                                              smtp_stream* turned_around);
  boost::asio::awaitable<run_outcome> run_impl(std::int64_t customer_id, route r,
                                               flush_progress& progress, run_control& control,
                                               smtp_stream* turned_around,
                                               const std::vector<std::string>& domains);
  // One connection's share of a run: the messages whose queue id hashes to `lane`.
  boost::asio::awaitable<run_outcome> run_lane(std::int64_t customer_id, route r,
                                               flush_progress& progress, run_control& control,
                                               smtp_stream* turned_around,
                                               const std::vector<std::string>& domains,
                                               std::size_t lane, std::size_t lanes);
  boost::asio::awaitable<bool> record(std::vector<queue::store::attempt>& attempts,
                                      const std::vector<std::uint64_t>& sizes,
                                      std::int64_t customer_id, flush_progress* progress,
                                      std::string& error);
  queue::new_message make_notice(const queue::message_info& m, const std::string& content,
                                 std::vector<queue::dsn_recipient> recipients) const;

  boost::asio::io_context& io_;
  delivery_settings settings_;
  customer_directory& customers_;
  queue::store_worker& store_;
  mx_resolver& mx_;
  std::int64_t notices_customer_id_;
  const router* routes_;
  std::function<void(std::int64_t)> notice_queued_;
  recipient_answer_function recipient_answer_;
};

}  // namespace flushgate::gateway
