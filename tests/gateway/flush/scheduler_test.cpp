// scheduler_test.cpp — when runs start (gateway/flush/scheduler.cpp), with a fake
// run function on a real io_context.
#include "gateway/flush/scheduler.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <gtest/gtest.h>

#include <chrono>

namespace flushgate::gateway {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

class SchedulerTest : public ::testing::Test {
 protected:
  void add_customer(std::int64_t id, queue::delivery_mode mode, std::string route) {
    queue::customer c;
    c.id = id;
    c.name = "c" + std::to_string(id);
    c.domains = {c.name + ".test"};
    c.mode = mode;
    c.route = std::move(route);
    c.link_users = {{c.name + "-dsl", queue::link_kind::dsl, ""}};
    customers_.upsert(c);
    customers_.add_queued_bytes(id, 100);
  }

  void make_scheduler(std::vector<std::chrono::seconds> retry = {1s}) {
    scheduler::settings s;
    s.retry_schedule = std::move(retry);
    s.max_runs = 4;
    s.sweep_interval = 3600s;
    sched_ = std::make_unique<scheduler>(
        io_, customers_, router_, s,
        [this](std::int64_t id, route r, flush_progress&, run_control&) -> asio::awaitable<run_outcome> {
          ++runs_[id];
          routes_.push_back(r.describe());
          ++concurrent_;
          max_concurrent_ = std::max(max_concurrent_, concurrent_);
          asio::steady_timer t(io_, run_time_);
          co_await t.async_wait(asio::use_awaitable);
          --concurrent_;
          run_outcome out;
          if (held_elsewhere_runs_ > 0) {
            --held_elsewhere_runs_;
            out.held_elsewhere = true;
            out.holder = "node-b";
            out.retry_after = 500ms;
            out.error = "held by node node-b";
            co_return out;
          }
          out.left_mail = leave_mail_;
          if (leave_mail_) out.error = "421 try later";
          co_return out;
        },
        nullptr);
  }

  // Runs the io_context for `d` (the scheduler ticks once a second).
  void run_for(std::chrono::milliseconds d) {
    io_.restart();
    io_.run_for(d);
  }

  asio::io_context io_;
  customer_directory customers_;
  router router_;
  std::unique_ptr<scheduler> sched_;
  std::map<std::int64_t, int> runs_;
  std::vector<std::string> routes_;
  int concurrent_ = 0;
  int max_concurrent_ = 0;
  bool leave_mail_ = false;
  int held_elsewhere_runs_ = 0;  // the first runs find the lease held by node-b
  std::chrono::milliseconds run_time_{50};
};

TEST_F(SchedulerTest, RelayMailGoesAtOnceHoldMailWaitsForATrigger) {
  add_customer(1, queue::delivery_mode::relay, "127.0.0.1:2526");
  add_customer(2, queue::delivery_mode::hold, "127.0.0.1:2527");
  make_scheduler();
  sched_->mail_queued(1);
  sched_->mail_queued(2);
  run_for(300ms);
  EXPECT_EQ(runs_[1], 1) << "relay customer: got " << runs_[1] << " runs, want 1";
  EXPECT_EQ(runs_[2], 0) << "hold customer ran without a trigger";
  EXPECT_EQ(sched_->request_flush(2, "operator"), flush_refusal::none);
  run_for(300ms);
  EXPECT_EQ(runs_[2], 1) << "hold customer after flush: got " << runs_[2] << " runs, want 1";
}

TEST_F(SchedulerTest, OdmrAndRoutelessCustomersAreRefusedAFlush) {
  add_customer(1, queue::delivery_mode::odmr, "127.0.0.1:2526");
  add_customer(2, queue::delivery_mode::hold, "");
  make_scheduler();
  EXPECT_EQ(sched_->request_flush(1, "operator"), flush_refusal::odmr_only);
  EXPECT_EQ(sched_->request_flush(2, "operator"), flush_refusal::no_route);
  EXPECT_EQ(sched_->request_flush(3, "operator"), flush_refusal::unknown_customer);
  run_for(200ms);
  EXPECT_TRUE(runs_.empty());
}

TEST_F(SchedulerTest, NeverTwoRunsForOneCustomer) {
  add_customer(1, queue::delivery_mode::relay, "127.0.0.1:2526");
  run_time_ = 400ms;
  make_scheduler();
  sched_->mail_queued(1);
  run_for(50ms);
  EXPECT_EQ(sched_->request_flush(1, "etrn"), flush_refusal::already_running);
  sched_->mail_queued(1);
  sched_->mail_queued(1);
  run_for(300ms);
  EXPECT_EQ(max_concurrent_, 1) << "got " << max_concurrent_ << " concurrent runs for one customer";
  run_for(1500ms);
  // The mail that came during the first run gets exactly one more run.
  EXPECT_EQ(runs_[1], 2) << "got " << runs_[1] << " runs, want 2";
}

TEST_F(SchedulerTest, BackoffAfterLeftMailAndRouteChangeResetsIt) {
  add_customer(1, queue::delivery_mode::relay, "127.0.0.1:2526");
  leave_mail_ = true;
  make_scheduler({3600s});
  sched_->mail_queued(1);
  run_for(300ms);
  EXPECT_EQ(runs_[1], 1);
  sched_->mail_queued(1);  // new mail waits with the rest during the backoff
  run_for(1200ms);
  EXPECT_EQ(runs_[1], 1) << "new mail broke the backoff";
  EXPECT_GT(sched_->next_attempt_in(1), 3000) << "next attempt in " << sched_->next_attempt_in(1) << "s";

  // The customer's line comes up: backoff reset, flush over the link at once.
  queue::link_record l;
  l.user = "c1-dsl";
  l.customer_id = 1;
  l.address = "127.0.0.5";
  router_.link_up(l);
  leave_mail_ = false;
  sched_->route_changed(1, "link up");
  run_for(300ms);
  EXPECT_EQ(runs_[1], 2) << "no run after link up";
  EXPECT_EQ(routes_.back(), "link c1-dsl 127.0.0.5:25");
}

// A run that finds the customer's delivery lease held by another node is no
// failure: no backoff step (the schedule's hour), no flush-done report; the
// customer is looked at again after the outcome's retry_after.
TEST_F(SchedulerTest, LeaseHeldElsewhereIsNoFailureAndIsTriedAgainSoon) {
  add_customer(1, queue::delivery_mode::relay, "127.0.0.1:2526");
  held_elsewhere_runs_ = 1;
  make_scheduler({3600s});
  int done = 0;
  sched_->on_done([&done](std::int64_t, const flush_progress&) { ++done; });
  sched_->start();  // the tick loop: queued mail goes at once, and retries
  run_for(300ms);
  EXPECT_EQ(runs_[1], 1);
  ASSERT_NE(sched_->progress(1), nullptr);
  EXPECT_EQ(sched_->progress(1)->error, "held by node node-b");
  EXPECT_LE(sched_->next_attempt_in(1), 1) << "got a backoff of " << sched_->next_attempt_in(1)
                                           << "s, want the lease's retry";
  EXPECT_EQ(done, 0) << "got a flush-done report for a run that did nothing";
  run_for(2000ms);
  EXPECT_EQ(runs_[1], 2) << "got " << runs_[1] << " runs, want 2 (tried again, then delivered)";
  EXPECT_EQ(done, 1);
}

TEST_F(SchedulerTest, HoldCustomerWithALinkUpDeliversNewMail) {
  add_customer(1, queue::delivery_mode::hold, "");
  make_scheduler();
  queue::link_record l;
  l.user = "c1-dsl";
  l.customer_id = 1;
  l.address = "127.0.0.5";
  router_.link_up(l);
  sched_->route_changed(1, "link up");
  run_for(300ms);
  EXPECT_EQ(runs_[1], 1) << "link up did not flush a hold customer";
  sched_->mail_queued(1);
  run_for(300ms);
  EXPECT_EQ(runs_[1], 2) << "new mail was not sent over the live link";
}

// Cluster: while another node holds the lease, new mail does not ask for
// it message by message; the holder hears why this node wanted it, and its
// release (lease_released) starts the waiting run at once.
TEST_F(SchedulerTest, WhileTheLeaseIsHeldElsewhereNewMailWaitsForItsRelease) {
  add_customer(1, queue::delivery_mode::relay, "127.0.0.1:2526");
  held_elsewhere_runs_ = 1;
  make_scheduler({3600s});
  std::vector<std::string> told;
  sched_->on_held_elsewhere([&told](std::int64_t, const std::string& trigger, bool forced,
                                    const std::string& holder) {
    told.push_back(holder + ":" + trigger + (forced ? ":forced" : ""));
  });
  sched_->mail_queued(1);
  run_for(200ms);
  ASSERT_EQ(runs_[1], 1);
  EXPECT_EQ(told, std::vector<std::string>{"node-b:new mail"});
  for (int i = 0; i < 5; ++i) sched_->mail_queued(1);
  run_for(100ms);
  EXPECT_EQ(runs_[1], 1) << "new mail asked for a lease another node holds";
  sched_->lease_released(1);
  run_for(200ms);
  EXPECT_EQ(runs_[1], 2) << "the release did not start the waiting run";
  sched_->lease_released(1);  // not waiting any more: nothing happens
  run_for(200ms);
  EXPECT_EQ(runs_[1], 2);
}

// Cluster: retry state left by other nodes is adopted when it is longer;
// a customer with no row any more was delivered elsewhere.
TEST_F(SchedulerTest, RetryStateOfOtherNodesIsAdoptedAndOwnChangesAreReported) {
  add_customer(1, queue::delivery_mode::relay, "127.0.0.1:2526");
  add_customer(2, queue::delivery_mode::relay, "127.0.0.1:2527");
  leave_mail_ = true;
  make_scheduler({3600s});
  std::vector<std::pair<std::int64_t, int>> reported;
  sched_->on_retry([&reported](std::int64_t id, int failures, std::chrono::system_clock::time_point) {
    reported.emplace_back(id, failures);
  });
  sched_->mail_queued(2);
  run_for(200ms);
  ASSERT_EQ(reported.size(), 1u) << "a run that left mail was not reported";
  EXPECT_EQ(reported[0], std::make_pair(std::int64_t{2}, 1));

  // Another node failed customer 1 three times; its next try is in an hour.
  const auto in_an_hour = std::chrono::duration_cast<std::chrono::milliseconds>(
                              (std::chrono::system_clock::now() + std::chrono::hours(1)).time_since_epoch())
                              .count();
  // Rows read before customer 2's own change here: they say nothing new of it.
  sched_->adopt_retries({{.customer_id = 1, .failures = 3, .next_try = in_an_hour, .node = "node-b"}}, 0);
  EXPECT_GT(sched_->next_attempt_in(2), 3000) << "an older snapshot wiped this node's own backoff";
  const auto since = sched_->retry_generation();
  sched_->adopt_retries({{.customer_id = 1, .failures = 3, .next_try = in_an_hour, .node = "node-b"},
                         {.customer_id = 2, .failures = 1, .next_try = in_an_hour, .node = "node-a"}},
                        since);
  EXPECT_GT(sched_->next_attempt_in(1), 3500) << "customer 1 was not given node-b's backoff";
  sched_->mail_queued(1);
  run_for(200ms);
  EXPECT_EQ(runs_[1], 0) << "customer 1 ran during the backoff another node set";

  // Customer 2's row is gone (delivered by another node): its backoff ends.
  sched_->adopt_retries({{.customer_id = 1, .failures = 3, .next_try = in_an_hour, .node = "node-b"}}, since);
  EXPECT_EQ(sched_->next_attempt_in(2), 0) << "customer 2 kept a backoff no node has any more";
}

}  // namespace
}  // namespace flushgate::gateway
