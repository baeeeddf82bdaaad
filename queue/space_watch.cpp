// space_watch.cpp — see space_watch.hpp.
#include "queue/space_watch.hpp"

#include "core/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>

namespace flushgate::queue {

namespace asio = boost::asio;

space_watch::space_watch(store_worker& store, disk_guard& disk, options opt)
    : store_(store), disk_(disk), opt_(opt) {}

void space_watch::stop() {
  stopped_ = true;
  if (timer_ != nullptr) timer_->cancel();
}

asio::awaitable<void> space_watch::run() {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!stopped_) {
    co_await check_once();
    if (stopped_) break;
    timer.expires_after(opt_.period);
    timer_ = &timer;
    auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    timer_ = nullptr;
    if (ec) break;
  }
}

asio::awaitable<void> space_watch::check_once() {
  disk_.refresh();
  // Ask the store, and give room back while there is some, in steps sized
  // to the file system's free space, until the period's budget is spent.
  const auto deadline = std::chrono::steady_clock::now() + opt_.step_budget;
  bool failed = false;
  for (int step = 0; step < 64; ++step) {  // bounded: the budget ends it first
    auto room = co_await store_.run([](store& s) { return s.space(); });
    if (!room) {
      failed = true;
      if (!failing_) core::log_warning("queue store: cannot read its free space: {}", room.error().message());
      break;
    }
    // Counted as room only when the store cannot give it back (see disk_guard.hpp).
    disk_.set_store_space(room->file_bytes, room->reusable_bytes, !room->gives_back);
    if (room->reusable_bytes == 0 || stopped_ || std::chrono::steady_clock::now() >= deadline) break;
    const std::uint64_t size = std::clamp(disk_.free_bytes() / 4, opt_.min_step, opt_.max_step);
    auto left = co_await store_.run([size](store& s) { return s.release_space(size); });
    if (!left) {
      failed = true;
      if (!failing_) core::log_warning("queue store: giving free space back failed: {}", left.error().message());
      break;
    }
    const std::uint64_t before = room->reusable_bytes;
    released_ += before > *left ? before - *left : 0;
    disk_.refresh();
    if (*left == 0) {
      // Nothing more to give back: one last look at what is free inside.
      auto after = co_await store_.run([](store& s) { return s.space(); });
      if (after) disk_.set_store_space(after->file_bytes, after->reusable_bytes, !after->gives_back);
      break;
    }
  }
  if (failing_ && !failed) core::log_info("queue store: free space readable again");
  failing_ = failed;

  const bool low = disk_.low();
  if (low != was_low_) {
    if (low) {
      core::log_warning("disk: {} bytes free under {} (+{} free inside the queue store), below "
                        "queue_min_free: answering 452",
                        disk_.free_bytes(), disk_.dir(), disk_.store_free_bytes());
    } else {
      core::log_info("disk: space is back ({} bytes free, +{} inside the queue store): accepting mail again",
                     disk_.free_bytes(), disk_.store_free_bytes());
    }
    was_low_ = low;
  }
}

}  // namespace flushgate::queue
