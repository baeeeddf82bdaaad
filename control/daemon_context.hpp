// daemon_context.hpp — the parts of the running daemon that control code acts on.
//
// Purpose: one plain struct of references (store, customer directory, router,
// scheduler) and optional parts (hooks, config, disk guard, resolver
// options, link-monitor counters), filled in by flushgated and handed to the
// command table (commands.hpp), the link-event path (link_events.hpp), the
// status report and the HTTP API. Its own header so that those depend on it
// one way, and not on each other.
// Security: none of its own; whoever holds it can change everything.
// Errors: none (data only).
#pragma once

#include "core/config.hpp"
#include "gateway/customer_directory.hpp"
#include "gateway/recipient_book.hpp"
#include "gateway/dns/mx_resolver.hpp"
#include "gateway/flush/router.hpp"
#include "gateway/flush/scheduler.hpp"
#include "linkmon/hooks.hpp"
#include "linkmon/pcap_sniffer.hpp"
#include "linkmon/radius_listener.hpp"
#include "queue/cluster_bus.hpp"
#include "queue/disk_guard.hpp"
#include "queue/store_worker.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace flushgate::control {

class cluster_sync;

// The parts of the daemon the commands act on. The optional parts are set
// by flushgated; tests may leave them out (the commands that need one say so).
struct daemon_context {
  queue::store_worker& store;
  gateway::customer_directory& customers;
  gateway::router& router;
  gateway::scheduler& scheduler;
  linkmon::hook_runner* hooks = nullptr;              // operator scripts on link and flush events
  const core::config* config = nullptr;               // the effective configuration (config.show)
  queue::disk_guard* disk = nullptr;                  // headroom (status, metrics)
  const gateway::mx_options* dns = nullptr;           // the resolver and "self" (doctor)
  linkmon::radius_listener* radius = nullptr;         // its counters (metrics)
  std::vector<linkmon::pcap_sniffer*> sniffers;       // their counters (metrics)
  std::string hostname;                               // myhostname
  std::string node;                                   // node_name
  // A cluster (store = postgresql): tells the other nodes what this one
  // changed (cluster_sync.hpp); unset on one node.
  std::function<void(queue::cluster_signal)> announce;
  const cluster_sync* cluster = nullptr;              // its state (status, cluster status)
  std::int64_t started = 0;                           // unix seconds
  gateway::recipient_book* known = nullptr;           // learn/verify: what servers told (recipients command)
};

}  // namespace flushgate::control
