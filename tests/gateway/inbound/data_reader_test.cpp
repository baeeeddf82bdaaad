// data_reader_test.cpp — tests gateway/inbound/data_reader.cpp: end of data, dot
// unstuffing, limits, and the SMTP smuggling sequences (PROTOCOLS.md §5-6).
#include "gateway/inbound/data_reader.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <random>
#include <string>
#include <vector>

namespace flushgate::gateway {
namespace {

using namespace std::string_literals;

constexpr data_limits big_limits{10'000'000, 1000};

const char* name(data_error e) {
  switch (e) {
    case data_error::none: return "none";
    case data_error::too_big: return "too_big";
    case data_error::line_too_long: return "line_too_long";
    case data_error::bare_lf: return "bare_lf";
    case data_error::bare_cr: return "bare_cr";
    case data_error::nul: return "nul";
  }
  return "?";
}

// Printable form of raw bytes for failure messages.
std::string show(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == '\r') out += "\\r";
    else if (c == '\n') out += "\\n";
    else if (c == '\0') out += "\\0";
    else out += c;
  }
  return out;
}

struct outcome {
  bool done = false;
  data_error error = data_error::none;
  std::size_t consumed = 0;
  std::size_t octets = 0;
  std::size_t received = 0;
  std::string content;

  bool operator==(const outcome&) const = default;
};

std::string describe(const outcome& o) {
  return std::string("{done=") + (o.done ? "1" : "0") + " error=" + name(o.error) +
         " consumed=" + std::to_string(o.consumed) + " octets=" + std::to_string(o.octets) +
         " received=" + std::to_string(o.received) + " content=\"" + show(o.content) + "\"}";
}

// Feeds `in` in the chunks given by `sizes` (the rest in one last chunk),
// the way a session does: after each feed it drops what was consumed and,
// once done, stops feeding.
outcome run(std::string_view in, data_limits limits, const std::vector<std::size_t>& sizes = {}) {
  data_reader r(limits);
  outcome o;
  std::size_t pos = 0;
  std::size_t k = 0;
  while (pos < in.size() && r.status() == data_status::more) {
    const std::size_t len = k < sizes.size() ? std::min(sizes[k++], in.size() - pos) : in.size() - pos;
    const std::size_t used = r.feed(in.substr(pos, len));
    EXPECT_LE(used, len);
    if (r.status() == data_status::more) {
      EXPECT_EQ(used, len) << "got " << used << " of " << len << " consumed while not done, want all";
    }
    o.consumed += used;
    pos += len;
  }
  o.done = r.status() == data_status::done;
  o.error = r.error();
  o.octets = r.octets();
  o.received = r.received_header_count();
  o.content = r.take_content();
  return o;
}

outcome run_by(std::string_view in, data_limits limits, std::size_t step) {
  return run(in, limits, std::vector<std::size_t>(in.size() / step + 1, step));
}

// Independent model over the whole buffer: lines are what lies between raw
// CRLF pairs; the first complete line that is exactly "." ends the data.
outcome reference(std::string_view in, data_limits limits) {
  outcome o;
  std::string content;
  std::size_t pos = 0;
  bool in_header = true;
  auto fail = [&o](data_error e) {
    if (o.error == data_error::none) o.error = e;
  };
  while (true) {
    const auto crlf = in.find("\r\n", pos);
    if (crlf == std::string_view::npos) break;  // an unfinished line: never complete here
    std::string_view line = in.substr(pos, crlf - pos);
    pos = crlf + 2;
    if (line == ".") {
      o.done = true;
      o.consumed = pos;
      break;
    }
    if (!line.empty() && line[0] == '.') line.remove_prefix(1);
    std::size_t len = 0;
    for (const char c : line) {
      if (c == '\r') fail(data_error::bare_cr);
      if (c == '\n') fail(data_error::bare_lf);
      if (c == '\0') fail(data_error::nul);
      ++len;
      if (len + 2 > limits.max_line) fail(data_error::line_too_long);
      ++o.octets;
      if (o.octets > limits.max_size) fail(data_error::too_big);
    }
    o.octets += 2;
    if (o.octets > limits.max_size) fail(data_error::too_big);
    if (line.empty()) in_header = false;
    if (in_header) {
      std::size_t i = 0;
      static constexpr std::string_view want = "received";
      while (i < want.size() && i < line.size() && std::tolower(static_cast<unsigned char>(line[i])) == want[i]) ++i;
      if (i == want.size()) {
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
        if (i < line.size() && line[i] == ':') ++o.received;
      }
    }
    content.append(line);
    content.append("\r\n");
  }
  if (o.error == data_error::none) o.content = content;
  return o;
}

// Every chunking must give the same outcome as one feed.
void expect_same_for_every_split(const std::string& in, data_limits limits) {
  const outcome whole = run(in, limits);
  const outcome bytes = run_by(in, limits, 1);
  EXPECT_EQ(bytes, whole) << "input \"" << show(in) << "\" fed 1 byte at a time: got " << describe(bytes)
                          << ", want " << describe(whole);
  const outcome pairs = run_by(in, limits, 2);
  EXPECT_EQ(pairs, whole) << "input \"" << show(in) << "\" fed 2 bytes at a time: got " << describe(pairs)
                          << ", want " << describe(whole);
  for (std::size_t split = 0; split <= in.size(); ++split) {
    const outcome two = run(in, limits, {split});
    EXPECT_EQ(two, whole) << "input \"" << show(in) << "\" split at " << split << ": got " << describe(two)
                          << ", want " << describe(whole);
  }
}

TEST(DataReader, SimpleMessage) {
  const std::string in = "Subject: hi\r\n\r\nhello\r\n.\r\n";
  const auto o = run(in, big_limits);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.error, data_error::none) << "got " << name(o.error) << ", want none";
  EXPECT_EQ(o.content, "Subject: hi\r\n\r\nhello\r\n");
  EXPECT_EQ(o.consumed, in.size());
  EXPECT_EQ(o.octets, o.content.size());
}

TEST(DataReader, EmptyMessage) {
  const auto o = run(".\r\n", big_limits);
  EXPECT_TRUE(o.done) << "got not done, want \".\\r\\n\" at the start to end the data";
  EXPECT_EQ(o.error, data_error::none);
  EXPECT_EQ(o.content, "");
  EXPECT_EQ(o.consumed, 3u);
  EXPECT_EQ(o.octets, 0u);
}

TEST(DataReader, DotUnstuffing) {
  const auto o = run("..\r\n...x\r\n. \r\n.a\r\nb.\r\n.\r\n", big_limits);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.content, ".\r\n..x\r\n \r\na\r\nb.\r\n") << "got \"" << show(o.content) << "\"";
}

TEST(DataReader, NeedsTheWholeTerminator) {
  data_reader r(big_limits);
  EXPECT_EQ(r.feed("abc\r\n"), 5u);
  EXPECT_EQ(r.status(), data_status::more);
  EXPECT_EQ(r.feed("."), 1u);
  EXPECT_EQ(r.status(), data_status::more);
  EXPECT_EQ(r.feed("\r"), 1u);
  EXPECT_EQ(r.status(), data_status::more);
  EXPECT_EQ(r.feed("\n"), 1u);
  EXPECT_EQ(r.status(), data_status::done);
  EXPECT_EQ(r.feed("more"), 0u) << "got bytes consumed after done, want 0";
  EXPECT_EQ(r.take_content(), "abc\r\n");
  EXPECT_EQ(r.take_content(), "") << "got content twice, want it moved out";
}

TEST(DataReader, PipelinedBytesAfterTheEndAreLeft) {
  const std::string body = "Subject: x\r\n\r\nbody\r\n.\r\n";
  const std::string next = "RSET\r\nMAIL FROM:<a@b.test>\r\n";
  const std::string in = body + next;
  for (std::size_t step : {1u, 2u, 3u, 7u, 1000u}) {
    const auto o = run_by(in, big_limits, step);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.consumed, body.size()) << "step " << step << ": got " << o.consumed << " consumed, want "
                                       << body.size() << " (the pipelined commands stay unread)";
  }
  data_reader r(big_limits);
  const auto used = r.feed(in);
  EXPECT_EQ(std::string_view(in).substr(used), next);
}

// PROTOCOLS.md §6 item 7: none of these ends the data; the text after them
// stays in this message, the message carries an error, and only the real
// CRLF.CRLF ends it.
TEST(DataReader, SmugglingSequencesNeverEndTheData) {
  struct smuggle_case {
    std::string sequence;
    data_error want;
  };
  const smuggle_case cases[] = {
      {"\n.\n", data_error::bare_lf},
      {"\n.\r\n", data_error::bare_lf},
      {"\r\n.\n", data_error::bare_lf},
      {"\r.\r", data_error::bare_cr},
      {"\r\n.\r", data_error::bare_cr},
      {"\r\n.\r\r\n", data_error::bare_cr},
      {"\r.\r\n", data_error::bare_cr},
      {"\n.\r", data_error::bare_lf},
  };
  const std::string head = "From: a@b.test\r\nSubject: real\r\n\r\nreal body";
  const std::string smuggled = "MAIL FROM:<ceo@victim.test>\r\nRCPT TO:<x@acme.test>\r\nDATA\r\n"
                               "From: ceo@victim.test\r\n\r\nsmuggled\r\n";
  const std::string end = ".\r\n";
  for (const auto& c : cases) {
    const std::string before_end = head + c.sequence + smuggled;
    const std::string in = before_end + end + "QUIT\r\n";

    data_reader r(big_limits);
    EXPECT_EQ(r.feed(before_end), before_end.size());
    EXPECT_EQ(r.status(), data_status::more)
        << "sequence \"" << show(c.sequence) << "\": got done before the real end, want more";

    const auto o = run(in, big_limits);
    EXPECT_TRUE(o.done) << "sequence \"" << show(c.sequence) << "\": got not done, want the real end to end it";
    EXPECT_EQ(o.consumed, before_end.size() + end.size())
        << "sequence \"" << show(c.sequence) << "\": got " << o.consumed << " consumed, want "
        << before_end.size() + end.size();
    EXPECT_EQ(o.error, c.want) << "sequence \"" << show(c.sequence) << "\": got " << name(o.error) << ", want "
                               << name(c.want);
    EXPECT_EQ(o.content, "") << "sequence \"" << show(c.sequence) << "\": got content, want none kept";
    expect_same_for_every_split(in, big_limits);
  }
}

TEST(DataReader, BareLineEndsAndNulAreErrors) {
  struct error_case {
    std::string in;
    data_error want;
  };
  const error_case cases[] = {
      {"a\nb\r\n.\r\n", data_error::bare_lf},
      {"\n\r\n.\r\n", data_error::bare_lf},
      {"a\rb\r\n.\r\n", data_error::bare_cr},
      {"a\r\r\n.\r\n", data_error::bare_cr},
      {"\r\r\n.\r\n", data_error::bare_cr},
      {"a\0b\r\n.\r\n"s, data_error::nul},
      {"a\0\nb\r\n.\r\n"s, data_error::nul},  // the first error wins
      {"a\n\0b\r\n.\r\n"s, data_error::bare_lf},
      {"a\r\0b\r\n.\r\n"s, data_error::bare_cr},
  };
  for (const auto& c : cases) {
    const auto o = run(c.in, big_limits);
    EXPECT_TRUE(o.done) << "input \"" << show(c.in) << "\": got not done, want done";
    EXPECT_EQ(o.error, c.want) << "input \"" << show(c.in) << "\": got " << name(o.error) << ", want "
                               << name(c.want);
    EXPECT_EQ(o.content, "");
    EXPECT_EQ(o.consumed, c.in.size());
    expect_same_for_every_split(c.in, big_limits);
  }
}

TEST(DataReader, LineLimitCountsCrlfButNotTheStuffingDot) {
  const data_limits limits{1'000'000, 1000};
  const std::string at_limit(998, 'x');  // 998 + CRLF = 1000
  auto o = run(at_limit + "\r\n.\r\n", limits);
  EXPECT_EQ(o.error, data_error::none) << "998-octet line: got " << name(o.error) << ", want none";
  EXPECT_EQ(o.content, at_limit + "\r\n");

  o = run(at_limit + "x\r\n.\r\n", limits);
  EXPECT_EQ(o.error, data_error::line_too_long) << "999-octet line: got " << name(o.error) << ", want line_too_long";
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.content, "");

  // RFC 5321 §4.5.3.1.6: the transparency dot does not count.
  o = run("." + at_limit + "\r\n.\r\n", limits);
  EXPECT_EQ(o.error, data_error::none) << "stuffed 998-octet line: got " << name(o.error) << ", want none";
  EXPECT_EQ(o.content, at_limit + "\r\n");

  // The limit applies to every line, not only the first.
  o = run("short\r\n" + at_limit + "xx\r\nshort\r\n.\r\n", limits);
  EXPECT_EQ(o.error, data_error::line_too_long);

  const data_limits tiny{1000, 6};
  expect_same_for_every_split("abcd\r\nabcde\r\n.\r\n", tiny);
  expect_same_for_every_split(".abcd\r\n..abc\r\n.\r\n", tiny);
}

TEST(DataReader, SizeLimitAtAndOnePast) {
  const std::string msg = "Subject: s\r\n\r\n0123456789\r\n";  // 26 octets
  auto o = run(msg + ".\r\n", {msg.size(), 1000});
  EXPECT_EQ(o.error, data_error::none) << "size == max: got " << name(o.error) << ", want none";
  EXPECT_EQ(o.content, msg);
  EXPECT_EQ(o.octets, msg.size());

  o = run(msg + ".\r\n", {msg.size() - 1, 1000});
  EXPECT_EQ(o.error, data_error::too_big) << "size == max + 1: got " << name(o.error) << ", want too_big";
  EXPECT_TRUE(o.done) << "got not done, want the reader to keep scanning to the end";
  EXPECT_EQ(o.content, "");
  EXPECT_EQ(o.octets, msg.size()) << "got " << o.octets << " octets, want counting past the limit";

  // Stuffing dots are not counted (RFC 1870 §5).
  const std::string stuffed = "..x\r\n";
  o = run(stuffed + ".\r\n", {4, 1000});
  EXPECT_EQ(o.error, data_error::none) << "got " << name(o.error) << ", want none";
  EXPECT_EQ(o.content, ".x\r\n");

  expect_same_for_every_split(msg + ".\r\n", {msg.size(), 1000});
  expect_same_for_every_split(msg + ".\r\n", {msg.size() - 1, 1000});
  expect_same_for_every_split(msg + ".\r\n", {10, 1000});
}

TEST(DataReader, TooBigKeepsScanningAndFindsTheEnd) {
  const std::string big(5000, 'z');
  const std::string in = "a\r\n" + big + "\r\n.\r\nRSET\r\n";
  const auto o = run_by(in, {100, 10000}, 64);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.error, data_error::too_big);
  EXPECT_EQ(o.consumed, in.size() - 6);
  EXPECT_EQ(o.octets, 3 + big.size() + 2);
}

TEST(DataReader, CountsReceivedInTheHeaderOnly) {
  const std::string in =
      "Received: from a\r\n"
      "\tby b\r\n"
      "received: from c\r\n"
      "RECEIVED : from d\r\n"
      "X-Received: no\r\n"
      "Receivedx: no\r\n"
      "Subject: Received: no\r\n"
      " Received: no (continuation)\r\n"
      "Received\r\n"
      "\r\n"
      "Received: in the body, no\r\n"
      ".\r\n";
  const auto o = run(in, big_limits);
  EXPECT_EQ(o.received, 3u) << "got " << o.received << " Received fields, want 3";
  expect_same_for_every_split(in, big_limits);

  // A message without a body is all header.
  EXPECT_EQ(run("Received: x\r\nReceived: y\r\n.\r\n", big_limits).received, 2u);
  // An empty first line means no header at all.
  EXPECT_EQ(run("\r\nReceived: x\r\n.\r\n", big_limits).received, 0u);
}

TEST(DataReader, CrAtTheEndOfAChunk) {
  for (const std::string& in : {"ab\r\n.\r\n"s, "\r\n\r\n.\r\n"s, ".\r\n"s, "a\r\n..\r\n.\r\n"s,
                               "a\r\n.\r\r\n.\r\n"s, "a\r\n.b\r\n.\r\n"s, "x\r\n.\r\nMAIL\r\n"s}) {
    expect_same_for_every_split(in, big_limits);
    EXPECT_EQ(run(in, big_limits), reference(in, big_limits)) << "input \"" << show(in) << "\"";
  }
}

TEST(DataReader, TwoMegabytesIn64KChunks) {
  std::string in;
  std::string want;
  const std::string line = "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstu\r\n";
  std::size_t n = 0;
  while (in.size() < 2 * 1024 * 1024) {
    if (n % 97 == 0) {
      in += "." + line;  // a stuffed line
      want += line;
    } else if (n % 89 == 0) {
      in += "..\r\n";
      want += ".\r\n";
    } else {
      in += line;
      want += line;
    }
    ++n;
  }
  in += ".\r\n";
  const auto o = run_by(in, {4 * 1024 * 1024, 1000}, 64 * 1024);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.error, data_error::none) << "got " << name(o.error) << ", want none";
  EXPECT_EQ(o.consumed, in.size());
  EXPECT_EQ(o.octets, want.size());
  EXPECT_TRUE(o.content == want) << "got " << o.content.size() << " octets of content, want " << want.size();
}

// Random streams over an alphabet rich in CR, LF, dots and header names,
// always closed by a real end: the reader under several chunkings must agree
// with the whole-buffer model above.
TEST(DataReader, AgreesWithReferenceOnRandomStreams) {
  const std::vector<std::string> tokens = {"\r\n", "\r", "\n", ".", ".", "a", "bc", "\0"s, " ",
                                           "Received:", "received \t:", "RECEIVED", "\r\n.\r\n", "\r\n\r\n"};
  std::mt19937 rng(20231218);  // fixed seed: reproducible
  const data_limits limits_set[] = {{40, 8}, {1000, 1000}, {12, 1000}, {1000, 5}};
  for (int round = 0; round < 3000; ++round) {
    std::string in;
    const int count = static_cast<int>(rng() % 24);
    for (int i = 0; i < count; ++i) in += tokens[rng() % tokens.size()];
    in += "\r\n.\r\nQUIT\r\n";
    const data_limits limits = limits_set[round % 4];
    const outcome want = reference(in, limits);
    ASSERT_TRUE(want.done);
    const outcome whole = run(in, limits);
    ASSERT_EQ(whole, want) << "input \"" << show(in) << "\": got " << describe(whole) << ", want " << describe(want);
    const outcome bytes = run_by(in, limits, 1);
    ASSERT_EQ(bytes, want) << "input \"" << show(in) << "\" by 1: got " << describe(bytes) << ", want "
                           << describe(want);
    std::vector<std::size_t> sizes;
    for (std::size_t total = 0; total < in.size();) {
      sizes.push_back(1 + rng() % 9);
      total += sizes.back();
    }
    const outcome random = run(in, limits, sizes);
    ASSERT_EQ(random, want) << "input \"" << show(in) << "\" random chunks: got " << describe(random) << ", want "
                            << describe(want);
  }
}

}  // namespace
}  // namespace flushgate::gateway
