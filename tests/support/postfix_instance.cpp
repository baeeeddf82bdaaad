// postfix_instance.cpp — drives scripts/testbed/postfix-instance and reads
// the instance's directories.
#include "tests/support/postfix_instance.hpp"

#include "tests/support/process.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#ifndef FLUSHGATE_TESTBED_SCRIPT
#error "FLUSHGATE_TESTBED_SCRIPT must name scripts/testbed/postfix-instance"
#endif

namespace flushgate::test {

namespace {

using namespace std::chrono_literals;

constexpr auto script_timeout = 60s;  // the script bounds its own waits (30 s start, 20 s stop)

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string tail(const std::string& text, std::size_t max_bytes) {
  return text.size() <= max_bytes ? text : "..." + text.substr(text.size() - max_bytes);
}

}  // namespace

postfix_instance postfix_instance::final_destination(std::vector<std::string> domains,
                                                     std::string listen,
                                                     std::vector<std::string> users) {
  postfix_instance instance("final", std::move(domains), std::move(listen), "");
  instance.users_ = std::move(users);
  return instance;
}

postfix_instance postfix_instance::holding_relay(std::vector<std::string> domains,
                                                 std::string listen, std::string next_hop) {
  return postfix_instance("relay", std::move(domains), std::move(listen), std::move(next_hop));
}

bool postfix_instance::available() {
  return ::geteuid() == 0 && ::access("/usr/sbin/postfix", X_OK) == 0 &&
         ::access(FLUSHGATE_TESTBED_SCRIPT, X_OK) == 0;
}

postfix_instance::postfix_instance(std::string role, std::vector<std::string> domains,
                                   std::string listen, std::string next_hop)
    : dir_("flushgate-postfix"),
      role_(std::move(role)),
      domains_(std::move(domains)),
      next_hop_(std::move(next_hop)) {
  const auto colon = listen.rfind(':');
  const bool ipv6 = listen.starts_with("[::1]:");
  if (colon == std::string::npos || !(listen.starts_with("127.") || ipv6)) {
    throw std::invalid_argument("postfix_instance: listen must be 127.x.y.z:PORT or [::1]:PORT, got " +
                                listen);
  }
  host_ = ipv6 ? "::1" : listen.substr(0, colon);
  port_ = static_cast<std::uint16_t>(std::stoi(listen.substr(colon + 1)));
}

std::string postfix_instance::address() const {
  const bool ipv6 = host_.find(':') != std::string::npos;
  return (ipv6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
}

postfix_instance::~postfix_instance() {
  if (started_) {
    stop();
  }
}

postfix_instance::postfix_instance(postfix_instance&& other) noexcept
    : dir_(std::move(other.dir_)),
      role_(std::move(other.role_)),
      domains_(std::move(other.domains_)),
      users_(std::move(other.users_)),
      host_(std::move(other.host_)),
      port_(other.port_),
      next_hop_(std::move(other.next_hop_)),
      tls_cert_(std::move(other.tls_cert_)),
      tls_key_(std::move(other.tls_key_)),
      extra_main_(std::move(other.extra_main_)),
      started_(std::exchange(other.started_, false)) {}

void postfix_instance::enable_tls(std::filesystem::path cert_file,
                                  std::filesystem::path key_file) {
  tls_cert_ = std::move(cert_file);
  tls_key_ = std::move(key_file);
}

void postfix_instance::add_main_cf(const std::string& key, const std::string& value) {
  extra_main_.push_back(key + " = " + value);
}

void postfix_instance::start() {
  std::vector<std::string> argv = {FLUSHGATE_TESTBED_SCRIPT, dir().string(), role_, "--listen",
                                   address()};
  for (const auto& domain : domains_) {
    argv.insert(argv.end(), {"--domain", domain});
  }
  if (!next_hop_.empty()) {
    argv.insert(argv.end(), {"--next-hop", next_hop_});
  }
  if (!users_.empty()) {
    std::string list;
    for (const auto& user : users_) {
      list += (list.empty() ? "" : ",") + user;
    }
    argv.insert(argv.end(), {"--users", list});
  }
  if (!tls_cert_.empty()) {
    argv.insert(argv.end(), {"--tls-cert", tls_cert_.string(), "--tls-key", tls_key_.string()});
  }
  for (const auto& line : extra_main_) {
    argv.insert(argv.end(), {"--main", line});
  }
  // Marked started before the script runs: a half-started instance is stopped too.
  started_ = true;
  const auto result = run_command(argv, script_timeout);
  if (result.exit_code != 0) {
    throw std::runtime_error(
        "postfix-instance " + role_ + " failed (exit " + std::to_string(result.exit_code) +
        (result.timed_out ? ", timed out" : "") + "):\n" + tail(result.stderr_text, 4000) +
        "\nmaillog:\n" + tail(log_text(), 2000));
  }
}

bool postfix_instance::stop() {
  const auto result =
      run_command({FLUSHGATE_TESTBED_SCRIPT, dir().string(), "stop"}, script_timeout);
  if (result.exit_code == 0) {
    started_ = false;
  }
  return !started_;
}

std::vector<std::filesystem::path> postfix_instance::message_files() const {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(maildir_new(), ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->is_regular_file(ec)) {
      files.push_back(it->path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::size_t postfix_instance::deferred_count() const {
  // queue/deferred holds hashed subdirectories (deferred/A/A1B2C3...).
  std::size_t count = 0;
  std::error_code ec;
  for (std::filesystem::recursive_directory_iterator it(queue_dir() / "deferred", ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;  // a file qmgr just moved away is simply not counted
    if (it->is_regular_file(type_ec)) {
      ++count;
    }
  }
  return count;
}

boost::system::result<probe_reply> postfix_instance::etrn(const std::string& domain) const {
  smtp_probe probe(10s);
  if (auto ec = probe.connect(host_, port_)) {
    return ec;
  }
  if (auto greeting = probe.read_reply(); !greeting) {
    return greeting.error();
  }
  if (auto ehlo = probe.command("EHLO probe.test"); !ehlo) {
    return ehlo.error();
  }
  auto reply = probe.command("ETRN " + domain);
  (void)probe.command("QUIT");
  return reply;
}

bool postfix_instance::flush() const {
  return run_command({"postqueue", "-c", config_dir().string(), "-f"}, 30s).exit_code == 0;
}

std::string postfix_instance::log_text() const {
  return read_text(log_file());
}

}  // namespace flushgate::test
