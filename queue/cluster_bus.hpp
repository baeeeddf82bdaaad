// cluster_bus.hpp — signals between the nodes of a cluster, over PostgreSQL
// LISTEN/NOTIFY.
//
// Purpose: a node that learns something another node must act on at once —
// new mail for a customer whose route is deliverable, a link up or down, a
// customer changed, a flush asked for, a delivery lease given back — says
// so here, and every other node hears it within milliseconds. The bus is a
// hint, never the truth: the store holds the facts, the receiver reads
// them there, and a periodic reconcile (control/cluster_sync.hpp) catches
// whatever a lost notification missed (ARCHITECTURE.md invariant 9).
// Design: one thread with its own database connection (the store's
// connection belongs to the store thread). It LISTENs on the channel
// `flushgate`, waits in poll() on that connection and on an eventfd that
// publish() rings, sends queued signals as one statement per batch
// (pg_notify over unnest), and hands every signal of another node to the
// handler on the daemon's executor. PostgreSQL delivers a NOTIFY to every
// listening session, the sender's own included: the receiver drops the
// signals its own node sent (by node name).
// Wire format: "node<TAB>to<TAB>kind<TAB>customer_id<TAB>text" (at most
// 1,000 bytes; the server allows 8,000). A signal with a `to` is for that
// node alone (the lease holder: "run a flush"); the others drop it, so a
// request never bounces between nodes that cannot serve it. Unknown kinds and malformed payloads are
// dropped and counted: an old node hearing a newer one never misreads it.
// Connection loss: the thread reconnects with backoff (min_retry doubling to
// max_retry), logs the loss and the recovery once each, and after every
// (re)connect calls on_listening on the executor: the reconcile runs then,
// because what was said while nobody listened is gone. Signals published
// while disconnected are dropped (counted): the reconcile covers them too.
// Security: payloads come from other nodes of the same database (trusted
// as the database is); they are still parsed strictly and bounded.
// Errors: none reach the caller; counters() says what happened.
// Threads: publish() and counters() are safe from any thread; start() and
// stop() from the owner's. The handlers run on the executor given.
// See also: https://www.postgresql.org/docs/15/sql-notify.html,
// control/cluster_sync.hpp (what a node does with a signal).
#pragma once

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace flushgate::queue {

struct cluster_signal {
  enum class kind {
    mail,        // new mail for customer_id, whose route is deliverable
    link,        // a link of customer_id came up or went down (text: what)
    customer,    // customer_id was added, changed or removed (text: its name)
    flush,       // a flush of customer_id was asked for (text: the trigger)
    lease_free,  // the node gave customer_id's delivery lease back
  };
  kind what = kind::mail;
  std::int64_t customer_id = 0;
  std::string text;
  std::string node;  // who said it (set by publish)
  std::string to;    // the one node it is for ("" : every other node)
};

const char* to_string(cluster_signal::kind k) noexcept;
// The NOTIFY payload of s, and back; nullopt for anything malformed.
std::string encode_signal(const cluster_signal& s);
std::optional<cluster_signal> decode_signal(std::string_view payload);

struct cluster_bus_options {
  std::string conninfo;
  std::string node_name;
  std::chrono::milliseconds min_retry{250};
  std::chrono::milliseconds max_retry{5000};
  std::size_t max_pending = 10000;  // signals waiting to be sent; beyond it they are dropped
};

class cluster_bus {
 public:
  using signal_handler = std::function<void(const cluster_signal&)>;
  using listening_handler = std::function<void()>;

  struct counters {
    std::uint64_t sent = 0;
    std::uint64_t received = 0;   // from other nodes, handed to the handler
    std::uint64_t dropped = 0;    // not sent (no connection, queue full) or malformed
    std::uint64_t reconnects = 0;
    bool listening = false;
  };

  cluster_bus(boost::asio::any_io_executor ex, cluster_bus_options options,
              signal_handler on_signal, listening_handler on_listening);
  ~cluster_bus();  // stops
  cluster_bus(const cluster_bus&) = delete;
  cluster_bus& operator=(const cluster_bus&) = delete;

  void start();
  void stop();
  // Queues s (its node is set to ours) for every other node; never blocks.
  void publish(cluster_signal s);
  counters stats() const;

 private:
  void thread_main();
  void wake();

  boost::asio::any_io_executor ex_;
  cluster_bus_options options_;
  signal_handler on_signal_;
  listening_handler on_listening_;
  int wake_fd_ = -1;  // eventfd: publish() and stop() ring it
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mutex_;  // guards pending_ and counters_
  std::deque<std::string> pending_;
  counters counters_;
};

}  // namespace flushgate::queue
