// units_test.cpp — tests core/units.cpp: durations, sizes, flags, host:port.
#include "core/units.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace flushgate::core {
namespace {

using std::chrono::seconds;

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::uint64_t uint64_max = std::numeric_limits<std::uint64_t>::max();

std::string show(const std::optional<seconds>& d) {
  return d ? std::to_string(d->count()) + "s" : std::string("nullopt");
}
std::string show(const std::optional<std::uint64_t>& s) {
  return s ? std::to_string(*s) : std::string("nullopt");
}

struct duration_case {
  std::string text;
  std::optional<seconds> want;
};

TEST(ParseDuration, AcceptsUnitsAndRejectsTheRest) {
  const std::int64_t max_weeks = int64_max / (7 * 24 * 3600);
  const std::vector<duration_case> cases{
      {"300s", seconds{300}},
      {"5m", seconds{300}},
      {"4h", seconds{4 * 3600}},
      {"5d", seconds{5 * 86400}},
      {"1w", seconds{604800}},
      {"42", seconds{42}},
      {"0", seconds{0}},
      {"0s", seconds{0}},
      {"007m", seconds{420}},
      {std::to_string(int64_max), seconds{int64_max}},
      {std::to_string(max_weeks) + "w", seconds{max_weeks * 7 * 24 * 3600}},
      // invalid
      {"", std::nullopt},
      {"s", std::nullopt},
      {"5x", std::nullopt},
      {"5M", std::nullopt},  // uppercase: minutes or megabytes? refused
      {"5S", std::nullopt},
      {"5 m", std::nullopt},
      {" 5m", std::nullopt},
      {"5m ", std::nullopt},
      {"-5s", std::nullopt},
      {"+5s", std::nullopt},
      {"1.5h", std::nullopt},
      {"5ms", std::nullopt},
      {"5mm", std::nullopt},
      {"0x10", std::nullopt},
      // overflow
      {"9223372036854775808", std::nullopt},
      {"99999999999999999999999", std::nullopt},
      {std::to_string(max_weeks + 1) + "w", std::nullopt},
      {std::to_string(int64_max / 60 + 1) + "m", std::nullopt},
  };
  for (const auto& c : cases) {
    const auto got = parse_duration(c.text);
    EXPECT_EQ(got, c.want) << "parse_duration(\"" << c.text << "\"): got " << show(got) << ", want "
                           << show(c.want);
  }
}

struct size_case {
  std::string text;
  std::optional<std::uint64_t> want;
};

TEST(ParseSize, AcceptsUnitsAndRejectsTheRest) {
  const std::uint64_t max_gigs = uint64_max >> 30;
  const std::vector<size_case> cases{
      {"10M", 10 * 1024 * 1024},
      {"10m", 10 * 1024 * 1024},
      {"512k", 512 * 1024},
      {"512K", 512 * 1024},
      {"1G", std::uint64_t{1} << 30},
      {"2T", std::uint64_t{2} << 40},
      {"100B", 100},
      {"100b", 100},
      {"123", 123},
      {"0", 0},
      {"0k", 0},
      {std::to_string(uint64_max), uint64_max},
      {std::to_string(max_gigs) + "G", max_gigs << 30},
      // invalid
      {"", std::nullopt},
      {"M", std::nullopt},
      {"10MB", std::nullopt},
      {"10X", std::nullopt},
      {"1.5M", std::nullopt},
      {"-1", std::nullopt},
      {"+1", std::nullopt},
      {"10 M", std::nullopt},
      {" 10M", std::nullopt},
      {"10M ", std::nullopt},
      // overflow
      {"18446744073709551616", std::nullopt},
      {std::to_string(max_gigs + 1) + "G", std::nullopt},
      {"16777216T", std::nullopt},  // 2^24 * 2^40 = 2^64
  };
  for (const auto& c : cases) {
    const auto got = parse_size(c.text);
    EXPECT_EQ(got, c.want) << "parse_size(\"" << c.text << "\"): got " << show(got) << ", want "
                           << show(c.want);
  }
}

TEST(FormatDuration, PicksTheLargestExactUnit) {
  const std::vector<std::pair<std::int64_t, std::string>> cases{
      {0, "0s"},      {1, "1s"},       {90, "90s"},       {60, "1m"},
      {3660, "61m"},  {14400, "4h"},   {86400, "1d"},     {432000, "5d"},
      {604800, "1w"}, {1209600, "2w"}, {86401, "86401s"}, {-5, "-5s"},
  };
  for (const auto& [value, want] : cases) {
    const std::string got = format_duration(seconds{value});
    EXPECT_EQ(got, want) << "format_duration(" << value << "): got " << got << ", want " << want;
  }
}

TEST(FormatSize, UsesAUnitOnlyWhenExact) {
  const std::vector<std::pair<std::uint64_t, std::string>> cases{
      {0, "0"},
      {1000, "1000"},
      {1024, "1k"},
      {1536, "1536"},
      {65536, "64k"},
      {10 * 1024 * 1024, "10M"},
      {100 * 1024 * 1024, "100M"},
      {std::uint64_t{1} << 30, "1G"},
      {std::uint64_t{3} << 40, "3T"},
      {uint64_max, std::to_string(uint64_max)},
  };
  for (const auto& [value, want] : cases) {
    const std::string got = format_size(value);
    EXPECT_EQ(got, want) << "format_size(" << value << "): got " << got << ", want " << want;
  }
}

TEST(FormatDuration, RoundTripsThroughParse) {
  for (std::int64_t value :
       {std::int64_t{0}, std::int64_t{59}, std::int64_t{120}, std::int64_t{7200},
        std::int64_t{90000}, std::int64_t{1814400}, int64_max}) {
    const auto back = parse_duration(format_duration(seconds{value}));
    EXPECT_EQ(back, seconds{value}) << "parse_duration(format_duration(" << value << ")): got "
                                    << show(back) << ", want " << value << "s";
  }
}

TEST(FormatSize, RoundTripsThroughParse) {
  for (std::uint64_t value : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{4096},
                              std::uint64_t{5} << 20, (std::uint64_t{7} << 30) + 1, uint64_max}) {
    const auto back = parse_size(format_size(value));
    EXPECT_EQ(back, value) << "parse_size(format_size(" << value << ")): got " << show(back)
                           << ", want " << value;
  }
}

TEST(ParseFlag, KnowsYesNoTrueFalseOnOff) {
  const std::vector<std::pair<std::string, std::optional<bool>>> cases{
      {"yes", true},      {"YES", true},       {"true", true},      {"on", true},
      {"no", false},      {"No", false},       {"false", false},    {"off", false},
      {"", std::nullopt}, {"1", std::nullopt}, {"y", std::nullopt}, {"yes ", std::nullopt},
  };
  for (const auto& [text, want] : cases) {
    const auto got = parse_flag(text);
    EXPECT_EQ(got, want) << "parse_flag(\"" << text << "\"): got "
                         << (got ? (*got ? "true" : "false") : "nullopt") << ", want "
                         << (want ? (*want ? "true" : "false") : "nullopt");
  }
}

struct host_port_case {
  std::string text;
  std::optional<std::pair<std::string, std::uint16_t>> want;
};

TEST(ParseHostPort, NeedsAHostAndAPortFrom1To65535) {
  using hp = std::pair<std::string, std::uint16_t>;
  const std::vector<host_port_case> cases{
      {"127.0.0.1:2525", hp{"127.0.0.1", 2525}},
      {"[::1]:2525", hp{"::1", 2525}},
      {"host.example:25", hp{"host.example", 25}},
      {"0.0.0.0:65535", hp{"0.0.0.0", 65535}},
      {"[::]:1", hp{"::", 1}},
      {"[fe80::1%eth0]:25", hp{"fe80::1%eth0", 25}},
      {"[::ffff:127.0.0.1]:25", hp{"::ffff:127.0.0.1", 25}},
      {"mx-1.example:00025", hp{"mx-1.example", 25}},
      // invalid
      {"", std::nullopt},
      {"127.0.0.1", std::nullopt},
      {"127.0.0.1:", std::nullopt},
      {":25", std::nullopt},
      {"127.0.0.1:0", std::nullopt},
      {"127.0.0.1:65536", std::nullopt},
      {"127.0.0.1:999999", std::nullopt},
      {"127.0.0.1:-1", std::nullopt},
      {"127.0.0.1:+25", std::nullopt},
      {"127.0.0.1:25x", std::nullopt},
      {"127.0.0.1: 25", std::nullopt},
      {"host :25", std::nullopt},
      {"::1:25", std::nullopt},
      {"[::1]", std::nullopt},
      {"[::1]25", std::nullopt},
      {"[::1]:", std::nullopt},
      {"[]:25", std::nullopt},
      {"[::1:25", std::nullopt},
      {"[127.0.0.1]:25", std::nullopt},
      {"[::g]:25", std::nullopt},
      {"a/b:25", std::nullopt},
  };
  for (const auto& c : cases) {
    const auto got = parse_host_port(c.text);
    const auto text_of = [](const auto& v) {
      return v ? v->first + " port " + std::to_string(v->second) : std::string("nullopt");
    };
    EXPECT_EQ(got, c.want) << "parse_host_port(\"" << c.text << "\"): got " << text_of(got)
                           << ", want " << text_of(c.want);
  }
}

}  // namespace
}  // namespace flushgate::core
