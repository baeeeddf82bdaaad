// chromium.cpp — one headless Chromium run per request, in a private
// profile, bounded in time, leaving no process behind.
#include "tests/support/chromium.hpp"

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <system_error>

namespace flushgate::test {

namespace {

// The process group id of process `pid` per /proc/PID/stat; -1 when it is
// gone or a zombie (dead already, waiting for whoever reaps it).
pid_t group_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return -1;
  // "pid (comm) state ppid pgrp ...": comm may hold spaces and ')', so
  // count fields from the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 1));
  std::string state;
  long ppid = 0, pgrp = -1;
  rest >> state >> ppid >> pgrp;
  if (!rest || state == "Z" || state == "X") return -1;
  return static_cast<pid_t>(pgrp);
}

// The command line of `pid` with NULs as spaces; "" when it is gone.
std::string cmdline_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(text.begin(), text.end(), '\0', ' ');
  return text;
}

// What the browser left behind: live processes still in its process group,
// and those that left the group (crashpad's handler starts a session of
// its own) but name our private dir on their command line.
std::vector<pid_t> leftovers_of(pid_t group, const std::string& scratch) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10));
    if (pid == group) continue;
    const pid_t pgrp = group_of(pid);
    if (pgrp < 0) continue;  // gone or a zombie
    if (pgrp == group || cmdline_of(pid).find(scratch) != std::string::npos) out.push_back(pid);
  }
  return out;
}

// Kills what the browser left behind, by PID; bounded rounds.
void kill_leftovers(pid_t group, const std::string& scratch) {
  for (int round = 0; round < 3; ++round) {
    const auto left = leftovers_of(group, scratch);
    if (left.empty()) return;
    for (const pid_t pid : left) ::kill(pid, SIGKILL);
    if (wait_until([&] { return leftovers_of(group, scratch).empty(); }, std::chrono::seconds(2))) return;
  }
}

bool is_png(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::array<char, 8> head{};
  if (!in.read(head.data(), head.size())) return false;
  static constexpr std::array<unsigned char, 8> signature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  for (std::size_t i = 0; i < head.size(); ++i)
    if (static_cast<unsigned char>(head[i]) != signature[i]) return false;
  return true;
}

}  // namespace

std::vector<std::string> chromium_flags() {
  return {"--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync"};
}

std::string chromium_missing_reason() {
  if (::access(chromium_path, X_OK) != 0)
    return std::string("needs Chromium (") + chromium_path + " is missing; Debian package chromium)";
  return {};
}

browser_result run_chromium(const browser_request& request) {
  temp_dir scratch("flushgate-chromium");
  const auto profile = scratch.path() / "profile";
  std::filesystem::create_directories(profile);

  std::vector<std::string> argv = {chromium_path};
  for (auto& flag : chromium_flags()) argv.push_back(std::move(flag));
  argv.push_back("--user-data-dir=" + profile.string());
  argv.push_back("--window-size=" + std::to_string(request.width) + "," + std::to_string(request.height));
  if (!request.screenshot.empty()) {
    std::error_code ignored;
    std::filesystem::remove(request.screenshot, ignored);  // a stale PNG must not count
    argv.push_back("--screenshot=" + request.screenshot.string());
  }
  if (request.dump_dom) argv.push_back("--dump-dom");
  argv.push_back(request.url);

  // HOME and XDG dirs in the scratch dir: the wrapper and the browser write
  // there (crash reports, caches), never into the real home.
  spawn_options options;
  options.env = {"HOME=" + scratch.path().string(),
                 "XDG_CONFIG_HOME=" + (scratch.path() / "config").string(),
                 "XDG_CACHE_HOME=" + (scratch.path() / "cache").string()};
  options.working_dir = scratch.path();

  browser_result result;
  process browser(argv, options);
  const pid_t group = browser.pid();
  if (auto status = browser.wait_for_exit(request.timeout)) {
    result.exit_code = *status;
  } else {
    result.timed_out = true;
    result.exit_code = browser.kill();
  }
  kill_leftovers(group, scratch.path().string());
  result.dom = browser.stdout_text();
  result.log = browser.stderr_text();
  if (!request.screenshot.empty()) result.screenshot_written = is_png(request.screenshot);
  return result;
}

}  // namespace flushgate::test
