// delivery_test.cpp — the gateway delivers: the real flushgated and CLI, a
// private Postfix as the customer's mail server on 127.0.0.x.
//
// Covers the MF role of ARCHITECTURE.md: relay mode holds while the
// customer's server does not answer and delivers on its own (retry_schedule)
// once it does (RFC 5321 §4.5.4.1); hold mode delivers only when asked
// (`flush NAME --wait`), and a flush to a dead server says why and loses
// nothing (invariant 2); what arrives is what was sent, byte for byte, with
// our Received: on top (RFC 5321 §4.4), over BDAT (Postfix offers CHUNKING)
// and over DATA with dot-stuffing (smtp-sink does not; RFC 5321 §4.5.2),
// 8-bit content included (RFC 6152).
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <optional>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

class Delivery : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_.emplace(daemon_fixture::settings{{"retry_schedule", "1s"}});
    daemon_->start();
  }

  // A customer Postfix for acme.test on a free port of `host` (not started).
  static postfix_instance customer_server(const std::string& host) {
    return postfix_instance::final_destination({"acme.test"},
                                               host + ":" + std::to_string(free_port_on(host)));
  }

  void add_acme(const std::vector<std::string>& options) {
    auto added = daemon_->add_customer("acme", "acme.test", options);
    ASSERT_EQ(added.exit_code, 0) << "customer add acme: got exit " << added.exit_code << " ("
                                  << added.err << "), want 0";
  }

  // Waits until the Maildir holds `count` messages; false at the deadline.
  static bool wait_files(const postfix_instance& postfix, std::size_t count,
                         std::chrono::milliseconds timeout = 20s) {
    return wait_until([&] { return postfix.message_files().size() >= count; }, timeout, 50ms) &&
           postfix.message_files().size() == count;
  }

  // Checks that a delivered file is `sent` with our Received: on top.
  static void expect_delivered_intact(const std::filesystem::path& file, const std::string& sent,
                                      const std::string& rcpt) {
    const auto m = split_maildir(read_file(file));
    EXPECT_EQ(m.return_path, "<alice@sender.test>")
        << "got Return-Path " << m.return_path << ", want the envelope sender kept";
    expect_intact(m.rest, sent, rcpt);
  }

  // Checks that `delivered` (LF) is our Received: followed by `sent` exactly.
  static void expect_intact(const std::string& delivered, const std::string& sent,
                            const std::string& rcpt) {
    auto [ours, original] = split_first_field(delivered);
    EXPECT_TRUE(ours.starts_with("Received: from client.test ([127.0.0.1])\n"))
        << "got first header \"" << ours << "\" at the far end, want our Received:";
    EXPECT_NE(ours.find("by gw.test (flushgate)"), std::string::npos) << ours;
    EXPECT_NE(ours.find("for <" + rcpt + ">"), std::string::npos) << ours;
    EXPECT_EQ(original, to_lf(sent))
        << "got delivered content (after our Received:) different from the content sent";
  }

  std::optional<daemon_fixture> daemon_;
};

// Transparency (RFC 5321 §4.5.2) and odd but legal lines must survive.
const std::string odd_body =
    "first line\r\n"
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    ".\r\n"  // a lone dot: ".." on the wire, "." again at the far end
    "\r\n"
    "trailing blanks \t\r\n"
    "last line\r\n";

#define REQUIRE_POSTFIX()                                                                     \
  if (!postfix_instance::available()) {                                                       \
    GTEST_SKIP() << "needs root and Postfix (/usr/sbin/postfix) for the customer's mail server"; \
  }

TEST_F(Delivery, RelayHoldsWhileServerIsDownAndDeliversOnRetry) {
  REQUIRE_POSTFIX();
  auto postfix = customer_server("127.0.0.2");
  add_acme({"--route", postfix.host() + ":" + std::to_string(postfix.port())});

  const std::string content =
      test_message("relay-retry", "bob@acme.test", odd_body, {"X-Test: kept  as\tis"});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}}, content);
  ASSERT_TRUE(sent.error.empty()) << sent.error;

  // Held: an attempt failed, the mail stays queued.
  ASSERT_TRUE(wait_log_line(*daemon_, {sent.qid + ": to=<bob@acme.test>", "status=deferred"}, 15s))
      << "got no deferral logged for " << sent.qid << ", want one; log:\n" << daemon_->log_text();
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);
  auto rcpts = recipients_of(*daemon_, sent.qid);
  ASSERT_EQ(rcpts.size(), 1u) << "queue show " << sent.qid;
  EXPECT_GE(rcpts[0].attempts, 1u);
  EXPECT_FALSE(rcpts[0].last_reply.empty()) << "got no last_reply after a failed attempt, want why";
  EXPECT_TRUE(postfix.message_files().empty());

  // The customer's server comes back: delivery follows without any operator action.
  postfix.start();
  ASSERT_TRUE(wait_files(postfix, 1))
      << "got " << postfix.message_files().size()
      << " messages at the customer's server, want 1; log:\n" << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s))
      << "got " << queued_for(*daemon_, "acme").value_or(99) << " queued, want 0";
  expect_delivered_intact(postfix.message_files().front(), content, "bob@acme.test");
}

TEST_F(Delivery, HoldModeDeliversOnFlushAndLosesNothingWhileServerIsDown) {
  REQUIRE_POSTFIX();
  auto postfix = customer_server("127.0.0.3");
  postfix.start();
  add_acme({"--mode", "hold", "--route", postfix.host() + ":" + std::to_string(postfix.port())});

  std::vector<std::string> qids;
  for (int i = 1; i <= 3; ++i) {
    auto s = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                    test_message("hold-" + std::to_string(i), "bob@acme.test", "held\r\n"));
    ASSERT_TRUE(s.error.empty()) << s.error;
    qids.push_back(s.qid);
  }
  // Held on purpose while the server runs: no attempt (an observation
  // window, not a synchronisation: nothing must happen in it).
  EXPECT_FALSE(wait_until([&] { return !postfix.message_files().empty(); }, 1500ms))
      << "got mail at the customer's server in hold mode, want none before a flush";
  for (const auto& qid : qids) {
    auto r = recipients_of(*daemon_, qid);
    ASSERT_EQ(r.size(), 1u) << "queue show " << qid;
    EXPECT_EQ(r[0].attempts, 0u) << qid << ": got attempts on held mail, want none";
  }

  auto flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(flushed.exit_code, 0) << "flush --wait: got exit " << flushed.exit_code << ", want 0\n"
                                  << flushed.out << flushed.err;
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
  EXPECT_TRUE(wait_files(postfix, 3)) << "got " << postfix.message_files().size()
                                      << " messages at the server, want 3";

  // The server goes away: the flush fails, says why, and keeps the mail.
  ASSERT_TRUE(postfix.stop());
  for (int i = 4; i <= 5; ++i) {
    auto s = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                    test_message("hold-" + std::to_string(i), "bob@acme.test", "held\r\n"));
    ASSERT_TRUE(s.error.empty()) << s.error;
    qids.push_back(s.qid);
  }
  flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(flushed.exit_code, 1) << "flush --wait to a stopped server: got exit "
                                  << flushed.exit_code << ", want 1\n" << flushed.out << flushed.err;
  EXPECT_NE(flushed.err.find("2 messages left"), std::string::npos)
      << "got \"" << flushed.err << "\", want it to say 2 messages are left";
  EXPECT_NE(flushed.err.find("refused"), std::string::npos)
      << "got \"" << flushed.err << "\", want the reason (connection refused)";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 2u);
  for (std::size_t i = 3; i < qids.size(); ++i) {
    auto r = recipients_of(*daemon_, qids[i]);
    ASSERT_EQ(r.size(), 1u) << qids[i] << ": got it gone from the queue, want it kept";
    EXPECT_GE(r[0].attempts, 1u);
  }

  // Back again: the next flush delivers the rest.
  postfix.start();
  flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(flushed.exit_code, 0) << flushed.out << flushed.err;
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
  EXPECT_TRUE(wait_files(postfix, 5)) << "got " << postfix.message_files().size()
                                      << " messages at the server, want 5";
}

TEST_F(Delivery, EightBitMessageReachesPostfixIntact) {
  REQUIRE_POSTFIX();
  auto postfix = customer_server("127.0.0.4");
  postfix.start();
  add_acme({"--route", postfix.host() + ":" + std::to_string(postfix.port())});

  const std::string body = "caf\xC3\xA9 cr\xC3\xA8me br\xC3\xBBl\xC3\xA9\x65\r\n\xE2\x82\xAC 5\r\n";
  const std::string content =
      test_message("eight-bit-postfix", "bob@acme.test", body,
                   {"MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit"});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}}, content,
                     "BODY=8BITMIME");
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_files(postfix, 1)) << "got no delivery, want one; log:\n" << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  expect_delivered_intact(postfix.message_files().front(), content, "bob@acme.test");
}

TEST_F(Delivery, SeveralConnectionsPerCustomerDeliverEveryMessageOnce) {
  if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
  daemon_->stop();
  daemon_->set_setting("smtp_connections_per_customer", "3");
  daemon_->start();
  smtp_sink sink("127.0.0.18", free_port_on("127.0.0.18"));
  sink.start();
  add_acme({"--mode", "hold", "--route", sink.address()});
  constexpr int messages = 24;
  for (int i = 0; i < messages; ++i) {
    auto sent = submit(daemon_->port(), "alice@sender.test", {{"u" + std::to_string(i) + "@acme.test", ""}},
                       test_message("lane-" + std::to_string(i), "u" + std::to_string(i) + "@acme.test", "hello\r\n"));
    ASSERT_TRUE(sent.error.empty()) << sent.error;
  }
  auto flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "30"});
  EXPECT_EQ(flushed.exit_code, 0) << flushed.out << flushed.err;
  const auto dumps = sink.dumps();
  EXPECT_EQ(dumps.size(), static_cast<std::size_t>(messages))
      << "got " << dumps.size() << " transactions at the sink, want each message exactly once";
  std::set<std::string> recipients;
  for (const auto& d : dumps) {
    for (const auto& r : field_values(d, "X-Rcpt-Args")) recipients.insert(r);
  }
  EXPECT_EQ(recipients.size(), static_cast<std::size_t>(messages)) << "a message went twice or not at all";
  EXPECT_TRUE(wait_log_line(*daemon_, {"(3 connections) done"}, 5s)) << daemon_->log_text();
}

TEST_F(Delivery, DataTransferToServerWithoutChunkingKeepsEveryLine) {
  if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
  // smtp-sink offers PIPELINING but not CHUNKING: the content goes with DATA,
  // dot-stuffed, and the sink undoes the stuffing in its dump.
  smtp_sink sink("127.0.0.17", free_port_on("127.0.0.17"));
  sink.start();
  add_acme({"--route", sink.address()});
  const std::string content = test_message("data-path", "bob@acme.test", odd_body);
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}}, content);
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_queued(*daemon_, "acme", 0, 15s)) << "got the message still queued, want it "
                                                        "delivered; log:\n" << daemon_->log_text();
  const auto dumps = sink.dumps();
  ASSERT_EQ(dumps.size(), 1u) << "got " << dumps.size() << " transactions at the sink, want 1";
  const auto mail_args = field_values(dumps[0], "X-Mail-Args");
  ASSERT_EQ(mail_args.size(), 1u);
  EXPECT_TRUE(mail_args[0].starts_with("<alice@sender.test>"))
      << "got MAIL FROM " << mail_args[0] << ", want the envelope sender kept";
  expect_intact(smtp_sink::message_of(dumps[0]), content, "bob@acme.test");
}

}  // namespace
