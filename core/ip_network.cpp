// ip_network.cpp — see ip_network.hpp.
#include "core/ip_network.hpp"

#include <array>
#include <charconv>

namespace flushgate::core {

namespace asio = boost::asio;

namespace {

asio::ip::address unmapped(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  }
  return a;
}

// The address's bytes with everything past `prefix` bits cleared.
template <std::size_t N>
std::array<unsigned char, N> masked(std::array<unsigned char, N> bytes, unsigned prefix) {
  for (std::size_t i = 0; i < N; ++i) {
    const unsigned keep = prefix >= 8 * (i + 1) ? 8 : prefix > 8 * i ? prefix - 8 * static_cast<unsigned>(i) : 0;
    bytes[i] = static_cast<unsigned char>(bytes[i] & (0xffu << (8 - keep)));
  }
  return bytes;
}

asio::ip::address masked_address(const asio::ip::address& a, unsigned prefix) {
  if (a.is_v4()) return asio::ip::address_v4(masked(a.to_v4().to_bytes(), prefix));
  return asio::ip::address_v6(masked(a.to_v6().to_bytes(), prefix));
}

}  // namespace

bool ip_network::contains(const asio::ip::address& a) const {
  const auto plain = unmapped(a);
  if (plain.is_v4() != address.is_v4()) return false;
  return masked_address(plain, prefix_length) == address;
}

std::string ip_network::to_string() const {
  return address.to_string() + "/" + std::to_string(prefix_length);
}

std::optional<ip_network> parse_ip_network(std::string_view text) {
  const auto slash = text.find('/');
  boost::system::error_code ec;
  auto a = asio::ip::make_address(std::string(text.substr(0, slash)), ec);
  if (ec) return std::nullopt;
  a = unmapped(a);
  const unsigned max = a.is_v4() ? 32 : 128;
  unsigned prefix = max;
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || err != std::errc() || end != digits.data() + digits.size() || prefix > max) {
      return std::nullopt;
    }
  }
  return ip_network{masked_address(a, prefix), prefix};
}

ip_network host_network(const asio::ip::address& a) {
  const auto plain = unmapped(a);
  return {plain, plain.is_v4() ? 32u : 128u};
}

}  // namespace flushgate::core
