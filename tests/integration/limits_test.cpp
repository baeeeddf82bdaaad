// limits_test.cpp — every intake limit at the limit and one past it, on the
// real daemon with small configured values where the default is large.
//
// Covers ARCHITECTURE.md invariant 7 (every input bounded in size and time,
// bad input gets a clear protocol error) and RFC 5321 §4.5.3.1 (command line
// 512, text line 1000, 100 recipients, 452 for too many recipients), RFC 1870
// (SIZE → 552), §4.5.3.2 (timeouts), §6.3 (loop detection by Received count).
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <optional>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

class Limits : public ::testing::Test {
 protected:
  // Starts a daemon with `overrides` and the customer demo.test.
  void start(daemon_fixture::settings overrides) {
    daemon_.emplace(std::move(overrides));
    daemon_->start();
    auto added = daemon_->add_customer("demo", "demo.test", {"--mode", "hold"});
    ASSERT_EQ(added.exit_code, 0) << "customer add: " << added.err;
  }

  std::uint16_t port() const { return daemon_->port(); }

  std::optional<daemon_fixture> daemon_;
};

// Content of exactly `n` octets (CRLFs counted): a header, then lines of at
// most 81 octets.
std::string content_of_size(std::size_t n) {
  std::string s = "Subject: size\r\n\r\n";
  while (s.size() < n) {
    const std::size_t left = n - s.size();
    const std::size_t line = (left == 80 || left >= 82) ? 80 : left;
    s += std::string(line - 2, 'x');
    s += "\r\n";
  }
  return s;
}

std::string seconds_between(steady::time_point a, steady::time_point b) {
  return std::to_string(std::chrono::duration<double>(b - a).count()) + " s";
}

TEST_F(Limits, CommandLineOf512OctetsIsTheLimit) {
  start({});
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, port()));
  const std::string at_limit = "NOOP " + std::string(505, 'a') + "\r\n";
  ASSERT_EQ(at_limit.size(), 512u);
  ASSERT_FALSE(probe.send_raw(at_limit));
  EXPECT_TRUE(reply_is(probe.read_reply(), 250)) << "a 512-octet command line";

  const std::string past_limit = "NOOP " + std::string(506, 'a') + "\r\n";
  ASSERT_EQ(past_limit.size(), 513u);
  ASSERT_FALSE(probe.send_raw(past_limit));
  EXPECT_TRUE(reply_is(probe.read_reply(), 500, "5.5.6")) << "a 513-octet command line";

  // An overlong line whose tail (past octet 512) reads "QUIT": one 500 for
  // the whole line, the tail never runs, the session goes on.
  const std::string with_tail = "NOOP " + std::string(507, 'a') + "QUIT\r\n";
  ASSERT_FALSE(probe.send_raw(with_tail));
  EXPECT_TRUE(reply_is(probe.read_reply(), 500, "5.5.6")) << "an overlong line ending in QUIT";
  EXPECT_TRUE(reply_is(probe.command("NOOP"), 250))
      << "the next command after an overlong line (the tail must not have been run)";

  // Far past the limit, in one write: still one reply.
  ASSERT_FALSE(probe.send_raw("NOOP " + std::string(20000, 'b') + "\r\nNOOP\r\n"));
  EXPECT_TRUE(reply_is(probe.read_reply(), 500, "5.5.6")) << "a 20 kB command line";
  EXPECT_TRUE(reply_is(probe.read_reply(), 250)) << "the NOOP after it";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
}

TEST_F(Limits, TextLineOf1000OctetsIsTheLimit) {
  start({});
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, port()));
  auto at_limit = send_message(probe, "a@sender.test", {"u@demo.test"},
                               make_message({"Subject: line"}, std::string(998, 'x') + "\r\n"));
  EXPECT_TRUE(reply_is(at_limit.reply, 250)) << "a text line of 998 octets + CRLF";
  auto past_limit = send_message(probe, "a@sender.test", {"u@demo.test"},
                                 make_message({"Subject: line"}, std::string(999, 'x') + "\r\n"));
  EXPECT_EQ(past_limit.stopped_at, stage::done);
  EXPECT_TRUE(reply_is(past_limit.reply, 554, "5.6.0")) << "a text line of 999 octets + CRLF";
  // A leading dot is not counted (RFC 5321 §4.5.3.1.6): ".xxx" of 998 octets
  // is sent as 999 octets on the wire.
  auto dotted = send_message(probe, "a@sender.test", {"u@demo.test"},
                             make_message({"Subject: line"}, "." + std::string(997, 'x') + "\r\n"));
  EXPECT_TRUE(reply_is(dotted.reply, 250)) << "a 998-octet line starting with a dot";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
  EXPECT_EQ(daemon_->queued_messages(), 2u);
}

TEST_F(Limits, MessageSizeLimitAtMailAndAfterData) {
  constexpr std::size_t limit = 102400;
  start({{"message_size_limit", std::to_string(limit)}});
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, port(), ""));
  auto ehlo = probe.command("EHLO client.test");
  ASSERT_TRUE(reply_is(ehlo, 250));
  EXPECT_NE(std::find(ehlo->lines.begin(), ehlo->lines.end(), "SIZE " + std::to_string(limit)),
            ehlo->lines.end())
      << "got EHLO " << describe(ehlo) << ", want SIZE " << limit;

  EXPECT_TRUE(reply_is(probe.command("MAIL FROM:<a@sender.test> SIZE=" + std::to_string(limit)), 250))
      << "SIZE at the limit";
  EXPECT_TRUE(reply_is(probe.command("RSET"), 250));
  EXPECT_TRUE(reply_is(
      probe.command("MAIL FROM:<a@sender.test> SIZE=" + std::to_string(limit + 1)), 552, "5.3.4"))
      << "SIZE one past the limit";

  const std::string at_limit = content_of_size(limit);
  ASSERT_EQ(at_limit.size(), limit);
  auto fits = send_message(probe, "a@sender.test", {"u@demo.test"}, at_limit);
  EXPECT_TRUE(reply_is(fits.reply, 250)) << "content of exactly message_size_limit octets";

  const std::string past_limit = content_of_size(limit + 1);
  ASSERT_EQ(past_limit.size(), limit + 1);
  auto too_big = send_message(probe, "a@sender.test", {"u@demo.test"}, past_limit);
  EXPECT_EQ(too_big.stopped_at, stage::done) << "the size is only known after the dot";
  EXPECT_TRUE(reply_is(too_big.reply, 552, "5.3.4")) << "content one octet past the limit";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
  EXPECT_EQ(daemon_->queued_messages(), 1u);
}

TEST_F(Limits, RecipientLimitGives452AfterTheLast) {
  start({{"smtpd_recipient_limit", "100"}});
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, port()));
  std::string group = "MAIL FROM:<a@sender.test>\r\n";
  for (int i = 1; i <= 101; ++i) group += "RCPT TO:<user" + std::to_string(i) + "@demo.test>\r\n";
  ASSERT_FALSE(probe.send_raw(group));
  EXPECT_TRUE(reply_is(probe.read_reply(), 250)) << "MAIL";
  for (int i = 1; i <= 100; ++i) {
    ASSERT_TRUE(reply_is(probe.read_reply(), 250, "2.1.5")) << "RCPT number " << i;
  }
  EXPECT_TRUE(reply_is(probe.read_reply(), 452, "4.5.3")) << "RCPT number 101";
  ASSERT_TRUE(reply_is(probe.command("DATA"), 354));
  ASSERT_FALSE(probe.send_raw(dot_stuffed(make_message({"Subject: many"}, "hundred\r\n"))));
  auto done = probe.read_reply();
  ASSERT_TRUE(reply_is(done, 250));
  auto ids = queue_ids(*done);
  ASSERT_EQ(ids.size(), 1u);
  auto shown = daemon_->show_message(ids[0]);
  ASSERT_TRUE(shown);
  EXPECT_EQ(shown->getValue<std::uint64_t>("recipient_count"), 100u);
}

// A TCP client on 127.0.0.1:port from a chosen loopback source address that
// reads the first reply line (greeting or refusal).
class loopback_client {
 public:
  loopback_client(const char* source, std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in from{};
    from.sin_family = AF_INET;
    ::inet_pton(AF_INET, source, &from.sin_addr);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
        ::connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
      error_ = errno;
    }
  }
  ~loopback_client() { close(); }
  loopback_client(const loopback_client&) = delete;
  loopback_client& operator=(const loopback_client&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // The first line the server sends (without CRLF), "" on timeout or error.
  std::string first_line(std::chrono::milliseconds timeout = 5000ms) {
    if (error_ != 0) return "connect error " + std::to_string(error_);
    std::string line;
    const auto until = steady::now() + timeout;
    while (line.find("\r\n") == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      pollfd readable{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&readable, 1, static_cast<int>(left.count())) != 1) break;
      char c[512];
      const ssize_t n = ::recv(fd_, c, sizeof c, 0);
      if (n <= 0) break;
      line.append(c, static_cast<std::size_t>(n));
    }
    return line.substr(0, line.find("\r\n"));
  }

 private:
  int fd_ = -1;
  int error_ = 0;
};

TEST_F(Limits, ConnectionLimitsInTotalAndPerClient) {
  start({{"smtpd_max_connections", "3"}, {"smtpd_max_connections_per_client", "2"}});
  loopback_client a1("127.0.0.1", port());
  ASSERT_TRUE(a1.first_line().starts_with("220 ")) << "first connection from 127.0.0.1";
  loopback_client a2("127.0.0.1", port());
  ASSERT_TRUE(a2.first_line().starts_with("220 ")) << "second connection from 127.0.0.1";
  loopback_client a3("127.0.0.1", port());
  const std::string a3_line = a3.first_line();
  EXPECT_TRUE(a3_line.starts_with("421 4.7.0")) << "third connection from 127.0.0.1: got \""
                                                << a3_line << "\", want 421 4.7.0";
  loopback_client b1("127.0.0.2", port());
  const std::string b1_line = b1.first_line();
  ASSERT_TRUE(b1_line.starts_with("220 ")) << "first connection from 127.0.0.2: got \""
                                           << b1_line << "\", want 220 (3 sessions in total)";
  loopback_client c1("127.0.0.3", port());
  const std::string c1_line = c1.first_line();
  EXPECT_TRUE(c1_line.starts_with("421 4.7.0")) << "fourth connection in total: got \"" << c1_line
                                                << "\", want 421 4.7.0";

  // Once a session ends there is room again.
  a1.close();
  std::string last;
  const bool admitted = wait_until(
      [&] {
        loopback_client c2("127.0.0.3", port());
        last = c2.first_line();
        return last.starts_with("220 ");
      },
      10s, 50ms);
  EXPECT_TRUE(admitted) << "after closing one session: got \"" << last << "\", want 220";
}

TEST_F(Limits, IdleClientTimesOutWith421) {
  start({{"smtpd_timeout", "2s"}});
  smtp_probe probe(15s);
  ASSERT_TRUE(open_session(probe, port()));
  const auto idle_since = steady::now();
  auto reply = probe.read_reply();
  const auto waited = steady::now() - idle_since;
  EXPECT_TRUE(reply_is(reply, 421, "4.4.2")) << "an idle client";
  EXPECT_GE(waited, 1500ms) << "got the 421 after " << seconds_between(idle_since, steady::now())
                            << ", want about 2 s";
  EXPECT_LE(waited, 10s) << "got the 421 after " << seconds_between(idle_since, steady::now())
                         << ", want about 2 s";
  auto after = probe.read_reply();
  EXPECT_FALSE(after) << "got " << describe(after) << " after 421, want the connection closed";
}

TEST_F(Limits, StalledDataTimesOutWith421) {
  start({{"smtpd_data_timeout", "2s"}});
  smtp_probe probe(15s);
  ASSERT_TRUE(open_session(probe, port()));
  ASSERT_TRUE(reply_is(probe.command("MAIL FROM:<a@sender.test>"), 250));
  ASSERT_TRUE(reply_is(probe.command("RCPT TO:<u@demo.test>"), 250));
  ASSERT_TRUE(reply_is(probe.command("DATA"), 354));
  ASSERT_FALSE(probe.send_raw("Subject: stalled\r\n\r\nhalf a mess"));
  EXPECT_TRUE(reply_is(probe.read_reply(), 421, "4.4.2")) << "DATA that stalls";
  EXPECT_EQ(daemon_->queued_messages(), 0u);
}

// NOOP every 500 ms keeps the command timeout away; the session deadline
// still ends the session.
TEST_F(Limits, SessionDeadlineEndsABusySession) {
  start({{"smtpd_session_timeout", "3s"}});
  smtp_probe probe(500ms);  // the 500 ms read timeout paces the NOOPs
  const auto connected = steady::now();
  ASSERT_TRUE(open_session(probe, port()));
  probe_result last = probe_reply{};
  int noops = 0;
  while (steady::now() - connected < 15s) {
    if (probe.send_raw("NOOP\r\n")) {
      last = probe.read_reply();  // closed after a 421 we had not read yet
      break;
    }
    last = probe.read_reply();
    if (!last || last->code != 250) break;
    ++noops;
    // Wait up to 500 ms for anything unasked (the 421 may come now).
    last = probe.read_reply();
    if (last || last.error() != make_error_code(probe_errc::timed_out)) break;
  }
  const auto lasted = steady::now() - connected;
  EXPECT_TRUE(reply_is(last, 421, "4.4.2")) << "after " << noops << " NOOPs";
  EXPECT_GE(lasted, 2500ms) << "the session lasted " << seconds_between(connected, steady::now())
                            << ", want about 3 s";
  EXPECT_LE(lasted, 10s) << "the session lasted " << seconds_between(connected, steady::now())
                         << ", want about 3 s";
  EXPECT_GE(noops, 3) << "got " << noops << " NOOPs answered, want the session to work until its end";
}

// smtpd_min_data_rate is judged after 10 s of DATA; a trickle far below it
// is cut off then. Runs about 11 s.
TEST_F(Limits, DataTrickleBelowMinimumRateIsCutOff) {
  start({{"smtpd_min_data_rate", "1000000"}});
  smtp_probe probe(300ms);  // the read timeout paces the trickle
  ASSERT_TRUE(open_session(probe, port()));
  ASSERT_TRUE(reply_is(probe.command("MAIL FROM:<a@sender.test>"), 250));
  ASSERT_TRUE(reply_is(probe.command("RCPT TO:<u@demo.test>"), 250));
  ASSERT_TRUE(reply_is(probe.command("DATA"), 354));
  const auto data_start = steady::now();
  ASSERT_FALSE(probe.send_raw("Subject: trickle\r\n\r\n"));
  probe_result reply = make_error_code(probe_errc::timed_out);
  while (steady::now() - data_start < 20s) {
    if (probe.send_raw("trickle\r\n")) break;  // the server may have closed already
    reply = probe.read_reply();
    if (reply || reply.error() != make_error_code(probe_errc::timed_out)) break;
  }
  if (!reply && reply.error() != make_error_code(probe_errc::timed_out)) {
    reply = probe.read_reply();  // a send failed: the reply may still be buffered
  }
  const auto lasted = steady::now() - data_start;
  EXPECT_TRUE(reply_is(reply, 421, "4.4.2")) << "a DATA trickle of ~30 octets/s";
  EXPECT_GE(lasted, 9s) << "cut off after " << seconds_between(data_start, steady::now())
                        << ", want after the 10 s grace";
  EXPECT_EQ(daemon_->queued_messages(), 0u);
}

TEST_F(Limits, ErrorLimitEndsTheSessionAfterTheLastError) {
  start({{"smtpd_error_limit", "3"}});
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, port()));
  EXPECT_TRUE(reply_is(probe.command("FROB"), 500)) << "error 1";
  EXPECT_TRUE(reply_is(probe.command("FROB"), 500)) << "error 2";
  EXPECT_TRUE(reply_is(probe.command("NOOP"), 250)) << "two errors are below the limit";
  EXPECT_TRUE(reply_is(probe.command("FROB"), 500)) << "error 3";
  // No further command: the 421 follows the third error by itself.
  EXPECT_TRUE(reply_is(probe.read_reply(), 421, "4.7.0")) << "after the third error";
  auto after = probe.read_reply();
  EXPECT_FALSE(after) << "got " << describe(after) << " after 421, want the connection closed";
}

TEST_F(Limits, MaxHopsRefusesTheTenthReceived) {
  start({{"max_hops", "10"}});
  auto with_hops = [](int n) {
    std::vector<std::string> headers;
    for (int i = 0; i < n; ++i) {
      headers.push_back("Received: from hop" + std::to_string(i) +
                        ".test by hop.test; Thu, 1 Jan 2026 00:00:00 +0000");
    }
    headers.push_back("Subject: hops");
    return make_message(headers, "looping?\r\n");
  };
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, port()));
  auto nine = send_message(probe, "a@sender.test", {"u@demo.test"}, with_hops(9));
  EXPECT_TRUE(reply_is(nine.reply, 250)) << "9 Received headers";
  auto ten = send_message(probe, "a@sender.test", {"u@demo.test"}, with_hops(10));
  EXPECT_EQ(ten.stopped_at, stage::done);
  EXPECT_TRUE(reply_is(ten.reply, 554, "5.4.6")) << "10 Received headers";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
  EXPECT_EQ(daemon_->queued_messages(), 1u);
}

}  // namespace
