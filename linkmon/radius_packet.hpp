// radius_packet.hpp — RADIUS Accounting-Request parsing and Accounting-Response
// building: bytes in, a record or an error out. No I/O, no clock.
//
// Purpose: the one place that reads RADIUS accounting octets, for both link
// sources (radius_listener answers NASes; pcap_sniffer watches a RADIUS
// server's traffic). parse_accounting_request() checks the header (code 4,
// Length 20..4095, octets past Length ignored), the Request Authenticator
// against the NAS's shared secret, the attribute framing, and the attributes
// flushgate uses; build_accounting_response() signs the answer;
// verify_accounting_response() checks a server's answer for the sniffer;
// to_link_event() says what a request means for a line: its IPv4 address,
// its own IPv6 address and the customer's IPv6 prefix, or a NAS restart.
//
// Security: every octet is untrusted. Reads are bounds-checked against the
// Length field, which is itself checked against the datagram; the
// authenticator is checked (constant time) before any attribute is read, so
// unauthenticated input only ever reaches the 20-octet header check. Text
// attributes must be 1..253 octets; integer and IPv4 address attributes
// exactly 4, IPv6 addresses (NAS-IPv6-Address, Framed-IPv6-Address) exactly
// 16, Framed-Interface-Id exactly 8; each attribute used here may appear at
// most once, so two Framed-IP-Address values cannot be played against each
// other. Framed-IP-Address 0.0.0.0, 255.255.255.255 and 255.255.255.254 are
// refused (RFC 2866 §4.1, RFC 2865 §5.8), and so are Framed-IPv6-Address ::
// (unspecified, no address) and ff00::/8 (multicast, never a host's).
// Accounting has no replay protection (RFC 3579 §4.3.5): callers de-duplicate
// and accept packets only from configured NAS addresses.
//
// Errors (radius_errc, category "flushgate.radius"):
//   too_short              fewer than 20 octets, or fewer than Length says
//   bad_length             Length field outside 20..4095
//   wrong_code             not the code expected (4 request, 5 response)
//   bad_attribute          an attribute's length is < 2 or runs past Length
//   bad_attribute_value    a used attribute has the wrong size or content
//                          (empty text, integer not 4 octets, IPv6 address
//                          not 16, interface id not 8, bad IPv6 prefix)
//   duplicate_attribute    Acct-Status-Type, Acct-Session-Id or another
//                          single-valued attribute used here appears twice
//   missing_status_type    no Acct-Status-Type (RFC 2866 §4.1)
//   missing_session_id     no Acct-Session-Id (RFC 2866 §4.1)
//   missing_nas            none of NAS-IP-Address, NAS-IPv6-Address (which
//                          stands in for NAS-IP-Address, RFC 3162 §2.4) and
//                          NAS-Identifier (RFC 2866 §4.1)
//   bad_framed_address     Framed-IP-Address 0, 0xFFFFFFFF or 0xFFFFFFFE;
//                          Framed-IPv6-Address :: or in ff00::/8
//   bad_authenticator      Request/Response Authenticator does not match
//   wrong_identifier       a response's Identifier is not the request's
// Every one of them means "silently discard" (RFC 2866 §3).
//
// Limitations: Message-Authenticator (RFC 3579 §3.3) is neither required nor
// checked in accounting; attributes that must not appear in an
// Accounting-Request (User-Password, CHAP-Password, Reply-Message, State,
// RFC 2866 §5.13) are ignored rather than refused; Vendor-Specific attributes
// are skipped. Only Proxy-State is echoed into the response (RFC 2865 §5.33).
// An address is derived from Framed-IPv6-Prefix + Framed-Interface-Id only
// when the prefix is at most 64 bits long (the 8-octet interface id is the
// low 64 bits, RFC 3162 §2.1, RFC 4291 §2.5.1); a longer prefix gives no
// line address. IPv6
// addresses are not checked beyond :: and multicast (a link-local or
// loopback Framed-IPv6-Address is passed on as sent), and the Reserved octet
// of the IPv6 prefix attributes is not checked.
//
// See also: RFC 2866 §3, §4.1, §4.2, §5; RFC 2865 §5; RFC 2869 §5.3;
// RFC 3162 §2.1, §2.3, §2.4; RFC 4818 §3; RFC 6911 §3.1; RFC 4291 §2.5.1,
// §2.5.2, §2.7; PROTOCOLS.md §10.
#pragma once

#include "linkmon/link_event.hpp"

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace flushgate::linkmon {

enum class radius_errc {
  ok = 0,
  too_short,
  bad_length,
  wrong_code,
  bad_attribute,
  bad_attribute_value,
  duplicate_attribute,
  missing_status_type,
  missing_session_id,
  missing_nas,
  bad_framed_address,
  bad_authenticator,
  wrong_identifier,
};

const boost::system::error_category& radius_category() noexcept;
boost::system::error_code make_error_code(radius_errc e) noexcept;

inline constexpr std::uint8_t radius_accounting_request = 4;
inline constexpr std::uint8_t radius_accounting_response = 5;
inline constexpr std::size_t radius_header_size = 20;
inline constexpr std::size_t radius_max_packet_size = 4095;

using radius_authenticator = std::array<std::uint8_t, 16>;

// Acct-Status-Type values flushgate acts on (RFC 2866 §5.1); others are `other`.
enum class acct_status { start, stop, interim_update, accounting_on, accounting_off, other };

struct accounting_request {
  std::uint8_t identifier = 0;
  radius_authenticator authenticator{};
  std::uint32_t status_type = 0;                          // Acct-Status-Type as sent
  std::string user_name;                                  // User-Name; "" when absent
  std::string session_id;                                 // Acct-Session-Id (always present)
  std::optional<std::uint32_t> framed_ip;                 // Framed-IP-Address, host byte order
  std::optional<std::string> framed_ipv6_address;         // Framed-IPv6-Address text (RFC 6911)
  std::optional<std::array<std::uint8_t, 8>> framed_interface_id;  // Framed-Interface-Id (RFC 3162)
  std::optional<std::string> framed_ipv6_prefix_address;  // Framed-IPv6-Prefix address text
  std::uint8_t framed_ipv6_prefix_length = 0;
  std::optional<std::string> delegated_ipv6_prefix_address;  // Delegated-IPv6-Prefix text (RFC 4818)
  std::uint8_t delegated_ipv6_prefix_length = 0;
  std::optional<std::uint32_t> nas_ip;           // NAS-IP-Address, host byte order
  std::string nas_ipv6;                          // NAS-IPv6-Address text; "" when absent
  std::string nas_identifier;                    // NAS-Identifier; "" when absent
  std::optional<std::uint32_t> delay_time;       // Acct-Delay-Time, seconds
  std::optional<std::uint32_t> event_timestamp;  // Event-Timestamp, seconds since 1970
  std::optional<std::uint32_t> terminate_cause;  // Acct-Terminate-Cause
  std::vector<std::string> proxy_states;         // Proxy-State values, in order
};

// Maps a raw Acct-Status-Type to the kinds flushgate distinguishes.
acct_status to_acct_status(std::uint32_t status_type) noexcept;

// Parses and authenticates an Accounting-Request with the NAS's shared secret.
boost::system::result<accounting_request> parse_accounting_request(std::span<const std::uint8_t> datagram,
                                                                   std::string_view secret);

// Parses an Accounting-Request WITHOUT checking its authenticator (tests, fuzzing, tools).
boost::system::result<accounting_request> decode_accounting_request(std::span<const std::uint8_t> datagram);

// True when the Request Authenticator of a framed request matches `secret` (RFC 2866 §3).
bool check_request_authenticator(std::span<const std::uint8_t> packet, std::string_view secret);

// Writes the Request Authenticator over the first Length octets of an encoded request (tests, tools).
void sign_accounting_request(std::span<std::uint8_t> packet, std::string_view secret);

// The signed Accounting-Response to `request`: code 5, same Identifier, its Proxy-States.
std::vector<std::uint8_t> build_accounting_response(const accounting_request& request,
                                                    std::string_view secret);

// Checks a server's Accounting-Response against the request it answers (code, Id, authenticator).
boost::system::error_code verify_accounting_response(std::span<const std::uint8_t> response,
                                                     std::uint8_t request_identifier,
                                                     const radius_authenticator& request_authenticator,
                                                     std::string_view secret);

// Dotted-quad text of an IPv4 address given in host byte order.
std::string ipv4_text(std::uint32_t address);

// The NAS key of a request: NAS-IP-Address text, else NAS-IPv6-Address text, else
// NAS-Identifier, else `source_address`.
std::string nas_key(const accounting_request& request, std::string_view source_address);

// The link event a request reports, or nullopt when it reports none (other status types,
// Start/Interim-Update without User-Name or without any of IPv4 address, IPv6 address and
// IPv6 prefix, Stop without User-Name). address = Framed-IP-Address; ipv6_address =
// Framed-IPv6-Address, else Framed-IPv6-Prefix (<= /64) + Framed-Interface-Id; ipv6_prefix =
// "ADDR/LEN" of Delegated-IPv6-Prefix, else of Framed-IPv6-Prefix. A Stop ends both families.
std::optional<link_event> to_link_event(const accounting_request& request, std::string_view source_address,
                                        std::string_view source);

}  // namespace flushgate::linkmon

template <>
struct boost::system::is_error_code_enum<flushgate::linkmon::radius_errc> : std::true_type {};
