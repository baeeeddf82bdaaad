// ip_network_test.cpp — tests core/ip_network.cpp: CIDR parsing and matching.
#include "core/ip_network.hpp"

#include <gtest/gtest.h>

namespace flushgate::core {
namespace {

using boost::asio::ip::make_address;

TEST(IpNetwork, ParsesAndMasks) {
  const struct {
    const char* text;
    const char* want;  // nullptr: refused
  } cases[] = {
      {"192.0.2.77/24", "192.0.2.0/24"},
      {"192.0.2.77", "192.0.2.77/32"},
      {"10.1.2.3/0", "0.0.0.0/0"},
      {"192.0.2.1/31", "192.0.2.0/31"},
      {"2001:db8:25::25/48", "2001:db8:25::/48"},
      {"2001:db8::1", "2001:db8::1/128"},
      {"::ffff:192.0.2.9", "192.0.2.9/32"},
      {"192.0.2.0/33", nullptr},
      {"2001:db8::/129", nullptr},
      {"192.0.2.0/", nullptr},
      {"192.0.2.0/-1", nullptr},
      {"192.0.2.0/24 ", nullptr},
      {"gw.example", nullptr},
      {"", nullptr},
  };
  for (const auto& c : cases) {
    const auto n = parse_ip_network(c.text);
    if (c.want == nullptr) {
      EXPECT_FALSE(n.has_value()) << c.text << ": got " << n->to_string() << ", want refused";
    } else {
      ASSERT_TRUE(n.has_value()) << c.text << ": got refused, want " << c.want;
      EXPECT_EQ(n->to_string(), c.want) << "for " << c.text;
    }
  }
}

TEST(IpNetwork, ContainsOnlyItsOwnFamilyAndRange) {
  const auto v4 = *parse_ip_network("203.0.113.0/25");
  EXPECT_TRUE(v4.contains(make_address("203.0.113.0")));
  EXPECT_TRUE(v4.contains(make_address("203.0.113.127")));
  EXPECT_FALSE(v4.contains(make_address("203.0.113.128")));
  EXPECT_TRUE(v4.contains(make_address("::ffff:203.0.113.5"))) << "got a v4-mapped address outside, want inside";
  EXPECT_FALSE(v4.contains(make_address("2001:db8::1")));
  const auto v6 = *parse_ip_network("2001:db8:25::/47");
  EXPECT_TRUE(v6.contains(make_address("2001:db8:25:ffff::1")));
  EXPECT_TRUE(v6.contains(make_address("2001:db8:24::1")));
  EXPECT_FALSE(v6.contains(make_address("2001:db8:26::1")));
  EXPECT_FALSE(v6.contains(make_address("203.0.113.5")));
  EXPECT_TRUE(host_network(make_address("::ffff:192.0.2.1")).contains(make_address("192.0.2.1")));
}

}  // namespace
}  // namespace flushgate::core
