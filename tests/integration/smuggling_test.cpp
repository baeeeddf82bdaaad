// smuggling_test.cpp — SMTP smuggling against the real daemon.
//
// Covers PROTOCOLS.md §6 item 7 and RFC 5321 §2.3.8 / §4.1.1.4: only
// <CRLF>.<CRLF> ends DATA; "\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r" and
// "\r\n.\r" never do, and the text after them never becomes a second
// transaction — the one message is refused (554 5.6.0) after the real end and
// nothing is queued. A bare LF in a command is refused, never a line end.
// Also: transparency (§4.5.2) round-trips byte for byte.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/smtp_helpers.hpp"

#include <gtest/gtest.h>

#include <ostream>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

class Smuggling : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_.start();
    auto added = daemon_.add_customer("demo", "demo.test", {"--mode", "hold"});
    ASSERT_EQ(added.exit_code, 0) << "customer add: " << added.err;
  }

  daemon_fixture daemon_;
};

struct smuggled_end {
  const char* name;
  const char* bytes;
};

// For gtest's messages: the name, not the struct's bytes.
void PrintTo(const smuggled_end& end, std::ostream* out) {
  *out << end.name;
}

class SmugglingEnd : public Smuggling, public ::testing::WithParamInterface<smuggled_end> {};

TEST_P(SmugglingEnd, NeverEndsDataNorStartsASecondTransaction) {
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  ASSERT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test>"), 250));
  ASSERT_TRUE(reply_is(probe.command("RCPT TO:<bob@demo.test>"), 250));
  ASSERT_TRUE(reply_is(probe.command("DATA"), 354));
  // The would-be end, a would-be second transaction, then the real end.
  const std::string payload = std::string("Subject: innocent\r\n\r\nfirst message") +
                              GetParam().bytes +
                              "MAIL FROM:<evil@x.test>\r\n"
                              "RCPT TO:<victim@demo.test>\r\n"
                              "DATA\r\n"
                              "From: ceo@demo.test\r\n"
                              "Subject: smuggled\r\n"
                              "\r\n"
                              "wire the money\r\n"
                              ".\r\n";
  ASSERT_FALSE(probe.send_raw(payload));
  EXPECT_TRUE(reply_is(probe.read_reply(), 554, "5.6.0"))
      << "the one reply to the end of data";
  // Whatever came before, the next reply must answer QUIT: no replies to a
  // smuggled MAIL/RCPT/DATA may be waiting.
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221)) << "QUIT right after the end of data";
  EXPECT_EQ(daemon_.queued_messages(), 0u) << "a refused message and no smuggled one";
  EXPECT_EQ(daemon_.log_text().find("evil@x.test"), std::string::npos)
      << "got the smuggled sender in the log, want it never parsed as a command:\n"
      << daemon_.log_text();
}

INSTANTIATE_TEST_SUITE_P(
    EveryNonStandardEnd, SmugglingEnd,
    ::testing::Values(smuggled_end{"LfDotLf", "\n.\n"}, smuggled_end{"LfDotCrLf", "\n.\r\n"},
                      smuggled_end{"CrLfDotLf", "\r\n.\n"}, smuggled_end{"CrDotCr", "\r.\r"},
                      smuggled_end{"CrLfDotCr", "\r\n.\r"}),
    [](const ::testing::TestParamInfo<smuggled_end>& param_info) { return param_info.param.name; });

TEST_F(Smuggling, BareLineFeedInACommandIsRefused) {
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  // Split on the bare LF these would be NOOP + QUIT (250, 221).
  ASSERT_FALSE(probe.send_raw("NOOP\nQUIT\r\n"));
  EXPECT_TRUE(reply_is(probe.read_reply(), 500)) << "NOOP<LF>QUIT<CRLF>";
  ASSERT_FALSE(probe.send_raw("NOOP\rQUIT\r\n"));
  EXPECT_TRUE(reply_is(probe.read_reply(), 500)) << "NOOP<CR>QUIT<CRLF>";
  ASSERT_FALSE(probe.send_raw("MAIL FROM:<alice@sender.test>\nRCPT TO:<bob@demo.test>\r\n"));
  EXPECT_TRUE(reply_is(probe.read_reply(), 500)) << "MAIL<LF>RCPT<CRLF>";
  // Still in the initial state: no MAIL was taken.
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<bob@demo.test>"), 503)) << "RCPT without MAIL";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
}

TEST_F(Smuggling, DotStuffedContentRoundTripsExactly) {
  const std::string content =
      "Subject: transparency\r\n"
      "X-Test: dots\r\n"
      "\r\n"
      ".leading dot\r\n"
      "..two leading dots\r\n"
      ".\r\n"
      "..\r\n"
      "...\r\n"
      ". space after the dot\r\n"
      "a . in the middle and a dot at the end.\r\n"
      "\tindented\r\n"
      "trailing blanks   \r\n"
      "8bit: \xc3\xa4\xc3\xb6\xc3\xbc \xff\x80\x7f\r\n"
      "\r\n"
      "\r\n"
      "last line\r\n";
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  auto sent = send_message(probe, "alice@sender.test", {"bob@demo.test"}, content, "BODY=8BITMIME");
  ASSERT_TRUE(reply_is(sent.reply, 250));
  auto ids = queue_ids(*sent.reply);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));

  ASSERT_EQ(daemon_.stop(), 0) << daemon_.log_text();
  auto stored = daemon_fixture::read_store(daemon_.data_dir());
  ASSERT_TRUE(stored) << stored.error().message();
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ(stored->front().info.qid, ids[0]);
  EXPECT_EQ(stored->front().info.body_type, "8BITMIME");
  auto [received, rest] = split_received(stored->front().content);
  EXPECT_TRUE(received.starts_with("Received: ")) << stored->front().content;
  EXPECT_EQ(rest, content) << "got the stored content (after Received) differing from what was "
                              "sent, want it byte for byte, unstuffed";
}

}  // namespace
