// ports.hpp — free loopback ports for servers a test starts.
//
// Purpose: each test picks its own ports so tests can run side by side.
// Security: binds 127.0.0.1 only.
// Errors: throw std::system_error when no socket can be bound (a start-up
// failure of the test).
// Limitations: the port is free when the function returns; another process
// may take it before the test binds it. Servers that fail to bind fail their
// test loudly, so the race shows up as a clear error, never as a wrong result.
// See also: wait.hpp (wait_for_tcp).
#pragma once

#include <cstdint>

namespace flushgate::test {

// A TCP port on 127.0.0.1 that nothing was bound to a moment ago.
std::uint16_t free_port();
// A UDP port on 127.0.0.1 that nothing was bound to a moment ago.
std::uint16_t free_udp_port();

}  // namespace flushgate::test
