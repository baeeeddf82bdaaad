// cluster_sync.hpp — keeping one node's in-memory view in step with the
// shared store: signals from the other nodes, and a periodic reconcile.
//
// Purpose: in a cluster (store = postgresql) every node keeps the customer
// directory, the router's links and the scheduler's retry state in memory
// for speed, while the truth is in PostgreSQL. This module keeps them in
// step (ARCHITECTURE.md invariant 9):
//   - signals (queue/cluster_bus.hpp) from other nodes are applied in the
//     order they came, each after reading the facts it names from the store:
//       mail        the customer's queue size again, then "new mail";
//       link        the links again, then "route changed" (a link up forces
//                   a flush: whichever node takes the lease runs it);
//       customer    the customer again (or its removal), then "route changed";
//       flush       a flush (or a rerun after the running one);
//       lease_free  a run that waited for the lease starts now;
//   - the reconcile, every cluster_sync_interval and whenever the bus
//     starts listening again: heartbeat; customers, queue sizes, links and
//     retry state from the store; route changes for whatever differed; and
//     every customer with queued mail marked for the scheduler. Known
//     recipients (learn/verify) are read by their last_seen: the rows other
//     nodes wrote since the last read are merged; every 12th reconcile the
//     row counts per customer are compared too, and a customer whose count
//     differs (another node forgot or expired addresses: no row is left to
//     read) is read whole again. A customer signal reads that customer's
//     known recipients whole. Whatever a
//     lost signal missed is found here, at most one interval late. What this
//     node changed itself while the store was read (a customer, a link:
//     customer_directory and router count their changes) is newer than the
//     snapshot, so that part waits for the next reconcile instead of being
//     overwritten by the older state.
// What this node tells the others goes through announce() (daemon_context),
// called where the change happens (commands, link events) and by the
// scheduler and lease keeper hooks wired in flushgated.
// Security: signals only ever make a node read the store; nothing in a
// payload is trusted beyond a customer id and a trigger text for logs.
// Errors: a store failure during a reconcile is logged (once per streak)
// and the next reconcile tries again; nothing is changed from a failed read.
// See also: queue/cluster_bus.hpp, gateway/flush/lease_keeper.hpp, README
// ("Running several nodes").
#pragma once

#include "control/daemon_context.hpp"
#include "queue/cluster_bus.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <string>

namespace flushgate::control {

struct cluster_settings {
  std::string node;          // node_name
  std::int64_t started = 0;  // unix seconds (heartbeat)
  std::chrono::milliseconds interval{5000};  // cluster_sync_interval
  queue::cluster_bus_options bus;            // conninfo; node_name set from node
};

class cluster_sync {
 public:
  cluster_sync(boost::asio::io_context& io, daemon_context& ctx, cluster_settings s);
  cluster_sync(const cluster_sync&) = delete;
  cluster_sync& operator=(const cluster_sync&) = delete;

  // Starts the bus and the worker (the first reconcile runs once the bus listens,
  // or after one interval if it cannot).
  void start();
  void stop();
  // Tells every other node (never blocks; dropped while the bus is down).
  void announce(queue::cluster_signal s);

  struct state {
    queue::cluster_bus::counters bus;
    std::uint64_t reconciles = 0;
    std::uint64_t applied = 0;          // signals applied
    std::int64_t last_reconcile = 0;    // unix seconds, 0: none yet
    double last_reconcile_seconds = 0;  // how long it took
    bool last_reconcile_ok = false;
  };
  state current() const;
  const cluster_settings& settings() const noexcept { return settings_; }

 private:
  boost::asio::awaitable<void> worker();
  boost::asio::awaitable<void> apply(queue::cluster_signal s);
  boost::asio::awaitable<bool> reconcile();
  boost::asio::awaitable<void> refresh_queued(std::int64_t customer_id);
  // Known recipients: one customer's again from the store; and every
  // customer whose row count differs from this node's (see reconcile()).
  boost::asio::awaitable<void> reload_known(std::int64_t customer_id);
  boost::asio::awaitable<void> reload_known_that_differ(const std::map<std::int64_t, std::uint64_t>& counts);

  boost::asio::io_context& io_;
  daemon_context& ctx_;
  cluster_settings settings_;
  queue::cluster_bus bus_;
  boost::asio::steady_timer wake_;
  std::deque<queue::cluster_signal> inbox_;
  bool reconcile_asked_ = true;
  bool stopped_ = false;
  bool failing_ = false;  // the last reconcile failed (logged once)
  std::int64_t known_since_ = 0;  // unix seconds: known recipients are read from here on
  state state_;
};

}  // namespace flushgate::control
