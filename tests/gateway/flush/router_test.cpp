// router_test.cpp — route selection and link checks (gateway/flush/router.cpp).
#include "gateway/flush/router.hpp"

#include <gtest/gtest.h>

namespace flushgate::gateway {
namespace {

queue::customer make_customer(std::int64_t id, queue::delivery_mode mode, std::string route) {
  queue::customer c;
  c.id = id;
  c.name = "c" + std::to_string(id);
  c.domains = {"c" + std::to_string(id) + ".test"};
  c.mode = mode;
  c.route = std::move(route);
  c.link_port = 2526;
  c.link_users = {{"c" + std::to_string(id) + "-dsl", queue::link_kind::dsl, ""},
                  {"c" + std::to_string(id) + "-dial", queue::link_kind::dialup, "127.0.0.0/24"}};
  return c;
}

queue::link_record make_link(const queue::customer& c, const std::string& user,
                             queue::link_kind kind, std::string address, std::int64_t since) {
  queue::link_record l;
  l.user = user;
  l.customer_id = c.id;
  l.kind = kind;
  l.address = std::move(address);
  l.since = since;
  l.source = "script";
  return l;
}

TEST(RouterRouteFor, PrimaryRoutesWithoutLinks) {
  router r;
  struct row {
    std::string route;
    route::kind want;
    std::string host;
    std::uint16_t port;
  } rows[] = {
      {"", route::kind::hold, "", 25},
      {"mx", route::kind::mx, "", 25},
      {"mail.c1.test", route::kind::host, "mail.c1.test", 25},
      {"mail.c1.test:2525", route::kind::host, "mail.c1.test", 2525},
      {"[::1]:2525", route::kind::host, "::1", 2525},
  };
  for (const auto& row : rows) {
    auto got = r.route_for(make_customer(1, queue::delivery_mode::relay, row.route));
    EXPECT_EQ(got.k, row.want) << "route \"" << row.route << "\": got " << got.describe();
    EXPECT_EQ(got.host, row.host) << "route \"" << row.route << "\"";
    EXPECT_EQ(got.port, row.port) << "route \"" << row.route << "\"";
  }
}

TEST(RouterRouteFor, OdmrCustomersAreNeverRoutedBySmtp) {
  router r;
  auto c = make_customer(1, queue::delivery_mode::odmr, "mail.c1.test");
  r.link_up(make_link(c, "c1-dsl", queue::link_kind::dsl, "127.0.0.2", 10));
  EXPECT_EQ(r.route_for(c).k, route::kind::odmr) << "got " << r.route_for(c).describe();
}

TEST(RouterRouteFor, LinkBeatsPrimaryRouteAndUsesLinkPort) {
  router r;
  auto c = make_customer(1, queue::delivery_mode::relay, "mail.c1.test");
  r.link_up(make_link(c, "c1-dial", queue::link_kind::dialup, "127.0.0.9", 10));
  auto got = r.route_for(c);
  EXPECT_EQ(got.k, route::kind::link) << "got " << got.describe();
  EXPECT_EQ(got.host, "127.0.0.9");
  EXPECT_EQ(got.port, 2526);
  EXPECT_EQ(got.link_user, "c1-dial");
  EXPECT_EQ(got.describe(), "link c1-dial 127.0.0.9:2526");
}

TEST(RouterRouteFor, DslBeatsDialupEvenWhenOlder) {
  router r;
  auto c = make_customer(1, queue::delivery_mode::hold, "");
  r.link_up(make_link(c, "c1-dsl", queue::link_kind::dsl, "127.0.0.2", 10));
  r.link_up(make_link(c, "c1-dial", queue::link_kind::dialup, "127.0.0.3", 20));
  EXPECT_EQ(r.route_for(c).host, "127.0.0.2") << "got " << r.route_for(c).describe();
  ASSERT_TRUE(r.link_down("c1-dsl", ""));
  EXPECT_EQ(r.route_for(c).host, "127.0.0.3") << "after DSL down, got " << r.route_for(c).describe();
  ASSERT_TRUE(r.link_down("c1-dial", ""));
  EXPECT_EQ(r.route_for(c).k, route::kind::hold) << "after both down, got " << r.route_for(c).describe();
}

TEST(RouterLinkDown, LateStopOfAnOldSessionKeepsTheNewOne) {
  router r;
  auto c = make_customer(1, queue::delivery_mode::relay, "");
  auto first = make_link(c, "c1-dial", queue::link_kind::dialup, "127.0.0.3", 10);
  first.session_id = "S1";
  auto second = first;
  second.session_id = "S2";
  second.address = "127.0.0.4";
  r.link_up(first);
  r.link_up(second);
  EXPECT_FALSE(r.link_down("c1-dial", "S1")) << "a Stop for S1 ended session S2";
  EXPECT_EQ(r.route_for(c).host, "127.0.0.4");
  EXPECT_TRUE(r.link_down("c1-dial", "S2"));
}

TEST(RouterLinkDown, NasResetEndsOnlyThatNasLinks) {
  router r;
  auto c1 = make_customer(1, queue::delivery_mode::relay, "");
  auto c2 = make_customer(2, queue::delivery_mode::relay, "");
  auto a = make_link(c1, "c1-dsl", queue::link_kind::dsl, "127.0.0.2", 1);
  a.nas = "nas1";
  auto b = make_link(c2, "c2-dsl", queue::link_kind::dsl, "127.0.0.3", 1);
  b.nas = "nas2";
  r.link_up(a);
  r.link_up(b);
  auto removed = r.links_down_for_nas("nas1");
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].user, "c1-dsl");
  EXPECT_EQ(r.links().size(), 1u);
}

TEST(RouterCheckLink, RefusesUnknownUsersBadAddressesAndAddressesOutsideTheNet) {
  customer_directory customers;
  customers.upsert(make_customer(1, queue::delivery_mode::relay, ""));
  router r;
  struct row {
    std::string user, address;
    link_refusal want;
  } rows[] = {
      {"c1-dsl", "127.0.0.2", link_refusal::none},
      {"c1-dsl", "::1", link_refusal::none},
      {"c1-dial", "127.0.0.77", link_refusal::none},
      {"c1-dial", "127.0.1.77", link_refusal::outside_allowed_net},
      // Pinned to IPv4 ranges only: an IPv6 address is dropped, nothing is left.
      {"c1-dial", "::1", link_refusal::no_usable_address},
      {"nobody", "127.0.0.2", link_refusal::unknown_user},
      {"c1-dsl", "not-an-ip", link_refusal::bad_address},
      {"c1-dsl", "0.0.0.0", link_refusal::bad_address},
      {"c1-dsl", "255.255.255.255", link_refusal::bad_address},
  };
  for (const auto& row : rows) {
    EXPECT_EQ(r.check_link(customers, row.user, row.address, "", "").refusal, row.want)
        << "user " << row.user << " address " << row.address;
  }
}

queue::link_record dual_stack_link(const queue::customer& c) {
  auto l = make_link(c, "c1-dsl", queue::link_kind::dsl, "127.0.0.2", 10);
  l.ipv6_address = "2001:db8:ff::2";
  l.ipv6_prefix = "2001:db8:0:5600::/56";
  return l;
}

TEST(RouterRouteFor, DualStackLinkTriesIpv6FirstThenIpv4UnlessTheCustomerPrefersIpv4) {
  router r;
  auto c = make_customer(1, queue::delivery_mode::hold, "");
  r.link_up(dual_stack_link(c));
  auto got = r.route_for(c);
  EXPECT_EQ(got.host, "2001:db8:ff::2") << "got " << got.describe();
  EXPECT_EQ(got.fallback, "127.0.0.2") << "got " << got.describe();
  EXPECT_EQ(got.describe(), "link c1-dsl [2001:db8:ff::2]:2526 or 127.0.0.2:2526");
  c.prefer_family = "ipv4";
  got = r.route_for(c);
  EXPECT_EQ(got.host, "127.0.0.2") << "got " << got.describe();
  EXPECT_EQ(got.fallback, "2001:db8:ff::2") << "got " << got.describe();
}

TEST(RouterRouteFor, Ipv6ServerSettingPicksTheAddressOnTheLine) {
  auto c = make_customer(1, queue::delivery_mode::hold, "");
  const auto link = dual_stack_link(c);
  struct row {
    std::string setting;
    std::string want;
  } rows[] = {
      {"", "2001:db8:ff::2"},                    // the line's own address
      {"framed", "2001:db8:ff::2"},
      {"none", ""},
      {"::25", "2001:db8:0:5600::25"},           // an offset inside the /56
      {"::1:0:0:0:25", "2001:db8:0:5601::25"},   // a host in another /64 of it
      {"2001:db8:ffff:ff00::25", "2001:db8:0:5600::25"},  // the network bits are the line's
  };
  for (const auto& row : rows) {
    c.ipv6_server = row.setting;
    EXPECT_EQ(ipv6_server_address(c, link), row.want) << "ipv6_server \"" << row.setting << "\"";
  }
  auto no_prefix = link;
  no_prefix.ipv6_prefix.clear();
  c.ipv6_server = "::25";
  EXPECT_EQ(ipv6_server_address(c, no_prefix), "") << "an offset without a prefix gave an address";
}

TEST(RouterRouteFor, Ipv6OnlyLinkIsARouteUnlessTheCustomerIsIpv4Only) {
  router r;
  auto c = make_customer(1, queue::delivery_mode::relay, "mail.c1.test");
  auto l = make_link(c, "c1-dsl", queue::link_kind::dsl, "", 10);
  l.ipv6_prefix = "2001:db8:0:5600::/56";
  r.link_up(l);
  c.ipv6_server = "::25";
  auto got = r.route_for(c);
  EXPECT_EQ(got.k, route::kind::link) << "got " << got.describe();
  EXPECT_EQ(got.host, "2001:db8:0:5600::25");
  EXPECT_EQ(got.fallback, "");
  c.ipv6_server = "none";
  got = r.route_for(c);
  EXPECT_EQ(got.k, route::kind::host) << "an IPv6-only line of an IPv4-only customer: got " << got.describe();
}

TEST(RouterCheckLink, Ipv6AddressesAndPrefixesMustBeUsableAndInsideTheIpv6Ranges) {
  customer_directory customers;
  auto c = make_customer(1, queue::delivery_mode::relay, "");
  c.link_users = {{"open", queue::link_kind::dsl, ""},
                  {"dual", queue::link_kind::dsl, "127.0.0.0/24,2001:db8::/32"},
                  {"v4only", queue::link_kind::dsl, "127.0.0.0/24"}};
  customers.upsert(c);
  router r;
  struct row {
    std::string user, v4, v6, prefix;
    link_refusal want;
    bool drop_v6 = false;
  } rows[] = {
      {"open", "", "2001:db8::7", "", link_refusal::none},
      {"open", "", "", "2001:db8:0:5600::/56", link_refusal::none},
      {"open", "", "fe80::1", "", link_refusal::bad_address},
      {"open", "", "ff02::1", "", link_refusal::bad_address},
      {"open", "", "::", "", link_refusal::bad_address},
      {"open", "", "", "2001:db8:0:5600::", link_refusal::bad_address},  // no length
      {"open", "", "", "10.0.0.0/8", link_refusal::bad_address},        // not IPv6
      {"open", "", "", "", link_refusal::no_usable_address},
      {"dual", "127.0.0.5", "2001:db8::7", "2001:db8:0:5600::/56", link_refusal::none},
      {"dual", "", "2001:db9::7", "", link_refusal::outside_allowed_net},
      {"dual", "", "", "2001:db9:0:5600::/56", link_refusal::outside_allowed_net},
      {"dual", "", "", "2001:d00::/24", link_refusal::outside_allowed_net},  // wider than the range
      {"dual", "10.0.0.1", "2001:db8::7", "", link_refusal::outside_allowed_net},
      {"v4only", "127.0.0.5", "2001:db8::7", "", link_refusal::none, true},
      {"v4only", "", "", "2001:db8:0:5600::/56", link_refusal::no_usable_address, true},
  };
  for (const auto& row : rows) {
    const auto got = r.check_link(customers, row.user, row.v4, row.v6, row.prefix);
    EXPECT_EQ(got.refusal, row.want) << row.user << " " << row.v4 << " " << row.v6 << " " << row.prefix;
    if (got.refusal == link_refusal::none) {
      EXPECT_EQ(got.drop_ipv6, row.drop_v6) << row.user << " " << row.v6;
    }
  }
}

}  // namespace
}  // namespace flushgate::gateway
