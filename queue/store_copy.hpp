// store_copy.hpp — moves a whole queue from one store to another.
//
// Purpose: `flushgate store copy --from sqlite:DIR --to postgresql`: a single
// node's SQLite store (customers, their links, every queued message with its
// recipients' state) into the PostgreSQL store a cluster shares, or any
// store into any other. Customers are matched by name (one already in the
// target is kept as it is and its id used), links are saved for the
// target's customer, and each message is imported in its own durable
// transaction under its own queue id, hold flag and recipient state
// (store::import_message). Nothing is removed from the source.
// Resumable: a message whose queue id is already in the target is skipped,
// so running the copy again after an interruption copies only the rest, and
// a finished copy run again copies nothing.
// Security: both stores are the operator's; no network input.
// Errors: the first failure stops the copy and comes back with what was done
// so far: a customer whose domain belongs to another customer in the target
// (domain_taken), a store error (io_error, disk_full). Mail arriving at the
// source while it is copied is not copied: stop the source's intake first
// (README, "Moving a node to PostgreSQL").
// Limitations: the source's message list is read one customer at a time
// (envelopes only; bodies one by one).
// See also: store.hpp (import_message), postgres_store.hpp.
#pragma once

#include "queue/store.hpp"

#include <cstdint>
#include <functional>
#include <string>

namespace flushgate::queue {

struct copy_report {
  std::uint64_t customers_added = 0;    // new in the target
  std::uint64_t customers_present = 0;  // already there (by name)
  std::uint64_t links = 0;
  std::uint64_t messages_copied = 0;
  std::uint64_t messages_present = 0;   // already there (by queue id): an earlier run copied them
  std::uint64_t bytes_copied = 0;
  std::string error;                    // why it stopped, "" when it finished
};

// Copies everything of `from` into `to`; `progress` (may be empty) is called
// after each customer with the report so far.
copy_report copy_store(store& from, store& to,
                       const std::function<void(const copy_report&)>& progress = {});

}  // namespace flushgate::queue
