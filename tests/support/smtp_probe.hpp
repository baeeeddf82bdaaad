// smtp_probe.hpp — a blocking SMTP client for tests that need exact bytes.
//
// Purpose: swaks cannot send bare LFs, a lone "." inside a line, an overlong
// line or a pipelined burst split at a chosen byte; smtp_probe sends whatever
// bytes a test gives it and parses the server's replies strictly, so smuggling,
// limit and pipelining tests can assert on every reply.
// Security: talks to the numeric loopback address it is given; every read and
// write is bounded by the probe's timeout; a reply is at most 64 KiB.
// Errors: connect/send_raw/read_reply return probe_errc codes (below) or the
// system error of the failed call. After an error the connection stays open
// for the test to inspect; close() or the destructor closes it.
// See also: RFC 5321 §4.2 (reply format: "250-" continues, "250 " ends).
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace flushgate::test {

enum class probe_errc {
  ok = 0,
  timed_out = 1,       // no complete reply (or send) within the timeout
  closed = 2,          // the server closed the connection (EOF)
  bad_reply = 3,       // a line is not "NNN-text"/"NNN text", or codes differ
  reply_too_long = 4,  // a reply beyond 64 KiB
  not_connected = 5,   // send/read before connect() or after close()
};
const boost::system::error_category& probe_category() noexcept;
inline boost::system::error_code make_error_code(probe_errc e) noexcept {
  return {static_cast<int>(e), probe_category()};
}

struct probe_reply {
  int code = 0;                    // e.g. 250
  std::vector<std::string> lines;  // each line's text after "NNN-"/"NNN ", no CRLF
  std::string raw;                 // the reply's bytes exactly as received
};

class smtp_probe {
 public:
  // `timeout` bounds each connect, send_raw and read_reply call.
  explicit smtp_probe(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~smtp_probe();
  smtp_probe(const smtp_probe&) = delete;
  smtp_probe& operator=(const smtp_probe&) = delete;

  // Connects to host:port (numeric address). Does not read the greeting.
  boost::system::error_code connect(const std::string& host, std::uint16_t port);
  // Sends exactly `bytes`, nothing added.
  boost::system::error_code send_raw(std::string_view bytes);
  // Reads one complete (possibly multi-line) reply; bytes after it stay
  // buffered for the next call (pipelined replies).
  boost::system::result<probe_reply> read_reply();
  // Sends line + CRLF and reads one reply.
  boost::system::result<probe_reply> command(std::string_view line);
  // Closes the connection; unread bytes are dropped.
  void close();
  // True between a successful connect() and close().
  bool is_open() const noexcept { return fd_ >= 0; }

 private:
  boost::system::error_code fill_buffer(std::chrono::steady_clock::time_point deadline);

  std::chrono::milliseconds timeout_;
  int fd_ = -1;
  std::string buffer_;  // received, not yet returned
};

}  // namespace flushgate::test

template <>
struct boost::system::is_error_code_enum<flushgate::test::probe_errc> : std::true_type {};
