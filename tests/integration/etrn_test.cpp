// etrn_test.cpp — ETRN on the SMTP port with the real client: fetchmail in
// ETRN mode (and smtp_probe for exact replies) asks flushgated to start the
// queue of a customer whose mail is held; the mail goes out over the route
// the ISP configured (a private Postfix on 127.0.0.3), never back to the
// address that asked.
//
// Covers PROTOCOLS.md §1 (RFC 1985: "ETRN domain", "@domain", "#queue";
// 250/251/253 with the RFC texts, 459 for a node the client may not start,
// 500 with no argument, 501 for a bad name, 503 inside a transaction; the
// flush runs on another connection) and FETCHMAIL.md d2 (one-line replies;
// 251 makes fetchmail stop, so it is opt-in: etrn_report_empty), invariant
// 5 of ARCHITECTURE.md (ETRN never moves mail anywhere new) and the
// etrn_min_interval rate limit.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/smtp_probe.hpp"
#include "tests/support/wait.hpp"

#include <Poco/Base64Decoder.h>
#include <Poco/Base64Encoder.h>
#include <Poco/DigestEngine.h>
#include <Poco/HMACEngine.h>
#include <Poco/MD5Engine.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

constexpr const char* route_host = "127.0.0.3";  // the customer's server: not the client's address
constexpr const char* beta_password = "beta-secret-1";

// ------------------------------------------------------------ helpers


// Success when `r` is exactly the one-line reply `want` ("253 OK, ...").
::testing::AssertionResult reply_line_is(const probe_result& r, const std::string& want) {
  if (!r || r->raw != want + "\r\n") {
    return ::testing::AssertionFailure()
           << "got \"" << (r ? r->raw : describe(r)) << "\", want \"" << want
           << "\\r\\n\" (one line: fetchmail reads one per ETRN)";
  }
  return ::testing::AssertionSuccess();
}

// A listening socket nobody should ever connect to: it counts the
// connections waiting in its backlog (a connection the peer already closed
// is still there to be accepted).
class canary_listener {
 public:
  canary_listener(const std::string& host, std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    ::inet_pton(AF_INET, host.c_str(), &address.sin_addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(fd_, 16) != 0) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = -1;
    }
  }
  ~canary_listener() {
    if (fd_ >= 0) ::close(fd_);
  }
  canary_listener(const canary_listener&) = delete;
  canary_listener& operator=(const canary_listener&) = delete;

  bool listening() const noexcept { return fd_ >= 0; }
  // Connections made to it so far.
  int connections() {
    for (int i = 0; fd_ >= 0 && i < 64; ++i) {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) break;
      ::close(c);
      ++accepted_;
    }
    return accepted_;
  }

 private:
  int fd_ = -1;
  int accepted_ = 0;
};

struct fetchmail_result {
  int exit_code = -1;
  bool timed_out = false;
  std::string output;  // the -v transcript
};

std::string describe(const fetchmail_result& r) {
  return "fetchmail exit " + std::to_string(r.exit_code) +
         (r.timed_out ? " (killed at the deadline)" : "") + "; its transcript:\n" + r.output;
}

// ------------------------------------------------------------ the fixture

class Etrn : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { postfix_.reset(); }

  void SetUp() override { tag_ = ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

  // The daemon with acme (a.test, b.test; ETRN allowed from 127.0.0.1),
  // beta (beta.test; ETRN only after a login) and dyn (dyn.test, ODMR).
  void start_daemon(daemon_fixture::settings overrides) {
    daemon_.emplace(std::move(overrides));
    daemon_->start();
    const std::string route = std::string(route_host) + ":" + std::to_string(receiver().port());
    add_customer(
        "acme",
        {"--domain", "b.test", "--mode", "hold", "--route", route, "--etrn-net", "127.0.0.1/32"},
        "a.test");
    add_customer("beta", {"--mode", "hold", "--route", route}, "beta.test");
    add_customer("dyn", {"--mode", "odmr", "--etrn-net", "127.0.0.1/32"}, "dyn.test");
    auto set = run_command({daemon_fixture::cli_path().string(), "--config",
                            daemon_->config_path().string(), "customer", "passwd", "beta"},
                           15s, std::string(beta_password) + "\n");
    ASSERT_EQ(set.exit_code, 0) << "customer passwd beta: got exit " << set.exit_code << " ("
                                << set.stderr_text << "), want 0";
  }

  void add_customer(const std::string& name, const std::vector<std::string>& options,
                    const std::string& domain) {
    auto added = daemon_->add_customer(name, domain, options);
    ASSERT_EQ(added.exit_code, 0) << "customer add " << name << ": got exit " << added.exit_code
                                  << " (" << added.err << "), want 0";
  }

  // The customers' own mail server on 127.0.0.3 (one per test program; each
  // test tells its messages apart by their Subject).
  static postfix_instance& receiver() {
    if (!postfix_) {
      auto p = std::make_unique<postfix_instance>(postfix_instance::final_destination(
          {"a.test", "b.test", "beta.test"},
          std::string(route_host) + ":" + std::to_string(free_port_on(route_host))));
      p->start();
      postfix_ = std::move(p);
    }
    return *postfix_;
  }

  void queue_mail(const std::string& rcpt) {
    const std::string subject = tag_ + "-" + std::to_string(++queued_);
    auto s = submit(daemon_->port(), "alice@sender.test", {{rcpt, ""}},
                    test_message(subject, rcpt, "held until ETRN\r\n"));
    EXPECT_TRUE(s.error.empty()) << "submit to " << rcpt << ": " << s.error;
  }

  // This test's messages in the receiver's Maildir.
  std::size_t delivered() const {
    std::size_t n = 0;
    for (const auto& file : postfix_->message_files()) {
      for (const auto& subject : field_values(read_file(file), "Subject")) {
        if (subject.starts_with(tag_ + "-")) ++n;
      }
    }
    return n;
  }
  bool wait_delivered(std::size_t count, std::chrono::milliseconds timeout = 20s) const {
    return wait_until([&] { return delivered() >= count; }, timeout, 50ms) && delivered() == count;
  }

  // fetchmail in ETRN mode against the SMTP port for `domains`.
  fetchmail_result fetch(const std::string& domains) {
    const auto home = daemon_->dir() / ("fetchmail-" + std::to_string(++homes_));
    std::filesystem::create_directories(home);
    const auto rc = home / "rc";
    {
      std::ofstream out(rc, std::ios::trunc);
      out << "set no bouncemail\nset no syslog\n"
          << "poll 127.0.0.1 protocol ETRN port " << daemon_->port() << " timeout 30\n"
          << "    fetchdomains " << domains << "\n";
    }
    std::filesystem::permissions(
        rc, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    spawn_options options;
    options.env = {"FETCHMAILHOME=" + home.string()};
    options.stdout_path = home / "transcript";
    options.stderr_path = home / "transcript";
    // As root fetchmail keeps its lock in /var/run unless told otherwise.
    process p({"fetchmail", "-f", rc.string(), "--pidfile", (home / "fetchmail.pid").string(),
               "--nodetach", "--nosyslog", "-v"},
              options);
    fetchmail_result r;
    if (auto status = p.wait_for_exit(60s)) {
      r.exit_code = *status;
    } else {
      r.timed_out = true;
      r.exit_code = p.kill();
    }
    r.output = read_file(home / "transcript");
    return r;
  }

  // The ETRN commands for `node` the daemon counted the queue for (one log
  // line each; a rate-limited one logs a second line, a refused one another).
  std::size_t etrns_logged(const std::string& node) const {
    return log_lines(*daemon_, {": ETRN " + node + " from ", " messages waiting"}).size();
  }
  std::size_t flushes_started(const std::string& customer) const {
    return log_lines(*daemon_, {"customer " + customer + ": flush started (etrn)"}).size();
  }

  static inline std::unique_ptr<postfix_instance> postfix_;
  std::optional<daemon_fixture> daemon_;
  std::string tag_;
  int queued_ = 0;
  int homes_ = 0;
};

#define NEEDS_POSTFIX()                                                                          \
  if (!postfix_instance::available()) {                                                          \
    GTEST_SKIP() << "needs root and Postfix (/usr/sbin/postfix) for the customer's mail server"; \
  }
#define NEEDS_FETCHMAIL()                                                        \
  if (!program_available("fetchmail")) {                                         \
    GTEST_SKIP() << "fetchmail is not installed (the ETRN client under test)";   \
  }

// ------------------------------------------------------------ fetchmail

TEST_F(Etrn, FetchmailStartsTheFlushOverTheCustomersRouteOnly) {
  NEEDS_POSTFIX();
  NEEDS_FETCHMAIL();
  start_daemon({});
  // Where a confused gateway would go: the asking address, at the route's port and at 25.
  canary_listener same_port("127.0.0.1", receiver().port());
  canary_listener smtp_port("127.0.0.1", 25);
  ASSERT_TRUE(same_port.listening()) << "cannot listen on 127.0.0.1:" << receiver().port();
  queue_mail("bob@a.test");
  queue_mail("carol@a.test");
  queue_mail("dave@b.test");

  auto r = fetch("a.test,b.test");
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.output.find("ETRN a.test"), std::string::npos) << describe(r);
  EXPECT_NE(r.output.find("ETRN b.test"), std::string::npos)
      << "want fetchmail to go on to b.test; " << describe(r);
  EXPECT_NE(r.output.find("253 OK, 3 pending messages for node a.test started"), std::string::npos)
      << describe(r);
  EXPECT_TRUE(wait_delivered(3)) << "got " << delivered()
                                 << " at the customer's route, want 3; log:\n"
                                 << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  EXPECT_EQ(same_port.connections(), 0)
      << "got a connection to the ETRN client's address, want none";
  EXPECT_EQ(smtp_port.connections(), 0)
      << "got a connection to the ETRN client's port 25, want none";
  EXPECT_FALSE(
      log_lines(*daemon_, {"customer acme: flush started (etrn) over", route_host}).empty())
      << "log:\n"
      << daemon_->log_text();
}

TEST_F(Etrn, FetchmailGoesOnThroughEveryDomainWhenNothingWaits) {
  NEEDS_POSTFIX();
  NEEDS_FETCHMAIL();
  start_daemon({});
  auto r = fetch("a.test,b.test");
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.output.find("250 OK, queuing for node a.test started"), std::string::npos)
      << describe(r);
  EXPECT_NE(r.output.find("250 OK, queuing for node b.test started"), std::string::npos)
      << describe(r);
  EXPECT_EQ(etrns_logged("a.test"), 1u) << daemon_->log_text();
  EXPECT_EQ(etrns_logged("b.test"), 1u) << daemon_->log_text();
}

TEST_F(Etrn, FetchmailStopsAtThe251WhenReportEmptyIsOn) {
  NEEDS_POSTFIX();
  NEEDS_FETCHMAIL();
  start_daemon({{"etrn_report_empty", "yes"}});
  auto r = fetch("a.test,b.test");
  EXPECT_EQ(r.exit_code, 0) << "FETCHMAIL.md: 251 → exit 0; " << describe(r);
  EXPECT_NE(r.output.find("251 OK, no messages waiting for node a.test"), std::string::npos)
      << describe(r);
  // fetchmail sends no further ETRN after a 251 (FETCHMAIL.md d2).
  EXPECT_EQ(etrns_logged("a.test"), 1u) << daemon_->log_text();
  EXPECT_EQ(etrns_logged("b.test"), 0u)
      << "got b.test asked after a 251, want fetchmail to stop; " << describe(r);
}

// ------------------------------------------------------------ replies

TEST_F(Etrn, AtDomainAndHashQueueFormsStartTheFlush) {
  NEEDS_POSTFIX();
  start_daemon({{"etrn_min_interval", "0s"}});
  canary_listener same_port("127.0.0.1", receiver().port());
  queue_mail("bob@a.test");
  queue_mail("dave@b.test");

  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  // RFC 1985 §5.3: "@a.test" is a.test and every domain below it.
  EXPECT_TRUE(reply_line_is(probe.command("ETRN @a.test"),
                            "253 OK, 2 pending messages for node @a.test started"));
  EXPECT_TRUE(wait_delivered(2)) << "got " << delivered() << ", want 2; log:\n"
                                 << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));

  queue_mail("carol@b.test");
  EXPECT_TRUE(reply_line_is(probe.command("ETRN #acme"),
                            "253 OK, 1 pending messages for node #acme started"));
  EXPECT_TRUE(wait_delivered(3)) << "got " << delivered() << ", want 3; log:\n"
                                 << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  EXPECT_TRUE(
      reply_line_is(probe.command("ETRN B.TEST"), "250 OK, queuing for node b.test started"));
  EXPECT_EQ(same_port.connections(), 0)
      << "got a connection to the ETRN client's address, want none";
}

TEST_F(Etrn, NodesTheClientMayNotStartAre459) {
  NEEDS_POSTFIX();
  start_daemon({});
  queue_mail("bob@beta.test");

  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  // beta has no ETRN network and no link: only its login could start it.
  for (const char* node : {"beta.test", "@beta.test", "#beta", "dyn.test", "unknown.test"}) {
    auto r = probe.command(std::string("ETRN ") + node);
    EXPECT_TRUE(reply_is(r, 459)) << node;
    EXPECT_TRUE(r && r->lines.size() == 1 &&
                r->lines[0].starts_with(std::string("Node ") + node + " not allowed: "))
        << node << ": got \"" << describe(r) << "\", want one line \"459 Node " << node
        << " not allowed: ...\"";
  }
  EXPECT_EQ(flushes_started("beta"), 0u) << daemon_->log_text();
  EXPECT_EQ(queued_for(*daemon_, "beta"), 1u);
  EXPECT_FALSE(wait_until([&] { return delivered() > 0; }, 1s))
      << "got beta's mail delivered after a 459";
}

TEST_F(Etrn, SyntaxAndSequenceErrors) {
  NEEDS_POSTFIX();
  start_daemon({});
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  EXPECT_TRUE(reply_line_is(probe.command("ETRN"), "500 Syntax Error"));
  for (const char* bad : {"ETRN a..test", "ETRN -a.test", "ETRN #bad/name", "ETRN @", "ETRN #",
                          "ETRN a.test b.test"}) {
    EXPECT_TRUE(reply_line_is(probe.command(bad), "501 Syntax Error in Parameters")) << bad;
  }
  // RFC 1985 §5: not between MAIL and the end of DATA.
  ASSERT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test>"), 250));
  auto inside = probe.command("ETRN a.test");
  EXPECT_TRUE(reply_is(inside, 503));
  EXPECT_TRUE(inside && inside->lines.size() == 1) << describe(inside);
  // The transaction was left as it was.
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<bob@a.test>"), 250));
  EXPECT_TRUE(reply_is(probe.command("RSET"), 250));
  EXPECT_TRUE(
      reply_line_is(probe.command("ETRN a.test"), "250 OK, queuing for node a.test started"));
}

TEST_F(Etrn, CramMd5LoginAsTheCustomerAllowsEtrn) {
  NEEDS_POSTFIX();
  start_daemon({});
  canary_listener same_port("127.0.0.1", receiver().port());
  queue_mail("bob@beta.test");
  queue_mail("carol@beta.test");

  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  EXPECT_TRUE(reply_is(probe.command("ETRN beta.test"), 459)) << "before the login";
  auto challenge = probe.command("AUTH CRAM-MD5");
  ASSERT_TRUE(reply_is(challenge, 334));
  ASSERT_TRUE(challenge->raw.starts_with("334 ")) << challenge->raw;
  auto login =
      probe.command(cram_md5_response("beta", beta_password, unbase64(challenge->lines.front())));
  ASSERT_TRUE(reply_is(login, 235, "2.7.0"));
  EXPECT_TRUE(reply_line_is(probe.command("ETRN beta.test"),
                            "253 OK, 2 pending messages for node beta.test started"));
  EXPECT_TRUE(wait_delivered(2)) << "got " << delivered() << ", want 2; log:\n"
                                 << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "beta", 0, 10s));
  // The login is beta's: acme's nodes are still judged by acme's rules, and
  // another customer's are refused.
  EXPECT_TRUE(reply_is(probe.command("ETRN dyn.test"), 459));
  EXPECT_EQ(same_port.connections(), 0)
      << "got a connection to the ETRN client's address, want none";
}

TEST_F(Etrn, EtrnsWithinTheMinimumIntervalShareOneLaterFlush) {
  NEEDS_POSTFIX();
  start_daemon({{"etrn_min_interval", "3s"}});
  queue_mail("bob@a.test");
  queue_mail("dave@b.test");

  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  auto first = probe.command("ETRN a.test");
  EXPECT_TRUE(reply_is(first, 253)) << "first";
  EXPECT_TRUE(wait_delivered(2)) << "got " << delivered() << ", want 2; log:\n"
                                 << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));

  // New mail and two more ETRNs within the interval: answered at once, the
  // mail waits, and exactly one flush starts when the interval is over.
  queue_mail("carol@a.test");
  EXPECT_TRUE(reply_line_is(probe.command("ETRN b.test"),
                            "253 OK, 1 pending messages for node b.test started"));
  auto third = probe.command("ETRN a.test");
  EXPECT_TRUE(third && third->code == 253 && third->lines.size() == 1) << "got " << describe(third);
  EXPECT_FALSE(wait_until([&] { return delivered() > 2; }, 1000ms))
      << "got the new message delivered at once, want it held until etrn_min_interval has passed";
  EXPECT_FALSE(log_lines(*daemon_, {"within etrn_min_interval, flush in"}).empty())
      << daemon_->log_text();
  EXPECT_TRUE(wait_until([&] { return delivered() == 3; }, 10s))
      << "got " << delivered() << ", want 3: the deferred flush did not run; log:\n"
      << daemon_->log_text();
  EXPECT_EQ(flushes_started("acme"), 2u) << "want the first flush and one deferred one; log:\n"
                                         << daemon_->log_text();
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
}

}  // namespace
