// smtp_command_test.cpp — tests gateway/inbound/smtp_command.cpp (RFC 5321 §4.1,
// RFC 1870, RFC 6152, RFC 3461 §4, RFC 4954 §5).
#include "gateway/inbound/smtp_command.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace flushgate::gateway {
namespace {

const char* name(param_error e) {
  switch (e) {
    case param_error::ok: return "ok";
    case param_error::syntax: return "syntax";
    case param_error::unknown_param: return "unknown_param";
    case param_error::duplicate: return "duplicate";
    case param_error::bad_value: return "bad_value";
  }
  return "?";
}

struct command_case {
  std::string line;
  verb v;
  std::string name;
  std::string arg;
  bool missing_keyword = false;
};

TEST(ParseCommand, Table) {
  const command_case cases[] = {
      {"EHLO client.test", verb::ehlo, "EHLO", "client.test"},
      {"ehlo client.test", verb::ehlo, "EHLO", "client.test"},
      {"HeLo client.test", verb::helo, "HELO", "client.test"},
      {"MAIL FROM:<a@b.test> SIZE=10", verb::mail, "MAIL", "<a@b.test> SIZE=10"},
      {"mail from:<a@b.test>", verb::mail, "MAIL", "<a@b.test>"},
      {"MAIL FROM: <a@b.test>", verb::mail, "MAIL", " <a@b.test>"},
      {"MAIL FROM:<>", verb::mail, "MAIL", "<>"},
      {"MAIL <a@b.test>", verb::mail, "MAIL", "", true},
      {"MAIL", verb::mail, "MAIL", "", true},
      {"MAIL TO:<a@b.test>", verb::mail, "MAIL", "", true},
      {"RCPT TO:<a@b.test>", verb::rcpt, "RCPT", "<a@b.test>"},
      {"Rcpt To:<a@b.test> NOTIFY=NEVER", verb::rcpt, "RCPT", "<a@b.test> NOTIFY=NEVER"},
      {"RCPT FROM:<a@b.test>", verb::rcpt, "RCPT", "", true},
      {"DATA", verb::data, "DATA", ""},
      {"DATA\r\n", verb::data, "DATA", ""},
      {"BDAT 100 LAST", verb::bdat, "BDAT", "100 LAST"},
      {"RSET", verb::rset, "RSET", ""},
      {"NOOP hello  there", verb::noop, "NOOP", "hello  there"},
      {"QUIT", verb::quit, "QUIT", ""},
      {"VRFY user", verb::vrfy, "VRFY", "user"},
      {"EXPN list", verb::expn, "EXPN", "list"},
      {"HELP", verb::help, "HELP", ""},
      {"STARTTLS", verb::starttls, "STARTTLS", ""},
      {"AUTH PLAIN AGFiYwBkZWY=", verb::auth, "AUTH", "PLAIN AGFiYwBkZWY="},
      {"ETRN @acme.test", verb::etrn, "ETRN", "@acme.test"},
      {"ATRN acme.test,other.test", verb::atrn, "ATRN", "acme.test,other.test"},
      {"XYZZY foo", verb::unknown, "XYZZY", "foo"},
      {"", verb::unknown, "", ""},
      {" DATA", verb::unknown, "", "DATA"},
      {"DATAX", verb::unknown, "DATAX", ""},
      {"DATA\tx", verb::unknown, "DATA\tX", ""},
  };
  for (const auto& c : cases) {
    const auto got = parse_command(c.line);
    EXPECT_EQ(got.v, c.v) << "line \"" << c.line << "\": got verb " << static_cast<int>(got.v) << ", want "
                          << static_cast<int>(c.v);
    EXPECT_EQ(got.name, c.name) << "line \"" << c.line << "\": got name " << got.name << ", want " << c.name;
    EXPECT_EQ(got.arg, c.arg) << "line \"" << c.line << "\": got arg \"" << got.arg << "\", want \"" << c.arg << "\"";
    EXPECT_EQ(got.missing_keyword, c.missing_keyword)
        << "line \"" << c.line << "\": got missing_keyword " << got.missing_keyword << ", want " << c.missing_keyword;
  }
}

TEST(ParseCommand, MissingKeywordFailsArgumentParsing) {
  const auto cmd = parse_command("MAIL <a@b.test>");
  mail_args m;
  const auto r = parse_mail_args(cmd.arg, m);
  EXPECT_EQ(r.error, param_error::syntax) << "got " << name(r.error) << ", want syntax";
}

struct mail_case {
  std::string arg;
  param_error want;
};

TEST(ParseMailArgs, ErrorTable) {
  const mail_case cases[] = {
      // Path.
      {"<a@b.test>", param_error::ok},
      {"<>", param_error::ok},
      {" <a@b.test>", param_error::ok},  // one SP after the colon: tolerated
      {"  <a@b.test>", param_error::syntax},
      {"a@b.test", param_error::syntax},
      {"<a@b.test", param_error::syntax},
      {"", param_error::syntax},
      {"<a@b.test>SIZE=1", param_error::syntax},
      {"<a@b.test> ", param_error::ok},
      // SIZE (RFC 1870).
      {"<a@b.test> SIZE=0", param_error::ok},
      {"<a@b.test> size=12345", param_error::ok},
      {"<a@b.test> SIZE=99999999999999999999", param_error::ok},   // 20 digits
      {"<a@b.test> SIZE=123456789012345678901", param_error::bad_value},  // 21 digits
      {"<a@b.test> SIZE=", param_error::syntax},
      {"<a@b.test> SIZE", param_error::bad_value},
      {"<a@b.test> SIZE=12a", param_error::bad_value},
      {"<a@b.test> SIZE=-1", param_error::bad_value},
      {"<a@b.test> SIZE=1 SIZE=2", param_error::duplicate},
      // BODY (RFC 6152).
      {"<a@b.test> BODY=7BIT", param_error::ok},
      {"<a@b.test> BODY=8bitmime", param_error::ok},
      {"<a@b.test> BODY=BINARYMIME", param_error::bad_value},
      {"<a@b.test> BODY=8BIT", param_error::bad_value},
      {"<a@b.test> BODY=7BIT BODY=7BIT", param_error::duplicate},
      // RET, ENVID (RFC 3461).
      {"<a@b.test> RET=FULL", param_error::ok},
      {"<a@b.test> ret=hdrs", param_error::ok},
      {"<a@b.test> RET=ALL", param_error::bad_value},
      {"<a@b.test> RET=FULL RET=HDRS", param_error::duplicate},
      {"<a@b.test> ENVID=QQ314159+2B", param_error::ok},
      {"<a@b.test> ENVID=" + std::string(100, 'x'), param_error::ok},
      {"<a@b.test> ENVID=" + std::string(101, 'x'), param_error::bad_value},
      {"<a@b.test> ENVID=a+2b", param_error::bad_value},
      {"<a@b.test> ENVID=a ENVID=b", param_error::duplicate},
      // AUTH= (RFC 4954 §5).
      {"<a@b.test> AUTH=<>", param_error::ok},
      {"<a@b.test> AUTH=e+3Dmc2@example.test", param_error::ok},
      {"<a@b.test> AUTH=a+", param_error::bad_value},
      {"<a@b.test> AUTH=<> AUTH=<>", param_error::duplicate},
      // Unknown or not offered (RFC 5321 §4.1.1.11 → 555).
      {"<a@b.test> SMTPUTF8", param_error::unknown_param},
      {"<a@b.test> XFOO=bar", param_error::unknown_param},
      {"<a@b.test> NOTIFY=NEVER", param_error::unknown_param},  // a RCPT parameter
      // Parameter grammar.
      {"<a@b.test> =1", param_error::syntax},
      {"<a@b.test> -X=1", param_error::syntax},
      {"<a@b.test> SIZE=1=2", param_error::syntax},
      {"<a@b.test> SIZE=\x01", param_error::syntax},
      {"<a@b.test> X\xC3\xA9=1", param_error::syntax},
  };
  for (const auto& c : cases) {
    mail_args m;
    const auto got = parse_mail_args(c.arg, m);
    EXPECT_EQ(got.error, c.want) << "MAIL FROM:" << c.arg << ": got " << name(got.error) << " (" << got.detail
                                 << "), want " << name(c.want);
    if (got.error != param_error::ok) {
      EXPECT_FALSE(got.detail.empty()) << "MAIL FROM:" << c.arg << ": got empty detail, want text";
    }
  }
}

TEST(ParseMailArgs, ExtractsValues) {
  mail_args m;
  const auto r = parse_mail_args(
      "<\"a> b\"@acme.test> size=1000 body=8bitmime RET=hdrs ENVID=QQ314159+2B AUTH=<>", m);
  ASSERT_EQ(r.error, param_error::ok) << "got " << name(r.error) << " (" << r.detail << "), want ok";
  EXPECT_EQ(m.path, "\"a> b\"@acme.test");
  ASSERT_TRUE(m.size.has_value());
  EXPECT_EQ(*m.size, 1000u);
  EXPECT_EQ(m.body, "8BITMIME");
  EXPECT_EQ(m.ret, "HDRS");
  EXPECT_EQ(m.envid, "QQ314159+2B");
  EXPECT_EQ(m.auth, "<>");
}

TEST(ParseMailArgs, NullSenderAndDefaults) {
  mail_args m;
  m.body = "stale";
  ASSERT_EQ(parse_mail_args("<>", m).error, param_error::ok);
  EXPECT_EQ(m.path, "");
  EXPECT_FALSE(m.size.has_value());
  EXPECT_EQ(m.body, "") << "got stale field, want the output reset";
  EXPECT_EQ(m.ret, "");
  EXPECT_EQ(m.envid, "");
  EXPECT_EQ(m.auth, "");
}

TEST(ParseMailArgs, SizeSaturates) {
  mail_args m;
  ASSERT_EQ(parse_mail_args("<a@b.test> SIZE=18446744073709551615", m).error, param_error::ok);
  EXPECT_EQ(*m.size, UINT64_MAX);
  ASSERT_EQ(parse_mail_args("<a@b.test> SIZE=18446744073709551616", m).error, param_error::ok);
  EXPECT_EQ(*m.size, UINT64_MAX) << "got " << *m.size << ", want saturation at UINT64_MAX";
  ASSERT_EQ(parse_mail_args("<a@b.test> SIZE=00000000000000000042", m).error, param_error::ok);
  EXPECT_EQ(*m.size, 42u);
}

TEST(ParseRcptArgs, ErrorTable) {
  const mail_case cases[] = {
      {"<a@b.test>", param_error::ok},
      {" <a@b.test>", param_error::ok},
      {"<Postmaster>", param_error::ok},  // extracted; the caller judges it
      {"<>", param_error::syntax},
      {"a@b.test", param_error::syntax},
      {"<a@b.test> NOTIFY=NEVER", param_error::ok},
      {"<a@b.test> notify=never", param_error::ok},
      {"<a@b.test> NOTIFY=SUCCESS", param_error::ok},
      {"<a@b.test> NOTIFY=SUCCESS,FAILURE,DELAY", param_error::ok},
      {"<a@b.test> NOTIFY=delay,failure", param_error::ok},
      {"<a@b.test> NOTIFY=NEVER,FAILURE", param_error::bad_value},
      {"<a@b.test> NOTIFY=FAILURE,NEVER", param_error::bad_value},
      {"<a@b.test> NOTIFY=FAILURE,FAILURE", param_error::bad_value},
      {"<a@b.test> NOTIFY=FAILURE,", param_error::bad_value},
      {"<a@b.test> NOTIFY=,FAILURE", param_error::bad_value},
      {"<a@b.test> NOTIFY=SOMETIMES", param_error::bad_value},
      {"<a@b.test> NOTIFY", param_error::bad_value},
      {"<a@b.test> NOTIFY=NEVER NOTIFY=NEVER", param_error::duplicate},
      {"<a@b.test> ORCPT=rfc822;a@b.test", param_error::ok},
      {"<a@b.test> ORCPT=rfc822;a+2Bb@b.test", param_error::ok},
      {"<a@b.test> ORCPT=rfc822;" + std::string(500 - 7, 'x'), param_error::ok},
      {"<a@b.test> ORCPT=rfc822;" + std::string(500 - 6, 'x'), param_error::bad_value},
      {"<a@b.test> ORCPT=rfc822", param_error::bad_value},
      {"<a@b.test> ORCPT=rfc822;", param_error::bad_value},
      {"<a@b.test> ORCPT=;a@b.test", param_error::bad_value},
      {"<a@b.test> ORCPT=rfc822;a+2b", param_error::bad_value},
      {"<a@b.test> ORCPT=rf(c;a@b.test", param_error::bad_value},
      {"<a@b.test> ORCPT=rfc822;a@b.test ORCPT=rfc822;a@b.test", param_error::duplicate},
      {"<a@b.test> SIZE=1", param_error::unknown_param},  // a MAIL parameter
      {"<a@b.test> SMTPUTF8", param_error::unknown_param},
      {"<a@b.test> X-Y", param_error::unknown_param},
  };
  for (const auto& c : cases) {
    rcpt_args r;
    const auto got = parse_rcpt_args(c.arg, r);
    EXPECT_EQ(got.error, c.want) << "RCPT TO:" << c.arg << ": got " << name(got.error) << " (" << got.detail
                                 << "), want " << name(c.want);
  }
}

TEST(ParseRcptArgs, ExtractsValues) {
  rcpt_args r;
  const auto res = parse_rcpt_args("<user@acme.test> notify=failure,delay ORCPT=rfc822;User+40acme.test", r);
  ASSERT_EQ(res.error, param_error::ok) << "got " << name(res.error) << " (" << res.detail << "), want ok";
  EXPECT_EQ(r.path, "user@acme.test");
  EXPECT_EQ(r.notify, "FAILURE,DELAY");
  EXPECT_EQ(r.orcpt, "rfc822;User+40acme.test");
}

TEST(ParseRcptArgs, FirstErrorWins) {
  rcpt_args r;
  const auto res = parse_rcpt_args("<a@b.test> XFOO NOTIFY=NEVER NOTIFY=NEVER", r);
  EXPECT_EQ(res.error, param_error::unknown_param) << "got " << name(res.error) << ", want unknown_param";
}

}  // namespace
}  // namespace flushgate::gateway
