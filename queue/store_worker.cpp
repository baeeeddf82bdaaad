// store_worker.cpp — see store_worker.hpp.
//
// Group commit: commit() appends (message, completion) to pending_ under a
// mutex; the first entry to find no drain scheduled posts one to the store
// thread. A drain takes up to max_batch entries, stores them with a single
// commit_messages call (one transaction, one fsync) and posts each
// completion back to its coroutine's executor. While that fsync runs, new
// entries pile up in pending_ and make the next batch: the busier the
// gateway, the more messages share each fsync.
#include "queue/store_worker.hpp"

#include "core/log.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <exception>
#include <iterator>
#include <utility>

namespace flushgate::queue {

// The completion of one coroutine waiting in commit(): its handler and the
// executor it runs on.
template <typename Handler>
struct store_worker::pending_with final : store_worker::pending {
  pending_with(new_message m, Handler h, boost::asio::any_io_executor e)
      : handler(std::move(h)), home(std::move(e)) {
    msg = std::move(m);
  }
  void complete(boost::system::result<std::string> r) override {
    boost::asio::post(home, [h = std::move(handler), r = std::move(r)]() mutable {
      std::move(h)(std::move(r));
    });
  }
  Handler handler;
  boost::asio::any_io_executor home;
};

store_worker::store_worker(std::unique_ptr<store> s, std::size_t max_batch)
    : store_(std::move(s)), max_batch_(std::max<std::size_t>(max_batch, 1)) {}

store_worker::~store_worker() {
  // join() returns once the pool has no work left: every posted run() and
  // every drain (which re-posts itself until pending_ is empty) has run.
  pool_.join();
}

boost::asio::awaitable<boost::system::result<std::string>> store_worker::commit(new_message msg) {
  auto home = co_await boost::asio::this_coro::executor;
  co_return co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&,
                                                 void(boost::system::result<std::string>)>(
      [this, home, &msg](auto handler) {
        using handler_type = decltype(handler);
        enqueue(std::make_unique<pending_with<handler_type>>(std::move(msg), std::move(handler),
                                                             home));
      },
      boost::asio::use_awaitable);
}

void store_worker::enqueue(std::unique_ptr<pending> p) {
  bool post_drain = false;
  {
    std::lock_guard lock(mutex_);
    pending_.push_back(std::move(p));
    post_drain = !drain_scheduled_;
    drain_scheduled_ = true;
  }
  if (post_drain) boost::asio::post(pool_, [this] { drain(); });
}

void store_worker::drain() {
  std::vector<std::unique_ptr<pending>> batch;
  {
    std::lock_guard lock(mutex_);
    const std::size_t n = std::min(pending_.size(), max_batch_);
    batch.reserve(n);
    std::move(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n),
              std::back_inserter(batch));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  if (!batch.empty()) commit_batch(batch);
  bool again = false;
  {
    std::lock_guard lock(mutex_);
    again = !pending_.empty();
    drain_scheduled_ = again;
  }
  if (again) boost::asio::post(pool_, [this] { drain(); });
}

boost::system::result<std::vector<std::string>> store_worker::try_commit(
    std::span<const new_message> msgs) {
  try {
    auto r = store_->commit_messages(msgs);
    commits_.fetch_add(1, std::memory_order_relaxed);
    if (r) committed_messages_.fetch_add(msgs.size(), std::memory_order_relaxed);
    return r;
  } catch (const std::exception& e) {
    // A bug in the store; the senders must still hear back (4xx).
    core::log_error("queue store: commit of {} messages threw: {}", msgs.size(), e.what());
    return errc::io_error;
  }
}

void store_worker::commit_batch(std::vector<std::unique_ptr<pending>>& batch) {
  // commit_messages wants the messages side by side; move them out.
  std::vector<new_message> msgs;
  msgs.reserve(batch.size());
  for (auto& p : batch) msgs.push_back(std::move(p->msg));

  auto r = try_commit(msgs);
  if (r && r->size() == batch.size()) {
    for (std::size_t i = 0; i < batch.size(); ++i) batch[i]->complete(std::move((*r)[i]));
    return;
  }
  boost::system::error_code ec = r ? boost::system::error_code(errc::io_error) : r.error();
  // All-or-nothing failed. A full disk fails every message alike: answer all
  // at once. Anything else may be one message's fault (its customer was
  // removed meanwhile): give each message its own transaction.
  if (batch.size() == 1 || ec == errc::disk_full) {
    for (auto& p : batch) p->complete(ec);
    return;
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto one = try_commit(std::span<const new_message>(&msgs[i], 1));
    if (one && one->size() == 1) {
      batch[i]->complete(std::move(one->front()));
    } else {
      batch[i]->complete(one ? boost::system::error_code(errc::io_error) : one.error());
    }
  }
}

}  // namespace flushgate::queue
