// scheduler.hpp — when each customer's queue is worked.
//
// Purpose: one delivery run per customer at a time (never two concurrent
// flushes for one customer), at most max_runs runs at once, and retry state
// that belongs to the customer, never to an address: after a run that left
// mail behind the customer waits retry_schedule[k] (k = consecutive failed
// runs, the last step repeats); a route change (link up or down) resets that
// and re-evaluates at once.
// When a customer's mail goes out on its own: mode relay whenever its route
// is deliverable; mode hold only while a link is up (the link coming up is
// the trigger) or when asked (operator flush, ETRN); mode odmr never (ATRN).
// Mail that is held on purpose burns no attempts: no run starts for it.
// Errors: request_flush returns why a flush could not start.
#pragma once

#include "gateway/customer_directory.hpp"
#include "gateway/flush/router.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace flushgate::gateway {

// What an operator sees of a customer's current (or last) run.
struct flush_progress {
  bool running = false;
  std::string trigger;                 // "new mail", "retry", "operator", "link up", "etrn", ...
  std::string route;                   // route::describe() of the route used
  std::string link_user;               // the link it runs over, when it does (for hooks):
  std::string link_address;            //   captured at the start, since the link may be
  std::string link_session;            //   gone by the end
  std::uint64_t messages_done = 0;     // messages whose recipients all left the queue
  std::uint64_t bytes_done = 0;
  std::uint64_t recipients_delivered = 0;
  std::uint64_t recipients_failed = 0;  // bounced (DSN queued)
  std::uint64_t recipients_deferred = 0;
  std::uint64_t messages_at_start = 0;  // the customer's queue when the run started
  std::uint64_t bytes_at_start = 0;
  std::string error;                   // why the run left mail behind, "" when it did not
  std::int64_t started = 0;            // unix seconds
  std::int64_t finished = 0;
};

// How a run ended.
struct run_outcome {
  bool nothing_deliverable = false;  // no message could be tried (all held, none queued)
  bool left_mail = false;            // some recipient was deferred (4xx, no connection)
  bool cancelled = false;            // stopped because the route went away (or the lease was lost)
  // Another node holds the customer's delivery lease (lease_keeper.hpp):
  // nothing was tried, and it is no failure — no backoff step; the
  // customer is tried again after retry_after.
  bool held_elsewhere = false;
  std::string holder;                // that node's name
  std::chrono::milliseconds retry_after{0};
  std::string error;
};

// Lets the scheduler stop a run: the run installs a cancel function (closing
// its connection) while it has one open.
struct run_control {
  bool cancelled = false;
  std::function<void()> cancel;
};

enum class flush_refusal { none, unknown_customer, no_route, odmr_only, already_running };

class scheduler {
 public:
  using run_function = std::function<boost::asio::awaitable<run_outcome>(
      std::int64_t customer_id, route r, flush_progress& progress, run_control& control)>;
  using sweep_function = std::function<boost::asio::awaitable<void>()>;
  using done_function = std::function<void(std::int64_t customer_id, const flush_progress&)>;
  // The customer's retry state changed here (a run left mail, a run went
  // well, a route change reset it): failures 0 means none. For a cluster,
  // which shares it (control/cluster_sync.hpp).
  // A run found the customer's lease held by another node (`holder`):
  // whatever asked for it (new mail, or a forced trigger: operator, ETRN)
  // must reach that node. For a cluster (control/cluster_sync.hpp).
  using held_function = std::function<void(std::int64_t customer_id, const std::string& trigger,
                                           bool forced, const std::string& holder)>;
  using retry_function = std::function<void(std::int64_t customer_id, int failures,
                                            std::chrono::system_clock::time_point next_try)>;

  struct settings {
    std::vector<std::chrono::seconds> retry_schedule{std::chrono::minutes(5)};
    std::size_t max_runs = 20;
    std::chrono::seconds sweep_interval{60};
  };

  scheduler(boost::asio::io_context& io, customer_directory& customers, router& routes,
            settings s, run_function run, sweep_function sweep);

  // Starts the timer loop; customers with queued mail are tried at once.
  void start();
  void stop();
  // Called after the flush of a customer finished (hooks, logs).
  void on_done(done_function f) { on_done_ = std::move(f); }
  void on_retry(retry_function f) { on_retry_ = std::move(f); }
  void on_held_elsewhere(held_function f) { on_held_ = std::move(f); }

  // New mail was committed for the customer.
  void mail_queued(std::int64_t customer_id);
  // Starts a run now whatever the backoff (operator flush, ETRN, link up).
  flush_refusal request_flush(std::int64_t customer_id, const std::string& trigger);
  // The customer's route may have changed: reset the backoff, cancel a run
  // whose route is gone, and start one if mail can go out now.
  void route_changed(std::int64_t customer_id, const std::string& trigger);

  // An ATRN session delivers the customer's mail itself: while it does, no
  // other run starts for the customer. False when one is already going on.
  bool begin_external(std::int64_t customer_id, const std::string& trigger);
  // The session ended; delivered false: it delivered nothing (its lease was
  // held elsewhere), so the flush is not reported as done.
  void end_external(std::int64_t customer_id, bool delivered = true);

  // Cluster: the retry state other nodes left (queue::store::list_retries,
  // every row), as read after retry_generation() was `since`. A customer
  // not running here takes a row's backoff when it is longer than its own;
  // a customer with failures here but no row was delivered (or reset) by
  // another node since, and loses its backoff. A customer whose retry state
  // changed here after `since` is left as it is: the rows may predate that.
  void adopt_retries(const std::vector<queue::retry_record>& rows, std::uint64_t since);
  // Grows with every change of a customer's retry state on this node.
  std::uint64_t retry_generation() const noexcept { return retry_generation_; }
  // Cluster: the node holding the customer's lease gave it back; a run that
  // waits for it starts now.
  void lease_released(std::int64_t customer_id);
  // Cluster: the customer has queued mail (another node took it in); it is
  // tried when its retry state allows, without a rerun of a running flush.
  void note_queued(std::int64_t customer_id);

  const flush_progress* progress(std::int64_t customer_id) const;
  bool running(std::int64_t customer_id) const;
  // Seconds until the next automatic attempt, -1 when none is planned.
  std::int64_t next_attempt_in(std::int64_t customer_id) const;
  // False while the customer's last run failed to reach its server (it left
  // mail behind with an error, e.g. a refused connection): the recipient
  // checks then treat the server as down. True when nothing is known.
  bool server_answering(std::int64_t customer_id) const;

 private:
  struct customer_state {
    bool running = false;
    bool pending = false;   // mail may be waiting that a run should try
    bool rerun = false;     // a trigger came while running
    std::string rerun_trigger;
    int failures = 0;       // consecutive runs that left mail behind
    bool server_down = false;  // the last finished run could not reach the server (kept while a retry runs)
    bool waiting_for_lease = false;  // the last run found the lease held by another node
    std::uint64_t retry_changed_at = 0;  // retry_generation_ of its last local change
    std::chrono::steady_clock::time_point next_try{};
    flush_progress progress;
    run_control* control = nullptr;
  };

  boost::asio::awaitable<void> tick_loop();
  void maybe_start(std::int64_t customer_id, customer_state& st, const std::string& trigger,
                   bool forced);
  boost::asio::awaitable<void> run_one(std::int64_t customer_id, route r, std::string trigger,
                                       bool forced);
  bool auto_delivery(const customer_entry& c, const route& r) const;
  void retry_changed(std::int64_t customer_id, customer_state& st);

  boost::asio::io_context& io_;
  customer_directory& customers_;
  router& routes_;
  settings settings_;
  run_function run_;
  sweep_function sweep_;
  done_function on_done_;
  retry_function on_retry_;
  held_function on_held_;
  std::map<std::int64_t, customer_state> states_;
  std::size_t running_ = 0;
  std::uint64_t retry_generation_ = 0;
  boost::asio::steady_timer timer_;
  bool stopped_ = false;
};

}  // namespace flushgate::gateway
