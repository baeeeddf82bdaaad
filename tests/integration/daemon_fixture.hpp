// daemon_fixture.hpp — one flushgated under test: its config, its process,
// its CLI, its log and, once it has stopped, its store.
//
// Purpose: integration tests start the real daemon (FLUSHGATE_BINARY_DIR
// "/control/flushgated") in a private temp dir, on a free port of 127.0.0.1,
// drive it with the real CLI (`flushgate --config FILE ...`), kill and
// restart it on the same data_dir, and read the queue back through
// queue::sqlite_store after it has stopped.
// Security: test-only. The daemon listens on 127.0.0.1 (and ::1 when a test
// asks with listen_ipv6()) only; its data dir,
// control socket and log live in the fixture's temp dir unless the test
// overrides data_dir (e.g. onto a small tmpfs). The daemon is stopped by PID:
// SIGTERM, then SIGKILL to its process group after a deadline.
// Errors: start()/restart() throw std::runtime_error (with the daemon's log)
// when the daemon does not become ready within the deadline — a start-up
// failure of the test. cli() never throws for a failing command: the exit
// code and output come back for the test to judge. read_store() returns the
// store's error code.
// Limitations: readiness means "the SMTP port is listening, the control
// socket accepts a connection and the process runs"; it makes no SMTP
// connection, so connection-limit tests start from zero sessions.
// See also: tests/support/process.hpp, queue/sqlite_store.hpp, TESTBED.md.
#pragma once

#include "queue/store.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <Poco/JSON/Object.h>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace flushgate::test {

// What a CLI run gave back.
struct cli_result {
  int exit_code = -1;  // 0 done, 1 refused, 2 usage, 3 daemon unreachable; 137 after a timeout
  std::string out;     // stdout
  std::string err;     // stderr
};

// One queued message as the store holds it.
struct stored_message {
  queue::message_info info;
  std::string content;  // exactly as stored: our Received: header first
};

class daemon_fixture {
 public:
  using settings = std::map<std::string, std::string>;

  // The binaries under test.
  static std::filesystem::path daemon_path();
  static std::filesystem::path cli_path();

  // Prepares (does not start) a daemon; `overrides` replace or add config keys.
  explicit daemon_fixture(settings overrides = {});
  // Stops the daemon (SIGTERM, SIGKILL after 15 s) and removes the temp dir.
  ~daemon_fixture();
  daemon_fixture(const daemon_fixture&) = delete;
  daemon_fixture& operator=(const daemon_fixture&) = delete;

  // Writes the config, starts flushgated and waits until it is ready; throws if not.
  void start(std::chrono::milliseconds deadline = std::chrono::seconds(15));
  // Writes the config and starts flushgated without waiting for anything
  // (readiness tests watch for themselves); the port stays fixed from here on.
  void launch();
  // Starts again after stop()/kill(): same config, data_dir and port; throws if not ready.
  void restart(std::chrono::milliseconds deadline = std::chrono::seconds(15));
  // Replaces or adds a config key for the next start()/restart() (e.g. a
  // CA file that was missing); the config is rewritten when the daemon starts.
  void set_setting(const std::string& key, const std::string& value) { overrides_[key] = value; }
  // Before start(): the SMTP server listens on [::1] at port() as well
  // (smtpd_listen = 127.0.0.1:PORT,[::1]:PORT); readiness waits for both.
  void listen_ipv6() { listen_ipv6_ = true; }
  // Adds "NAME=value" to the daemon's environment for the next start (e.g. NOTIFY_SOCKET).
  void add_env(const std::string& name_value) { env_.push_back(name_value); }
  // SIGTERM, waits up to `deadline`, then SIGKILL; the exit status (-1: never started).
  int stop(std::chrono::milliseconds deadline = std::chrono::seconds(15));
  // SIGKILL to the daemon's process group; the exit status (-1: never started).
  int kill();
  // Sends `sig` to the daemon; false when it is not running.
  bool signal(int sig);
  // Waits up to `timeout` for the daemon to exit; its status, or nullopt.
  std::optional<int> wait_for_exit(std::chrono::milliseconds timeout);
  // True while the daemon process runs.
  bool running();

  // Runs `flushgate --config FILE args...` to completion (bounded by `timeout`).
  cli_result cli(const std::vector<std::string>& args,
                 std::chrono::milliseconds timeout = std::chrono::seconds(15)) const;
  // Writes the config and runs `flushgated --config FILE --check` (no daemon starts).
  cli_result check();
  // `customer add NAME --domain DOMAIN extra...`.
  cli_result add_customer(const std::string& name, const std::string& domain,
                          const std::vector<std::string>& extra = {}) const;
  // Messages queued in total per `queue summary --json`; nullopt when the CLI failed.
  std::optional<std::uint64_t> queued_messages() const;
  // `queue show QID --json` parsed; null when the CLI failed or printed no object.
  Poco::JSON::Object::Ptr show_message(const std::string& qid) const;

  // The daemon's log file and its stderr so far (for failure messages).
  std::string log_text() const;

  std::string host() const { return "127.0.0.1"; }
  std::uint16_t port() const noexcept { return port_; }
  const std::filesystem::path& dir() const noexcept { return dir_.path(); }
  std::filesystem::path data_dir() const;
  std::filesystem::path config_path() const { return dir() / "flushgated.cf"; }
  std::filesystem::path log_path() const { return dir() / "flushgated.log"; }
  std::filesystem::path control_socket() const;

  // Every message in the store under `data_dir`, with content. Only while no
  // daemon has the store open (after stop() or kill()).
  static boost::system::result<std::vector<stored_message>> read_store(
      const std::filesystem::path& data_dir);

 private:
  void write_config() const;
  void spawn();
  // Polls until ready (true), the process exits (false) or the deadline passes (false).
  bool wait_ready(std::chrono::milliseconds deadline);
  bool smtp_listening() const;
  // A LISTEN row for hex_address:port_ in a /proc/net/tcp* table.
  bool listening_in(const char* table_path, const char* hex_address) const;
  bool control_answers() const;

  temp_dir dir_;
  settings overrides_;
  std::uint16_t port_ = 0;
  bool port_fixed_ = false;  // after the first successful start, restarts keep the port
  bool listen_ipv6_ = false;
  std::optional<process> daemon_;
  std::vector<std::string> env_;
};

// True when a UNIX stream socket at `socket_path` (of any length) accepts a connection.
bool socket_answers(const std::filesystem::path& socket_path);

// True when `name` (a path, or a name looked up in PATH) is an executable file.
bool program_available(const std::string& name);

}  // namespace flushgate::test
