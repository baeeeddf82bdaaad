// space_watch.hpp — keeps the disk guard current and gives freed space back.
//
// Purpose: ARCHITECTURE.md invariant 8 — space that mail leaving the queue
// freed is available to intake again within seconds, with no operator
// action. Once a period (default a second) it re-reads the file system's
// free space (disk_guard::refresh), asks the store on its thread how much
// room its files hold free (store::space) and hands both to the guard; while
// there is room to give back it calls store::release_space in short steps,
// (room a store cannot give back, space_info::gives_back false, is counted
// by the guard instead, disk_guard.hpp),
// each a separate store job, so commits interleave and intake never waits
// for a long vacuum. It logs when the guard turns low and when room is back.
// Step size: a quarter of the file system's free space, between 256 KiB
// and 8 MiB — a step first writes what it moves to the WAL, so on a nearly
// full disk the step must fit beside it. At most step_budget per period.
// Errors: a failed space() or release_space() is logged once until it
// works again; the guard keeps its last value (a failing store also fails
// commits, which mark the guard full).
// See also: disk_guard.hpp, store.hpp (space, release_space).
#pragma once

#include "queue/disk_guard.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>

namespace flushgate::queue {

class space_watch {
 public:
  struct options {
    std::chrono::milliseconds period{1000};
    std::chrono::milliseconds step_budget{200};  // time spent giving space back per period
    std::uint64_t min_step = 256 << 10;
    std::uint64_t max_step = 8 << 20;
  };
  space_watch(store_worker& store, disk_guard& disk, options opt);
  space_watch(store_worker& store, disk_guard& disk) : space_watch(store, disk, options{}) {}

  // Runs until stop(); spawn it on the io thread.
  boost::asio::awaitable<void> run();
  // Ends run() at its next wake-up (at once when it is waiting). Call on the io thread.
  void stop();

  // One period's work (refresh, space, release steps); run() calls it. Tests call it directly.
  boost::asio::awaitable<void> check_once();

  // Bytes given back to the file system so far.
  std::uint64_t released_bytes() const noexcept { return released_; }

 private:
  store_worker& store_;
  disk_guard& disk_;
  options opt_;
  boost::asio::steady_timer* timer_ = nullptr;  // run()'s, while it waits
  bool stopped_ = false;
  bool was_low_ = false;
  bool failing_ = false;
  std::uint64_t released_ = 0;
};

}  // namespace flushgate::queue
