// line_reader.hpp — bounded CRLF lines in, buffered replies out.
//
// Purpose: the I/O half of every line-based server session (SMTP, ODMR):
// reads one command line at a time from an smtp_stream and collects replies,
// writing them whenever no complete line is waiting (RFC 2920 §3.2), so a
// pipelining client gets its replies in one packet.
// Security: a line longer than its limit (CRLF included) is discarded up to
// its CRLF and reported as too_long; its tail is never handed out as a line
// (STYLE.md: read_until's trap). Only CRLF ends a line; a bare CR or LF stays
// inside the line for the caller to refuse. Input is buffered only up to the
// limit of the line being read (plus one read).
// Errors: status::closed, with error() telling why (timed_out, eof,
// operation_aborted after cancel).
#pragma once

#include "gateway/smtp_stream.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace flushgate::gateway {

class line_reader {
 public:
  enum class status { line, too_long, closed };
  using duration = smtp_stream::duration;
  // Decides, from the start of a line that overflows `limit`, whether it may
  // grow to the long limit instead (AUTH lines, RFC 4954 §4).
  using long_line_test = std::function<bool(std::string_view start)>;

  explicit line_reader(smtp_stream& stream) : stream_(stream) {}

  // One line without its CRLF. `limit` counts the CRLF; `timeout` bounds the
  // whole line, however slowly its bytes arrive (a client trickling a byte
  // at a time is cut when it runs out, not reset by each byte).
  boost::asio::awaitable<status> read_line(std::string& line, std::size_t limit,
                                           duration timeout, const long_line_test& may_be_long = {},
                                           std::size_t long_limit = 0);
  // Writes pending replies, then reads whatever arrives into input().
  boost::asio::awaitable<bool> fill(duration timeout);
  // Queues text (already formatted, CRLF included) for the next flush.
  void write(std::string_view text) { out_ += text; }
  boost::asio::awaitable<bool> flush(duration timeout);

  // Bytes read but not consumed: the DATA reader feeds from here, STARTTLS
  // and the ODMR turnaround clear it.
  std::string& input() { return in_; }
  bool output_pending() const { return !out_.empty(); }
  // Why the last read or write failed.
  const boost::system::error_code& error() const { return error_; }

 private:
  smtp_stream& stream_;
  std::string in_;
  std::string out_;
  boost::system::error_code error_;
};

}  // namespace flushgate::gateway
