// units.hpp — parse and print the values configuration files are made of:
// durations, sizes, yes/no flags and host:port addresses.
//
// Purpose: the config table (config.hpp) and the CLI read "300s", "10M",
// "[::1]:2525" through these pure functions, so every place agrees on what a
// value means. Durations: a whole number with s, m, h, d or w (lowercase, as
// in Postfix); a bare number is seconds. Sizes: a whole number with B, k, M,
// G or T (any case; 1024-based); a bare number is bytes.
// Security: inputs come from the operator's config file and command line.
// Every parser rejects signs, blanks, fractions and trailing text, and checks
// for overflow before multiplying; nothing here allocates beyond its input.
// Errors: a parser returns std::nullopt for text it does not accept; there is
// no partial result.
// See also: postconf(5) (time units), RFC 3986 §3.2.2 (IPv6 literals in
// brackets), RFC 5321 §4.5.3.1 (sizes that matter to SMTP).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace flushgate::core {

// "300s", "5m", "4h", "5d", "1w" or a bare number of seconds; nullopt on bad text or overflow.
std::optional<std::chrono::seconds> parse_duration(std::string_view text);

// "100B", "512k"/"512K", "10M", "1G", "1T" (1024-based) or bare bytes; nullopt on bad text or
// overflow.
std::optional<std::uint64_t> parse_size(std::string_view text);

// The largest unit that divides exactly: 14400s -> "4h", 90s -> "90s", 0 -> "0s".
std::string format_duration(std::chrono::seconds value);

// The largest of T, G, M, k that divides exactly ("10M", "64k"); otherwise bare bytes ("1000").
std::string format_size(std::uint64_t bytes);

// yes/no, true/false, on/off (any case); nullopt for anything else.
std::optional<bool> parse_flag(std::string_view text);

// "127.0.0.1:2525", "[::1]:2525", "host.example:25" -> {host without brackets, port};
// the port (1-65535) is required, a bare IPv6 address must be in brackets.
std::optional<std::pair<std::string, std::uint16_t>> parse_host_port(std::string_view text);

}  // namespace flushgate::core
