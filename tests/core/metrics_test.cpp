// metrics_test.cpp — tests core/metrics.cpp: counting and the text format.
#include "core/metrics.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace flushgate::core {
namespace {

TEST(Metrics, CountersRenderWithHelpTypeAndLabels) {
  metrics_registry r;
  r.counter_for("flushgate_smtp_refused_total", "Refused.", {{"reason", "relay_denied"}}).add(3);
  r.counter_for("flushgate_smtp_refused_total", "Refused.", {{"reason", "disk_full"}}).add();
  const std::string want =
      "# HELP flushgate_smtp_refused_total Refused.\n"
      "# TYPE flushgate_smtp_refused_total counter\n"
      "flushgate_smtp_refused_total{reason=\"disk_full\"} 1\n"
      "flushgate_smtp_refused_total{reason=\"relay_denied\"} 3\n";
  EXPECT_EQ(r.render(), want);
}

TEST(Metrics, SameLabelsGiveTheSameCounter) {
  metrics_registry r;
  auto& a = r.counter_for("x_total", "x", {{"k", "v"}});
  auto& b = r.counter_for("x_total", "x", {{"k", "v"}});
  EXPECT_EQ(&a, &b) << "got two counters for one label set, want one";
}

TEST(Metrics, LabelValuesAreEscaped) {
  EXPECT_EQ(render_sample("m", {{"customer", "a\"b\\c\nd"}}, 2), "m{customer=\"a\\\"b\\\\c\\nd\"} 2\n");
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  metrics_registry r;
  auto& h = r.histogram_for("flush_seconds", "Flushes.", {1, 10});
  h.observe(0.5);
  h.observe(5);
  h.observe(5);
  h.observe(100);
  const std::string want =
      "# HELP flush_seconds Flushes.\n"
      "# TYPE flush_seconds histogram\n"
      "flush_seconds_bucket{le=\"1\"} 1\n"
      "flush_seconds_bucket{le=\"10\"} 3\n"
      "flush_seconds_bucket{le=\"+Inf\"} 4\n"
      "flush_seconds_sum 110.5\n"
      "flush_seconds_count 4\n";
  EXPECT_EQ(r.render(), want);
}

TEST(Metrics, TwoTypesForOneNameIsABug) {
  metrics_registry r;
  r.counter_for("m", "m");
  EXPECT_THROW(r.histogram_for("m", "m", {1}), std::logic_error);
}

TEST(Metrics, CountingFromManyThreadsLosesNothing) {
  metrics_registry r;
  auto& c = r.counter_for("c_total", "c");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c] {
      for (int i = 0; i < 10000; ++i) c.add();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 40000u) << "got " << c.value() << ", want 40000";
}

TEST(Metrics, NodeLabelGoesOnEverySampleAndNoComment) {
  const std::string in =
      "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n"
      "b{customer=\"acme\"} 1\nc{} 2\nd_bucket{le=\"+Inf\"} 4\n";
  const std::string got = add_label_to_samples(in, "node", "gw-\"a\"");
  const std::string want =
      "# HELP a_total A.\n# TYPE a_total counter\na_total{node=\"gw-\\\"a\\\"\"} 3\n"
      "b{node=\"gw-\\\"a\\\"\",customer=\"acme\"} 1\nc{node=\"gw-\\\"a\\\"\"} 2\n"
      "d_bucket{node=\"gw-\\\"a\\\"\",le=\"+Inf\"} 4\n";
  EXPECT_EQ(got, want);
  EXPECT_EQ(add_label_to_samples("", "node", "x"), "");
  EXPECT_EQ(add_label_to_samples("m 1", "node", "x"), "m{node=\"x\"} 1") << "a last line without newline";
}

}  // namespace
}  // namespace flushgate::core
