// readiness_test.cpp — the daemon says it is ready only when it is, and tells
// a service manager (systemd Type=notify) so.
//
// There is no systemd here: each test binds its own AF_UNIX datagram socket,
// hands it to the daemon as NOTIFY_SOCKET (what systemd does), and reads the
// sd_notify(3) messages. Covers: READY=1 arrives only once the control socket
// answers and the SMTP port accepts (a script may run `flushgate` at once);
// the control socket exists before the SMTP port accepts; STOPPING=1 at
// SIGTERM; WATCHDOG=1 pings when WATCHDOG_USEC is set, none when it is not.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

// The service manager's end of NOTIFY_SOCKET: a bound datagram socket that
// keeps every message the daemon sent.
class notify_listener {
 public:
  explicit notify_listener(const std::filesystem::path& path) : path_(path) {
    sockaddr_un address{};
    const std::string text = path.string();
    if (text.size() >= sizeof address.sun_path) throw std::runtime_error("notify socket path too long: " + text);
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, text.c_str(), text.size() + 1);
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      throw std::runtime_error("cannot bind " + text + ": " + std::strerror(errno));
    }
  }
  ~notify_listener() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  notify_listener(const notify_listener&) = delete;
  notify_listener& operator=(const notify_listener&) = delete;

  // The variable to give the daemon.
  std::string environment() const { return "NOTIFY_SOCKET=" + path_.string(); }

  // Waits until some message has the line `line` (e.g. "READY=1").
  bool wait_for(const std::string& line, std::chrono::milliseconds timeout) {
    return wait_until([&] { return count(line) > 0; }, timeout, 5ms);
  }

  // Messages so far with the line `line`.
  std::size_t count(const std::string& line) {
    drain();
    return static_cast<std::size_t>(std::count_if(messages_.begin(), messages_.end(), [&](const std::string& m) {
      return ("\n" + m + "\n").find("\n" + line + "\n") != std::string::npos;
    }));
  }

  // Every message so far, for failure output.
  std::string all() {
    drain();
    std::string out;
    for (const auto& m : messages_) out += "[" + m + "] ";
    return out;
  }

 private:
  void drain() {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n < 0) return;
      messages_.emplace_back(buf, static_cast<std::size_t>(n));
    }
  }

  std::filesystem::path path_;
  int fd_ = -1;
  std::vector<std::string> messages_;
};

// One connect to 127.0.0.1:port, closed at once; true when it was accepted.
bool tcp_accepts(std::uint16_t port) { return wait_for_tcp("127.0.0.1", port, 0ms); }

TEST(Readiness, ReadyComesOnlyWhenControlSocketAndSmtpPortAnswer) {
  daemon_fixture daemon;
  notify_listener manager(daemon.dir() / "notify.sock");
  daemon.add_env(manager.environment());
  daemon.launch();
  ASSERT_TRUE(manager.wait_for("READY=1", 15s))
      << "got no READY=1 within 15 s, want one; messages: " << manager.all() << "\nlog:\n" << daemon.log_text();
  // At once, no retry: this is what a start script does after systemctl start.
  EXPECT_TRUE(socket_answers(daemon.control_socket()))
      << "got the control socket refusing at READY=1, want it answering";
  EXPECT_TRUE(tcp_accepts(daemon.port())) << "got the SMTP port refusing at READY=1, want it accepting";
  auto added = daemon.add_customer("demo", "demo.test");
  EXPECT_EQ(added.exit_code, 0) << "got `customer add` failing right after READY=1: " << added.err;
  EXPECT_EQ(manager.count("WATCHDOG=1"), 0u)
      << "got watchdog pings without WATCHDOG_USEC, want none; messages: " << manager.all();
}

TEST(Readiness, ControlSocketExistsBeforeSmtpPortAccepts) {
  daemon_fixture daemon;
  daemon.launch();
  // The first moment the SMTP port accepts, the control socket must answer.
  bool control_at_first_accept = false;
  ASSERT_TRUE(wait_until(
      [&] {
        if (!tcp_accepts(daemon.port())) return false;
        control_at_first_accept = socket_answers(daemon.control_socket());
        return true;
      },
      15s, 1ms))
      << "got the SMTP port never accepting, want it open within 15 s; log:\n" << daemon.log_text();
  EXPECT_TRUE(control_at_first_accept)
      << "got the SMTP port accepting while the control socket did not answer, want the control socket first";
}

TEST(Readiness, StoppingIsSentAtSigterm) {
  daemon_fixture daemon;
  notify_listener manager(daemon.dir() / "notify.sock");
  daemon.add_env(manager.environment());
  daemon.launch();
  ASSERT_TRUE(manager.wait_for("READY=1", 15s)) << "got no READY=1; log:\n" << daemon.log_text();
  ASSERT_EQ(manager.count("STOPPING=1"), 0u) << "got STOPPING=1 before SIGTERM; messages: " << manager.all();
  ASSERT_TRUE(daemon.signal(SIGTERM));
  EXPECT_TRUE(manager.wait_for("STOPPING=1", 15s))
      << "got no STOPPING=1 after SIGTERM, want one; messages: " << manager.all();
  auto status = daemon.wait_for_exit(15s);
  ASSERT_TRUE(status.has_value()) << "got the daemon still running 15 s after SIGTERM";
  EXPECT_EQ(*status, 0) << "got exit status " << *status << ", want 0";
}

TEST(Readiness, WatchdogPingsWhenAsked) {
  daemon_fixture daemon;
  notify_listener manager(daemon.dir() / "notify.sock");
  daemon.add_env(manager.environment());
  daemon.add_env("WATCHDOG_USEC=200000");  // pings every 100 ms
  daemon.launch();
  ASSERT_TRUE(manager.wait_for("READY=1", 15s)) << "got no READY=1; log:\n" << daemon.log_text();
  EXPECT_TRUE(wait_until([&] { return manager.count("WATCHDOG=1") >= 3; }, 10s))
      << "got " << manager.count("WATCHDOG=1") << " WATCHDOG=1 within 10 s, want at least 3";
}

}  // namespace
