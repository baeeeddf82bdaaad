// dns_doctor_test.cpp — gateway/dns/dns_doctor against a real nsd on 127.0.0.1
// serving tests/data/dns/doctor/doctor.test.zone (one subdomain per mistake),
// plus a UDP port that never answers.
#include "gateway/dns/dns_doctor.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/nsd_server.hpp"

namespace flushgate::gateway {
namespace {

namespace asio = boost::asio;
using asio::ip::make_address;
using queue::customer_state;
using queue::delivery_mode;
using namespace std::chrono_literals;

// Runs the diagnosis to completion on `io`; the io_context must then run out
// of work by itself (a diagnosis that leaves waits behind fails here).
std::optional<doctor_report> run_diagnosis(asio::io_context& io, mx_options o,
                                           const std::string& domain,
                                           std::optional<doctor_customer> c) {
  std::optional<doctor_report> out;
  auto task = diagnose_domain(io.get_executor(), std::move(o), domain, std::move(c));
  asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, doctor_report r) {
    if (e) std::rethrow_exception(e);
    out = std::move(r);
  });
  io.run_for(30s);
  EXPECT_TRUE(io.stopped()) << "got work left on the io_context after diagnosing " << domain
                            << ", want none";
  io.restart();
  return out;
}

doctor_customer customer(delivery_mode mode, bool recipient_list = true,
                         customer_state state = customer_state::enabled,
                         std::string route = "mail.healthy.doctor.test") {
  return {"acme", state, mode, std::move(route), recipient_list};
}

std::string codes(const doctor_report& r) {
  std::string s;
  for (const auto& f : r.findings) {
    s += (s.empty() ? "" : " ") + std::string(to_string(f.level)) + ":" + f.code;
  }
  return "{" + s + "}";
}

const doctor_finding* find(const doctor_report& r, const std::string& code) {
  const auto it = std::find_if(r.findings.begin(), r.findings.end(),
                               [&](const doctor_finding& f) { return f.code == code; });
  return it == r.findings.end() ? nullptr : &*it;
}

void expect_finding(const doctor_report& r, doctor_level level, const std::string& code) {
  const doctor_finding* f = find(r, code);
  ASSERT_NE(f, nullptr) << "got " << codes(r) << ", want " << to_string(level) << ":" << code
                        << "\n"
                        << format_report(r);
  EXPECT_EQ(f->level, level) << "got " << to_string(f->level) << ":" << code << ", want "
                             << to_string(level) << ":" << code;
  EXPECT_FALSE(f->text.empty()) << "got an empty text for " << code;
}

void expect_no_finding(const doctor_report& r, const std::string& code) {
  EXPECT_EQ(find(r, code), nullptr) << "got " << codes(r) << ", want no " << code;
}

void expect_no_problem(const doctor_report& r) {
  EXPECT_LE(static_cast<int>(worst_level(r)), static_cast<int>(doctor_level::note))
      << "got " << codes(r) << ", want only ok and notes\n"
      << format_report(r);
}

class DnsDoctorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::nsd_server::available()) return;
    nsd_ = std::make_unique<test::nsd_server>(std::vector<test::nsd_zone>{
        {"doctor.test",
         test::read_text_file(FLUSHGATE_SOURCE_DIR "/tests/data/dns/doctor/doctor.test.zone")}});
  }
  static void TearDownTestSuite() { nsd_.reset(); }

  void SetUp() override {
    if (!nsd_) {
      GTEST_SKIP() << test::nsd_server::nsd_path
                   << " is not installed: the DNS doctor is tested only against a real nsd";
    }
  }

  static mx_options nsd_options() {
    mx_options o;
    o.servers = {nsd_->address()};
    o.self_names = {"gw.doctor.test"};
    o.self_addresses = {make_address("127.0.0.40")};
    o.timeout = 2000ms;
    o.tries = 2;
    return o;
  }

  doctor_report diagnose(const std::string& domain, std::optional<doctor_customer> c) {
    auto r = run_diagnosis(io_, nsd_options(), domain, std::move(c));
    if (!r) {
      ADD_FAILURE() << "got no report for " << domain << " within 30 s, want one";
      return {};
    }
    return *r;
  }

  static std::unique_ptr<test::nsd_server> nsd_;
  asio::io_context io_;
};

std::unique_ptr<test::nsd_server> DnsDoctorTest::nsd_;

TEST(DoctorLevel, HasStableNames) {
  EXPECT_EQ(to_string(doctor_level::ok), "ok");
  EXPECT_EQ(to_string(doctor_level::note), "note");
  EXPECT_EQ(to_string(doctor_level::warning), "warning");
  EXPECT_EQ(to_string(doctor_level::error), "error");
}

TEST(DoctorCustomer, CopiesWhatTheDoctorReads) {
  queue::customer c;
  c.name = "acme";
  c.state = customer_state::suspended;
  c.mode = delivery_mode::odmr;
  c.route = "mx";
  c.recipients = std::vector<std::string>{"a@acme.test"};
  const doctor_customer d = make_doctor_customer(c);
  EXPECT_EQ(d.name, "acme");
  EXPECT_EQ(d.state, customer_state::suspended);
  EXPECT_EQ(d.mode, delivery_mode::odmr);
  EXPECT_EQ(d.route, "mx");
  EXPECT_TRUE(d.has_recipient_list);
}

TEST_F(DnsDoctorTest, HealthyDomainGetsOnlyOkAndNotes) {
  const auto r = diagnose("Healthy.Doctor.Test.", customer(delivery_mode::relay));
  EXPECT_EQ(r.domain, "healthy.doctor.test");
  expect_no_problem(r);
  expect_finding(r, doctor_level::ok, "mx-hosts-ok");
  expect_finding(r, doctor_level::ok, "gateway-backup-mx");
  const std::vector<std::string> want{"10 mail.healthy.doctor.test. (127.0.0.11, ::1)",
                                      "20 gw.doctor.test. (127.0.0.40; this gateway)"};
  EXPECT_EQ(r.mx_lines, want) << "got\n" << format_report(r);
}

TEST_F(DnsDoctorTest, MxPointingAtCnameIsWarning) {
  const auto r = diagnose("cname.doctor.test", std::nullopt);
  expect_finding(r, doctor_level::warning, "mx-is-cname");
  const doctor_finding* f = find(r, "mx-is-cname");
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->text.find("real.cname.doctor.test"), std::string::npos)
      << "got \"" << f->text << "\", want the alias target named";
  expect_no_finding(r, "mx-host-no-address");
}

TEST_F(DnsDoctorTest, MxNamingAnIpAddressIsError) {
  const auto absolute = diagnose("ipmx.doctor.test", std::nullopt);
  expect_finding(absolute, doctor_level::error, "mx-is-ip-address");
  expect_no_finding(absolute, "mx-host-no-address");
  expect_no_finding(absolute, "mx-host-lookup-failed");

  const auto relative = diagnose("iprel.doctor.test", std::nullopt);
  expect_finding(relative, doctor_level::error, "mx-is-ip-address");
  const doctor_finding* f = find(relative, "mx-is-ip-address");
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->text.find("192.0.2.1.doctor.test"), std::string::npos)
      << "got \"" << f->text << "\", want the record as found";
}

TEST_F(DnsDoctorTest, HostNameStartingWithNumbersIsNoIpAddress) {
  const auto r = diagnose("numeric.doctor.test", std::nullopt);
  expect_no_finding(r, "mx-is-ip-address");
  expect_finding(r, doctor_level::ok, "mx-hosts-ok");
}

TEST_F(DnsDoctorTest, MxTargetThatIsNoHostNameIsError) {
  expect_finding(diagnose("badname.doctor.test", std::nullopt), doctor_level::error, "mx-bad-name");
}

TEST_F(DnsDoctorTest, MxHostWithoutAddressIsError) {
  const auto r = diagnose("noaddr.doctor.test", std::nullopt);
  expect_finding(r, doctor_level::error, "mx-host-no-address");
  const auto n = std::count_if(r.findings.begin(), r.findings.end(), [](const doctor_finding& f) {
    return f.code == "mx-host-no-address";
  });
  EXPECT_EQ(n, 2) << "got " << codes(r) << ", want mx-host-no-address for both hosts";
  expect_no_finding(r, "mx-hosts-ok");
}

TEST_F(DnsDoctorTest, NoMxAndNoAddressIsError) {
  expect_finding(diagnose("nomail.doctor.test", std::nullopt), doctor_level::error,
                 "no-mx-no-address");
}

TEST_F(DnsDoctorTest, NoMxButAnAddressIsImplicitMxNote) {
  const auto r = diagnose("implicit.doctor.test", std::nullopt);
  expect_finding(r, doctor_level::note, "implicit-mx");
  expect_no_problem(r);
}

TEST_F(DnsDoctorTest, MissingDomainIsError) {
  expect_finding(diagnose("missing.doctor.test", std::nullopt), doctor_level::error,
                 "domain-not-found");
}

TEST_F(DnsDoctorTest, NullMxIsNoteForStrangersAndErrorForCustomers) {
  const auto stranger = diagnose("nullmx.doctor.test", std::nullopt);
  expect_finding(stranger, doctor_level::note, "null-mx");
  expect_no_problem(stranger);
  EXPECT_EQ(stranger.mx_lines, std::vector<std::string>{"0 . (null MX: no mail)"});

  expect_finding(diagnose("nullmx.doctor.test", customer(delivery_mode::hold)), doctor_level::error,
                 "null-mx-customer");
  expect_finding(diagnose("nullmixed.doctor.test", std::nullopt), doctor_level::warning,
                 "null-mx-mixed");
}

TEST_F(DnsDoctorTest, GatewayMxWithoutCustomerIsError) {
  expect_finding(diagnose("gwonly.doctor.test", std::nullopt), doctor_level::error,
                 "gateway-mx-no-customer");
  // Recognised by its address alone (relay-isp.doctor.test is not in self_names).
  expect_finding(diagnose("gwbyaddr.doctor.test", std::nullopt), doctor_level::error,
                 "gateway-mx-no-customer");
  // No MX, and the domain's own address is the gateway: the implicit MX.
  const auto implicit = diagnose("gwimplicit.doctor.test", std::nullopt);
  expect_finding(implicit, doctor_level::note, "implicit-mx");
  expect_finding(implicit, doctor_level::error, "gateway-mx-no-customer");
}

TEST_F(DnsDoctorTest, GatewayBehindNatIsKnownBySelfAddresses) {
  for (const auto& [domain, network] : {std::pair{"gwbynat.doctor.test", "127.0.1.0/24"},
                                        std::pair{"gwbynat6.doctor.test", "2001:db8:25::/48"}}) {
    auto o = nsd_options();
    const auto unknown = run_diagnosis(io_, o, domain, std::nullopt);
    ASSERT_TRUE(unknown.has_value()) << "got no report for " << domain;
    EXPECT_EQ(find(*unknown, "gateway-mx-no-customer"), nullptr)
        << "got the NATed gateway recognised without smtp_self_addresses for " << domain;
    o.self_networks = {*flushgate::core::parse_ip_network(network)};
    const auto known = run_diagnosis(io_, o, domain, std::nullopt);
    ASSERT_TRUE(known.has_value()) << "got no report for " << domain;
    expect_finding(*known, doctor_level::error, "gateway-mx-no-customer");
  }
}

TEST_F(DnsDoctorTest, GatewayMxForDisabledCustomerIsError) {
  const auto r =
      diagnose("gwonly.doctor.test", customer(delivery_mode::hold, true, customer_state::disabled));
  expect_finding(r, doctor_level::error, "gateway-mx-customer-disabled");
  const doctor_finding* f = find(r, "gateway-mx-customer-disabled");
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->text.find("flushgate customer enable acme"), std::string::npos)
      << "got \"" << f->text << "\", want the command that fixes it";
}

TEST_F(DnsDoctorTest, SuspendedCustomerIsWarning) {
  expect_finding(diagnose("gwonly.doctor.test",
                          customer(delivery_mode::hold, true, customer_state::suspended)),
                 doctor_level::warning, "customer-suspended");
}

TEST_F(DnsDoctorTest, GatewayBeforeCustomerServerIsWarningForRelayAndHold) {
  for (const auto mode : {delivery_mode::relay, delivery_mode::hold}) {
    SCOPED_TRACE(queue::to_string(mode));
    expect_finding(diagnose("gwfirst.doctor.test", customer(mode)), doctor_level::warning,
                   "gateway-preferred-over-customer");
    expect_finding(diagnose("gwequal.doctor.test", customer(mode)), doctor_level::warning,
                   "gateway-preferred-over-customer");
  }
}

TEST_F(DnsDoctorTest, GatewayFirstIsIntendedForOdmr) {
  const auto r = diagnose("gwfirst.doctor.test", customer(delivery_mode::odmr));
  expect_finding(r, doctor_level::ok, "gateway-primary-mx");
  expect_no_problem(r);
}

TEST_F(DnsDoctorTest, GatewayAsOnlyMxIsIntendedForHoldAndOdmr) {
  for (const auto mode : {delivery_mode::hold, delivery_mode::odmr}) {
    SCOPED_TRACE(queue::to_string(mode));
    const auto r = diagnose("gwonly.doctor.test", customer(mode));
    expect_finding(r, doctor_level::ok, "gateway-only-mx");
    expect_no_problem(r);
  }
}

TEST_F(DnsDoctorTest, RouteMxWithoutBetterMxLoops) {
  expect_finding(diagnose("gwfirst.doctor.test",
                          customer(delivery_mode::relay, true, customer_state::enabled, "mx")),
                 doctor_level::error, "route-mx-loops");
  expect_finding(diagnose("gwonly.doctor.test",
                          customer(delivery_mode::hold, true, customer_state::enabled, "mx")),
                 doctor_level::error, "route-mx-loops");
  // Behind the customer's server, "mx" finds that server.
  const auto backup = diagnose("healthy.doctor.test",
                               customer(delivery_mode::relay, true, customer_state::enabled, "mx"));
  expect_no_problem(backup);
}

TEST_F(DnsDoctorTest, GatewayMxWithoutRecipientListIsWarning) {
  expect_finding(diagnose("healthy.doctor.test", customer(delivery_mode::relay, false)),
                 doctor_level::warning, "backup-mx-no-recipient-list");
  expect_finding(diagnose("gwonly.doctor.test", customer(delivery_mode::odmr, false)),
                 doctor_level::warning, "backup-mx-no-recipient-list");
}

TEST_F(DnsDoctorTest, CustomerWithoutGatewayInMx) {
  const auto relay = diagnose("nogw.doctor.test", customer(delivery_mode::relay));
  expect_finding(relay, doctor_level::note, "gateway-not-in-mx");
  expect_no_problem(relay);
  // An ODMR customer gets mail only through the gateway.
  expect_finding(diagnose("nogw.doctor.test", customer(delivery_mode::odmr)), doctor_level::warning,
                 "gateway-not-in-mx");
}

TEST_F(DnsDoctorTest, MxHostInUnservedZoneCannotBeChecked) {
  // nsd answers REFUSED for a zone it does not serve: a temporary failure.
  const auto r = diagnose("elsewhere.doctor.test", std::nullopt);
  expect_finding(r, doctor_level::warning, "mx-host-lookup-failed");
  expect_no_finding(r, "mx-host-no-address");
}

TEST_F(DnsDoctorTest, RefusedDomainCannotBeChecked) {
  expect_finding(diagnose("example.invalid", customer(delivery_mode::relay)), doctor_level::warning,
                 "dns-lookup-failed");
}

TEST_F(DnsDoctorTest, OneIoContextServesManyDiagnosesInParallel) {
  std::vector<std::optional<doctor_report>> got(8);
  for (std::size_t i = 0; i < got.size(); ++i) {
    const std::string domain = i % 2 == 0 ? "healthy.doctor.test" : "cname.doctor.test";
    auto task = diagnose_domain(io_.get_executor(), nsd_options(), domain, std::nullopt);
    asio::co_spawn(io_, std::move(task), [&got, i](std::exception_ptr e, doctor_report r) {
      if (e) std::rethrow_exception(e);
      got[i] = std::move(r);
    });
  }
  io_.run_for(30s);
  EXPECT_TRUE(io_.stopped()) << "got work left on the io_context, want none";
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].has_value()) << "got no report for diagnosis " << i << ", want one";
    const std::string want = i % 2 == 0 ? "gateway-mx-no-customer" : "mx-is-cname";
    EXPECT_NE(find(*got[i], want), nullptr) << "got " << codes(*got[i]) << ", want " << want;
  }
}

TEST_F(DnsDoctorTest, RunsOnAThreadPoolExecutor) {
  asio::thread_pool pool(2);
  std::promise<doctor_report> promise;
  auto got = promise.get_future();
  auto task =
      diagnose_domain(pool.get_executor(), nsd_options(), "cname.doctor.test", std::nullopt);
  asio::co_spawn(pool, std::move(task), [&promise](std::exception_ptr e, doctor_report r) {
    if (e) {
      promise.set_exception(e);
    } else {
      promise.set_value(std::move(r));
    }
  });
  ASSERT_EQ(got.wait_for(30s), std::future_status::ready) << "got no report within 30 s, want one";
  const auto r = got.get();
  expect_finding(r, doctor_level::warning, "mx-is-cname");
  pool.join();
}

// A UDP socket that receives queries and never answers.
class silent_dns_server {
 public:
  explicit silent_dns_server(asio::io_context& io)
      : socket_(io, asio::ip::udp::endpoint(make_address("127.0.0.1"), 0)) {}
  std::string address() const {
    return "127.0.0.1:" + std::to_string(socket_.local_endpoint().port());
  }

 private:
  asio::ip::udp::socket socket_;
};

TEST(DnsDoctorTimeout, SilentServerGivesFindingNotHang) {
  asio::io_context io;
  silent_dns_server silent(io);
  mx_options o;
  o.servers = {silent.address()};
  o.self_names = {"gw.doctor.test"};
  o.timeout = 200ms;
  o.tries = 2;
  const auto start = std::chrono::steady_clock::now();
  std::optional<doctor_report> r;
  auto task =
      diagnose_domain(io.get_executor(), o, "healthy.doctor.test", customer(delivery_mode::relay));
  asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, doctor_report got) {
    if (e) std::rethrow_exception(e);
    r = std::move(got);
  });
  // The silent socket keeps no work pending: the loop ends with the diagnosis.
  io.run_for(30s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.has_value()) << "got no report within 30 s, want one";
  expect_finding(*r, doctor_level::warning, "dns-lookup-failed");
  EXPECT_EQ(r->findings.size(), 1u) << "got " << codes(*r) << ", want only dns-lookup-failed";
  // Bounded by timeout × tries × servers (400 ms), with room for a slow machine.
  EXPECT_LT(elapsed, 10s) << "got "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
                          << " ms, want well under 10 s";
}

TEST(DnsDoctorInput, InvalidDomainIsRefusedWithoutLookup) {
  asio::io_context io;
  mx_options o;
  o.servers = {"127.0.0.1:9"};  // never asked
  const auto r = run_diagnosis(io, o, "bad_name..test", std::nullopt);
  ASSERT_TRUE(r.has_value());
  expect_finding(*r, doctor_level::error, "domain-invalid");
  EXPECT_TRUE(r->mx_lines.empty());
}

TEST(DnsDoctorInput, UnusableResolverSettingsAreAFinding) {
  asio::io_context io;
  mx_options o;
  o.servers = {"not an address"};
  const auto bad_server = run_diagnosis(io, o, "healthy.doctor.test", std::nullopt);
  ASSERT_TRUE(bad_server.has_value());
  expect_finding(*bad_server, doctor_level::error, "resolver-config");

  o.servers = {"127.0.0.1:9"};
  o.timeout = 0ms;
  const auto bad_timeout = run_diagnosis(io, o, "healthy.doctor.test", std::nullopt);
  ASSERT_TRUE(bad_timeout.has_value());
  expect_finding(*bad_timeout, doctor_level::error, "resolver-config");
}

}  // namespace
}  // namespace flushgate::gateway
