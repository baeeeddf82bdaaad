// status_report.cpp — see status_report.hpp.
#include "control/status_report.hpp"

#include "control/cluster_sync.hpp"
#include "gateway/flush/router.hpp"

#include "core/event_log.hpp"
#include "core/metrics.hpp"

#include <Poco/JSON/Array.h>

#include <algorithm>
#include <map>

namespace flushgate::control {

namespace asio = boost::asio;
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

// The age histogram's buckets: what an operator asks of a held queue
// ("minutes, hours, past the delay notice, close to the bounce").
struct age_band {
  std::int64_t upper;  // seconds
  const char* label;
};
constexpr age_band age_bands[] = {
    {300, "< 5 min"}, {3600, "5 min - 1 h"}, {4 * 3600, "1 - 4 h"},
    {86400, "4 h - 1 d"}, {2 * 86400, "1 - 2 d"}, {5 * 86400, "2 - 5 d"},
};

// What a customer is doing now, in the status page's words.
std::string activity_of(const queue::customer& c, std::uint64_t messages, bool flushing, bool link_up) {
  if (c.state == queue::customer_state::disabled) return "disabled";
  if (c.state == queue::customer_state::suspended) return "suspended";
  if (flushing) return "flushing";
  if (messages > 0) return "held";
  if (link_up) return "link_up";
  if (c.mode == queue::delivery_mode::relay) return "relaying";
  return "idle";
}

std::uint64_t uint_field(const Object::Ptr& o, const std::string& key) {
  if (!o || !o->has(key) || o->get(key).isEmpty()) return 0;
  return o->get(key).convert<std::uint64_t>();
}

std::int64_t int_field(const Object::Ptr& o, const std::string& key) {
  if (!o || !o->has(key) || o->get(key).isEmpty()) return 0;
  return o->get(key).convert<std::int64_t>();
}

void add_gauge(std::string& out, const char* name, const char* help, double value) {
  out += core::render_family_header(name, help, core::metric_type::gauge);
  out += core::render_sample(name, {}, value);
}

void add_counters(std::string& out, const char* name, const char* help, const char* label,
                  const std::vector<std::pair<const char*, std::uint64_t>>& values) {
  out += core::render_family_header(name, help, core::metric_type::counter);
  for (const auto& [key, value] : values) {
    out += core::render_sample(name, {{label, key}}, static_cast<double>(value));
  }
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Who delivers each customer now: the holders of leases that have not expired.
std::map<std::int64_t, std::string> lease_holders(const std::vector<queue::delivery_lease>& leases) {
  std::map<std::int64_t, std::string> out;
  const std::int64_t now = now_ms();
  for (const auto& l : leases) {
    if (!l.holder.empty() && l.expires > now) out[l.customer_id] = l.holder;
  }
  return out;
}

// A node counts as alive while its heartbeat is younger than three reconcile intervals.
std::int64_t alive_limit_ms(const daemon_context& ctx) {
  const auto interval = ctx.cluster != nullptr ? ctx.cluster->settings().interval
                                               : std::chrono::milliseconds(5000);
  return 3 * interval.count();
}

}  // namespace

Object::Ptr link_json(const queue::link_record& l, const queue::customer* owner) {
  Object::Ptr o = new Object;
  o->set("customer", owner != nullptr ? owner->name : std::string());
  o->set("user", l.user);
  o->set("kind", std::string(queue::to_string(l.kind)));
  o->set("address", l.address);
  o->set("ipv6_address", l.ipv6_address);
  o->set("ipv6_prefix", l.ipv6_prefix);
  // The customer server's IPv6 address on this line (its ipv6_server applied).
  o->set("ipv6_server", owner != nullptr ? gateway::ipv6_server_address(*owner, l) : l.ipv6_address);
  o->set("nas", l.nas);
  o->set("session", l.session_id);
  o->set("since", l.since);
  o->set("source", l.source);
  return o;
}

asio::awaitable<std::vector<core::recent_event>> read_recent_events(daemon_context& ctx,
                                                                    std::size_t limit) {
  if (ctx.cluster == nullptr) co_return core::recent_events().latest(limit);
  auto stored = co_await ctx.store.run([limit](queue::store& s) { return s.list_events(limit); });
  if (!stored) co_return core::recent_events().latest(limit);
  std::vector<core::recent_event> out;
  for (auto& e : *stored) {
    out.push_back(core::recent_event{e.time, std::move(e.kind), std::move(e.customer),
                                     std::move(e.text), std::move(e.node)});
  }
  co_return out;
}

namespace {

// The cluster object (collect_cluster_status, and inside the status
// snapshot) from the leases and nodes the caller read.
Object::Ptr cluster_json(const daemon_context& ctx, const std::vector<queue::delivery_lease>& leases,
                         const std::vector<queue::node_record>& nodes) {
  std::map<std::int64_t, std::string> name_of;
  for (const auto* e : ctx.customers.all()) name_of[e->info.id] = e->info.name;
  const auto holders = lease_holders(leases);
  std::map<std::string, std::uint64_t> held_by;
  for (const auto& [id, holder] : holders) ++held_by[holder];

  Object::Ptr out = new Object;
  out->set("node", ctx.node);
  out->set("store", ctx.config != nullptr ? ctx.config->text("store") : std::string());
  const bool cluster = ctx.cluster != nullptr;
  out->set("cluster", cluster);

  Array::Ptr node_list = new Array;
  bool self_listed = false;
  for (const auto& n : nodes) {
    if (!cluster && n.name != ctx.node) continue;
    Object::Ptr o = new Object;
    o->set("name", n.name);
    o->set("version", n.version);
    o->set("started", n.started);
    o->set("heartbeat_age_ms", n.age_ms);
    o->set("alive", n.age_ms < alive_limit_ms(ctx));
    o->set("leases", held_by[n.name]);
    o->set("self", n.name == ctx.node);
    self_listed = self_listed || n.name == ctx.node;
    node_list->add(o);
  }
  if (!self_listed) {
    // One node (SQLite) has no heartbeat: it is this one, alive as it answers.
    Object::Ptr o = new Object;
    o->set("name", ctx.node);
    o->set("version", std::string(FLUSHGATE_VERSION));
    o->set("started", ctx.started);
    o->set("heartbeat_age_ms", 0);
    o->set("alive", true);
    o->set("leases", held_by[ctx.node]);
    o->set("self", true);
    node_list->add(o);
  }
  out->set("nodes", node_list);

  Array::Ptr lease_list = new Array;
  const std::int64_t now = now_ms();
  for (const auto& l : leases) {
    if (l.holder.empty() || l.expires <= now) continue;
    Object::Ptr o = new Object;
    o->set("customer", name_of.count(l.customer_id) ? name_of[l.customer_id] : std::to_string(l.customer_id));
    o->set("holder", l.holder);
    o->set("fence", l.fence);
    o->set("expires_in_ms", l.expires - now);
    o->set("held_for_ms", now - l.taken);
    lease_list->add(o);
  }
  out->set("leases", lease_list);

  if (cluster) {
    const auto st = ctx.cluster->current();
    Object::Ptr bus = new Object;
    bus->set("listening", st.bus.listening);
    bus->set("sent", st.bus.sent);
    bus->set("received", st.bus.received);
    bus->set("dropped", st.bus.dropped);
    bus->set("reconnects", st.bus.reconnects);
    bus->set("applied", st.applied);
    out->set("bus", bus);
    Object::Ptr rec = new Object;
    rec->set("count", st.reconciles);
    rec->set("last", st.last_reconcile);
    rec->set("last_seconds", st.last_reconcile_seconds);
    rec->set("ok", st.last_reconcile_ok);
    rec->set("interval_seconds", std::chrono::duration<double>(ctx.cluster->settings().interval).count());
    out->set("reconcile", rec);
  }
  return out;
}

}  // namespace

Array::Ptr events_json(const std::vector<core::recent_event>& events) {
  Array::Ptr out = new Array;
  for (const auto& e : events) {
    Object::Ptr o = new Object;
    o->set("time", e.time);
    o->set("kind", e.kind);
    o->set("customer", e.customer);
    o->set("text", e.text);
    o->set("node", e.node);
    out->add(o);
  }
  return out;
}

asio::awaitable<command_result> collect_cluster_status(daemon_context& ctx) {
  auto leases = co_await ctx.store.run([](queue::store& s) { return s.list_leases(); });
  auto nodes = co_await ctx.store.run([](queue::store& s) { return s.list_nodes(); });
  if (!leases || !nodes) {
    co_return command_result::failure(
        "cluster status: " + (leases ? nodes.error() : leases.error()).message(),
        command_status::unavailable);
  }
  co_return command_result::success(cluster_json(ctx, *leases, *nodes));
}

asio::awaitable<command_result> collect_status(daemon_context& ctx, std::int64_t now) {
  // Copied before the store is asked anything: the directory's entries may
  // be replaced while this coroutine waits.
  std::vector<queue::customer> customers;
  for (const auto* e : ctx.customers.all()) customers.push_back(e->info);

  auto summary = co_await ctx.store.run([](queue::store& s) { return s.queue_summary(); });
  if (!summary) {
    co_return command_result::failure("queue summary: " + summary.error().message(),
                                      command_status::unavailable);
  }
  std::vector<std::int64_t> bounds;
  for (const auto& b : age_bands) bounds.push_back(b.upper);
  auto histogram = co_await ctx.store.run(
      [&bounds, now](queue::store& s) { return s.queue_age_histogram(0, now, bounds); });
  if (!histogram) {
    co_return command_result::failure("queue age histogram: " + histogram.error().message(),
                                      command_status::unavailable);
  }

  auto leases = co_await ctx.store.run([](queue::store& s) { return s.list_leases(); });
  const auto holders = leases ? lease_holders(*leases) : std::map<std::int64_t, std::string>{};
  const auto recent = co_await read_recent_events(ctx, 50);
  Object::Ptr cluster;
  if (ctx.cluster != nullptr && leases) {
    auto nodes = co_await ctx.store.run([](queue::store& s) { return s.list_nodes(); });
    if (nodes) cluster = cluster_json(ctx, *leases, *nodes);
  }

  // From here on nothing waits: the directory, router and scheduler are read as they are now.
  std::map<std::int64_t, const queue::queue_stats*> stats_of;
  for (const auto& s : *summary) stats_of[s.customer_id] = &s;

  Object::Ptr out = new Object;
  out->set("generated", now);
  out->set("hostname", ctx.hostname);
  out->set("node", ctx.node);
  out->set("version", std::string(FLUSHGATE_VERSION));
  out->set("uptime_seconds", ctx.started > 0 ? now - ctx.started : 0);
  out->set("refresh_seconds", 10);

  Object::Ptr disk = new Object;
  if (ctx.disk != nullptr) {
    disk->set("free_bytes", ctx.disk->free_bytes());              // the file system's
    disk->set("store_free_bytes", ctx.disk->store_free_bytes());  // free inside the store's files
    disk->set("store_file_bytes", ctx.disk->store_file_bytes());  // the store's files
    disk->set("room_bytes", ctx.disk->room_bytes());              // what the guard compares
    disk->set("low", ctx.disk->low());
  }
  if (ctx.config != nullptr) disk->set("min_free_bytes", ctx.config->size("queue_min_free"));
  out->set("disk", disk);

  std::uint64_t total_messages = 0, total_bytes = 0;
  std::int64_t oldest = 0;
  Array::Ptr customer_list = new Array;
  for (const auto& c : customers) {
    const auto it = stats_of.find(c.id);
    const queue::queue_stats* st = it == stats_of.end() ? nullptr : it->second;
    const std::uint64_t messages = st ? st->messages : 0;
    const std::uint64_t bytes = st ? st->bytes : 0;
    const std::int64_t arrival = st ? st->oldest_arrival : 0;
    total_messages += messages;
    total_bytes += bytes;
    if (arrival > 0 && (oldest == 0 || arrival < oldest)) oldest = arrival;
    const auto* progress = ctx.scheduler.progress(c.id);
    const bool flushing = progress != nullptr && progress->running;
    const bool link_up = !ctx.router.links_of(c.id).empty();

    Object::Ptr o = new Object;
    o->set("name", c.name);
    o->set("state", std::string(queue::to_string(c.state)));
    o->set("mode", std::string(queue::to_string(c.mode)));
    o->set("activity", activity_of(c, messages, flushing, link_up));
    o->set("route", ctx.router.route_for(c).describe());
    o->set("messages", messages);
    o->set("bytes", bytes);
    o->set("oldest_age_seconds", arrival > 0 ? now - arrival : 0);
    // When its senders get a delay notice: the customer's own time, else
    // delay_warning_time (0: never). /metrics exports it next to the oldest
    // age so one alert rule can compare the two per customer.
    o->set("delay_warning_seconds", c.delay_warning > 0 || ctx.config == nullptr
                                        ? c.delay_warning
                                        : static_cast<std::int64_t>(
                                              ctx.config->duration("delay_warning_time").count()));
    Array::Ptr domains = new Array;
    for (const auto& d : c.domains) domains->add(d);
    o->set("domains", domains);
    o->set("recipient_list", c.recipients.has_value());
    o->set("recipient_check", std::string(gateway::recipient_policy(c)));
    if (flushing) {
      Object::Ptr f = new Object;
      f->set("messages_done", progress->messages_done);
      f->set("messages_total", progress->messages_at_start);
      f->set("bytes_done", progress->bytes_done);
      f->set("bytes_total", progress->bytes_at_start);
      f->set("trigger", progress->trigger);
      o->set("flush", f);
    } else {
      o->set("flush", Poco::Dynamic::Var());
    }
    o->set("last_error", progress != nullptr && !progress->running ? progress->error : std::string());
    o->set("next_attempt_in", ctx.scheduler.next_attempt_in(c.id));
    // The node that delivers it right now (its lease), "" when none does.
    const auto holder = holders.find(c.id);
    o->set("flushing_node", holder != holders.end() ? holder->second : std::string());
    customer_list->add(o);
  }
  out->set("customers", customer_list);

  Array::Ptr links = new Array;
  std::uint64_t links_up = 0;
  std::map<std::int64_t, const queue::customer*> customer_of;
  for (const auto& c : customers) customer_of[c.id] = &c;
  for (const auto& l : ctx.router.links()) {
    links->add(link_json(l, customer_of[l.customer_id]));
    ++links_up;
  }
  out->set("links", links);

  Object::Ptr totals = new Object;
  totals->set("customers", static_cast<std::uint64_t>(customers.size()));
  totals->set("messages", total_messages);
  totals->set("bytes", total_bytes);
  totals->set("oldest_age_seconds", oldest > 0 ? now - oldest : 0);
  totals->set("links_up", links_up);
  out->set("totals", totals);

  Array::Ptr bands = new Array;
  for (std::size_t i = 0; i < histogram->size(); ++i) {
    const auto& b = (*histogram)[i];
    Object::Ptr o = new Object;
    o->set("label", i < std::size(age_bands) ? std::string(age_bands[i].label) : std::string("> 5 d"));
    o->set("upper_seconds", b.upper_seconds);
    o->set("messages", b.messages);
    o->set("bytes", b.bytes);
    bands->add(o);
  }
  out->set("age_histogram", bands);

  out->set("events", events_json(recent));
  if (cluster) out->set("cluster", cluster);
  co_return command_result::success(out);
}

std::string render_metrics(const daemon_context& ctx, const Object::Ptr& status) {
  std::string out = core::metrics().render();

  // Queue per customer, from the snapshot.
  const char* families[][3] = {
      {"flushgate_queue_messages", "Messages queued, per customer.", "messages"},
      {"flushgate_queue_bytes", "Bytes queued, per customer.", "bytes"},
      {"flushgate_queue_oldest_age_seconds", "Age of the oldest queued message, per customer.",
       "oldest_age_seconds"},
      {"flushgate_queue_delay_warning_seconds",
       "Queue age at which senders get a delay notice, per customer (0: never).",
       "delay_warning_seconds"},
  };
  Array::Ptr customers = status ? status->getArray("customers") : nullptr;
  for (const auto& f : families) {
    out += core::render_family_header(f[0], f[1], core::metric_type::gauge);
    if (!customers) continue;
    for (std::size_t i = 0; i < customers->size(); ++i) {
      Object::Ptr c = customers->getObject(static_cast<unsigned>(i));
      out += core::render_sample(f[0], {{"customer", c->getValue<std::string>("name")}},
                                 static_cast<double>(uint_field(c, f[2])));
    }
  }
  std::map<std::string, std::uint64_t> by_activity;
  std::uint64_t flushing = 0;
  if (customers) {
    for (std::size_t i = 0; i < customers->size(); ++i) {
      auto activity = customers->getObject(static_cast<unsigned>(i))->getValue<std::string>("activity");
      ++by_activity[activity];
      if (activity == "flushing") ++flushing;
    }
  }
  out += core::render_family_header("flushgate_customers", "Customers, by what they are doing now.",
                                    core::metric_type::gauge);
  for (const char* a : {"relaying", "held", "flushing", "link_up", "idle", "disabled", "suspended"}) {
    out += core::render_sample("flushgate_customers", {{"activity", a}},
                               static_cast<double>(by_activity[a]));
  }
  add_gauge(out, "flushgate_flushes_running", "Delivery runs in progress.", static_cast<double>(flushing));

  std::map<std::string, std::uint64_t> links_by_kind{{"dsl", 0}, {"dialup", 0}};
  for (const auto& l : ctx.router.links()) ++links_by_kind[std::string(queue::to_string(l.kind))];
  out += core::render_family_header("flushgate_links_up", "Live customer links, by kind.",
                                    core::metric_type::gauge);
  for (const auto& [kind, n] : links_by_kind) {
    out += core::render_sample("flushgate_links_up", {{"kind", kind}}, static_cast<double>(n));
  }

  Object::Ptr disk = status ? status->getObject("disk") : nullptr;
  add_gauge(out, "flushgate_disk_free_bytes", "Free bytes of the file system under data_dir.",
            static_cast<double>(uint_field(disk, "free_bytes")));
  add_gauge(out, "flushgate_store_free_bytes",
            "Bytes free inside the queue store's files (reused by new mail, given back in steps).",
            static_cast<double>(uint_field(disk, "store_free_bytes")));
  add_gauge(out, "flushgate_store_file_bytes", "Size of the queue store's files on this host.",
            static_cast<double>(uint_field(disk, "store_file_bytes")));
  add_gauge(out, "flushgate_disk_min_free_bytes", "queue_min_free: below it intake answers 452.",
            static_cast<double>(uint_field(disk, "min_free_bytes")));
  add_gauge(out, "flushgate_disk_low", "1 while free space (file system + inside the store) is below queue_min_free.",
            disk && disk->has("low") && disk->getValue<bool>("low") ? 1 : 0);
  add_gauge(out, "flushgate_start_time_seconds", "When the daemon started (unix seconds).",
            static_cast<double>(ctx.started));
  add_gauge(out, "flushgate_queue_oldest_message_age_seconds", "Age of the oldest queued message.",
            static_cast<double>(int_field(status ? status->getObject("totals") : nullptr,
                                          "oldest_age_seconds")));

  // The link monitor's and the hooks' own counters.
  if (ctx.radius != nullptr) {
    const auto c = ctx.radius->counters();
    add_counters(out, "flushgate_radius_packets_total",
                 "RADIUS accounting datagrams received, by outcome.", "outcome",
                 {{"received", c.received},
                  {"answered", c.answered},
                  {"duplicate", c.duplicates},
                  {"ignored", c.ignored},
                  {"unknown_source", c.dropped_unknown_source},
                  {"bad_authenticator", c.dropped_bad_authenticator},
                  {"malformed", c.dropped_malformed},
                  {"busy", c.dropped_busy},
                  {"handler_failure", c.handler_failures}});
  }
  if (!ctx.sniffers.empty()) {
    linkmon::pcap_counters sum;
    for (const auto* s : ctx.sniffers) {
      const auto c = s->counters();
      sum.frames += c.frames;
      sum.requests += c.requests;
      sum.responses += c.responses;
      sum.unknown_nas += c.unknown_nas;
      sum.bad_authenticator += c.bad_authenticator;
      sum.malformed += c.malformed;
      sum.duplicates += c.duplicates;
      sum.events += c.events;
      sum.undecodable += c.undecodable;
      sum.handler_failures += c.handler_failures;
    }
    add_counters(out, "flushgate_pcap_packets_total", "Sniffed RADIUS traffic, by outcome.", "outcome",
                 {{"frames", sum.frames},
                  {"undecodable", sum.undecodable},
                  {"requests", sum.requests},
                  {"responses", sum.responses},
                  {"unknown_nas", sum.unknown_nas},
                  {"bad_authenticator", sum.bad_authenticator},
                  {"malformed", sum.malformed},
                  {"duplicate", sum.duplicates},
                  {"events", sum.events},
                  {"handler_failure", sum.handler_failures}});
  }
  if (ctx.hooks != nullptr) {
    add_counters(out, "flushgate_hooks_total", "Operator hook runs, by outcome.", "outcome",
                 {{"started", ctx.hooks->started()},
                  {"failed", ctx.hooks->failed()},
                  {"timed_out", ctx.hooks->timed_out()},
                  {"refused", ctx.hooks->refused()},
                  {"dropped", ctx.hooks->dropped()}});
  }
  out += core::render_family_header("flushgate_store_commits_total",
                                    "Intake transactions (group commits), each fsync'd.",
                                    core::metric_type::counter);
  out += core::render_sample("flushgate_store_commits_total", {}, static_cast<double>(ctx.store.commits()));
  if (ctx.cluster != nullptr) {
    const auto st = ctx.cluster->current();
    add_counters(out, "flushgate_cluster_signals_total",
                 "Signals between nodes (LISTEN/NOTIFY), by what became of them.", "outcome",
                 {{"sent", st.bus.sent},
                  {"received", st.bus.received},
                  {"applied", st.applied},
                  {"dropped", st.bus.dropped}});
    add_gauge(out, "flushgate_cluster_listening", "1 while this node hears the other nodes' signals.",
              st.bus.listening ? 1 : 0);
    add_counters(out, "flushgate_cluster_reconciles_total",
                 "Reconciles with the shared store (periodic and after a gap in listening).", "outcome",
                 {{"done", st.reconciles}});
    add_gauge(out, "flushgate_cluster_last_reconcile_seconds", "How long the last reconcile took.",
              st.last_reconcile_seconds);
    // Every series of a node carries its name, so that one Prometheus sees the nodes apart.
    out = core::add_label_to_samples(out, "node", ctx.node);
  }
  return out;
}

}  // namespace flushgate::control
