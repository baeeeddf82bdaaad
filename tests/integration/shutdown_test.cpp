// shutdown_test.cpp — SIGTERM: a graceful, bounded stop.
//
// Covers RFC 5321 §3.8 (421 before closing at shutdown) and STYLE.md
// "Sessions": idle sessions get 421 4.3.2 at once; a transaction in DATA may
// finish within smtpd_shutdown_grace (its message gets 250, then 421); new
// connections during the grace get 421; past the grace every session is cut
// off; the daemon exits 0 within the grace plus a few seconds.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <signal.h>

#include <optional>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

class Shutdown : public ::testing::Test {
 protected:
  void start(std::chrono::seconds grace) {
    grace_ = grace;
    daemon_.emplace(daemon_fixture::settings{
        {"smtpd_shutdown_grace", std::to_string(grace.count()) + "s"}});
    daemon_->start();
    auto added = daemon_->add_customer("demo", "demo.test", {"--mode", "hold"});
    ASSERT_EQ(added.exit_code, 0) << added.err;
  }

  // Waits for the daemon to exit within the grace plus 5 s; checks status 0.
  void expect_clean_exit(steady::time_point signalled) {
    auto status = daemon_->wait_for_exit(std::chrono::duration_cast<std::chrono::milliseconds>(
        grace_ + 5s - (steady::now() - signalled)));
    ASSERT_TRUE(status.has_value()) << "got the daemon still running "
                                    << std::chrono::duration<double>(steady::now() - signalled).count()
                                    << " s after SIGTERM, want it gone within the grace + 5 s";
    EXPECT_EQ(*status, 0) << "exit status after SIGTERM; log:\n" << daemon_->log_text();
  }

  // Opens a session and starts DATA: MAIL, RCPT, DATA, part of the content.
  ::testing::AssertionResult begin_data(smtp_probe& probe) {
    if (auto ok = open_session(probe, daemon_->port()); !ok) return ok;
    if (auto ok = reply_is(probe.command("MAIL FROM:<a@sender.test>"), 250); !ok) return ok;
    if (auto ok = reply_is(probe.command("RCPT TO:<u@demo.test>"), 250); !ok) return ok;
    if (auto ok = reply_is(probe.command("DATA"), 354); !ok) return ok;
    if (probe.send_raw("Subject: shutdown\r\n\r\nfirst half\r\n")) {
      return ::testing::AssertionFailure() << "sending the first half failed";
    }
    return ::testing::AssertionSuccess();
  }

  std::chrono::seconds grace_{5};
  std::optional<daemon_fixture> daemon_;
};

TEST_F(Shutdown, IdleSessionGets421AtOnce) {
  start(10s);
  smtp_probe probe(8s);
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  ASSERT_TRUE(daemon_->signal(SIGTERM));
  const auto signalled = steady::now();
  EXPECT_TRUE(reply_is(probe.read_reply(), 421, "4.3.2")) << "an idle session at SIGTERM";
  EXPECT_LT(steady::now() - signalled, 5s) << "an idle session is not waited for";
  auto after = probe.read_reply();
  EXPECT_FALSE(after) << "got " << describe(after) << " after 421, want the connection closed";
  expect_clean_exit(signalled);
}

TEST_F(Shutdown, TransactionInDataMayFinishAndNewClientsGet421) {
  start(10s);
  smtp_probe in_data(15s);
  ASSERT_TRUE(begin_data(in_data));
  ASSERT_TRUE(daemon_->signal(SIGTERM));
  const auto signalled = steady::now();

  // A new connection during the grace gets 421 (until the daemon has seen
  // the signal it may still get 220: retry).
  std::string refusal;
  const bool refused = wait_until(
      [&] {
        smtp_probe newcomer(3s);
        if (newcomer.connect("127.0.0.1", daemon_->port())) return false;
        auto first = newcomer.read_reply();
        refusal = describe(first);
        return first && first->code == 421;
      },
      5s, 50ms);
  EXPECT_TRUE(refused) << "a new connection during the grace: got " << refusal << ", want 421";
  EXPECT_TRUE(refusal.starts_with("421 4.3.2")) << "got " << refusal << ", want 421 4.3.2";

  // The transaction in DATA finishes: 250, then 421.
  ASSERT_FALSE(in_data.send_raw("second half\r\n.\r\n"));
  EXPECT_TRUE(reply_is(in_data.read_reply(), 250, "2.0.0")) << "the end of data during the grace";
  EXPECT_TRUE(reply_is(in_data.read_reply(), 421, "4.3.2")) << "after the transaction";
  expect_clean_exit(signalled);

  auto stored = daemon_fixture::read_store(daemon_->data_dir());
  ASSERT_TRUE(stored) << stored.error().message();
  ASSERT_EQ(stored->size(), 1u) << "the message finished during the grace";
  auto [received, rest] = split_received(stored->front().content);
  EXPECT_EQ(rest, "Subject: shutdown\r\n\r\nfirst half\r\nsecond half\r\n");
}

TEST_F(Shutdown, TransactionPastTheGraceIsCutOff) {
  start(2s);
  smtp_probe in_data(15s);
  ASSERT_TRUE(begin_data(in_data));
  ASSERT_TRUE(daemon_->signal(SIGTERM));
  const auto signalled = steady::now();
  EXPECT_TRUE(reply_is(in_data.read_reply(), 421, "4.3.2")) << "DATA still open when the grace ends";
  EXPECT_GE(steady::now() - signalled, 1500ms) << "the session should have had its grace";
  expect_clean_exit(signalled);
  auto stored = daemon_fixture::read_store(daemon_->data_dir());
  ASSERT_TRUE(stored) << stored.error().message();
  EXPECT_EQ(stored->size(), 0u) << "an unfinished message is never stored";
}

}  // namespace

// Not a shutdown: SIGHUP asks the daemon to reopen its log file (logrotate
// moves the file away first), and it keeps running.
TEST(LogRotation, SighupReopensTheLogFile) {
  daemon_fixture daemon;
  daemon.start();
  const auto rotated = daemon.log_path().string() + ".1";
  std::filesystem::rename(daemon.log_path(), rotated);
  ASSERT_TRUE(daemon.signal(SIGHUP));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(daemon.log_path()); }, std::chrono::seconds(10)))
      << "got no new log file 10 s after SIGHUP, want one";
  ASSERT_EQ(daemon.add_customer("acme", "acme.test").exit_code, 0);
  EXPECT_TRUE(daemon.running()) << "the daemon died of SIGHUP";
  EXPECT_NE(daemon.log_text().find("customer acme added"), std::string::npos)
      << "got a new log without the next event:\n" << daemon.log_text();
}
