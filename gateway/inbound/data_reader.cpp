// data_reader.cpp — see data_reader.hpp.
//
// A byte-level state machine. The only state carried across feed() calls is
// a few flags (line start, pending CR, dot-only line, header matching), so a
// CRLF.CRLF split anywhere between two reads is found exactly as in one read.
// Ordinary octets in the middle of a line are handled in bulk runs.
#include "gateway/inbound/data_reader.hpp"

#include <algorithm>
#include <utility>

namespace flushgate::gateway {
namespace {

constexpr std::string_view received_name = "received";

char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_special(char c) { return c == '\r' || c == '\n' || c == '\0'; }

}  // namespace

data_reader::data_reader(data_limits limits) : limits_(limits) {}

std::string data_reader::take_content() { return std::exchange(content_, std::string{}); }

void data_reader::fail(data_error e) {
  if (error_ != data_error::none) return;
  error_ = e;
  // The message will be refused: drop what we hold and store no more.
  content_ = std::string{};
}

// One content octet of the current line (never the CRLF that ends it).
void data_reader::add_octet(char c) {
  ++line_len_;
  if (line_len_ + 2 > limits_.max_line) fail(data_error::line_too_long);
  ++octets_;
  if (octets_ > limits_.max_size) fail(data_error::too_big);
  if (error_ == data_error::none) content_.push_back(c);
  if (header_match_ >= 0) {
    // "Received" then optional WSP then ':' (obs-optional, RFC 5322 §4.5.3).
    if (header_match_ < static_cast<int>(received_name.size())) {
      header_match_ = to_lower(c) == received_name[static_cast<std::size_t>(header_match_)] ? header_match_ + 1 : -1;
    } else if (c == ':') {
      ++received_;
      header_match_ = -1;
    } else if (c != ' ' && c != '\t') {
      header_match_ = -1;
    }
  }
}

// A CRLF that does not end the data: it is content, and ends the line.
void data_reader::end_line() {
  if (line_len_ == 0) in_header_ = false;  // the empty line ends the header section
  octets_ += 2;
  if (octets_ > limits_.max_size) fail(data_error::too_big);
  if (error_ == data_error::none) content_.append("\r\n");
  line_len_ = 0;
  at_line_start_ = true;
  header_match_ = -1;
}

std::size_t data_reader::feed(std::string_view in) {
  if (status_ == data_status::done) return 0;
  const std::size_t n = in.size();
  std::size_t i = 0;
  while (i < n) {
    const char c = in[i];

    // 1. Resolve a CR from the previous octet: CRLF, or a bare CR.
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') {
        ++i;
        if (dot_only_) {  // <CRLF>.<CRLF>: the only end of data (RFC 5321 §4.1.1.4)
          status_ = data_status::done;
          return i;
        }
        end_line();
        continue;
      }
      // RFC 5321 §2.3.8: a bare CR is not a line end; keep it as content
      // (the message is refused anyway) and go on with `c` below.
      fail(data_error::bare_cr);
      dot_only_ = false;
      add_octet('\r');
    }

    // 2. Line start: transparency (§4.5.2) — drop a leading dot; a line that
    //    is only that dot followed by CRLF ends the data.
    if (at_line_start_) {
      at_line_start_ = false;
      header_match_ = in_header_ ? 0 : -1;
      if (c == '.') {
        dot_only_ = true;
        ++i;
        continue;
      }
    }

    // 3. A CR waits for the next octet (which may arrive in the next feed).
    if (c == '\r') {
      pending_cr_ = true;
      ++i;
      continue;
    }
    dot_only_ = false;

    // 4. Fast path: a run of ordinary octets that fits both limits and needs
    //    no header matching is copied at once. The octet that would cross a
    //    limit goes through add_octet, so errors come out as byte by byte.
    if (!is_special(c) && header_match_ < 0) {
      std::size_t end = i + 1;
      while (end < n && !is_special(in[end])) ++end;
      std::size_t take = end - i;
      if (error_ == data_error::none) {
        const std::size_t line_room = limits_.max_line > line_len_ + 2 ? limits_.max_line - 2 - line_len_ : 0;
        const std::size_t size_room = limits_.max_size > octets_ ? limits_.max_size - octets_ : 0;
        take = std::min({take, line_room, size_room});
        if (take > 0) content_.append(in.substr(i, take));
      }
      if (take > 0) {
        line_len_ += take;
        octets_ += take;
        i += take;
        continue;
      }
    }

    // 5. One octet: bare LF (§2.3.8: never a line end), NUL, or ordinary.
    if (c == '\n') fail(data_error::bare_lf);
    if (c == '\0') fail(data_error::nul);
    add_octet(c);
    ++i;
  }
  return n;
}

}  // namespace flushgate::gateway
