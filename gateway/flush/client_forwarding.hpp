// client_forwarding.hpp — the XFORWARD and XCLIENT commands that tell the
// next hop which client a message really came from.
//
// Purpose: a customer's server judges mail by its client (blocklists, SPF,
// reputation, its logs). When flushgate forwards held mail, that client is
// the gateway; Postfix's XFORWARD (and XCLIENT) let a trusted relay name
// the original one. This file is the pure part: which attributes the peer
// offered (from its EHLO line), and the command lines for one message.
//   - XFORWARD: the attributes apply to the next mail transaction only;
//     they are sent before each MAIL and may go in the same pipelined group.
//   - XCLIENT: the peer takes the attributes as the identity of the whole
//     session and answers with a new 220 greeting; the client must say EHLO
//     again. It cannot share a group with MAIL.
// Only attributes the peer offered are sent, and only those we know (an
// empty value, port 0: unknown, left out — the peer then keeps its own
// idea). Values are xtext (RFC 3461 §4), as XFORWARD_README requires; an
// IPv6 address gets the "IPv6:" prefix Postfix expects; a name that was
// "[TEMPUNAVAIL]" goes as "[UNAVAILABLE]" in XFORWARD (Postfix refuses the
// former there with 501; XCLIENT takes both). Lines are split so
// that none exceeds the 512 octets of RFC 5321 §4.5.3.1.4 (CRLF included).
//
// Security: the origin comes from our queue, but every value — the HELO
// name above all — was chosen by the original client: xtext leaves no
// space, control octet or '=' in a value, so no value can add an attribute
// or a command line. A single attribute that cannot fit a line alone is
// dropped (logged by the caller), never cut.
// Errors: none (pure functions; an empty result means "send nothing").
// See also: www.postfix.org/XFORWARD_README.html,
// www.postfix.org/XCLIENT_README.html; RFC 3461 §4; RFC 5321 §4.5.3.1.4.
#pragma once

#include "queue/store.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flushgate::gateway {

// How a customer's server learns the original client (customer --forward-client).
enum class client_forwarding {
  xforward,  // XFORWARD before each MAIL, when offered (the default)
  xclient,   // XCLIENT before each MAIL, then EHLO again, when offered
  none,      // never
};

// "xforward" (also ""), "xclient", "none"; anything else: nullopt.
std::optional<client_forwarding> parse_client_forwarding(std::string_view text);
const char* to_string(client_forwarding f) noexcept;

// The attribute names of an EHLO "XFORWARD ..." or "XCLIENT ..." line's
// arguments, upper-cased ("NAME ADDR PROTO HELO" -> {NAME, ADDR, PROTO, HELO}).
std::vector<std::string> parse_offered_attributes(std::string_view args);

// The command lines (each ending in CRLF, each at most max_line octets) that
// send `origin` with `verb` ("XFORWARD" or "XCLIENT"), attributes in the
// order NAME, ADDR, PORT, PROTO, HELO, only those in `offered` and known.
// Empty: nothing to send.
std::vector<std::string> client_forwarding_commands(std::string_view verb,
                                                    const queue::client_origin& origin,
                                                    const std::vector<std::string>& offered,
                                                    std::size_t max_line = 512);

}  // namespace flushgate::gateway
