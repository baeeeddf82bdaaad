// cluster_bus_test — signals between nodes over a private PostgreSQL's
// LISTEN/NOTIFY: the wire format, delivery to the other nodes only, and
// recovery after the server died (the owner is told to reconcile).
#include "queue/cluster_bus.hpp"

#include "tests/support/postgres_instance.hpp"

#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace flushgate::queue {
namespace {

using namespace std::chrono_literals;
using kind = cluster_signal::kind;

TEST(ClusterSignal, RoundTripsEveryKind) {
  for (auto k : {kind::mail, kind::link, kind::customer, kind::flush, kind::lease_free}) {
    cluster_signal s{.what = k, .customer_id = 42, .text = "link up\tby radius", .node = "gw-a", .to = "gw-c"};
    auto back = decode_signal(encode_signal(s));
    ASSERT_TRUE(back) << "kind " << to_string(k) << " did not come back";
    EXPECT_EQ(back->what, k);
    EXPECT_EQ(back->customer_id, 42);
    EXPECT_EQ(back->node, "gw-a");
    EXPECT_EQ(back->to, "gw-c");
    EXPECT_EQ(back->text, "link up by radius") << "a tab in the text must not split a field";
  }
}

TEST(ClusterSignal, RefusesMalformedPayloads) {
  for (const char* bad : {"", "gw-a", "gw-a\t\tmail", "gw-a\t\tmail\t7", "\t\tmail\t7\t",
                          "gw-a\t\tmeteor\t7\t", "gw-a\t\tmail\t-1\t", "gw-a\t\tmail\t7x\t",
                          "gw-a\t\tmail\t\t", "gw-a\tmail\t7\t"}) {
    EXPECT_FALSE(decode_signal(bad)) << "accepted \"" << bad << "\"";
  }
  EXPECT_FALSE(decode_signal("gw-a\t\tmail\t7\t" + std::string(2000, 'x'))) << "accepted an oversized payload";
  const std::string long_text(5000, 'y');
  const auto encoded = encode_signal({.what = kind::flush, .customer_id = 7, .text = long_text, .node = "gw-a"});
  EXPECT_LE(encoded.size(), 1000u);
  EXPECT_TRUE(decode_signal(encoded)) << "a long text must be cut, not make the payload unreadable";
}

// Two buses ("nodes") on one database; the test's io_context is the owner's.
class ClusterBus : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::postgres_instance::available()) GTEST_SKIP() << test::postgres_instance::unavailable_reason();
    pg_ = std::make_unique<test::postgres_instance>();
    pg_->start();
    auto db = pg_->create_database();
    ASSERT_TRUE(db) << pg_->log_text();
    db_ = *db;
  }

  std::unique_ptr<cluster_bus> make_bus(const std::string& node, std::vector<cluster_signal>& got,
                                        int& listening) {
    cluster_bus_options o{.conninfo = pg_->conninfo(db_), .node_name = node,
                          .min_retry = 50ms, .max_retry = 200ms};
    return std::make_unique<cluster_bus>(
        io_.get_executor(), o, [&got](const cluster_signal& s) { got.push_back(s); },
        [&listening] { ++listening; });
  }

  // Runs the io_context until pred() or the deadline.
  template <typename Pred>
  bool run_until(Pred pred, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred() && std::chrono::steady_clock::now() < deadline) {
      io_.restart();
      io_.run_for(10ms);
    }
    return pred();
  }

  boost::asio::io_context io_;
  std::unique_ptr<test::postgres_instance> pg_;
  std::string db_;
};

TEST_F(ClusterBus, OtherNodesHearASignalAndTheSenderDoesNot) {
  std::vector<cluster_signal> got_a, got_b, got_c;
  int listening_a = 0, listening_b = 0, listening_c = 0;
  auto a = make_bus("gw-a", got_a, listening_a);
  auto b = make_bus("gw-b", got_b, listening_b);
  auto c = make_bus("gw-c", got_c, listening_c);
  a->start();
  b->start();
  c->start();
  ASSERT_TRUE(run_until([&] { return listening_a == 1 && listening_b == 1 && listening_c == 1; }))
      << "listening: a " << listening_a << ", b " << listening_b << ", c " << listening_c;

  a->publish({.what = kind::link, .customer_id = 5, .text = "link up"});
  ASSERT_TRUE(run_until([&] { return got_b.size() == 1 && got_c.size() == 1; }))
      << "got b " << got_b.size() << ", c " << got_c.size() << ", want 1 each";
  EXPECT_EQ(got_b[0].what, kind::link);
  EXPECT_EQ(got_b[0].customer_id, 5);
  EXPECT_EQ(got_b[0].node, "gw-a");
  EXPECT_EQ(got_c[0].text, "link up");
  // Give a's own copy (PostgreSQL sends it to every listener) time to arrive.
  b->publish({.what = kind::lease_free, .customer_id = 5});
  ASSERT_TRUE(run_until([&] { return got_a.size() == 1 && got_c.size() == 2; }));
  EXPECT_EQ(got_a[0].node, "gw-b") << "a heard its own signal";
  EXPECT_EQ(got_b.size(), 1u) << "b heard its own signal";
  EXPECT_EQ(a->stats().sent, 1u);
  EXPECT_EQ(a->stats().received, 1u);

  // A signal for one node (the lease holder) reaches that node alone.
  c->publish({.what = kind::flush, .customer_id = 5, .text = "etrn", .to = "gw-a"});
  c->publish({.what = kind::mail, .customer_id = 6});  // to all: marks when c's signals have passed
  ASSERT_TRUE(run_until([&] { return got_a.size() == 3 && got_b.size() == 2; }))
      << "got a " << got_a.size() << ", b " << got_b.size();
  EXPECT_EQ(got_a[1].what, kind::flush);
  EXPECT_EQ(got_a[1].to, "gw-a");
  EXPECT_EQ(got_b[1].what, kind::mail) << "b heard a signal meant for a";
}

TEST_F(ClusterBus, AfterTheServerDiesTheBusListensAgainAndAsksForAReconcile) {
  std::vector<cluster_signal> got_a, got_b;
  int listening_a = 0, listening_b = 0;
  auto a = make_bus("gw-a", got_a, listening_a);
  auto b = make_bus("gw-b", got_b, listening_b);
  a->start();
  b->start();
  ASSERT_TRUE(run_until([&] { return listening_a == 1 && listening_b == 1; }));

  ASSERT_TRUE(pg_->stop_immediate());
  // Said while nobody can hear it: dropped and counted, never blocking.
  ASSERT_TRUE(run_until([&] { return !a->stats().listening; }, 15s))
      << "a did not notice the server's death";
  a->publish({.what = kind::mail, .customer_id = 9});
  EXPECT_GE(a->stats().dropped, 1u);
  pg_->start();
  ASSERT_TRUE(run_until([&] { return listening_a == 2 && listening_b == 2; }, 20s))
      << "listening: a " << listening_a << ", b " << listening_b << ", want 2 each (a reconcile after the gap)";
  EXPECT_GE(a->stats().reconnects, 1u);
  a->publish({.what = kind::mail, .customer_id = 9});
  ASSERT_TRUE(run_until([&] { return got_b.size() == 1; }));
  EXPECT_EQ(got_b[0].what, kind::mail);
  EXPECT_EQ(got_b[0].customer_id, 9);
}

}  // namespace
}  // namespace flushgate::queue
