// nas_clients.hpp — the NAS clients file (radius_clients_file).
//
// Purpose: which NASes may send RADIUS accounting, and with which shared
// secret. One client per line: `SOURCE[/PREFIX] SECRET [NAME]`; `#` starts a
// comment line. Used by the RADIUS listener and the pcap sniffer alike.
// Security: the file holds secrets; the daemon warns when others may read it.
// Errors: load_nas_clients returns false with "FILE:LINE: reason".
#pragma once

#include "linkmon/nas_table.hpp"

#include <string>

namespace flushgate::control {

bool load_nas_clients(const std::string& path, linkmon::nas_table& out, std::string& error);

}  // namespace flushgate::control
