// address_test.cpp — tests gateway/inbound/address.cpp (RFC 5321 §4.1.2, relay probes).
#include "gateway/inbound/address.hpp"

#include <gtest/gtest.h>

#include <string>

namespace flushgate::gateway {
namespace {

const char* name(address_error e) {
  switch (e) {
    case address_error::ok: return "ok";
    case address_error::syntax: return "syntax";
    case address_error::too_long: return "too_long";
    case address_error::non_ascii: return "non_ascii";
    case address_error::routing_chars: return "routing_chars";
    case address_error::address_literal: return "address_literal";
  }
  return "?";
}

struct mailbox_case {
  std::string path;
  address_error want;
  std::string local;   // checked when want is not a plain failure
  std::string domain;
};

void check(const mailbox_case& c) {
  mailbox m{"untouched", "untouched"};
  const auto got = parse_mailbox(c.path, m);
  EXPECT_EQ(got, c.want) << "path <" << c.path << ">: got " << name(got) << ", want " << name(c.want);
  const bool filled = c.want == address_error::ok || c.want == address_error::routing_chars ||
                      c.want == address_error::address_literal;
  const std::string want_local = filled ? c.local : "untouched";
  const std::string want_domain = filled ? c.domain : "untouched";
  EXPECT_EQ(m.local, want_local) << "path <" << c.path << ">: got local " << m.local << ", want " << want_local;
  EXPECT_EQ(m.domain, want_domain) << "path <" << c.path << ">: got domain " << m.domain << ", want " << want_domain;
}

// The open-relay probe set: every trick a relay tester tries must come out
// as something the caller refuses or judges by the real final domain.
TEST(ParseMailbox, OpenRelayProbes) {
  const mailbox_case cases[] = {
      {"user%evil.test@acme.test", address_error::routing_chars, "user%evil.test", "acme.test"},
      {"evil.test!user@acme.test", address_error::routing_chars, "evil.test!user", "acme.test"},
      {"\"user@evil.test\"@acme.test", address_error::routing_chars, "\"user@evil.test\"", "acme.test"},
      {"\"user%evil.test\"@acme.test", address_error::routing_chars, "\"user%evil.test\"", "acme.test"},
      {"\"user\\@evil.test\"@acme.test", address_error::routing_chars, "\"user\\@evil.test\"", "acme.test"},
      {"@acme.test:user@evil.test", address_error::ok, "user", "evil.test"},
      {"@a.test,@acme.test:user@evil.test", address_error::ok, "user", "evil.test"},
      {"user@[127.0.0.1]", address_error::address_literal, "user", "[127.0.0.1]"},
      {"user@[IPv6:::1]", address_error::address_literal, "user", "[ipv6:::1]"},
      {"user@[IPv6:2001:db8::1]", address_error::address_literal, "user", "[ipv6:2001:db8::1]"},
      {"user@ACME.TEST", address_error::ok, "user", "acme.test"},
      {"User.Name@Acme.Test", address_error::ok, "User.Name", "acme.test"},
      {"user@acme.test.", address_error::syntax, "", ""},
      {"user@evil.test@acme.test", address_error::syntax, "", ""},
      {"user@acme.test>", address_error::syntax, "", ""},
      {"user@acme.test\r\nRCPT TO:<x@evil.test", address_error::syntax, "", ""},
  };
  for (const auto& c : cases) check(c);
}

TEST(ParseMailbox, DotStringAndQuotedLocalParts) {
  const mailbox_case cases[] = {
      {"a@b.test", address_error::ok, "a", "b.test"},
      {"first.last@b.test", address_error::ok, "first.last", "b.test"},
      {"a+tag@b.test", address_error::ok, "a+tag", "b.test"},
      {"#$&'*+-/=?^_`{|}~@b.test", address_error::ok, "#$&'*+-/=?^_`{|}~", "b.test"},
      {"\"john doe\"@b.test", address_error::ok, "\"john doe\"", "b.test"},
      {"\"a\\\"b\"@b.test", address_error::ok, "\"a\\\"b\"", "b.test"},     // escaped quote
      {"\"a\\\\b\"@b.test", address_error::ok, "\"a\\\\b\"", "b.test"},     // escaped backslash
      {"\"a\\ b\"@b.test", address_error::ok, "\"a\\ b\"", "b.test"},
      {"\"a>b\"@b.test", address_error::ok, "\"a>b\"", "b.test"},
      {"\"\"@b.test", address_error::ok, "\"\"", "b.test"},
      {".a@b.test", address_error::syntax, "", ""},
      {"a.@b.test", address_error::syntax, "", ""},
      {"a..b@b.test", address_error::syntax, "", ""},
      {"a b@b.test", address_error::syntax, "", ""},
      {"a(b)@b.test", address_error::syntax, "", ""},
      {"\"ab@b.test", address_error::syntax, "", ""},        // unterminated quote
      {"\"a\"b@b.test", address_error::syntax, "", ""},      // text after the quote
      {"\"a\\\"@b.test", address_error::syntax, "", ""},     // escape eats the closing quote
      {"\"a\tb\"@b.test", address_error::syntax, "", ""},    // HT is not qtextSMTP
      {"\"a\\\x01\"@b.test", address_error::syntax, "", ""}, // quoted-pair only 32..126
      {"@b.test", address_error::syntax, "", ""},
      {"", address_error::syntax, "", ""},
      {"Postmaster", address_error::syntax, "", ""},
      {"a@", address_error::syntax, "", ""},
  };
  for (const auto& c : cases) check(c);
}

TEST(ParseMailbox, DomainsAndLiterals) {
  const mailbox_case cases[] = {
      {"a@localhost", address_error::syntax, "", ""},  // at least one dot
      {"a@-x.test", address_error::syntax, "", ""},
      {"a@x-.test", address_error::syntax, "", ""},
      {"a@x_y.test", address_error::syntax, "", ""},
      {"a@x..test", address_error::syntax, "", ""},
      {"a@.x.test", address_error::syntax, "", ""},
      {"a@x-y.test", address_error::ok, "a", "x-y.test"},
      {"a@1.2.3.4", address_error::ok, "a", "1.2.3.4"},  // LDH: digits are letters here
      {"a@[1.2.3.4]", address_error::address_literal, "a", "[1.2.3.4]"},
      {"a@[255.255.255.255]", address_error::address_literal, "a", "[255.255.255.255]"},
      {"a@[256.1.1.1]", address_error::syntax, "", ""},
      {"a@[1.2.3]", address_error::syntax, "", ""},
      {"a@[1.2.3.4.5]", address_error::syntax, "", ""},
      {"a@[1.2.3.4", address_error::syntax, "", ""},
      {"a@[]", address_error::syntax, "", ""},
      {"a@[IPv6:not-an-address]", address_error::syntax, "", ""},
      {"a@[x-tag:content]", address_error::address_literal, "a", "[x-tag:content]"},
      {"a@[x-tag:]", address_error::syntax, "", ""},
      {"@bad_route:a@b.test", address_error::syntax, "", ""},
      {"@a.test:", address_error::syntax, "", ""},
      {"@a.test,b.test:a@b.test", address_error::syntax, "", ""},  // every hop needs '@'
      {"@a.test a@b.test", address_error::syntax, "", ""},
  };
  for (const auto& c : cases) check(c);
}

TEST(ParseMailbox, NonAscii) {
  check({"j\xC3\xBCrgen@b.test", address_error::non_ascii, "", ""});
  check({"a@b\xC3\xBC.test", address_error::non_ascii, "", ""});
}

TEST(ParseMailbox, LengthLimits) {
  const std::string local64(64, 'l');
  check({local64 + "@b.test", address_error::ok, local64, "b.test"});
  check({local64 + "l@b.test", address_error::too_long, "", ""});

  // Path 256 including "<" and ">": 254 octets inside is the most.
  std::string domain;
  for (int i = 0; i < 24; ++i) domain += "abcdefghi.";
  domain += "com";  // 243 octets
  const std::string local(254 - 1 - domain.size(), 'x');
  const std::string path = local + "@" + domain;
  ASSERT_EQ(path.size(), 254u);
  check({path, address_error::ok, local, domain});
  check({"x" + path, address_error::too_long, "", ""});
}

TEST(IsValidDomain, Table) {
  struct domain_case {
    std::string d;
    bool want;
  };
  const std::string label63(63, 'a');
  std::string name255 = label63 + "." + label63 + "." + label63 + "." + std::string(63, 'b');  // 255
  const domain_case cases[] = {
      {"acme.test", true},
      {"a.b", true},
      {"ACME.Test", true},
      {"x1-2.test", true},
      {label63 + ".test", true},
      {label63 + "a.test", false},
      {name255, true},
      {name255 + "b", false},
      {"", false},
      {"test", false},
      {"acme.test.", false},
      {".acme.test", false},
      {"acme..test", false},
      {"-acme.test", false},
      {"acme-.test", false},
      {"ac_me.test", false},
      {"ac me.test", false},
      {"[1.2.3.4]", false},
  };
  ASSERT_EQ(name255.size(), 255u);
  for (const auto& c : cases) {
    EXPECT_EQ(is_valid_domain(c.d), c.want) << "domain " << c.d << ": got " << !c.want << ", want " << c.want;
  }
}

TEST(NormalizeDomain, LowerCasesAsciiOnly) {
  EXPECT_EQ(normalize_domain("Mail.ACME.test"), "mail.acme.test");
  EXPECT_EQ(normalize_domain("[IPv6:::1]"), "[ipv6:::1]");
  EXPECT_EQ(normalize_domain(""), "");
}

TEST(MailboxToString, JoinsLocalAndDomain) {
  EXPECT_EQ(to_string(mailbox{"\"a b\"", "acme.test"}), "\"a b\"@acme.test");
}

}  // namespace
}  // namespace flushgate::gateway
