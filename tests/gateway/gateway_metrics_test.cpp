// gateway_metrics_test.cpp — tests gateway/gateway_metrics.cpp.
#include "gateway/gateway_metrics.hpp"

#include "core/metrics.hpp"

#include <gtest/gtest.h>

namespace flushgate::gateway {
namespace {

TEST(GatewayMetrics, RefusalReasonsFollowTheEnhancedCodes) {
  struct row {
    int code;
    const char* enhanced;
    const char* want;
  };
  const row rows[] = {
      {550, "5.7.1", "relay_denied"},  {550, "5.1.1", "unknown_recipient"},
      {450, "4.7.1", "suspended"},     {452, "4.3.1", "disk_full"},
      {552, "5.2.2", "over_quota"},    {552, "5.3.4", "too_large"},
      {452, "4.5.3", "too_many_recipients"}, {554, "5.4.6", "mail_loop"},
      {554, "5.6.0", "bare_cr_lf"},    {421, "4.4.2", "timeout"},
      {421, "4.3.2", "unavailable"},   {421, "4.7.0", "policy"},
      {451, "4.3.0", "local_error"},   {501, "5.5.4", "syntax"},
      {500, "", "syntax"},             {454, "4.9.9", "other"},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(smtp_refusal_reason(r.code, r.enhanced), r.want)
        << "code " << r.code << " " << r.enhanced;
  }
}

TEST(GatewayMetrics, CountsLandInTheProcessRegistry) {
  count_smtp_refusal(550, "5.7.1");
  count_message_accepted(1234);
  observe_flush("complete", 0.2);
  const std::string text = core::metrics().render();
  for (const char* want : {"flushgate_smtp_refusals_total{reason=\"relay_denied\"} 1",
                           "flushgate_message_bytes_accepted_total 1234",
                           "flushgate_flush_duration_seconds_bucket{le=\"0.5\"} 1",
                           "flushgate_flushes_total{result=\"complete\"} 1"}) {
    EXPECT_NE(text.find(want), std::string::npos) << "got\n" << text << "want a line " << want;
  }
}

}  // namespace
}  // namespace flushgate::gateway
