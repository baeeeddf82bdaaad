// starttls_test.cpp — STARTTLS on the real daemon with a self-signed cert.
//
// Covers PROTOCOLS.md §4 (RFC 3207): STARTTLS offered once a cert is
// configured and never again under TLS, 501 for a parameter, the state reset
// after the handshake (EHLO required again), the ESMTPS Received clause, and
// CVE-2011-0411: plaintext pipelined behind STARTTLS is discarded, never
// executed as if it had come over TLS.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/temp_dir.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using namespace flushgate::test;
using namespace std::chrono_literals;

// A self-signed certificate for gw.test, made once per test program.
struct test_certificate {
  temp_dir dir{"flushgate-tls"};
  std::string cert() const { return (dir.path() / "cert.pem").string(); }
  std::string key() const { return (dir.path() / "key.pem").string(); }
};

// An SMTP client that speaks plaintext first and TLS after STARTTLS; every
// operation runs the io_context under a deadline.
class tls_client {
 public:
  tls_client() : context_(asio::ssl::context::tls_client) {
    context_.set_verify_mode(asio::ssl::verify_none);  // self-signed: we test the protocol
  }

  error_code connect(std::uint16_t port) {
    tcp::endpoint server(asio::ip::make_address("127.0.0.1"), port);
    return run([&](auto done) { socket_.async_connect(server, done); });
  }

  // Writes bytes on the plaintext connection.
  error_code write_plain(std::string_view bytes) {
    return run([&](auto done) { asio::async_write(socket_, asio::buffer(bytes), done); });
  }

  // Reads one reply octet by octet, so that nothing behind it is consumed.
  probe_result read_plain_reply() {
    return read_reply([&](std::string& line) {
      line.clear();
      while (!line.ends_with("\r\n")) {
        char c = 0;
        if (auto ec = run([&](auto done) { asio::async_read(socket_, asio::buffer(&c, 1), done); })) {
          return ec;
        }
        line += c;
      }
      return error_code{};
    });
  }

  // Octets that arrived on the plaintext connection without being asked for
  // (waits up to `wait` for them).
  std::size_t unread_plain_octets(std::chrono::milliseconds wait) {
    char c = 0;
    auto ec = run([&](auto done) { socket_.async_read_some(asio::buffer(&c, 1), done); }, wait);
    return ec ? 0 : 1;
  }

  error_code handshake() {
    tls_.emplace(socket_, context_);
    SSL_set_tlsext_host_name(tls_->native_handle(), "gw.test");
    return run([&](auto done) { tls_->async_handshake(asio::ssl::stream_base::client, done); });
  }

  error_code write_tls(std::string_view bytes) {
    return run([&](auto done) { asio::async_write(*tls_, asio::buffer(bytes), done); });
  }

  probe_result command_tls(std::string_view line) {
    if (auto ec = write_tls(std::string(line) + "\r\n")) return ec;
    return read_tls_reply();
  }

  probe_result read_tls_reply() {
    return read_reply([&](std::string& line) {
      if (tls_buffer_.find("\r\n") == std::string::npos) {
        auto ec = run([&](auto done) {
          asio::async_read_until(*tls_, asio::dynamic_buffer(tls_buffer_), "\r\n", done);
        });
        if (ec) return ec;
      }
      const std::size_t n = tls_buffer_.find("\r\n") + 2;
      line = tls_buffer_.substr(0, n);
      tls_buffer_.erase(0, n);
      return error_code{};
    });
  }

 private:
  // Starts an operation (given its completion handler) and runs the
  // io_context until it completes or `timeout` passes (then cancels it).
  template <class Start>
  error_code run(Start start, std::chrono::milliseconds timeout = 10s) {
    std::optional<error_code> result;
    start([&result](const error_code& ec, auto&&...) { result = ec; });
    io_.restart();
    io_.run_for(timeout);
    if (!result) {
      error_code ignored;
      socket_.cancel(ignored);
      io_.restart();
      io_.run_for(2s);
      return asio::error::timed_out;
    }
    return *result;
  }

  // Assembles one (possibly multi-line) reply from lines given by `next_line`.
  template <class NextLine>
  probe_result read_reply(NextLine next_line) {
    probe_reply reply;
    std::string line;
    for (;;) {
      if (auto ec = next_line(line)) return ec;
      if (line.size() < 5 || (line.size() > 5 && line[3] != ' ' && line[3] != '-')) {
        return make_error_code(probe_errc::bad_reply);
      }
      reply.code = std::stoi(line.substr(0, 3));
      reply.raw += line;
      reply.lines.push_back(line.size() > 6 ? line.substr(4, line.size() - 6) : "");
      if (line.size() == 5 || line[3] == ' ') return reply;
    }
  }

  asio::io_context io_;
  asio::ssl::context context_;
  tcp::socket socket_{io_};
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
  std::string tls_buffer_;
};

bool has_line(const probe_result& r, std::string_view text) {
  return r && std::any_of(r->lines.begin(), r->lines.end(),
                          [&](const std::string& l) { return l == text; });
}

class StartTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!program_available("openssl")) return;
    cert_ = std::make_unique<test_certificate>();
    auto made = run_command({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                             "/CN=gw.test", "-keyout", cert_->key(), "-out", cert_->cert(), "-days",
                             "2"},
                            60s);
    if (made.exit_code != 0) {
      cert_error_ = "openssl req: exit " + std::to_string(made.exit_code) + ": " + made.stderr_text;
    }
  }
  static void TearDownTestSuite() { cert_.reset(); }

  void SetUp() override {
    if (!program_available("openssl")) GTEST_SKIP() << "openssl is not installed";
    ASSERT_TRUE(cert_error_.empty()) << cert_error_;
    daemon_.emplace(daemon_fixture::settings{{"smtpd_tls_cert_file", cert_->cert()},
                                             {"smtpd_tls_key_file", cert_->key()}});
    daemon_->start();
    auto added = daemon_->add_customer("demo", "demo.test", {"--mode", "hold"});
    ASSERT_EQ(added.exit_code, 0) << "customer add: " << added.err;
  }

  // Connects, reads 220, EHLO over plaintext; returns the EHLO reply.
  probe_result plain_ehlo(tls_client& client) {
    if (auto ec = client.connect(daemon_->port())) return ec;
    auto greeting = client.read_plain_reply();
    if (!greeting || greeting->code != 220) return greeting;
    if (auto ec = client.write_plain("EHLO client.test\r\n")) return ec;
    return client.read_plain_reply();
  }

  static inline std::unique_ptr<test_certificate> cert_;
  static inline std::string cert_error_;
  std::optional<daemon_fixture> daemon_;
};

TEST_F(StartTls, EhloOffersStarttlsOnlyBeforeTls) {
  tls_client client;
  auto ehlo = plain_ehlo(client);
  ASSERT_TRUE(reply_is(ehlo, 250));
  EXPECT_TRUE(has_line(ehlo, "STARTTLS")) << "got EHLO " << describe(ehlo) << ", want STARTTLS";
  ASSERT_FALSE(client.write_plain("STARTTLS\r\n"));
  ASSERT_TRUE(reply_is(client.read_plain_reply(), 220));
  ASSERT_FALSE(client.handshake()) << daemon_->log_text();
  auto again = client.command_tls("EHLO client.test");
  ASSERT_TRUE(reply_is(again, 250));
  EXPECT_FALSE(has_line(again, "STARTTLS"))
      << "got EHLO under TLS " << describe(again) << ", want no STARTTLS (RFC 3207 §4.2)";
  EXPECT_TRUE(reply_is(client.command_tls("STARTTLS"), 503)) << "a second STARTTLS under TLS";
  EXPECT_TRUE(reply_is(client.command_tls("NOOP"), 250)) << "the session goes on under TLS";
  EXPECT_TRUE(reply_is(client.command_tls("QUIT"), 221));
}

TEST_F(StartTls, ParameterIsASyntaxError) {
  tls_client client;
  ASSERT_TRUE(reply_is(plain_ehlo(client), 250));
  ASSERT_FALSE(client.write_plain("STARTTLS now\r\n"));
  EXPECT_TRUE(reply_is(client.read_plain_reply(), 501)) << "STARTTLS with a parameter";
  ASSERT_FALSE(client.write_plain("NOOP\r\n"));
  EXPECT_TRUE(reply_is(client.read_plain_reply(), 250)) << "still plaintext, still working";
}

TEST_F(StartTls, TransactionUnderTlsIsStoredAsEsmtps) {
  tls_client client;
  ASSERT_TRUE(reply_is(plain_ehlo(client), 250));
  ASSERT_FALSE(client.write_plain("STARTTLS\r\n"));
  ASSERT_TRUE(reply_is(client.read_plain_reply(), 220));
  ASSERT_FALSE(client.handshake());
  ASSERT_TRUE(reply_is(client.command_tls("EHLO client.test"), 250));
  ASSERT_TRUE(reply_is(client.command_tls("MAIL FROM:<alice@sender.test>"), 250));
  ASSERT_TRUE(reply_is(client.command_tls("RCPT TO:<bob@demo.test>"), 250));
  ASSERT_TRUE(reply_is(client.command_tls("DATA"), 354));
  ASSERT_FALSE(client.write_tls(dot_stuffed(make_message({"Subject: tls"}, "secret\r\n"))));
  EXPECT_TRUE(reply_is(client.read_tls_reply(), 250));
  EXPECT_TRUE(reply_is(client.command_tls("QUIT"), 221));

  ASSERT_EQ(daemon_->stop(), 0) << daemon_->log_text();
  auto stored = daemon_fixture::read_store(daemon_->data_dir());
  ASSERT_TRUE(stored) << stored.error().message();
  ASSERT_EQ(stored->size(), 1u);
  auto [received, rest] = split_received(stored->front().content);
  EXPECT_NE(received.find(" with ESMTPS"), std::string::npos)
      << "got Received \"" << received << "\", want \"with ESMTPS\"";
}

TEST_F(StartTls, SwaksTlsDeliversAsEsmtps) {
  if (!program_available("swaks")) GTEST_SKIP() << "swaks is not installed";
  auto support = run_command({"swaks", "--support"}, 30s);
  if ((support.stdout_text + support.stderr_text).find("TLS supported") == std::string::npos) {
    GTEST_SKIP() << "swaks has no TLS support (needs Debian's libnet-ssleay-perl): "
                 << support.stdout_text << support.stderr_text;
  }
  auto sent = run_command({"swaks", "--server", "127.0.0.1:" + std::to_string(daemon_->port()),
                           "--tls", "--helo", "client.test", "--from", "alice@sender.test", "--to",
                           "bob@demo.test", "--timeout", "20"},
                          60s);
  ASSERT_EQ(sent.exit_code, 0) << "swaks --tls: got exit " << sent.exit_code << ", want 0\n"
                               << sent.stdout_text << sent.stderr_text;
  EXPECT_NE(sent.stdout_text.find("<~  250 2.0.0 Ok: queued as"), std::string::npos)
      << "got no 250 under TLS in the transcript, want one:\n" << sent.stdout_text;
  ASSERT_EQ(daemon_->stop(), 0) << daemon_->log_text();
  auto stored = daemon_fixture::read_store(daemon_->data_dir());
  ASSERT_TRUE(stored) << stored.error().message();
  ASSERT_EQ(stored->size(), 1u);
  auto [received, rest] = split_received(stored->front().content);
  EXPECT_NE(received.find(" with ESMTPS"), std::string::npos)
      << "got Received \"" << received << "\", want \"with ESMTPS\"";
}

// CVE-2011-0411: "STARTTLS\r\nMAIL FROM:<a@x.test>\r\n" in one write. The
// MAIL arrived in plaintext: it must be discarded, never answered, and the
// TLS session must start from the post-greeting state (EHLO required).
TEST_F(StartTls, PlaintextPipelinedBehindStarttlsIsDiscarded) {
  tls_client client;
  ASSERT_TRUE(reply_is(plain_ehlo(client), 250));
  ASSERT_FALSE(client.write_plain("STARTTLS\r\nMAIL FROM:<a@x.test>\r\n"));
  ASSERT_TRUE(reply_is(client.read_plain_reply(), 220, "2.0.0")) << "STARTTLS";
  // The server must now wait for our ClientHello: any plaintext octet here
  // would be a reply to the injected MAIL.
  EXPECT_EQ(client.unread_plain_octets(300ms), 0u)
      << "got plaintext after the 220, want none before the handshake";
  ASSERT_FALSE(client.handshake()) << daemon_->log_text();
  // The first reply under TLS answers our RCPT: 503, EHLO is required again
  // and no MAIL is in effect.
  EXPECT_TRUE(reply_is(client.command_tls("RCPT TO:<b@demo.test>"), 503))
      << "RCPT right after the handshake";
  EXPECT_TRUE(reply_is(client.command_tls("EHLO client.test"), 250));
  EXPECT_TRUE(reply_is(client.command_tls("RCPT TO:<b@demo.test>"), 503, "5.5.1"))
      << "RCPT after EHLO under TLS: the injected MAIL must not be in effect";
  // Every command so far got exactly one reply: QUIT's is the next.
  EXPECT_TRUE(reply_is(client.command_tls("QUIT"), 221));
  EXPECT_NE(daemon_->log_text().find("discarding"), std::string::npos)
      << "got no log line about discarded plaintext, want one";
}

// The stronger injection: EHLO and MAIL behind STARTTLS. Executed after the
// handshake they would make a following RCPT succeed.
TEST_F(StartTls, InjectedEhloAndMailBehindStarttlsAreDiscarded) {
  tls_client client;
  ASSERT_TRUE(reply_is(plain_ehlo(client), 250));
  ASSERT_FALSE(client.write_plain("STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<a@x.test>\r\n"));
  ASSERT_TRUE(reply_is(client.read_plain_reply(), 220, "2.0.0"));
  EXPECT_EQ(client.unread_plain_octets(300ms), 0u)
      << "got plaintext after the 220, want none before the handshake";
  ASSERT_FALSE(client.handshake()) << daemon_->log_text();
  EXPECT_TRUE(reply_is(client.command_tls("RCPT TO:<b@demo.test>"), 503))
      << "RCPT right after the handshake (an injected EHLO+MAIL would make it 250)";
  EXPECT_TRUE(reply_is(client.command_tls("QUIT"), 221));
}

}  // namespace
