// nas_table_test.cpp — linkmon/nas_table: address and CIDR entries, the most
// specific match, IPv4-mapped sources, and refused configuration.
#include "linkmon/nas_table.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flushgate::linkmon {
namespace {

using boost::asio::ip::make_address;

std::string lookup(const nas_table& t, const std::string& address) {
  const nas_client* c = t.find(make_address(address));
  return c ? c->name + "/" + c->secret : "none";
}

struct lookup_case {
  const char* address;
  const char* want;  // "name/secret" or "none"
};

void expect_lookups(const nas_table& t, const std::vector<lookup_case>& cases) {
  for (const auto& c : cases) {
    EXPECT_EQ(lookup(t, c.address), c.want)
        << c.address << ": got " << lookup(t, c.address) << ", want " << c.want;
  }
}

TEST(NasTable, MostSpecificEntryWins) {
  nas_table t;
  ASSERT_FALSE(t.add("192.0.2.0/24", "s-net", "pool"));
  ASSERT_FALSE(t.add("192.0.2.1", "s-host", "bras-1"));
  ASSERT_FALSE(t.add("192.0.2.128/25", "s-half", "upper"));
  ASSERT_FALSE(t.add("2001:db8::/32", "s-v6", "v6"));
  ASSERT_FALSE(t.add("0.0.0.0/0", "s-any", "any"));
  const std::vector<lookup_case> cases = {
      {"192.0.2.1", "bras-1/s-host"},        {"192.0.2.2", "pool/s-net"},  {"192.0.2.200", "upper/s-half"},
      {"198.51.100.1", "any/s-any"},         {"2001:db8:1::5", "v6/s-v6"}, {"2001:db9::1", "none"},
      {"::ffff:192.0.2.1", "bras-1/s-host"},  // from a dual-stack socket
  };
  expect_lookups(t, cases);
}

TEST(NasTable, Ipv6SourcesMatchIpv6EntriesOnly) {
  nas_table t;
  ASSERT_FALSE(t.add("::1", "s-lo6", "lo6"));
  ASSERT_FALSE(t.add("2001:db8::/32", "s-doc", "doc"));
  ASSERT_FALSE(t.add("fe80::/10", "s-ll", "link-local"));
  ASSERT_FALSE(t.add("127.0.0.1", "s-lo4", "lo4"));
  const std::vector<lookup_case> cases = {
      {"::1", "lo6/s-lo6"},
      {"127.0.0.1", "lo4/s-lo4"},
      {"::ffff:127.0.0.1", "lo4/s-lo4"},
      {"::2", "none"},
      {"::", "none"},
      {"2001:db8:ffff::1", "doc/s-doc"},
      {"fe80::5%1", "link-local/s-ll"},  // a scoped source, as a socket reports it
      {"fec0::1", "none"},
  };
  expect_lookups(t, cases);
}

TEST(NasTable, UnconfiguredSourcesFindNothing) {
  nas_table t;
  EXPECT_EQ(lookup(t, "127.0.0.1"), "none");
  ASSERT_FALSE(t.add("127.0.0.2", "s", "only"));
  EXPECT_EQ(lookup(t, "127.0.0.1"), "none");
  EXPECT_EQ(lookup(t, "127.0.0.2"), "only/s");
  EXPECT_EQ(t.size(), 1u);
}

TEST(NasTable, HostBitsOfACidrEntryAreIgnoredAndMappedEntriesWork) {
  nas_table t;
  ASSERT_FALSE(t.add("10.1.2.3/16", "s", "ten"));
  ASSERT_FALSE(t.add("::ffff:172.16.0.0/108", "m", "mapped"));
  EXPECT_EQ(lookup(t, "10.1.200.9"), "ten/s");
  EXPECT_EQ(lookup(t, "172.16.5.5"), "mapped/m");
  EXPECT_EQ(lookup(t, "172.32.0.1"), "none");  // /108 is 172.16.0.0/12
}

TEST(NasTable, BadEntriesAreRefused) {
  nas_table t;
  for (const char* bad : {"", "bras-1", "192.0.2.1/33", "192.0.2.1/", "192.0.2.1/x", "192.0.2.1/-1",
                          "2001:db8::/129", "192.0.2.256", "::ffff:1.2.3.4/95"}) {
    EXPECT_EQ(t.add(bad, "s", "n"), boost::system::errc::invalid_argument) << "\"" << bad << "\"";
  }
  EXPECT_EQ(t.add("192.0.2.1", "", "no secret"), boost::system::errc::invalid_argument);
  EXPECT_EQ(t.size(), 0u);
}

}  // namespace
}  // namespace flushgate::linkmon
