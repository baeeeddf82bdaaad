// data_reader.hpp — the DATA phase decoder: finds the end of the message,
// undoes dot-stuffing and enforces the content rules. Pure: it is fed the
// bytes the session read from the socket and never reads the socket itself.
//
// Purpose: turn the octets after "354" into the message content, for
// RFC 5321 §4.1.1.4 and §4.5.2, and report whether the message may be taken.
//
// Security — this is the anti-smuggling core (PROTOCOLS.md §6):
//   - Only <CRLF>.<CRLF> ends the data. The start of the data counts as being
//     after a CRLF, so a body of just ".\r\n" is the empty message.
//   - A bare LF or bare CR (one not part of CRLF) anywhere in the content is
//     an error (bare_lf / bare_cr) and NEVER ends a line or the data:
//     "\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r" and "\r\n.\r", and all text after
//     them, stay inside this one message until a real CRLF.CRLF. The caller
//     rejects such a message (550 5.6.0) after that real end, so nothing after
//     a smuggled "end" can ever become a second transaction.
//   - A line longer than max_line octets, counting its CRLF but not the
//     transparency dot (RFC 5321 §4.5.3.1.6) → line_too_long.
//   - More than max_size content octets (CRLFs counted, dot-stuffing and the
//     final ".\r\n" not — as SIZE counts them, RFC 1870 §5-6) → too_big.
//     max_size is absolute; 0 is not "unlimited".
//   - A NUL octet → nul.
//   The first error wins. After an error the reader stops storing and drops
//   what it stored (so memory stays bounded by max_size), but keeps scanning
//   and counting to the real end, so the session stays in step with the
//   client and replies once, after the final dot.
//   Bytes after the terminating CRLF.CRLF are not consumed: they belong to the
//   next command (RFC 2920 §3.1, e.g. a pipelined RSET or MAIL).
// Errors: data_error (below), read with error() once status() is done.
// Limitations: "Received:" lines are counted in the header section only (up
// to the first empty line); a header name written "Received :" also counts.
// See also: RFC 5321 §2.3.8, §4.1.1.4, §4.5.2, §4.5.3.1, §6.3 (loops);
// PROTOCOLS.md §5 items 1-5 and §6 item 7.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace flushgate::gateway {

struct data_limits {
  std::size_t max_size;  // content octets
  std::size_t max_line;  // octets per line including CRLF, e.g. 1000
};

enum class data_status {
  more,  // needs more input
  done,  // saw CRLF.CRLF
};

enum class data_error {
  none,
  too_big,        // content beyond max_size (552 5.3.4)
  line_too_long,  // a line beyond max_line (RFC 5321 §4.5.3.1.6)
  bare_lf,        // LF not preceded by CR (550 5.6.0)
  bare_cr,        // CR not followed by LF (550 5.6.0)
  nul,            // a NUL octet (550 5.6.0)
};

class data_reader {
 public:
  explicit data_reader(data_limits limits);

  // Consumes bytes from `in`; returns how many it used. Once done, the bytes
  // after the terminating CRLF.CRLF are left unconsumed, and feed returns 0.
  std::size_t feed(std::string_view in);

  // more until the terminating CRLF.CRLF has been fed.
  data_status status() const { return status_; }

  // The first error seen, or none.
  data_error error() const { return error_; }

  // The content, dot-unstuffed, CRLF line endings, without the final ".\r\n";
  // always empty when error() != none. Moves it out (a second call gives "").
  std::string take_content();

  // Content octets so far (after unstuffing), counted even after an error.
  std::size_t octets() const { return octets_; }

  // "Received:" header fields in the header section (case-insensitive).
  std::size_t received_header_count() const { return received_; }

 private:
  void fail(data_error e);
  void add_octet(char c);
  void end_line();

  data_limits limits_;
  data_status status_ = data_status::more;
  data_error error_ = data_error::none;
  std::string content_;
  std::size_t octets_ = 0;
  std::size_t line_len_ = 0;  // content octets of the current line, CRLF and stuffing dot excluded
  std::size_t received_ = 0;
  bool at_line_start_ = true;  // the next octet starts a line (the data start counts)
  bool dot_only_ = false;      // the current line so far is just its (removed) leading dot
  bool pending_cr_ = false;    // the last octet was CR; the next decides CRLF or bare CR
  bool in_header_ = true;      // no empty line seen yet
  int header_match_ = -1;      // progress matching "received" at a header line's start; -1 idle
};

}  // namespace flushgate::gateway
