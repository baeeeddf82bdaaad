// recipient_probe.hpp — recipient verification callouts: asks a customer's
// own server whether it takes an address, without sending mail.
//
// Purpose: the "verify" recipient policy. While a customer's server is
// reachable, the SMTP session can ask it about an address the gateway does
// not know yet: over one pooled SMTP connection per customer (opened on
// demand with smtp_client: EHLO, STARTTLS as client_settings say) the prober
// sends "MAIL FROM:<>", "RCPT TO:<address>" and "RSET"
// (smtp_client::probe_recipient) and turns the RCPT reply into a verdict:
//   good     2xx
//   bad      a "no such user" refusal: the enhanced code 5.1.x when the reply
//            carries one, else 550, 551 or 553
//   unknown  any other 5xx (e.g. 550 5.7.1 policy), 4xx, a timeout, a
//            connection that failed, a refused MAIL FROM:<>, more probes
//            than the rate allows, the customer's connection still busy
//            when the probe's time ran out, a route that is not probed
// The connection is kept for `idle` after its last probe (RSET leaves it
// ready for the next one), dropped on any error, closed after
// `refusals_per_connection` refused RCPTs (servers punish sessions with many
// errors), and closed by forget() when the customer's route changes and by
// close_all() at shutdown.
//
// Only link and host routes are probed (mx, hold and odmr give unknown "not
// probed"); a dual-stack route tries host, then fallback. Dial-up: a callout
// must never bring up (or keep up) a customer's dial-up line — whether a
// link is dial-up is the CALLER's check (the router knows the link kind);
// the prober probes whatever route it is given.
//
// Security: the address comes from an untrusted SMTP client: smtp_client
// refuses one with a control character, '<' or '>' locally (501 5.1.3, so
// "bad", nothing sent). The server's reply is untrusted and bounded by
// smtp_client (line length, line count). Every probe is bounded in time by
// `timeout` as a whole — waiting for the customer's turn, resolving,
// connecting (the time is shared among the route's addresses), greeting,
// EHLO, STARTTLS and the three commands; a stalled peer is cut off by
// closing the connection. At most `per_minute` probes per customer per
// minute reach the customer's server, so a dictionary attack on the gateway
// cannot be turned into one on the customer.
//
// Errors: none as values; every failure is a probe_result with verdict
// unknown and a short reason in `reply` ("timed out", "rate limit", "busy",
// "connect to 127.0.0.1:25: Connection refused", "not probed: mx route",
// "shutting down", or smtp_client's last_error()).
//
// Metrics: flushgate_recipient_probes_total{result=good|bad|unknown}.
//
// Threading and lifetime: one thread (the io_context's). The prober must
// outlive its probes; close_all() before destroying it lets pooled
// connections say QUIT.
//
// Limitations: the STARTTLS policy is client_settings.tls for every customer
// (not the customer's own --tls); one connection per customer, so probes of
// one customer run one at a time; a hostname route is resolved on every
// connect (no cache; mx_resolver's own bound applies, cut off at `timeout`).
//
// See also: RFC 5321 §3.3 (MAIL, RCPT, RSET), §4.5.3.2 (timeouts);
// RFC 2920 §3.1; RFC 3463 §3.2 (X.1.X addressing status); smtp_client.hpp.
#pragma once

#include "gateway/dns/mx_resolver.hpp"
#include "gateway/flush/router.hpp"
#include "gateway/flush/smtp_client.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace flushgate::gateway {

enum class probe_verdict { good, bad, unknown };

// "good", "bad", "unknown" (the metric label and log word).
const char* to_string(probe_verdict v) noexcept;

struct probe_result {
  probe_verdict verdict = probe_verdict::unknown;
  // The server's RCPT reply ("550 5.1.1 <x@y>: Recipient address rejected:
  // ..."), or why the verdict is unknown ("timed out", "rate limit", ...).
  std::string reply;
};

struct probe_settings {
  // The whole probe: waiting for the customer's turn, connecting (if
  // needed), up to the RCPT answer.
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};
  // A pooled connection is closed after this long unused.
  std::chrono::milliseconds idle{std::chrono::seconds(30)};
  // Probes per customer per minute (sliding window); more → unknown "rate limit". 0: no limit.
  std::size_t per_minute = 60;
  // A pooled connection is closed (QUIT) after this many refused RCPTs, and
  // the next probe opens a new one. Postfix counts every refused RCPT as an
  // error of the whole session, RSET does not clear the count, and past
  // smtpd_soft_error_limit (10) it sleeps smtpd_error_sleep_time (1s) before
  // each reply, past smtpd_hard_error_limit (20) it disconnects: one long
  // session would turn a run of unknown addresses into seconds per probe.
  std::size_t refusals_per_connection = 5;
  client_settings client;  // EHLO name, TLS policy, per-command timeouts
};

// The verdict for a reply to RCPT (see the header comment).
probe_verdict classify_rcpt_reply(const peer_reply& reply);

class recipient_prober {
 public:
  // `resolver` resolves a host route's name (an address literal needs no
  // DNS); both must outlive the prober.
  recipient_prober(boost::asio::io_context& io, mx_resolver& resolver, probe_settings settings);
  ~recipient_prober();
  recipient_prober(const recipient_prober&) = delete;
  recipient_prober& operator=(const recipient_prober&) = delete;

  // Asks the server `r` points at whether it takes `address` (without <>):
  // MAIL FROM:<>, RCPT TO:<address>, RSET over the customer's pooled
  // connection. Probes of one customer are serialised; a second caller waits
  // its turn within its own timeout, else unknown "busy". Never throws for
  // I/O; bounded by settings.timeout.
  boost::asio::awaitable<probe_result> probe(std::int64_t customer_id, const route& r,
                                             const std::string& address);
  // The customer's route changed or it went away: closes its pooled
  // connection (one in use is cut, and that probe answers unknown).
  void forget(std::int64_t customer_id);
  // Closes every pooled connection (QUIT, bounded); later probes answer
  // unknown "shutting down".
  void close_all();

  // Pooled connections open right now (in use or idle), for tests and status.
  std::size_t open_connections() const;

 private:
  struct connection;
  struct customer_state;
  struct waiter;

  boost::asio::awaitable<probe_result> run_probe(std::shared_ptr<customer_state> state,
                                                 const route& r, const std::string& address,
                                                 std::chrono::steady_clock::time_point deadline);
  boost::asio::awaitable<std::unique_ptr<connection>> open_connection(
      const route& r, std::chrono::steady_clock::time_point deadline, std::string& error);
  boost::asio::awaitable<bool> take_turn(customer_state& state,
                                         std::chrono::steady_clock::time_point deadline);
  void release_turn(customer_state& state);
  void check_in(const std::shared_ptr<customer_state>& state, std::unique_ptr<connection> c);
  void retire(std::unique_ptr<connection> c);

  boost::asio::io_context& io_;
  mx_resolver& resolver_;
  probe_settings settings_;
  std::map<std::int64_t, std::shared_ptr<customer_state>> customers_;
  bool closing_ = false;
};

}  // namespace flushgate::gateway
