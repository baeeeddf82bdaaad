// odmr_test.cpp — On-Demand Mail Relay with the real client: fetchmail in
// ODMR mode logs in on flushgated's ODMR port, asks with ATRN, and the held
// mail comes back over the same connection into the customer's own server
// behind fetchmail (a private Postfix, smtp-sink, or a server in this file
// that cuts the line in the middle of a message).
//
// Covers PROTOCOLS.md §2 (RFC 2645: AUTH before ATRN, 450 for any domain
// the customer does not own and then nothing sent, 453 for an empty queue,
// 501 for a bad list, 502 for other commands), §3 (RFC 4954: CRAM-MD5 with
// "334 " + challenge, PLAIN only under TLS, the third failure ends the
// session) and FETCHMAIL.md d3-d5 (one-line replies, the esmtpname double
// AUTH, fetchmail's exit statuses, a missing local server keeps the mail
// queued, several messages over implicit TLS without a stall), together
// with invariants 2, 5 and 6 of ARCHITECTURE.md: a recipient leaves the
// queue only after the customer's server said 250, and a connection cut in
// the middle of a message leaves every undelivered recipient queued; and
// invariant 9: while another node holds the customer's delivery lease, ATRN
// gets 450.
#include "queue/sqlite_store.hpp"
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/integration/fetchmail_peer.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/smtp_probe.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <Poco/Base64Decoder.h>
#include <Poco/Base64Encoder.h>
#include <Poco/DigestEngine.h>
#include <Poco/HMACEngine.h>
#include <Poco/MD5Engine.h>
#include <Poco/SHA2Engine.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

namespace {

// How often `needle` occurs in `text`.
std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using namespace flushgate::test;
using namespace std::chrono_literals;

constexpr const char* acme_password = "acme-secret-1";
constexpr const char* other_password = "other-secret-2";
constexpr auto fetchmail_deadline = 60s;  // a stalled relay loop is killed here

// ------------------------------------------------------------ SASL helpers


std::string sha256_hex(std::string_view data) {
  Poco::SHA2Engine sha(Poco::SHA2Engine::SHA_256);
  sha.update(data.data(), static_cast<unsigned>(data.size()));
  return Poco::DigestEngine::digestToHex(sha.digest());
}

// True when every line of the reply's raw bytes is "NNN text" — one line.
::testing::AssertionResult single_line(const probe_result& r) {
  if (!r) return ::testing::AssertionFailure() << "got " << describe(r) << ", want a reply";
  if (r->lines.size() != 1) {
    return ::testing::AssertionFailure()
           << "got a " << r->lines.size() << "-line reply \"" << r->raw
           << "\", want one line (fetchmail reads one line per step)";
  }
  return ::testing::AssertionSuccess();
}

// ------------------------------------------------------------ fetchmail

// What one ODMR poll of fetchmail is told here (fetchmail_peer.hpp), with
// this file's customer as the default.
struct odmr_poll {
  std::uint16_t port = 0;
  std::string user = "acme";
  std::string password = acme_password;
  std::string domains = "a.test,b.test";  // fetchdomains
  std::string smtphost;                   // "127.0.0.1/PORT": the customer's server
  bool ssl = false;                       // TLS from the first byte, certificate not checked
  bool esmtp_auth = false;                // esmtpname/esmtppassword too: fetchmail logs in twice
};

std::string rc_text(const odmr_poll& p) {
  return fetchmail_rc_text({.port = p.port, .user = p.user, .password = p.password, .domains = p.domains,
                            .smtphost = p.smtphost, .ssl = p.ssl, .esmtp_auth = p.esmtp_auth});
}

// ------------------------------------------------------------ a server that cuts the line

// The customer's server for one connection: it takes `keep` messages (250),
// answers DATA of the next one with 354 and closes the connection after
// `cut_after` octets of its content.
class cutting_server {
 public:
  cutting_server(std::size_t keep, std::size_t cut_after) : keep_(keep), cut_after_(cut_after) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = 0;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (listen_fd_ < 0 ||
        ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listen_fd_, 4) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("cutting_server: cannot listen on 127.0.0.1");
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~cutting_server() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  cutting_server(const cutting_server&) = delete;
  cutting_server& operator=(const cutting_server&) = delete;

  std::uint16_t port() const noexcept { return port_; }
  // Contents of the messages answered with 250 (LF line ends, still dot-stuffed).
  std::vector<std::string> accepted() const {
    std::lock_guard lock(mutex_);
    return accepted_;
  }
  // True once the connection was cut inside a message.
  bool cut() const noexcept { return cut_; }

 private:
  using clock = std::chrono::steady_clock;

  // Waits for `fd` to become readable in short steps (so that the destructor
  // is never kept waiting); false at the deadline or when stopped.
  bool readable(int fd, clock::time_point deadline) {
    while (!stop_ && clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) return true;
    }
    return false;
  }

  void say(int fd, std::string_view text) {
    while (!text.empty()) {
      auto n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      text.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  void serve() {
    const auto deadline = clock::now() + 60s;
    if (!readable(listen_fd_, deadline)) return;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    say(fd, "220 cut.test ESMTP\r\n");
    std::string in;
    bool in_data = false;
    std::string message;
    std::size_t data_octets = 0;
    while (readable(fd, deadline)) {
      char chunk[4096];
      auto n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) break;
      in.append(chunk, static_cast<std::size_t>(n));
      for (auto eol = in.find("\r\n"); eol != std::string::npos; eol = in.find("\r\n")) {
        const std::string line = in.substr(0, eol);
        in.erase(0, eol + 2);
        if (in_data) {
          data_octets += line.size() + 2;
          if (accepted().size() == keep_ && data_octets >= cut_after_) {
            cut_ = true;  // in the middle of the message: drop the line
            ::close(fd);
            return;
          }
          if (line == ".") {
            in_data = false;
            {
              std::lock_guard lock(mutex_);
              accepted_.push_back(message);
            }
            say(fd, "250 2.0.0 accepted\r\n");
          } else {
            message += line + "\n";
          }
          continue;
        }
        std::string verb = line.substr(0, 4);
        for (char& c : verb) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (verb == "EHLO" || verb == "HELO") {
          say(fd, "250 cut.test\r\n");
        } else if (verb == "MAIL" || verb == "RCPT" || verb == "RSET" || verb == "NOOP") {
          say(fd, "250 2.0.0 ok\r\n");
        } else if (verb == "DATA") {
          in_data = true;
          message.clear();
          data_octets = 0;
          say(fd, "354 go ahead\r\n");
        } else if (verb == "QUIT") {
          say(fd, "221 2.0.0 bye\r\n");
          break;
        } else {
          say(fd, "502 5.5.1 not here\r\n");
        }
      }
    }
    ::close(fd);
  }

  std::size_t keep_;
  std::size_t cut_after_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  mutable std::mutex mutex_;
  std::vector<std::string> accepted_;
  std::thread thread_;
};

// ------------------------------------------------------------ an ODMR client with STARTTLS

// Speaks plaintext, then TLS after STARTTLS; every operation runs the
// io_context for at most 10 s.
class tls_odmr_client {
 public:
  tls_odmr_client() : context_(asio::ssl::context::tls_client) {
    context_.set_verify_mode(asio::ssl::verify_none);  // self-signed: the protocol is under test
  }

  error_code connect(std::uint16_t port) {
    const tcp::endpoint server(asio::ip::make_address("127.0.0.1"), port);
    return run([&](auto done) { socket_.async_connect(server, done); });
  }

  // Reads one (possibly multi-line) reply from whichever layer is active.
  probe_result read_reply() {
    probe_reply reply;
    for (;;) {
      if (buffer_.find("\r\n") == std::string::npos) {
        auto ec = run([&](auto done) {
          if (tls_) {
            asio::async_read_until(*tls_, asio::dynamic_buffer(buffer_), "\r\n", done);
          } else {
            asio::async_read_until(socket_, asio::dynamic_buffer(buffer_), "\r\n", done);
          }
        });
        if (ec) return ec;
      }
      const std::size_t n = buffer_.find("\r\n") + 2;
      const std::string line = buffer_.substr(0, n);
      buffer_.erase(0, n);
      if (line.size() < 5 || !std::isdigit(static_cast<unsigned char>(line[0])) ||
          (line.size() > 5 && line[3] != ' ' && line[3] != '-')) {
        return make_error_code(probe_errc::bad_reply);
      }
      reply.code = std::stoi(line.substr(0, 3));
      reply.raw += line;
      reply.lines.push_back(line.size() > 6 ? line.substr(4, line.size() - 6) : "");
      if (line.size() == 5 || line[3] == ' ') return reply;
    }
  }

  probe_result command(std::string_view line) {
    const std::string bytes = std::string(line) + "\r\n";
    auto ec = run([&](auto done) {
      if (tls_) {
        asio::async_write(*tls_, asio::buffer(bytes), done);
      } else {
        asio::async_write(socket_, asio::buffer(bytes), done);
      }
    });
    if (ec) return ec;
    return read_reply();
  }

  // The TLS handshake after "220" to STARTTLS.
  error_code start_tls() {
    if (!buffer_.empty()) return make_error_code(probe_errc::bad_reply);  // nothing may follow 220
    tls_.emplace(socket_, context_);
    return run([&](auto done) { tls_->async_handshake(asio::ssl::stream_base::client, done); });
  }

 private:
  template <class Start>
  error_code run(Start start) {
    std::optional<error_code> result;
    start([&result](const error_code& ec, auto&&...) { result = ec; });
    io_.restart();
    io_.run_for(10s);
    if (result) return *result;
    error_code ignored;
    socket_.close(ignored);  // aborts the operation
    io_.restart();
    io_.run_for(2s);
    return asio::error::timed_out;
  }

  asio::io_context io_;
  asio::ssl::context context_;
  tcp::socket socket_{io_};
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
  std::string buffer_;
};

// ------------------------------------------------------------ the fixture

class Odmr : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!program_available("openssl")) return;
    suite_dir_ = std::make_unique<temp_dir>("flushgate-odmr");
    try {
      cert_ = make_self_signed(suite_dir_->path(), "gw.test");
    } catch (const std::exception& e) {
      cert_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    postfix_.reset();
    suite_dir_.reset();
  }

  void SetUp() override {
    if (!program_available("openssl")) GTEST_SKIP() << "openssl is not installed";
    ASSERT_TRUE(cert_error_.empty()) << cert_error_;
    odmr_port_ = free_port();
    do {
      odmrs_port_ = free_port();
    } while (odmrs_port_ == odmr_port_);
    daemon_.emplace(daemon_fixture::settings{
        {"odmr_listen", "127.0.0.1:" + std::to_string(odmr_port_)},
        {"odmrs_listen", "127.0.0.1:" + std::to_string(odmrs_port_)},
        {"smtpd_tls_cert_file", cert_.cert.string()},
        {"smtpd_tls_key_file", cert_.key.string()},
    });
    daemon_->start();
    // Bound (a listening socket refuses another bind), without opening a session.
    ASSERT_TRUE(wait_until(
        [&] {
          return !tcp_port_free("127.0.0.1", odmr_port_) &&
                 !tcp_port_free("127.0.0.1", odmrs_port_);
        },
        10s))
        << "got no ODMR listeners on ports " << odmr_port_ << " and " << odmrs_port_
        << ", want both; log:\n"
        << daemon_->log_text();
    add_customer("acme", {"a.test", "b.test"}, acme_password);
    add_customer("other", {"c.test"}, other_password);
    tag_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }

  void add_customer(const std::string& name, const std::vector<std::string>& domains,
                    const std::string& password) {
    std::vector<std::string> extra;
    for (std::size_t i = 1; i < domains.size(); ++i) {
      extra.insert(extra.end(), {"--domain", domains[i]});
    }
    extra.insert(extra.end(), {"--mode", "odmr"});
    auto added = daemon_->add_customer(name, domains.front(), extra);
    ASSERT_EQ(added.exit_code, 0) << "customer add " << name << ": got exit " << added.exit_code
                                  << " (" << added.err << "), want 0";
    auto set = run_command({daemon_fixture::cli_path().string(), "--config",
                            daemon_->config_path().string(), "customer", "passwd", name},
                           15s, password + "\n");
    ASSERT_EQ(set.exit_code, 0) << "customer passwd " << name << ": got exit " << set.exit_code
                                << " (" << set.stderr_text << "), want 0";
  }

  // The customer's own mail server for a.test, b.test and c.test (one per
  // test program; each test tells its messages apart by their Subject).
  static postfix_instance& receiver() {
    if (!postfix_) {
      auto p = std::make_unique<postfix_instance>(postfix_instance::final_destination(
          {"a.test", "b.test", "c.test"},
          "127.0.0.1:" + std::to_string(free_port_on("127.0.0.1"))));
      p->start();
      postfix_ = std::move(p);
    }
    return *postfix_;
  }
  static std::string receiver_smtphost() {
    return "127.0.0.1/" + std::to_string(receiver().port());
  }

  // Queues one message for `rcpts` with Subject "<test name>-<n>"; its content.
  std::string queue_mail(const std::vector<std::string>& rcpts,
                         std::string_view body = "held for ODMR\r\n") {
    const std::string subject = tag_ + "-" + std::to_string(++queued_);
    std::string content = test_message(subject, rcpts.front(), body);
    std::vector<rcpt_spec> to;
    for (const auto& r : rcpts) to.push_back({r, ""});
    auto s = submit(daemon_->port(), "alice@sender.test", to, content);
    EXPECT_TRUE(s.error.empty()) << "submit to " << rcpts.front() << ": " << s.error;
    sent_[subject] = content;
    last_qid_ = s.qid;
    return content;
  }
  std::string queue_mail(const std::string& rcpt, std::string_view body = "held for ODMR\r\n") {
    return queue_mail(std::vector<std::string>{rcpt}, body);
  }

  // This test's messages in the receiver's Maildir, by Subject (file texts).
  std::multimap<std::string, std::string> delivered() const {
    std::multimap<std::string, std::string> out;
    if (!postfix_) return out;
    for (const auto& file : postfix_->message_files()) {
      std::string text = read_file(file);
      for (const auto& subject : field_values(text, "Subject")) {
        if (subject.starts_with(tag_ + "-")) out.emplace(subject, text);
      }
    }
    return out;
  }
  bool wait_delivered(std::size_t count, std::chrono::milliseconds timeout = 20s) const {
    return wait_until([&] { return delivered().size() >= count; }, timeout, 50ms) &&
           delivered().size() == count;
  }

  fetchmail_result fetch(odmr_poll poll) {
    if (poll.port == 0) poll.port = poll.ssl ? odmrs_port_ : odmr_port_;
    if (poll.smtphost.empty()) poll.smtphost = receiver_smtphost();
    fetchmail_run run(home(), rc_text(poll));
    return run.wait(fetchmail_deadline);
  }
  // A fresh FETCHMAILHOME.
  std::filesystem::path home() {
    return daemon_->dir() / ("fetchmail-" + std::to_string(++homes_));
  }

  // Every ODMR session that was opened has ended (its delivery recorded).
  bool wait_sessions_closed(std::chrono::milliseconds timeout = 20s) const {
    return wait_until(
        [&] {
          return log_lines(*daemon_, {"odmr session", ": connect from"}).size() ==
                 log_lines(*daemon_, {"odmr session", ": disconnect from"}).size();
        },
        timeout, 50ms);
  }

  // Connects a probe to the plain ODMR port and says EHLO.
  ::testing::AssertionResult open_odmr(smtp_probe& probe) {
    return open_session(probe, odmr_port_, "vm");
  }

  // AUTH CRAM-MD5 on `probe`; the final reply.
  static probe_result cram_md5(smtp_probe& probe, const std::string& user,
                               const std::string& secret) {
    auto challenge = probe.command("AUTH CRAM-MD5");
    if (!challenge || challenge->code != 334) return challenge;
    return probe.command(cram_md5_response(user, secret, unbase64(challenge->lines.front())));
  }

  static inline std::unique_ptr<temp_dir> suite_dir_;
  static inline certificate_files cert_;
  static inline std::string cert_error_;
  static inline std::unique_ptr<postfix_instance> postfix_;

  std::optional<daemon_fixture> daemon_;
  std::uint16_t odmr_port_ = 0;
  std::uint16_t odmrs_port_ = 0;
  std::string tag_;
  int queued_ = 0;
  int homes_ = 0;
  std::map<std::string, std::string> sent_;  // Subject → content as submitted
  std::string last_qid_;                     // of the last message queued
};

#define NEEDS_FETCHMAIL_AND_POSTFIX()                                                       \
  if (!program_available("fetchmail")) GTEST_SKIP() << "fetchmail is not installed";        \
  if (!postfix_instance::available()) {                                                     \
    GTEST_SKIP() << "needs root and Postfix (/usr/sbin/postfix) for the customer's server"; \
  }

// ------------------------------------------------------------ fetchmail pulls

TEST_F(Odmr, FetchmailPullsTheMailOfOneDomain) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  receiver();
  queue_mail("bob@a.test");
  queue_mail("carol@a.test");
  queue_mail("dave@b.test");                                           // not asked for: stays
  queue_mail(std::vector<std::string>{"erin@a.test", "fred@b.test"});  // half of it goes
  const std::string mixed = last_qid_;

  auto r = fetch({.domains = "a.test"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.output.find("ODMR< 250 OK now reversing the connection"), std::string::npos)
      << "got no one-line 250 to ATRN, want one; " << describe(r);
  EXPECT_TRUE(wait_delivered(3)) << "got " << delivered().size()
                                 << " messages at the customer's server, want 3; " << describe(r)
                                 << "\ndaemon log:\n"
                                 << daemon_->log_text();
  EXPECT_TRUE(wait_sessions_closed());
  EXPECT_EQ(queued_for(*daemon_, "acme"), 2u)
      << "want b.test's message and half of the mixed one left queued";
  auto left = recipients_of(*daemon_, mixed);
  ASSERT_EQ(left.size(), 1u) << "want only fred@b.test left of the mixed message";
  EXPECT_EQ(left[0].address, "fred@b.test");
  for (const auto& [subject, text] : delivered()) {
    const auto rcpt = field_values(text, "X-Original-To");  // the envelope recipient, per Postfix
    ASSERT_EQ(rcpt.size(), 1u) << subject;
    EXPECT_TRUE(rcpt[0].ends_with("@a.test"))
        << "got " << subject << " for " << rcpt[0]
        << ", want only a.test's recipients after ATRN a.test";
  }
}

TEST_F(Odmr, TurnedAroundConnectionCarriesXforwardToTheLocalPostfix) {
  // fetchmail relays the turned connection to the customer's local MTA: the
  // EHLO flushgate sees there is that Postfix's, and when it offers XFORWARD
  // (authorized for fetchmail's address) each message names its client.
  NEEDS_FETCHMAIL_AND_POSTFIX();
  auto local = postfix_instance::final_destination(
      {"a.test"}, "127.0.0.1:" + std::to_string(free_port_on("127.0.0.1")));
  local.add_main_cf("smtpd_authorized_xforward_hosts", "127.0.0.1");
  local.start();
  queue_mail("bob@a.test");
  auto r = fetch({.domains = "a.test", .smtphost = "127.0.0.1/" + std::to_string(local.port())});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(wait_until([&] { return local.message_files().size() == 1; }, 20s, 50ms))
      << "got " << local.message_files().size() << " messages at the local Postfix, want 1; "
      << describe(r) << "\ndaemon log:\n" << daemon_->log_text();
  const std::string log = local.log_text();
  EXPECT_NE(log.find("orig_client=unknown[127.0.0.1]"), std::string::npos)
      << "got no orig_client= in the local Postfix's log, want the XFORWARDed client:\n" << log;
  EXPECT_EQ(daemon_->log_text().find("XFORWARD answered"), std::string::npos)
      << "got a refused XFORWARD:\n" << daemon_->log_text();
}

TEST_F(Odmr, FetchmailPullsSeveralDomainsByteForByte) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  receiver();
  // Lines that need dot-stuffing, a lone dot, trailing blanks and tabs.
  const std::string body =
      "first line\r\n.starts with a dot\r\n.\r\n..two dots\r\ntrailing blanks   \r\n\ttab\r\n"
      "a long line " +
      std::string(900, 'x') + "\r\nlast line\r\n";
  queue_mail("bob@a.test", body);
  queue_mail("carol@a.test", body);
  queue_mail("dave@b.test", body);
  queue_mail("erin@b.test", body);

  auto r = fetch({.domains = "a.test,b.test"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(wait_delivered(4)) << "got " << delivered().size()
                                 << " messages at the customer's server, want 4; " << describe(r)
                                 << "\ndaemon log:\n"
                                 << daemon_->log_text();
  EXPECT_TRUE(wait_sessions_closed());
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u) << "want the queue empty after the pull";
  for (const auto& [subject, text] : delivered()) {
    const auto m = split_maildir(text);
    EXPECT_EQ(m.return_path, "<alice@sender.test>") << subject;
    // What Postfix stored below its own lines: our Received:, then the message as sent.
    const auto [ours, rest] = split_first_field(m.rest);
    EXPECT_TRUE(ours.starts_with("Received: from "))
        << "got \"" << ours << "\", want our Received: on top";
    EXPECT_EQ(rest, to_lf(sent_.at(subject)))
        << subject << ": got different content, want it byte for byte";
  }
}

// ------------------------------------------------------------ logins

TEST_F(Odmr, WrongPasswordDeliversNothing) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  receiver();
  queue_mail("bob@a.test");
  queue_mail("dave@b.test");

  auto r = fetch({.password = "not-the-password"});
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.exit_code, 128) << "FETCHMAIL.md: fetchmail exits 128 after 535; " << describe(r);
  EXPECT_NE(r.output.find("535 5.7.8"), std::string::npos)
      << "got no 535, want one; " << describe(r);
  EXPECT_EQ(r.output.find("ODMR> ATRN"), std::string::npos)
      << "got ATRN sent after a failed login; " << describe(r);
  EXPECT_TRUE(wait_sessions_closed());
  EXPECT_EQ(queued_for(*daemon_, "acme"), 2u) << "want both messages still queued";
  EXPECT_TRUE(delivered().empty()) << "got " << delivered().size() << " delivered, want none";
  EXPECT_FALSE(
      log_lines(*daemon_, {"odmr session", "authentication failure 1 from [127.0.0.1]"}).empty())
      << "got no logged login failure, want one; log:\n"
      << daemon_->log_text();
  // The operator (or fail2ban) needs the name that was tried.
  EXPECT_FALSE(log_lines(*daemon_, {"authentication failure 1", "(user \"acme\")"}).empty())
      << "got the failure logged without the user name fetchmail sent, want (user \"acme\"); log:\n"
      << daemon_->log_text();
}

TEST_F(Odmr, ThirdFailedLoginEndsTheSession) {
  smtp_probe probe(15s);  // the server pauses 1 s, 2 s, 3 s after each failure
  ASSERT_TRUE(open_odmr(probe));
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto r = cram_md5(probe, "acme", "wrong-secret");
    EXPECT_TRUE(reply_is(r, 535, "5.7.8")) << "attempt " << attempt;
    EXPECT_TRUE(single_line(r)) << "attempt " << attempt;
  }
  auto closing = probe.read_reply();
  EXPECT_TRUE(reply_is(closing, 421)) << "after the third failure";
  auto after = probe.read_reply();
  EXPECT_FALSE(after.has_value()) << "got " << describe(after) << ", want the connection closed";
  EXPECT_EQ(log_lines(*daemon_, {"odmr session", "authentication failure"}).size(), 3u)
      << "log:\n"
      << daemon_->log_text();
}

// ------------------------------------------------------------ ATRN outcomes

TEST_F(Odmr, DomainNotOwnedRefusesTheWholeRequest) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  receiver();
  queue_mail("bob@a.test");
  queue_mail("frank@c.test");  // other's domain

  auto r = fetch({.domains = "a.test,c.test"});
  EXPECT_EQ(r.exit_code, 4) << "FETCHMAIL.md: 450 → exit 4 (PROTOCOL); " << describe(r);
  EXPECT_NE(r.output.find("ODMR< 450 "), std::string::npos)
      << "got no 450 to ATRN, want one; " << describe(r);
  EXPECT_TRUE(wait_sessions_closed());
  // RFC 2645 §5.2.1: MUST NOT send mail for any domain — the owned one included.
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u) << "want a.test's message still queued";
  EXPECT_EQ(queued_for(*daemon_, "other"), 1u) << "want c.test's message still queued";
  EXPECT_TRUE(delivered().empty()) << "got " << delivered().size() << " delivered, want none";
  EXPECT_FALSE(log_lines(*daemon_, {"refused: c.test is not its domain"}).empty())
      << "log:\n"
      << daemon_->log_text();
}

TEST_F(Odmr, EmptyQueueAnswers453AndFetchmailSucceeds) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  queue_mail("frank@c.test");  // another customer's mail changes nothing for acme

  auto r =
      fetch({.domains = "a.test,b.test", .smtphost = "127.0.0.1/" + std::to_string(free_port())});
  EXPECT_EQ(r.exit_code, 0) << "FETCHMAIL.md: 453 → exit 0; " << describe(r);
  EXPECT_NE(r.output.find("ODMR< 453 You have no mail"), std::string::npos) << describe(r);
  EXPECT_TRUE(wait_sessions_closed());
  EXPECT_EQ(queued_for(*daemon_, "other"), 1u);
}

// ------------------------------------------------------------ TLS

TEST_F(Odmr, ImplicitTlsPortDeliversManyMessagesWithoutStalling) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  receiver();
  for (int i = 0; i < 3; ++i) queue_mail("bob@a.test", "over TLS, first domain\r\n");
  for (int i = 0; i < 3; ++i) queue_mail("dave@b.test", "over TLS, second domain\r\n");

  // FETCHMAIL.md d5: several lines in one TLS record stall fetchmail's relay
  // loop (its timeout does not apply there): the deadline catches a stall.
  fetchmail_run run(home(),
                    rc_text({.port = odmrs_port_, .smtphost = receiver_smtphost(), .ssl = true}));
  auto r = run.wait(40s);
  EXPECT_FALSE(r.timed_out) << "got a stalled session, want the pull done; " << describe(r);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(wait_delivered(6)) << "got " << delivered().size()
                                 << " messages at the customer's server, want 6; " << describe(r)
                                 << "\ndaemon log:\n"
                                 << daemon_->log_text();
  EXPECT_TRUE(wait_sessions_closed());
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
  EXPECT_FALSE(log_lines(*daemon_, {"odmr session", "(TLS port)"}).empty())
      << "got no session on the TLS port, want one; log:\n"
      << daemon_->log_text();
  for (const auto& [subject, text] : delivered()) {
    const auto [ours, rest] = split_first_field(split_maildir(text).rest);
    EXPECT_EQ(rest, to_lf(sent_.at(subject))) << subject << ": got different content over TLS";
  }
}

// ------------------------------------------------------------ failures behind fetchmail

TEST_F(Odmr, MissingLocalServerKeepsEverythingQueued) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  for (int i = 0; i < 3; ++i) queue_mail("bob@a.test");
  const std::vector<std::string> before = queue_ids_of(*daemon_, "acme");
  ASSERT_EQ(before.size(), 3u);

  // Nothing listens at smtphost: fetchmail closes right after our 250.
  auto r = fetch({.smtphost = "127.0.0.1/" + std::to_string(free_port())});
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.exit_code, 2) << "FETCHMAIL.md: exit 2 (SOCKET); " << describe(r);
  EXPECT_NE(r.output.find("ODMR< 250 "), std::string::npos) << describe(r);
  ASSERT_TRUE(wait_sessions_closed()) << "log:\n" << daemon_->log_text();
  EXPECT_EQ(queue_ids_of(*daemon_, "acme"), before) << "want every message still queued";
  EXPECT_EQ(queued_for(*daemon_, "mailer-daemon"), 0u)
      << "got a notice queued, want nothing bounced";
  for (const auto& qid : before) {
    auto rcpts = recipients_of(*daemon_, qid);
    ASSERT_EQ(rcpts.size(), 1u) << qid;
    EXPECT_EQ(rcpts[0].address, "bob@a.test") << qid;
  }

  // Not penalised: the next pull gets it all at once.
  auto again = fetch({.domains = "a.test"});
  EXPECT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_TRUE(wait_delivered(3)) << "got " << delivered().size() << ", want 3; " << describe(again);
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

TEST_F(Odmr, ConnectionCutMidMessageKeepsTheRestForTheNextPull) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  receiver();
  const std::string body = [] {
    std::string b;
    for (int i = 0; i < 100; ++i) b += "line " + std::to_string(i) + " of a message cut in two\r\n";
    return b;
  }();
  for (int i = 0; i < 4; ++i) queue_mail("bob@a.test", body);

  std::string taken_subject;
  {
    // Takes the first message, then drops the line 600 octets into the second.
    cutting_server cutter(1, 600);
    auto r = fetch({.domains = "a.test", .smtphost = "127.0.0.1/" + std::to_string(cutter.port())});
    ASSERT_TRUE(wait_until([&] { return cutter.cut(); }, 10s))
        << "got no cut inside the second message; " << describe(r);
    EXPECT_FALSE(r.timed_out) << describe(r);
    RecordProperty("fetchmail_exit_after_cut", r.exit_code);  // observed: 0
    ASSERT_TRUE(wait_sessions_closed()) << "log:\n" << daemon_->log_text();
    const auto taken = cutter.accepted();
    ASSERT_EQ(taken.size(), 1u);
    auto subjects = field_values(taken.front(), "Subject");
    ASSERT_EQ(subjects.size(), 1u);
    taken_subject = subjects.front();
  }
  EXPECT_EQ(queued_for(*daemon_, "acme"), 3u)
      << "want the cut message and the two not tried still queued; log:\n"
      << daemon_->log_text();
  EXPECT_EQ(queued_for(*daemon_, "mailer-daemon"), 0u)
      << "got a notice queued, want nothing bounced";

  auto again = fetch({.domains = "a.test"});
  EXPECT_EQ(again.exit_code, 0) << describe(again);
  ASSERT_TRUE(wait_delivered(3)) << "got " << delivered().size()
                                 << " at the customer's server, want 3; " << describe(again);
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  std::set<std::string> subjects;
  for (const auto& [subject, text] : delivered()) {
    EXPECT_NE(subject, taken_subject) << "got the message the first server took delivered again";
    EXPECT_TRUE(subjects.insert(subject).second) << "got " << subject << " twice";
  }
}

TEST_F(Odmr, TwoMegabyteMessageArrivesIntact) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  receiver();
  std::string body;
  body.reserve(2'200'000);
  for (int i = 0; body.size() < 2 * 1024 * 1024; ++i) {
    std::string line = (i % 97 == 0 ? "." : "") + std::to_string(i) + " ";
    while (line.size() < 76)
      line += static_cast<char>('A' + (line.size() + static_cast<std::size_t>(i)) % 26);
    body += line + "\r\n";
  }
  const std::string content = queue_mail("bob@a.test", body);
  ASSERT_GE(content.size(), 2u * 1024 * 1024);

  auto r = fetch({.domains = "a.test"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(wait_delivered(1, 30s)) << describe(r) << "\ndaemon log:\n" << daemon_->log_text();
  const auto [ours, rest] = split_first_field(split_maildir(delivered().begin()->second).rest);
  const std::string want = to_lf(content);
  EXPECT_EQ(rest.size(), want.size()) << "got " << rest.size() << " octets, want " << want.size();
  EXPECT_EQ(sha256_hex(rest), sha256_hex(want)) << "got different content";
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

// ------------------------------------------------------------ concurrency

TEST_F(Odmr, TwoFetchmailsAtOnceNeverGetTheSameMessage) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  if (!smtp_sink::available()) GTEST_SKIP() << "smtp-sink is not installed";
  for (int i = 0; i < 3; ++i) queue_mail("bob@a.test");
  // Each fetchmail has its own server; each waits 1 s before answering DATA,
  // so the first pull is still running when the second ATRN arrives.
  smtp_sink first("127.0.0.1", free_port_on("127.0.0.1"), {"-w", "1"});
  smtp_sink second("127.0.0.1", free_port_on("127.0.0.1"), {"-w", "1"});
  first.start();
  second.start();

  const odmr_poll base{.port = odmr_port_, .domains = "a.test"};
  odmr_poll a = base;
  a.smtphost = "127.0.0.1/" + std::to_string(first.port());
  odmr_poll b = base;
  b.smtphost = "127.0.0.1/" + std::to_string(second.port());
  fetchmail_run run_a(home(), rc_text(a));
  fetchmail_run run_b(home(), rc_text(b));
  auto ra = run_a.wait(fetchmail_deadline);
  auto rb = run_b.wait(fetchmail_deadline);
  RecordProperty("fetchmail_exits",
                 std::to_string(ra.exit_code) + "," + std::to_string(rb.exit_code));

  for (const auto* r : {&ra, &rb}) {
    EXPECT_TRUE(r->exit_code == 0 || r->exit_code == 4)
        << "want 0 (250 or 453) or 4 (450); " << describe(*r);
    if (r->exit_code == 4) {
      EXPECT_NE(r->output.find("ODMR< 450 "), std::string::npos) << describe(*r);
    }
  }
  const bool a_pulled = ra.output.find("ODMR< 250 OK now reversing") != std::string::npos;
  const bool b_pulled = rb.output.find("ODMR< 250 OK now reversing") != std::string::npos;
  EXPECT_NE(a_pulled, b_pulled) << "want exactly one of the two sessions turned around";
  EXPECT_TRUE(wait_sessions_closed());
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));

  std::map<std::string, int> seen;
  for (auto* sink : {&first, &second}) {
    for (const auto& dump : sink->dumps()) {
      for (const auto& subject : field_values(dump, "Subject")) ++seen[subject];
    }
  }
  EXPECT_EQ(seen.size(), 3u) << "got " << seen.size() << " distinct messages, want 3";
  for (const auto& [subject, count] : seen)
    EXPECT_EQ(count, 1) << "got " << subject << " " << count << " times";
}

TEST_F(Odmr, EsmtpnameDoubleAuthStillPulls) {
  NEEDS_FETCHMAIL_AND_POSTFIX();
  receiver();
  queue_mail("bob@a.test");
  queue_mail("dave@b.test");

  // FETCHMAIL.md "Double AUTH trap": CRAM-MD5 in the EHLO phase, then the
  // ODMR driver's own AUTH CRAM-MD5 on the same connection.
  auto r = fetch({.esmtp_auth = true});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(count_of(r.output, "235 2.7.0"), 2u) << "want two successful logins; " << describe(r);
  EXPECT_TRUE(wait_delivered(2)) << "got " << delivered().size() << ", want 2; " << describe(r);
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

// ------------------------------------------------------------ protocol details

TEST_F(Odmr, EhloListsAuthAtrnAndStarttls) {
  smtp_probe probe;
  ASSERT_TRUE(probe.connect("127.0.0.1", odmr_port_) == error_code{});
  ASSERT_TRUE(reply_is(probe.read_reply(), 220));
  auto ehlo = probe.command("EHLO vm");  // fetchmail's name need not be a FQDN
  ASSERT_TRUE(reply_is(ehlo, 250));
  auto has = [&](std::string_view text) {
    return std::any_of(ehlo->lines.begin(), ehlo->lines.end(),
                       [&](const std::string& l) { return l == text; });
  };
  EXPECT_TRUE(has("ATRN")) << describe(ehlo);
  EXPECT_TRUE(has("STARTTLS")) << describe(ehlo);
  const auto auth = std::find_if(ehlo->lines.begin(), ehlo->lines.end(),
                                 [](const std::string& l) { return l.starts_with("AUTH "); });
  ASSERT_NE(auth, ehlo->lines.end())
      << "got no AUTH line, want one (RFC 2645 §5.1.1); " << describe(ehlo);
  EXPECT_NE(auth->find("CRAM-MD5"), std::string::npos) << *auth;
  EXPECT_EQ(auth->find("PLAIN"), std::string::npos) << "got PLAIN offered without TLS: " << *auth;
  for (const auto& line : ehlo->lines) {
    EXPECT_FALSE(line.empty())
        << "got a bare \"250\" line, want text (fetchmail needs 4+ characters a line)";
  }
}

// ARCHITECTURE.md invariant 9: while another node holds acme's delivery
// lease (a second store on the daemon's database plays node gw-b), ATRN gets
// the same 450 as while a delivery runs, and nothing is sent; once gw-b lets
// go, the session takes the lease (250) and gives it back when it ends.
TEST_F(Odmr, AtrnWhileAnotherNodeHoldsTheLeaseIs450) {
  queue_mail("bob@a.test");
  auto other = flushgate::queue::sqlite_store::open(daemon_->data_dir().string());
  ASSERT_TRUE(other) << "open the daemon's store: got " << other.error().message();
  auto acme = (*other)->find_customer("acme");
  ASSERT_TRUE(acme);
  auto held = (*other)->take_lease(acme->id, "gw-b", 0, 3600000);
  ASSERT_TRUE(held && held->ours) << "gw-b could not take acme's lease";

  smtp_probe probe;
  ASSERT_TRUE(open_odmr(probe));
  ASSERT_TRUE(reply_is(cram_md5(probe, "acme", acme_password), 235));
  EXPECT_TRUE(reply_is(probe.command("ATRN a.test"), 450)) << "while gw-b holds the lease";
  EXPECT_FALSE(log_lines(*daemon_, {"its delivery is held by node gw-b"}).empty())
      << "log:\n"
      << daemon_->log_text();
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);
  auto leases = (*other)->list_leases();
  ASSERT_TRUE(leases);
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].holder, "gw-b") << "the refused session touched gw-b's lease";

  ASSERT_FALSE((*other)->release_lease(acme->id, "gw-b", held->lease.fence));
  EXPECT_TRUE(reply_is(probe.command("ATRN a.test"), 250)) << "after gw-b let go";
  probe.close();  // hangs up instead of greeting: the mail stays queued
  EXPECT_TRUE(wait_sessions_closed());
  EXPECT_TRUE(wait_until(
      [&] {
        auto l = (*other)->list_leases();
        return l.has_value() && l->empty();
      },
      20s, 50ms))
      << "the ended session kept acme's lease";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);
}

TEST_F(Odmr, AtrnBeforeAuthIs530) {
  smtp_probe probe;
  ASSERT_TRUE(open_odmr(probe));
  auto r = probe.command("ATRN a.test");
  EXPECT_TRUE(reply_is(r, 530));
  EXPECT_TRUE(single_line(r));
  // A failed login does not authenticate either.
  EXPECT_TRUE(reply_is(cram_md5(probe, "acme", "wrong-secret"), 535));
  EXPECT_TRUE(reply_is(probe.command("ATRN a.test"), 530));
}

TEST_F(Odmr, OtherCommandsAre502) {
  smtp_probe probe;
  ASSERT_TRUE(open_odmr(probe));
  for (const char* line : {"XYZZY", "MAIL FROM:<alice@sender.test>", "RCPT TO:<bob@a.test>", "DATA",
                           "ETRN a.test", "VRFY bob"}) {
    auto r = probe.command(line);
    EXPECT_TRUE(reply_is(r, 502)) << line;
    EXPECT_TRUE(single_line(r)) << line;
  }
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
}

TEST_F(Odmr, CramMd5ChallengeKeepsTheSpaceAndLogsIn) {
  smtp_probe probe;
  ASSERT_TRUE(open_odmr(probe));
  auto challenge = probe.command("AUTH CRAM-MD5");
  ASSERT_TRUE(reply_is(challenge, 334));
  EXPECT_TRUE(challenge->raw.starts_with("334 "))
      << "got \"" << challenge->raw << "\", want \"334 \" + base64 (fetchmail needs the space)";
  ASSERT_TRUE(single_line(challenge));
  const std::string decoded = unbase64(challenge->lines.front());
  EXPECT_TRUE(decoded.starts_with("<") && decoded.ends_with(">") &&
              decoded.find('@') != std::string::npos)
      << "got challenge \"" << decoded << "\", want a msg-id (RFC 2195)";
  auto done = probe.command(cram_md5_response("acme", acme_password, decoded));
  EXPECT_TRUE(reply_is(done, 235, "2.7.0"));
  EXPECT_TRUE(single_line(done));
  EXPECT_TRUE(reply_is(probe.command("ATRN a.test,b.test"), 453)) << "nothing is queued";
}

TEST_F(Odmr, AtrnWithABadListIs501) {
  smtp_probe probe;
  ASSERT_TRUE(open_odmr(probe));
  ASSERT_TRUE(reply_is(cram_md5(probe, "acme", acme_password), 235));
  for (const char* line : {"ATRN nodot", "ATRN a.test,nodot", "ATRN a.test,,b.test",
                           "ATRN a.test, b.test", "ATRN a.test,"}) {
    auto r = probe.command(line);
    EXPECT_TRUE(reply_is(r, 501)) << line;
    EXPECT_TRUE(single_line(r)) << line;
  }
  // The session goes on: a well-formed request is judged on its domains.
  auto refused = probe.command("ATRN a.test,c.test");
  EXPECT_TRUE(reply_is(refused, 450));
  EXPECT_TRUE(single_line(refused));
  EXPECT_TRUE(reply_is(probe.command("ATRN"), 453))
      << "ATRN alone: all of acme's domains, none has mail";
}

TEST_F(Odmr, PlainWithoutTlsIs504) {
  smtp_probe probe;
  ASSERT_TRUE(open_odmr(probe));
  auto plain = probe.command("AUTH PLAIN " + base64(std::string("\0acme\0", 6) + acme_password));
  EXPECT_TRUE(reply_is(plain, 504));
  EXPECT_TRUE(single_line(plain));
  EXPECT_TRUE(reply_is(probe.command("AUTH LOGIN"), 504));
  EXPECT_TRUE(reply_is(probe.command("ATRN a.test"), 530)) << "still not logged in";
}

TEST_F(Odmr, StarttlsThenPlainLogsIn) {
  tls_odmr_client client;
  ASSERT_EQ(client.connect(odmr_port_), error_code{});
  ASSERT_TRUE(reply_is(client.read_reply(), 220));
  ASSERT_TRUE(reply_is(client.command("EHLO vm"), 250));
  ASSERT_TRUE(reply_is(client.command("STARTTLS"), 220));
  ASSERT_EQ(client.start_tls(), error_code{});
  auto ehlo = client.command("EHLO vm");
  ASSERT_TRUE(reply_is(ehlo, 250));
  const auto auth = std::find_if(ehlo->lines.begin(), ehlo->lines.end(),
                                 [](const std::string& l) { return l.starts_with("AUTH "); });
  ASSERT_NE(auth, ehlo->lines.end()) << describe(ehlo);
  EXPECT_NE(auth->find("PLAIN"), std::string::npos)
      << "got \"" << *auth << "\", want PLAIN under TLS";
  EXPECT_TRUE(std::none_of(ehlo->lines.begin(), ehlo->lines.end(),
                           [](const std::string& l) { return l == "STARTTLS"; }))
      << "got STARTTLS offered again under TLS; " << describe(ehlo);
  auto plain = client.command("AUTH PLAIN " + base64(std::string("\0acme\0", 6) + acme_password));
  EXPECT_TRUE(reply_is(plain, 235, "2.7.0"));
  EXPECT_TRUE(single_line(plain));
  EXPECT_TRUE(reply_is(client.command("ATRN a.test"), 453));
  EXPECT_TRUE(reply_is(client.command("QUIT"), 221));
}

}  // namespace
