// dsn_delivery_test.cpp — what the gateway tells senders: the real
// flushgated against smtp-sink fault injection (-r/-f soft and hard RCPT
// rejects, -8 no 8BITMIME) and a Postfix that refuses one recipient; every
// notice goes through bounce_relay to a second smtp-sink whose dumps show the
// DSN's envelope and content.
//
// Covers RFC 5321 §4.5.4/§6.1 (4xx: keep and retry; 5xx: the recipient
// leaves with a failure DSN from the null sender; never a DSN about a DSN),
// RFC 3461 §5.2 (NOTIFY=NEVER), RFC 3464 (multipart/report, Action, Status,
// Diagnostic-Code, Final-Recipient, Will-Retry-Until only when delayed),
// delay_warning_time and queue_lifetime (4.x.x delayed once, then 5.4.7),
// RFC 6152 §3 (8-bit content to a peer without 8BITMIME bounces 5.6.3) and
// ARCHITECTURE.md invariant 2 (a recipient leaves only with a 2xx or a DSN).
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

class DsnDelivery : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
    bounces_ = std::make_unique<smtp_sink>("127.0.0.10", free_port_on("127.0.0.10"));
    bounces_->start();
  }

  void start_daemon(daemon_fixture::settings extra = {}) {
    daemon_.emplace(quick_retry_settings(*bounces_, std::move(extra)));
    daemon_->start();
  }

  void add_acme(const std::vector<std::string>& options) {
    auto added = daemon_->add_customer("acme", "acme.test", options);
    ASSERT_EQ(added.exit_code, 0) << "customer add acme: got exit " << added.exit_code << " ("
                                  << added.err << "), want 0";
  }

  // A customer sink on a free port of `host` with fault flags, started.
  static std::unique_ptr<smtp_sink> customer_sink(const std::string& host,
                                                  std::vector<std::string> flags) {
    auto sink = std::make_unique<smtp_sink>(host, free_port_on(host), std::move(flags));
    sink->start();
    return sink;
  }

  // Waits until the customer's queue and the notices queue are empty and
  // at least `at_least` notices reached the bounce relay. Once both queues
  // are empty every DSN there will ever be has been answered 250 there: a
  // recipient leaves the queue in the same transaction that queues its DSN.
  ::testing::AssertionResult wait_settled(std::size_t at_least,
                                          std::chrono::milliseconds timeout = 20s) {
    const bool ok = wait_until(
        [&] {
          return bounces_->dumps().size() >= at_least && queued_for(*daemon_, "acme") == 0u &&
                 queued_for(*daemon_, "mailer-daemon") == 0u;
        },
        timeout, 100ms);
    if (ok) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "got " << bounces_->dumps().size() << " notices at the bounce relay, "
           << queued_for(*daemon_, "acme").value_or(99) << " messages queued for acme and "
           << queued_for(*daemon_, "mailer-daemon").value_or(99)
           << " notices queued, want >= " << at_least << ", 0 and 0; log:\n"
           << daemon_->log_text();
  }

  // Checks the envelope and the report of a failure DSN about one recipient.
  static void expect_failure_dsn(const std::string& dsn, const std::string& sender,
                                 const std::string& rcpt, const std::string& status) {
    const auto mail_args = field_values(dsn, "X-Mail-Args");
    ASSERT_EQ(mail_args.size(), 1u) << dsn;
    EXPECT_EQ(mail_args[0], "<>") << "got MAIL FROM " << mail_args[0]
                                  << " for a DSN, want the null sender";
    const auto rcpt_args = field_values(dsn, "X-Rcpt-Args");
    ASSERT_EQ(rcpt_args.size(), 1u) << dsn;
    EXPECT_TRUE(rcpt_args[0].starts_with("<" + sender + ">"))
        << "got RCPT " << rcpt_args[0] << ", want the original sender <" << sender << ">";
    const auto type = field_values(dsn, "Content-Type");
    ASSERT_FALSE(type.empty()) << dsn;
    EXPECT_TRUE(type[0].starts_with("multipart/report;") &&
                type[0].find("report-type=delivery-status") != std::string::npos)
        << "got Content-Type " << type[0] << ", want multipart/report; report-type=delivery-status";
    EXPECT_EQ(field_values(dsn, "Final-Recipient"),
              std::vector<std::string>{"rfc822; " + rcpt});
    EXPECT_EQ(field_values(dsn, "Action"), std::vector<std::string>{"failed"});
    EXPECT_EQ(field_values(dsn, "Status"), std::vector<std::string>{status});
    EXPECT_TRUE(field_values(dsn, "Will-Retry-Until").empty())
        << "got Will-Retry-Until in a failure DSN, want it only in delayed ones (RFC 3464 §2.3.9)";
  }

  std::unique_ptr<smtp_sink> bounces_;
  std::optional<daemon_fixture> daemon_;
};

TEST_F(DsnDelivery, SoftRejectedRecipientStaysQueuedAndAttemptsGrow) {
  auto sink = customer_sink("127.0.0.11", {"-r", "RCPT", "-b", "451 4.2.0 flushgate-test: busy"});
  start_daemon();
  add_acme({"--route", sink->address()});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                     test_message("soft", "bob@acme.test", "try again\r\n"));
  ASSERT_TRUE(sent.error.empty()) << sent.error;

  std::vector<queued_recipient> r;
  EXPECT_TRUE(wait_until(
      [&] {
        r = recipients_of(*daemon_, sent.qid);
        return r.size() == 1 && r[0].attempts >= 2;
      },
      20s, 200ms))
      << "got " << (r.empty() ? 0 : r[0].attempts) << " attempts, want >= 2 (retry_schedule 1s)";
  ASSERT_EQ(r.size(), 1u) << sent.qid << ": got the recipient gone, want it queued";
  EXPECT_EQ(r[0].address, "bob@acme.test");
  EXPECT_EQ(r[0].last_reply, "451 4.2.0 flushgate-test: busy");
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);
  EXPECT_EQ(queued_for(*daemon_, "mailer-daemon"), 0u);
  EXPECT_TRUE(bounces_->dumps().empty()) << "got a notice for a 4xx, want none";
  EXPECT_TRUE(log_lines(*daemon_, {"status=bounced"}).empty()) << daemon_->log_text();
}

TEST_F(DsnDelivery, HardRejectedRecipientBouncesWithOneFailureDsn) {
  auto sink = customer_sink("127.0.0.12",
                            {"-f", "RCPT", "-B", "550 5.1.1 flushgate-test: no such user"});
  start_daemon();
  add_acme({"--route", sink->address()});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                     test_message("hard", "bob@acme.test", "no such user\r\n"),
                     "ENVID=hard+2Denv RET=HDRS");
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_settled(1));

  const auto dumps = bounces_->dumps();
  ASSERT_EQ(dumps.size(), 1u) << "got " << dumps.size() << " notices, want exactly 1";
  const std::string& dsn = dumps[0];
  expect_failure_dsn(dsn, "alice@sender.test", "bob@acme.test", "5.1.1");
  EXPECT_EQ(field_values(dsn, "Diagnostic-Code"),
            std::vector<std::string>{"smtp; 550 5.1.1 flushgate-test: no such user"});
  EXPECT_EQ(field_values(dsn, "Original-Envelope-ID"), std::vector<std::string>{"hard-env"})
      << "ENVID hard+2Denv decodes to hard-env (RFC 3461 §6.3a)";
  EXPECT_NE(dsn.find("Subject: hard\n"), std::string::npos)
      << "got no returned headers of the original in the DSN, want them (RET=HDRS)";
  EXPECT_NE(dsn.find("\nMessage-ID: <hard@sender.test>\n"), std::string::npos) << dsn;
}

TEST_F(DsnDelivery, MixedRecipientsGetOneDsnForTheRejectedOnly) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  auto postfix = postfix_instance::final_destination(
      {"acme.test"}, "127.0.0.13:" + std::to_string(free_port_on("127.0.0.13")));
  postfix.add_main_cf("smtpd_recipient_restrictions",
                      "check_recipient_access inline:{ { nobody@acme.test = 550 5.1.1 nobody "
                      "here } }");
  postfix.start();
  start_daemon();
  add_acme({"--route", postfix.host() + ":" + std::to_string(postfix.port())});
  auto sent = submit(daemon_->port(), "alice@sender.test",
                     {{"bob@acme.test", ""}, {"nobody@acme.test", ""}},
                     test_message("mixed", "bob@acme.test", "one of two\r\n"));
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_settled(1));

  ASSERT_TRUE(wait_until([&] { return !postfix.message_files().empty(); }, 20s))
      << "got no delivery to bob, want one; log:\n" << daemon_->log_text();
  const auto files = postfix.message_files();
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(field_values(read_file(files[0]), "Delivered-To"),
            std::vector<std::string>{"bob@acme.test"});

  const auto dumps = bounces_->dumps();
  ASSERT_EQ(dumps.size(), 1u) << "got " << dumps.size() << " notices, want exactly 1";
  expect_failure_dsn(dumps[0], "alice@sender.test", "nobody@acme.test", "5.1.1");
  const auto diagnostic = field_values(dumps[0], "Diagnostic-Code");
  ASSERT_EQ(diagnostic.size(), 1u);
  EXPECT_EQ(diagnostic[0],
            "smtp; 550 5.1.1 <nobody@acme.test>: Recipient address rejected: nobody here");
}

TEST_F(DsnDelivery, NoDsnForNotifyNeverOrNullSender) {
  auto sink = customer_sink("127.0.0.14",
                            {"-f", "RCPT", "-B", "550 5.1.1 flushgate-test: no such user"});
  start_daemon();
  add_acme({"--route", sink->address()});
  auto never = submit(daemon_->port(), "carol@sender.test", {{"bob@acme.test", "NOTIFY=NEVER"}},
                      test_message("never", "bob@acme.test", "quiet\r\n"));
  ASSERT_TRUE(never.error.empty()) << never.error;
  auto null_sender = submit(daemon_->port(), "", {{"bob@acme.test", ""}},
                            test_message("null-sender", "bob@acme.test", "a notice\r\n"));
  ASSERT_TRUE(null_sender.error.empty()) << null_sender.error;
  // The control: the same rejection with NOTIFY=FAILURE gives a DSN.
  auto control = submit(daemon_->port(), "dave@sender.test", {{"bob@acme.test", "NOTIFY=FAILURE"}},
                        test_message("control", "bob@acme.test", "tell me\r\n"));
  ASSERT_TRUE(control.error.empty()) << control.error;
  ASSERT_TRUE(wait_settled(1));

  const auto dumps = bounces_->dumps();
  ASSERT_EQ(dumps.size(), 1u) << "got " << dumps.size() << " notices, want only the control's";
  expect_failure_dsn(dumps[0], "dave@sender.test", "bob@acme.test", "5.1.1");
  for (const auto* qid : {&never.qid, &null_sender.qid}) {
    EXPECT_FALSE(log_lines(*daemon_, {*qid + ": to=<bob@acme.test>", "status=bounced"}).empty())
        << *qid << ": got no bounce logged, want the recipient to leave the queue";
    EXPECT_TRUE(log_lines(*daemon_, {*qid + ": sender non-delivery notification"}).empty())
        << *qid << ": got a DSN queued, want none; log:\n" << daemon_->log_text();
  }
}

TEST_F(DsnDelivery, DelayNoticeOnceThenExpiryBounce) {
  start_daemon({{"delay_warning_time", "2s"}});
  // Nothing listens on the route: every attempt is refused.
  const std::string down = "127.0.0.15:" + std::to_string(free_port_on("127.0.0.15"));
  add_acme({"--route", down, "--queue-lifetime", "5s"});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                     test_message("slow", "bob@acme.test", "late\r\n"));
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_settled(2, 30s));

  const auto dumps = bounces_->dumps();
  ASSERT_EQ(dumps.size(), 2u) << "got " << dumps.size()
                              << " notices, want one delay notice and one failure";
  const std::string* delayed = nullptr;
  const std::string* failed = nullptr;
  for (const auto& d : dumps) {
    const auto action = field_values(d, "Action");
    if (action == std::vector<std::string>{"delayed"}) delayed = &d;
    if (action == std::vector<std::string>{"failed"}) failed = &d;
  }
  ASSERT_NE(delayed, nullptr) << "got no DSN with Action: delayed, want exactly one";
  ASSERT_NE(failed, nullptr) << "got no DSN with Action: failed, want exactly one";

  EXPECT_EQ(field_values(*delayed, "X-Mail-Args"), std::vector<std::string>{"<>"});
  EXPECT_EQ(field_values(*delayed, "Final-Recipient"),
            std::vector<std::string>{"rfc822; bob@acme.test"});
  const auto delay_status = field_values(*delayed, "Status");
  ASSERT_EQ(delay_status.size(), 1u);
  EXPECT_TRUE(delay_status[0].starts_with("4.")) << "got Status " << delay_status[0]
                                                 << " in a delay notice, want 4.x.x";
  EXPECT_EQ(field_values(*delayed, "Will-Retry-Until").size(), 1u)
      << "got no Will-Retry-Until in the delay notice, want one";

  expect_failure_dsn(*failed, "alice@sender.test", "bob@acme.test", "5.4.7");
  EXPECT_FALSE(log_lines(*daemon_, {sent.qid, "status=expired"}).empty()) << daemon_->log_text();
}

TEST_F(DsnDelivery, EightBitToPeerWithout8BitMimeBounces563) {
  auto sink = customer_sink("127.0.0.16", {"-8"});
  start_daemon();
  add_acme({"--route", sink->address()});
  const std::string eight = test_message("eight-bit-sink", "bob@acme.test", "caf\xC3\xA9\r\n",
                                         {"MIME-Version: 1.0",
                                          "Content-Type: text/plain; charset=utf-8",
                                          "Content-Transfer-Encoding: 8bit"});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}}, eight,
                     "BODY=8BITMIME");
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  // A 7-bit message to the same peer goes through (the sink itself works).
  auto plain = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                      test_message("seven-bit-sink", "bob@acme.test", "cafe\r\n"));
  ASSERT_TRUE(plain.error.empty()) << plain.error;
  ASSERT_TRUE(wait_settled(1));

  const auto dumps = bounces_->dumps();
  ASSERT_EQ(dumps.size(), 1u) << "got " << dumps.size() << " notices, want 1";
  expect_failure_dsn(dumps[0], "alice@sender.test", "bob@acme.test", "5.6.3");
  bool seven_arrived = false;
  for (const auto& d : sink->dumps()) {
    EXPECT_EQ(d.find("Subject: eight-bit-sink\n"), std::string::npos)
        << "got the 8-bit message at a peer without 8BITMIME, want it never sent:\n" << d;
    if (d.find("Subject: seven-bit-sink\n") != std::string::npos) seven_arrived = true;
  }
  EXPECT_TRUE(seven_arrived) << "got no 7-bit message at the sink, want it delivered";
}

}  // namespace
