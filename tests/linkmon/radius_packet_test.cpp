// radius_packet_test.cpp — linkmon/radius_packet: packets made by the real
// radclient (tests/data/radius/radclient-packets.txt), the PROTOCOLS.md §10
// item 14 vector, and tables of malformed and corner-case packets.
#include "linkmon/radius_packet.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace flushgate::linkmon {
namespace {

using bytes = std::vector<std::uint8_t>;
constexpr const char* secret = "testing123";

bytes from_hex(std::string_view hex) {
  bytes out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoul(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string to_hex(std::span<const std::uint8_t> b) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (auto x : b) {
    out += digits[x >> 4];
    out += digits[x & 15];
  }
  return out;
}

std::string error_name(const boost::system::error_code& ec) { return ec ? ec.message() : "ok"; }

template <typename T>
std::string error_name(const boost::system::result<T>& r) {
  return r ? "ok" : r.error().message();
}

// ---- radclient's packets ------------------------------------------------------

struct exchange {
  std::string secret;
  bytes request;
  bytes response;  // empty: none was sent
};

std::map<std::string, exchange> load_exchanges() {
  std::map<std::string, exchange> out;
  std::ifstream in(std::filesystem::path(FLUSHGATE_SOURCE_DIR) / "tests/data/radius/radclient-packets.txt");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name, key, request, response;
    fields >> name >> key >> request >> response;
    out[name] = exchange{key, from_hex(request), response == "-" ? bytes{} : from_hex(response)};
  }
  return out;
}

struct expected_fields {
  std::string name;
  acct_status status;
  std::string user, session, framed, nas;
  std::string ipv6;  // Framed-IPv6-Prefix address text
};

std::string describe(const accounting_request& r) {
  std::string s =
      "status=" + std::to_string(r.status_type) + " user=" + r.user_name + " session=" + r.session_id;
  s += " framed=" + (r.framed_ip ? ipv4_text(*r.framed_ip) : std::string("-"));
  s += " nas=" + nas_key(r, "-");
  s += " ipv6=" + r.framed_ipv6_prefix_address.value_or("-");
  if (r.framed_ipv6_prefix_address) s += "/" + std::to_string(r.framed_ipv6_prefix_length);
  return s;
}

TEST(RadiusPacket, ParsesRadclientPacketsAndSignsTheResponsesRadclientAccepted) {
  const auto exchanges = load_exchanges();
  ASSERT_EQ(exchanges.size(), 7u) << "tests/data/radius/radclient-packets.txt: got " << exchanges.size()
                                  << " exchanges, want 7";
  const std::map<std::string, std::string> want = {
      {"vector14", "status=1 user=cust1 session=00000001 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
      {"start", "status=1 user=cust1 session=00000001 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
      {"interim", "status=3 user=cust1 session=00000001 framed=192.0.2.11 nas=192.0.2.1 ipv6=-"},
      {"stop", "status=2 user=cust1 session=00000001 framed=192.0.2.11 nas=192.0.2.1 ipv6=-"},
      {"accounting-on", "status=7 user= session=00000000 framed=- nas=bras-1 ipv6=-"},
      {"start-ipv6",
       "status=1 user=cust2 session=00000002 framed=192.0.2.20 nas=192.0.2.1 ipv6=2001:db8:20::/48"},
  };
  for (const auto& [name, x] : exchanges) {
    auto r = parse_accounting_request(x.request, x.secret);
    if (name == "wrong-secret") {
      // radclient signed it with "wrong-secret", not with testing123.
      EXPECT_EQ(error_name(r), error_name(radius_errc::bad_authenticator)) << name;
      EXPECT_TRUE(parse_accounting_request(x.request, "wrong-secret")) << name;
      continue;
    }
    ASSERT_TRUE(r) << name << ": got " << error_name(r) << ", want ok";
    EXPECT_EQ(describe(*r), want.at(name)) << name;
    const auto response = build_accounting_response(*r, x.secret);
    EXPECT_EQ(to_hex(response), to_hex(x.response))
        << name << ": got " << to_hex(response) << ", want " << to_hex(x.response);
    EXPECT_FALSE(verify_accounting_response(x.response, r->identifier, r->authenticator, x.secret)) << name;
  }
  const auto& stop = exchanges.at("stop");
  auto r = parse_accounting_request(stop.request, secret);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->terminate_cause, 2u);  // Lost-Carrier
  auto interim = parse_accounting_request(exchanges.at("interim").request, secret);
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->event_timestamp, 1700000000u);
  auto start = parse_accounting_request(exchanges.at("start").request, secret);
  ASSERT_TRUE(start);
  EXPECT_EQ(start->delay_time, 0u);
}

TEST(RadiusPacket, ProtocolsItem14VectorRoundTrips) {
  const auto request = from_hex(
      "04730037b69dc21ab4a2b7bd9513514f5851d62b2806000000012c0a3030303030303031010763757374310806c000020a0406"
      "c0000201");
  const auto response = from_hex("057300145d7c517a331e57a132966954552ef1e5");
  EXPECT_TRUE(check_request_authenticator(request, secret));
  EXPECT_FALSE(check_request_authenticator(request, "testing124"));
  auto r = parse_accounting_request(request, secret);
  ASSERT_TRUE(r) << "got " << error_name(r) << ", want ok";
  EXPECT_EQ(r->identifier, 0x73);
  EXPECT_EQ(to_hex(build_accounting_response(*r, secret)), to_hex(response));
  EXPECT_FALSE(verify_accounting_response(response, 0x73, r->authenticator, secret));
  // Re-signing the request reproduces radclient's authenticator.
  auto copy = request;
  std::fill(copy.begin() + 4, copy.begin() + 20, 0);
  sign_accounting_request(copy, secret);
  EXPECT_EQ(to_hex(copy), to_hex(request));
}

// ---- building packets -------------------------------------------------------------

struct attr {
  std::uint8_t type;
  bytes value;
};

attr text(std::uint8_t type, const std::string& s) { return {type, bytes(s.begin(), s.end())}; }
attr integer(std::uint8_t type, std::uint32_t v) {
  return {type,
          {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
           static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)}};
}

// A signed packet of `code` with `attrs` (Length = its size).
bytes packet(const std::vector<attr>& attrs, std::uint8_t code = 4, std::uint8_t id = 1) {
  bytes p(20);
  p[0] = code;
  p[1] = id;
  for (const auto& a : attrs) {
    p.push_back(a.type);
    p.push_back(static_cast<std::uint8_t>(a.value.size() + 2));
    p.insert(p.end(), a.value.begin(), a.value.end());
  }
  p[2] = static_cast<std::uint8_t>(p.size() >> 8);
  p[3] = static_cast<std::uint8_t>(p.size());
  sign_accounting_request(p, secret);
  return p;
}

// Re-sets Length to the size and re-signs after raw edits.
bytes resign(bytes p) {
  p[2] = static_cast<std::uint8_t>(p.size() >> 8);
  p[3] = static_cast<std::uint8_t>(p.size());
  sign_accounting_request(p, secret);
  return p;
}

const attr status_start = integer(40, 1);
const attr session = text(44, "s1");
const attr user = text(1, "cust1");
const attr nas_ip = integer(4, 0xC0000201);
const attr framed = integer(8, 0xC000020A);

std::vector<attr> base() { return {status_start, session, user, framed, nas_ip}; }
std::vector<attr> with(std::vector<attr> a, attr extra) {
  a.push_back(std::move(extra));
  return a;
}
std::vector<attr> without(std::uint8_t type) {
  std::vector<attr> out;
  for (auto& a : base()) {
    if (a.type != type) out.push_back(a);
  }
  return out;
}

struct malformed_case {
  const char* name;
  bytes datagram;
  radius_errc want;
};

TEST(RadiusPacket, MalformedPacketsAreRefusedWithTheirReason) {
  const auto good = packet(base());
  auto set_length = [](bytes p, std::size_t len) {
    p[2] = static_cast<std::uint8_t>(len >> 8);
    p[3] = static_cast<std::uint8_t>(len);
    sign_accounting_request(p, secret);
    return p;
  };
  auto truncated = good;
  truncated.pop_back();
  auto zero_length_attr = good;
  zero_length_attr.insert(zero_length_attr.end(), {26, 0, 0, 0});
  auto one_length_attr = good;
  one_length_attr.insert(one_length_attr.end(), {26, 1});
  auto past_end = good;
  past_end.insert(past_end.end(), {26, 9, 1, 2});
  auto lone_octet = good;
  lone_octet.push_back(26);
  auto flipped = good;
  flipped[8] ^= 0x01;
  auto tampered = good;
  tampered.back() ^= 0x01;

  const std::vector<malformed_case> cases = {
      {"empty", {}, radius_errc::too_short},
      {"19 octets", bytes(good.begin(), good.begin() + 19), radius_errc::too_short},
      {"truncated below Length", truncated, radius_errc::too_short},
      {"Length 19", set_length(good, 19), radius_errc::bad_length},
      {"Length 4096", set_length(good, 4096), radius_errc::bad_length},
      {"Length past the datagram", set_length(good, good.size() + 1), radius_errc::too_short},
      {"Access-Request code", packet(base(), 1), radius_errc::wrong_code},
      {"Accounting-Response code", packet(base(), 5), radius_errc::wrong_code},
      {"zero-length attribute", resign(zero_length_attr), radius_errc::bad_attribute},
      {"attribute length 1", resign(one_length_attr), radius_errc::bad_attribute},
      {"attribute past Length", set_length(past_end, past_end.size() - 2), radius_errc::bad_attribute},
      {"one octet left over", resign(lone_octet), radius_errc::bad_attribute},
      {"empty User-Name", packet(with(without(1), {1, {}})), radius_errc::bad_attribute_value},
      {"empty Acct-Session-Id", packet(with(without(44), {44, {}})), radius_errc::bad_attribute_value},
      {"3-octet Acct-Status-Type", packet(with(without(40), {40, {0, 0, 1}})),
       radius_errc::bad_attribute_value},
      {"5-octet Framed-IP-Address", packet(with(without(8), {8, {1, 2, 3, 4, 5}})),
       radius_errc::bad_attribute_value},
      {"5-octet Event-Timestamp", packet(with(base(), {55, {1, 2, 3, 4, 5}})),
       radius_errc::bad_attribute_value},
      {"missing Acct-Session-Id", packet(without(44)), radius_errc::missing_session_id},
      {"missing Acct-Status-Type", packet(without(40)), radius_errc::missing_status_type},
      {"two Acct-Status-Types", packet(with(base(), integer(40, 2))), radius_errc::duplicate_attribute},
      {"two Acct-Session-Ids", packet(with(base(), text(44, "s2"))), radius_errc::duplicate_attribute},
      {"two Framed-IP-Addresses", packet(with(base(), integer(8, 0xC000020B))),
       radius_errc::duplicate_attribute},
      {"two User-Names", packet(with(base(), text(1, "cust2"))), radius_errc::duplicate_attribute},
      {"no NAS-IP-Address, no NAS-Identifier", packet(without(4)), radius_errc::missing_nas},
      {"Framed-IP 255.255.255.255", packet(with(without(8), integer(8, 0xFFFFFFFF))),
       radius_errc::bad_framed_address},
      {"Framed-IP 255.255.255.254", packet(with(without(8), integer(8, 0xFFFFFFFE))),
       radius_errc::bad_framed_address},
      {"Framed-IP 0.0.0.0", packet(with(without(8), integer(8, 0))), radius_errc::bad_framed_address},
      {"IPv6 prefix length 129", packet(with(base(), {97, {0, 129, 0x20, 0x01}})),
       radius_errc::bad_attribute_value},
      {"IPv6 prefix too short for its length", packet(with(base(), {97, {0, 64, 0x20, 0x01, 0x0d, 0xb8}})),
       radius_errc::bad_attribute_value},
      {"IPv6 prefix with bits past its length", packet(with(base(), {97, {0, 12, 0x20, 0x01}})),
       radius_errc::bad_attribute_value},
      {"IPv6 prefix of 17 octets", packet(with(base(), {97, bytes(19, 0)})),
       radius_errc::bad_attribute_value},
      {"authenticator bit flipped", flipped, radius_errc::bad_authenticator},
      {"attribute tampered", tampered, radius_errc::bad_authenticator},
  };
  for (const auto& c : cases) {
    auto r = parse_accounting_request(c.datagram, secret);
    EXPECT_EQ(error_name(r), error_name(c.want))
        << c.name << ": got " << error_name(r) << ", want " << error_name(c.want);
  }
}

TEST(RadiusPacket, AcceptsWhatTheRfcAllows) {
  struct ok_case {
    const char* name;
    bytes datagram;
    std::string want;
  };
  auto padded = packet(base());
  padded.resize(4096, 0xEE);  // octets past Length are padding
  std::vector<attr> nas_id_only = without(4);
  nas_id_only.push_back(text(32, "bras-1"));
  const std::vector<ok_case> cases = {
      {"base", packet(base()), "status=1 user=cust1 session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
      {"padding past Length", padded,
       "status=1 user=cust1 session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
      {"NAS-Identifier only", packet(nas_id_only),
       "status=1 user=cust1 session=s1 framed=192.0.2.10 nas=bras-1 ipv6=-"},
      {"no User-Name", packet(without(1)),
       "status=1 user= session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
      {"unknown and vendor attributes skipped",
       packet(with(with(base(), {26, {0, 0, 0, 9, 1, 3, 'x'}}), {200, {}})),
       "status=1 user=cust1 session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
      {"Message-Authenticator is not required nor checked", packet(with(base(), {80, bytes(16, 0)})),
       "status=1 user=cust1 session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
      {"IPv6 /48 in 6 octets", packet(with(base(), {97, {0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 0x20}})),
       "status=1 user=cust1 session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=2001:db8:20::/48"},
      {"IPv6 /0", packet(with(base(), {97, {0, 0}})),
       "status=1 user=cust1 session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=::/0"},
      {"IPv6 /61, zero bits after",
       packet(with(base(), {97, {0, 61, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0x08}})),
       "status=1 user=cust1 session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=2001:db8:0:8::/61"},
      {"Failed status type", packet(with(without(40), integer(40, 15))),
       "status=15 user=cust1 session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
      {"253-octet User-Name", packet(with(without(1), text(1, std::string(253, 'u')))),
       "status=1 user=" + std::string(253, 'u') + " session=s1 framed=192.0.2.10 nas=192.0.2.1 ipv6=-"},
  };
  for (const auto& c : cases) {
    auto r = parse_accounting_request(c.datagram, secret);
    ASSERT_TRUE(r) << c.name << ": got " << error_name(r) << ", want ok";
    EXPECT_EQ(describe(*r), c.want) << c.name;
  }
}

TEST(RadiusPacket, LargestPacketParses) {
  std::vector<attr> a = base();
  std::size_t room = 4095 - 20;
  for (const auto& x : a) room -= x.value.size() + 2;
  while (room > 0) {  // fill up to exactly 4095 octets with Class attributes
    std::size_t take = std::min<std::size_t>(room, 255);
    if (room - take == 1) --take;  // never leave a single octet
    a.push_back({25, bytes(take - 2, 'c')});
    room -= take;
  }
  auto p = packet(a);
  ASSERT_EQ(p.size(), 4095u);
  EXPECT_TRUE(parse_accounting_request(p, secret));
}

TEST(RadiusPacket, ProxyStatesAreEchoedInOrder) {
  auto p = packet(with(with(base(), text(33, "hop-1")), text(33, "hop-2")));
  auto r = parse_accounting_request(p, secret);
  ASSERT_TRUE(r);
  auto response = build_accounting_response(*r, secret);
  EXPECT_EQ(response.size(), 20u + 7 + 7);
  EXPECT_EQ(to_hex(std::span(response).subspan(20)), "2107686f702d312107686f702d32");
  EXPECT_FALSE(verify_accounting_response(response, r->identifier, r->authenticator, secret));
}

TEST(RadiusPacket, ResponsesAreCheckedAgainstTheirRequest) {
  auto r = parse_accounting_request(packet(base(), 4, 42), secret);
  ASSERT_TRUE(r);
  const auto good = build_accounting_response(*r, secret);
  auto other_auth = r->authenticator;
  other_auth[0] ^= 1;
  auto tampered = good;
  tampered[5] ^= 1;
  auto wrong_code = good;
  wrong_code[0] = 2;
  auto bad_attr = good;
  bad_attr.insert(bad_attr.end(), {33, 0});
  bad_attr[3] = static_cast<std::uint8_t>(bad_attr.size());

  struct response_case {
    const char* name;
    bytes response;
    std::uint8_t id;
    radius_authenticator auth;
    std::string key;
    boost::system::error_code want;
  };
  const std::vector<response_case> cases = {
      {"good", good, 42, r->authenticator, secret, {}},
      {"other identifier", good, 43, r->authenticator, secret, radius_errc::wrong_identifier},
      {"other request", good, 42, other_auth, secret, radius_errc::bad_authenticator},
      {"other secret", good, 42, r->authenticator, "testing124", radius_errc::bad_authenticator},
      {"tampered", tampered, 42, r->authenticator, secret, radius_errc::bad_authenticator},
      {"wrong code", wrong_code, 42, r->authenticator, secret, radius_errc::wrong_code},
      {"short", bytes(good.begin(), good.begin() + 10), 42, r->authenticator, secret, radius_errc::too_short},
      {"bad attribute", bad_attr, 42, r->authenticator, secret, radius_errc::bad_authenticator},
  };
  for (const auto& c : cases) {
    auto ec = verify_accounting_response(c.response, c.id, c.auth, c.key);
    EXPECT_EQ(error_name(ec), error_name(c.want)) << c.name;
  }
}

std::string describe(const std::optional<link_event>& e) {
  if (!e) return "none";
  const char* k = e->k == link_event::kind::up ? "up" : e->k == link_event::kind::down ? "down" : "nas_reset";
  return std::string(k) + " user=" + e->user + " session=" + e->session_id + " address=" + e->address +
         " nas=" + e->nas + " source=" + e->source;
}

TEST(RadiusPacket, RequestsBecomeLinkEvents) {
  auto make = [](std::uint32_t status, bool with_user, bool with_framed) {
    accounting_request r;
    r.status_type = status;
    r.session_id = "s1";
    if (with_user) r.user_name = "cust1";
    if (with_framed) r.framed_ip = 0xC000020A;
    r.nas_ip = 0xC0000201;
    return r;
  };
  struct event_case {
    const char* name;
    accounting_request request;
    std::string want;
  };
  auto no_nas = make(7, false, false);
  no_nas.nas_ip.reset();
  auto nas_id = make(8, false, false);
  nas_id.nas_ip.reset();
  nas_id.nas_identifier = "bras-1";
  const std::vector<event_case> cases = {
      {"start", make(1, true, true),
       "up user=cust1 session=s1 address=192.0.2.10 nas=192.0.2.1 source=radius"},
      {"interim", make(3, true, true),
       "up user=cust1 session=s1 address=192.0.2.10 nas=192.0.2.1 source=radius"},
      {"stop", make(2, true, false), "down user=cust1 session=s1 address= nas=192.0.2.1 source=radius"},
      {"accounting-on", make(7, true, true), "nas_reset user= session= address= nas=192.0.2.1 source=radius"},
      {"accounting-off by identifier", nas_id, "nas_reset user= session= address= nas=bras-1 source=radius"},
      {"accounting-on keyed by source", no_nas,
       "nas_reset user= session= address= nas=203.0.113.5 source=radius"},
      {"start without address", make(1, true, false), "none"},
      {"start without user", make(1, false, true), "none"},
      {"stop without user", make(2, false, true), "none"},
      {"failed", make(15, true, true), "none"},
      {"tunnel-start", make(9, true, true), "none"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(describe(to_link_event(c.request, "203.0.113.5", "radius")), c.want) << c.name;
  }
}

// ---- IPv6: RFC 3162, RFC 4818, RFC 6911 ------------------------------------------

// An IPv6 address attribute (16 octets) from its text.
attr ipv6_address(std::uint8_t type, const std::string& address) {
  bytes v(16);
  EXPECT_EQ(inet_pton(AF_INET6, address.c_str(), v.data()), 1) << "test bug: " << address;
  return {type, v};
}

// A prefix attribute (Framed-IPv6-Prefix 97, Delegated-IPv6-Prefix 123): Reserved,
// Prefix-Length, then the octets the length needs (RFC 3162 §2.3).
attr ipv6_prefix(std::uint8_t type, const std::string& address, std::uint8_t length) {
  bytes a(16);
  EXPECT_EQ(inet_pton(AF_INET6, address.c_str(), a.data()), 1) << "test bug: " << address;
  bytes v{0, length};
  v.insert(v.end(), a.begin(), a.begin() + (length + 7) / 8);
  return {type, v};
}

const attr nas_ipv6 = ipv6_address(95, "2001:db8::1");
const attr interface_id = {96, {0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55}};
const attr framed_prefix = ipv6_prefix(97, "2001:db8:0:5600::", 64);
const attr delegated_prefix = ipv6_prefix(123, "2001:db8:ff00::", 40);
const attr framed_ipv6 = ipv6_address(168, "2001:db8:0:5600::77");

std::string ipv6_fields(const accounting_request& r) {
  std::string s = "framed6=" + r.framed_ipv6_address.value_or("-");
  s += " ifid=";
  if (r.framed_interface_id) {
    s += to_hex(*r.framed_interface_id);
  } else {
    s += "-";
  }
  s += " prefix=" + r.framed_ipv6_prefix_address.value_or("-");
  if (r.framed_ipv6_prefix_address) s += "/" + std::to_string(r.framed_ipv6_prefix_length);
  s += " delegated=" + r.delegated_ipv6_prefix_address.value_or("-");
  if (r.delegated_ipv6_prefix_address) s += "/" + std::to_string(r.delegated_ipv6_prefix_length);
  s += " nas6=" + (r.nas_ipv6.empty() ? std::string("-") : r.nas_ipv6);
  return s;
}

TEST(RadiusPacket, ParsesEachIpv6Attribute) {
  struct ipv6_case {
    const char* name;
    std::vector<attr> attrs;
    std::string want;
  };
  const std::vector<ipv6_case> cases = {
      {"none", base(), "framed6=- ifid=- prefix=- delegated=- nas6=-"},
      {"NAS-IPv6-Address", with(base(), nas_ipv6), "framed6=- ifid=- prefix=- delegated=- nas6=2001:db8::1"},
      {"Framed-Interface-Id", with(base(), interface_id),
       "framed6=- ifid=021122fffe334455 prefix=- delegated=- nas6=-"},
      {"Framed-IPv6-Prefix", with(base(), framed_prefix),
       "framed6=- ifid=- prefix=2001:db8:0:5600::/64 delegated=- nas6=-"},
      {"Delegated-IPv6-Prefix", with(base(), delegated_prefix),
       "framed6=- ifid=- prefix=- delegated=2001:db8:ff00::/40 nas6=-"},
      {"Delegated-IPv6-Prefix /128 in 16 octets", with(base(), ipv6_prefix(123, "2001:db8::9", 128)),
       "framed6=- ifid=- prefix=- delegated=2001:db8::9/128 nas6=-"},
      {"Framed-IPv6-Address", with(base(), framed_ipv6),
       "framed6=2001:db8:0:5600::77 ifid=- prefix=- delegated=- nas6=-"},
      {"all of them",
       with(with(with(with(with(base(), nas_ipv6), interface_id), framed_prefix), delegated_prefix),
            framed_ipv6),
       "framed6=2001:db8:0:5600::77 ifid=021122fffe334455 prefix=2001:db8:0:5600::/64 "
       "delegated=2001:db8:ff00::/40 nas6=2001:db8::1"},
  };
  for (const auto& c : cases) {
    auto r = parse_accounting_request(packet(c.attrs), secret);
    ASSERT_TRUE(r) << c.name << ": got " << error_name(r) << ", want ok";
    EXPECT_EQ(ipv6_fields(*r), c.want) << c.name << ": got " << ipv6_fields(*r) << ", want " << c.want;
  }
}

TEST(RadiusPacket, Ipv6AttributesOfTheWrongSizeTwiceOrUnusableAreRefused) {
  auto v6only_nas = without(4);
  v6only_nas.push_back(nas_ipv6);
  const std::vector<malformed_case> cases = {
      {"15-octet NAS-IPv6-Address", packet(with(base(), {95, bytes(15, 1)})),
       radius_errc::bad_attribute_value},
      {"17-octet NAS-IPv6-Address", packet(with(base(), {95, bytes(17, 1)})),
       radius_errc::bad_attribute_value},
      {"7-octet Framed-Interface-Id", packet(with(base(), {96, bytes(7, 1)})),
       radius_errc::bad_attribute_value},
      {"9-octet Framed-Interface-Id", packet(with(base(), {96, bytes(9, 1)})),
       radius_errc::bad_attribute_value},
      {"empty Framed-Interface-Id", packet(with(base(), {96, {}})), radius_errc::bad_attribute_value},
      {"15-octet Framed-IPv6-Address", packet(with(base(), {168, bytes(15, 0x20)})),
       radius_errc::bad_attribute_value},
      {"17-octet Framed-IPv6-Address", packet(with(base(), {168, bytes(17, 0x20)})),
       radius_errc::bad_attribute_value},
      {"Delegated-IPv6-Prefix length 129", packet(with(base(), {123, {0, 129, 0x20, 0x01}})),
       radius_errc::bad_attribute_value},
      {"Delegated-IPv6-Prefix too short for its length", packet(with(base(), {123, {0, 56, 0x20, 0x01}})),
       radius_errc::bad_attribute_value},
      {"Delegated-IPv6-Prefix with bits past its length", packet(with(base(), {123, {0, 12, 0x20, 0x01}})),
       radius_errc::bad_attribute_value},
      {"Delegated-IPv6-Prefix of 17 octets", packet(with(base(), {123, bytes(19, 0)})),
       radius_errc::bad_attribute_value},
      {"Delegated-IPv6-Prefix of 1 octet", packet(with(base(), {123, {0}})),
       radius_errc::bad_attribute_value},
      {"Framed-IPv6-Address ::", packet(with(base(), ipv6_address(168, "::"))),
       radius_errc::bad_framed_address},
      {"Framed-IPv6-Address ff02::1", packet(with(base(), ipv6_address(168, "ff02::1"))),
       radius_errc::bad_framed_address},
      {"Framed-IPv6-Address ff0e::101", packet(with(base(), ipv6_address(168, "ff0e::101"))),
       radius_errc::bad_framed_address},
      {"two NAS-IPv6-Addresses", packet(with(with(base(), nas_ipv6), ipv6_address(95, "2001:db8::2"))),
       radius_errc::duplicate_attribute},
      {"two Framed-Interface-Ids", packet(with(with(base(), interface_id), {96, bytes(8, 1)})),
       radius_errc::duplicate_attribute},
      {"two Framed-IPv6-Prefixes",
       packet(with(with(base(), framed_prefix), ipv6_prefix(97, "2001:db8::", 64))),
       radius_errc::duplicate_attribute},
      {"two Delegated-IPv6-Prefixes",
       packet(with(with(base(), delegated_prefix), ipv6_prefix(123, "2001:db8:1::", 48))),
       radius_errc::duplicate_attribute},
      {"two Framed-IPv6-Addresses",
       packet(with(with(base(), framed_ipv6), ipv6_address(168, "2001:db8:0:5600::78"))),
       radius_errc::duplicate_attribute},
      {"NAS-IPv6-Address stands in for NAS-IP-Address", packet(v6only_nas), radius_errc::ok},
      {"no NAS attribute of any kind", packet(without(4)), radius_errc::missing_nas},
  };
  for (const auto& c : cases) {
    auto r = parse_accounting_request(c.datagram, secret);
    const auto want = c.want == radius_errc::ok ? std::string("ok") : error_name(c.want);
    EXPECT_EQ(error_name(r), want) << c.name << ": got " << error_name(r) << ", want " << want;
  }
}

std::string describe_with_ipv6(const std::optional<link_event>& e) {
  if (!e) return "none";
  std::string s = describe(e) + " ipv6=" + e->ipv6_address + " prefix=" + e->ipv6_prefix;
  if (e->k == link_event::kind::down) {
    s += e->ended == link_event::family::both   ? " ended=both"
         : e->ended == link_event::family::ipv4 ? " ended=ipv4"
                                                : " ended=ipv6";
  }
  return s;
}

TEST(RadiusPacket, Ipv6RequestsBecomeLinkEvents) {
  const attr start = integer(40, 1), interim = integer(40, 3), stop = integer(40, 2),
             acct_on = integer(40, 7);
  // A session with no IPv4 at all, the NAS known by its IPv6 address only.
  auto v6 = [&](const attr& status, std::vector<attr> extra) {
    std::vector<attr> a{status, session, user, nas_ipv6};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  struct event_case {
    const char* name;
    std::vector<attr> attrs;
    std::string want;
  };
  const std::vector<event_case> cases = {
      {"IPv6-only Start is a full up", v6(start, {framed_ipv6, delegated_prefix}),
       "up user=cust1 session=s1 address= nas=2001:db8::1 source=radius ipv6=2001:db8:0:5600::77 "
       "prefix=2001:db8:ff00::/40"},
      {"prefix /64 + interface id make the address", v6(start, {framed_prefix, interface_id}),
       "up user=cust1 session=s1 address= nas=2001:db8::1 source=radius "
       "ipv6=2001:db8:0:5600:211:22ff:fe33:4455 "
       "prefix=2001:db8:0:5600::/64"},
      {"prefix /56 + interface id make the address",
       v6(start, {ipv6_prefix(97, "2001:db8:0:5600::", 56), interface_id}),
       "up user=cust1 session=s1 address= nas=2001:db8::1 source=radius "
       "ipv6=2001:db8:0:5600:211:22ff:fe33:4455 "
       "prefix=2001:db8:0:5600::/56"},
      {"prefix /80 + interface id: no address",
       v6(start, {ipv6_prefix(97, "2001:db8:0:5600:1::", 80), interface_id}),
       "up user=cust1 session=s1 address= nas=2001:db8::1 source=radius ipv6= prefix=2001:db8:0:5600:1::/80"},
      {"Framed-IPv6-Address wins over prefix + interface id",
       v6(start, {framed_prefix, interface_id, framed_ipv6}),
       "up user=cust1 session=s1 address= nas=2001:db8::1 source=radius ipv6=2001:db8:0:5600::77 "
       "prefix=2001:db8:0:5600::/64"},
      {"Delegated preferred over Framed prefix", v6(start, {framed_prefix, delegated_prefix}),
       "up user=cust1 session=s1 address= nas=2001:db8::1 source=radius ipv6= prefix=2001:db8:ff00::/40"},
      {"Framed prefix alone is the prefix", v6(interim, {framed_prefix}),
       "up user=cust1 session=s1 address= nas=2001:db8::1 source=radius ipv6= prefix=2001:db8:0:5600::/64"},
      {"interface id alone is nothing", v6(start, {interface_id}), "none"},
      {"dual stack", with(with(base(), framed_ipv6), delegated_prefix),
       "up user=cust1 session=s1 address=192.0.2.10 nas=192.0.2.1 source=radius ipv6=2001:db8:0:5600::77 "
       "prefix=2001:db8:ff00::/40"},
      {"NAS-IP-Address wins over NAS-IPv6-Address", with(base(), nas_ipv6),
       "up user=cust1 session=s1 address=192.0.2.10 nas=192.0.2.1 source=radius ipv6= prefix="},
      {"NAS-IPv6-Address wins over NAS-Identifier", v6(start, {framed_ipv6, text(32, "bras-6")}),
       "up user=cust1 session=s1 address= nas=2001:db8::1 source=radius ipv6=2001:db8:0:5600::77 prefix="},
      {"Stop ends both families", v6(stop, {framed_ipv6, delegated_prefix}),
       "down user=cust1 session=s1 address= nas=2001:db8::1 source=radius ipv6=2001:db8:0:5600::77 "
       "prefix=2001:db8:ff00::/40 ended=both"},
      {"Accounting-On from an IPv6 NAS",
       {acct_on, text(44, "0"), nas_ipv6, framed_ipv6},
       "nas_reset user= session= address= nas=2001:db8::1 source=radius ipv6= prefix="},
  };
  for (const auto& c : cases) {
    auto r = parse_accounting_request(packet(c.attrs), secret);
    ASSERT_TRUE(r) << c.name << ": got " << error_name(r) << ", want ok";
    const auto got = describe_with_ipv6(to_link_event(*r, "2001:db8::99", "radius"));
    EXPECT_EQ(got, c.want) << c.name << ": got " << got << ", want " << c.want;
  }
}

TEST(RadiusPacket, ErrorCategoryNamesEveryCode) {
  EXPECT_STREQ(radius_category().name(), "flushgate.radius");
  for (int e = 0; e <= static_cast<int>(radius_errc::wrong_identifier); ++e) {
    EXPECT_NE(make_error_code(static_cast<radius_errc>(e)).message(), "unknown RADIUS error") << e;
  }
  EXPECT_EQ(ipv4_text(0x7F000001), "127.0.0.1");
  EXPECT_EQ(to_acct_status(3), acct_status::interim_update);
  EXPECT_EQ(to_acct_status(4), acct_status::other);
}

}  // namespace
}  // namespace flushgate::linkmon
