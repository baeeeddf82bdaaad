// radius_packet.cpp — see radius_packet.hpp.
#include "linkmon/radius_packet.hpp"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <bitset>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace flushgate::linkmon {

namespace {

// Attribute types used here (RFC 2865 §5, RFC 2866 §5, RFC 2869 §5.3, RFC 3162 §2,
// RFC 4818 §3, RFC 6911 §3.1).
constexpr std::uint8_t attr_user_name = 1;
constexpr std::uint8_t attr_nas_ip_address = 4;
constexpr std::uint8_t attr_framed_ip_address = 8;
constexpr std::uint8_t attr_nas_identifier = 32;
constexpr std::uint8_t attr_proxy_state = 33;
constexpr std::uint8_t attr_acct_status_type = 40;
constexpr std::uint8_t attr_acct_delay_time = 41;
constexpr std::uint8_t attr_acct_session_id = 44;
constexpr std::uint8_t attr_acct_terminate_cause = 49;
constexpr std::uint8_t attr_event_timestamp = 55;
constexpr std::uint8_t attr_nas_ipv6_address = 95;
constexpr std::uint8_t attr_framed_interface_id = 96;
constexpr std::uint8_t attr_framed_ipv6_prefix = 97;
constexpr std::uint8_t attr_delegated_ipv6_prefix = 123;
constexpr std::uint8_t attr_framed_ipv6_address = 168;

constexpr std::size_t max_text_length = 253;

// Boost 1.81 keeps error_category's destructor non-virtual; categories are
// never deleted through a base pointer, so -Wnon-virtual-dtor is a false alarm.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class radius_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "flushgate.radius"; }
  std::string message(int ev) const override {
    switch (static_cast<radius_errc>(ev)) {
      case radius_errc::ok: return "ok";
      case radius_errc::too_short: return "RADIUS packet shorter than its header or Length";
      case radius_errc::bad_length: return "RADIUS Length outside 20..4095";
      case radius_errc::wrong_code: return "unexpected RADIUS code";
      case radius_errc::bad_attribute: return "RADIUS attribute length out of bounds";
      case radius_errc::bad_attribute_value: return "RADIUS attribute value has the wrong size or content";
      case radius_errc::duplicate_attribute: return "single-valued RADIUS attribute appears twice";
      case radius_errc::missing_status_type: return "Accounting-Request without Acct-Status-Type";
      case radius_errc::missing_session_id: return "Accounting-Request without Acct-Session-Id";
      case radius_errc::missing_nas:
        return "Accounting-Request without NAS-IP-Address, NAS-IPv6-Address or NAS-Identifier";
      case radius_errc::bad_framed_address:
        return "Framed-IP-Address or Framed-IPv6-Address is not a usable address";
      case radius_errc::bad_authenticator: return "RADIUS authenticator does not match the shared secret";
      case radius_errc::wrong_identifier: return "RADIUS response Identifier does not match the request";
    }
    return "unknown RADIUS error";
  }
};
#pragma GCC diagnostic pop

std::uint16_t read_u16(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

std::uint32_t read_u32(std::span<const std::uint8_t> b) {
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) |
         std::uint32_t{b[3]};
}

// MD5 over the concatenation of `parts` (the RADIUS authenticators are plain MD5,
// RFC 2866 §3). Allocation failures inside OpenSSL are bugs at this size.
radius_authenticator md5(std::initializer_list<std::span<const std::uint8_t>> parts) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr) != 1) {
    throw std::runtime_error("OpenSSL MD5 is not available");
  }
  for (auto p : parts) {
    if (!p.empty()) EVP_DigestUpdate(ctx.get(), p.data(), p.size());
  }
  radius_authenticator out{};
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx.get(), out.data(), &n);
  return out;
}

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// The packet trimmed to its Length field, or why it cannot be one (RFC 2866 §3:
// Length 20..4095, octets past Length are padding, a short packet is discarded).
boost::system::result<std::span<const std::uint8_t>> frame_packet(std::span<const std::uint8_t> datagram,
                                                                  std::uint8_t code) {
  if (datagram.size() < radius_header_size) return radius_errc::too_short;
  const std::size_t length = read_u16(datagram, 2);
  if (length < radius_header_size || length > radius_max_packet_size) return radius_errc::bad_length;
  if (datagram.size() < length) return radius_errc::too_short;
  if (datagram[0] != code) return radius_errc::wrong_code;
  return datagram.first(length);
}

// Walks the attribute TLVs of a framed packet, calling f(type, value) for each;
// stops at the first framing error (RFC 2865 §5: Length >= 2, inside the packet).
template <typename F>
boost::system::error_code for_each_attribute(std::span<const std::uint8_t> packet, F&& f) {
  std::size_t at = radius_header_size;
  while (at < packet.size()) {
    if (packet.size() - at < 2) return radius_errc::bad_attribute;
    const std::size_t len = packet[at + 1];
    if (len < 2 || len > packet.size() - at) return radius_errc::bad_attribute;
    if (auto ec = f(packet[at], packet.subspan(at + 2, len - 2))) return ec;
    at += len;
  }
  return {};
}

boost::system::error_code read_text(std::span<const std::uint8_t> v, std::string& out) {
  if (v.empty() || v.size() > max_text_length) return radius_errc::bad_attribute_value;
  out.assign(reinterpret_cast<const char*>(v.data()), v.size());
  return {};
}

boost::system::error_code read_integer(std::span<const std::uint8_t> v, std::optional<std::uint32_t>& out) {
  if (v.size() != 4) return radius_errc::bad_attribute_value;
  out = read_u32(v);
  return {};
}

using ipv6_bytes = std::array<std::uint8_t, 16>;

// RFC 5952 text of an IPv6 address (inet_ntop's compressed form).
std::string ipv6_text(const ipv6_bytes& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(AF_INET6, address.data(), text, sizeof text) == nullptr) {
    throw std::logic_error("inet_ntop failed on 16 octets");  // cannot happen for AF_INET6
  }
  return text;
}

// An IPv6 address attribute (NAS-IPv6-Address, Framed-IPv6-Address): exactly 16
// octets (RFC 3162 §2.4, RFC 6911 §3.1).
boost::system::error_code read_ipv6_address(std::span<const std::uint8_t> v, ipv6_bytes& out) {
  if (v.size() != out.size()) return radius_errc::bad_attribute_value;
  std::copy(v.begin(), v.end(), out.begin());
  return {};
}

// Framed-IPv6-Prefix (RFC 3162 §2.3) and Delegated-IPv6-Prefix (RFC 4818 §3, the
// same encoding): Reserved, Prefix-Length (0..128), then up to 16 prefix octets;
// bits past Prefix-Length must be zero. The Reserved octet is not checked.
boost::system::error_code read_ipv6_prefix(std::span<const std::uint8_t> v,
                                           std::optional<std::string>& address, std::uint8_t& length) {
  if (v.size() < 2 || v.size() > 18) return radius_errc::bad_attribute_value;
  const unsigned prefix_length = v[1];
  const auto prefix = v.subspan(2);
  if (prefix_length > 128 || prefix.size() * 8 < prefix_length) return radius_errc::bad_attribute_value;
  ipv6_bytes bytes{};
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const std::size_t bits_before = i * 8;
    std::uint8_t mask = 0xff;  // the bits of this octet inside the prefix
    if (bits_before >= prefix_length) {
      mask = 0;
    } else if (prefix_length - bits_before < 8) {
      mask = static_cast<std::uint8_t>(0xff << (8 - (prefix_length - bits_before)));
    }
    if ((prefix[i] & ~mask) != 0) return radius_errc::bad_attribute_value;
    bytes[i] = prefix[i];
  }
  address = ipv6_text(bytes);
  length = static_cast<std::uint8_t>(prefix_length);
  return {};
}

// "ADDR/LEN" of a prefix that was read, "" when there is none.
std::string prefix_text(const std::optional<std::string>& address, std::uint8_t length) {
  return address ? *address + "/" + std::to_string(length) : std::string();
}

// The line's own IPv6 address: Framed-IPv6-Address, else the first 64 bits of
// Framed-IPv6-Prefix followed by Framed-Interface-Id, else "". The interface id
// is 8 octets (RFC 3162 §2.1), the low 64 bits of a unicast address (RFC 4291
// §2.5.1), so it can complete only a prefix of at most 64 bits.
std::string line_ipv6_address(const accounting_request& r) {
  if (r.framed_ipv6_address) return *r.framed_ipv6_address;
  if (!r.framed_ipv6_prefix_address || !r.framed_interface_id || r.framed_ipv6_prefix_length > 64) return {};
  ipv6_bytes bytes{};
  if (inet_pton(AF_INET6, r.framed_ipv6_prefix_address->c_str(), bytes.data()) != 1) return {};
  std::copy(r.framed_interface_id->begin(), r.framed_interface_id->end(), bytes.begin() + 8);
  return ipv6_text(bytes);
}

}  // namespace

const boost::system::error_category& radius_category() noexcept {
  static const radius_category_impl category;
  return category;
}

boost::system::error_code make_error_code(radius_errc e) noexcept {
  return {static_cast<int>(e), radius_category()};
}

acct_status to_acct_status(std::uint32_t status_type) noexcept {
  switch (status_type) {
    case 1: return acct_status::start;
    case 2: return acct_status::stop;
    case 3: return acct_status::interim_update;
    case 7: return acct_status::accounting_on;
    case 8: return acct_status::accounting_off;
    default: return acct_status::other;
  }
}

bool check_request_authenticator(std::span<const std::uint8_t> packet, std::string_view secret) {
  if (packet.size() < radius_header_size) return false;
  // Request Authenticator = MD5(Code + Identifier + Length + 16 zero octets +
  // attributes + secret) (RFC 2866 §3).
  static constexpr radius_authenticator zeros{};
  const auto expected = md5({packet.first(4), zeros, packet.subspan(radius_header_size), as_bytes(secret)});
  return CRYPTO_memcmp(expected.data(), packet.data() + 4, expected.size()) == 0;
}

void sign_accounting_request(std::span<std::uint8_t> packet, std::string_view secret) {
  if (packet.size() < radius_header_size) throw std::invalid_argument("RADIUS packet too short to sign");
  // The authenticator covers the first Length octets (all of them when fewer).
  const std::size_t length = std::min<std::size_t>(read_u16(packet, 2), packet.size());
  std::span<const std::uint8_t> in = packet.first(std::max(length, radius_header_size));
  static constexpr radius_authenticator zeros{};
  const auto auth = md5({in.first(4), zeros, in.subspan(radius_header_size), as_bytes(secret)});
  std::memcpy(packet.data() + 4, auth.data(), auth.size());
}

boost::system::result<accounting_request> decode_accounting_request(std::span<const std::uint8_t> datagram) {
  auto framed = frame_packet(datagram, radius_accounting_request);
  if (!framed) return framed.error();
  const auto packet = *framed;

  accounting_request r;
  r.identifier = packet[1];
  std::memcpy(r.authenticator.data(), packet.data() + 4, r.authenticator.size());

  std::optional<std::uint32_t> status;
  bool have_session = false;
  std::bitset<256> seen;
  auto ec = for_each_attribute(
      packet, [&](std::uint8_t type, std::span<const std::uint8_t> v) -> boost::system::error_code {
        if (type == attr_proxy_state) {  // may repeat; echoed in order (RFC 2865 §5.33)
          std::string s;
          if (auto e = read_text(v, s)) return e;
          r.proxy_states.push_back(std::move(s));
          return {};
        }
        switch (type) {
          case attr_user_name:
          case attr_nas_ip_address:
          case attr_framed_ip_address:
          case attr_nas_identifier:
          case attr_acct_status_type:
          case attr_acct_delay_time:
          case attr_acct_session_id:
          case attr_acct_terminate_cause:
          case attr_event_timestamp:
          case attr_framed_ipv6_prefix:
          case attr_nas_ipv6_address:
          case attr_framed_interface_id:
          case attr_delegated_ipv6_prefix:
          case attr_framed_ipv6_address:
            // Exactly one Acct-Status-Type and Acct-Session-Id (RFC 2866 §4.1); the
            // others are 0-1 in the §5.13 table. A second value is refused so that two
            // copies cannot be interpreted differently along the way.
            if (seen.test(type)) return radius_errc::duplicate_attribute;
            seen.set(type);
            break;
          default: return {};  // not used here (Vendor-Specific included)
        }
        switch (type) {
          case attr_user_name: return read_text(v, r.user_name);
          case attr_nas_identifier: return read_text(v, r.nas_identifier);
          case attr_acct_session_id: have_session = true; return read_text(v, r.session_id);
          case attr_nas_ip_address: return read_integer(v, r.nas_ip);
          case attr_acct_status_type: return read_integer(v, status);
          case attr_acct_delay_time: return read_integer(v, r.delay_time);
          case attr_acct_terminate_cause: return read_integer(v, r.terminate_cause);
          case attr_event_timestamp: return read_integer(v, r.event_timestamp);
          case attr_framed_ip_address: {
            if (auto e = read_integer(v, r.framed_ip)) return e;
            // The user's actual address, never the "assign one"/"user chooses"
            // values (RFC 2866 §4.1, RFC 2865 §5.8); 0.0.0.0 is no address at all.
            const auto a = *r.framed_ip;
            if (a == 0 || a == 0xFFFFFFFFu || a == 0xFFFFFFFEu) return radius_errc::bad_framed_address;
            return {};
          }
          case attr_framed_ipv6_prefix:
            return read_ipv6_prefix(v, r.framed_ipv6_prefix_address, r.framed_ipv6_prefix_length);
          case attr_delegated_ipv6_prefix:
            return read_ipv6_prefix(v, r.delegated_ipv6_prefix_address, r.delegated_ipv6_prefix_length);
          case attr_framed_interface_id: {
            // Exactly 8 octets (RFC 3162 §2.1).
            if (v.size() != 8) return radius_errc::bad_attribute_value;
            r.framed_interface_id.emplace();
            std::copy(v.begin(), v.end(), r.framed_interface_id->begin());
            return {};
          }
          case attr_nas_ipv6_address: {
            ipv6_bytes a{};
            if (auto e = read_ipv6_address(v, a)) return e;
            r.nas_ipv6 = ipv6_text(a);
            return {};
          }
          case attr_framed_ipv6_address: {
            ipv6_bytes a{};
            if (auto e = read_ipv6_address(v, a)) return e;
            // As for Framed-IP-Address: the user's actual address (RFC 6911 §3.1).
            // The unspecified address (RFC 4291 §2.5.2) is no address, and a
            // multicast address (ff00::/8, §2.7) cannot be a host's.
            if (a == ipv6_bytes{} || a[0] == 0xff) return radius_errc::bad_framed_address;
            r.framed_ipv6_address = ipv6_text(a);
            return {};
          }
          default: return {};
        }
      });
  if (ec) return ec;
  if (!status) return radius_errc::missing_status_type;
  if (!have_session) return radius_errc::missing_session_id;
  // At least one of NAS-IP-Address or NAS-Identifier (RFC 2866 §4.1), where
  // NAS-IPv6-Address may stand in for NAS-IP-Address (RFC 3162 §2.4).
  if (!r.nas_ip && r.nas_ipv6.empty() && r.nas_identifier.empty()) return radius_errc::missing_nas;
  r.status_type = *status;
  return r;
}

boost::system::result<accounting_request> parse_accounting_request(std::span<const std::uint8_t> datagram,
                                                                   std::string_view secret) {
  auto framed = frame_packet(datagram, radius_accounting_request);
  if (!framed) return framed.error();
  // Authenticate before reading any attribute: unauthenticated octets never
  // reach the attribute parser (RFC 2866 §3, RFC 5080 §2.3.3: discard).
  if (!check_request_authenticator(*framed, secret)) return radius_errc::bad_authenticator;
  return decode_accounting_request(*framed);
}

std::vector<std::uint8_t> build_accounting_response(const accounting_request& request,
                                                    std::string_view secret) {
  // Code 5, the request's Identifier, no attributes but the Proxy-States
  // (RFC 2866 §4.2, RFC 2865 §5.33). They fit: they came in a packet <= 4095.
  std::vector<std::uint8_t> out(radius_header_size);
  out[0] = radius_accounting_response;
  out[1] = request.identifier;
  for (const auto& ps : request.proxy_states) {
    out.push_back(attr_proxy_state);
    out.push_back(static_cast<std::uint8_t>(ps.size() + 2));
    out.insert(out.end(), ps.begin(), ps.end());
  }
  out[2] = static_cast<std::uint8_t>(out.size() >> 8);
  out[3] = static_cast<std::uint8_t>(out.size() & 0xff);
  // Response Authenticator = MD5(Code + Identifier + Length + Request
  // Authenticator + response attributes + secret) (RFC 2866 §3).
  std::span<const std::uint8_t> o = out;
  const auto auth = md5({o.first(4), request.authenticator, o.subspan(radius_header_size), as_bytes(secret)});
  std::memcpy(out.data() + 4, auth.data(), auth.size());
  return out;
}

boost::system::error_code verify_accounting_response(std::span<const std::uint8_t> response,
                                                     std::uint8_t request_identifier,
                                                     const radius_authenticator& request_authenticator,
                                                     std::string_view secret) {
  auto framed = frame_packet(response, radius_accounting_response);
  if (!framed) return framed.error();
  const auto packet = *framed;
  if (packet[1] != request_identifier) return radius_errc::wrong_identifier;
  const auto expected =
      md5({packet.first(4), request_authenticator, packet.subspan(radius_header_size), as_bytes(secret)});
  if (CRYPTO_memcmp(expected.data(), packet.data() + 4, expected.size()) != 0) {
    return radius_errc::bad_authenticator;
  }
  return for_each_attribute(
      packet, [](std::uint8_t, std::span<const std::uint8_t>) { return boost::system::error_code{}; });
}

std::string ipv4_text(std::uint32_t address) {
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (!out.empty()) out += '.';
    out += std::to_string((address >> shift) & 0xff);
  }
  return out;
}

std::string nas_key(const accounting_request& request, std::string_view source_address) {
  if (request.nas_ip) return ipv4_text(*request.nas_ip);
  if (!request.nas_ipv6.empty()) return request.nas_ipv6;
  if (!request.nas_identifier.empty()) return request.nas_identifier;
  return std::string(source_address);
}

std::optional<link_event> to_link_event(const accounting_request& request, std::string_view source_address,
                                        std::string_view source) {
  link_event e;
  e.user = request.user_name;
  e.session_id = request.session_id;
  e.nas = nas_key(request, source_address);
  e.source = std::string(source);
  if (request.framed_ip) e.address = ipv4_text(*request.framed_ip);
  e.ipv6_address = line_ipv6_address(request);
  // The customer's LAN: the delegated prefix (RFC 4818) when there is one, else
  // the prefix of the link itself (RFC 3162 §2.3).
  e.ipv6_prefix = prefix_text(request.delegated_ipv6_prefix_address, request.delegated_ipv6_prefix_length);
  if (e.ipv6_prefix.empty()) {
    e.ipv6_prefix = prefix_text(request.framed_ipv6_prefix_address, request.framed_ipv6_prefix_length);
  }
  switch (to_acct_status(request.status_type)) {
    case acct_status::start:
    case acct_status::interim_update:
      // An Interim-Update with a new address is simply an up with that address:
      // applying it rebinds the route. IPv4, IPv6 or both: an IPv6-only
      // session is a full up.
      if (e.user.empty() || !e.has_address()) return std::nullopt;
      e.k = link_event::kind::up;
      return e;
    case acct_status::stop:
      if (e.user.empty()) return std::nullopt;
      e.k = link_event::kind::down;
      e.ended = link_event::family::both;  // the session is over, whatever it carried
      return e;
    case acct_status::accounting_on:
    case acct_status::accounting_off:
      // Not in RFC 2866 §5.1, common practice (PROTOCOLS.md §10 item 10): the
      // NAS's sessions are all gone.
      e.k = link_event::kind::nas_reset;
      e.user.clear();
      e.session_id.clear();
      e.address.clear();
      e.ipv6_address.clear();
      e.ipv6_prefix.clear();
      return e;
    case acct_status::other: return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace flushgate::linkmon
