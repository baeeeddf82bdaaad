// link_event.hpp — what every link source reports: a customer's line came
// up, went down, or a NAS restarted (all its sessions are gone).
//
// Purpose: the one shape in which link news travels, whatever the source
// (the CLI for pppd ip-up/ip-down/ipv6-up/ipv6-down scripts, the RADIUS
// accounting listener, the pcap sniffer), so that one code path applies them
// all. A line may come up with IPv4, IPv6 or both; an up event carries what
// its source knows of each family, and an up for the live session of the
// same user keeps the family it does not mention (pppd reports IPv4 and IPv6
// from separate scripts).
// Security: fields come from the network (RADIUS) or a local script; the
// code that applies an event checks the user and the addresses before use.
#pragma once

#include <string>

namespace flushgate::linkmon {

struct link_event {
  enum class kind { up, down, nas_reset };
  // Which part of the line a down event ends: the whole link, or one family
  // (pppd's ipv6-down while IPv4 stays up). Up events ignore it.
  enum class family { both, ipv4, ipv6 };
  kind k = kind::up;
  std::string user;          // RADIUS User-Name / pppd peer name
  std::string session_id;    // Acct-Session-Id; "" when the source has none
  std::string address;       // framed IPv4 address (up); "" when none
  std::string ipv6_address;  // the line's own IPv6 address (up): Framed-IPv6-Address,
                             // or Framed-IPv6-Prefix + Framed-Interface-Id; "" when none
  std::string ipv6_prefix;   // the customer LAN's prefix (up), "2001:db8:0:5600::/56":
                             // Delegated-IPv6-Prefix, else Framed-IPv6-Prefix; "" when none
  family ended = family::both;  // down: what ends
  std::string nas;           // NAS-IP-Address, NAS-IPv6-Address or NAS-Identifier
  std::string source;        // "radius", "pcap" or "script"

  bool has_address() const { return !address.empty() || !ipv6_address.empty() || !ipv6_prefix.empty(); }
};

}  // namespace flushgate::linkmon
