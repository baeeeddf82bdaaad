// daemon_fixture.cpp — see daemon_fixture.hpp.
#include "tests/integration/daemon_fixture.hpp"

#include "core/unix_address.hpp"
#include "queue/sqlite_store.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace flushgate::test {

namespace {

using namespace std::chrono_literals;

std::string read_whole_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The keys every test daemon gets unless the test overrides them.
daemon_fixture::settings base_settings(const std::filesystem::path& dir) {
  return {
      {"myhostname", "gw.test"},
      {"data_dir", (dir / "data").string()},
      {"log_target", (dir / "flushgated.log").string()},
      {"log_level", "info"},
      // The default (100M) says nothing about the tests; a small floor keeps
      // them independent of how full the machine's /tmp is.
      {"queue_min_free", "1M"},
      {"smtpd_shutdown_grace", "5s"},
      // Off unless a test asks: parallel daemons would share the default port.
      {"admin_listen", ""},
      // The machine's resolver is not on loopback: no reverse lookups of
      // clients unless a test gives a DNS server of its own.
      {"smtpd_reverse_lookup_timeout", "0s"},
  };
}

}  // namespace

std::filesystem::path daemon_fixture::daemon_path() {
  return std::filesystem::path(FLUSHGATE_BINARY_DIR) / "control" / "flushgated";
}

std::filesystem::path daemon_fixture::cli_path() {
  return std::filesystem::path(FLUSHGATE_BINARY_DIR) / "control" / "flushgate";
}

daemon_fixture::daemon_fixture(settings overrides)
    : dir_("flushgate-it"), overrides_(std::move(overrides)) {}

daemon_fixture::~daemon_fixture() {
  stop();
}

std::filesystem::path daemon_fixture::data_dir() const {
  if (auto it = overrides_.find("data_dir"); it != overrides_.end()) return it->second;
  return dir() / "data";
}

std::filesystem::path daemon_fixture::control_socket() const {
  if (auto it = overrides_.find("control_socket"); it != overrides_.end()) return it->second;
  return data_dir() / "control.sock";
}

void daemon_fixture::write_config() const {
  settings all = base_settings(dir());
  for (const auto& [key, value] : overrides_) all[key] = value;
  all["smtpd_listen"] = "127.0.0.1:" + std::to_string(port_);
  if (listen_ipv6_) all["smtpd_listen"] += ",[::1]:" + std::to_string(port_);
  std::ofstream out(config_path(), std::ios::trunc);
  out << "# written by daemon_fixture\n";
  for (const auto& [key, value] : all) out << key << " = " << value << "\n";
  if (!out) throw std::runtime_error("cannot write " + config_path().string());
}

void daemon_fixture::spawn() {
  spawn_options options;
  options.stdout_path = dir() / "flushgated.out";
  options.stderr_path = dir() / "flushgated.out";
  options.env = env_;
  daemon_.reset();
  daemon_.emplace(std::vector<std::string>{daemon_path().string(), "--config",
                                           config_path().string()},
                  options);
}

void daemon_fixture::launch() {
  if (!port_fixed_) port_ = free_port();
  port_fixed_ = true;
  write_config();
  spawn();
}

void daemon_fixture::start(std::chrono::milliseconds deadline) {
  // free_port() can race with another process taking the port: a daemon that
  // cannot bind exits at once, and a fresh port is tried (first start only).
  for (int attempt = 1;; ++attempt) {
    if (!port_fixed_) port_ = free_port();
    write_config();
    spawn();
    if (wait_ready(deadline)) {
      port_fixed_ = true;
      return;
    }
    const bool exited = !daemon_->running();
    if (!exited) daemon_->kill();
    const std::string log = log_text();
    const bool bind_race = exited && log.find("cannot listen") != std::string::npos;
    if (!bind_race || port_fixed_ || attempt >= 3) {
      throw std::runtime_error("flushgated did not become ready on port " + std::to_string(port_) +
                               (exited ? " (it exited with status " +
                                             std::to_string(daemon_->exit_status().value_or(-1)) +
                                             ")"
                                       : " (deadline passed)") +
                               "; log:\n" + log);
    }
  }
}

void daemon_fixture::restart(std::chrono::milliseconds deadline) {
  if (daemon_ && daemon_->running()) {
    throw std::logic_error("daemon_fixture::restart while the daemon still runs");
  }
  start(deadline);
}

int daemon_fixture::stop(std::chrono::milliseconds deadline) {
  if (!daemon_) return -1;
  if (daemon_->running()) {
    daemon_->signal(SIGTERM);
    if (auto status = daemon_->wait_for_exit(deadline)) return *status;
    return daemon_->kill();
  }
  return daemon_->exit_status().value_or(-1);
}

int daemon_fixture::kill() {
  if (!daemon_) return -1;
  return daemon_->kill();
}

bool daemon_fixture::signal(int sig) {
  return daemon_ && daemon_->signal(sig);
}

std::optional<int> daemon_fixture::wait_for_exit(std::chrono::milliseconds timeout) {
  if (!daemon_) return std::nullopt;
  return daemon_->wait_for_exit(timeout);
}

bool daemon_fixture::running() {
  return daemon_ && daemon_->running();
}

bool daemon_fixture::wait_ready(std::chrono::milliseconds deadline) {
  bool exited = false;
  const bool ready = wait_until(
      [&] {
        if (!daemon_->running()) {
          exited = true;
          return true;
        }
        return smtp_listening() && control_answers();
      },
      deadline, 20ms);
  return ready && !exited;
}

// A LISTEN socket on 127.0.0.1:port in /proc/net/tcp (and on [::1]:port in
// /proc/net/tcp6 when asked): the port is bound and listening without us
// opening an SMTP session.
bool daemon_fixture::smtp_listening() const {
  if (listen_ipv6_ && !listening_in("/proc/net/tcp6", "00000000000000000000000001000000")) {
    return false;
  }
  return listening_in("/proc/net/tcp", "0100007F");
}

bool daemon_fixture::listening_in(const char* table_path, const char* hex_address) const {
  std::ifstream table(table_path);
  char wanted[64];
  std::snprintf(wanted, sizeof wanted, "%s:%04X", hex_address, static_cast<unsigned>(port_));
  std::string line;
  std::getline(table, line);  // header
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    if (fields >> slot >> local >> remote >> state && local == wanted && state == "0A") {
      return true;
    }
  }
  return false;
}

// The control socket accepts a connection (a stale socket file from a killed
// daemon refuses it).
bool daemon_fixture::control_answers() const {
  return socket_answers(control_socket());
}

bool socket_answers(const std::filesystem::path& socket_path) {
  auto short_address = core::unix_address::make(socket_path.string());  // long paths too
  if (!short_address) return false;
  const std::string& path = short_address->socket_path();
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return ok;
}

cli_result daemon_fixture::cli(const std::vector<std::string>& args,
                               std::chrono::milliseconds timeout) const {
  std::vector<std::string> argv{cli_path().string(), "--config", config_path().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_command(argv, timeout);
  return {r.exit_code, std::move(r.stdout_text), std::move(r.stderr_text)};
}

cli_result daemon_fixture::check() {
  if (port_ == 0) port_ = free_port();  // a config with port 0 does not pass
  write_config();
  auto r = run_command({daemon_path().string(), "--config", config_path().string(), "--check"},
                       std::chrono::seconds(15));
  return {r.exit_code, std::move(r.stdout_text), std::move(r.stderr_text)};
}

cli_result daemon_fixture::add_customer(const std::string& name, const std::string& domain,
                                        const std::vector<std::string>& extra) const {
  std::vector<std::string> args{"customer", "add", name, "--domain", domain};
  args.insert(args.end(), extra.begin(), extra.end());
  return cli(args);
}

std::optional<std::uint64_t> daemon_fixture::queued_messages() const {
  auto r = cli({"--json", "queue", "summary"});
  if (r.exit_code != 0) return std::nullopt;
  try {
    Poco::JSON::Parser parser;
    auto rows = parser.parse(r.out).extract<Poco::JSON::Array::Ptr>();
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < rows->size(); ++i) {
      total += rows->getObject(static_cast<unsigned>(i))->getValue<std::uint64_t>("messages");
    }
    return total;
  } catch (const std::exception&) {  // Poco::Exception is one
    return std::nullopt;
  }
}

Poco::JSON::Object::Ptr daemon_fixture::show_message(const std::string& qid) const {
  auto r = cli({"--json", "queue", "show", qid});
  if (r.exit_code != 0) return nullptr;
  try {
    Poco::JSON::Parser parser;
    return parser.parse(r.out).extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception&) {  // Poco::Exception is one
    return nullptr;
  }
}

std::string daemon_fixture::log_text() const {
  std::string text = read_whole_file(log_path());
  const std::string out = read_whole_file(dir() / "flushgated.out");
  if (!out.empty()) text += "--- stdout/stderr ---\n" + out;
  return text;
}

boost::system::result<std::vector<stored_message>> daemon_fixture::read_store(
    const std::filesystem::path& data_dir) {
  auto opened = queue::sqlite_store::open(data_dir.string());
  if (!opened) return opened.error();
  auto& store = **opened;
  auto list = store.list_messages(0, 0);
  if (!list) return list.error();
  std::vector<stored_message> out;
  for (auto& info : *list) {
    auto content = store.read_content(info.qid);
    if (!content) return content.error();
    // list_messages may leave recipients out; find_message has them all.
    auto full = store.find_message(info.qid);
    if (!full) return full.error();
    out.push_back({std::move(*full), std::move(*content)});
  }
  return out;
}

bool program_available(const std::string& name) {
  auto executable = [](const std::filesystem::path& p) {
    return ::access(p.c_str(), X_OK) == 0 && std::filesystem::is_regular_file(p);
  };
  if (name.find('/') != std::string::npos) return executable(name);
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && executable(std::filesystem::path(dir) / name)) return true;
  }
  return false;
}

}  // namespace flushgate::test
