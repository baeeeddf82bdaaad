// smtp_reply_test.cpp — tests gateway/smtp_reply.cpp (RFC 5321 §4.2, RFC 2034).
#include "gateway/smtp_reply.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flushgate::gateway {
namespace {

std::vector<std::string> split_lines(const std::string& wire) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < wire.size()) {
    const auto end = wire.find("\r\n", start);
    if (end == std::string::npos) {
      lines.push_back(wire.substr(start) + "<no CRLF>");
      break;
    }
    lines.push_back(wire.substr(start, end + 2 - start));
    start = end + 2;
  }
  return lines;
}

// Every line ends in CRLF, has no other CR or LF, fits 512 octets, and starts
// "ccc-" except the last, which starts "ccc " or is just "ccc".
void expect_well_formed(const std::string& wire, int code) {
  const auto lines = split_lines(wire);
  ASSERT_FALSE(lines.empty()) << "got no lines, want at least one";
  const std::string c = std::to_string(code);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto& l = lines[i];
    EXPECT_LE(l.size(), max_reply_line) << "line " << i << ": got " << l.size() << " octets, want <= 512";
    ASSERT_GE(l.size(), 5u) << "line " << i << ": got \"" << l << "\", want at least ccc CRLF";
    EXPECT_EQ(l.substr(l.size() - 2), "\r\n") << "line " << i << " lacks CRLF";
    const auto body = l.substr(0, l.size() - 2);
    EXPECT_EQ(body.find_first_of("\r\n"), std::string::npos) << "line " << i << ": got stray CR/LF";
    EXPECT_EQ(body.substr(0, 3), c);
    const bool last = i + 1 == lines.size();
    if (last) {
      EXPECT_TRUE(body.size() == 3 || body[3] == ' ') << "last line: got \"" << body << "\", want ccc SP";
    } else {
      EXPECT_EQ(body[3], '-') << "line " << i << ": got \"" << body << "\", want ccc-";
    }
  }
}

TEST(FormatReply, SingleLine) {
  EXPECT_EQ(format_reply(250, "2.1.0", "Ok"), "250 2.1.0 Ok\r\n");
  EXPECT_EQ(format_reply(220, "", "mx.acme.test ESMTP"), "220 mx.acme.test ESMTP\r\n");
  EXPECT_EQ(format_reply(354, "", "End data with <CR><LF>.<CR><LF>"), "354 End data with <CR><LF>.<CR><LF>\r\n");
}

TEST(FormatReply, EmptyText) {
  EXPECT_EQ(format_reply(250, "", ""), "250\r\n");
  EXPECT_EQ(format_reply(250, "2.0.0", ""), "250 2.0.0\r\n");
}

TEST(FormatReply, MultiLineRepeatsEnhancedCode) {
  EXPECT_EQ(format_reply(250, "", "mx.acme.test\nPIPELINING\nSIZE 10240000"),
            "250-mx.acme.test\r\n250-PIPELINING\r\n250 SIZE 10240000\r\n");
  EXPECT_EQ(format_reply(550, "5.7.1", "Relaying denied\nSee policy"),
            "550-5.7.1 Relaying denied\r\n550 5.7.1 See policy\r\n");
  EXPECT_EQ(format_reply(250, "", "a\n\nb"), "250-a\r\n250-\r\n250 b\r\n");
}

TEST(FormatReply, TrailingNewlineAddsNoLine) {
  EXPECT_EQ(format_reply(250, "2.0.0", "Ok\n"), "250 2.0.0 Ok\r\n");
}

TEST(FormatReply, NoInjectedLines) {
  // Peer text carrying CR/LF must not add a line the peer chose.
  const auto wire = format_reply(550, "5.1.1", "<x@y.test\r\n250 2.0.0 Ok>: no such user");
  expect_well_formed(wire, 550);
  EXPECT_EQ(wire, "550-5.1.1 <x@y.test\r\n550 5.1.1 250 2.0.0 Ok>: no such user\r\n");
  const auto cr_only = format_reply(550, "5.1.1", "a\rb\x01" "c\x7F");
  EXPECT_EQ(cr_only, "550 5.1.1 ab?c?\r\n");
}

TEST(FormatReply, LongLinesAreSplitWithinLimit) {
  std::string words;
  while (words.size() < 2000) words += "word ";
  const auto wire = format_reply(250, "2.0.0", words);
  expect_well_formed(wire, 250);
  EXPECT_GT(split_lines(wire).size(), 3u);

  const std::string solid(3000, 'x');
  const auto wire2 = format_reply(550, "5.0.0", solid);
  expect_well_formed(wire2, 550);
  std::string joined;
  for (const auto& l : split_lines(wire2)) joined += l.substr(10, l.size() - 12);  // drop "550-5.0.0 " and CRLF
  EXPECT_EQ(joined, solid) << "got " << joined.size() << " octets back, want all 3000";
}

TEST(FormatReply, LineOfExactlyMaxFits) {
  // "250 2.0.0 " is 10 octets, CRLF 2: 500 octets of text make 512.
  const std::string text(500, 'y');
  const auto wire = format_reply(250, "2.0.0", text);
  EXPECT_EQ(wire.size(), 512u) << "got " << wire.size() << " octets, want one 512-octet line";
  const auto wire2 = format_reply(250, "2.0.0", text + "y");
  EXPECT_EQ(split_lines(wire2).size(), 2u);
  expect_well_formed(wire2, 250);
}

}  // namespace
}  // namespace flushgate::gateway
