// data_reader_fuzz.cpp — libFuzzer target for gateway::data_reader, the DATA
// phase decoder.
//
// Input: an 8-octet header, then the octets a client sends after "354".
//   [0..1] little-endian L: max_line = L - 1, or 1000 when L is 0;
//   [2..4] little-endian S: max_size = S - 1, or 10 MiB when S is 0;
//   [5..7] seed of the chunk sizes (a missing header octet counts as 0).
// The data is fed three ways, as smtp_session::receive_content does (feed,
// drop what was used, feed again): in chunks whose sizes (0 included) come
// from the seed, in one piece, and (up to 512 octets) one at a time. All must give
// the same status, octets used, error, content, octet count and Received:
// count: where the reads split the stream must never matter.
//
// The one-piece result is also checked against a reference written here from
// data_reader.hpp's contract, with no state machine:
//   - the data ends exactly after the first "\r\n.\r\n" in "\r\n" + input
//     (the start counts as after a CRLF); nothing else ends it, and what
//     follows is left unused;
//   - the lines are what lies between CRLFs, a leading dot removed; the
//     content is those lines joined with CRLF; the octet count is its size;
//   - error none exactly when no line holds a bare CR, a bare LF or a NUL, no
//     line exceeds max_line - 2 octets and the count stays within max_size;
//     otherwise the error reported is one of those that occur;
//   - content is exactly the reference when clean (so it never holds a bare
//     CR or LF), and empty after an error;
//   - Received: fields are the header lines (before the first empty line)
//     that start with "received", optional blanks, ':' (any case).
// Also: feed() never uses more than it was given and uses all of it until the
// end is found; after the end it uses nothing; take_content() moves out.
#include "gateway/inbound/data_reader.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

using namespace flushgate::gateway;
using flushgate::test::require;
using flushgate::test::require_equal;
using flushgate::test::require_equal_number;

constexpr std::size_t header_size = 8;
constexpr std::size_t octet_feed_limit = 512;  // longer inputs are not fed octet by octet (time)

struct outcome {
  data_status status = data_status::more;
  data_error error = data_error::none;
  std::size_t used = 0;
  std::size_t octets = 0;
  std::size_t received = 0;
  std::string content;
};

// Chunk sizes from a seed: mostly small, sometimes large, sometimes 0.
class chunker {
 public:
  explicit chunker(std::uint32_t seed) : state_(seed * 2654435761u + 1u) {}
  std::size_t next() {
    const std::uint32_t r = step();
    if (r % 16 == 0) return 0;
    return 1 + step() % (1u << (r >> 4) % 13);
  }

 private:
  std::uint32_t step() {  // xorshift32
    state_ ^= state_ << 13;
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    return state_;
  }
  std::uint32_t state_;
};

template <typename NextSize>
outcome run(std::string_view data, data_limits limits, NextSize next_size) {
  data_reader reader(limits);
  std::size_t pos = 0;
  while (pos < data.size()) {
    const std::size_t n = std::min(next_size(), data.size() - pos);
    const std::size_t used = reader.feed(data.substr(pos, n));
    require(used <= n, "feed used more than it was given");
    pos += used;
    if (reader.status() == data_status::done) break;
    require(used == n, "feed stopped short before the end of data");
  }
  outcome o;
  o.status = reader.status();
  o.used = pos;
  if (o.status == data_status::done) {
    require_equal_number(reader.feed(data.substr(pos)), 0, "feed after the end");
    require_equal_number(reader.feed("MAIL FROM:<a@b.test>\r\n"), 0, "feed after the end");
  } else {
    require_equal_number(pos, data.size(), "data left unused before the end");
  }
  o.error = reader.error();
  o.octets = reader.octets();
  o.received = reader.received_header_count();
  o.content = reader.take_content();
  require(reader.take_content().empty(), "take_content did not move the content out");
  return o;
}

void require_same(const outcome& a, const outcome& b, const char* how) {
  require(a.status == b.status, how);
  require(a.error == b.error, how);
  require_equal_number(a.used, b.used, how);
  require_equal_number(a.octets, b.octets, how);
  require_equal_number(a.received, b.received, how);
  require_equal(a.content, b.content, how);
}

// The header line `line` (dot already removed) is a Received: field.
bool is_received_field(std::string_view line) {
  constexpr std::string_view name = "received";
  if (line.size() < name.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = line[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != name[i]) return false;
  }
  std::size_t i = name.size();
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  return i < line.size() && line[i] == ':';
}

struct reference {
  bool done = false;
  std::size_t used = 0;
  std::size_t octets = 0;
  std::size_t received = 0;
  bool bare_cr = false, bare_lf = false, nul = false, too_long = false, too_big = false;
  std::string content;
};

reference expected(std::string_view data, data_limits limits) {
  reference r;
  const std::string framed = "\r\n" + std::string(data);
  const auto end = framed.find("\r\n.\r\n");
  r.done = end != std::string::npos;
  r.used = r.done ? end + 3 : data.size();  // end + 5 octets of "\r\n.\r\n", less the 2 added
  std::string_view body = data.substr(0, r.used);
  if (r.done) {
    body.remove_suffix(3);  // the final ".\r\n"
  } else if (body.ends_with('\r')) {
    body.remove_suffix(1);  // a CR still waiting to learn whether an LF follows
  }
  bool in_header = true;
  std::size_t pos = 0;
  while (true) {
    const auto crlf = body.find("\r\n", pos);
    const bool complete = crlf != std::string_view::npos;
    std::string_view line = body.substr(pos, complete ? crlf - pos : std::string_view::npos);
    if (line.starts_with('.')) line.remove_prefix(1);  // transparency, RFC 5321 §4.5.2
    for (const char c : line) {
      if (c == '\r') r.bare_cr = true;
      if (c == '\n') r.bare_lf = true;
      if (c == '\0') r.nul = true;
    }
    if (!line.empty() && line.size() + 2 > limits.max_line) r.too_long = true;
    if (in_header && is_received_field(line)) ++r.received;
    if (complete && line.empty()) in_header = false;
    r.content += line;
    if (complete) r.content += "\r\n";
    if (!complete) break;
    pos = crlf + 2;
  }
  r.octets = r.content.size();
  r.too_big = r.octets > limits.max_size;
  return r;
}

void check_against_reference(std::string_view data, data_limits limits, const outcome& got) {
  const reference want = expected(data, limits);
  require((got.status == data_status::done) == want.done, "end of data found where the reference does not");
  require_equal_number(got.used, want.used, "octets used");
  require_equal_number(got.octets, want.octets, "octet count");
  require_equal_number(got.received, want.received, "Received: count");
  const bool clean = !(want.bare_cr || want.bare_lf || want.nul || want.too_long || want.too_big);
  switch (got.error) {
    case data_error::none: require(clean, "error none on a message the reference refuses"); break;
    case data_error::too_big: require(want.too_big, "too_big reported, not over max_size"); break;
    case data_error::line_too_long: require(want.too_long, "line_too_long reported, no line too long"); break;
    case data_error::bare_lf: require(want.bare_lf, "bare_lf reported, no bare LF"); break;
    case data_error::bare_cr: require(want.bare_cr, "bare_cr reported, no bare CR"); break;
    case data_error::nul: require(want.nul, "nul reported, no NUL"); break;
  }
  if (got.error != data_error::none) {
    require(got.content.empty(), "content kept after an error");
    return;
  }
  require_equal(got.content, want.content, "content");
  // Stated directly too: clean content has CR and LF only as CRLF, and fits max_size.
  for (std::size_t i = 0; i < got.content.size(); ++i) {
    if (got.content[i] == '\r') require(i + 1 < got.content.size() && got.content[i + 1] == '\n', "bare CR in content");
    if (got.content[i] == '\n') require(i > 0 && got.content[i - 1] == '\r', "bare LF in content");
  }
  require(got.content.size() <= limits.max_size, "content over max_size");
  if (got.status == data_status::done) {
    require(got.content.empty() || got.content.ends_with("\r\n"), "content does not end with CRLF");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::uint8_t h[header_size] = {};
  std::copy_n(bytes, std::min(size, header_size), h);
  const std::size_t l = h[0] | static_cast<std::size_t>(h[1]) << 8;
  const std::size_t s = h[2] | static_cast<std::size_t>(h[3]) << 8 | static_cast<std::size_t>(h[4]) << 16;
  const data_limits limits{s == 0 ? 10 * 1024 * 1024 : s - 1, l == 0 ? 1000 : l - 1};
  const std::uint32_t seed = h[5] | static_cast<std::uint32_t>(h[6]) << 8 | static_cast<std::uint32_t>(h[7]) << 16;
  const std::string_view data = size > header_size
                                    ? std::string_view(reinterpret_cast<const char*>(bytes) + header_size,
                                                       size - header_size)
                                    : std::string_view();

  const outcome whole = run(data, limits, [&] { return data.size(); });
  check_against_reference(data, limits, whole);

  chunker sizes(seed);
  const outcome chunked = run(data, limits, [&] { return sizes.next(); });
  require_same(chunked, whole, "chunked feeding differs from one piece");

  if (data.size() <= octet_feed_limit) {
    const outcome octets = run(data, limits, [] { return std::size_t{1}; });
    require_same(octets, whole, "octet-by-octet feeding differs from one piece");
  }
  return 0;
}
