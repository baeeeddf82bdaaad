// mx_resolver_test.cpp — gateway/dns/mx_resolver against a real nsd on 127.0.0.1
// serving tests/data/dns/mx.test.zone, plus a UDP port that never answers.
#include "gateway/dns/mx_resolver.hpp"

#include "tests/support/nsd_server.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace flushgate::gateway {
namespace {

namespace asio = boost::asio;
using asio::ip::address;
using asio::ip::make_address;
using namespace std::chrono_literals;
using hosts_result = boost::system::result<std::vector<mx_target>>;
using addresses_result = boost::system::result<std::vector<address>>;

// Runs one coroutine to completion on `io`; the io_context must then run out
// of work by itself (a resolver that leaves waits behind fails here).
template <typename T>
std::optional<T> run_task(asio::io_context& io, asio::awaitable<T> task,
                          std::chrono::seconds limit = 20s) {
  std::optional<T> out;
  asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, T value) {
    if (e) std::rethrow_exception(e);
    out = std::move(value);
  });
  io.run_for(limit);
  io.restart();
  return out;
}

std::string describe(const hosts_result& r) {
  if (!r) return "error " + r.error().message();
  std::string s;
  for (const auto& t : r.value()) {
    s += (s.empty() ? "" : ", ") + std::to_string(t.preference) + " " + t.host + " [";
    for (std::size_t i = 0; i < t.addresses.size(); ++i) {
      s += (i ? " " : "") + t.addresses[i].to_string();
    }
    s += "]";
  }
  return "{" + s + "}";
}

std::string describe(const addresses_result& r) {
  if (!r) return "error " + r.error().message();
  std::string s;
  for (const auto& a : r.value()) s += (s.empty() ? "" : " ") + a.to_string();
  return "[" + s + "]";
}

std::vector<std::string> host_names(const hosts_result& r) {
  std::vector<std::string> names;
  if (r) {
    for (const auto& t : r.value()) names.push_back(t.host);
  }
  return names;
}

class MxResolverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::nsd_server::available()) return;
    nsd_ = std::make_unique<test::nsd_server>(std::vector<test::nsd_zone>{
        {"mx.test",
         test::read_text_file(FLUSHGATE_SOURCE_DIR "/tests/data/dns/mx.test.zone")},
        // Reverse names for reverse_name(): 11 confirms (a.mx.test is
        // 127.0.0.11), 12 names a host that is another address, 13 has none.
        {"0.0.127.in-addr.arpa",
         "$ORIGIN 0.0.127.in-addr.arpa.\n$TTL 300\n"
         "@  IN SOA ns.mx.test. hostmaster.mx.test. 1 3600 900 604800 300\n"
         "@  IN NS  ns.mx.test.\n"
         "11 IN PTR A.mx.test.\n"
         "12 IN PTR a.mx.test.\n"}});
  }
  static void TearDownTestSuite() { nsd_.reset(); }

  void SetUp() override {
    if (!nsd_) {
      GTEST_SKIP() << test::nsd_server::nsd_path
                   << " is not installed: MX resolution is tested only against a real nsd";
    }
  }

  static mx_options nsd_options() {
    mx_options o;
    o.servers = {nsd_->address()};
    o.timeout = 2000ms;
    o.tries = 2;
    o.shuffle_seed = 20261122;
    return o;
  }

  hosts_result resolve(const std::string& domain, const mx_options& o = nsd_options()) {
    mx_resolver resolver(io_.get_executor(), o);
    auto r = run_task(io_, resolver.resolve(domain));
    if (!r) return boost::system::error_code(ETIMEDOUT, boost::system::generic_category());
    return *r;
  }

  addresses_result resolve_host(const std::string& host, const mx_options& o = nsd_options()) {
    mx_resolver resolver(io_.get_executor(), o);
    auto r = run_task(io_, resolver.resolve_host(host));
    if (!r) return boost::system::error_code(ETIMEDOUT, boost::system::generic_category());
    return *r;
  }

  std::string reverse_name(const std::string& client, const mx_options& o = nsd_options()) {
    mx_resolver resolver(io_.get_executor(), o);
    auto r = run_task(io_, resolver.reverse_name(make_address(client)));
    return r ? *r : std::string("(no completion)");
  }

  static std::unique_ptr<test::nsd_server> nsd_;
  asio::io_context io_;
};

std::unique_ptr<test::nsd_server> MxResolverTest::nsd_;

void expect_error(const hosts_result& r, mx_errc want) {
  ASSERT_FALSE(r.has_value()) << "got " << describe(r) << ", want error "
                              << make_error_code(want).message();
  EXPECT_EQ(r.error(), make_error_code(want))
      << "got " << r.error().message() << ", want " << make_error_code(want).message();
}

TEST(MxErrc, HasItsOwnCategory) {
  const boost::system::error_code ec = mx_errc::null_mx;
  EXPECT_STREQ(ec.category().name(), "flushgate.mx");
  EXPECT_EQ(ec, make_error_code(mx_errc::null_mx));
  EXPECT_NE(ec.message(), make_error_code(mx_errc::temporary).message());
}

TEST_F(MxResolverTest, EqualPreferencesAreShuffled) {
  mx_resolver resolver(io_.get_executor(), nsd_options());
  std::map<std::string, int> first;
  std::string bad;
  auto many = [&]() -> asio::awaitable<int> {
    for (int i = 0; i < 200; ++i) {
      auto r = co_await resolver.resolve("equal.mx.test");
      if (!r || r->size() != 2 || (*r)[0].preference != 10 || (*r)[1].preference != 10) {
        bad = describe(r);
        co_return i;
      }
      ++first[(*r)[0].host];
    }
    co_return 200;
  };
  const auto done = run_task(io_, many());
  ASSERT_TRUE(done.has_value()) << "got no completion, want 200 resolutions";
  ASSERT_EQ(*done, 200) << "got " << bad << ", want {10 a.mx.test, 10 b.mx.test} in some order";
  EXPECT_GT(first["a.mx.test"], 0) << "got a.mx.test first 0 times in 200, want both orders";
  EXPECT_GT(first["b.mx.test"], 0) << "got b.mx.test first 0 times in 200, want both orders";
}

TEST_F(MxResolverTest, UnequalPreferencesNeverChangeOrder) {
  mx_resolver resolver(io_.get_executor(), nsd_options());
  std::set<std::vector<std::string>> unequal_orders;
  std::set<std::vector<std::string>> mixed_orders;
  auto many = [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 200; ++i) {
      unequal_orders.insert(host_names(co_await resolver.resolve("unequal.mx.test")));
      mixed_orders.insert(host_names(co_await resolver.resolve("mixed.mx.test")));
    }
  };
  asio::co_spawn(io_, many(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io_.run_for(20s);
  const std::set<std::vector<std::string>> want_unequal = {{"a.mx.test", "b.mx.test"}};
  EXPECT_EQ(unequal_orders, want_unequal) << "got " << unequal_orders.size()
                                          << " orders, want only 10 a, 20 b";
  // 5 c always first, 20 d always last, the two 10s in both orders.
  const std::set<std::vector<std::string>> want_mixed = {
      {"c.mx.test", "a.mx.test", "b.mx.test", "d.mx.test"},
      {"c.mx.test", "b.mx.test", "a.mx.test", "d.mx.test"}};
  EXPECT_EQ(mixed_orders, want_mixed) << "got " << mixed_orders.size() << " orders, want 2";
}

TEST_F(MxResolverTest, TargetsCarryPreferenceAndAddresses) {
  const auto r = resolve("unequal.mx.test");
  ASSERT_TRUE(r.has_value()) << "got " << describe(r) << ", want two hosts";
  ASSERT_EQ(r->size(), 2u) << "got " << describe(r);
  EXPECT_EQ((*r)[0].preference, 10);
  EXPECT_EQ((*r)[0].addresses, std::vector<address>{make_address("127.0.0.11")}) << describe(r);
  EXPECT_EQ((*r)[1].preference, 20);
  EXPECT_EQ((*r)[1].addresses, std::vector<address>{make_address("127.0.0.12")}) << describe(r);
}

TEST_F(MxResolverTest, MxPointingAtCnameIsFollowed) {
  const auto r = resolve("tocname.mx.test");
  ASSERT_TRUE(r.has_value()) << "got " << describe(r) << ", want alias.mx.test [127.0.0.30]";
  ASSERT_EQ(r->size(), 1u) << "got " << describe(r);
  EXPECT_EQ((*r)[0].host, "alias.mx.test") << "got " << describe(r);
  EXPECT_EQ((*r)[0].addresses, std::vector<address>{make_address("127.0.0.30")})
      << "got " << describe(r);
}

TEST_F(MxResolverTest, DomainThatIsCnameIsFollowed) {
  const auto r = resolve("cnamedom.mx.test");
  auto names = host_names(r);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a.mx.test", "b.mx.test"})) << "got " << describe(r);
}

TEST_F(MxResolverTest, HostAddressesKeepResolverOrder) {
  // The zone lists .22 before .21; sorting would swap them.
  const auto r = resolve("multimx.mx.test");
  ASSERT_TRUE(r.has_value() && r->size() == 1) << "got " << describe(r);
  const std::vector<address> want = {make_address("127.0.0.22"), make_address("127.0.0.21")};
  EXPECT_EQ((*r)[0].addresses, want) << "got " << describe(r) << ", want [127.0.0.22 127.0.0.21]";
}

TEST_F(MxResolverTest, DomainWithOnlyAddressIsImplicitMx) {
  const auto r = resolve("implicit.mx.test");
  ASSERT_TRUE(r.has_value() && r->size() == 1) << "got " << describe(r);
  EXPECT_EQ((*r)[0].host, "implicit.mx.test");
  EXPECT_EQ((*r)[0].preference, 0);
  EXPECT_EQ((*r)[0].addresses, std::vector<address>{make_address("127.0.0.50")})
      << "got " << describe(r);
}

TEST_F(MxResolverTest, DomainWithoutMxOrAddressHasNoUsableHosts) {
  expect_error(resolve("bare.mx.test"), mx_errc::no_usable_hosts);
}

TEST_F(MxResolverTest, NullMxMeansNoMail) { expect_error(resolve("nullmx.mx.test"), mx_errc::null_mx); }

TEST_F(MxResolverTest, UnresolvableTargetIsDropped) {
  const auto r = resolve("partial.mx.test");
  ASSERT_TRUE(r.has_value() && r->size() == 1) << "got " << describe(r) << ", want {20 c}";
  EXPECT_EQ((*r)[0].host, "c.mx.test") << "got " << describe(r);
  EXPECT_EQ((*r)[0].preference, 20);
}

TEST_F(MxResolverTest, OnlyUnresolvableTargetHasNoUsableHosts) {
  expect_error(resolve("dangling.mx.test"), mx_errc::no_usable_hosts);
}

TEST_F(MxResolverTest, MissingDomainIsNxdomain) {
  expect_error(resolve("missing.mx.test"), mx_errc::nxdomain);
}

TEST_F(MxResolverTest, ImpossibleNamesAreNxdomainWithoutQuery) {
  for (const char* name : {"", ".", "a..mx.test", "[127.0.0.1]", "spa ce.mx.test"}) {
    expect_error(resolve(name), mx_errc::nxdomain);
  }
  expect_error(resolve(std::string(64, 'x') + ".mx.test"), mx_errc::nxdomain);
}

TEST_F(MxResolverTest, NamesAreCaseInsensitiveAndMayEndInDot) {
  const auto r = resolve("UnEqual.MX.Test.");
  EXPECT_EQ(host_names(r), (std::vector<std::string>{"a.mx.test", "b.mx.test"}))
      << "got " << describe(r);
}

TEST_F(MxResolverTest, RefusedQueryIsTemporary) {
  // nsd is not authoritative for example.org and answers REFUSED.
  expect_error(resolve("example.org"), mx_errc::temporary);
}

TEST_F(MxResolverTest, ReverseNameIsForwardConfirmed) {
  EXPECT_EQ(reverse_name("127.0.0.11"), "a.mx.test") << "PTR whose name resolves back";
  EXPECT_EQ(reverse_name("::ffff:127.0.0.11"), "a.mx.test") << "a v4-mapped client";
  EXPECT_EQ(reverse_name("127.0.0.12"), unavailable_name) << "PTR naming another address";
  EXPECT_EQ(reverse_name("127.0.0.13"), unavailable_name) << "no PTR";
  // nsd is not authoritative for 1.0.0.10.in-addr.arpa: REFUSED, temporary.
  EXPECT_EQ(reverse_name("10.0.0.1"), tempunavail_name);
}

TEST_F(MxResolverTest, SelfNameDropsItsLevelAndWorse) {
  auto o = nsd_options();
  o.self_names = {"gw.mx.test"};
  const auto r = resolve("selfmid.mx.test", o);
  EXPECT_EQ(host_names(r), std::vector<std::string>{"a.mx.test"})
      << "got " << describe(r) << ", want only {5 a.mx.test}";
}

TEST_F(MxResolverTest, SelfNameMatchesCaseInsensitively) {
  auto o = nsd_options();
  o.self_names = {"GW.mx.test."};
  EXPECT_EQ(host_names(resolve("selfmid.mx.test", o)), std::vector<std::string>{"a.mx.test"});
}

TEST_F(MxResolverTest, SelfAddressDropsItsLevelAndWorse) {
  auto o = nsd_options();
  o.self_addresses = {make_address("127.0.0.40")};
  const auto r = resolve("selfmid.mx.test", o);
  EXPECT_EQ(host_names(r), std::vector<std::string>{"a.mx.test"})
      << "got " << describe(r) << ", want only {5 a.mx.test}";
}

TEST_F(MxResolverTest, SelfAtBestPreferenceIsSelfOnly) {
  auto o = nsd_options();
  o.self_names = {"gw.mx.test"};
  expect_error(resolve("selfbest.mx.test", o), mx_errc::self_only);
  auto by_address = nsd_options();
  by_address.self_addresses = {make_address("127.0.0.40")};
  expect_error(resolve("selfbest.mx.test", by_address), mx_errc::self_only);
}

TEST_F(MxResolverTest, SelfNetworkDropsItsLevelAndWorse) {
  auto o = nsd_options();
  o.self_networks = {*flushgate::core::parse_ip_network("127.0.1.0/24")};
  const auto r = resolve("selfnat.mx.test", o);
  EXPECT_EQ(host_names(r), std::vector<std::string>{"a.mx.test"})
      << "got " << describe(r) << ", want only {5 a.mx.test}";
  auto v6 = nsd_options();
  v6.self_networks = {*flushgate::core::parse_ip_network("2001:db8:25::/48")};
  const auto r6 = resolve("selfnat6.mx.test", v6);
  EXPECT_EQ(host_names(r6), std::vector<std::string>{"c.mx.test"})
      << "got " << describe(r6) << ", want only {5 c.mx.test}";
}

TEST_F(MxResolverTest, SelfNetworkAtBestPreferenceIsSelfOnly) {
  auto o = nsd_options();
  o.self_networks = {*flushgate::core::parse_ip_network("127.0.1.25")};
  expect_error(resolve("natbest.mx.test", o), mx_errc::self_only);
}

TEST_F(MxResolverTest, AddressOutsideSelfNetworksIsAnotherHost) {
  auto o = nsd_options();
  o.self_networks = {*flushgate::core::parse_ip_network("127.0.2.0/24"),
                     *flushgate::core::parse_ip_network("2001:db8:26::/48")};
  const auto r = resolve("selfnat.mx.test", o);
  EXPECT_EQ(host_names(r), (std::vector<std::string>{"a.mx.test", "natgw.mx.test", "b.mx.test"}))
      << "got " << describe(r) << ", want all three hosts";
}

TEST_F(MxResolverTest, SelfAsImplicitMxIsSelfOnly) {
  auto o = nsd_options();
  o.self_names = {"implicit.mx.test"};
  expect_error(resolve("implicit.mx.test", o), mx_errc::self_only);
}

TEST_F(MxResolverTest, MxRecordsAreCapped) {
  auto o = nsd_options();
  o.max_mx_records = 1;
  EXPECT_EQ(host_names(resolve("mixed.mx.test", o)), std::vector<std::string>{"c.mx.test"});
}

TEST_F(MxResolverTest, AddressesPerHostAreCapped) {
  auto o = nsd_options();
  o.max_addresses_per_host = 1;
  const auto r = resolve("multimx.mx.test", o);
  ASSERT_TRUE(r.has_value() && r->size() == 1) << "got " << describe(r);
  EXPECT_EQ((*r)[0].addresses, std::vector<address>{make_address("127.0.0.22")})
      << "got " << describe(r);
}

TEST_F(MxResolverTest, LargeAnswerOverTcpIsCappedToBestFifty) {
  // 60 MX records do not fit in 512 octets: nsd truncates, c-ares asks again
  // over TCP (the write-readiness path), and only the best 50 are kept.
  const auto r = resolve("many.mx.test");
  ASSERT_TRUE(r.has_value()) << "got " << describe(r) << ", want 50 hosts";
  ASSERT_EQ(r->size(), 50u) << "got " << r->size() << " hosts, want 50";
  for (std::size_t i = 0; i < r->size(); ++i) {
    const auto& t = (*r)[i];
    EXPECT_EQ(t.preference, static_cast<int>(i) + 1) << "got " << t.host << " at position " << i;
    EXPECT_EQ(t.addresses, std::vector<address>{make_address("127.0.0.60")}) << t.host;
  }
}

TEST_F(MxResolverTest, AddressFamiliesComeInConfiguredOrder) {
  const std::vector<address> v4_first = {make_address("127.0.0.71"), make_address("::1")};
  const auto r = resolve_host("dual.mx.test");
  EXPECT_TRUE(r.has_value() && *r == v4_first) << "got " << describe(r) << ", want [127.0.0.71 ::1]";
  auto o = nsd_options();
  o.prefer_ipv6 = true;
  const std::vector<address> v6_first = {make_address("::1"), make_address("127.0.0.71")};
  const auto r6 = resolve_host("dual.mx.test", o);
  EXPECT_TRUE(r6.has_value() && *r6 == v6_first) << "got " << describe(r6) << ", want [::1 127.0.0.71]";
}

TEST_F(MxResolverTest, ConcurrentResolutionsAllComplete) {
  mx_resolver resolver(io_.get_executor(), nsd_options());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"unequal.mx.test", "{10 a.mx.test [127.0.0.11], 20 b.mx.test [127.0.0.12]}"},
      {"implicit.mx.test", "{0 implicit.mx.test [127.0.0.50]}"},
      {"nullmx.mx.test", "error domain accepts no mail (null MX)"},
      {"missing.mx.test", "error domain does not exist"},
      {"partial.mx.test", "{20 c.mx.test [127.0.0.13]}"},
      {"multimx.mx.test", "{10 multi.mx.test [127.0.0.22 127.0.0.21]}"},
  };
  std::vector<std::string> got(cases.size() * 5);
  for (std::size_t i = 0; i < got.size(); ++i) {
    asio::co_spawn(
        io_,
        [&, i]() -> asio::awaitable<void> {
          got[i] = describe(co_await resolver.resolve(cases[i % cases.size()].first));
        },
        [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
        });
  }
  io_.run_for(20s);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], cases[i % cases.size()].second) << "for " << cases[i % cases.size()].first;
  }
}

TEST_F(MxResolverTest, ResolveHostKeepsResolverOrder) {
  const auto r = resolve_host("multi.mx.test");
  const std::vector<address> want = {make_address("127.0.0.22"), make_address("127.0.0.21")};
  ASSERT_TRUE(r.has_value()) << "got " << describe(r);
  EXPECT_EQ(*r, want) << "got " << describe(r) << ", want [127.0.0.22 127.0.0.21]";
}

TEST_F(MxResolverTest, ResolveHostFollowsCname) {
  const auto r = resolve_host("alias.mx.test");
  ASSERT_TRUE(r.has_value()) << "got " << describe(r);
  EXPECT_EQ(*r, std::vector<address>{make_address("127.0.0.30")}) << "got " << describe(r);
}

TEST_F(MxResolverTest, ResolveHostErrors) {
  const auto missing = resolve_host("missing.mx.test");
  EXPECT_EQ(missing.has_value() ? boost::system::error_code() : missing.error(),
            make_error_code(mx_errc::nxdomain))
      << "got " << describe(missing);
  const auto bare = resolve_host("bare.mx.test");
  EXPECT_EQ(bare.has_value() ? boost::system::error_code() : bare.error(),
            make_error_code(mx_errc::no_usable_hosts))
      << "got " << describe(bare);
}

// A UDP socket on 127.0.0.1 that is bound (so no ICMP "port unreachable")
// but never read: every query to it times out.
class silent_dns_server {
 public:
  explicit silent_dns_server(asio::io_context& io)
      : socket_(io, asio::ip::udp::endpoint(make_address("127.0.0.1"), 0)) {}
  std::string address() const {
    return "127.0.0.1:" + std::to_string(socket_.local_endpoint().port());
  }
  // Resolver options that ask only this server, each try cut off after 200ms.
  mx_options options(int tries) const {
    mx_options o;
    o.servers = {address()};
    o.timeout = 200ms;
    o.tries = tries;
    return o;
  }

 private:
  asio::ip::udp::socket socket_;
};

TEST(MxResolverTimeout, SilentServerIsTemporaryWithinTimeout) {
  asio::io_context io;
  silent_dns_server silent(io);
  const mx_options o = silent.options(2);
  const auto bound = o.timeout * o.tries;  // one server
  mx_resolver resolver(io.get_executor(), o);
  const auto start = std::chrono::steady_clock::now();
  std::optional<hosts_result> r;
  std::chrono::milliseconds elapsed{0};
  asio::co_spawn(io, resolver.resolve("mx.test"), [&](std::exception_ptr e, hosts_result got) {
    if (e) std::rethrow_exception(e);
    // Measured at completion: c-ares's own retry may linger a little longer.
    elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    r = std::move(got);
  });
  io.run_for(20s);
  RecordProperty("elapsed_ms", static_cast<int>(elapsed.count()));
  ASSERT_TRUE(r.has_value()) << "got no completion after " << elapsed.count() << "ms";
  expect_error(*r, mx_errc::temporary);
  // It really waited (no instant failure) and gave up at its own bound
  // (c-ares alone would wait 200 + 400 ms); the slack absorbs a busy machine.
  EXPECT_GE(elapsed, o.timeout) << "got " << elapsed.count() << "ms";
  EXPECT_LE(elapsed, bound + 1500ms) << "got " << elapsed.count() << "ms, want about "
                                     << bound.count() << "ms";
}

TEST(MxResolverTimeout, SilentServerGivesTempunavailReverseName) {
  asio::io_context io;
  silent_dns_server silent(io);
  mx_resolver resolver(io.get_executor(), silent.options(1));
  std::optional<std::string> name;
  asio::co_spawn(io, resolver.reverse_name(make_address("127.0.0.9")),
                 [&](std::exception_ptr e, std::string got) {
                   if (e) std::rethrow_exception(e);
                   name = std::move(got);
                 });
  io.run_for(20s);
  ASSERT_TRUE(name.has_value()) << "got no completion";
  EXPECT_EQ(*name, tempunavail_name);
}

TEST(MxResolverTimeout, LoopbackClientIsNotAskedOfTheSystemsResolver) {
  asio::io_context io;
  mx_resolver resolver(io.get_executor(), mx_options{});  // no servers: resolv.conf's
  std::optional<std::string> name;
  asio::co_spawn(io, resolver.reverse_name(make_address("127.0.0.9")),
                 [&](std::exception_ptr e, std::string got) {
                   if (e) std::rethrow_exception(e);
                   name = std::move(got);
                 });
  io.poll();  // no waiting: only an answer given without a query is there now
  ASSERT_TRUE(name.has_value()) << "got no answer without waiting, want unavailable_name without a query";
  EXPECT_EQ(*name, unavailable_name);
}

TEST(MxResolverTimeout, ResolveHostReturnsLiteralsWithoutQuery) {
  // Any query to the silent server would end in `temporary`.
  asio::io_context io;
  silent_dns_server silent(io);
  mx_options o;
  o.servers = {silent.address()};
  o.timeout = 200ms;
  mx_resolver resolver(io.get_executor(), o);
  for (const auto& [literal, want] : std::vector<std::pair<std::string, std::string>>{
           {"127.0.0.99", "127.0.0.99"}, {"::1", "::1"}, {"[::1]", "::1"}}) {
    const auto r = run_task(io, resolver.resolve_host(literal));
    ASSERT_TRUE(r.has_value()) << "got no completion for " << literal;
    EXPECT_EQ(describe(*r), "[" + want + "]") << "for " << literal;
  }
}

TEST(MxResolverTimeout, DestroyingResolverCompletesPendingCalls) {
  asio::io_context io;
  silent_dns_server silent(io);
  mx_options o;
  o.servers = {silent.address()};
  o.timeout = 5000ms;
  auto resolver = std::make_unique<mx_resolver>(io.get_executor(), o);
  std::optional<hosts_result> got;
  asio::co_spawn(io, resolver->resolve("mx.test"), [&](std::exception_ptr e, hosts_result r) {
    if (e) std::rethrow_exception(e);
    got = std::move(r);
  });
  // Once the query is in flight (the coroutine has run), destroy the resolver.
  asio::post(io, [&] { asio::post(io, [&] { resolver.reset(); }); });
  const auto start = std::chrono::steady_clock::now();
  io.run_for(20s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(got.has_value()) << "got no completion, want temporary";
  expect_error(*got, mx_errc::temporary);
  EXPECT_LT(elapsed, o.timeout) << "got a wait for the timeout, want completion at destruction";
}

TEST(MxResolverOptions, BadServerListThrows) {
  asio::io_context io;
  mx_options o;
  o.servers = {"not an address"};
  EXPECT_THROW(mx_resolver(io.get_executor(), o), std::invalid_argument);
}

}  // namespace
}  // namespace flushgate::gateway
