// lease_keeper.hpp — one delivering node per customer: the delivery lease
// around a run.
//
// Purpose: ARCHITECTURE.md invariant 9. Before a run delivers a customer's
// mail, take() takes the customer's lease in the store (queue::store,
// take_lease) for lease_time; hold() then runs the delivery while renewing
// the lease every lease_time / 3 (sooner after a failed renewal), and
// releases it at the end. When the lease is lost — another holder or
// another fence (lease_lost), or store errors until its local expiry — hold
// cancels the run through its run_control: the run stops, what the next hop
// already answered is recorded, the rest stays queued (at-least-once).
// wrap() turns a scheduler run_function into one that does all of this and
// ends at once, as held_elsewhere (not a failure: no backoff step), while
// another node holds the lease; its retry_after is the time that lease has
// left unless renewed, so that a dead holder is replaced within about the
// lease time (the scheduler's tick adds up to a second). The ODMR session uses take()/hold() itself,
// so that its 450 comes before it reverses the connection.
// Clock: the store judges expiry by its own clock (now = 0: PostgreSQL's
// server clock, so that nodes agree). Locally a lease counts as ours until
// lease_time after the request that took or last renewed it was sent — never
// later than the store's expiry, whatever the clocks say.
// Security: none of its own; the node name comes from the configuration.
// Errors: take() reports store failures in taken::error (the run then ends
// left_mail, with the error, as any store failure does) — unless the lease
// is not required (one node), then the run goes on unfenced.
// See also: queue/store.hpp (delivery leases), scheduler.hpp, delivery.hpp.
// Limitations: the lease fences the store, not the next hop: a node that
// stalls longer than lease_time between two renewals (a frozen process) can
// still hand a message to the customer's server that the new holder hands
// over again — a duplicate, never a loss (invariant 2).
#pragma once

#include "gateway/flush/scheduler.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace flushgate::gateway {

struct lease_settings {
  std::string node;                                // node_name
  std::chrono::milliseconds lease_time{15000};     // cluster_lease_time
  // true (a cluster: store = postgresql): no run without the lease. false
  // (one node: SQLite): nobody else can deliver the customer, so a store
  // failure (a full disk) neither prevents nor stops a run — only a
  // definite answer does (held elsewhere, lease_lost): delivering is what
  // frees a full disk (ARCHITECTURE.md invariant 8).
  bool required = true;
};

class lease_keeper {
 public:
  enum class take_status { ours, held_elsewhere, failed };
  struct taken {
    take_status status = take_status::failed;
    std::int64_t customer_id = 0;
    std::int64_t fence = 0;                            // ours
    bool unfenced = false;                             // ours without a lease (not required)
    std::chrono::steady_clock::time_point valid_until;  // ours: local expiry
    std::string holder;                                // held_elsewhere: its node
    std::chrono::milliseconds holder_left{0};          // held_elsewhere: until its lease ends unless renewed
    boost::system::error_code error;                   // failed
  };

  lease_keeper(queue::store_worker& store, lease_settings s);

  // Takes the customer's lease for this node.
  boost::asio::awaitable<taken> take(std::int64_t customer_id);
  // Runs body (a run that obeys control) while keeping the lease `t` (ours),
  // then releases it. On a lost lease the run is cancelled through control
  // and the outcome says so (cancelled, error "delivery lease lost").
  // t, control and body must outlive the call (pass named objects: g++ 12
  // mishandles non-trivial temporaries in a co_await expression).
  using run_body = std::function<boost::asio::awaitable<run_outcome>()>;
  boost::asio::awaitable<run_outcome> hold(const taken& t, run_control& control,
                                           const run_body& body);
  // Gives the lease `t` (ours) back without running anything.
  boost::asio::awaitable<void> release(const taken& t);
  // `run` behind the lease: take, then hold, or held_elsewhere.
  scheduler::run_function wrap(scheduler::run_function run);

  const lease_settings& settings() const noexcept { return settings_; }
  // Called after this node gave a customer's lease back (a cluster tells
  // the nodes waiting for it: control/cluster_sync.hpp).
  void on_released(std::function<void(std::int64_t customer_id)> f) { on_released_ = std::move(f); }

 private:
  // Renews until cancelled; on a lost lease cancels control and waits to be cancelled.
  boost::asio::awaitable<void> keep(const taken& t, run_control& control, bool& lost);

  queue::store_worker& store_;
  lease_settings settings_;
  std::function<void(std::int64_t)> on_released_;
};

}  // namespace flushgate::gateway
