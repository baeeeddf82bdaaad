// log.cpp — see log.hpp.
#include "core/log.hpp"

#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace flushgate::core {
namespace {

// `mutex` guards file, path, use_syslog and program; min_level is read on
// every call before the lock is taken, so it is atomic instead.
struct log_sink {
  std::mutex mutex;
  std::FILE* file = stderr;
  std::string path;  // the file's path when the target is a file, else empty
  bool use_syslog = false;
  std::string program = "flushgate";
  std::atomic<log_level> min_level{log_level::info};
};

log_sink& sink() {
  static log_sink s;
  return s;
}

const char* level_name(log_level level) {
  switch (level) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warning: return "warning";
    case log_level::error: return "error";
  }
  return "info";
}

int syslog_priority(log_level level) {
  switch (level) {
    case log_level::debug: return LOG_DEBUG;
    case log_level::info: return LOG_INFO;
    case log_level::warning: return LOG_WARNING;
    case log_level::error: return LOG_ERR;
  }
  return LOG_INFO;
}

// Appends to `path`: "e" is glibc's O_CLOEXEC, so no child (a hook, a
// test's Postfix) inherits the descriptor; line buffered, and log_line
// flushes anyway.
std::FILE* open_log_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "ae");
  if (f != nullptr) std::setvbuf(f, nullptr, _IOLBF, 0);
  return f;
}

}  // namespace

bool set_log_target(const std::string& target, const std::string& program_name) {
  auto& s = sink();
  std::lock_guard lock(s.mutex);
  if (s.file != stderr && s.file != nullptr) std::fclose(s.file);
  s.file = stderr;
  s.path.clear();
  // openlog(3) keeps the ident pointer: close before s.program changes.
  if (s.use_syslog) closelog();
  s.use_syslog = false;
  s.program = program_name;
  if (target.empty() || target == "stderr") return true;
  if (target == "syslog") {
    openlog(s.program.c_str(), LOG_PID | LOG_NDELAY, LOG_MAIL);
    s.use_syslog = true;
    return true;
  }
  std::FILE* f = open_log_file(target);
  if (f == nullptr) return false;
  s.file = f;
  s.path = target;
  return true;
}

bool reopen_log_target() {
  auto& s = sink();
  std::lock_guard lock(s.mutex);
  if (s.path.empty()) return true;  // stderr or syslog: nothing to reopen
  // Open the new file before closing the old one: when the path cannot be
  // opened (a directory gone, a file the run user may not write), lines keep
  // going to the old file rather than nowhere. The lock makes the switch
  // fall between two whole lines.
  std::FILE* f = open_log_file(s.path);
  if (f == nullptr) return false;
  std::fclose(s.file);
  s.file = f;
  return true;
}

void set_log_level(log_level min_level) { sink().min_level.store(min_level); }

bool parse_log_level(std::string_view text, log_level& out) {
  if (text == "debug") out = log_level::debug;
  else if (text == "info") out = log_level::info;
  else if (text == "warning") out = log_level::warning;
  else if (text == "error") out = log_level::error;
  else return false;
  return true;
}

void log_line(log_level level, std::string_view text) {
  auto& s = sink();
  if (level < s.min_level.load(std::memory_order_relaxed)) return;
  std::string clean(text);
  for (char& c : clean) {
    // A peer's CR/LF or escape sequence must not start a forged log line.
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  std::lock_guard lock(s.mutex);
  if (s.use_syslog) {
    syslog(syslog_priority(level), "%s: %s", level_name(level), clean.c_str());
    return;
  }
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::fprintf(s.file, "%s %s[%d]: %s: %s\n", stamp, s.program.c_str(),
               static_cast<int>(getpid()), level_name(level), clean.c_str());
  std::fflush(s.file);
}

}  // namespace flushgate::core
