// monitoring_test.cpp — what the shipped alert rules read from /metrics
// (scripts/examples/monitoring/flushgate.rules.yml): each customer's oldest
// mail next to its own delay-warning time, from a real daemon.
#include "tests/integration/admin_api.hpp"
#include "tests/integration/daemon_fixture.hpp"
#include "tests/support/ports.hpp"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

using namespace flushgate::test;
using namespace std::chrono_literals;

namespace {

// Starts a daemon with `delay_warning_time`, adds hold-mode customers NAME
// (domain NAME.test) with their extra options, and returns its /metrics text.
std::string metrics_with(const std::string& delay_warning_time,
                         const std::vector<std::pair<std::string, std::vector<std::string>>>& customers) {
  const std::uint16_t port = free_port();
  daemon_fixture daemon({{"admin_listen", "127.0.0.1:" + std::to_string(port)},
                         {"delay_warning_time", delay_warning_time}});
  daemon.start();
  for (const auto& [name, extra] : customers) {
    std::vector<std::string> args{"--mode", "hold"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto added = daemon.add_customer(name, name + ".test", args);
    EXPECT_EQ(added.exit_code, 0) << "customer add " << name << ": " << added.err;
  }
  const auto m = http_call(port, "GET", "/metrics", "", "Bearer " + admin_token(daemon), 10s);
  EXPECT_EQ(m.status, 200) << m.body;
  return m.body;
}

void expect_lines(const std::string& body, const std::vector<std::string>& lines) {
  for (const auto& want : lines) {
    EXPECT_NE(body.find(want), std::string::npos) << "got\n" << body << "want a line " << want;
  }
}

}  // namespace

TEST(MonitoringMetrics, ExportEachCustomersDelayWarning) {
  // acme: the global delay_warning_time; bravo and charlie: their own,
  // shorter and longer than it.
  const std::string body = metrics_with(
      "3h", {{"acme", {}}, {"bravo", {"--delay-warning", "30m"}}, {"charlie", {"--delay-warning", "1w"}}});
  expect_lines(body, {"# TYPE flushgate_queue_delay_warning_seconds gauge\n",
                      "flushgate_queue_delay_warning_seconds{customer=\"acme\"} 10800\n",
                      "flushgate_queue_delay_warning_seconds{customer=\"bravo\"} 1800\n",
                      "flushgate_queue_delay_warning_seconds{customer=\"charlie\"} 604800\n",
                      "flushgate_queue_oldest_age_seconds{customer=\"acme\"} 0\n"});
}

TEST(MonitoringMetrics, ExportZeroWhenNoDelayNoticeIsSent) {
  expect_lines(metrics_with("0", {{"acme", {}}}),
               {"flushgate_queue_delay_warning_seconds{customer=\"acme\"} 0\n"});
}
