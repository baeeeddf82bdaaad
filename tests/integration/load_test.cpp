// load_test.cpp — many SMTP sessions at once against one flushgated, with
// slowloris sessions among them.
//
// Covers issue 7 ("load") at ctest size; scripts/torture/load runs 1,000
// sessions (in two waves) with the same checks and prints figures. One
// poll(2) loop drives every session over its own non-blocking socket: the
// normal sessions all connect and wait for their 220 first (so the daemon
// holds them all at once), then each runs EHLO, MAIL, RCPT, DATA with a small
// message and QUIT, one command per reply. The slowloris sessions: one idle
// after the greeting, one trickling message text a byte a second after DATA.
// With smtpd_timeout and smtpd_data_timeout of 3 s and smtpd_session_timeout
// of 8 s, each must be cut off (421 or close) by the session deadline plus a
// margin, while every normal session gets its message accepted. Afterwards
// the daemon's descriptors return to where they were (no session left
// behind) and its RSS is reported: before, with every session open, at its
// peak and after; the growth per session is checked against a generous bound
// (a leak or a per-session buffer gone wild, not a figure to meet).
// A third kind, a command line trickled a byte a second, has its own test,
// disabled until the session deadline bounds a line being read (see there).
// Timing never fails the test beyond those bounds.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

// The pid of the flushgated whose command line names `config`; 0 if none.
pid_t daemon_pid(const fs::path& config) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() ||
        !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find("flushgated") != std::string::npos &&
        cmdline.find(config.string()) != std::string::npos) {
      return static_cast<pid_t>(std::stol(name));
    }
  }
  return 0;
}

// VmRSS and VmHWM of `pid` in KiB (0 when unknown).
struct memory_use {
  std::uint64_t rss_kib = 0;
  std::uint64_t hwm_kib = 0;
};
memory_use memory_of(pid_t pid) {
  memory_use out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    std::uint64_t value = 0;
    fields >> key >> value;
    if (key == "VmRSS:") out.rss_kib = value;
    if (key == "VmHWM:") out.hwm_kib = value;
  }
  return out;
}

// Open descriptors of `pid`.
std::size_t descriptors_of(pid_t pid) {
  std::error_code ec;
  std::size_t n = 0;
  for (fs::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    ++n;
  }
  return n;
}

enum class session_kind { normal, idle, command_trickle, data_trickle };

const char* to_string(session_kind k) {
  switch (k) {
    case session_kind::normal: return "normal";
    case session_kind::idle: return "idle after 220";
    case session_kind::command_trickle: return "command line, a byte at a time";
    case session_kind::data_trickle: return "message text, a byte at a time";
  }
  return "?";
}

// One client session: a non-blocking socket and where its dialogue stands.
struct load_session {
  session_kind kind = session_kind::normal;
  int fd = -1;
  std::string in;   // received, not yet parsed
  std::string out;  // to send
  std::size_t step = 0;
  bool greeted = false;
  bool accepted = false;  // normal: 250 after the final dot
  bool done = false;
  std::string failure;  // normal: what went wrong
  std::string ending;   // slowloris: "421 ..." or "closed"
  steady::time_point connected;
  steady::time_point ended;
  steady::time_point next_byte;
  std::size_t trickled = 0;
};

// The load client: every session on one poll(2) loop.
class load_client {
 public:
  load_client(std::uint16_t port, std::chrono::milliseconds trickle_interval)
      : port_(port), interval_(trickle_interval) {}
  ~load_client() {
    for (auto& s : sessions_) close_session(s);
  }
  load_client(const load_client&) = delete;
  load_client& operator=(const load_client&) = delete;

  // Connects a session of `kind`; false when the socket could not be made.
  bool add(session_kind kind) {
    load_session s;
    s.kind = kind;
    s.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (::connect(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
      ::close(s.fd);
      return false;
    }
    s.connected = steady::now();
    sessions_.push_back(std::move(s));
    return true;
  }

  // Runs until `until()` is true or every session is done or `deadline` passes.
  template <typename Until>
  void run(steady::time_point deadline, Until until, const std::function<void()>& tick = [] {}) {
    std::vector<pollfd> fds;
    while (steady::now() < deadline && !until()) {
      fds.clear();
      for (auto& s : sessions_) {
        if (s.done) continue;
        short events = POLLIN;
        if (!s.out.empty()) events |= POLLOUT;
        fds.push_back({s.fd, events, 0});
      }
      if (fds.empty()) break;
      ::poll(fds.data(), fds.size(), 50);
      std::size_t i = 0;
      for (auto& s : sessions_) {
        if (s.done) continue;
        const short got = fds[i++].revents;
        if ((got & POLLOUT) != 0) send_pending(s);
        if ((got & (POLLIN | POLLHUP | POLLERR)) != 0) receive(s);
        if (!s.done) trickle(s);
      }
      tick();
    }
  }

  // Lets the normal sessions go on past their greeting.
  void go() {
    go_ = true;
    for (auto& s : sessions_) {
      if (s.kind == session_kind::normal && s.greeted && s.step == 1 && !s.done) {
        queue_send(s, "EHLO load.test\r\n");
      }
    }
  }

  const std::vector<load_session>& sessions() const { return sessions_; }

  std::size_t count(session_kind kind, bool (*pred)(const load_session&)) const {
    return static_cast<std::size_t>(std::count_if(
        sessions_.begin(), sessions_.end(),
        [&](const load_session& s) { return s.kind == kind && pred(s); }));
  }

 private:
  static constexpr std::string_view message =
      "From: <load@sender.test>\r\nTo: <u@load.test>\r\nSubject: load\r\n\r\n"
      "one of many at once\r\n.\r\n";

  void queue_send(load_session& s, std::string_view bytes) {
    s.out += bytes;
    send_pending(s);
  }

  void send_pending(load_session& s) {
    while (!s.out.empty()) {
      const ssize_t n = ::send(s.fd, s.out.data(), s.out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        s.out.erase(0, static_cast<std::size_t>(n));
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
      } else {
        finish(s, "send failed: " + std::string(std::strerror(errno)));
        return;
      }
    }
  }

  void receive(load_session& s) {
    char buffer[4096];
    const ssize_t n = ::recv(s.fd, buffer, sizeof buffer, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      finish(s, "closed");
      return;
    }
    s.in.append(buffer, static_cast<std::size_t>(n));
    // Complete replies: lines up to one whose fourth octet is a space.
    for (;;) {
      std::size_t start = 0;
      std::size_t end = 0;
      bool complete = false;
      while ((end = s.in.find("\r\n", start)) != std::string::npos) {
        const std::string_view line(s.in.data() + start, end - start);
        start = end + 2;
        if (line.size() < 4 || line[3] != '-') {
          complete = true;
          on_reply(s, std::string(line));
          break;
        }
      }
      if (!complete) return;
      s.in.erase(0, start);
      if (s.done) return;
    }
  }

  // One complete reply (its last line) for `s`.
  void on_reply(load_session& s, const std::string& line) {
    const int code = line.size() >= 3 ? std::atoi(line.substr(0, 3).c_str()) : 0;
    if (s.kind != session_kind::normal) {
      if (code == 421) {
        finish(s, line);
        return;
      }
      if (s.step == 0 && code == 220) {
        s.greeted = true;
        s.step = 1;
        s.next_byte = steady::now() + interval_;
        if (s.kind == session_kind::data_trickle) {
          queue_send(s, "EHLO slow.test\r\nMAIL FROM:<slow@sender.test>\r\nRCPT TO:<u@load.test>\r\n");
        }
      } else if (s.kind == session_kind::data_trickle && code == 250 && s.step < 4) {
        if (++s.step == 4) queue_send(s, "DATA\r\n");  // after EHLO, MAIL, RCPT
      } else if (s.kind == session_kind::data_trickle && code == 354) {
        s.step = 5;  // the trickle of message text starts
      }
      return;  // replies to trickled NOOPs are fine
    }
    struct expectation {
      int code;
      std::string_view next;
    };
    static constexpr expectation dialogue[] = {
        {220, ""},  // EHLO waits for go()
        {250, "MAIL FROM:<load@sender.test>\r\n"},
        {250, "RCPT TO:<u@load.test>\r\n"},
        {250, "DATA\r\n"},
        {354, message},
        {250, "QUIT\r\n"},
        {221, ""},
    };
    if (s.step >= std::size(dialogue) || code != dialogue[s.step].code) {
      finish(s, "step " + std::to_string(s.step) + ": got \"" + line + "\", want " +
                    std::to_string(s.step < std::size(dialogue) ? dialogue[s.step].code : 0));
      return;
    }
    if (s.step == 0) s.greeted = true;
    if (s.step == 5) s.accepted = true;
    const std::size_t was = s.step++;
    if (was == 6) {
      finish(s, "");
    } else if (was == 0) {
      if (go_) queue_send(s, "EHLO load.test\r\n");
    } else {
      queue_send(s, dialogue[was].next);
    }
  }

  // Slowloris: one more byte when its time has come.
  void trickle(load_session& s) {
    if (s.kind == session_kind::normal || s.kind == session_kind::idle || !s.greeted) return;
    if (s.kind == session_kind::data_trickle && s.step < 5) return;
    if (steady::now() < s.next_byte || !s.out.empty()) return;
    // NOOP takes an argument (RFC 5321 §4.1.1.9): a long line, each byte in time.
    static constexpr std::string_view command =
        "NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n";
    static constexpr std::string_view text = "Subject: slow\r\n\r\nslowly ";
    const std::string_view pattern =
        s.kind == session_kind::command_trickle ? command : text;
    const char byte = pattern[s.trickled % pattern.size()];
    ++s.trickled;
    s.next_byte = steady::now() + interval_;
    queue_send(s, std::string_view(&byte, 1));
  }

  void finish(load_session& s, std::string why) {
    if (s.done) return;
    s.done = true;
    s.ended = steady::now();
    if (s.kind == session_kind::normal) {
      if (!why.empty()) s.failure = std::move(why);
    } else {
      s.ending = std::move(why);
    }
    close_session(s);
  }

  static void close_session(load_session& s) {
    if (s.fd >= 0) ::close(s.fd);
    s.fd = -1;
  }

  std::uint16_t port_;
  std::chrono::milliseconds interval_;
  bool go_ = false;
  std::vector<load_session> sessions_;
};

double seconds_of(steady::duration d) { return std::chrono::duration<double>(d).count(); }

class Load : public ::testing::Test {
 protected:
  static constexpr auto session_timeout = 8s;

  void SetUp() override {
    // Our own descriptors: every session is a socket.
    rlimit files{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &files), 0);
    if (files.rlim_cur < 1024) {
      files.rlim_cur = std::min<rlim_t>(files.rlim_max, 1024);
      ::setrlimit(RLIMIT_NOFILE, &files);
    }
    daemon_.emplace(daemon_fixture::settings{{"smtpd_max_connections", "2000"},
                                             {"smtpd_max_connections_per_client", "2000"},
                                             {"smtpd_timeout", "3s"},
                                             {"smtpd_data_timeout", "3s"},
                                             {"smtpd_session_timeout", "8s"}});
    daemon_->start();
    auto added = daemon_->add_customer("load", "load.test", {"--mode", "hold"});
    ASSERT_EQ(added.exit_code, 0) << "customer add: " << added.err;
    pid_ = daemon_pid(daemon_->config_path());
    ASSERT_NE(pid_, 0) << "got no flushgated process with " << daemon_->config_path();
  }

  // A slowloris session must be cut off, with 421 or a close, by the session
  // deadline and a margin.
  static void expect_cut_off(const load_session& s) {
    EXPECT_TRUE(s.done) << to_string(s.kind) << ": got still open after "
                        << seconds_of(steady::now() - s.connected) << " s (" << s.trickled
                        << " bytes trickled), want it cut off by the 8 s session deadline";
    if (!s.done) return;
    const auto lasted = s.ended - s.connected;
    EXPECT_TRUE(s.ending.starts_with("421") || s.ending == "closed")
        << to_string(s.kind) << ": got \"" << s.ending << "\", want 421 or a close";
    EXPECT_LE(lasted, session_timeout + 5s)
        << to_string(s.kind) << ": cut off after " << seconds_of(lasted)
        << " s, want by the session deadline (8 s) and a margin";
    std::cout << "slowloris (" << to_string(s.kind) << "): cut after " << seconds_of(lasted)
              << " s with \"" << s.ending << "\", " << s.trickled << " bytes trickled\n";
  }

  std::optional<daemon_fixture> daemon_;
  pid_t pid_ = 0;
};

TEST_F(Load, HundredSessionsAtOnceSucceedWhileSlowlorisSessionsAreCutOff) {
  constexpr std::size_t normal_sessions = 100;
  const memory_use before = memory_of(pid_);
  const std::size_t fds_before = descriptors_of(pid_);

  load_client client(daemon_->port(), 1s);
  for (auto kind : {session_kind::idle, session_kind::data_trickle}) {
    ASSERT_TRUE(client.add(kind)) << "socket: " << std::strerror(errno);
  }
  for (std::size_t i = 0; i < normal_sessions; ++i) {
    ASSERT_TRUE(client.add(session_kind::normal)) << "socket " << i << ": " << std::strerror(errno);
  }
  const auto start = steady::now();
  // Every normal session greeted: the daemon holds them all at once.
  client.run(start + 30s, [&] {
    return client.count(session_kind::normal, [](const load_session& s) {
             return s.greeted || s.done;
           }) == normal_sessions;
  });
  const memory_use all_open = memory_of(pid_);
  const std::size_t fds_open = descriptors_of(pid_);
  const std::size_t greeted =
      client.count(session_kind::normal, [](const load_session& s) { return s.greeted; });
  EXPECT_EQ(greeted, normal_sessions) << "got " << greeted << " sessions greeted at once, want all";
  client.go();
  memory_use peak = all_open;
  client.run(
      start + 60s, [] { return false; },
      [&] { peak.rss_kib = std::max(peak.rss_kib, memory_of(pid_).rss_kib); });
  const memory_use after_sessions = memory_of(pid_);

  // Normal sessions: every message accepted.
  std::size_t accepted = 0;
  std::vector<std::string> failures;
  for (const auto& s : client.sessions()) {
    if (s.kind != session_kind::normal) continue;
    accepted += s.accepted ? 1 : 0;
    if (!s.done) failures.push_back("unfinished at step " + std::to_string(s.step));
    else if (!s.failure.empty()) failures.push_back(s.failure);
  }
  EXPECT_EQ(accepted, normal_sessions) << "got " << accepted << " messages accepted, want "
                                       << normal_sessions << "; first failure: "
                                       << (failures.empty() ? "-" : failures.front());
  EXPECT_TRUE(failures.empty()) << "got " << failures.size() << " failed sessions, first: "
                                << failures.front();
  EXPECT_EQ(daemon_->queued_messages().value_or(0), normal_sessions);

  for (const auto& s : client.sessions()) {
    if (s.kind != session_kind::normal) expect_cut_off(s);
  }

  // Bounded: the descriptors come back; the memory per session stays small.
  std::size_t fds_after = 0;
  EXPECT_TRUE(wait_until([&] { return (fds_after = descriptors_of(pid_)) <= fds_before + 2; }, 10s))
      << "got " << fds_after << " descriptors open in the daemon after every session ended, "
      << "want about " << fds_before << " as before";
  const memory_use end = memory_of(pid_);
  const std::uint64_t top = std::max({peak.rss_kib, all_open.rss_kib, before.rss_kib});
  const std::uint64_t per_session_kib = (top - before.rss_kib) / normal_sessions;
  EXPECT_LT(per_session_kib, 512u) << "got " << per_session_kib
                                   << " KiB of RSS per session, want well under 512 KiB";
  std::cout << "load: " << normal_sessions << " sessions at once, " << accepted
            << " messages accepted, " << failures.size() << " errors, "
            << seconds_of(steady::now() - start) << " s in all\n"
            << "  flushgated VmRSS KiB: before " << before.rss_kib << ", all open "
            << all_open.rss_kib << ", peak " << peak.rss_kib << ", after "
            << after_sessions.rss_kib << "; VmHWM " << end.hwm_kib << "\n"
            << "  descriptors: before " << fds_before << ", all open " << fds_open << ", after "
            << fds_after << "\n";
}

// A command line trickled a byte a second, each byte inside smtpd_timeout:
// the session deadline must still end the session. (It did not until the
// line reader bounded the whole line: each byte restarted the timeout, and
// such a session lasted up to smtpd_command_line_limit × smtpd_timeout.)
TEST_F(Load, CommandLineTrickledAByteAtATimeIsCutByTheSessionDeadline) {
  load_client client(daemon_->port(), 1s);
  ASSERT_TRUE(client.add(session_kind::command_trickle)) << "socket: " << std::strerror(errno);
  const auto start = steady::now();
  client.run(start + session_timeout + 10s, [] { return false; });
  expect_cut_off(client.sessions().front());
}

}  // namespace
