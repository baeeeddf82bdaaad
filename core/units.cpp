// units.cpp — see units.hpp.
#include "core/units.hpp"

#include <array>
#include <cstddef>
#include <limits>

namespace flushgate::core {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Reads the leading run of decimal digits of `text` into `value` and returns
// how many characters it used; 0 when there is no digit or the number does
// not fit below `limit`. Signs and blanks are not digits, so they are refused
// here rather than by whatever std::from_chars would tolerate.
std::size_t read_number(std::string_view text, std::uint64_t limit, std::uint64_t& value) {
  value = 0;
  std::size_t used = 0;
  for (; used < text.size() && is_digit(text[used]); ++used) {
    const auto digit = static_cast<std::uint64_t>(text[used] - '0');
    if (value > (limit - digit) / 10) return 0;
    value = value * 10 + digit;
  }
  return used;
}

// Splits "<digits><unit>" where the unit is one optional character; the unit
// is '\0' when absent. False when there is anything else.
bool split_number_unit(std::string_view text, std::uint64_t limit, std::uint64_t& value,
                       char& unit) {
  const std::size_t used = read_number(text, limit, value);
  if (used == 0) return false;
  if (used == text.size()) {
    unit = '\0';
    return true;
  }
  if (used + 1 != text.size()) return false;
  unit = text[used];
  return true;
}

struct unit_step {
  char letter;
  std::uint64_t factor;
};

// Largest first, so that formatting picks the coarsest exact unit.
constexpr std::array<unit_step, 4> duration_units{
    {{'w', 7 * 24 * 3600}, {'d', 24 * 3600}, {'h', 3600}, {'m', 60}}};
constexpr std::array<unit_step, 4> size_units{{{'T', std::uint64_t{1} << 40},
                                               {'G', std::uint64_t{1} << 30},
                                               {'M', std::uint64_t{1} << 20},
                                               {'k', std::uint64_t{1} << 10}}};

}  // namespace

std::optional<std::chrono::seconds> parse_duration(std::string_view text) {
  // chrono::seconds holds an int64; keep every result representable.
  constexpr auto limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t value = 0;
  char unit = '\0';
  if (!split_number_unit(text, limit, value, unit)) return std::nullopt;
  std::uint64_t factor = 1;
  // Lowercase only: "5M" would read as minutes to some and megabytes to others.
  switch (unit) {
    case '\0':
    case 's':
      factor = 1;
      break;
    case 'm':
      factor = 60;
      break;
    case 'h':
      factor = 3600;
      break;
    case 'd':
      factor = 24 * 3600;
      break;
    case 'w':
      factor = 7 * 24 * 3600;
      break;
    default:
      return std::nullopt;
  }
  if (value > limit / factor) return std::nullopt;
  return std::chrono::seconds{static_cast<std::int64_t>(value * factor)};
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  constexpr auto limit = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t value = 0;
  char unit = '\0';
  if (!split_number_unit(text, limit, value, unit)) return std::nullopt;
  std::uint64_t factor = 1;
  switch (to_lower(unit)) {
    case '\0':
    case 'b':
      factor = 1;
      break;
    case 'k':
      factor = std::uint64_t{1} << 10;
      break;
    case 'm':
      factor = std::uint64_t{1} << 20;
      break;
    case 'g':
      factor = std::uint64_t{1} << 30;
      break;
    case 't':
      factor = std::uint64_t{1} << 40;
      break;
    default:
      return std::nullopt;
  }
  if (value > limit / factor) return std::nullopt;
  return value * factor;
}

std::string format_duration(std::chrono::seconds value) {
  const std::int64_t n = value.count();
  if (n <= 0) return std::to_string(n) + "s";
  const auto u = static_cast<std::uint64_t>(n);
  for (const unit_step& step : duration_units) {
    if (u % step.factor == 0) return std::to_string(u / step.factor) + step.letter;
  }
  return std::to_string(u) + "s";
}

std::string format_size(std::uint64_t bytes) {
  if (bytes == 0) return "0";
  for (const unit_step& step : size_units) {
    if (bytes % step.factor == 0) return std::to_string(bytes / step.factor) + step.letter;
  }
  return std::to_string(bytes);
}

std::optional<bool> parse_flag(std::string_view text) {
  std::string lower;
  for (char c : text) lower.push_back(to_lower(c));
  if (lower == "yes" || lower == "true" || lower == "on") return true;
  if (lower == "no" || lower == "false" || lower == "off") return false;
  return std::nullopt;
}

std::optional<std::pair<std::string, std::uint16_t>> parse_host_port(std::string_view text) {
  std::string_view host;
  std::string_view rest;
  if (!text.empty() && text.front() == '[') {
    // An IPv6 literal (RFC 3986 §3.2.2), optionally with a zone ("%eth0").
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    rest = text.substr(close + 1);
    bool has_colon = false;
    bool in_zone = false;
    for (char c : host) {
      if (in_zone) {
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-') return std::nullopt;
      } else if (c == '%') {
        in_zone = true;
      } else if (c == ':') {
        has_colon = true;
      } else if (!is_digit(c) && !(to_lower(c) >= 'a' && to_lower(c) <= 'f') && c != '.') {
        return std::nullopt;
      }
    }
    if (!has_colon) return std::nullopt;
  } else {
    // A host name or IPv4 address: one colon only, so a bare IPv6 address
    // ("::1:25") cannot be misread as host "::1" port 25.
    const std::size_t colon = text.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    rest = text.substr(colon);
    if (host.empty()) return std::nullopt;
    for (char c : host) {
      if (!is_alnum(c) && c != '.' && c != '-' && c != '_') return std::nullopt;
    }
  }
  if (rest.size() < 2 || rest.front() != ':') return std::nullopt;
  rest.remove_prefix(1);
  std::uint64_t port = 0;
  if (rest.size() > 5 || read_number(rest, 65535, port) != rest.size() || port == 0) {
    return std::nullopt;
  }
  return std::pair<std::string, std::uint16_t>{std::string(host), static_cast<std::uint16_t>(port)};
}

}  // namespace flushgate::core
