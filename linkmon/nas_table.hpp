// nas_table.hpp — the RADIUS clients (NASes) flushgate accepts accounting from.
//
// Purpose: maps a packet's source address to the NAS it came from: its name
// and the shared secret that authenticates its packets. Entries are an address
// or a CIDR block ("192.0.2.1", "198.51.100.0/24", "2001:db8::/64"); the most
// specific entry wins. Used by radius_listener (source of each datagram) and
// pcap_sniffer (source of a request, destination of a response).
// Security: a source that matches no entry gets nothing — the caller drops its
// packets (PROTOCOLS.md §10 item 12). IPv4-mapped IPv6 sources (from a socket
// bound to "::") are matched as the IPv4 address they carry. Secrets are kept
// in memory only and never logged.
// Errors: add() returns boost::system::errc::invalid_argument for an address
// or prefix that does not parse, or an empty secret.
// See also: RFC 2865 §3 (shared secret per client), RFC 2866 §3.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace flushgate::linkmon {

struct nas_client {
  std::string name;    // for logs and counters, e.g. "bras-1"
  std::string secret;  // the RADIUS shared secret
};

class nas_table {
 public:
  // Adds a client for `source` ("address" or "address/prefix"); errc::invalid_argument when bad.
  boost::system::error_code add(std::string_view source, std::string secret, std::string name);
  // The most specific client whose network holds `address`, or nullptr.
  const nas_client* find(const boost::asio::ip::address& address) const;
  // Number of entries.
  std::size_t size() const noexcept { return entries_.size(); }

 private:
  struct entry {
    boost::asio::ip::address network;  // masked to prefix_length
    unsigned prefix_length = 0;
    nas_client client;
  };
  std::vector<entry> entries_;
};

}  // namespace flushgate::linkmon
