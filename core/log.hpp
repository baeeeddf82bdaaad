// log.hpp — one line per event, syslog-friendly.
//
// Purpose: every module logs through these functions. A line reads
//   2026-11-22T06:00:00Z flushgated[1234]: info: 4F3K2J9QX1AB: from=<a@b>, size=512
// on stderr or a file, or goes to syslog(3) with the matching priority.
// Security: callers log peer-supplied text (addresses, EHLO names); log_line
// replaces control characters so a peer cannot forge extra log lines.
// Errors: none; a failed write to the log file is ignored.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace flushgate::core {

enum class log_level { debug, info, warning, error };

// Where log lines go: "stderr", "syslog", or an absolute file path (appended).
// Returns false (and keeps stderr) when the file cannot be opened.
bool set_log_target(const std::string& target, const std::string& program_name);
void set_log_level(log_level min_level);
bool parse_log_level(std::string_view text, log_level& out);

// Writes one line; control characters in `text` become '?'.
void log_line(log_level level, std::string_view text);

template <typename... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  log_line(log_level::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  log_line(log_level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void log_warning(fmt::format_string<Args...> f, Args&&... args) {
  log_line(log_level::warning, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void log_error(fmt::format_string<Args...> f, Args&&... args) {
  log_line(log_level::error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace flushgate::core
