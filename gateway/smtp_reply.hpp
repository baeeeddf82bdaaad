// smtp_reply.hpp — format SMTP replies for the wire.
//
// Purpose: one function that turns (code, enhanced status, text) into the
// octets of a single- or multi-line reply, e.g.
//   format_reply(250, "2.1.0", "Ok")      → "250 2.1.0 Ok\r\n"
//   format_reply(250, "", "a.test\nSIZE") → "250-a.test\r\n250 SIZE\r\n"
// Security: `text` may carry peer-supplied words (an address, a domain). A CR
// or LF in it never reaches the wire except as the line separator produced
// here ('\n' starts a new line, '\r' is dropped), and other control octets
// become '?', so a peer cannot inject reply lines. Every line, CRLF included,
// is at most 512 octets (RFC 5321 §4.5.3.1.5): a longer text line is split
// into continuation lines, at a space when there is one.
// Errors: none. `code` must be 200..599 (RFC 5321 §4.2: only 2-5 are sent);
// `enhanced` is a status such as "2.1.0" or empty (greeting, EHLO replies).
// See also: RFC 5321 §4.2 (reply syntax), §4.5.3.1.5; RFC 2034 §3-4
// (the enhanced code is repeated on every line of a multi-line reply).
#pragma once

#include <string>
#include <string_view>

namespace flushgate::gateway {

// Longest reply line, CRLF included (RFC 5321 §4.5.3.1.5).
inline constexpr std::size_t max_reply_line = 512;

// Formats a reply; '\n' in `text` separates the lines of a multi-line reply.
std::string format_reply(int code, std::string_view enhanced, std::string_view text);

// True when a server's reply to RCPT says the address cannot be delivered
// to, for good: an enhanced code X.1.X (RFC 3463 §3.2, addressing: 5.1.1 bad
// mailbox, 5.1.2 bad system, 5.1.3 bad syntax, 5.1.6 moved) — the enhanced
// code decides over the basic one — or, without one, 550/551/553 (RFC 5321
// §4.2.2). A full mailbox (5.2.x), a policy refusal ("550 5.7.1") or a 4xx is
// never "unknown user": the recipient checks learn nothing from them.
bool refuses_unknown_user(int code, std::string_view enhanced);

}  // namespace flushgate::gateway
