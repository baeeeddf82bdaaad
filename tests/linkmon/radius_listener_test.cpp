// radius_listener_test.cpp — linkmon/radius_listener against the real
// radclient (freeradius-utils) and a raw UDP socket, on 127.0.0.1 and ::1.
// radclient exits 0 only when it got an Accounting-Response whose Response
// Authenticator is right, so every "exit 0" below also checks the signing.
#include "linkmon/radius_listener.hpp"

#include "tests/support/ports.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace flushgate::linkmon {
namespace {

namespace asio = boost::asio;
using asio::ip::udp;
using namespace std::chrono_literals;

constexpr const char* secret = "testing123";

// PROTOCOLS.md §10 item 14: radclient's Start for cust1 (secret testing123) and the answer it accepted.
constexpr const char* vector_request =
    "04730037b69dc21ab4a2b7bd9513514f5851d62b2806000000012c0a3030303030303031010763757374310806c000020a0406c0"
    "000201";
constexpr const char* vector_response = "057300145d7c517a331e57a132966954552ef1e5";

std::vector<std::uint8_t> from_hex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoul(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (auto b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

// A signed Accounting-Request with Acct-Status-Type, Acct-Session-Id,
// User-Name, Framed-IP-Address 192.0.2.x and NAS-Identifier "nas-test".
std::vector<std::uint8_t> make_request(std::uint8_t id, std::uint32_t status, const std::string& user,
                                       const std::string& session, std::uint8_t host) {
  std::vector<std::uint8_t> p(20);
  p[0] = 4;
  p[1] = id;
  auto attr = [&p](std::uint8_t type, std::vector<std::uint8_t> v) {
    p.push_back(type);
    p.push_back(static_cast<std::uint8_t>(v.size() + 2));
    p.insert(p.end(), v.begin(), v.end());
  };
  attr(40, {0, 0, 0, static_cast<std::uint8_t>(status)});
  attr(44, {session.begin(), session.end()});
  attr(1, {user.begin(), user.end()});
  attr(8, {192, 0, 2, host});
  attr(32, {'n', 'a', 's', '-', 't', 'e', 's', 't'});
  p[2] = static_cast<std::uint8_t>(p.size() >> 8);
  p[3] = static_cast<std::uint8_t>(p.size());
  sign_accounting_request(p, secret);
  return p;
}

bool radclient_available() {
  return std::filesystem::exists("/usr/bin/radclient") || std::filesystem::exists("/usr/local/bin/radclient");
}

std::string describe(const link_event& e) {
  const char* k = e.k == link_event::kind::up ? "up" : e.k == link_event::kind::down ? "down" : "nas_reset";
  return std::string(k) + " user=" + e.user + " session=" + e.session_id + " address=" + e.address +
         " nas=" + e.nas + " source=" + e.source;
}

std::string describe_with_ipv6(const link_event& e) {
  return describe(e) + " ipv6=" + e.ipv6_address + " prefix=" + e.ipv6_prefix;
}

class RadiusListenerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (listener_) {
      if (gate_) open_gate();
      listener_->stop();
      if (thread_.joinable()) thread_.join();
    }
  }

  // Starts a listener on 127.0.0.1:<kernel's choice> accepting `nas_source`.
  void start(const std::string& nas_source = "127.0.0.1", std::size_t max_in_flight = 256) {
    start_on({udp::endpoint(asio::ip::make_address("127.0.0.1"), 0)}, {nas_source}, max_in_flight);
  }

  // Starts a listener on `addresses` accepting every one of `nas_sources`;
  // radclient() talks to the first address.
  void start_on(const std::vector<udp::endpoint>& addresses, const std::vector<std::string>& nas_sources,
                std::size_t max_in_flight = 256) {
    radius_listener_options o;
    o.addresses = addresses;
    for (const auto& source : nas_sources) ASSERT_FALSE(o.clients.add(source, secret, "nas-under-test"));
    o.max_in_flight = max_in_flight;
    listener_ = std::make_unique<radius_listener>(io_.get_executor(), std::move(o),
                                                  [this](const link_event& e) { return handle(e); });
    listener_->open();
    port_ = listener_->local_endpoints().at(0).port();
    ipv6_ = addresses.at(0).address().is_v6();
    asio::co_spawn(io_, listener_->run(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

  // The handler: records the event, waits at the gate if one is set, answers `answer_`.
  asio::awaitable<bool> handle(const link_event& e) {
    std::size_t n = 0;
    {
      std::lock_guard lock(mutex_);
      events_.push_back(e);
      log_.push_back("begin " + describe(e));
      n = events_.size();
    }
    if (gate_ && n == gate_calls_) {
      co_await gate_->async_wait(asio::as_tuple(asio::use_awaitable));
    }
    std::lock_guard lock(mutex_);
    log_.push_back("end " + describe(e));
    co_return answer_.load();
  }

  // Blocks the `call`-th handler call until open_gate().
  void close_gate(std::size_t call) {
    gate_.emplace(io_, asio::steady_timer::time_point::max());
    gate_calls_ = call;
  }
  void open_gate() {
    asio::post(io_, [this] { gate_->cancel(); });
  }

  std::vector<link_event> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::vector<std::string> log() {
    std::lock_guard lock(mutex_);
    return log_;
  }

  test::command_result radclient(const std::string& attributes, const std::string& key = secret,
                                 std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{"radclient", "-r", "1", "-t", "1"};
    if (ipv6_) argv.push_back("-6");
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.end(), {(ipv6_ ? "[::1]:" : "127.0.0.1:") + std::to_string(port_), "acct", key});
    return test::run_command(argv, 20s, attributes);
  }

  // Sends `attributes` with radclient and expects an answer (exit 0); returns the
  // one event the handler saw, shown by `show`, or how many there were instead.
  std::string answered_event(const std::string& attributes,
                             std::string (*show)(const link_event&) = describe) {
    auto r = radclient(attributes);
    EXPECT_EQ(r.exit_code, 0) << "radclient: got exit " << r.exit_code << ", want 0\n"
                              << r.stdout_text << r.stderr_text;
    auto ev = events();
    if (ev.size() != 1) return "got " + std::to_string(ev.size()) + " events, want 1";
    return show(ev[0]);
  }

  asio::io_context io_;
  std::unique_ptr<radius_listener> listener_;
  std::thread thread_;
  std::uint16_t port_ = 0;
  bool ipv6_ = false;  // radclient sends to [::1] instead of 127.0.0.1
  std::mutex mutex_;
  std::vector<link_event> events_;
  std::vector<std::string> log_;
  std::atomic<bool> answer_{true};
  std::optional<asio::steady_timer> gate_;
  std::size_t gate_calls_ = 0;
};

// A plain UDP client on 127.0.0.1 for byte-exact retransmissions.
class udp_client {
 public:
  explicit udp_client(std::uint16_t port)
      : socket_(io_, udp::endpoint(udp::v4(), 0)), server_(asio::ip::make_address("127.0.0.1"), port) {}
  void send(std::span<const std::uint8_t> datagram) {
    socket_.send_to(asio::buffer(datagram.data(), datagram.size()), server_);
  }
  // The next datagram within `timeout`, or nullopt.
  std::optional<std::vector<std::uint8_t>> receive(std::chrono::milliseconds timeout) {
    pollfd p{socket_.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    std::vector<std::uint8_t> buf(5000);
    udp::endpoint from;
    const auto n = socket_.receive_from(asio::buffer(buf), from);
    buf.resize(n);
    return buf;
  }

 private:
  asio::io_context io_;
  udp::socket socket_;
  udp::endpoint server_;
};

TEST_F(RadiusListenerTest, StartFromRadclientIsAppliedAndAnswered) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  EXPECT_EQ(
      answered_event("Acct-Status-Type = Start\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"0000A1B2\"\n"
                     "Framed-IP-Address = 192.0.2.77\nNAS-IP-Address = 192.0.2.1\nAcct-Delay-Time = 0\n"),
      "up user=acme-dial session=0000A1B2 address=192.0.2.77 nas=192.0.2.1 source=radius");
  auto c = listener_->counters();
  EXPECT_EQ(c.received, 1u) << "got received " << c.received << ", want 1";
  EXPECT_EQ(c.answered, 1u) << "got answered " << c.answered << ", want 1";
}

TEST_F(RadiusListenerTest, StopFromRadclientIsADownWithTheSessionId) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  EXPECT_EQ(
      answered_event("Acct-Status-Type = Stop\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"0000A1B2\"\n"
                     "Framed-IP-Address = 192.0.2.77\nNAS-IP-Address = 192.0.2.1\n"
                     "Acct-Terminate-Cause = Lost-Carrier\n"),
      "down user=acme-dial session=0000A1B2 address=192.0.2.77 nas=192.0.2.1 source=radius");
}

TEST_F(RadiusListenerTest, InterimUpdateWithANewAddressIsAnUpWithThatAddress) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  EXPECT_EQ(
      answered_event(
          "Acct-Status-Type = Interim-Update\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"0000A1B2\"\n"
          "Framed-IP-Address = 192.0.2.78\nNAS-IP-Address = 192.0.2.1\n"),
      "up user=acme-dial session=0000A1B2 address=192.0.2.78 nas=192.0.2.1 source=radius");
}

TEST_F(RadiusListenerTest, AccountingOnResetsTheNasNamedByNasIdentifier) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  EXPECT_EQ(
      answered_event(
          "Acct-Status-Type = Accounting-On\nAcct-Session-Id = \"00000000\"\nNAS-Identifier = \"bras-1\"\n"),
      "nas_reset user= session= address= nas=bras-1 source=radius");
}

TEST_F(RadiusListenerTest, AccountingOffWithoutNasIpUsesNasIdentifierElseNasIp) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  EXPECT_EQ(
      answered_event(
          "Acct-Status-Type = Accounting-Off\nAcct-Session-Id = \"00000000\"\nNAS-IP-Address = 192.0.2.9\n"
          "NAS-Identifier = \"bras-9\"\n"),
      "nas_reset user= session= address= nas=192.0.2.9 source=radius");
}

TEST_F(RadiusListenerTest, OtherStatusTypesAreAnsweredButNotApplied) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  auto r = radclient(
      "Acct-Status-Type = Failed\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"1\"\n"
      "NAS-IP-Address = 192.0.2.1\n");
  EXPECT_EQ(r.exit_code, 0) << "radclient: got exit " << r.exit_code << ", want 0\n" << r.stderr_text;
  EXPECT_TRUE(events().empty()) << "got " << events().size() << " events, want 0";
  EXPECT_EQ(listener_->counters().ignored, 1u);
}

TEST_F(RadiusListenerTest, WrongSecretGetsNoAnswer) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = radclient(
      "Acct-Status-Type = Start\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"1\"\n"
      "Framed-IP-Address = 192.0.2.77\nNAS-IP-Address = 192.0.2.1\n",
      "not-the-secret");
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_NE(r.exit_code, 0) << "radclient: got exit 0, want a failure (no answer)";
  EXPECT_FALSE(r.timed_out) << "radclient did not give up by itself";
  EXPECT_LT(elapsed, 15s);
  EXPECT_TRUE(events().empty()) << "got " << events().size() << " events, want 0";
  EXPECT_TRUE(test::wait_until([&] { return listener_->counters().dropped_bad_authenticator >= 1; }, 5s))
      << "got dropped_bad_authenticator " << listener_->counters().dropped_bad_authenticator << ", want >= 1";
  auto c = listener_->counters();
  EXPECT_EQ(c.answered, 0u) << "got answered " << c.answered << ", want 0";
}

TEST_F(RadiusListenerTest, PacketFromAnUnconfiguredSourceIsDropped) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start("127.0.0.2");  // radclient sends from 127.0.0.1
  auto r = radclient(
      "Acct-Status-Type = Start\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"1\"\n"
      "Framed-IP-Address = 192.0.2.77\nNAS-IP-Address = 192.0.2.1\n");
  EXPECT_NE(r.exit_code, 0) << "radclient: got exit 0, want a failure (no answer)";
  EXPECT_TRUE(events().empty()) << "got " << events().size() << " events, want 0";
  EXPECT_TRUE(test::wait_until([&] { return listener_->counters().dropped_unknown_source >= 1; }, 5s))
      << "got dropped_unknown_source " << listener_->counters().dropped_unknown_source << ", want >= 1";
  auto c = listener_->counters();
  EXPECT_EQ(c.dropped_bad_authenticator, 0u) << "an unknown source must not reach the authenticator check";
}

TEST_F(RadiusListenerTest, HandlerFailureMeansNoAnswer) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  answer_ = false;
  start();
  auto r = radclient(
      "Acct-Status-Type = Start\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"1\"\n"
      "Framed-IP-Address = 192.0.2.77\nNAS-IP-Address = 192.0.2.1\n");
  EXPECT_NE(r.exit_code, 0) << "radclient: got exit 0, want a failure (no answer)";
  EXPECT_TRUE(test::wait_until([&] { return listener_->counters().handler_failures >= 1; }, 5s))
      << "got handler_failures " << listener_->counters().handler_failures << ", want >= 1";
  auto c = listener_->counters();
  EXPECT_EQ(c.answered, 0u) << "got answered " << c.answered << ", want 0";
}

// ---- IPv6 NASes ---------------------------------------------------------------

const char* ipv6_start =
    "Acct-Status-Type = Start\nUser-Name = \"acme-v6\"\nAcct-Session-Id = \"0000B6B6\"\n"
    "NAS-IPv6-Address = 2001:db8::1\nFramed-IPv6-Prefix = 2001:db8:0:5600::/64\n"
    "Framed-Interface-Id = 0211:22ff:fe33:4455\nDelegated-IPv6-Prefix = 2001:db8:ff00::/40\n";

TEST_F(RadiusListenerTest, Ipv6OnlyStartFromRadclientOverIpv6IsAnUp) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start_on({udp::endpoint(asio::ip::make_address("::1"), 0)}, {"::1"});
  EXPECT_EQ(answered_event(ipv6_start, describe_with_ipv6),
            "up user=acme-v6 session=0000B6B6 address= nas=2001:db8::1 source=radius "
            "ipv6=2001:db8:0:5600:211:22ff:fe33:4455 prefix=2001:db8:ff00::/40");
  auto c = listener_->counters();
  EXPECT_EQ(c.answered, 1u) << "got answered " << c.answered << ", want 1";
}

TEST_F(RadiusListenerTest, Ipv6AccountingOnIsKeyedByNasIpv6AddressAndCidrEntriesMatch) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  // ::1 is inside ::/120: an IPv6 prefix entry, not only an exact address.
  start_on({udp::endpoint(asio::ip::make_address("::1"), 0)}, {"::/120", "2001:db8::/32"});
  EXPECT_EQ(answered_event("Acct-Status-Type = Accounting-On\nAcct-Session-Id = \"00000000\"\n"
                           "NAS-IPv6-Address = 2001:db8::1\nNAS-Identifier = \"bras-6\"\n"),
            "nas_reset user= session= address= nas=2001:db8::1 source=radius");
}

TEST_F(RadiusListenerTest, Ipv6SourceOutsideEveryEntryIsDropped) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start_on({udp::endpoint(asio::ip::make_address("::1"), 0)}, {"2001:db8::/32", "127.0.0.1"});
  auto r = radclient(ipv6_start);
  EXPECT_NE(r.exit_code, 0) << "radclient -6: got exit 0, want a failure (no answer)";
  EXPECT_TRUE(events().empty()) << "got " << events().size() << " events, want 0";
  EXPECT_TRUE(test::wait_until([&] { return listener_->counters().dropped_unknown_source >= 1; }, 5s))
      << "got dropped_unknown_source " << listener_->counters().dropped_unknown_source << ", want >= 1";
}

TEST_F(RadiusListenerTest, Ipv4AndIpv6WildcardsShareOnePort) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  // "0.0.0.0:1813, [::]:1813": the IPv6 socket is IPv6-only, or the second bind fails.
  const auto port = test::free_udp_port();
  start_on({udp::endpoint(asio::ip::make_address("::"), port),
            udp::endpoint(asio::ip::make_address("0.0.0.0"), port)},
           {"::1", "127.0.0.1"});
  ASSERT_EQ(listener_->local_endpoints().size(), 2u);
  auto r6 = radclient(ipv6_start);
  EXPECT_EQ(r6.exit_code, 0) << "radclient -6: got exit " << r6.exit_code << ", want 0\n" << r6.stderr_text;
  ipv6_ = false;
  auto r4 = radclient(
      "Acct-Status-Type = Start\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"0000A1B2\"\n"
      "Framed-IP-Address = 192.0.2.77\nNAS-IP-Address = 192.0.2.1\n");
  EXPECT_EQ(r4.exit_code, 0) << "radclient: got exit " << r4.exit_code << ", want 0\n" << r4.stderr_text;
  auto ev = events();
  ASSERT_EQ(ev.size(), 2u) << "got " << ev.size() << " events, want 2";
  EXPECT_EQ(ev[0].user + " " + ev[1].user, "acme-v6 acme-dial");
  auto c = listener_->counters();
  EXPECT_EQ(c.answered, 2u) << "got answered " << c.answered << ", want 2";
}

TEST_F(RadiusListenerTest, RetransmissionIsAnsweredTwiceAppliedOnce) {
  start();
  const auto request = from_hex(vector_request);
  udp_client client(port_);
  client.send(request);
  auto first = client.receive(5s);
  ASSERT_TRUE(first) << "got no answer, want one";
  EXPECT_EQ(to_hex(*first), vector_response);
  client.send(request);  // the identical datagram, from the same socket
  auto second = client.receive(5s);
  ASSERT_TRUE(second) << "got no answer to the retransmission, want the cached one";
  EXPECT_EQ(to_hex(*second), vector_response);
  auto ev = events();
  ASSERT_EQ(ev.size(), 1u) << "got " << ev.size() << " events, want 1 (applied once)";
  EXPECT_EQ(describe(ev[0]), "up user=cust1 session=00000001 address=192.0.2.10 nas=192.0.2.1 source=radius");
  auto c = listener_->counters();
  EXPECT_EQ(c.duplicates, 1u) << "got duplicates " << c.duplicates << ", want 1";
  EXPECT_EQ(c.answered, 2u) << "got answered " << c.answered << ", want 2";
}

TEST_F(RadiusListenerTest, RetransmissionWhileHandlingIsNotAppliedTwice) {
  close_gate(1);
  start();
  const auto request = from_hex(vector_request);
  udp_client client(port_);
  client.send(request);
  client.send(request);
  ASSERT_TRUE(test::wait_until([&] { return listener_->counters().duplicates == 1; }, 5s))
      << "got duplicates " << listener_->counters().duplicates << ", want 1";
  open_gate();
  auto answer = client.receive(5s);
  ASSERT_TRUE(answer) << "got no answer, want one";
  EXPECT_EQ(to_hex(*answer), vector_response);
  EXPECT_EQ(events().size(), 1u) << "got " << events().size() << " events, want 1";
  EXPECT_EQ(listener_->counters().answered, 1u);
}

TEST_F(RadiusListenerTest, RetransmissionAfterAFailureIsHandledAgain) {
  answer_ = false;
  start();
  const auto request = from_hex(vector_request);
  udp_client client(port_);
  client.send(request);
  ASSERT_TRUE(test::wait_until([&] { return listener_->counters().handler_failures == 1; }, 5s));
  answer_ = true;
  client.send(request);
  auto answer = client.receive(5s);
  ASSERT_TRUE(answer) << "got no answer to the retransmission, want one";
  EXPECT_EQ(to_hex(*answer), vector_response);
  EXPECT_EQ(events().size(), 2u) << "got " << events().size() << " handler calls, want 2";
}

TEST_F(RadiusListenerTest, NewAuthenticatorUnderTheSameIdentifierIsANewRequest) {
  start();
  udp_client client(port_);
  const auto a = make_request(7, 1, "cust1", "s1", 10);
  const auto b = make_request(7, 2, "cust1", "s1", 10);  // same Id, a Stop
  client.send(a);
  ASSERT_TRUE(client.receive(5s));
  client.send(b);
  ASSERT_TRUE(client.receive(5s));
  auto ev = events();
  ASSERT_EQ(ev.size(), 2u) << "got " << ev.size() << " events, want 2";
  EXPECT_EQ(ev[1].k, link_event::kind::down);
  EXPECT_EQ(listener_->counters().duplicates, 0u);
}

TEST_F(RadiusListenerTest, EventsOfOneUserAreHandledOneAtATime) {
  close_gate(1);
  start();
  udp_client client(port_);
  client.send(make_request(1, 1, "cust1", "s1", 10));  // Start, held at the gate
  client.send(make_request(2, 2, "cust1", "s1", 10));  // Stop: must wait for the Start
  client.send(make_request(3, 1, "cust2", "s2", 11));  // another user: not held up
  ASSERT_TRUE(test::wait_until([&] { return listener_->counters().answered == 1; }, 5s))
      << "got answered " << listener_->counters().answered << ", want 1 (cust2)";
  open_gate();
  ASSERT_TRUE(test::wait_until([&] { return listener_->counters().answered == 3; }, 5s))
      << "got answered " << listener_->counters().answered << ", want 3";
  std::vector<std::string> cust1;
  for (const auto& line : log()) {
    if (line.find("user=cust1") != std::string::npos) cust1.push_back(line.substr(0, line.find(" user")));
  }
  EXPECT_EQ(cust1, (std::vector<std::string>{"begin up", "end up", "begin down", "end down"}));
}

TEST_F(RadiusListenerTest, RequestsBeyondMaxInFlightAreDropped) {
  close_gate(1);
  start("127.0.0.1", 1);
  udp_client client(port_);
  client.send(make_request(1, 1, "cust1", "s1", 10));
  client.send(make_request(2, 1, "cust2", "s2", 11));
  ASSERT_TRUE(test::wait_until([&] { return listener_->counters().dropped_busy == 1; }, 5s))
      << "got dropped_busy " << listener_->counters().dropped_busy << ", want 1";
  open_gate();
  ASSERT_TRUE(client.receive(5s)) << "got no answer for the first request";
  client.send(make_request(2, 1, "cust2", "s2", 11));  // the NAS's retransmission now fits
  ASSERT_TRUE(client.receive(5s)) << "got no answer for the retransmitted second request";
  EXPECT_EQ(events().size(), 2u);
}

TEST_F(RadiusListenerTest, OversizedAndMalformedDatagramsAreDropped) {
  start();
  udp_client client(port_);
  auto big = make_request(1, 1, "cust1", "s1", 10);
  big.resize(5000, 0);  // Length says small, but the datagram exceeds the buffer
  client.send(big);
  auto truncated = from_hex(vector_request);
  truncated.resize(30);  // shorter than Length
  client.send(truncated);
  ASSERT_TRUE(test::wait_until([&] { return listener_->counters().received == 2; }, 5s));
  auto c = listener_->counters();
  EXPECT_EQ(c.dropped_malformed, 2u) << "got dropped_malformed " << c.dropped_malformed << ", want 2";
  EXPECT_EQ(c.answered, 0u);
  EXPECT_TRUE(events().empty());
}

TEST_F(RadiusListenerTest, PaddingUpTo4096OctetsIsAccepted) {
  start();
  udp_client client(port_);
  auto padded = from_hex(vector_request);
  padded.resize(4096, 0xAA);  // octets past Length are ignored (RFC 2866 §3)
  client.send(padded);
  auto answer = client.receive(5s);
  ASSERT_TRUE(answer) << "got no answer, want one";
  EXPECT_EQ(to_hex(*answer), vector_response);
}

// Not timing goals (those live in scripts/bench/): these check that a burst
// from radclient -p 50 is answered completely, and print the rate.
struct burst_result {
  double seconds = 0;
  test::command_result radclient;
};

burst_result run_burst(std::uint16_t port, const std::string& packets, std::vector<std::string> options) {
  test::temp_dir dir("flushgate-radius");
  const auto path = dir.path() / "packets.txt";
  std::ofstream(path) << packets;
  std::vector<std::string> argv{"radclient"};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.insert(argv.end(), {"-p", "50", "-q", "-s", "-r", "3", "-t", "2", "-f", path.string(),
                           "127.0.0.1:" + std::to_string(port), "acct", secret});
  const auto t0 = std::chrono::steady_clock::now();
  burst_result out;
  out.radclient = test::run_command(argv, 120s);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

TEST_F(RadiusListenerTest, BurstOfOnePacketRepeatedIsAnswered) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  // radclient -c 2000 resends the same attributes under Identifiers it reuses
  // from one source port: to the listener most of these are retransmissions
  // (same key and authenticator), answered from the cache.
  auto r = run_burst(
      port_,
      "Acct-Status-Type = Interim-Update\nUser-Name = \"acme-dial\"\nAcct-Session-Id = \"0000A1B2\"\n"
      "Framed-IP-Address = 192.0.2.77\nNAS-IP-Address = 192.0.2.1\n",
      {"-c", "2000"});
  EXPECT_EQ(r.radclient.exit_code, 0) << "radclient: got exit " << r.radclient.exit_code << ", want 0\n"
                                      << r.radclient.stdout_text << r.radclient.stderr_text;
  auto c = listener_->counters();
  EXPECT_GE(c.answered, 2000u) << "got answered " << c.answered << ", want >= 2000";
  std::printf(
      "radclient -c 2000 -p 50 (one packet): %.3f s, %.0f requests/s; received=%llu answered=%llu "
      "duplicates=%llu handler calls=%zu\n",
      r.seconds, 2000 / r.seconds, static_cast<unsigned long long>(c.received),
      static_cast<unsigned long long>(c.answered), static_cast<unsigned long long>(c.duplicates),
      events().size());
}

TEST_F(RadiusListenerTest, BurstOfDistinctPacketsIsAnsweredAndApplied) {
  if (!radclient_available()) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  start();
  constexpr int count = 2000;
  std::string packets;
  for (int i = 0; i < count; ++i) {
    packets += "Acct-Status-Type = Start\nUser-Name = \"user" + std::to_string(i % 500) +
               "\"\nAcct-Session-Id = \"S" + std::to_string(i) + "\"\nFramed-IP-Address = 192.0.2." +
               std::to_string(1 + i % 250) + "\nNAS-IP-Address = 192.0.2.1\n\n";
  }
  auto r = run_burst(port_, packets, {});
  EXPECT_EQ(r.radclient.exit_code, 0) << "radclient: got exit " << r.radclient.exit_code << ", want 0\n"
                                      << r.radclient.stdout_text << r.radclient.stderr_text;
  auto c = listener_->counters();
  EXPECT_EQ(c.answered, static_cast<std::uint64_t>(count)) << "got answered " << c.answered;
  EXPECT_EQ(events().size(), static_cast<std::size_t>(count))
      << "got " << events().size() << " handler calls";
  std::printf(
      "radclient -p 50, %d distinct packets: %.3f s, %.0f requests/s; received=%llu answered=%llu "
      "duplicates=%llu busy=%llu\n",
      count, r.seconds, count / r.seconds, static_cast<unsigned long long>(c.received),
      static_cast<unsigned long long>(c.answered), static_cast<unsigned long long>(c.duplicates),
      static_cast<unsigned long long>(c.dropped_busy));
}

}  // namespace
}  // namespace flushgate::linkmon
