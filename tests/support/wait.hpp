// wait.hpp — bounded waits for tests: poll a condition, or a TCP port.
//
// Purpose: the one way tests wait for something to happen. Every wait has a
// timeout; callers assert on the result ("got timeout, want ...").
// Security: wait_for_tcp connects only to the numeric address it is given.
// Errors: none; false means the timeout passed first.
// See also: STYLE.md (Tests: no sleeps as synchronisation).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace flushgate::test {

using namespace std::chrono_literals;

// Calls predicate() every poll_interval until it returns true (→ true) or
// `timeout` has passed (→ false). The predicate is always tried at least once
// and once more at the deadline.
bool wait_until(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll_interval = 20ms);

// Tries to connect to host:port (numeric IPv4/IPv6 address) until a connect
// succeeds (→ true) or `timeout` has passed (→ false). Each successful probe
// connection is closed at once.
bool wait_for_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout);

}  // namespace flushgate::test
