// link_event.hpp — what every link source reports: a customer's line came
// up, went down, or a NAS restarted (all its sessions are gone).
//
// Purpose: the one shape in which link news travels, whatever the source
// (the CLI for pppd ip-up/ip-down scripts, the RADIUS accounting listener,
// the pcap sniffer), so that one code path applies them all.
// Security: fields come from the network (RADIUS) or a local script; the
// code that applies an event checks the user and the address before use.
#pragma once

#include <string>

namespace flushgate::linkmon {

struct link_event {
  enum class kind { up, down, nas_reset };
  kind k = kind::up;
  std::string user;        // RADIUS User-Name / pppd peer name
  std::string session_id;  // Acct-Session-Id; "" when the source has none
  std::string address;     // framed IP address (up)
  std::string nas;         // NAS-IP-Address or NAS-Identifier
  std::string source;      // "radius", "pcap" or "script"
};

}  // namespace flushgate::linkmon
