// fuzz_check.hpp — how the fuzz targets report a broken invariant.
//
// Purpose: a failed check prints "fuzz check failed: WHAT: got X, want Y" on
// stderr, with non-printable octets as \xHH and long values cut, then calls
// std::abort(), which libFuzzer reports as a crash and saves the input.
// Security: only formats values for a human; never touches the code under test.
// Errors: none; a failure ends the process on purpose.
// See also: tests/fuzz/CMakeLists.txt, scripts/fuzz.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace flushgate::test {

// `s` with non-printable octets (and '\\', '"') escaped, cut after `max` octets.
inline std::string escaped(std::string_view s, std::size_t max = 256) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 32 && c < 127 && c != '\\' && c != '"') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > max) out += "...(" + std::to_string(s.size()) + " octets)";
  return out;
}

// Reports `what` (and, when given, what was got and what was wanted) and aborts.
[[noreturn]] inline void fail_check(const char* what, std::string_view got = {}, std::string_view want = {}) {
  if (got.empty() && want.empty()) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
  } else {
    std::fprintf(stderr, "fuzz check failed: %s: got \"%s\", want \"%s\"\n", what, escaped(got).c_str(),
                 escaped(want).c_str());
  }
  std::abort();
}

// Aborts with `what` unless `ok`.
inline void require(bool ok, const char* what) {
  if (!ok) fail_check(what);
}

// Aborts with got/want unless the two texts are equal.
inline void require_equal(std::string_view got, std::string_view want, const char* what) {
  if (got != want) fail_check(what, got, want);
}

// Aborts with got/want unless the two numbers are equal.
inline void require_equal_number(std::size_t got, std::size_t want, const char* what) {
  if (got != want) fail_check(what, std::to_string(got), std::to_string(want));
}

}  // namespace flushgate::test
