// log.hpp — one line per event, syslog-friendly.
//
// Purpose: every module logs through these functions. A line reads
//   2026-11-22T06:00:00Z flushgated[1234]: info: 4F3K2J9QX1AB: from=<a@b>, size=512
// on stderr or a file, or goes to syslog(3) (facility mail) with the
// matching priority. Lines about a message start with its queue id and use
// the Postfix words operators' log tools know (from=, to=, relay=, delay=,
// dsn=, status=).
// Log rotation: logrotate renames the file, then the daemon calls
// reopen_log_target() (flushgated does on SIGHUP) and writes on in a new
// file of the same name. Every line is written and flushed under one lock,
// so a line is never split between the old and the new file, nor lost.
// Security: callers log peer-supplied text (addresses, EHLO names); log_line
// replaces control characters so a peer cannot forge extra log lines. The
// log file is opened close-on-exec: hooks and other children never get it.
// Errors: none from the log functions (a failed write to the log file is
// ignored); set_log_target and reopen_log_target report a file they cannot
// open by returning false.
// See also: RFC 5424 (syslog severities), postconf(5) syslog_facility.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace flushgate::core {

enum class log_level { debug, info, warning, error };

// Where log lines go: "stderr", "syslog", or an absolute file path (appended).
// Returns false (and keeps stderr) when the file cannot be opened.
bool set_log_target(const std::string& target, const std::string& program_name);
// Opens the log file's path again (after logrotate moved it) and writes on
// there; true when done or when the target is stderr or syslog (nothing to
// reopen); false when the path cannot be opened: lines keep going to the old file.
bool reopen_log_target();
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
