// disk_guard.hpp — is there room to accept mail?
//
// Purpose: intake asks low() before MAIL, RCPT and DATA; while the room for
// new mail is below queue_min_free the answer is 452 4.3.1 and the sender
// keeps the mail (ARCHITECTURE.md invariant 4). The room is the free space
// of the file system under the data directory, plus — only for a store that
// cannot give its free pages back to the file system (an old SQLite file
// without incremental vacuum) — the space it holds free inside its files:
// without that, such a store that an outage filled would answer 452 for
// ever after the mail left (invariant 8). A store that can give the space
// back does so within a second or two (space_watch.hpp) and is not counted:
// new mail is written to the WAL first, in fresh file-system space, so
// counting pages that are free inside the database let a burst of intake
// run the file system down to its last byte, where not even a delivery's
// results can be recorded (seen in the 20-cycle recovery test).
// Each commit takes its room first (try_reserve, about twice the message:
// WAL and database) and gives it back after: sessions that each found room
// cannot together write past queue_min_free (seen in the 20-cycle recovery
// test on a loaded machine: 25 messages too many ran the disk to 0 bytes,
// where a flush could not record its results).
// refresh() is cheap (one statvfs) and is
// called once a second (space_watch.hpp) and after a failed commit, so the
// network thread never waits on the disk for this.
// Errors: a failing statvfs counts as "low" (fail safe: defer, never bounce).
// See also: space_watch.hpp (keeps store_free current and gives it back to
// the file system), store.hpp (store::space).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace flushgate::queue {

class disk_guard {
 public:
  disk_guard(std::string dir, std::uint64_t min_free) : dir_(std::move(dir)), min_free_(min_free) {}
  // Re-reads the file system's free space; returns low().
  bool refresh();
  // Marks the disk as full until the next refresh shows room (after ENOSPC).
  void mark_full() {
    free_.store(0);
    counted_.store(0);
  }
  // What the store reported (store::space): its files' size and the room
  // free inside them; `counts`: that room is part of room_bytes() (the store
  // cannot give it back to the file system).
  void set_store_space(std::uint64_t file_bytes, std::uint64_t free_inside, bool counts) {
    store_files_.store(file_bytes);
    store_free_.store(free_inside);
    counted_.store(counts ? free_inside : 0);
  }
  // Below queue_min_free, counting the room that commits in flight have
  // taken (try_reserve): many sessions that each found room must not
  // together write past queue_min_free into the last bytes, which delivery
  // needs to record its results and so to empty the queue again.
  bool low() const { return room_bytes() < min_free_ + reserved_.load(); }
  // Takes `bytes` of the room for a commit about to be made; false (nothing
  // taken) when what would be left is below queue_min_free. release() gives
  // it back once the commit is done (refresh() then sees what it used).
  bool try_reserve(std::uint64_t bytes) {
    std::uint64_t now = reserved_.load();
    for (;;) {
      const std::uint64_t room = room_bytes();
      if (room < min_free_ || room - min_free_ < now || room - min_free_ - now < bytes) return false;
      if (reserved_.compare_exchange_weak(now, now + bytes)) return true;
    }
  }
  void release(std::uint64_t bytes) { reserved_.fetch_sub(bytes); }
  std::uint64_t reserved_bytes() const { return reserved_.load(); }
  // The file system's free space under the data directory.
  std::uint64_t free_bytes() const { return free_.load(); }
  // Free inside the store's files, as last reported.
  std::uint64_t store_free_bytes() const { return store_free_.load(); }
  // The store's files on this disk (database and log), as last reported.
  std::uint64_t store_file_bytes() const { return store_files_.load(); }
  // What new mail can use: the file system's free space, plus the room
  // inside the store where it counts (saturating).
  std::uint64_t room_bytes() const {
    const std::uint64_t a = free_.load(), b = counted_.load();
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
  }
  std::uint64_t min_free() const { return min_free_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::uint64_t min_free_;
  std::atomic<std::uint64_t> free_{UINT64_MAX};
  std::atomic<std::uint64_t> store_free_{0};
  std::atomic<std::uint64_t> store_files_{0};
  std::atomic<std::uint64_t> counted_{0};
  std::atomic<std::uint64_t> reserved_{0};
};

}  // namespace flushgate::queue
