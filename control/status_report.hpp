// status_report.hpp — the daemon's state at a glance: the status snapshot
// (control command "status", the status page, GET /api/v1/status) and the
// Prometheus exposition at /metrics.
//
// Purpose: one place gathers what an operator looks at — customers with
// their activity (relaying, held, flushing, link up), queue depth and
// oldest age, the queue's age histogram, live links, recent events, disk
// headroom — as one JSON object whose schema README "HTTP API" documents.
// render_metrics turns the same snapshot into gauges and adds the counters
// of core::metrics() and of the link monitor.
// Security: reads only; customer names and link users appear in the output
// and are escaped by the renderers (JSON, Prometheus label escaping, HTML).
// Errors: collect_status fails (unavailable) only when the store does.
#pragma once

#include "control/commands.hpp"
#include "core/event_log.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <boost/asio/awaitable.hpp>

#include <string>
#include <vector>

namespace flushgate::control {

// The recent events, newest first: in a cluster the store's list (every
// node's, kept across restarts), else — one node, or the store cannot be
// read — this process's own.
boost::asio::awaitable<std::vector<core::recent_event>> read_recent_events(daemon_context& ctx,
                                                                           std::size_t limit);

// A live link as `link list`, the snapshot and the status page show it:
// both families, the prefix, and the server's IPv6 address on the line
// (`owner`'s ipv6_server applied; nullptr when the customer is unknown).
Poco::JSON::Object::Ptr link_json(const queue::link_record& l, const queue::customer* owner);

// Events as the control channel and the snapshot show them (time, kind,
// customer, text, node).
Poco::JSON::Array::Ptr events_json(const std::vector<core::recent_event>& events);

// The cluster at a glance (control command "cluster.status", `flushgate
// cluster status`, GET /api/v1/cluster, the status page): this node, every
// node that beat (version, start, heartbeat age, alive, leases held), the
// delivery leases (who flushes which customer), and this node's bus and
// reconcile counters. On SQLite: this one node and its leases.
boost::asio::awaitable<command_result> collect_cluster_status(daemon_context& ctx);

// The snapshot; call on the io thread. `now` is unix seconds.
boost::asio::awaitable<command_result> collect_status(daemon_context& ctx, std::int64_t now);

// The /metrics text: counters from core::metrics(), the link monitor's and
// hooks' counters, and gauges from a snapshot made by collect_status.
std::string render_metrics(const daemon_context& ctx, const Poco::JSON::Object::Ptr& status);

}  // namespace flushgate::control
