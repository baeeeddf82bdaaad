// address.hpp — RFC 5321 mailbox and domain syntax for MAIL FROM / RCPT TO.
//
// Purpose: turn the text between '<' and '>' of a MAIL or RCPT path into a
// mailbox {local, domain}, and check domain names. Pure functions, no I/O.
// Security: the input is untrusted peer text. Limits (RFC 5321 §4.5.3.1):
// local-part 64 octets, domain 255, path 256 including the angle brackets
// (so at most 254 between them). We do not offer SMTPUTF8, so any octet above
// 0x7F is refused. Relay tricks are reported separately from plain syntax
// errors so that the caller refuses them and never routes on them:
//   - '%' or '!' in a local part (percent hack, bang paths), and '@' inside a
//     quoted local part ("user@evil.test"@acme.test)  → routing_chars;
//   - a domain address literal such as [127.0.0.1]     → address_literal.
// A source route ("@a,@b:user@d", RFC 5321 §4.1.2, Appendix C) is checked and
// dropped: the result is user@d, and d is the domain the caller must judge.
// Errors: address_error (below). `out` is filled for ok, routing_chars and
// address_literal (so the caller can log what was refused), untouched otherwise.
// Limitations: the special recipient <Postmaster> (no domain, RFC 5321 §4.5.1)
// is a syntax error here; the caller recognises it before calling.
// The local part is kept exactly as typed (quotes and escapes included),
// because it is relayed unchanged and only the destination interprets it.
// See also: RFC 5321 §4.1.2 (syntax), §4.1.3 (address literals), §4.5.3.1.
#pragma once

#include <string>
#include <string_view>

namespace flushgate::gateway {

enum class address_error {
  ok,               // a plain mailbox
  syntax,           // not Mailbox / Path syntax (includes a trailing dot on the domain)
  too_long,         // local part > 64, domain > 255, or path > 256 octets
  non_ascii,        // an octet above 0x7F (SMTPUTF8 is not offered)
  routing_chars,    // '%' '!' in the local part, or '@' inside a quoted local part
  address_literal,  // the domain is [...]: syntactically fine, never relayed to
};

struct mailbox {
  std::string local;   // as typed, e.g. john.doe or "john doe"
  std::string domain;  // lower-cased; for an address literal the bracketed text
};

// Parses the inside of a path (between < and >); see the contract above.
address_error parse_mailbox(std::string_view path, mailbox& out);

// True for LDH labels of 1-63 octets, ≤255 in total, at least one dot, no
// empty label (so no trailing dot), no label starting or ending with '-'.
bool is_valid_domain(std::string_view d);

// ASCII lower-case copy of `d` (domains compare case-insensitively).
std::string normalize_domain(std::string_view d);

// "local@domain", the mailbox as it is written in a path.
std::string to_string(const mailbox& m);

}  // namespace flushgate::gateway
