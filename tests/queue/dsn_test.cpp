// dsn_test.cpp — tests queue/dsn.cpp: golden notices, NOTIFY table, structure.
//
// Golden files live in tests/data/dsn/*.eml and are compared byte for byte.
// After an intended change to the output, regenerate them with
//   FLUSHGATE_UPDATE_GOLDEN=1 ./dsn_test
// and review the diff before committing (the .eml files keep their CRLFs:
// tests/data/dsn/.gitattributes marks them -text).
#include "queue/dsn.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <algorithm>
#include <string>
#include <vector>

namespace flushgate::queue {
namespace {

constexpr std::int64_t arrival_time = 1700000000;  // Tue, 14 Nov 2023 22:13:20 +0000
constexpr std::int64_t now_time = 1700003600;      // one hour later

const std::string original_message =
    "Received: from client.example.com (client.example.com [192.0.2.7])\r\n"
    "\tby mx.isp.example with ESMTP id 4F3K2J9QX1AB\r\n"
    "\tfor <bob@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "From: Alice <alice@example.com>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: Quarterly figures\r\n"
    "Date: Tue, 14 Nov 2023 22:13:19 +0000\r\n"
    "Message-ID: <20231114221319.abc@example.com>\r\n"
    "\r\n"
    "Hello Bob,\r\n"
    "\r\n"
    "the figures are attached.\r\n"
    ".\r\n"
    "-- \r\n"
    "Alice\r\n";

dsn_input base_input() {
  dsn_input in;
  in.reporting_mta = "mx.isp.example";
  in.original_sender = "alice@example.com";
  in.arrival = arrival_time;
  in.queue_id = "4F3K2J9QX1AB";
  in.original_content = original_message;
  in.now = now_time;
  return in;
}

dsn_recipient failed_rcpt(std::string addr) {
  dsn_recipient r;
  r.final_recipient = std::move(addr);
  r.action = dsn_action::failed;
  r.status = "5.1.1";
  r.remote_mta = "mx1.example.net";
  r.diagnostic = "550 5.1.1 <" + r.final_recipient + ">: Recipient address rejected: User unknown";
  r.last_attempt = now_time - 60;
  return r;
}

std::string golden_path(const std::string& name) {
  return std::string(FLUSHGATE_SOURCE_DIR) + "/tests/data/dsn/" + name + ".eml";
}

std::vector<std::string> split_crlf(const std::string& s) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < s.size()) {
    auto end = s.find("\r\n", pos);
    if (end == std::string::npos) end = s.size();
    lines.push_back(s.substr(pos, end - pos));
    pos = end + 2;
  }
  return lines;
}

// Compares with the golden file, or rewrites it when FLUSHGATE_UPDATE_GOLDEN is set.
void expect_golden(const std::string& name, const std::string& got) {
  const std::string path = golden_path(name);
  const char* update = std::getenv("FLUSHGATE_UPDATE_GOLDEN");
  if (update != nullptr && *update != '\0') {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << got;
    ASSERT_TRUE(out.good()) << "cannot write " << path;
    return;
  }
  std::ifstream file(path, std::ios::binary);
  ASSERT_TRUE(file.good()) << "missing golden file " << path
                           << " (run with FLUSHGATE_UPDATE_GOLDEN=1 to create it)";
  const std::string want{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  if (got == want) return;
  const auto g = split_crlf(got);
  const auto w = split_crlf(want);
  for (std::size_t i = 0; i < std::max(g.size(), w.size()); ++i) {
    const std::string gl = i < g.size() ? g[i] : "<end>";
    const std::string wl = i < w.size() ? w[i] : "<end>";
    if (gl != wl) {
      ADD_FAILURE() << name << ".eml line " << i + 1 << ": got \"" << gl << "\", want \"" << wl
                    << "\"";
      return;
    }
  }
  ADD_FAILURE() << name << ".eml: got " << got.size() << " octets, want " << want.size();
}

// Every line ends in CRLF, no bare CR or LF, no line over 998 octets.
void expect_wire_safe(const std::string& msg) {
  ASSERT_GE(msg.size(), 2u);
  EXPECT_EQ(msg.substr(msg.size() - 2), "\r\n") << "got a last line without CRLF, want CRLF";
  std::size_t line_len = 0;
  for (std::size_t i = 0; i < msg.size(); ++i) {
    if (msg[i] == '\r') {
      ASSERT_TRUE(i + 1 < msg.size() && msg[i + 1] == '\n') << "got a bare CR at " << i << ", want CRLF";
      ++i;
      line_len = 0;
    } else if (msg[i] == '\n') {
      FAIL() << "got a bare LF at " << i << ", want CRLF";
    } else {
      ++line_len;
      ASSERT_LE(line_len, 998u) << "got a line over 998 octets at " << i << ", want <= 998";
    }
  }
}

std::string boundary_of(const std::string& msg) {
  const auto at = msg.find("boundary=\"");
  if (at == std::string::npos) return {};
  const auto start = at + 10;
  return msg.substr(start, msg.find('"', start) - start);
}

// Splits a multipart body into its parts (headers + body of each part).
std::vector<std::string> parts_of(const std::string& msg) {
  const std::string b = boundary_of(msg);
  std::vector<std::string> parts;
  const std::string delim = "\r\n--" + b;
  auto pos = msg.find(delim);
  for (int guard = 0; guard < 16 && pos != std::string::npos; ++guard) {
    const auto start = pos + delim.size();
    if (msg.compare(start, 2, "--") == 0) break;
    const auto next = msg.find(delim, start);
    parts.push_back(msg.substr(start + 2, next == std::string::npos ? std::string::npos : next - start - 2));
    pos = next;
  }
  return parts;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string build_or_fail(const dsn_input& in) {
  auto msg = build_dsn(in);
  if (!msg) {
    ADD_FAILURE() << "got nullopt, want a notice";
    return {};
  }
  expect_wire_safe(*msg);
  return *msg;
}

// --- golden files --------------------------------------------------------

TEST(DsnGolden, FailedFullWithEnvidAndOrcpt) {
  auto in = base_input();
  in.envid = "QQ314159+2Bx+3Dy";
  in.ret = "FULL";
  auto r = failed_rcpt("Bob@example.net");
  r.orcpt = "rfc822;bob+2Blists@example.net";
  r.notify = "FAILURE";
  in.recipients.push_back(r);
  const auto msg = build_or_fail(in);
  expect_golden("failed_full_envid_orcpt", msg);
  EXPECT_TRUE(contains(msg, "\r\nOriginal-Envelope-ID: QQ314159+x=y\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "\r\nOriginal-Recipient: rfc822; bob+lists@example.net\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "\r\nFinal-Recipient: rfc822; Bob@example.net\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "Content-Type: message/rfc822\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "the figures are attached.\r\n")) << msg;
}

TEST(DsnGolden, FailedMultiLineDiagnostic) {
  auto in = base_input();
  auto r = failed_rcpt("carol@example.org");
  r.status = "5.7.1";
  r.remote_mta = "mail.example.org";
  r.diagnostic =
      "550-5.7.1 Message rejected by policy.\n"
      "550-5.7.1 See https://mail.example.org/policy for details\r\n"
      "550 5.7.1 Reference 8a7f";
  in.recipients.push_back(r);
  const auto msg = build_or_fail(in);
  expect_golden("failed_multiline_diagnostic", msg);
  EXPECT_TRUE(contains(msg,
                       "\r\nDiagnostic-Code: smtp; 550-5.7.1 Message rejected by policy.\r\n"
                       " 550-5.7.1 See https://mail.example.org/policy for details\r\n"
                       " 550 5.7.1 Reference 8a7f\r\n"))
      << msg;
  // RET absent: headers only.
  EXPECT_TRUE(contains(msg, "Content-Type: text/rfc822-headers\r\n")) << msg;
  EXPECT_FALSE(contains(msg, "Hello Bob")) << msg;
}

TEST(DsnGolden, DelayedWithWillRetryUntil) {
  auto in = base_input();
  in.ret = "FULL";  // RET applies to failures only: a delay returns headers
  dsn_recipient r;
  r.final_recipient = "dave@example.com";
  r.action = dsn_action::delayed;
  r.status = "4.4.1";
  r.remote_mta = "mx.example.com";
  r.diagnostic = "connect to mx.example.com[192.0.2.25]:25: Connection timed out";
  r.last_attempt = now_time - 300;
  r.will_retry_until = arrival_time + 5 * 86400;
  in.recipients.push_back(r);
  const auto msg = build_or_fail(in);
  expect_golden("delayed_will_retry_until", msg);
  EXPECT_TRUE(contains(msg, "\r\nSubject: Delayed Mail (still being retried)\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "\r\nWill-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "\r\nDiagnostic-Code: X-flushgate; connect to")) << msg;
  EXPECT_TRUE(contains(msg, "Content-Type: text/rfc822-headers\r\n")) << msg;
}

TEST(DsnGolden, FailedRetHdrs) {
  auto in = base_input();
  in.ret = "HDRS";
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const auto msg = build_or_fail(in);
  expect_golden("failed_ret_hdrs", msg);
  EXPECT_TRUE(contains(msg, "Content-Type: text/rfc822-headers\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "\r\nSubject: Quarterly figures\r\n")) << msg;
  EXPECT_FALSE(contains(msg, "Hello Bob")) << msg;
  EXPECT_FALSE(contains(msg, "message/rfc822")) << msg;
}

TEST(DsnGolden, OversizedFullReturnsHeadersOnly) {
  auto in = base_input();
  in.ret = "full";
  in.max_returned = 1024;
  for (int i = 0; i < 100; ++i) in.original_content += "filler line to make the message too big\r\n";
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const auto msg = build_or_fail(in);
  expect_golden("oversized_full_headers_only", msg);
  EXPECT_TRUE(contains(msg, "Content-Type: text/rfc822-headers\r\n")) << msg;
  EXPECT_FALSE(contains(msg, "filler line")) << msg;
}

TEST(DsnGolden, MixedNotifyExcludesNeverAndSuccessOnly) {
  auto in = base_input();
  auto never = failed_rcpt("never@example.net");
  never.notify = "NEVER";
  auto success_only = failed_rcpt("success-only@example.net");
  success_only.notify = "SUCCESS";
  auto plain = failed_rcpt("plain@example.net");
  dsn_recipient delivered;
  delivered.final_recipient = "erin@example.net";
  delivered.notify = "success,failure";
  delivered.action = dsn_action::delivered;
  delivered.status = "2.0.0";
  delivered.remote_mta = "mx1.example.net";
  delivered.diagnostic = "250 2.0.0 Ok: queued as 9C1D2";
  delivered.last_attempt = now_time - 30;
  delivered.will_retry_until = now_time + 3600;  // must not show up
  in.recipients = {never, success_only, plain, delivered};
  const auto msg = build_or_fail(in);
  expect_golden("mixed_notify", msg);
  EXPECT_FALSE(contains(msg, "never@example.net")) << msg;
  EXPECT_FALSE(contains(msg, "success-only@example.net")) << msg;
  EXPECT_TRUE(contains(msg, "\r\nFinal-Recipient: rfc822; plain@example.net\r\nAction: failed\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "\r\nFinal-Recipient: rfc822; erin@example.net\r\nAction: delivered\r\n")) << msg;
  EXPECT_FALSE(contains(msg, "Will-Retry-Until")) << msg;
}

// --- NOTIFY (RFC 3461 §4.1, §5.2) ---------------------------------------

struct notify_case {
  const char* notify;
  dsn_action action;
  bool want;
};

TEST(DsnWantsNotice, FollowsNotifyTable) {
  const notify_case cases[] = {
      {"", dsn_action::failed, true},
      {"", dsn_action::delayed, true},
      {"", dsn_action::delivered, false},
      {"", dsn_action::relayed, false},
      {"NEVER", dsn_action::failed, false},
      {"NEVER", dsn_action::delayed, false},
      {"NEVER", dsn_action::delivered, false},
      {"never", dsn_action::failed, false},
      {"FAILURE", dsn_action::failed, true},
      {"FAILURE", dsn_action::delayed, false},
      {"FAILURE", dsn_action::delivered, false},
      {"DELAY", dsn_action::failed, false},
      {"DELAY", dsn_action::delayed, true},
      {"SUCCESS", dsn_action::failed, false},
      {"SUCCESS", dsn_action::delayed, false},
      {"SUCCESS", dsn_action::delivered, true},
      {"SUCCESS", dsn_action::relayed, true},
      {"SUCCESS,FAILURE", dsn_action::failed, true},
      {"SUCCESS,FAILURE", dsn_action::delayed, false},
      {"success,failure,delay", dsn_action::delayed, true},
      {"Failure, Delay", dsn_action::delayed, true},
      {"FAILURE,DELAY", dsn_action::delivered, false},
      {"DELAY,SUCCESS", dsn_action::relayed, true},
      {"NEVER,FAILURE", dsn_action::failed, false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(wants_notice(c.notify, c.action), c.want)
        << "NOTIFY=\"" << c.notify << "\" action " << to_string(c.action) << ": got "
        << !c.want << ", want " << c.want;
  }
}

// --- structure ----------------------------------------------------------

TEST(DsnBuild, NullSenderGetsNoNotice) {
  auto in = base_input();
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  for (const char* sender : {"", "<>", "  "}) {
    in.original_sender = sender;
    EXPECT_FALSE(build_dsn(in).has_value()) << "sender \"" << sender << "\": got a notice, want none";
  }
}

TEST(DsnBuild, NoNoticeWhenNotifyExcludesAll) {
  auto in = base_input();
  auto r = failed_rcpt("bob@example.net");
  r.notify = "DELAY";
  in.recipients.push_back(r);
  EXPECT_FALSE(build_dsn(in).has_value()) << "got a notice, want none";
  in.recipients.clear();
  EXPECT_FALSE(build_dsn(in).has_value()) << "no recipients: got a notice, want none";
}

TEST(DsnBuild, WillRetryUntilNeverInFailedNotices) {
  auto in = base_input();
  auto r = failed_rcpt("bob@example.net");
  r.will_retry_until = now_time + 86400;
  in.recipients.push_back(r);
  const auto msg = build_or_fail(in);
  EXPECT_FALSE(contains(msg, "Will-Retry-Until")) << msg;
}

TEST(DsnBuild, HasThreePartsInReportOrder) {
  auto in = base_input();
  in.ret = "FULL";
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const auto msg = build_or_fail(in);
  EXPECT_TRUE(contains(msg, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\""))
      << msg;
  const auto parts = parts_of(msg);
  ASSERT_EQ(parts.size(), 3u) << "got " << parts.size() << " parts, want 3";
  EXPECT_EQ(parts[0].rfind("Content-Type: text/plain", 0), 0u) << parts[0];
  EXPECT_EQ(parts[1].rfind("Content-Type: message/delivery-status", 0), 0u) << parts[1];
  EXPECT_EQ(parts[2].rfind("Content-Type: message/rfc822", 0), 0u) << parts[2];
  // The returned message is carried unchanged.
  EXPECT_TRUE(contains(parts[2], "\r\n\r\n" + original_message)) << parts[2];
  EXPECT_TRUE(contains(msg, "\r\n--" + boundary_of(msg) + "--\r\n")) << msg;
  EXPECT_EQ(msg.find("\r\n--" + boundary_of(msg) + "--\r\n") + boundary_of(msg).size() + 8, msg.size())
      << "got text after the closing boundary, want none";
}

TEST(DsnBuild, HeadersAreDeterministicFromInput) {
  auto in = base_input();
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const auto a = build_or_fail(in);
  const auto b = build_or_fail(in);
  EXPECT_EQ(a, b) << "got two different notices for one input, want the same";
  EXPECT_TRUE(contains(a, "\r\nDate: Tue, 14 Nov 2023 23:13:20 +0000\r\n")) << a;
  EXPECT_EQ(a.rfind("From: Mail Delivery System <postmaster@mx.isp.example>\r\nTo: <alice@example.com>\r\n", 0), 0u)
      << a;
  EXPECT_TRUE(contains(a, "\r\nAuto-Submitted: auto-replied\r\n")) << a;
  EXPECT_TRUE(contains(a, "\r\nMIME-Version: 1.0\r\n")) << a;
  EXPECT_TRUE(contains(a, "\r\nMessage-ID: <1700003600.4F3K2J9QX1AB.")) << a;
  in.now += 1;
  const auto c = build_or_fail(in);
  EXPECT_NE(boundary_of(a), boundary_of(c)) << "got the same boundary for another clock, want a new one";
}

TEST(DsnBuild, OptionalFieldsOnlyWhenGiven) {
  auto in = base_input();
  in.arrival = 0;
  auto r = failed_rcpt("bob@example.net");
  r.remote_mta.clear();
  r.diagnostic.clear();
  r.last_attempt = 0;
  r.status = "";
  in.recipients.push_back(r);
  const auto msg = build_or_fail(in);
  for (const char* field : {"Original-Envelope-ID:", "Original-Recipient:", "Arrival-Date:",
                            "Remote-MTA:", "Diagnostic-Code:", "Last-Attempt-Date:"}) {
    EXPECT_FALSE(contains(msg, field)) << "got " << field << ", want it absent";
  }
  // RFC 3461 §6.3g: no specific status known → 5.0.0.
  EXPECT_TRUE(contains(msg, "\r\nAction: failed\r\nStatus: 5.0.0\r\n")) << msg;
}

TEST(DsnBuild, ReportingMtaWithoutDotIsLocalHostname) {
  auto in = base_input();
  in.reporting_mta = "gateway";
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const auto msg = build_or_fail(in);
  EXPECT_TRUE(contains(msg, "\r\nReporting-MTA: x-local-hostname; gateway\r\n")) << msg;
  EXPECT_FALSE(contains(msg, "Reporting-MTA: dns")) << msg;
}

TEST(DsnBuild, MalformedStatusFallsBackPerAction) {
  const std::pair<const char*, const char*> bad[] = {
      {"5.01.1", "5.0.0"}, {"3.1.1", "5.0.0"}, {"5.1", "5.0.0"}, {"5.1.1000", "5.0.0"}, {"x", "5.0.0"}};
  for (const auto& [status, want] : bad) {
    auto in = base_input();
    auto r = failed_rcpt("bob@example.net");
    r.status = status;
    in.recipients.push_back(r);
    const auto msg = build_or_fail(in);
    EXPECT_TRUE(contains(msg, std::string("\r\nStatus: ") + want + "\r\n"))
        << "status \"" << status << "\": got " << msg << ", want Status: " << want;
  }
  auto in = base_input();
  auto r = failed_rcpt("bob@example.net");
  r.status = "5.1.10";
  in.recipients.push_back(r);
  EXPECT_TRUE(contains(build_or_fail(in), "\r\nStatus: 5.1.10\r\n")) << "got 5.1.10 rejected, want kept";
}

TEST(DsnBuild, PeerTextCannotInjectHeadersOrLongLines) {
  auto in = base_input();
  in.envid = "ID+0D+0ABcc:+20victim@example.com";
  auto r = failed_rcpt("bob@example.net");
  r.orcpt = "rfc822;bob+0D+0AX-Evil:+201@example.net";
  r.remote_mta = "mx.example.net\r\nX-Evil: 2";
  r.diagnostic = "550 5.1.1 no\r\rX-Evil: 3\n\n" + std::string(3000, 'A') + "\n550 5.1.1 \x01\xff end";
  in.recipients.push_back(r);
  const auto msg = build_or_fail(in);
  EXPECT_FALSE(contains(msg, "\r\nX-Evil:")) << msg;
  EXPECT_FALSE(contains(msg, "\r\nBcc:")) << msg;
  EXPECT_TRUE(contains(msg, "\r\nOriginal-Envelope-ID: ID??Bcc: victim@example.com\r\n")) << msg;
  EXPECT_TRUE(contains(msg, "\r\n 550 5.1.1 ?? end\r\n")) << msg;
  EXPECT_FALSE(needs_8bitmime(msg)) << "got 8-bit octets from peer text, want 7-bit";
}

TEST(DsnBuild, ReturnedContentGetsCrlfAndLongLinesFallBackToHeaders) {
  auto in = base_input();
  in.ret = "FULL";
  in.original_content = "Subject: bare\nFrom: a@b\n\nbody with bare LF\nand bare CR\rend";
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const auto msg = build_or_fail(in);
  EXPECT_TRUE(contains(msg, "Subject: bare\r\nFrom: a@b\r\n\r\nbody with bare LF\r\nand bare CR\r\nend\r\n"))
      << msg;

  in.original_content = "Subject: long\r\n\r\n" + std::string(1200, 'x') + "\r\n";
  const auto msg2 = build_or_fail(in);
  EXPECT_TRUE(contains(msg2, "Content-Type: text/rfc822-headers\r\n")) << msg2;
  EXPECT_FALSE(contains(msg2, "xxxx")) << msg2;
}

TEST(DsnBuild, BoundaryAvoidsReturnedContent) {
  auto in = base_input();
  in.ret = "FULL";
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const std::string first = boundary_of(build_or_fail(in));
  ASSERT_FALSE(first.empty());
  in.original_content = original_message + "--" + first + "\r\n--" + first + "_1--\r\n";
  const auto msg = build_or_fail(in);
  const std::string b = boundary_of(msg);
  EXPECT_NE(b, first) << "got the boundary that occurs in the content, want another";
  EXPECT_NE(b, first + "_1") << "got the boundary that occurs in the content, want another";
  EXPECT_EQ(parts_of(msg).size(), 3u) << msg;
}

TEST(DsnBuild, EightBitContentIsMarked) {
  auto in = base_input();
  in.ret = "FULL";
  in.original_content = "Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve\r\n";
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const auto msg = build_or_fail(in);
  EXPECT_TRUE(needs_8bitmime(msg)) << "got 7-bit, want 8-bit";
  EXPECT_TRUE(contains(msg, "\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThis is a MIME")) << msg;
  in.original_content = original_message;
  const auto plain = build_or_fail(in);
  EXPECT_FALSE(needs_8bitmime(plain)) << "got 8-bit, want 7-bit";
  EXPECT_TRUE(contains(plain, "\r\nContent-Transfer-Encoding: 7bit\r\n")) << plain;
}

TEST(DsnBuild, NoThirdPartWithoutHeaders) {
  auto in = base_input();
  in.original_content.clear();
  in.recipients.push_back(failed_rcpt("bob@example.net"));
  const auto msg = build_or_fail(in);
  EXPECT_EQ(parts_of(msg).size(), 2u) << msg;
}

}  // namespace
}  // namespace flushgate::queue
