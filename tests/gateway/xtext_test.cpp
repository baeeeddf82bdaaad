// xtext_test.cpp — tests gateway/xtext.cpp (RFC 3461 §4).
#include "gateway/xtext.hpp"

#include <gtest/gtest.h>

#include <string>

namespace flushgate::gateway {
namespace {

struct decode_case {
  std::string in;
  std::optional<std::string> want;
};

TEST(XtextDecode, Table) {
  const decode_case cases[] = {
      {"", std::string{}},
      {"abc", std::string{"abc"}},
      {"a+2Bb", std::string{"a+b"}},
      {"+3D", std::string{"="}},
      {"+20+0D+0A", std::string{" \r\n"}},
      {"!~", std::string{"!~"}},
      {"QQ+2B+2B", std::string{"QQ++"}},
      {"+FF", std::string{"\xFF"}},
      {"+00", std::string{"\0", 1}},
      {"a+2b", std::nullopt},   // lower-case hex
      {"a+2", std::nullopt},    // truncated
      {"a+", std::nullopt},
      {"+G0", std::nullopt},
      {"a=b", std::nullopt},    // '=' must be encoded
      {"a b", std::nullopt},    // SP is outside 33..126
      {"a\tb", std::nullopt},
      {"a\x7F", std::nullopt},
      {"\xC3\xA9", std::nullopt},
  };
  for (const auto& c : cases) {
    const auto got = xtext_decode(c.in);
    EXPECT_EQ(got, c.want) << "input \"" << c.in << "\": got " << (got ? *got : "nullopt") << ", want "
                           << (c.want ? *c.want : "nullopt");
  }
}

TEST(XtextEncode, EncodesPlusEqualsAndNonPrintables) {
  EXPECT_EQ(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
  EXPECT_EQ(xtext_encode(std::string("\0\r\n\x7F\xFF", 5)), "+00+0D+0A+7F+FF");
  EXPECT_EQ(xtext_encode("user@example.test"), "user@example.test");
  EXPECT_EQ(xtext_encode(""), "");
}

TEST(XtextRoundTrip, EveryOctet) {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  const auto encoded = xtext_encode(all);
  const auto decoded = xtext_decode(encoded);
  ASSERT_TRUE(decoded.has_value()) << "got nullopt decoding " << encoded << ", want the 256 octets";
  EXPECT_EQ(*decoded, all);
}

}  // namespace
}  // namespace flushgate::gateway
