// support_test.cpp — the test-support library against itself and a real
// Postfix: temp dirs, ports, processes and their timeouts, smtp_probe's reply
// parser, and both postfix_instance roles end to end with swaks.
#include "tests/support/ports.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/smtp_probe.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// True while `pid` exists and is not a zombie (an orphan waits for init to reap it).
bool pid_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, name, state;
  if (!(stat >> pid_field >> name >> state)) {
    return false;
  }
  return state != "Z";
}

// A one-connection TCP server on 127.0.0.1 that sends fixed bytes, then
// waits (bounded) for the client to close. For smtp_probe's parser tests.
class canned_server {
 public:
  enum class then { wait_for_client_close, close };

  explicit canned_server(std::string bytes, then after = then::wait_for_client_close)
      : after_(after) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listen_fd_, 1) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("canned_server: cannot listen");
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, bytes = std::move(bytes)] { serve(bytes); });
  }
  ~canned_server() {
    thread_.join();
    ::close(listen_fd_);
  }
  std::uint16_t port() const { return port_; }

 private:
  void serve(const std::string& bytes) {
    pollfd incoming{listen_fd_, POLLIN, 0};
    if (::poll(&incoming, 1, 10'000) != 1) {
      return;
    }
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) {
      return;
    }
    [[maybe_unused]] auto sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (after_ == then::close) {
      ::close(fd);
      return;
    }
    pollfd closing{fd, POLLIN, 0};
    char sink[256];
    while (::poll(&closing, 1, 10'000) == 1 && ::recv(fd, sink, sizeof sink, 0) > 0) {
    }
    ::close(fd);
  }

  then after_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

TEST(TempDir, CreatesPrivateDirectoryAndRemovesIt) {
  std::filesystem::path kept;
  {
    temp_dir dir;
    kept = dir.path();
    ASSERT_TRUE(std::filesystem::is_directory(kept)) << "got no directory at " << kept;
    std::filesystem::create_directories(kept / "a" / "b");
    std::ofstream(kept / "a" / "b" / "file") << "x";
    const auto perms = std::filesystem::status(kept).permissions();
    EXPECT_EQ(perms, std::filesystem::perms::owner_all) << "got other mode bits, want 0700";
  }
  EXPECT_FALSE(std::filesystem::exists(kept)) << "got " << kept << " still there, want removed";
}

TEST(FreePort, ReturnsBindablePorts) {
  const auto tcp = free_port();
  const auto udp = free_udp_port();
  EXPECT_NE(tcp, 0) << "got port 0, want a port";
  EXPECT_NE(udp, 0) << "got port 0, want a port";
  EXPECT_FALSE(wait_for_tcp("127.0.0.1", tcp, 0ms)) << "got a listener on the free port " << tcp;
  EXPECT_GE(tcp, 20000) << "got " << tcp << ", want a port below the ephemeral range";
  EXPECT_LE(tcp, 32767) << "got " << tcp << ", want a port below the ephemeral range";
}

TEST(FreePort, NeverHandsTheSamePortTwiceWhileClaimed) {
  std::set<std::uint16_t> seen;
  for (int i = 0; i < 50; ++i) {
    const auto port = free_port();
    EXPECT_TRUE(seen.insert(port).second) << "got port " << port << " twice";
  }
  // Another process sees every one of them as claimed.
  std::string ports;
  for (auto port : seen) {
    ports += std::to_string(port) + " ";
  }
  const auto result = run_command(
      {"sh", "-c",
       "for p in " + ports + "; do flock -n /tmp/flushgate-test-ports/$p true && echo $p; done"},
      10s);
  EXPECT_EQ(result.stdout_text, "") << "got these ports claimable by another process";
}

TEST(RunCommand, ReturnsExitCodeAndOutput) {
  const auto result =
      run_command({"sh", "-c", "cat; echo out; echo err >&2; exit 3"}, 10s, "from stdin\n");
  EXPECT_FALSE(result.timed_out);
  EXPECT_EQ(result.exit_code, 3) << "got exit " << result.exit_code << ", want 3";
  EXPECT_EQ(result.stdout_text, "from stdin\nout\n");
  EXPECT_EQ(result.stderr_text, "err\n");
}

TEST(RunCommand, KillsCommandAndItsChildrenOnTimeout) {
  temp_dir dir;
  const auto pid_file = dir.path() / "grandchild.pid";
  const auto started = steady::now();
  // The shell's own child must die too: the whole process group is killed.
  const auto result =
      run_command({"sh", "-c", "sleep 30 & echo $! > " + pid_file.string() + "; wait"}, 300ms);
  const auto took = steady::now() - started;
  EXPECT_TRUE(result.timed_out) << "got no timeout, want one";
  EXPECT_EQ(result.exit_code, 128 + SIGKILL) << "got exit " << result.exit_code << ", want 137";
  EXPECT_LT(took, 5s) << "got " << std::chrono::duration<double>(took).count() << " s, want < 5 s";
  std::ifstream in(pid_file);
  pid_t grandchild = 0;
  ASSERT_TRUE(in >> grandchild) << "got no grandchild pid";
  EXPECT_TRUE(wait_until([&] { return !pid_alive(grandchild); }, 5s))
      << "got grandchild " << grandchild << " alive, want killed";
}

TEST(Process, AddsEnvironmentAndWorkingDirectory) {
  temp_dir dir;
  spawn_options options;
  options.env = {"FLUSHGATE_SUPPORT_TEST=yes", "PATH=/usr/bin:/bin"};
  options.working_dir = dir.path();
  process child({"sh", "-c", "echo \"$FLUSHGATE_SUPPORT_TEST $PATH\"; pwd"}, options);
  ASSERT_EQ(child.wait_for_exit(10s), 0);
  EXPECT_EQ(child.stdout_text(), "yes /usr/bin:/bin\n" + dir.path().string() + "\n");
}

TEST(Process, WritesOutputToNamedFiles) {
  temp_dir dir;
  spawn_options options;
  options.stdout_path = dir.path() / "out.log";
  options.stderr_path = dir.path() / "out.log";  // both streams into one file, appended
  process child({"sh", "-c", "echo one; echo two >&2"}, options);
  ASSERT_EQ(child.wait_for_exit(10s), 0);
  std::ifstream in(dir.path() / "out.log");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "one\ntwo\n");
}

TEST(Process, SignalAndWaitReportTheSignal) {
  process child({"sleep", "30"});
  EXPECT_TRUE(child.running());
  EXPECT_EQ(child.wait_for_exit(50ms), std::nullopt) << "got an exit, want still running";
  EXPECT_TRUE(child.signal(SIGTERM));
  EXPECT_EQ(child.wait_for_exit(10s), 128 + SIGTERM);
  EXPECT_FALSE(child.running());
  EXPECT_FALSE(child.signal(SIGTERM)) << "got a signal sent to a reaped child";
}

TEST(Process, DestructorKillsARunningChild) {
  pid_t pid = -1;
  {
    process child({"sleep", "30"});
    pid = child.pid();
    ASSERT_GT(pid, 0);
  }
  EXPECT_FALSE(pid_alive(pid)) << "got pid " << pid << " alive after the destructor";
}

TEST(Process, ThrowsWhenTheProgramDoesNotExist) {
  EXPECT_THROW(process({"/nonexistent/flushgate-no-such-program"}), std::system_error);
}

TEST(WaitUntil, ReturnsTrueOnceThePredicateHolds) {
  int calls = 0;
  EXPECT_TRUE(wait_until([&] { return ++calls == 3; }, 5s, 1ms));
  EXPECT_EQ(calls, 3);
}

TEST(WaitUntil, ReturnsFalseAtTheDeadline) {
  const auto started = steady::now();
  EXPECT_FALSE(wait_until([] { return false; }, 100ms, 10ms));
  EXPECT_GE(steady::now() - started, 100ms);
}

TEST(SmtpProbe, ParsesMultiLineAndKeepsPipelinedReplies) {
  canned_server server("250-first\r\n250-SIZE 100\r\n250 last\r\n354 go ahead\n221 bye\r\n");
  smtp_probe probe(5s);
  ASSERT_FALSE(probe.connect("127.0.0.1", server.port()));
  auto first = probe.read_reply();
  ASSERT_TRUE(first) << "got " << first.error().message();
  EXPECT_EQ(first->code, 250);
  EXPECT_EQ(first->lines, (std::vector<std::string>{"first", "SIZE 100", "last"}));
  EXPECT_EQ(first->raw, "250-first\r\n250-SIZE 100\r\n250 last\r\n");
  auto second = probe.read_reply();  // bare LF accepted from a server
  ASSERT_TRUE(second) << "got " << second.error().message();
  EXPECT_EQ(second->code, 354);
  EXPECT_EQ(second->raw, "354 go ahead\n");
  auto third = probe.read_reply();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->code, 221);
}

TEST(SmtpProbe, RejectsMalformedAndMixedCodeReplies) {
  canned_server server("hello\r\n250-a\r\n251 b\r\n");
  smtp_probe probe(5s);
  ASSERT_FALSE(probe.connect("127.0.0.1", server.port()));
  auto garbage = probe.read_reply();
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.error(), make_error_code(probe_errc::bad_reply));
  auto mixed = probe.read_reply();
  ASSERT_FALSE(mixed);
  EXPECT_EQ(mixed.error(), make_error_code(probe_errc::bad_reply));
}

TEST(SmtpProbe, ReportsTimeoutCloseAndNotConnected) {
  {
    canned_server silent("");
    smtp_probe probe(200ms);
    ASSERT_FALSE(probe.connect("127.0.0.1", silent.port()));
    auto reply = probe.read_reply();
    ASSERT_FALSE(reply);
    EXPECT_EQ(reply.error(), make_error_code(probe_errc::timed_out))
        << "got " << reply.error().message() << ", want timed out";
  }
  {
    canned_server cut_off("250-half a reply\r\n", canned_server::then::close);
    smtp_probe probe(5s);
    ASSERT_FALSE(probe.connect("127.0.0.1", cut_off.port()));
    auto reply = probe.read_reply();
    ASSERT_FALSE(reply);
    EXPECT_EQ(reply.error(), make_error_code(probe_errc::closed))
        << "got " << reply.error().message() << ", want closed";
  }
  smtp_probe unconnected;
  EXPECT_EQ(unconnected.send_raw("x"), make_error_code(probe_errc::not_connected));
  EXPECT_FALSE(unconnected.read_reply());
}

// Both Postfix roles share one final destination (starting Postfix takes
// about two seconds); each test counts the messages it adds.
class PostfixInstanceTest : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { destination_.reset(); }

  void SetUp() override {
    if (!postfix_instance::available()) {
      GTEST_SKIP() << "postfix not installed or not root: no private Postfix instance";
    }
    if (!destination_) {
      destination_ = std::make_unique<postfix_instance>(postfix_instance::final_destination(
          {"customer.test"}, "127.0.0.1:" + std::to_string(free_port())));
      destination_->start();
    }
  }

  // Sends one message with swaks; its stderr on failure ("" when it worked).
  static std::string send_with_swaks(const postfix_instance& to) {
    const auto result =
        run_command({"swaks", "--server", to.host() + ":" + std::to_string(to.port()), "--to",
                     "u@customer.test", "--from", "a@sender.test", "--helo", "sender.test",
                     "--timeout", "20", "--silent", "2"},
                    30s);
    if (result.exit_code == 0) {
      return "";
    }
    return "swaks exit " + std::to_string(result.exit_code) + ": " + result.stderr_text;
  }

  static inline std::unique_ptr<postfix_instance> destination_;
};

TEST_F(PostfixInstanceTest, FinalDestinationPutsOneFileInTheMaildir) {
  if (::access("/usr/bin/swaks", X_OK) != 0) {
    GTEST_SKIP() << "swaks not installed";
  }
  const auto before = destination_->message_files().size();
  ASSERT_EQ(send_with_swaks(*destination_), "");
  EXPECT_TRUE(wait_until([&] { return destination_->message_files().size() == before + 1; }, 20s))
      << "got " << destination_->message_files().size() - before << " new files, want 1\n"
      << destination_->log_text();
  const auto files = destination_->message_files();
  ASSERT_FALSE(files.empty());
  std::ifstream in(files.back());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("To: u@customer.test"), std::string::npos) << "got message:\n" << text;
}

TEST_F(PostfixInstanceTest, SmtpProbeParsesPostfixEhloReply) {
  smtp_probe probe(10s);
  ASSERT_FALSE(probe.connect(destination_->host(), destination_->port()));
  auto greeting = probe.read_reply();
  ASSERT_TRUE(greeting) << "got " << greeting.error().message();
  EXPECT_EQ(greeting->code, 220);
  auto ehlo = probe.command("EHLO probe.test");
  ASSERT_TRUE(ehlo) << "got " << ehlo.error().message();
  EXPECT_EQ(ehlo->code, 250);
  ASSERT_GT(ehlo->lines.size(), 3u) << "got raw reply:\n" << ehlo->raw;
  EXPECT_EQ(ehlo->lines.front(), "final.postfix.test");
  EXPECT_NE(std::find(ehlo->lines.begin(), ehlo->lines.end(), "PIPELINING"), ehlo->lines.end())
      << "got raw reply:\n"
      << ehlo->raw;
  EXPECT_TRUE(ehlo->raw.ends_with("\r\n"));
  auto quit = probe.command("QUIT");
  ASSERT_TRUE(quit);
  EXPECT_EQ(quit->code, 221);
  auto after = probe.read_reply();
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error(), make_error_code(probe_errc::closed));
}

TEST_F(PostfixInstanceTest, HoldingRelayKeepsMailUntilEtrn) {
  if (::access("/usr/bin/swaks", X_OK) != 0) {
    GTEST_SKIP() << "swaks not installed";
  }
  auto relay = postfix_instance::holding_relay(
      {"customer.test"}, "127.0.0.1:" + std::to_string(free_port()),
      destination_->host() + ":" + std::to_string(destination_->port()));
  relay.start();
  const auto delivered_before = destination_->message_files().size();

  ASSERT_EQ(send_with_swaks(relay), "");
  EXPECT_TRUE(wait_until([&] { return relay.deferred_count() == 1; }, 20s))
      << "got " << relay.deferred_count() << " deferred, want 1\n"
      << relay.log_text();
  EXPECT_EQ(destination_->message_files().size(), delivered_before) << "got mail before ETRN";

  auto refused = relay.etrn("other.test");
  ASSERT_TRUE(refused) << "got " << refused.error().message();
  EXPECT_EQ(refused->code, 459) << "got " << refused->raw;
  auto started = relay.etrn("customer.test");
  ASSERT_TRUE(started) << "got " << started.error().message();
  EXPECT_EQ(started->code, 250) << "got " << started->raw;

  EXPECT_TRUE(
      wait_until([&] { return destination_->message_files().size() == delivered_before + 1; }, 20s))
      << "got " << destination_->message_files().size() - delivered_before << " delivered, want 1\n"
      << relay.log_text();
  EXPECT_TRUE(wait_until([&] { return relay.deferred_count() == 0; }, 10s));
  EXPECT_TRUE(relay.stop());
  EXPECT_TRUE(relay.stop()) << "got a failing second stop, want idempotent";
}

}  // namespace
