// xtext.hpp — the "xtext" encoding of DSN parameters (ENVID, ORCPT, AUTH=).
//
// Purpose: decode and encode xtext, RFC 3461 §4: every octet outside 33..126,
// and '+' and '=', is written as "+XX" with two upper-case hex digits.
// Security: the input is peer-supplied MAIL/RCPT parameter text; decoding is a
// single bounded pass and never reads past the view. A decoded value may hold
// any octet (even NUL or CR/LF): callers that log or echo it must escape it.
// Errors: xtext_decode returns std::nullopt for any malformed input (a bare '=',
// an octet outside 33..126, '+' not followed by two upper-case hex digits).
// See also: RFC 3461 §4 (xtext), §4.2 (ORCPT), §4.4 (ENVID); RFC 4954 §5 (AUTH=).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace flushgate::gateway {

// Decodes xtext; std::nullopt when `text` is not valid xtext ("" decodes to "").
std::optional<std::string> xtext_decode(std::string_view text);

// Encodes any octet string as xtext (the inverse of xtext_decode).
std::string xtext_encode(std::string_view raw);

}  // namespace flushgate::gateway
