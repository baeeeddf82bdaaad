// radius_packet_fuzz.cpp — libFuzzer target for linkmon/radius_packet.
//
// Feeds arbitrary octets to the request parser twice: as they are (almost
// always stopped by the authenticator check) and re-signed with a known
// secret, so that the attribute parser behind the check is reached too. For
// every request that parses, the response built for it must verify against
// it. Also feeds the octets to the response checker. Any crash, sanitizer
// report or broken invariant (abort) is a finding.
#include "linkmon/radius_packet.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace {

constexpr const char* secret = "fuzz-secret";

void check_request(const boost::system::result<flushgate::linkmon::accounting_request>& r) {
  using namespace flushgate::linkmon;
  if (!r) return;
  const auto response = build_accounting_response(*r, secret);
  if (response.size() < radius_header_size || response.size() > radius_max_packet_size) std::abort();
  if (verify_accounting_response(response, r->identifier, r->authenticator, secret)) std::abort();
  if (r->session_id.empty()) std::abort();  // Acct-Session-Id is mandatory
  if (!r->nas_ip && r->nas_identifier.empty()) std::abort();
  (void)to_link_event(*r, "192.0.2.1", "fuzz");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace flushgate::linkmon;
  const std::span<const std::uint8_t> input(data, size);

  check_request(parse_accounting_request(input, secret));
  const auto decoded = decode_accounting_request(input);
  check_request(decoded);

  if (size >= radius_header_size) {
    std::vector<std::uint8_t> signed_copy(data, data + size);
    sign_accounting_request(signed_copy, secret);
    const auto parsed = parse_accounting_request(signed_copy, secret);
    const auto plain = decode_accounting_request(signed_copy);
    // Once authentic, the checked and the unchecked parser must agree.
    if (parsed.has_value() != plain.has_value()) std::abort();
    if (!parsed && parsed.error() != plain.error()) std::abort();
    check_request(parsed);

    radius_authenticator request_auth{};
    for (std::size_t i = 0; i < request_auth.size(); ++i) request_auth[i] = data[i % size];
    (void)verify_accounting_response(input, data[1], request_auth, secret);
  }
  return 0;
}
