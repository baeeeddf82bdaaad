// scheduler.cpp — see scheduler.hpp.
#include "gateway/flush/scheduler.hpp"
#include "gateway/gateway_metrics.hpp"

#include "core/log.hpp"
#include "core/units.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <ctime>

namespace flushgate::gateway {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

scheduler::scheduler(asio::io_context& io, customer_directory& customers, router& routes,
                     settings s, run_function run, sweep_function sweep)
    : io_(io),
      customers_(customers),
      routes_(routes),
      settings_(std::move(s)),
      run_(std::move(run)),
      sweep_(std::move(sweep)),
      timer_(io) {
  if (settings_.retry_schedule.empty()) settings_.retry_schedule.push_back(5min);
}

void scheduler::start() {
  for (const auto* e : customers_.all()) {
    if (e->queued_bytes > 0) states_[e->info.id].pending = true;
  }
  asio::co_spawn(io_, tick_loop(), asio::detached);
}

void scheduler::stop() {
  stopped_ = true;
  timer_.cancel();
  for (auto& [id, st] : states_) {
    if (st.control != nullptr && st.control->cancel) {
      st.control->cancelled = true;
      st.control->cancel();
    }
  }
}

bool scheduler::auto_delivery(const customer_entry& c, const route& r) const {
  switch (c.info.mode) {
    case queue::delivery_mode::relay: return r.deliverable();
    case queue::delivery_mode::hold: return r.k == route::kind::link;
    case queue::delivery_mode::odmr: return false;
  }
  return false;
}

asio::awaitable<void> scheduler::tick_loop() {
  steady::time_point last_sweep{};
  while (!stopped_) {
    if (sweep_ && steady::now() - last_sweep >= settings_.sweep_interval) {
      last_sweep = steady::now();
      co_await sweep_();
    }
    for (auto& [id, st] : states_) {
      if (!st.running && st.pending && st.next_try <= steady::now()) {
        maybe_start(id, st, st.failures > 0 ? "retry" : "queued mail", false);
      }
    }
    timer_.expires_after(1s);
    co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

void scheduler::maybe_start(std::int64_t customer_id, customer_state& st,
                            const std::string& trigger, bool forced) {
  if (st.running || stopped_) return;
  const customer_entry* c = customers_.find_by_id(customer_id);
  if (c == nullptr) {
    st.pending = false;
    return;
  }
  route r = routes_.route_for(c->info);
  if (!r.deliverable() || (!forced && !auto_delivery(*c, r))) return;
  if (running_ >= settings_.max_runs) {
    // Bounded: it starts on a later tick, when a run has finished.
    st.pending = true;
    st.next_try = steady::now();
    return;
  }
  st.running = true;
  st.pending = false;
  st.rerun = false;
  // Progress is fresh from this moment, before the run's coroutine starts,
  // so whoever asked for the flush sees it running at once.
  st.progress = flush_progress{};
  st.progress.running = true;
  st.progress.trigger = trigger;
  st.progress.route = r.describe();
  st.progress.started = static_cast<std::int64_t>(std::time(nullptr));
  if (r.k == route::kind::link) {
    st.progress.link_user = r.link_user;
    st.progress.link_address = r.host;
    if (const auto* link = routes_.find_link(r.link_user)) st.progress.link_session = link->session_id;
  }
  ++running_;
  asio::co_spawn(io_, run_one(customer_id, r, trigger, forced), asio::detached);
}

asio::awaitable<void> scheduler::run_one(std::int64_t customer_id, route r, std::string trigger,
                                         bool forced) {
  customer_state& st = states_[customer_id];  // std::map: the reference stays valid
  if (const customer_entry* c = customers_.find_by_id(customer_id)) {
    core::log_info("customer {}: flush started ({}) over {}", c->info.name, trigger, r.describe());
  }
  run_control control;
  st.control = &control;
  run_outcome out;
  const auto began = steady::now();
  try {
    out = co_await run_(customer_id, std::move(r), st.progress, control);
  } catch (const std::exception& e) {
    out.left_mail = true;
    out.error = std::string("internal error: ") + e.what();
    core::log_error("delivery run for customer {} failed: {}", customer_id, e.what());
  }
  if (!out.nothing_deliverable && !out.held_elsewhere) {
    const char* result = out.cancelled || control.cancelled ? "cancelled" : out.left_mail ? "left_mail" : "complete";
    observe_flush(result, std::chrono::duration<double>(steady::now() - began).count());
  }
  st.control = nullptr;
  --running_;
  st.running = false;
  st.progress.running = false;
  st.progress.finished = static_cast<std::int64_t>(std::time(nullptr));
  st.progress.error = out.error;
  if (!out.held_elsewhere && !out.cancelled && !control.cancelled) {
    st.server_down = out.left_mail && !out.error.empty();
  }

  st.waiting_for_lease = out.held_elsewhere;
  const int failures_before = st.failures;
  if (out.held_elsewhere) {
    // Another node delivers this customer now: no failure, no backoff step.
    st.pending = true;
    st.next_try = steady::now() + out.retry_after;
    const customer_entry* c = customers_.find_by_id(customer_id);
    core::log_info("customer {}: delivery held by node {}; looking again in {} ms",
                   c ? c->info.name : std::to_string(customer_id), out.holder,
                   out.retry_after.count());
    if (on_held_) on_held_(customer_id, trigger, forced, out.holder);
  } else if (out.cancelled || control.cancelled) {
    st.pending = true;
    st.next_try = steady::now();
  } else if (out.left_mail) {
    ++st.failures;
    st.pending = true;
    const auto& schedule = settings_.retry_schedule;
    auto wait = schedule[std::min<std::size_t>(static_cast<std::size_t>(st.failures) - 1, schedule.size() - 1)];
    st.next_try = steady::now() + wait;
    const customer_entry* c = customers_.find_by_id(customer_id);
    const bool automatic = c != nullptr && auto_delivery(*c, routes_.route_for(c->info));
    core::log_info("customer {}: mail left in the queue ({}); {}",
                   c ? c->info.name : std::to_string(customer_id), out.error,
                   automatic ? "next attempt in " + core::format_duration(wait)
                             : std::string("held until the next trigger (flush, link up, ETRN)"));
  } else {
    st.failures = 0;
    st.pending = false;
  }
  // Only what this run learned about the customer's server is shared: a
  // run that found the lease elsewhere or was stopped learned nothing.
  if (st.failures != failures_before) retry_changed(customer_id, st);
  // A run that found the lease elsewhere did nothing: no flush-done hooks.
  if (on_done_ && !out.held_elsewhere) on_done_(customer_id, st.progress);
  if (st.rerun && !stopped_) {
    st.rerun = false;
    st.pending = true;
    if (!out.left_mail && !out.held_elsewhere) maybe_start(customer_id, st, st.rerun_trigger, false);
  }
}

void scheduler::mail_queued(std::int64_t customer_id) {
  customer_state& st = states_[customer_id];
  st.pending = true;
  if (st.running) {
    st.rerun = true;
    st.rerun_trigger = "new mail";
    return;
  }
  // During a backoff new mail waits with the rest: retry state is per customer.
  // While another node holds the lease it waits too: that node's run takes
  // it (it pages through the queue by arrival), and its release wakes this
  // node (lease_released) — no lease request per message.
  if (st.waiting_for_lease && st.next_try > steady::now()) return;
  if (st.failures == 0 || st.next_try <= steady::now()) maybe_start(customer_id, st, "new mail", false);
}

flush_refusal scheduler::request_flush(std::int64_t customer_id, const std::string& trigger) {
  const customer_entry* c = customers_.find_by_id(customer_id);
  if (c == nullptr) return flush_refusal::unknown_customer;
  route r = routes_.route_for(c->info);
  if (r.k == route::kind::odmr) return flush_refusal::odmr_only;
  if (!r.deliverable()) return flush_refusal::no_route;
  customer_state& st = states_[customer_id];
  if (st.running) return flush_refusal::already_running;
  st.failures = 0;
  st.next_try = steady::now();
  st.pending = true;
  maybe_start(customer_id, st, trigger, true);
  return flush_refusal::none;
}

void scheduler::route_changed(std::int64_t customer_id, const std::string& trigger) {
  const customer_entry* c = customers_.find_by_id(customer_id);
  if (c == nullptr) return;
  customer_state& st = states_[customer_id];
  route r = routes_.route_for(c->info);
  st.server_down = false;  // a new route: nothing known of it yet
  if (st.failures > 0) {
    st.failures = 0;
    retry_changed(customer_id, st);
  }
  st.next_try = steady::now();
  if (st.running) {
    if (st.progress.route != r.describe() && st.control != nullptr) {
      // The link under the running flush is gone (or a better one came):
      // stop it; undelivered recipients stay queued for the new route.
      core::log_info("customer {}: route changed to {} during a flush over {}: stopping it",
                     c->info.name, r.describe(), st.progress.route);
      st.control->cancelled = true;
      if (st.control->cancel) st.control->cancel();
    }
    st.rerun = true;
    st.rerun_trigger = trigger;
    return;
  }
  if (c->queued_bytes == 0) return;
  st.pending = true;
  // A link coming up is a flush trigger in every mode but odmr.
  maybe_start(customer_id, st, trigger, r.k == route::kind::link);
}

bool scheduler::begin_external(std::int64_t customer_id, const std::string& trigger) {
  customer_state& st = states_[customer_id];
  if (st.running) return false;
  st.running = true;
  st.progress = flush_progress{};
  st.progress.running = true;
  st.progress.trigger = trigger;
  st.progress.route = "odmr";
  st.progress.started = static_cast<std::int64_t>(std::time(nullptr));
  return true;
}

void scheduler::end_external(std::int64_t customer_id, bool delivered) {
  customer_state& st = states_[customer_id];
  st.running = false;
  st.progress.running = false;
  st.progress.finished = static_cast<std::int64_t>(std::time(nullptr));
  if (on_done_ && delivered) on_done_(customer_id, st.progress);
}

void scheduler::retry_changed(std::int64_t customer_id, customer_state& st) {
  st.retry_changed_at = ++retry_generation_;
  if (!on_retry_) return;
  const auto next = std::chrono::system_clock::now() +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(
                        std::max(st.next_try - steady::now(), steady::duration::zero()));
  on_retry_(customer_id, st.failures, next);
}

void scheduler::adopt_retries(const std::vector<queue::retry_record>& rows, std::uint64_t since) {
  const auto now = steady::now();
  const auto wall_now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  // A row's next try (unix ms) on this node's steady clock.
  auto next_try_of = [&](const queue::retry_record& r) {
    return now + std::chrono::duration_cast<steady::duration>(std::chrono::milliseconds(r.next_try) -
                                                              wall_now_ms);
  };
  std::map<std::int64_t, const queue::retry_record*> by_customer;
  for (const auto& r : rows) by_customer[r.customer_id] = &r;
  for (auto& [id, st] : states_) {
    if (st.running || st.retry_changed_at > since) continue;
    auto it = by_customer.find(id);
    if (it == by_customer.end()) {
      // Another node delivered it (or a route change reset it) since.
      if (st.failures > 0) {
        st.failures = 0;
        st.next_try = now;
      }
      continue;
    }
    const auto& r = *it->second;
    const auto next = next_try_of(r);
    if (r.failures > st.failures || next > st.next_try) {
      st.failures = std::max(st.failures, r.failures);
      st.next_try = std::max(st.next_try, next);
      st.pending = true;
    }
  }
  // Customers this node never looked at yet.
  for (const auto& [id, r] : by_customer) {
    if (states_.count(id) != 0) continue;
    customer_state& st = states_[id];
    st.failures = r->failures;
    st.next_try = next_try_of(*r);
    st.pending = true;
  }
}

void scheduler::lease_released(std::int64_t customer_id) {
  auto it = states_.find(customer_id);
  if (it == states_.end()) return;
  customer_state& st = it->second;
  if (st.running || !st.waiting_for_lease) return;
  st.waiting_for_lease = false;
  st.next_try = steady::now();
  maybe_start(customer_id, st, "lease free", false);
}

void scheduler::note_queued(std::int64_t customer_id) {
  customer_state& st = states_[customer_id];
  if (!st.running) st.pending = true;
}

const flush_progress* scheduler::progress(std::int64_t customer_id) const {
  auto it = states_.find(customer_id);
  return it == states_.end() ? nullptr : &it->second.progress;
}

bool scheduler::running(std::int64_t customer_id) const {
  auto it = states_.find(customer_id);
  return it != states_.end() && it->second.running;
}

std::int64_t scheduler::next_attempt_in(std::int64_t customer_id) const {
  auto it = states_.find(customer_id);
  if (it == states_.end() || it->second.running || !it->second.pending) return -1;
  auto left = std::chrono::duration_cast<std::chrono::seconds>(it->second.next_try - steady::now());
  return std::max<std::int64_t>(0, left.count());
}

bool scheduler::server_answering(std::int64_t customer_id) const {
  auto it = states_.find(customer_id);
  if (it == states_.end()) return true;
  return !it->second.server_down;
}

}  // namespace flushgate::gateway
