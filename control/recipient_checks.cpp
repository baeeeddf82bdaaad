// recipient_checks.cpp — see recipient_checks.hpp.
#include "control/recipient_checks.hpp"

#include "core/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <ctime>

namespace flushgate::control {

namespace asio = boost::asio;

namespace {
std::int64_t now_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

bool learns(const gateway::customer_entry* e) { return e != nullptr && gateway::learns_recipients(e->info); }
}  // namespace

recipient_checks::recipient_checks(asio::io_context& io, queue::store_worker& store,
                                   gateway::customer_directory& customers, gateway::router& routes,
                                   gateway::scheduler& scheduler, gateway::recipient_book& book,
                                   settings s)
    : io_(io),
      store_(store),
      customers_(customers),
      routes_(routes),
      scheduler_(scheduler),
      book_(book),
      settings_(s),
      timer_(io) {}

void recipient_checks::delivery_answer(std::int64_t customer_id, const std::string& address, bool good) {
  if (!learns(customers_.find_by_id(customer_id))) return;
  book_.learn(customer_id, address, good, "delivery", now_seconds());
}

bool recipient_checks::server_reachable(std::int64_t customer_id) const {
  const auto* e = customers_.find_by_id(customer_id);
  if (e == nullptr || !routes_.route_for(e->info).deliverable()) return false;
  return scheduler_.server_answering(customer_id);
}

asio::awaitable<gateway::known_state> recipient_checks::verify(std::int64_t customer_id, std::string address) {
  const auto* e = customers_.find_by_id(customer_id);
  if (!probe_ || e == nullptr || gateway::recipient_policy(e->info) != "verify") {
    co_return gateway::known_state::unknown;
  }
  const auto r = routes_.route_for(e->info);
  if (r.k != gateway::route::kind::link && r.k != gateway::route::kind::host) {
    co_return gateway::known_state::unknown;
  }
  if (r.k == gateway::route::kind::link) {
    // Never over a dial-up line: its bandwidth is the customer's mail's.
    const auto* link = routes_.find_link(r.link_user);
    if (link == nullptr || link->kind == queue::link_kind::dialup) co_return gateway::known_state::unknown;
  }
  const auto state = co_await probe_(customer_id, r, address);
  if (state != gateway::known_state::unknown && learns(customers_.find_by_id(customer_id))) {
    book_.learn(customer_id, address, state == gateway::known_state::good, "callout", now_seconds());
  }
  co_return state;
}

asio::awaitable<void> recipient_checks::write_pending() {
  auto pending = book_.take_pending();
  if (pending.empty()) co_return;
  // Other nodes of a cluster read the rows by last_seen from where their
  // previous read began (cluster_sync): a batch that waited (the store was
  // down) is stamped with the time it is written, so none is read too late.
  const auto now = now_seconds();
  for (auto& k : pending) {
    if (k.last_seen > 0) k.last_seen = std::max(k.last_seen, now);
  }
  auto ec = co_await store_.run([&pending](queue::store& s) { return s.save_known_recipients(pending); });
  if (ec) {
    core::log_warning("recipient checks: writing {} known addresses failed: {} (kept in memory, tried again)",
                      pending.size(), ec.message());
    book_.requeue(std::move(pending));
  }
}

asio::awaitable<void> recipient_checks::run() {
  auto next_expiry = std::chrono::steady_clock::now();
  while (!stopped_) {
    timer_.expires_after(settings_.write_interval);
    co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    co_await write_pending();
    if (std::chrono::steady_clock::now() >= next_expiry) {
      next_expiry = std::chrono::steady_clock::now() + settings_.expire_interval;
      const auto now = now_seconds();
      const std::int64_t good_before = now - settings_.good_lifetime.count();
      const std::int64_t bad_before = now - settings_.bad_lifetime.count();
      book_.expire(good_before, bad_before);
      auto gone = co_await store_.run([good_before, bad_before](queue::store& s) {
        return s.expire_known_recipients(good_before, bad_before);
      });
      if (gone && *gone > 0) core::log_info("recipient checks: {} known addresses expired", *gone);
    }
  }
}

void recipient_checks::stop() {
  stopped_ = true;
  timer_.cancel();
}

}  // namespace flushgate::control
