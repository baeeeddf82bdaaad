// ports.hpp — free loopback ports for servers a test starts.
//
// Purpose: each test picks its own ports so tests can run side by side.
// The ports come from 20000–32767, below the kernel's ephemeral range
// (32768–60999 on Debian), so an outgoing connection of any process — a
// PostgreSQL client, a delivery — can never sit on a port a test is about to
// listen on. Each port handed out is claimed with an flock on
// /tmp/flushgate-test-ports/<port> held until the test process exits, so two
// tests running at once never get the same port.
// Security: binds 127.0.0.1 and ::1 only to check a port.
// Errors: throw std::system_error when no port in the range is free (a
// start-up failure of the test).
// Limitations: a process that is not a flushgate test may still bind the port
// between the check and the test's own bind; the server then fails to start
// and its test fails loudly, never with a wrong result.
// See also: wait.hpp (wait_for_tcp).
#pragma once

#include <cstdint>

namespace flushgate::test {

// A TCP port free on 127.0.0.1 and ::1, claimed for this process.
std::uint16_t free_port();
// A UDP port free on 127.0.0.1 and ::1, claimed for this process.
std::uint16_t free_udp_port();

}  // namespace flushgate::test
