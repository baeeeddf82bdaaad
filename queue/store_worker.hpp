// store_worker.hpp — the store thread: the one thread that touches the store,
// with group commit for incoming mail.
//
// Purpose: the network thread never waits on the disk. Coroutines hand work
// to the store thread and are resumed on their own executor with the result.
// commit() batches: messages from many sessions that arrive while a commit is
// being fsync'd go together into the next single transaction, so many
// sessions share one fsync and the commit rate is not the fsync rate.
// Security: none of its own; the store binds all values (store.hpp).
// Errors: commit() resumes with the qid, or with the store's error for the
// transaction that held the message (queue::errc: disk_full, io_error, ...).
// A batch that fails for another reason than disk_full is retried message by
// message, so one message whose customer vanished meanwhile (not_found) does
// not fail the others sharing its batch. An exception thrown by the store
// inside a commit is a bug: it is logged and the batch gets io_error. run()
// rethrows in the caller whatever fn threw.
// Limitations: once posted, work is never cancelled — a durable step is not
// abandoned halfway (STYLE.md, Sessions). The destructor waits for all queued
// work, so the io_contexts of waiting coroutines must still run until it has
// returned, and must be destroyed after the worker (the store thread may
// still be inside a post() to them). Call commit()/run() only while the
// worker is alive.
// See also: store.hpp, core/blocking.hpp, ARCHITECTURE.md invariant 1.
#pragma once

#include "core/blocking.hpp"
#include "queue/store.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace flushgate::queue {

class store_worker {
 public:
  // Takes the store; starts one thread that owns it from now on.
  explicit store_worker(std::unique_ptr<store> s, std::size_t max_batch = 256);
  // Finishes queued work (commits included), joins the thread, closes the store.
  ~store_worker();
  store_worker(const store_worker&) = delete;
  store_worker& operator=(const store_worker&) = delete;

  // Runs fn(store&) on the store thread; resumes the caller on its executor with fn's result.
  template <typename F>
  boost::asio::awaitable<std::invoke_result_t<F&, store&>> run(F fn) {
    using result_type = std::invoke_result_t<F&, store&>;
    store& s = *store_;
    // fn lives in this coroutine frame, which stays suspended until fn ran.
    if constexpr (std::is_void_v<result_type>) {
      co_await core::run_blocking(pool_.get_executor(), [&fn, &s] { fn(s); });
    } else {
      co_return co_await core::run_blocking(pool_.get_executor(),
                                            [&fn, &s]() -> result_type { return fn(s); });
    }
  }

  // Queues msg for the next group commit; resumes once it is durable, with its qid or the error.
  boost::asio::awaitable<boost::system::result<std::string>> commit(new_message msg);

  // Number of transactions commit_messages ran for commit() so far.
  std::uint64_t commits() const noexcept { return commits_.load(std::memory_order_relaxed); }
  // Number of messages stored through commit() so far.
  std::uint64_t committed_messages() const noexcept {
    return committed_messages_.load(std::memory_order_relaxed);
  }

 private:
  // One queued commit: the message and the suspended coroutine to resume.
  struct pending {
    virtual ~pending() = default;
    // Posts the coroutine's resumption, with r, to the coroutine's executor.
    virtual void complete(boost::system::result<std::string> r) = 0;
    new_message msg;
  };
  template <typename Handler>
  struct pending_with;

  void enqueue(std::unique_ptr<pending> p);
  // Runs on the store thread: commits one batch, then re-posts itself while
  // more is pending (so run() work queued meanwhile is not starved).
  void drain();
  // Commits batch as one transaction; on a failure other than disk_full,
  // retries each message alone. Completes every entry.
  void commit_batch(std::vector<std::unique_ptr<pending>>& batch);
  boost::system::result<std::vector<std::string>> try_commit(std::span<const new_message> msgs);

  std::unique_ptr<store> store_;
  std::size_t max_batch_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<pending>> pending_;  // guarded by mutex_
  bool drain_scheduled_ = false;                   // guarded by mutex_
  std::atomic<std::uint64_t> commits_{0};
  std::atomic<std::uint64_t> committed_messages_{0};
  boost::asio::thread_pool pool_{1};  // last: its thread stops before the rest goes
};

}  // namespace flushgate::queue
