// pcap_sniffer_test.cpp — linkmon/pcap_sniffer: the pure frame decoder, the
// offline sniffer on captures of real radclient ↔ radius_listener traffic in
// the three link types tools write on Linux (tests/data/radius/, see its
// README), corner cases in captures this test writes itself with
// pcap_dump_open, and a live capture on lo.
#include "linkmon/pcap_sniffer.hpp"

#include "linkmon/radius_listener.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace flushgate::linkmon {
namespace {

namespace asio = boost::asio;
using asio::ip::make_address;
using namespace std::chrono_literals;

constexpr const char* secret = "testing123";
constexpr std::uint16_t capture_port = 11813;  // the port of the committed captures
const std::filesystem::path data_dir = std::filesystem::path(FLUSHGATE_SOURCE_DIR) / "tests/data/radius";

std::string describe(const link_event& e) {
  const char* k = e.k == link_event::kind::up ? "up" : e.k == link_event::kind::down ? "down" : "nas_reset";
  return std::string(k) + " user=" + e.user + " session=" + e.session_id + " address=" + e.address +
         " nas=" + e.nas + " source=" + e.source;
}

std::string describe_with_ipv6(const link_event& e) {
  return describe(e) + " ipv6=" + e.ipv6_address + " prefix=" + e.ipv6_prefix;
}

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// ---- building frames -------------------------------------------------------

using bytes = std::vector<std::uint8_t>;

void put16(bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}

bytes udp(std::uint16_t sport, std::uint16_t dport, const bytes& payload) {
  bytes b;
  put16(b, sport);
  put16(b, dport);
  put16(b, static_cast<std::uint16_t>(payload.size() + 8));
  put16(b, 0);  // checksum: not checked
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

bytes ipv4(const std::string& src, const std::string& dst, const bytes& l4, std::uint16_t frag = 0,
           std::uint8_t proto = 17) {
  bytes b{0x45, 0};
  put16(b, static_cast<std::uint16_t>(l4.size() + 20));
  put16(b, 1);
  put16(b, frag);
  b.push_back(64);
  b.push_back(proto);
  put16(b, 0);
  for (auto x : make_address(src).to_v4().to_bytes()) b.push_back(x);
  for (auto x : make_address(dst).to_v4().to_bytes()) b.push_back(x);
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

bytes ipv6(const std::string& src, const std::string& dst, const bytes& l4, bool with_dest_options = false) {
  bytes ext;
  if (with_dest_options) ext = {17, 0, 1, 4, 0, 0, 0, 0};  // next UDP, 8 octets, PadN
  bytes b{0x60, 0, 0, 0};
  put16(b, static_cast<std::uint16_t>(l4.size() + ext.size()));
  b.push_back(with_dest_options ? 60 : 17);
  b.push_back(64);
  for (auto x : make_address(src).to_v6().to_bytes()) b.push_back(x);
  for (auto x : make_address(dst).to_v6().to_bytes()) b.push_back(x);
  b.insert(b.end(), ext.begin(), ext.end());
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

bytes ethernet(const bytes& l3, std::uint16_t type = 0x0800, bool vlan = false) {
  bytes b(12, 0x02);
  if (vlan) {
    put16(b, 0x8100);
    put16(b, 42);
  }
  put16(b, type);
  b.insert(b.end(), l3.begin(), l3.end());
  while (b.size() < 60) b.push_back(0);  // minimum frame: padding past the IP packet
  return b;
}

bytes sll(const bytes& l3, std::uint16_t type = 0x0800) {
  bytes b{0, 0, 0x03, 0x04, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0};
  put16(b, type);
  b.insert(b.end(), l3.begin(), l3.end());
  return b;
}

bytes sll2(const bytes& l3, std::uint16_t type = 0x0800) {
  bytes b;
  put16(b, type);
  b.insert(b.end(), {0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0});
  b.insert(b.end(), l3.begin(), l3.end());
  return b;
}

// ---- RADIUS packets ---------------------------------------------------------

struct attr {
  std::uint8_t type;
  bytes value;
};

// A signed Accounting-Request carrying `attrs` in order.
bytes signed_request(std::uint8_t id, const std::vector<attr>& attrs, const std::string& key = secret) {
  bytes p(20);
  p[0] = 4;
  p[1] = id;
  for (const auto& a : attrs) {
    p.push_back(a.type);
    p.push_back(static_cast<std::uint8_t>(a.value.size() + 2));
    p.insert(p.end(), a.value.begin(), a.value.end());
  }
  p[2] = static_cast<std::uint8_t>(p.size() >> 8);
  p[3] = static_cast<std::uint8_t>(p.size());
  sign_accounting_request(p, key);
  return p;
}

bytes accounting_request(std::uint8_t id, std::uint32_t status, const std::string& user,
                         const std::string& session, const std::string& framed,
                         const std::string& key = secret) {
  std::vector<attr> attrs{{40, {0, 0, 0, static_cast<std::uint8_t>(status)}},
                          {44, bytes(session.begin(), session.end())}};
  if (!user.empty()) attrs.push_back({1, bytes(user.begin(), user.end())});
  if (!framed.empty()) {
    auto a = make_address(framed).to_v4().to_bytes();
    attrs.push_back({8, bytes(a.begin(), a.end())});
  }
  attrs.push_back({4, {192, 0, 2, 1}});
  return signed_request(id, attrs, key);
}

bytes ipv6_bytes(const std::string& address) {
  auto a = make_address(address).to_v6().to_bytes();
  return bytes(a.begin(), a.end());
}

// An IPv6-only line's Start (RFC 3162, 4818): NAS-IPv6-Address 2001:db8::1,
// Framed-IPv6-Prefix 2001:db8:0:5600::/64 + Framed-Interface-Id, and
// Delegated-IPv6-Prefix 2001:db8:ff00::/40; no IPv4 attribute at all.
bytes ipv6_start(std::uint8_t id) {
  bytes framed_prefix{0, 64};
  const auto p = ipv6_bytes("2001:db8:0:5600::");
  framed_prefix.insert(framed_prefix.end(), p.begin(), p.begin() + 8);
  return signed_request(id, {{40, {0, 0, 0, 1}},
                             {44, {'s', '6'}},
                             {1, {'c', 'u', 's', 't', '6'}},
                             {95, ipv6_bytes("2001:db8::1")},
                             {97, framed_prefix},
                             {96, {0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55}},
                             {123, {0, 40, 0x20, 0x01, 0x0d, 0xb8, 0xff}}});
}

constexpr const char* ipv6_start_event =
    "up user=cust6 session=s6 address= nas=2001:db8::1 source=pcap "
    "ipv6=2001:db8:0:5600:211:22ff:fe33:4455 prefix=2001:db8:ff00::/40";

bytes response_to(const bytes& request, const std::string& key = secret) {
  auto r = decode_accounting_request(request);
  EXPECT_TRUE(r) << "test bug: request does not decode";
  return build_accounting_response(*r, key);
}

// ---- the decoder -------------------------------------------------------------

struct decode_case {
  const char* name;
  int link_type;
  bytes frame;
  bool want;
  std::string want_text;  // "src:port>dst:port len"
};

std::string describe(const std::optional<udp_datagram>& d) {
  if (!d) return "none";
  return d->source_address.to_string() + ":" + std::to_string(d->source_port) + ">" +
         d->destination_address.to_string() + ":" + std::to_string(d->destination_port) + " " +
         std::to_string(d->payload.size());
}

TEST(PcapFrameDecoder, DecodesEveryLinkTypeAndRefusesBrokenFrames) {
  const bytes payload(38, 0x04);
  const auto v4 = ipv4("127.0.0.1", "127.0.0.2", udp(40000, 1813, payload));
  const auto v6 = ipv6("::1", "2001:db8::2", udp(40000, 1813, payload));
  auto short_udp = v4;
  short_udp.resize(v4.size() - 1);
  auto udp_too_long = v4;
  udp_too_long[20 + 5] += 1;  // UDP length one past the IP packet
  bytes double_tag = ethernet(v4, 0x8100, true);
  auto ipv6_fragment = ipv6("::1", "::2", udp(1, 2, payload), true);
  ipv6_fragment[6] = 44;  // a Fragment header in place of the options: not reassembled

  const std::vector<decode_case> cases = {
      {"ethernet", DLT_EN10MB, ethernet(v4), true, "127.0.0.1:40000>127.0.0.2:1813 38"},
      {"ethernet + 802.1Q", DLT_EN10MB, ethernet(v4, 0x0800, true), true,
       "127.0.0.1:40000>127.0.0.2:1813 38"},
      {"ethernet, two tags", DLT_EN10MB, double_tag, false, "none"},
      {"ethernet ipv6", DLT_EN10MB, ethernet(v6, 0x86DD), true, "::1:40000>2001:db8::2:1813 38"},
      {"ethernet arp", DLT_EN10MB, ethernet(v4, 0x0806), false, "none"},
      {"ethernet header only", DLT_EN10MB, bytes(14, 0), false, "none"},
      {"sll", DLT_LINUX_SLL, sll(v4), true, "127.0.0.1:40000>127.0.0.2:1813 38"},
      {"sll2", DLT_LINUX_SLL2, sll2(v4), true, "127.0.0.1:40000>127.0.0.2:1813 38"},
      {"sll2 ipv6", DLT_LINUX_SLL2, sll2(v6, 0x86DD), true, "::1:40000>2001:db8::2:1813 38"},
      {"sll too short", DLT_LINUX_SLL, bytes(15, 0), false, "none"},
      {"raw ipv4", DLT_RAW, v4, true, "127.0.0.1:40000>127.0.0.2:1813 38"},
      {"raw ipv6", DLT_RAW, v6, true, "::1:40000>2001:db8::2:1813 38"},
      {"ipv6 + destination options", DLT_IPV6, ipv6("::1", "::2", udp(1, 2, payload), true), true,
       "::1:1>::2:2 38"},
      {"ipv6 fragment header", DLT_IPV6, ipv6_fragment, false, "none"},
      {"dlt ipv4", DLT_IPV4, v4, true, "127.0.0.1:40000>127.0.0.2:1813 38"},
      {"truncated capture", DLT_RAW, short_udp, false, "none"},
      {"udp length past packet", DLT_RAW, udp_too_long, false, "none"},
      {"first fragment", DLT_RAW, ipv4("127.0.0.1", "127.0.0.2", udp(1, 2, payload), 0x2000), false, "none"},
      {"later fragment", DLT_RAW, ipv4("127.0.0.1", "127.0.0.2", udp(1, 2, payload), 0x0010), false, "none"},
      {"tcp", DLT_RAW, ipv4("127.0.0.1", "127.0.0.2", udp(1, 2, payload), 0, 6), false, "none"},
      {"empty", DLT_RAW, {}, false, "none"},
      {"unsupported link type", 147, v4, false, "none"},
  };
  for (const auto& c : cases) {
    auto d = decode_frame(c.link_type, c.frame);
    EXPECT_EQ(d.has_value(), c.want) << c.name;
    EXPECT_EQ(describe(d), c.want_text) << c.name << ": got " << describe(d) << ", want " << c.want_text;
  }
}

TEST(PcapFrameDecoder, EveryTruncationOfAGoodFrameIsRefusedNotMisread) {
  const auto frame = ethernet(ipv4("127.0.0.1", "127.0.0.2", udp(40000, 1813, bytes(38, 0x04))));
  const std::size_t ip_end = 14 + 20 + 8 + 38;
  for (std::size_t n = 0; n < ip_end; ++n) {
    auto d = decode_frame(DLT_EN10MB, std::span<const std::uint8_t>(frame.data(), n));
    EXPECT_FALSE(d) << "a frame cut at " << n << " octets: got " << describe(d) << ", want none";
  }
}

// ---- running the sniffer -------------------------------------------------------

struct sniff_result {
  std::vector<std::string> events;
  std::vector<link_event> raw_events;
  pcap_counters counters;
  int link_type = -1;
};

sniff_result sniff_file(const std::filesystem::path& file, bool require_response = true,
                        std::string filter = "udp", std::size_t max_pending = 4096,
                        const std::string& nas_source = "127.0.0.1") {
  asio::io_context io;
  pcap_sniffer_options o;
  o.file = file.string();
  o.filter = std::move(filter);
  o.require_response = require_response;
  o.max_pending = max_pending;
  EXPECT_FALSE(o.clients.add(nas_source, secret, "radclient"));
  sniff_result out;
  pcap_sniffer sniffer(io.get_executor(), std::move(o), [&out](const link_event& e) -> asio::awaitable<bool> {
    out.events.push_back(describe(e));
    out.raw_events.push_back(e);
    co_return true;
  });
  sniffer.open();
  out.link_type = sniffer.link_type();
  bool done = false;
  asio::co_spawn(io, sniffer.run(), [&done](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
    done = true;
  });
  io.run_for(20s);
  EXPECT_TRUE(done) << "offline run did not finish";
  out.counters = sniffer.counters();
  return out;
}

// The committed captures: radclient ↔ radius_listener on 127.0.0.1:11813 (README).
const std::vector<std::string> capture_events = {
    "up user=cust1 session=00000001 address=192.0.2.10 nas=192.0.2.1 source=pcap",
    "up user=cust1 session=00000001 address=192.0.2.11 nas=192.0.2.1 source=pcap",
    "down user=cust1 session=00000001 address=192.0.2.11 nas=192.0.2.1 source=pcap",
    "nas_reset user= session= address= nas=bras-1 source=pcap",
    "up user=cust2 session=00000002 address=192.0.2.20 nas=192.0.2.1 source=pcap",
};

struct capture_case {
  const char* file;
  int link_type;
};

class CommittedCapture : public ::testing::TestWithParam<capture_case> {};

TEST_P(CommittedCapture, YieldsTheEventsTheServerAnswered) {
  const auto path = data_dir / GetParam().file;
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing";
  auto r = sniff_file(path, true, "udp port " + std::to_string(capture_port));
  EXPECT_EQ(r.link_type, GetParam().link_type) << "got link type " << r.link_type;
  EXPECT_EQ(join(r.events), join(capture_events)) << "got\n"
                                                  << join(r.events) << "want\n"
                                                  << join(capture_events);
  // The wrong-secret Start was sent twice and never answered; cust2's Start was
  // retransmitted once (the first try was not recorded) and then answered.
  EXPECT_EQ(r.counters.bad_authenticator, 2u) << "got " << r.counters.bad_authenticator << ", want 2";
  EXPECT_EQ(r.counters.duplicates, 1u) << "got " << r.counters.duplicates << ", want 1";
  EXPECT_EQ(r.counters.unmatched_responses, 0u);
  EXPECT_EQ(r.counters.undecodable, 0u);
}

TEST_P(CommittedCapture, RequestsAloneGiveTheSameEventsWhenResponsesAreNotRequired) {
  auto r = sniff_file(data_dir / GetParam().file, false);
  EXPECT_EQ(join(r.events), join(capture_events)) << "got\n"
                                                  << join(r.events) << "want\n"
                                                  << join(capture_events);
}

INSTANTIATE_TEST_SUITE_P(RadclientTraffic, CommittedCapture,
                         ::testing::Values(capture_case{"radclient-ethernet.pcap", DLT_EN10MB},
                                           capture_case{"radclient-sll.pcap", DLT_LINUX_SLL},
                                           capture_case{"radclient-sll2.pcap", DLT_LINUX_SLL2}));

// Writes frames into a pcap file of link type `dlt`, one per second.
class pcap_writer {
 public:
  pcap_writer(const std::filesystem::path& path, int dlt) : dead_(pcap_open_dead(dlt, 65535)) {
    dumper_ = pcap_dump_open(dead_, path.c_str());
    if (dumper_ == nullptr) throw std::runtime_error(pcap_geterr(dead_));
  }
  ~pcap_writer() {
    if (dumper_ != nullptr) pcap_dump_close(dumper_);
    pcap_close(dead_);
  }
  void write(const bytes& frame, long seconds) {
    pcap_pkthdr h{};
    h.ts.tv_sec = 1700000000 + seconds;
    h.caplen = static_cast<bpf_u_int32>(frame.size());
    h.len = h.caplen;
    pcap_dump(reinterpret_cast<u_char*>(dumper_), &h, frame.data());
  }

 private:
  pcap_t* dead_;
  pcap_dumper_t* dumper_ = nullptr;
};

// NAS 127.0.0.1:40000 → server 127.0.0.9:1813, raw IPv4 frames.
bytes nas_to_server(const bytes& radius) { return ipv4("127.0.0.1", "127.0.0.9", udp(40000, 1813, radius)); }
bytes server_to_nas(const bytes& radius) { return ipv4("127.0.0.9", "127.0.0.1", udp(1813, 40000, radius)); }

class WrittenCapture : public ::testing::Test {
 protected:
  std::filesystem::path path() const { return dir_.path() / "corner.pcap"; }
  test::temp_dir dir_{"flushgate-pcap"};
};

TEST_F(WrittenCapture, RequestWithoutResponseIsNotActedOnAndExpires) {
  const auto req = accounting_request(1, 1, "cust1", "s1", "192.0.2.10");
  {
    pcap_writer w(path(), DLT_RAW);
    w.write(nas_to_server(req), 0);
    w.write(nas_to_server(accounting_request(2, 1, "cust9", "s9", "192.0.2.99")), 60);  // later traffic
  }
  auto r = sniff_file(path());
  EXPECT_TRUE(r.events.empty()) << "got\n" << join(r.events) << "want no events";
  EXPECT_EQ(r.counters.expired, 1u) << "got expired " << r.counters.expired << ", want 1";
  auto alone = sniff_file(path(), false);
  EXPECT_EQ(alone.events.size(), 2u) << "require_response=false: got\n" << join(alone.events);
}

TEST_F(WrittenCapture, ResponseWithABadAuthenticatorDoesNotCountButTheRealOneDoes) {
  const auto req = accounting_request(1, 1, "cust1", "s1", "192.0.2.10");
  {
    pcap_writer w(path(), DLT_RAW);
    w.write(nas_to_server(req), 0);
    w.write(server_to_nas(response_to(req, "forged-secret")), 1);
    w.write(server_to_nas(response_to(req)), 2);
  }
  auto r = sniff_file(path());
  EXPECT_EQ(join(r.events), "up user=cust1 session=s1 address=192.0.2.10 nas=192.0.2.1 source=pcap\n");
  EXPECT_EQ(r.counters.bad_responses, 1u) << "got bad_responses " << r.counters.bad_responses << ", want 1";
}

TEST_F(WrittenCapture, RequestWithABadAuthenticatorIsIgnoredEvenIfAnswered) {
  const auto forged = accounting_request(1, 1, "cust1", "s1", "198.51.100.66", "forged-secret");
  {
    pcap_writer w(path(), DLT_RAW);
    w.write(nas_to_server(forged), 0);
    w.write(server_to_nas(response_to(forged)), 1);
  }
  auto r = sniff_file(path(), true);
  EXPECT_TRUE(r.events.empty()) << "got\n" << join(r.events) << "want no events";
  EXPECT_EQ(r.counters.bad_authenticator, 1u);
  EXPECT_EQ(r.counters.unmatched_responses, 1u);
  EXPECT_TRUE(sniff_file(path(), false).events.empty());
}

TEST_F(WrittenCapture, RetransmissionIsActedOnOnce) {
  const auto req = accounting_request(7, 2, "cust1", "s1", "192.0.2.10");
  {
    pcap_writer w(path(), DLT_RAW);
    w.write(nas_to_server(req), 0);
    w.write(nas_to_server(req), 3);
    w.write(server_to_nas(response_to(req)), 3);
    w.write(server_to_nas(response_to(req)), 4);
  }
  auto r = sniff_file(path());
  EXPECT_EQ(join(r.events), "down user=cust1 session=s1 address=192.0.2.10 nas=192.0.2.1 source=pcap\n");
  EXPECT_EQ(r.counters.duplicates, 2u) << "got duplicates " << r.counters.duplicates << ", want 2";
  auto alone = sniff_file(path(), false);
  EXPECT_EQ(alone.events.size(), 1u) << "require_response=false: got\n" << join(alone.events);
}

TEST_F(WrittenCapture, ResponseMustComeFromTheServerPortTheRequestWentTo) {
  const auto req = accounting_request(7, 1, "cust1", "s1", "192.0.2.10");
  {
    pcap_writer w(path(), DLT_RAW);
    w.write(nas_to_server(req), 0);
    w.write(ipv4("127.0.0.9", "127.0.0.1", udp(1646, 40000, response_to(req))), 1);  // other port
    w.write(ipv4("127.0.0.8", "127.0.0.1", udp(1813, 40000, response_to(req))), 1);  // other host
  }
  auto r = sniff_file(path());
  EXPECT_TRUE(r.events.empty()) << "got\n" << join(r.events) << "want no events";
  EXPECT_EQ(r.counters.unmatched_responses, 2u);
}

TEST_F(WrittenCapture, UnknownNasIsIgnored) {
  const auto req = accounting_request(7, 1, "cust1", "s1", "192.0.2.10");
  {
    pcap_writer w(path(), DLT_RAW);
    w.write(ipv4("127.0.0.77", "127.0.0.9", udp(40000, 1813, req)), 0);
    w.write(ipv4("127.0.0.9", "127.0.0.77", udp(1813, 40000, response_to(req))), 1);
  }
  auto r = sniff_file(path());
  EXPECT_TRUE(r.events.empty());
  EXPECT_EQ(r.counters.unknown_nas, 1u);
}

TEST_F(WrittenCapture, PendingTableIsBounded) {
  const auto a = accounting_request(1, 1, "cust1", "s1", "192.0.2.10");
  const auto b = accounting_request(2, 1, "cust2", "s2", "192.0.2.11");
  const auto c = accounting_request(3, 1, "cust3", "s3", "192.0.2.12");
  {
    pcap_writer w(path(), DLT_RAW);
    w.write(nas_to_server(a), 0);
    w.write(nas_to_server(b), 0);
    w.write(nas_to_server(c), 0);  // table of 2: a is forgotten
    w.write(server_to_nas(response_to(a)), 1);
    w.write(server_to_nas(response_to(c)), 1);
  }
  auto r = sniff_file(path(), true, "udp", 2);
  EXPECT_EQ(join(r.events), "up user=cust3 session=s3 address=192.0.2.12 nas=192.0.2.1 source=pcap\n");
  EXPECT_EQ(r.counters.evicted, 1u);
  EXPECT_EQ(r.counters.unmatched_responses, 1u);
}

TEST_F(WrittenCapture, VlanTaggedEthernetAndIpv6AreDecoded) {
  const auto req = accounting_request(9, 1, "cust6", "s6", "192.0.2.60");
  {
    pcap_writer w(path(), DLT_EN10MB);
    w.write(ethernet(nas_to_server(req), 0x0800, true), 0);
    w.write(ethernet(server_to_nas(response_to(req)), 0x0800, true), 0);
  }
  auto r = sniff_file(path());
  EXPECT_EQ(join(r.events), "up user=cust6 session=s6 address=192.0.2.60 nas=192.0.2.1 source=pcap\n");

  std::filesystem::remove(path());
  {
    pcap_writer w(path(), DLT_EN10MB);
    w.write(ethernet(ipv6("::1", "::9", udp(40000, 1813, req)), 0x86DD), 0);
    w.write(ethernet(ipv6("::9", "::1", udp(1813, 40000, response_to(req))), 0x86DD), 0);
  }
  auto v6 = sniff_file(path(), true, "udp", 4096, "::1");
  EXPECT_EQ(join(v6.events), "up user=cust6 session=s6 address=192.0.2.60 nas=192.0.2.1 source=pcap\n");
}

TEST_F(WrittenCapture, Ipv6RequestWithIpv6AttributesGivesAnIpv6UpEvent) {
  // NAS ::1 port 40000 → server ::1 port 1813, as captured on lo, in each
  // link type that carries IPv6 (tcpdump -i any writes SLL2).
  const auto req = ipv6_start(61);
  struct framing {
    const char* name;
    int dlt;
    bytes (*frame)(const bytes& l3);
  };
  const std::vector<framing> framings = {
      {"ethernet", DLT_EN10MB, [](const bytes& l3) { return ethernet(l3, 0x86DD); }},
      {"sll", DLT_LINUX_SLL, [](const bytes& l3) { return sll(l3, 0x86DD); }},
      {"sll2", DLT_LINUX_SLL2, [](const bytes& l3) { return sll2(l3, 0x86DD); }},
      {"raw", DLT_RAW, [](const bytes& l3) { return l3; }},
  };
  for (const auto& f : framings) {
    std::filesystem::remove(path());
    {
      pcap_writer w(path(), f.dlt);
      w.write(f.frame(ipv6("::1", "::1", udp(40000, 1813, req))), 0);
      w.write(f.frame(ipv6("::1", "::1", udp(1813, 40000, response_to(req)))), 0);
    }
    auto r = sniff_file(path(), true, "udp port 1813", 4096, "::1");
    ASSERT_EQ(r.raw_events.size(), 1u) << f.name << ": got " << r.raw_events.size() << " events, want 1";
    const auto got = describe_with_ipv6(r.raw_events[0]);
    EXPECT_EQ(got, ipv6_start_event) << f.name << ": got " << got << ", want " << ipv6_start_event;
    EXPECT_EQ(r.counters.undecodable, 0u) << f.name << ": got undecodable " << r.counters.undecodable;
  }
}

TEST_F(WrittenCapture, GarbageFramesAreCountedNotFatal) {
  {
    pcap_writer w(path(), DLT_EN10MB);
    w.write(bytes(5, 0xff), 0);
    w.write(ethernet(nas_to_server(bytes{4, 1, 0, 20})), 0);  // a 4-octet "RADIUS" payload
    w.write(ethernet(nas_to_server(bytes{1, 1, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})), 0);
    w.write(ethernet(server_to_nas(bytes{5, 1, 0})), 0);
  }
  auto r = sniff_file(path(), true, "");  // no filter: the garbage reaches the decoder
  EXPECT_TRUE(r.events.empty());
  EXPECT_EQ(r.counters.frames, 4u);
  EXPECT_EQ(r.counters.undecodable, 1u);
  EXPECT_EQ(r.counters.malformed, 1u);
  EXPECT_EQ(r.counters.other_codes, 1u);
  EXPECT_EQ(r.counters.bad_responses, 1u);
}

TEST(PcapSnifferOpen, BadFilterFileAndModeAreStartUpFailures) {
  asio::io_context io;
  auto handler = [](const link_event&) -> asio::awaitable<bool> { co_return true; };
  pcap_sniffer_options neither;
  EXPECT_THROW(pcap_sniffer(io.get_executor(), neither, handler).open(), std::runtime_error);
  pcap_sniffer_options missing;
  missing.file = "/nonexistent/file.pcap";
  EXPECT_THROW(pcap_sniffer(io.get_executor(), missing, handler).open(), std::runtime_error);
  pcap_sniffer_options bad_filter;
  bad_filter.file = (data_dir / "radclient-ethernet.pcap").string();
  bad_filter.filter = "udp port";
  EXPECT_THROW(pcap_sniffer(io.get_executor(), bad_filter, handler).open(), std::runtime_error);
}

// ---- live: the listener answers radclient, the sniffer watches lo ----------------

struct live_rig {
  asio::io_context io;
  std::mutex mutex;
  std::vector<std::string> listener_events, sniffer_events;
  int failures_left = 0;  // the listener's handler fails this many calls of user cust2
  std::unique_ptr<radius_listener> listener;
  std::unique_ptr<pcap_sniffer> sniffer;
  std::thread thread;
  std::uint16_t port = 0;

  // Listens on `address` (127.0.0.1 or ::1), accepting radclient from the same address.
  void start_listener(std::uint16_t listen_port, const std::string& address = "127.0.0.1") {
    radius_listener_options o;
    o.addresses.emplace_back(make_address(address), listen_port);
    if (o.clients.add(address, secret, "radclient")) throw std::runtime_error("nas_table");
    listener = std::make_unique<radius_listener>(io.get_executor(), std::move(o),
                                                 [this](const link_event& e) -> asio::awaitable<bool> {
                                                   std::lock_guard lock(mutex);
                                                   listener_events.push_back(describe(e));
                                                   if (e.user == "cust2" && failures_left > 0) {
                                                     --failures_left;
                                                     co_return false;
                                                   }
                                                   co_return true;
                                                 });
    listener->open();
    port = listener->local_endpoints().at(0).port();
    asio::co_spawn(io, listener->run(), asio::detached);
  }
  void run() {
    thread = std::thread([this] { io.run(); });
  }
  ~live_rig() {
    if (listener) listener->stop();
    if (sniffer) sniffer->stop();
    if (thread.joinable()) thread.join();
  }
};

// radclient's attribute texts for the traffic in the committed captures.
struct radclient_step {
  const char* attributes;
  const char* key;
  int retries;
};
const std::vector<radclient_step> capture_traffic = {
    {"Acct-Status-Type = Start\nUser-Name = \"cust1\"\nAcct-Session-Id = \"00000001\"\n"
     "Framed-IP-Address = 192.0.2.10\nNAS-IP-Address = 192.0.2.1\nAcct-Delay-Time = 0\n",
     secret, 1},
    {"Acct-Status-Type = Interim-Update\nUser-Name = \"cust1\"\nAcct-Session-Id = \"00000001\"\n"
     "Framed-IP-Address = 192.0.2.11\nNAS-IP-Address = 192.0.2.1\nEvent-Timestamp = 1700000000\n",
     secret, 1},
    {"Acct-Status-Type = Stop\nUser-Name = \"cust1\"\nAcct-Session-Id = \"00000001\"\n"
     "Framed-IP-Address = 192.0.2.11\nNAS-IP-Address = 192.0.2.1\nAcct-Terminate-Cause = Lost-Carrier\n",
     secret, 1},
    {"Acct-Status-Type = Accounting-On\nAcct-Session-Id = \"00000000\"\nNAS-Identifier = \"bras-1\"\n",
     secret, 1},
    {"Acct-Status-Type = Start\nUser-Name = \"mallory\"\nAcct-Session-Id = \"0000EEEE\"\n"
     "Framed-IP-Address = 198.51.100.66\nNAS-IP-Address = 192.0.2.1\n",
     "wrong-secret", 2},
    {"Acct-Status-Type = Start\nUser-Name = \"cust2\"\nAcct-Session-Id = \"00000002\"\n"
     "Framed-IP-Address = 192.0.2.20\nNAS-IP-Address = 192.0.2.1\nFramed-IPv6-Prefix = 2001:db8:20::/48\n",
     secret, 2},
};

void send_capture_traffic(std::uint16_t port) {
  for (const auto& step : capture_traffic) {
    test::run_command({"radclient", "-r", std::to_string(step.retries), "-t", "1",
                       "127.0.0.1:" + std::to_string(port), "acct", step.key},
                      20s, std::string(step.attributes));
  }
}

bool program_exists(const std::string& name) {
  for (const char* dir : {"/usr/bin/", "/usr/sbin/", "/usr/local/bin/"}) {
    if (std::filesystem::exists(std::string(dir) + name)) return true;
  }
  return false;
}

// Opens a live sniffer on lo for the rig's port, accepting NAS `nas_source`;
// false when this process may not capture (the caller skips).
bool start_live_sniffer(live_rig& rig, const std::string& nas_source, std::string& why,
                        std::string (*show)(const link_event&) = describe) {
  pcap_sniffer_options o;
  o.interface = "lo";
  o.filter = "udp port " + std::to_string(rig.port);
  if (o.clients.add(nas_source, secret, "radclient")) throw std::runtime_error("nas_table");
  rig.sniffer = std::make_unique<pcap_sniffer>(rig.io.get_executor(), std::move(o),
                                               [&rig, show](const link_event& e) -> asio::awaitable<bool> {
                                                 std::lock_guard lock(rig.mutex);
                                                 rig.sniffer_events.push_back(show(e));
                                                 co_return true;
                                               });
  try {
    rig.sniffer->open();  // capturing from here on
  } catch (const std::runtime_error& e) {
    why = std::string("cannot capture on lo (needs root or CAP_NET_RAW): ") + e.what();
    return false;
  }
  asio::co_spawn(rig.io, rig.sniffer->run(), asio::detached);
  rig.run();
  return true;
}

TEST(PcapSnifferLive, SeesRadclientTalkingToTheListenerOnLoopback) {
  if (!program_exists("radclient")) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  live_rig rig;
  rig.failures_left = 1;
  rig.start_listener(0);
  if (std::string why; !start_live_sniffer(rig, "127.0.0.1", why)) GTEST_SKIP() << why;
  send_capture_traffic(rig.port);
  auto want = capture_events;
  ASSERT_TRUE(test::wait_until([&] { return rig.sniffer->counters().events >= want.size(); }, 10s))
      << "got " << rig.sniffer->counters().events << " events, want " << want.size();
  std::lock_guard lock(rig.mutex);
  EXPECT_EQ(join(rig.sniffer_events), join(want)) << "got\n"
                                                  << join(rig.sniffer_events) << "want\n"
                                                  << join(want);
}

TEST(PcapSnifferLive, SeesAnIpv6NasTalkingToTheListenerOverIpv6OnLoopback) {
  if (!program_exists("radclient")) GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
  live_rig rig;
  rig.start_listener(0, "::1");
  if (std::string why; !start_live_sniffer(rig, "::1", why, describe_with_ipv6)) GTEST_SKIP() << why;
  auto r = test::run_command({"radclient", "-6", "-r", "1", "-t", "1", "[::1]:" + std::to_string(rig.port),
                              "acct", secret},
                             20s,
                             std::string("Acct-Status-Type = Start\nUser-Name = \"cust6\"\n"
                                         "Acct-Session-Id = \"s6\"\nNAS-IPv6-Address = 2001:db8::1\n"
                                         "Framed-IPv6-Prefix = 2001:db8:0:5600::/64\n"
                                         "Framed-Interface-Id = 0211:22ff:fe33:4455\n"
                                         "Delegated-IPv6-Prefix = 2001:db8:ff00::/40\n"));
  EXPECT_EQ(r.exit_code, 0) << "radclient -6: got exit " << r.exit_code << ", want 0\n" << r.stderr_text;
  ASSERT_TRUE(test::wait_until([&] { return rig.sniffer->counters().events >= 1; }, 10s))
      << "got " << rig.sniffer->counters().events << " events, want 1";
  std::lock_guard lock(rig.mutex);
  const auto got = join(rig.sniffer_events);
  const auto want = std::string(ipv6_start_event) + "\n";
  EXPECT_EQ(got, want) << "got\n" << got << "want\n" << want;
}

// Regenerates tests/data/radius/radclient-{ethernet,sll,sll2}.pcap (README.md
// there). Run by hand as root:
//   pcap_sniffer_test --gtest_also_run_disabled_tests --gtest_filter='*Regenerate*'
// It needs port 11813 free, tshark and tcpdump; the output goes to
// $FLUSHGATE_CAPTURE_DIR (default: the source tree's tests/data/radius).
TEST(RadiusCaptures, DISABLED_Regenerate) {
  const char* env = std::getenv("FLUSHGATE_CAPTURE_DIR");
  const std::filesystem::path out_dir = env ? std::filesystem::path(env) : data_dir;
  std::filesystem::create_directories(out_dir);
  struct tool {
    const char* file;
    std::vector<std::string> argv;
    const char* ready;  // in its stderr once capturing
  };
  const std::string filter = "udp port " + std::to_string(capture_port);
  // 4 answered exchanges, 2 unanswered wrong-secret tries, 2 tries of cust2 and
  // the answer to the second: the tools stop by themselves after 13 frames, so
  // that nothing in flight is lost.
  const std::string frames = "13";
  const std::vector<tool> tools = {
      {"radclient-ethernet.pcap",
       {"tshark", "-i", "lo", "-f", filter, "-c", frames, "-F", "pcap", "-q", "-w"},
       "Capture started"},
      {"radclient-sll.pcap",
       {"tshark", "-i", "any", "-f", filter, "-c", frames, "-F", "pcap", "-q", "-w"},
       "Capture started"},
      {"radclient-sll2.pcap", {"tcpdump", "-i", "any", "-U", "-c", frames, "-w"}, "listening on"},
  };
  for (const auto& t : tools) {
    live_rig rig;
    rig.failures_left = 1;
    rig.start_listener(capture_port);
    rig.run();
    auto argv = t.argv;
    argv.push_back((out_dir / t.file).string());
    if (argv[0] == "tcpdump") argv.push_back(filter);
    test::process capture(argv);
    ASSERT_TRUE(
        test::wait_until([&] { return capture.stderr_text().find(t.ready) != std::string::npos; }, 20s))
        << t.file << ": " << argv[0] << " did not start: " << capture.stderr_text();
    send_capture_traffic(rig.port);
    auto status = capture.wait_for_exit(20s);
    ASSERT_TRUE(status) << argv[0] << " did not see all " << frames << " frames: " << capture.stderr_text();
    std::lock_guard lock(rig.mutex);
    std::printf("%s: listener saw\n%s", t.file, join(rig.listener_events).c_str());
  }
}

}  // namespace
}  // namespace flushgate::linkmon
