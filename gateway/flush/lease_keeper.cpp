// lease_keeper.cpp — see lease_keeper.hpp.
#include "gateway/flush/lease_keeper.hpp"

#include "core/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <exception>
#include <utility>
#include <variant>

namespace flushgate::gateway {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using steady = std::chrono::steady_clock;

lease_keeper::lease_keeper(queue::store_worker& store, lease_settings s)
    : store_(store), settings_(std::move(s)) {}

asio::awaitable<lease_keeper::taken> lease_keeper::take(std::int64_t customer_id) {
  taken t;
  t.customer_id = customer_id;
  const auto sent = steady::now();  // the store's expiry is at least lease_time after this
  // Captures by reference (the frame outlives the call): g++ 12 destroys a
  // temporary lambda with non-trivial captures twice in a co_await.
  auto r = co_await store_.run([&](queue::store& s) {
    return s.take_lease(customer_id, settings_.node, 0, settings_.lease_time.count());
  });
  if (!r) {
    t.error = r.error();
    core::log_warning("customer {}: delivery lease not taken: {}{}", customer_id,
                      r.error().message(), settings_.required ? "" : " (one node: delivering anyway)");
    if (!settings_.required) {
      t.status = take_status::ours;
      t.unfenced = true;
    }
    co_return t;
  }
  if (!r->ours) {
    t.status = take_status::held_elsewhere;
    t.holder = r->lease.holder;
    t.holder_left = std::chrono::milliseconds(
        std::clamp<std::int64_t>(r->lease.expires - r->now, 0, settings_.lease_time.count()));
    co_return t;
  }
  t.status = take_status::ours;
  t.fence = r->lease.fence;
  t.valid_until = sent + settings_.lease_time;
  co_return t;
}

// Bounded by the run: `hold` cancels it (awaitable operator ||) when the
// run ends; it never ends on its own, so that it never cancels the run
// through || — a lost lease stops the run through its run_control instead,
// which lets the run record what was answered.
asio::awaitable<void> lease_keeper::keep(const taken& t, run_control& control, bool& lost) {
  auto valid_until = t.valid_until;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto interval = std::max(settings_.lease_time / 3, std::chrono::milliseconds(1));
  // After a failed renewal: try again sooner, but keep trying until the local expiry.
  const auto retry = std::max(settings_.lease_time / 10, std::chrono::milliseconds(1));
  auto wait = interval;
  const auto ms = settings_.lease_time.count();
  try {
    while (!lost) {
      timer.expires_after(wait);
      if (auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable)); ec) {
        co_return;  // the run is over
      }
      const auto sent = steady::now();
      auto r = co_await store_.run([&](queue::store& s) {
        return s.renew_lease(t.customer_id, settings_.node, t.fence, 0, ms);
      });
      if (r) {
        valid_until = sent + settings_.lease_time;
        wait = interval;
        continue;
      }
      if (r.error() != queue::errc::lease_lost &&
          (!settings_.required || steady::now() < valid_until)) {
        core::log_warning("customer {}: delivery lease not renewed ({}); trying again",
                          t.customer_id, r.error().message());
        wait = retry;
        continue;
      }
      core::log_warning("customer {}: delivery lease lost ({}): stopping the run",
                        t.customer_id, r.error().message());
      lost = true;
    }
    control.cancelled = true;
    if (control.cancel) control.cancel();
    // Wait for the run to end (hold cancels this wait).
    timer.expires_at(steady::time_point::max());
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  } catch (const boost::system::system_error&) {
    // Cancelled inside a store call: the run is over.
  }
}

asio::awaitable<run_outcome> lease_keeper::hold(const taken& t, run_control& control,
                                                const run_body& body) {
  if (t.unfenced) co_return co_await body();  // nothing to keep or give back
  bool lost = false;
  run_outcome out;
  std::exception_ptr failure;
  try {
    auto r = co_await (body() || keep(t, control, lost));
    if (r.index() == 0) out = std::move(std::get<0>(r));
  } catch (...) {
    failure = std::current_exception();
  }
  // The run is over, but its caller still waits for the release below: a
  // cancel now (a route change) must find nothing to close. The delivery
  // agent clears its cancel function when its connection goes; a run body
  // that did not would otherwise reach a freed connection here.
  control.cancel = nullptr;
  if (lost) {
    out.cancelled = true;
    out.error = out.error.empty() ? "delivery lease lost" : "delivery lease lost: " + out.error;
  }
  co_await release(t);  // even after a failure
  if (failure) std::rethrow_exception(failure);
  co_return out;
}

asio::awaitable<void> lease_keeper::release(const taken& t) {
  if (t.unfenced) co_return;
  auto ec = co_await store_.run([&](queue::store& s) {
    return s.release_lease(t.customer_id, settings_.node, t.fence);
  });
  if (!ec && on_released_) on_released_(t.customer_id);
  // lease_lost only says that another node has it by now.
  if (ec && ec != queue::errc::lease_lost) {
    core::log_warning("customer {}: delivery lease not released ({}): it expires by itself",
                      t.customer_id, ec.message());
  }
}

scheduler::run_function lease_keeper::wrap(scheduler::run_function run) {
  return [this, run = std::move(run)](std::int64_t customer_id, route r, flush_progress& progress,
                                      run_control& control) -> asio::awaitable<run_outcome> {
    const taken t = co_await take(customer_id);
    run_outcome out;
    switch (t.status) {
      case take_status::held_elsewhere:
        out.held_elsewhere = true;
        out.holder = t.holder;
        // Just after the holder's lease would end: renewed, it is looked at
        // again then; not renewed (a dead node), it is taken over then.
        out.retry_after = t.holder_left + std::chrono::milliseconds(50);
        out.error = "held by node " + t.holder;
        co_return out;
      case take_status::failed:
        out.left_mail = true;
        out.error = "delivery lease: " + t.error.message();
        co_return out;
      case take_status::ours:
        break;
    }
    const run_body body = [&]() { return run(customer_id, std::move(r), progress, control); };
    co_return co_await hold(t, control, body);
  };
}

}  // namespace flushgate::gateway
