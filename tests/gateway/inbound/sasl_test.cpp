// sasl_test.cpp — credentials, CRAM-MD5 and base64 (gateway/inbound/sasl.cpp).
#include "gateway/inbound/sasl.hpp"

#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/md5.h>

#include <gtest/gtest.h>

#include <cstring>

namespace flushgate::gateway {
namespace {

TEST(CramMd5, Rfc2195TestVector) {
  // RFC 2195 §2 (checked in PROTOCOLS.md §3 item 10).
  const std::string stored = make_credential("tanstaaftanstaaf");
  EXPECT_TRUE(verify_cram_md5(stored, "<1896.697170952@postoffice.reston.mci.net>",
                              "b913a602c7eda7a495b4e6e7334d3890"));
  EXPECT_TRUE(verify_cram_md5(stored, "<1896.697170952@postoffice.reston.mci.net>",
                              "B913A602C7EDA7A495B4E6E7334D3890"));
  EXPECT_FALSE(verify_cram_md5(stored, "<1896.697170952@postoffice.reston.mci.net>",
                               "b913a602c7eda7a495b4e6e7334d3891"));
  EXPECT_FALSE(verify_cram_md5(stored, "<1896.697170953@postoffice.reston.mci.net>",
                               "b913a602c7eda7a495b4e6e7334d3890"));
  // The whole client response of the RFC decodes to "tim <digest>".
  EXPECT_EQ(*base64_decode("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"),
            "tim b913a602c7eda7a495b4e6e7334d3890");
}

TEST(Credential, NeverContainsThePasswordAndVerifiesIt) {
  const std::string stored = make_credential("secret");
  EXPECT_TRUE(is_credential(stored)) << stored;
  EXPECT_EQ(stored.find("secret"), std::string::npos);
  EXPECT_TRUE(verify_password(stored, "secret"));
  EXPECT_FALSE(verify_password(stored, "Secret"));
  EXPECT_FALSE(verify_password(stored, ""));
  EXPECT_FALSE(verify_password("", "secret"));
  EXPECT_FALSE(is_credential("hmac-md5:zz"));
}

TEST(Credential, LongKeysAreHashedFirst) {
  std::string long_password(100, 'k');
  const std::string stored = make_credential(long_password);
  EXPECT_TRUE(verify_password(stored, long_password));
  EXPECT_FALSE(verify_password(stored, long_password.substr(0, 64)));
}

TEST(CramChallenge, HasMessageIdForm) {
  auto c = make_cram_challenge("gw.isp.test");
  EXPECT_EQ(c.front(), '<');
  EXPECT_EQ(c.back(), '>');
  EXPECT_NE(c.find("@gw.isp.test>"), std::string::npos) << c;
  EXPECT_NE(make_cram_challenge("gw.isp.test"), c);
}

TEST(Base64, StrictDecodingAndRoundTrip) {
  struct row {
    const char* in;
    std::optional<std::string> want;
  } rows[] = {
      {"", std::string()},
      {"YQ==", std::string("a")},
      {"YWI=", std::string("ab")},
      {"YWJj", std::string("abc")},
      {"AHRlc3QAMTIzNA==", std::string("\0test\0" "1234", 10)},
      {"YQ=", std::nullopt},       // length not a multiple of 4
      {"Y===", std::nullopt},      // '=' too early
      {"YQ==YWJj", std::nullopt},  // data after padding
      {"YW J", std::nullopt},      // outside the alphabet
      {"YWJj\r", std::nullopt},
      {"*", std::nullopt},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(base64_decode(r.in), r.want) << "input \"" << r.in << "\"";
  }
  for (std::string s : {std::string(""), std::string("a"), std::string("ab"), std::string("abc"),
                        std::string("\0\xff\x80", 3)}) {
    EXPECT_EQ(base64_decode(base64_encode(s)), s);
  }
}

}  // namespace
}  // namespace flushgate::gateway

namespace flushgate::gateway {
namespace {

sasl_exchange make_exchange(bool tls) {
  return sasl_exchange(
      [](std::string_view user) {
        return user == "acme" ? make_credential("correct horse") : std::string();
      },
      "gw.isp.test", tls);
}

// The client's side of CRAM-MD5, computed the textbook way (RFC 2104 with
// plain MD5 calls), independently of the stored key schedule.
std::string cram_response(const std::string& user, const std::string& password,
                          const std::string& challenge_b64) {
  auto challenge = *base64_decode(challenge_b64);
  unsigned char key[64] = {};
  std::memcpy(key, password.data(), password.size());
  unsigned char ipad[64], opad[64];
  for (int i = 0; i < 64; ++i) {
    ipad[i] = key[i] ^ 0x36;
    opad[i] = key[i] ^ 0x5c;
  }
  unsigned char inner[16], outer[16];
  std::string in(reinterpret_cast<char*>(ipad), 64);
  in += challenge;
  MD5(reinterpret_cast<const unsigned char*>(in.data()), in.size(), inner);
  std::string out(reinterpret_cast<char*>(opad), 64);
  out.append(reinterpret_cast<char*>(inner), 16);
  MD5(reinterpret_cast<const unsigned char*>(out.data()), out.size(), outer);
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : outer) {
    hex += digits[b >> 4];
    hex += digits[b & 15];
  }
  return base64_encode(user + " " + hex);
}

TEST(SaslExchange, CramMd5GoodAndBadLogin) {
  auto ok = make_exchange(false);
  auto s = ok.start("CRAM-MD5");
  ASSERT_EQ(s.code, 334) << s.text;
  EXPECT_FALSE(s.text.empty()) << "a 334 without a challenge crashes fetchmail";
  auto done = ok.respond(cram_response("acme", "correct horse", s.text));
  EXPECT_EQ(done.code, 235) << done.text;
  EXPECT_TRUE(done.success);
  EXPECT_EQ(done.user, "acme");

  auto bad = make_exchange(false);
  s = bad.start("cram-md5");
  done = bad.respond(cram_response("acme", "wrong horse", s.text));
  EXPECT_EQ(done.code, 535);
  EXPECT_FALSE(done.success);

  auto unknown = make_exchange(false);
  s = unknown.start("CRAM-MD5");
  done = unknown.respond(cram_response("nobody", "correct horse", s.text));
  EXPECT_EQ(done.code, 535) << "an unknown user must look like a wrong password";
}

TEST(SaslExchange, PlainAndLoginOnlyUnderTls) {
  auto plain = make_exchange(false);
  EXPECT_EQ(plain.start("PLAIN " + base64_encode(std::string("\0acme\0correct horse", 19))).code, 504);
  auto login = make_exchange(false);
  EXPECT_EQ(login.start("LOGIN").code, 504);
  EXPECT_EQ(sasl_exchange::mechanisms(false), "CRAM-MD5");
  EXPECT_EQ(sasl_exchange::mechanisms(true), "CRAM-MD5 PLAIN LOGIN");

  auto tls_plain = make_exchange(true);
  auto s = tls_plain.start("PLAIN " + base64_encode(std::string("\0acme\0correct horse", 19)));
  EXPECT_EQ(s.code, 235) << s.text;
  auto tls_plain2 = make_exchange(true);
  s = tls_plain2.start("PLAIN");
  EXPECT_EQ(s.code, 334);
  EXPECT_EQ(s.text, "") << "an empty challenge is \"334 \"";
  s = tls_plain2.respond(base64_encode(std::string("acme\0acme\0correct horse", 23)));
  EXPECT_EQ(s.code, 235) << s.text;
  auto tls_plain3 = make_exchange(true);
  s = tls_plain3.start("PLAIN " + base64_encode(std::string("other\0acme\0correct horse", 24)));
  EXPECT_EQ(s.code, 535) << "authzid other than the user must fail";

  auto tls_login = make_exchange(true);
  s = tls_login.start("LOGIN");
  EXPECT_EQ(s.code, 334);
  EXPECT_EQ(*base64_decode(s.text), "Username:");
  s = tls_login.respond(base64_encode("acme"));
  EXPECT_EQ(*base64_decode(s.text), "Password:");
  s = tls_login.respond(base64_encode("correct horse"));
  EXPECT_EQ(s.code, 235);
}

TEST(SaslExchange, CancelBadBase64AndUnknownMechanism) {
  auto a = make_exchange(false);
  a.start("CRAM-MD5");
  EXPECT_EQ(a.respond("*").code, 501);
  auto b = make_exchange(false);
  b.start("CRAM-MD5");
  auto s = b.respond("not base64!");
  EXPECT_EQ(s.code, 501);
  EXPECT_EQ(s.enhanced, "5.5.2");
  auto c = make_exchange(false);
  EXPECT_EQ(c.start("GSSAPI").code, 504);
  auto d = make_exchange(false);
  EXPECT_EQ(d.start("CRAM-MD5 dGVzdA==").code, 501) << "CRAM-MD5 with an initial response";
}

}  // namespace
}  // namespace flushgate::gateway
