// link_events.cpp — see link_events.hpp.
#include "control/link_events.hpp"

#include "core/event_log.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"

#include <ctime>
#include <optional>

namespace flushgate::control {

namespace asio = boost::asio;

namespace {

// Runs the operator's hooks for a link event (never waits for them).
void fire_hooks(daemon_context& ctx, linkmon::hook_event event, const queue::link_record& link) {
  if (ctx.hooks == nullptr) return;
  const auto* owner = ctx.customers.find_by_id(link.customer_id);
  linkmon::hook_context h;
  h.event = event;
  h.customer = owner ? owner->info.name : std::string();
  h.user = link.user;
  h.ip = link.address.empty() ? link.ipv6_address : link.address;
  h.ipv4 = link.address;
  h.ipv6 = link.ipv6_address;
  h.prefix = link.ipv6_prefix;
  h.session = link.session_id;
  if (owner) {
    h.domains = owner->info.domains;
    const auto r = ctx.router.route_for(owner->info);
    h.route = r.describe();
    // The address the mail goes to first, when this link carries the route.
    if (r.k == gateway::route::kind::link && r.link_user == link.user) h.ip = r.host;
    h.ipv6 = gateway::ipv6_server_address(owner->info, link);
  }
  ctx.hooks->fire(h);
}

// A cluster's other nodes read the customer's links again from the store.
void announce_link(daemon_context& ctx, std::int64_t customer_id, const char* what) {
  if (ctx.announce) ctx.announce({.what = queue::cluster_signal::kind::link, .customer_id = customer_id, .text = what});
}

void fire_link_hooks(daemon_context& ctx, bool up, const queue::link_record& link) {
  fire_hooks(ctx, up ? linkmon::hook_event::link_up : linkmon::hook_event::link_down, link);
  fire_hooks(ctx, linkmon::hook_event::route_changed, link);
}

// "192.0.2.7", "2001:db8::7 prefix 2001:db8:0:5600::/56", ...: what a link holds.
std::string describe_addresses(const std::string& v4, const std::string& v6, const std::string& prefix) {
  std::string out = v4;
  if (!v6.empty()) out += (out.empty() ? "" : " ") + v6;
  if (!prefix.empty()) out += (out.empty() ? "prefix " : " prefix ") + prefix;
  return out.empty() ? "-" : out;
}

// Events for one user may overlap while the store works (pppd runs ip-up and
// ipv6-up at once): an event that finds the link changed after its write
// starts over from what is there now, at most this many times.
constexpr int max_link_retries = 8;

std::optional<queue::link_record> copy_of(const queue::link_record* l) {
  return l != nullptr ? std::optional<queue::link_record>(*l) : std::nullopt;
}

asio::awaitable<link_event_result> link_up(daemon_context& ctx, const linkmon::link_event& event,
                                           int attempt = 0) {
  link_event_result out;
  linkmon::link_event e = event;
  // An IPv6 address in the IPv4 field (`link up --ip` of an older client) is the line's IPv6 one.
  if (e.address.find(':') != std::string::npos && e.ipv6_address.empty()) {
    e.ipv6_address = std::move(e.address);
    e.address.clear();
  }
  // The live session of the same user keeps what this event does not say:
  // pppd reports IPv4 (ip-up) and IPv6 (ipv6-up) separately.
  const auto* old = ctx.router.find_link(e.user);
  const auto before = copy_of(old);
  if (old != nullptr && !e.session_id.empty() && old->session_id == e.session_id) {
    if (e.address.empty()) e.address = old->address;
    if (e.ipv6_address.empty()) e.ipv6_address = old->ipv6_address;
    if (e.ipv6_prefix.empty()) e.ipv6_prefix = old->ipv6_prefix;
  }
  const auto shown = describe_addresses(e.address, e.ipv6_address, e.ipv6_prefix);
  auto check = ctx.router.check_link(ctx.customers, e.user, e.address, e.ipv6_address, e.ipv6_prefix);
  switch (check.refusal) {
    case gateway::link_refusal::none: break;
    case gateway::link_refusal::unknown_user:
      out.error = "no customer has link user \"" + e.user + "\"";
      core::log_warning("link up from {} refused: {}", e.source, out.error);
      co_return out;
    case gateway::link_refusal::bad_address:
      out.customer = check.owner->info.name;
      out.error = "\"" + check.offending + "\" is not a usable IP address or IPv6 prefix";
      core::log_warning("link up from {} for {} refused: {}", e.source, e.user, out.error);
      co_return out;
    case gateway::link_refusal::no_usable_address:
      out.customer = check.owner->info.name;
      out.error = check.user != nullptr && !check.user->allowed_net.empty()
                      ? "no address of a family " + e.user + " is allowed in (" +
                            check.user->allowed_net + "): " + shown
                      : "no address given";
      core::log_warning("link up from {} for {} refused: {}", e.source, e.user, out.error);
      co_return out;
    case gateway::link_refusal::outside_allowed_net:
      out.customer = check.owner->info.name;
      out.error = "address " + check.offending + " is outside the ranges allowed for " + e.user +
                  " (" + check.user->allowed_net + ")";
      core::log_error("SECURITY: link up from {} for customer {} user {} REFUSED: {} "
                      "(forged or misconfigured accounting?)",
                      e.source, check.owner->info.name, e.user, out.error);
      co_return out;
  }
  if (check.drop_ipv4 || check.drop_ipv6) {
    core::log_warning("SECURITY: link up from {} for customer {} user {}: the {} part ({}) is ignored: "
                      "the user is pinned to {} only",
                      e.source, check.owner->info.name, e.user, check.drop_ipv4 ? "IPv4" : "IPv6",
                      check.drop_ipv4 ? e.address : describe_addresses("", e.ipv6_address, e.ipv6_prefix),
                      check.user->allowed_net);
    if (check.drop_ipv4) e.address.clear();
    if (check.drop_ipv6) {
      e.ipv6_address.clear();
      e.ipv6_prefix.clear();
    }
  }
  out.customer = check.owner->info.name;
  // Copies: the directory entry may be replaced while the store works.
  const std::string customer_name = check.owner->info.name;
  const std::int64_t customer_id = check.owner->info.id;
  const queue::link_kind kind = check.user->kind;
  queue::link_record rec;
  rec.user = e.user;
  rec.customer_id = customer_id;
  rec.kind = kind;
  rec.session_id = e.session_id;
  rec.address = e.address;
  rec.ipv6_address = e.ipv6_address;
  rec.ipv6_prefix = e.ipv6_prefix;
  rec.nas = e.nas;
  rec.source = e.source;
  rec.since = static_cast<std::int64_t>(std::time(nullptr));
  if (old != nullptr && old->address == rec.address && old->ipv6_address == rec.ipv6_address &&
      old->ipv6_prefix == rec.ipv6_prefix && old->session_id == rec.session_id) {
    out.ok = true;  // a repeated Start or Interim-Update with nothing new
    co_return out;
  }
  if (old != nullptr && old->session_id == rec.session_id) rec.since = old->since;  // same session, new address
  auto ec = co_await ctx.store.run([&rec](queue::store& s) { return s.save_link(rec); });
  if (ec) {
    out.error = "recording the link failed: " + ec.message();
    out.temporary = true;
    core::log_error("link up for {}: {}", e.user, out.error);
    co_return out;
  }
  if (copy_of(ctx.router.find_link(e.user)) != before && attempt < max_link_retries) {
    co_return co_await link_up(ctx, event, attempt + 1);  // merge with the newer link, write again
  }
  ctx.router.link_up(rec);
  out.ok = true;
  out.changed = true;
  core::log_info("link up: customer={}, user={}, kind={}, address={}, session={}, nas={}, source={}",
                 customer_name, e.user, queue::to_string(kind),
                 describe_addresses(rec.address, rec.ipv6_address, rec.ipv6_prefix),
                 e.session_id.empty() ? "-" : e.session_id, e.nas.empty() ? "-" : e.nas, e.source);
  ctx.scheduler.route_changed(customer_id, "link up");
  announce_link(ctx, customer_id, "link up");
  fire_link_hooks(ctx, true, rec);
  co_return out;
}

asio::awaitable<link_event_result> link_down(daemon_context& ctx, const linkmon::link_event& e,
                                             int attempt = 0) {
  link_event_result out;
  const auto* current = ctx.router.find_link(e.user);
  const bool cluster = static_cast<bool>(ctx.announce);
  if ((current == nullptr && !cluster) ||
      (current != nullptr && !e.session_id.empty() && current->session_id != e.session_id)) {
    // Nothing live, or a late Stop of an older session: a no-op, and fine.
    // (In a cluster the store is asked even so: another node may have
    // recorded a link this one has not heard of yet.)
    out.ok = true;
    co_return out;
  }
  if (e.ended != linkmon::link_event::family::both && current != nullptr) {
    // One family of the line ended (pppd's ipv6-down): the rest stays up.
    queue::link_record rest = *current;
    if (e.ended == linkmon::link_event::family::ipv4) {
      rest.address.clear();
    } else {
      rest.ipv6_address.clear();
      rest.ipv6_prefix.clear();
    }
    if (rest == *current) {
      out.ok = true;  // that family was not up
      co_return out;
    }
    if (!rest.address.empty() || !rest.ipv6_address.empty() || !rest.ipv6_prefix.empty()) {
      const auto before = copy_of(current);
      auto ec = co_await ctx.store.run([&rest](queue::store& s) { return s.save_link(rest); });
      if (ec) {
        out.error = "recording the link failed: " + ec.message();
        out.temporary = true;
        co_return out;
      }
      if (copy_of(ctx.router.find_link(e.user)) != before && attempt < max_link_retries) {
        co_return co_await link_down(ctx, e, attempt + 1);  // the link changed meanwhile: again
      }
      ctx.router.link_up(rest);
      const auto* owner = ctx.customers.find_by_id(rest.customer_id);
      out.customer = owner ? owner->info.name : "";
      out.ok = true;
      out.changed = true;
      core::log_info("link down ({} only): customer={}, user={}, left={}, source={}",
                     e.ended == linkmon::link_event::family::ipv4 ? "IPv4" : "IPv6", out.customer,
                     e.user, describe_addresses(rest.address, rest.ipv6_address, rest.ipv6_prefix),
                     e.source);
      ctx.scheduler.route_changed(rest.customer_id, "link changed");
      announce_link(ctx, rest.customer_id, "link changed");
      fire_hooks(ctx, linkmon::hook_event::route_changed, rest);
      co_return out;
    }
    // Nothing left: the whole link ends.
  }
  std::string user = e.user;
  std::string session = e.session_id;
  auto ec = co_await ctx.store.run(
      [&user, &session](queue::store& s) { return s.remove_link(user, session); });
  if (ec && ec != queue::errc::not_found) {
    out.error = "recording the link failed: " + ec.message();
    out.temporary = true;
    co_return out;
  }
  auto removed = ctx.router.link_down(user, session);
  if (!removed) {
    if (!ec) {
      // Only the store had it: the other nodes drop it too.
      if (const auto* owner = ctx.customers.find_by_link_user(user)) {
        announce_link(ctx, owner->info.id, "link down");
      }
    }
    out.ok = true;
    co_return out;
  }
  const auto* owner = ctx.customers.find_by_id(removed->customer_id);
  out.customer = owner ? owner->info.name : "";
  out.ok = true;
  out.changed = true;
  core::log_info("link down: customer={}, user={}, address={}, session={}, source={}", out.customer,
                 user, describe_addresses(removed->address, removed->ipv6_address, removed->ipv6_prefix),
                 session.empty() ? "-" : session, e.source);
  ctx.scheduler.route_changed(removed->customer_id, "link down");
  announce_link(ctx, removed->customer_id, "link down");
  fire_link_hooks(ctx, false, *removed);
  co_return out;
}

asio::awaitable<link_event_result> nas_reset(daemon_context& ctx, const linkmon::link_event& e) {
  link_event_result out;
  std::vector<std::string> users;
  for (const auto& l : ctx.router.links()) {
    if (!e.nas.empty() && l.nas == e.nas) users.push_back(l.user);
  }
  auto ec = co_await ctx.store.run([&users](queue::store& s) {
    for (const auto& u : users) {
      auto r = s.remove_link(u, "");
      if (r && r != queue::errc::not_found) return r;
    }
    return boost::system::error_code{};
  });
  if (ec) {
    out.error = "recording the link failed: " + ec.message();
    out.temporary = true;
    co_return out;
  }
  auto removed = ctx.router.links_down_for_nas(e.nas);
  core::log_info("NAS {} restarted ({}): {} links ended", e.nas, e.source, removed.size());
  for (const auto& l : removed) {
    ctx.scheduler.route_changed(l.customer_id, "link down");
    announce_link(ctx, l.customer_id, "link down");
    fire_link_hooks(ctx, false, l);
  }
  out.ok = true;
  out.changed = !removed.empty();
  co_return out;
}

// Counts the event (flushgate_link_events_total) and, when it changed or was
// refused, lists it among the recent events for the status page.
void record_link_event(const linkmon::link_event& e, const char* kind, const link_event_result& r) {
  // The source label is one of a few words: the control channel's is free text.
  const std::string source = e.source == "radius" || e.source == "pcap" ? e.source : "script";
  const char* result = r.ok ? (r.changed ? "changed" : "unchanged") : r.temporary ? "failed" : "refused";
  core::metrics()
      .counter_for("flushgate_link_events_total",
                   "Link events (RADIUS, pcap, scripts), by source, kind and what they did.",
                   {{"source", source}, {"kind", kind}, {"result", result}})
      .add();
  if (r.ok && !r.changed) return;
  std::string text;
  if (!r.ok) {
    text = fmt::format("link {} for {} from {} refused: {}", kind, e.user, e.source, r.error);
  } else if (e.k == linkmon::link_event::kind::up) {
    text = fmt::format("link up: {} at {} ({})", e.user,
                       describe_addresses(e.address, e.ipv6_address, e.ipv6_prefix), e.source);
  } else if (e.k == linkmon::link_event::kind::down) {
    text = fmt::format("link down: {} ({})", e.user, e.source);
  } else {
    text = fmt::format("NAS {} restarted: its links ended ({})", e.nas, e.source);
  }
  core::recent_events().record(r.ok ? std::string("link_") + kind : "link_refused", r.customer, text);
}

}  // namespace

asio::awaitable<link_event_result> apply_link_event(daemon_context& ctx,
                                                    const linkmon::link_event& e) {
  link_event_result r;
  const char* kind = "up";
  switch (e.k) {
    case linkmon::link_event::kind::up: r = co_await link_up(ctx, e); break;
    case linkmon::link_event::kind::down:
      kind = "down";
      r = co_await link_down(ctx, e);
      break;
    case linkmon::link_event::kind::nas_reset:
      kind = "nas_reset";
      r = co_await nas_reset(ctx, e);
      break;
  }
  record_link_event(e, kind, r);
  co_return r;
}

}  // namespace flushgate::control
