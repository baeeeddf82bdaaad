// smtp_command.hpp — split an SMTP command line into verb and argument, and
// parse the MAIL FROM / RCPT TO argument (path plus ESMTP parameters).
//
// Purpose: pure parsing for the session's command table; no I/O, no state.
// Security: the line is untrusted peer text, already bounded by the line
// reader (512 octets, RFC 5321 §4.5.3.1.4, or more with extensions). Parameter
// values are checked against their grammar and length limits here (RFC 3461
// §5.4: ENVID 100, ORCPT 500); the path itself is only extracted — the caller
// validates it with parse_mailbox (address.hpp), which applies the relay rules.
// Only the parameters of the extensions we advertise are known: SIZE, BODY
// (7BIT/8BITMIME — no BINARYMIME since CHUNKING is not offered), DSN (RET,
// ENVID, NOTIFY, ORCPT) and AUTH=. SMTPUTF8 is not offered, so it is unknown.
// Errors: param_error, each with the reply code the caller should use:
// syntax 501, unknown_param 555 (RFC 5321 §4.1.1.11), duplicate 501 (RFC 3461
// §4.5), bad_value 501. parse_result::detail is human text safe to put in a
// reply (it never echoes peer text).
// See also: RFC 5321 §4.1.1.2-3, §4.1.2 (syntax), §4.1.4; RFC 1870 (SIZE);
// RFC 6152 (8BITMIME); RFC 3461 §4 (DSN parameters); RFC 4954 §5 (AUTH=).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace flushgate::gateway {

enum class verb { helo, ehlo, mail, rcpt, data, bdat, rset, noop, quit, vrfy, expn, help, starttls, auth, etrn, atrn, unknown };

struct command {
  verb v = verb::unknown;
  std::string name;  // upper-cased verb as sent ("MAIL", "XYZZY")
  std::string arg;   // rest of line after one SP, CRLF stripped; for MAIL/RCPT the text after "FROM:"/"TO:"
  // MAIL without "FROM:" or RCPT without "TO:" (→ 501). arg is then "", so it
  // also fails parse_mail_args/parse_rcpt_args with param_error::syntax.
  bool missing_keyword = false;
};

// Splits a command line (without CRLF; a trailing CRLF is stripped anyway).
// The verb is case-insensitive; "MAIL FROM:" and "RCPT TO:" give verb mail /
// rcpt with arg = the text after the colon.
command parse_command(std::string_view line);

enum class param_error {
  ok,
  syntax,         // 501: bad path or parameter syntax
  unknown_param,  // 555: parameter not recognised or not implemented
  duplicate,      // 501: the same parameter twice
  bad_value,      // 501: a known parameter with an invalid value
};

struct mail_args {
  std::string path;                   // inside <>, "" for the null sender
  std::optional<std::uint64_t> size;  // SIZE=, saturated at UINT64_MAX
  std::string body;                   // "7BIT" | "8BITMIME" | ""
  std::string ret;                    // "FULL" | "HDRS" | ""
  std::string envid;                  // xtext as received
  std::string auth;                   // AUTH= value as received ("<>" or xtext)
};

struct rcpt_args {
  std::string path;    // inside <>, never empty
  std::string notify;  // upper-cased, validated: "NEVER" or e.g. "SUCCESS,FAILURE"
  std::string orcpt;   // "addr-type;xtext" as received, validated
};

struct parse_result {
  param_error error = param_error::ok;
  std::string detail;  // human text for the reply
};

// Parses what follows "MAIL FROM:"; `out` is reset first and is meaningful only on ok.
parse_result parse_mail_args(std::string_view arg, mail_args& out);

// Parses what follows "RCPT TO:"; `out` is reset first and is meaningful only on ok.
parse_result parse_rcpt_args(std::string_view arg, rcpt_args& out);

}  // namespace flushgate::gateway
