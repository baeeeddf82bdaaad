// lease_keeper_test.cpp — the delivery lease around a run
// (gateway/flush/lease_keeper.cpp), with a fake run on a real io_context and
// the SQLite store behind a real store worker. A second sqlite_store on the
// same spool plays another node ("node-b"): it looks at the lease, holds it,
// or steals it by taking it at a time past its expiry; a raw connection that
// holds the database's write lock makes every renewal fail.
#include "gateway/flush/lease_keeper.hpp"

#include "queue/sqlite_store.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

namespace flushgate::gateway {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class LeaseKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/flushgate-lease.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << "mkdtemp: " << std::strerror(errno);
    root_ = tmpl;
    auto s = queue::sqlite_store::open((root_ / "spool").string());
    ASSERT_TRUE(s) << "open: got " << s.error().message() << ", want success";
    queue::customer c;
    c.name = "acme";
    c.domains = {"acme.example"};
    ASSERT_FALSE((*s)->add_customer(c));
    customer_ = c.id;
    worker_ = std::make_unique<queue::store_worker>(std::move(*s));
    auto other = queue::sqlite_store::open((root_ / "spool").string());
    ASSERT_TRUE(other) << "open node-b: got " << other.error().message() << ", want success";
    node_b_ = std::move(*other);
  }
  void TearDown() override {
    node_b_.reset();
    worker_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Runs keeper.wrap(run) once for the customer, to its end (at most 30 s).
  std::optional<run_outcome> run_wrapped(lease_keeper& keeper, scheduler::run_function run) {
    auto wrapped = keeper.wrap(std::move(run));
    std::optional<run_outcome> out;
    asio::co_spawn(io_, wrapped(customer_, route{}, progress_, control_),
                   [&](std::exception_ptr e, run_outcome o) {
                     if (!e) out = std::move(o);
                   });
    io_.restart();
    io_.run_for(30s);
    return out;
  }

  // Runs keeper.wrap() over a run that holds the database's write lock
  // (from a raw connection) for `length` or until it is cancelled (then
  // `cancelled`), and gives the lock back at its end.
  std::optional<run_outcome> run_under_write_lock(lease_keeper& keeper,
                                                  std::chrono::milliseconds length,
                                                  bool& cancelled) {
    sqlite3* lock = nullptr;
    if (sqlite3_open((root_ / "spool" / "queue.db").c_str(), &lock) != SQLITE_OK) {
      ADD_FAILURE() << "open a raw connection: " << sqlite3_errmsg(lock);
      sqlite3_close(lock);
      return std::nullopt;
    }
    bool locked = false;
    auto out = run_wrapped(keeper, [&](std::int64_t, route, flush_progress&,
                                       run_control& control) -> asio::awaitable<run_outcome> {
      asio::steady_timer t(io_);
      control.cancel = [&t] { t.cancel(); };
      locked = sqlite3_exec(lock, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
      t.expires_after(length);
      auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      cancelled = ec == asio::error::operation_aborted && control.cancelled;
      sqlite3_exec(lock, "ROLLBACK", nullptr, nullptr, nullptr);  // the release may go through
      co_return run_outcome{};
    });
    sqlite3_close(lock);
    EXPECT_TRUE(locked) << "could not take the write lock";
    return out;
  }

  asio::io_context io_;
  fs::path root_;
  std::int64_t customer_ = 0;
  std::unique_ptr<queue::store_worker> worker_;
  std::unique_ptr<queue::sqlite_store> node_b_;
  flush_progress progress_;
  run_control control_;
};

// A run three lease times long keeps its lease all along (renewed every
// third of it), and gives it back at the end; the next run takes it again.
TEST_F(LeaseKeeperTest, RenewalsKeepTheLeaseForTheWholeRunAndItIsReleasedAfter) {
  lease_keeper keeper(*worker_, {.node = "node-a", .lease_time = 1500ms});
  int checks = 0;
  int held_by_a = 0;
  auto run = [&](std::int64_t id, route, flush_progress&,
                 run_control& control) -> asio::awaitable<run_outcome> {
    asio::steady_timer t(io_);
    for (int i = 0; i < 18 && !control.cancelled; ++i) {  // 18 x 250 ms: the run's length
      t.expires_after(250ms);
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      ++checks;
      auto other = node_b_->take_lease(id, "node-b", 0, 60000);
      if (other && !other->ours && other->lease.holder == "node-a") ++held_by_a;
    }
    co_return run_outcome{};
  };
  auto out = run_wrapped(keeper, run);
  ASSERT_TRUE(out) << "the run did not end";
  EXPECT_FALSE(out->cancelled) << "got cancelled (" << out->error << "), want a whole run";
  EXPECT_FALSE(control_.cancelled);
  EXPECT_EQ(checks, 18);
  EXPECT_EQ(held_by_a, checks) << "got node-a holding the lease at " << held_by_a << " of "
                               << checks << " looks, want all";
  auto leases = node_b_->list_leases();
  ASSERT_TRUE(leases);
  EXPECT_TRUE(leases->empty()) << "got " << leases->size() << " leases held, want none";

  // A run that leaves its cancel function behind (the delivery agent does):
  // it is gone before the release, so a late cancel cannot reach a freed
  // connection.
  int second_runs = 0;
  out = run_wrapped(keeper, [&](std::int64_t, route, flush_progress&,
                                run_control& control) -> asio::awaitable<run_outcome> {
    ++second_runs;
    control.cancel = [] {};
    co_return run_outcome{};
  });
  ASSERT_TRUE(out);
  EXPECT_EQ(second_runs, 1) << "a single node always gets its lease";
  EXPECT_FALSE(out->held_elsewhere);
  EXPECT_FALSE(control_.cancel) << "got the run's cancel function left behind, want none";
}

// Another node takes the lease over (as after an expiry): the next renewal
// finds it lost and the run is cancelled through its run_control; the
// lease stays the other node's.
TEST_F(LeaseKeeperTest, StolenLeaseCancelsTheRun) {
  lease_keeper keeper(*worker_, {.node = "node-a", .lease_time = 600ms});
  bool stolen = false;
  bool saw_cancel = false;
  auto run = [&](std::int64_t id, route, flush_progress&,
                 run_control& control) -> asio::awaitable<run_outcome> {
    asio::steady_timer t(io_);
    control.cancel = [&t] { t.cancel(); };
    // An hour from now node-a's lease has long expired: node-b gets it.
    auto taken = node_b_->take_lease(id, "node-b", unix_ms() + 3600000, 3600000);
    stolen = taken && taken->ours;
    t.expires_after(20s);  // the deadline: a cancel must come long before
    auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    saw_cancel = ec == asio::error::operation_aborted && control.cancelled;
    co_return run_outcome{};
  };
  auto out = run_wrapped(keeper, run);
  ASSERT_TRUE(stolen) << "node-b could not take the lease";
  ASSERT_TRUE(out) << "the run did not end";
  EXPECT_TRUE(saw_cancel) << "got no cancel, want the run stopped by the lost lease";
  EXPECT_TRUE(out->cancelled);
  EXPECT_NE(out->error.find("lease lost"), std::string::npos)
      << "got error \"" << out->error << "\", want it to say the lease was lost";
  auto leases = node_b_->list_leases();
  ASSERT_TRUE(leases);
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].holder, "node-b") << "node-a's release must not free node-b's lease";
}

// Renewals that fail (the store busy: another connection holds the write
// lock, so each one ends in io_error after SQLite's busy timeout) past the
// lease's local expiry cancel the run: the lease may be another node's by now.
TEST_F(LeaseKeeperTest, FailedRenewalsPastTheExpiryCancelTheRun) {
  lease_keeper keeper(*worker_, {.node = "node-a", .lease_time = 600ms});
  bool cancelled = false;
  auto out = run_under_write_lock(keeper, 25s, cancelled);  // 25 s: the deadline of the cancel
  ASSERT_TRUE(out) << "the run did not end";
  EXPECT_TRUE(cancelled) << "got no cancel, want the run stopped once the lease expired";
  EXPECT_TRUE(out->cancelled);
  EXPECT_NE(out->error.find("lease lost"), std::string::npos) << "got error " << out->error;
}

// One node (SQLite, the lease not required): failed renewals past the
// expiry do not stop the run — nobody else can deliver the customer, and
// delivering is what frees a full disk.
TEST_F(LeaseKeeperTest, OneNodeKeepsRunningThroughFailedRenewals) {
  lease_keeper keeper(*worker_, {.node = "node-a", .lease_time = 300ms, .required = false});
  bool cancelled = true;
  // The run's length: past one renewal that fails after SQLite's 5 s busy timeout.
  auto out = run_under_write_lock(keeper, 6500ms, cancelled);
  ASSERT_TRUE(out) << "the run did not end";
  EXPECT_FALSE(cancelled) << "got the run cancelled, want it to go on (one node)";
  EXPECT_FALSE(out->cancelled) << "got error " << out->error;
}

// While another node holds the lease, the run does not start, and the
// outcome says who holds it (no failure: the scheduler counts no backoff).
TEST_F(LeaseKeeperTest, LeaseHeldElsewhereEndsTheRunBeforeItStarts) {
  auto b = node_b_->take_lease(customer_, "node-b", 0, 60000);
  ASSERT_TRUE(b && b->ours);
  lease_keeper keeper(*worker_, {.node = "node-a", .lease_time = 600ms});
  int runs = 0;
  auto out = run_wrapped(keeper, [&](std::int64_t, route, flush_progress&,
                                     run_control&) -> asio::awaitable<run_outcome> {
    ++runs;
    co_return run_outcome{};
  });
  ASSERT_TRUE(out);
  EXPECT_EQ(runs, 0) << "got a run while node-b holds the lease, want none";
  EXPECT_TRUE(out->held_elsewhere);
  EXPECT_FALSE(out->left_mail) << "held elsewhere is no failure";
  EXPECT_EQ(out->holder, "node-b");
  // node-b's lease has a minute left, but a holder renews every third of
  // the lease time: looked at again one lease time (and a margin) later.
  EXPECT_EQ(out->retry_after, 650ms);
  EXPECT_EQ(out->error, "held by node node-b");
}

// A lease about to end is looked at again just after its end, so that a
// holder that died is replaced within about the lease time.
TEST_F(LeaseKeeperTest, HeldElsewhereRetriesWhenTheHoldersLeaseWouldEnd) {
  auto b = node_b_->take_lease(customer_, "node-b", 0, 300);
  ASSERT_TRUE(b && b->ours);
  lease_keeper keeper(*worker_, {.node = "node-a", .lease_time = 5000ms});
  auto out = run_wrapped(keeper, [&](std::int64_t, route, flush_progress&,
                                     run_control&) -> asio::awaitable<run_outcome> {
    co_return run_outcome{};
  });
  ASSERT_TRUE(out);
  ASSERT_TRUE(out->held_elsewhere);
  EXPECT_GE(out->retry_after, 50ms);
  EXPECT_LE(out->retry_after, 350ms) << "got " << out->retry_after.count()
                                     << " ms, want the 300 ms left of node-b's lease and a margin";
}

}  // namespace
}  // namespace flushgate::gateway
