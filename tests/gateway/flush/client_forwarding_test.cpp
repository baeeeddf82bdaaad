// client_forwarding_test.cpp — gateway/flush/client_forwarding: the EHLO
// attribute list, attribute selection, xtext values and line splitting.
#include "gateway/flush/client_forwarding.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flushgate::gateway {
namespace {

queue::client_origin spammer() {
  return {.address = "127.0.0.9", .name = "[UNAVAILABLE]", .helo = "spammer.example",
          .proto = "ESMTP", .port = 40001};
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l;
  return out;
}

TEST(ClientForwarding, ParsesOfferedAttributesUpperCasedOnce) {
  const std::vector<std::string> want = {"NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT"};
  EXPECT_EQ(parse_offered_attributes("NAME ADDR PROTO HELO SOURCE PORT"), want);
  EXPECT_EQ(parse_offered_attributes("  name  addr proto helo source port name "), want);
  EXPECT_TRUE(parse_offered_attributes("").empty());
}

TEST(ClientForwarding, SendsOnlyOfferedAndKnownAttributesInOrder) {
  // Postfix 3.7 offers NAME ADDR PROTO HELO SOURCE PORT IDENT.
  const auto all = parse_offered_attributes("NAME ADDR PROTO HELO SOURCE PORT IDENT");
  EXPECT_EQ(joined(client_forwarding_commands("XFORWARD", spammer(), all)),
            "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.9 PORT=40001 PROTO=ESMTP "
            "HELO=spammer.example\r\n");
  // A peer that knows only ADDR and HELO gets only those.
  EXPECT_EQ(joined(client_forwarding_commands("XFORWARD", spammer(), {"HELO", "ADDR"})),
            "XFORWARD ADDR=127.0.0.9 HELO=spammer.example\r\n");
  // Unknown fields (an old queue entry: no name, protocol or port) are left out.
  const queue::client_origin old{.address = "192.0.2.1", .helo = "mail.example.org"};
  EXPECT_EQ(joined(client_forwarding_commands("XFORWARD", old, all)),
            "XFORWARD ADDR=192.0.2.1 HELO=mail.example.org\r\n");
  EXPECT_TRUE(client_forwarding_commands("XFORWARD", {}, all).empty())
      << "got a command for an origin with nothing known, want none";
  EXPECT_TRUE(client_forwarding_commands("XFORWARD", spammer(), {}).empty())
      << "got a command for a peer that offered no attribute, want none";
}

TEST(ClientForwarding, EncodesValuesAsXtextAndPrefixesIpv6) {
  queue::client_origin o;
  o.address = "2001:db8::9";
  o.helo = "evil ADDR=10.0.0.1+x=y\r\nRSET";
  const auto lines = client_forwarding_commands("XFORWARD", o, {"ADDR", "HELO"});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "XFORWARD ADDR=IPv6:2001:db8::9 HELO=evil+20ADDR+3D10.0.0.1+2Bx+3Dy+0D+0ARSET\r\n");
}

TEST(ClientForwarding, XclientLeavesHeloToTheEhloAndFitsOneLine) {
  // A sender's HELO may be 500 octets (tripled by xtext): XCLIENT must still
  // be one line, or its second line meets a session no longer ours.
  queue::client_origin o = spammer();
  o.helo = std::string(500, '+');
  o.name = std::string(250, 'n');
  const auto lines = client_forwarding_commands("XCLIENT", o, {"NAME", "ADDR", "PORT", "PROTO", "HELO"});
  ASSERT_EQ(lines.size(), 1u) << "got " << lines.size() << " XCLIENT lines, want 1";
  EXPECT_EQ(lines[0].find("HELO="), std::string::npos) << "got HELO in XCLIENT, want it left to the EHLO";
  EXPECT_LE(lines[0].size(), 512u);
}

TEST(ClientForwarding, SplitsLinesToStayWithinTheLimit) {
  queue::client_origin o = spammer();
  o.name = std::string(250, 'n') + ".example";
  o.helo = std::string(250, 'h') + ".example";
  const auto all = parse_offered_attributes("NAME ADDR PORT PROTO HELO");
  const auto lines = client_forwarding_commands("XFORWARD", o, all);
  ASSERT_GE(lines.size(), 2u) << "got one line of " << joined(lines).size() << " octets";
  std::string attributes;
  for (const auto& l : lines) {
    EXPECT_LE(l.size(), 512u) << "got a line of " << l.size() << " octets, want <= 512";
    ASSERT_EQ(l.rfind("XFORWARD ", 0), 0u) << "line " << l;
    ASSERT_EQ(l.substr(l.size() - 2), "\r\n");
    attributes += l.substr(9, l.size() - 11) + " ";
  }
  EXPECT_EQ(attributes, "NAME=" + o.name + " ADDR=127.0.0.9 PORT=40001 PROTO=ESMTP HELO=" +
                            o.helo + " ");
  // A small limit: one attribute per line.
  const auto tight = client_forwarding_commands("XFORWARD", spammer(), all, 40);
  EXPECT_EQ(tight.size(), 4u) << joined(tight);
  for (const auto& l : tight) EXPECT_LE(l.size(), 40u) << l;
}

TEST(ClientForwarding, TempunavailNameIsUnavailableForXforwardOnly) {
  // Postfix 3.7 answers XFORWARD NAME=[TEMPUNAVAIL] with "501 5.5.4 Bad NAME
  // syntax" (seen in scripts/bench/slowlink); XCLIENT takes it.
  queue::client_origin o = spammer();
  o.name = "[TEMPUNAVAIL]";
  EXPECT_EQ(joined(client_forwarding_commands("XFORWARD", o, {"NAME"})),
            "XFORWARD NAME=[UNAVAILABLE]\r\n");
  EXPECT_EQ(joined(client_forwarding_commands("XCLIENT", o, {"NAME"})),
            "XCLIENT NAME=[TEMPUNAVAIL]\r\n");
}

TEST(ClientForwarding, DropsAnAttributeThatCannotFitALine) {
  queue::client_origin o = spammer();
  o.helo = std::string(600, 'h');
  const auto lines = client_forwarding_commands("XFORWARD", o, {"ADDR", "HELO"});
  EXPECT_EQ(joined(lines), "XFORWARD ADDR=127.0.0.9\r\n");
}

TEST(ClientForwarding, ParsesTheCustomerSetting) {
  EXPECT_EQ(parse_client_forwarding(""), client_forwarding::xforward);
  EXPECT_EQ(parse_client_forwarding("xforward"), client_forwarding::xforward);
  EXPECT_EQ(parse_client_forwarding("xclient"), client_forwarding::xclient);
  EXPECT_EQ(parse_client_forwarding("none"), client_forwarding::none);
  EXPECT_FALSE(parse_client_forwarding("XFORWARD").has_value());
  EXPECT_FALSE(parse_client_forwarding("yes").has_value());
}

}  // namespace
}  // namespace flushgate::gateway
