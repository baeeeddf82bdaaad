// status_report.cpp — see status_report.hpp.
#include "control/status_report.hpp"

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

Object::Ptr link_json(const queue::link_record& l, const std::string& customer) {
  Object::Ptr o = new Object;
  o->set("customer", customer);
  o->set("user", l.user);
  o->set("kind", std::string(queue::to_string(l.kind)));
  o->set("address", l.address);
  o->set("nas", l.nas);
  o->set("session", l.session_id);
  o->set("since", l.since);
  o->set("source", l.source);
  return o;
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

}  // namespace

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

  // From here on nothing waits: the directory, router and scheduler are read as they are now.
  std::map<std::int64_t, const queue::queue_stats*> stats_of;
  for (const auto& s : *summary) stats_of[s.customer_id] = &s;
  std::map<std::int64_t, std::string> name_of;
  for (const auto& c : customers) name_of[c.id] = c.name;

  Object::Ptr out = new Object;
  out->set("generated", now);
  out->set("hostname", ctx.hostname);
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
    Array::Ptr domains = new Array;
    for (const auto& d : c.domains) domains->add(d);
    o->set("domains", domains);
    o->set("recipient_list", c.recipients.has_value());
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
    customer_list->add(o);
  }
  out->set("customers", customer_list);

  Array::Ptr links = new Array;
  std::uint64_t links_up = 0;
  for (const auto& l : ctx.router.links()) {
    links->add(link_json(l, name_of[l.customer_id]));
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

  Array::Ptr events = new Array;
  for (const auto& e : core::recent_events().latest(50)) {
    Object::Ptr o = new Object;
    o->set("time", e.time);
    o->set("kind", e.kind);
    o->set("customer", e.customer);
    o->set("text", e.text);
    events->add(o);
  }
  out->set("events", events);
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
  return out;
}

}  // namespace flushgate::control
