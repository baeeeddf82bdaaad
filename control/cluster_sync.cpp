// cluster_sync.cpp — see cluster_sync.hpp.
#include "control/cluster_sync.hpp"

#include "core/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <ctime>
#include <map>
#include <set>
#include <utility>

namespace flushgate::control {

namespace asio = boost::asio;
using kind = queue::cluster_signal::kind;
using steady = std::chrono::steady_clock;

namespace {

queue::cluster_bus_options bus_options(const cluster_settings& s) {
  auto o = s.bus;
  o.node_name = s.node;
  return o;
}

// Everything a reconcile reads, in one trip to the store thread.
struct snapshot {
  std::vector<queue::customer> customers;
  std::vector<queue::queue_stats> stats;
  std::vector<queue::link_record> links;
  std::vector<queue::retry_record> retries;
  std::vector<queue::known_recipient> known;              // last seen since the previous read
  std::map<std::int64_t, std::uint64_t> known_counts;     // rows per customer (every 12th)
};

// Known recipients are read by last_seen from where the previous read began,
// less this much: a row is stamped up to a second before its batch commits,
// and the nodes' clocks may differ a little.
constexpr std::int64_t known_overlap_seconds = 120;
// Every this many reconciles the counts are compared as well.
constexpr std::uint64_t known_count_every = 12;

std::int64_t unix_now() { return static_cast<std::int64_t>(std::time(nullptr)); }

std::map<std::int64_t, std::vector<queue::link_record>> links_by_customer(
    const std::vector<queue::link_record>& links) {
  std::map<std::int64_t, std::vector<queue::link_record>> out;
  for (const auto& l : links) out[l.customer_id].push_back(l);
  for (auto& [id, list] : out) {
    std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.user < b.user; });
  }
  return out;
}

// Equal apart from the order of its lists (the store gives them sorted; a
// command keeps the order it was given).
bool same_customer(queue::customer a, queue::customer b) {
  for (auto* c : {&a, &b}) {
    std::sort(c->domains.begin(), c->domains.end());
    std::sort(c->etrn_networks.begin(), c->etrn_networks.end());
    std::sort(c->link_users.begin(), c->link_users.end(),
              [](const auto& x, const auto& y) { return x.user < y.user; });
    if (c->recipients) std::sort(c->recipients->begin(), c->recipients->end());
  }
  return a == b;
}

}  // namespace

cluster_sync::cluster_sync(asio::io_context& io, daemon_context& ctx, cluster_settings s)
    : io_(io),
      ctx_(ctx),
      settings_(std::move(s)),
      bus_(io.get_executor(), bus_options(settings_),
           [this](const queue::cluster_signal& sig) {
             inbox_.push_back(sig);
             wake_.cancel();
           },
           [this] {
             // Whatever was said while this node did not listen is gone.
             reconcile_asked_ = true;
             wake_.cancel();
           }),
      wake_(io),
      known_since_(settings_.started - known_overlap_seconds) {}  // the book was loaded at start

void cluster_sync::start() {
  bus_.start();
  asio::co_spawn(io_, worker(), asio::detached);
}

void cluster_sync::stop() {
  stopped_ = true;
  wake_.cancel();
  bus_.stop();
}

void cluster_sync::announce(queue::cluster_signal s) { bus_.publish(std::move(s)); }

cluster_sync::state cluster_sync::current() const {
  state s = state_;
  s.bus = bus_.stats();
  return s;
}

asio::awaitable<void> cluster_sync::worker() {
  auto next = steady::now();
  while (!stopped_) {
    while (!inbox_.empty() && !stopped_) {
      queue::cluster_signal s = std::move(inbox_.front());
      inbox_.pop_front();
      co_await apply(std::move(s));
      ++state_.applied;
    }
    if (stopped_) break;
    if (reconcile_asked_ || steady::now() >= next) {
      reconcile_asked_ = false;
      const auto began = steady::now();
      const bool ok = co_await reconcile();
      state_.last_reconcile_ok = ok;
      state_.last_reconcile = static_cast<std::int64_t>(std::time(nullptr));
      state_.last_reconcile_seconds = std::chrono::duration<double>(steady::now() - began).count();
      ++state_.reconciles;
      next = steady::now() + settings_.interval;
      continue;
    }
    wake_.expires_at(next);
    co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

asio::awaitable<void> cluster_sync::refresh_queued(std::int64_t customer_id) {
  auto stats = co_await ctx_.store.run(
      [customer_id](queue::store& s) { return s.customer_stats(customer_id); });
  if (stats) ctx_.customers.set_queued_bytes(customer_id, stats->bytes);
}

asio::awaitable<void> cluster_sync::apply(queue::cluster_signal s) {
  const std::int64_t id = s.customer_id;
  const std::string origin = " (node " + s.node + ")";
  switch (s.what) {
    case kind::mail:
      co_await refresh_queued(id);
      ctx_.scheduler.mail_queued(id);
      break;
    case kind::link: {
      // The store's links replace this node's only if no local link event
      // changed them while the store was read (else they would be lost
      // until the next reconcile): read again, a few times at most.
      bool applied = false;
      for (int round = 0; round < 3 && !applied; ++round) {
        const auto generation = ctx_.router.generation();
        auto links = co_await ctx_.store.run([](queue::store& st) { return st.list_links(); });
        if (!links) break;
        if (ctx_.router.generation() != generation) continue;
        ctx_.router.set_links(std::move(*links));
        applied = true;
      }
      if (!applied) {
        reconcile_asked_ = true;
        break;
      }
      co_await refresh_queued(id);
      ctx_.scheduler.route_changed(id, s.text + origin);
      break;
    }
    case kind::customer: {
      const std::string name = s.text;
      auto found = co_await ctx_.store.run([&name](queue::store& st) { return st.find_customer(name); });
      if (found) {
        ctx_.customers.upsert(*found);
        co_await reload_known(found->id);  // `customer recipients forget` says so this way
        co_await refresh_queued(found->id);
        ctx_.scheduler.route_changed(found->id, "customer changed" + origin);
      } else if (found.error() == queue::errc::not_found) {
        ctx_.customers.remove(id);
        if (ctx_.known != nullptr) ctx_.known->forget(id, "");
      } else {
        reconcile_asked_ = true;
      }
      break;
    }
    case kind::flush:
      co_await refresh_queued(id);
      if (ctx_.scheduler.request_flush(id, s.text + origin) == gateway::flush_refusal::already_running) {
        ctx_.scheduler.mail_queued(id);  // a rerun once the running flush ends
      }
      break;
    case kind::lease_free:
      ctx_.scheduler.lease_released(id);
      break;
  }
}

asio::awaitable<void> cluster_sync::reload_known(std::int64_t customer_id) {
  if (ctx_.known == nullptr) co_return;
  auto rows = co_await ctx_.store.run(
      [customer_id](queue::store& s) { return s.list_known_recipients(customer_id); });
  if (!rows) {
    reconcile_asked_ = true;  // the counts will find it
    co_return;
  }
  ctx_.known->replace_customer(customer_id, *rows);
}

asio::awaitable<void> cluster_sync::reload_known_that_differ(const std::map<std::int64_t, std::uint64_t>& counts) {
  std::vector<std::pair<std::int64_t, std::string>> differ;
  for (const auto* e : ctx_.customers.all()) {
    const std::int64_t id = e->info.id;
    const auto it = counts.find(id);
    const std::uint64_t theirs = it == counts.end() ? 0 : it->second;
    // What this node learned and has not written yet is not in the store's count.
    if (ctx_.known->size(id) != theirs && !ctx_.known->has_pending(id)) differ.emplace_back(id, e->info.name);
  }
  for (const auto& [id, name] : differ) {
    const auto before = ctx_.known->size(id);
    co_await reload_known(id);
    core::log_info("cluster sync: known recipients of customer {} read again ({} here, {} in the store)", name,
                   before, ctx_.known->size(id));
  }
}

asio::awaitable<bool> cluster_sync::reconcile() {
  const queue::node_record self{.name = settings_.node, .version = FLUSHGATE_VERSION,
                                .started = settings_.started};
  // What this node changed itself while the store was read is newer than
  // the snapshot: that part waits for the next reconcile.
  const auto customers_generation = ctx_.customers.generation();
  const auto links_generation = ctx_.router.generation();
  const auto retry_generation = ctx_.scheduler.retry_generation();
  const bool read_known = ctx_.known != nullptr;
  const bool count_known = read_known && state_.reconciles % known_count_every == 0;
  const std::int64_t known_since = known_since_;
  const std::int64_t read_began = unix_now();
  auto read = co_await ctx_.store.run([&](queue::store& s) -> boost::system::result<snapshot> {
    if (auto ec = s.heartbeat(self)) return ec;
    snapshot out;
    auto customers = s.list_customers();
    if (!customers) return customers.error();
    auto stats = s.queue_summary();
    if (!stats) return stats.error();
    auto links = s.list_links();
    if (!links) return links.error();
    auto retries = s.list_retries();
    if (!retries) return retries.error();
    out.customers = std::move(*customers);
    out.stats = std::move(*stats);
    out.links = std::move(*links);
    out.retries = std::move(*retries);
    if (read_known) {
      auto known = s.list_known_recipients_since(known_since);
      if (!known) return known.error();
      out.known = std::move(*known);
    }
    if (count_known) {
      auto counts = s.count_known_recipients();
      if (!counts) return counts.error();
      out.known_counts = std::move(*counts);
    }
    return out;
  });
  if (!read) {
    if (!failing_) core::log_warning("cluster sync: cannot read the shared store: {}", read.error().message());
    failing_ = true;
    co_return false;
  }
  if (failing_) core::log_info("cluster sync: the shared store answers again");
  failing_ = false;
  snapshot& snap = *read;

  // Customers: added or changed elsewhere, and removed elsewhere.
  std::set<std::int64_t> changed;
  if (ctx_.customers.generation() == customers_generation) {
    std::set<std::int64_t> present;
    for (const auto& c : snap.customers) {
      present.insert(c.id);
      const auto* e = ctx_.customers.find_by_id(c.id);
      if (e == nullptr || !same_customer(e->info, c)) {
        ctx_.customers.upsert(c);
        changed.insert(c.id);
      }
    }
    std::vector<std::int64_t> gone;
    for (const auto* e : ctx_.customers.all()) {
      if (present.count(e->info.id) == 0) gone.push_back(e->info.id);
    }
    for (auto id : gone) {
      ctx_.customers.remove(id);
      if (ctx_.known != nullptr) ctx_.known->forget(id, "");
    }
  }

  // Known recipients other nodes learned.
  if (read_known) {
    ctx_.known->merge(snap.known);
    known_since_ = read_began - known_overlap_seconds;
    if (count_known) co_await reload_known_that_differ(snap.known_counts);
  }

  // Queue sizes as the store counts them (quota checks, "has mail").
  std::map<std::int64_t, std::uint64_t> bytes;
  for (const auto& s : snap.stats) bytes[s.customer_id] = s.bytes;
  for (const auto* e : ctx_.customers.all()) {
    auto it = bytes.find(e->info.id);
    ctx_.customers.set_queued_bytes(e->info.id, it == bytes.end() ? 0 : it->second);
  }

  // Links recorded (or ended) by other nodes.
  if (ctx_.router.generation() == links_generation) {
    const auto mine = links_by_customer(ctx_.router.links());
    const auto theirs = links_by_customer(snap.links);
    for (const auto& [id, list] : theirs) {
      auto it = mine.find(id);
      if (it == mine.end() || it->second != list) changed.insert(id);
    }
    for (const auto& [id, list] : mine) {
      if (theirs.count(id) == 0) changed.insert(id);
    }
    if (mine != theirs) ctx_.router.set_links(std::move(snap.links));
  }

  for (auto id : changed) {
    if (ctx_.customers.find_by_id(id) == nullptr) continue;
    core::log_info("cluster sync: customer {} changed on another node",
                   ctx_.customers.find_by_id(id)->info.name);
    ctx_.scheduler.route_changed(id, "cluster sync");
  }
  ctx_.scheduler.adopt_retries(snap.retries, retry_generation);
  for (const auto& s : snap.stats) {
    if (s.messages > 0 && ctx_.customers.find_by_id(s.customer_id) != nullptr) {
      ctx_.scheduler.note_queued(s.customer_id);
    }
  }
  co_return true;
}

}  // namespace flushgate::control
