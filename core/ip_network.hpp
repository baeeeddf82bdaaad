// ip_network.hpp — an IPv4 or IPv6 network in CIDR notation, and whether an
// address lies in it.
//
// Purpose: configuration lists of networks ("192.0.2.0/24", "2001:db8::/32",
// a bare address = one host) such as smtp_self_addresses, parsed once and
// matched many times.
// Security: parses operator input only; an IPv4-mapped IPv6 address
// (::ffff:192.0.2.1, from a socket bound to "::") is matched as the IPv4
// address it carries.
// Errors: parse_ip_network returns nullopt for text that is no address, a
// prefix over 32/128, or anything after it.
#pragma once

#include <boost/asio/ip/address.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace flushgate::core {

struct ip_network {
  boost::asio::ip::address address;  // the network's first address (host bits cleared)
  unsigned prefix_length = 0;

  // True when `a` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
  bool contains(const boost::asio::ip::address& a) const;
  // "192.0.2.0/24".
  std::string to_string() const;
};

// "ADDRESS" (a /32 or /128) or "ADDRESS/PREFIX"; nullopt when it does not parse.
std::optional<ip_network> parse_ip_network(std::string_view text);
// The one-host network of `a`.
ip_network host_network(const boost::asio::ip::address& a);

}  // namespace flushgate::core
