// disk_guard.hpp — is there room to accept mail?
//
// Purpose: intake asks low() before MAIL, RCPT and DATA; while the free space
// under the data directory is below queue_min_free the answer is 452 4.3.1 and
// the sender keeps the mail (ARCHITECTURE.md invariant 4). refresh() is cheap
// (one statvfs) and is called once a second by the daemon and after a failed
// commit, so the network thread never waits on the disk for this.
// Errors: a failing statvfs counts as "low" (fail safe: defer, never bounce).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace flushgate::queue {

class disk_guard {
 public:
  disk_guard(std::string dir, std::uint64_t min_free) : dir_(std::move(dir)), min_free_(min_free) {}
  // Re-reads the free space; returns low().
  bool refresh();
  // Marks the disk as full until the next refresh shows room (after ENOSPC).
  void mark_full() { free_.store(0); }
  bool low() const { return free_.load() < min_free_; }
  std::uint64_t free_bytes() const { return free_.load(); }

 private:
  std::string dir_;
  std::uint64_t min_free_;
  std::atomic<std::uint64_t> free_{UINT64_MAX};
};

}  // namespace flushgate::queue
