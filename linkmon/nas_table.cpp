// nas_table.cpp — see nas_table.hpp.
#include "linkmon/nas_table.hpp"

#include <boost/system/errc.hpp>

#include <array>
#include <charconv>
#include <optional>

namespace flushgate::linkmon {

namespace ip = boost::asio::ip;

namespace {

// IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes the IPv4 address, so that a
// dual-stack socket and an IPv4 entry agree.
ip::address normalise(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  }
  return a;
}

// The first `prefix_length` bits of `a`, the rest zero.
ip::address mask(const ip::address& a, unsigned prefix_length) {
  auto clear = [prefix_length](auto bytes) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      const std::size_t bit = i * 8;
      if (bit >= prefix_length) {
        bytes[i] = 0;
      } else if (prefix_length - bit < 8) {
        bytes[i] &= static_cast<unsigned char>(0xff << (8 - (prefix_length - bit)));
      }
    }
    return bytes;
  };
  if (a.is_v4()) return ip::address_v4(clear(a.to_v4().to_bytes()));
  return ip::address_v6(clear(a.to_v6().to_bytes()));
}

}  // namespace

boost::system::error_code nas_table::add(std::string_view source, std::string secret, std::string name) {
  const auto invalid = boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
  if (secret.empty()) return invalid;
  std::string_view address_text = source;
  std::optional<unsigned> prefix;
  if (auto slash = source.find('/'); slash != std::string_view::npos) {
    address_text = source.substr(0, slash);
    const auto digits = source.substr(slash + 1);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size()) return invalid;
    prefix = value;
  }
  boost::system::error_code ec;
  auto address = ip::make_address(std::string(address_text), ec);
  if (ec) return invalid;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = normalise(address);
    if (prefix) {
      if (*prefix < 96) return invalid;
      *prefix -= 96;
    }
  }
  const unsigned max_bits = address.is_v4() ? 32 : 128;
  const unsigned bits = prefix.value_or(max_bits);
  if (bits > max_bits) return invalid;
  entries_.push_back(entry{mask(address, bits), bits, nas_client{std::move(name), std::move(secret)}});
  return {};
}

const nas_client* nas_table::find(const ip::address& address) const {
  const auto a = normalise(address);
  const entry* best = nullptr;
  for (const auto& e : entries_) {
    if (e.network.is_v4() != a.is_v4()) continue;
    if (mask(a, e.prefix_length) != e.network) continue;
    if (best == nullptr || e.prefix_length > best->prefix_length) best = &e;
  }
  return best ? &best->client : nullptr;
}

}  // namespace flushgate::linkmon
