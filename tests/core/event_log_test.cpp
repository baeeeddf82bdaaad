// event_log_test.cpp — tests core/event_log.cpp.
#include "core/event_log.hpp"

#include <gtest/gtest.h>

namespace flushgate::core {
namespace {

TEST(EventLog, LatestIsNewestFirstAndLimited) {
  event_log log(10);
  for (int i = 0; i < 5; ++i) log.record({i, "link_up", "c" + std::to_string(i), "up"});
  auto got = log.latest(3);
  ASSERT_EQ(got.size(), 3u) << "got " << got.size() << " events, want 3";
  EXPECT_EQ(got[0].customer, "c4");
  EXPECT_EQ(got[2].customer, "c2");
}

TEST(EventLog, DropsTheOldestWhenFull) {
  event_log log(3);
  for (int i = 0; i < 7; ++i) log.record({i, "flush_done", "c" + std::to_string(i), ""});
  auto got = log.latest(100);
  ASSERT_EQ(got.size(), 3u) << "got " << got.size() << " events, want the capacity 3";
  EXPECT_EQ(got.back().customer, "c4") << "got oldest kept " << got.back().customer << ", want c4";
}

TEST(EventLog, RecordStampsTheTime) {
  event_log log;
  log.record("customer_changed", "acme", "enabled");
  auto got = log.latest(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_GT(got[0].time, 1600000000) << "got time " << got[0].time << ", want now";
}

}  // namespace
}  // namespace flushgate::core
