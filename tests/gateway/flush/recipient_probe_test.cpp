// recipient_probe_test.cpp — gateway/flush/recipient_probe against a real
// Postfix as the customer's server (postfix_instance, final role, mailboxes
// alice and bob only: RCPT for anyone else gets 550 5.1.1), plus a dead peer
// (a listening socket that never says anything), ports where nothing
// listens, and a Postfix offering STARTTLS. The verdict table is tested
// without a server.
#include "gateway/flush/recipient_probe.hpp"

#include "core/metrics.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace flushgate::gateway {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using test::postfix_instance;

const char* verdict_name(probe_verdict v) { return to_string(v); }

peer_reply make_reply(int code, std::string enhanced) {
  peer_reply r;
  r.code = code;
  r.enhanced = std::move(enhanced);
  r.text = "text";
  return r;
}

TEST(RecipientProbeVerdict, OnlyUserUnknownRefusalsAreBad) {
  struct row {
    int code;
    const char* enhanced;
    probe_verdict want;
  };
  const row rows[] = {
      {250, "2.1.5", probe_verdict::good},    {251, "", probe_verdict::good},
      {550, "5.1.1", probe_verdict::bad},     {550, "", probe_verdict::bad},
      {551, "", probe_verdict::bad},          {553, "", probe_verdict::bad},
      {553, "5.1.3", probe_verdict::bad},     {554, "5.1.10", probe_verdict::bad},
      {550, "5.7.1", probe_verdict::unknown}, {554, "", probe_verdict::unknown},
      {552, "5.2.2", probe_verdict::unknown}, {450, "4.1.1", probe_verdict::unknown},
      {421, "", probe_verdict::unknown},      {0, "", probe_verdict::unknown},
  };
  for (const row& r : rows) {
    const auto got = classify_rcpt_reply(make_reply(r.code, r.enhanced));
    EXPECT_EQ(got, r.want) << r.code << " " << r.enhanced << ": got " << verdict_name(got)
                           << ", want " << verdict_name(r.want);
  }
}

// One Postfix for the suite (starting one takes about two seconds); a test
// that stops its server starts its own.
class RecipientProbe : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    if (!postfix_instance::available()) {
      GTEST_SKIP() << "postfix not installed or not root: no private Postfix instance";
    }
    if (!server_) {
      server_ = start_server();
    }
    log_offset_ = server_->log_text().size();
    resolver_ = std::make_unique<mx_resolver>(io_.get_executor(), mx_options{});
    prober_ = std::make_unique<recipient_prober>(io_, *resolver_, settings());
  }

  void TearDown() override {
    if (prober_) {
      prober_->close_all();
      if (io_.stopped()) io_.restart();
      io_.run_for(200ms);  // lets QUIT go out; the server does not depend on it
    }
    prober_.reset();
    resolver_.reset();
  }

  static std::unique_ptr<postfix_instance> start_server() {
    auto server = std::make_unique<postfix_instance>(postfix_instance::final_destination(
        {"customer.test"}, "127.0.0.1:" + std::to_string(test::free_port()), {"alice", "bob"}));
    server->start();
    return server;
  }

  static probe_settings settings(std::chrono::milliseconds timeout = 5s) {
    probe_settings s;
    s.timeout = timeout;
    s.idle = 30s;
    s.client.helo_name = "gateway.test";
    s.client.tls = tls_policy::none;
    // Every step timeout far beyond the probe's: only the probe's own bound may cut it.
    s.client.greeting_timeout = s.client.helo_timeout = s.client.mail_timeout =
        s.client.rcpt_timeout = s.client.quit_timeout = 60s;
    return s;
  }

  static route host_route(const std::string& host, std::uint16_t port) {
    route r;
    r.k = route::kind::host;
    r.host = host;
    r.port = port;
    return r;
  }

  void make_prober(probe_settings s) {
    prober_ = std::make_unique<recipient_prober>(io_, *resolver_, std::move(s));
  }

  // Runs the io_context until every probe has its result.
  std::vector<probe_result> run_all(
      const std::vector<std::pair<route, std::string>>& asks, std::int64_t customer_id = 1) {
    std::vector<std::optional<probe_result>> got(asks.size());
    std::exception_ptr error;
    for (std::size_t i = 0; i < asks.size(); ++i) {
      asio::co_spawn(io_, prober_->probe(customer_id, asks[i].first, asks[i].second),
                     [&got, &error, i](std::exception_ptr e, probe_result r) {
                       if (e) error = e;
                       got[i] = std::move(r);
                     });
    }
    const auto limit = steady::now() + 60s;
    auto done = [&got] {
      for (const auto& g : got) {
        if (!g) return false;
      }
      return true;
    };
    while (!done() && steady::now() < limit) {
      if (io_.stopped()) io_.restart();  // it stops whenever it runs out of work
      io_.run_one_for(1s);
    }
    if (error) std::rethrow_exception(error);
    std::vector<probe_result> out;
    for (auto& g : got) {
      EXPECT_TRUE(g.has_value()) << "got a probe still running after 60s, want it finished";
      out.push_back(g.value_or(probe_result{probe_verdict::unknown, "did not finish"}));
    }
    return out;
  }

  probe_result run_one(const route& r, const std::string& address, std::int64_t customer_id = 1) {
    return run_all({{r, address}}, customer_id).front();
  }

  route server_route() const { return host_route("127.0.0.1", server_->port()); }

  // What the server logged since the test started.
  std::string new_log() const { return server_->log_text().substr(log_offset_); }
  // The server's log lines since the test started that contain every one of `words`.
  std::vector<std::string> log_lines(const std::vector<std::string>& words) const {
    std::vector<std::string> out;
    const std::string log = new_log();
    std::size_t at = 0;
    while (at < log.size()) {
      const auto eol = std::min(log.find('\n', at), log.size());
      const std::string line = log.substr(at, eol - at);
      if (std::all_of(words.begin(), words.end(),
                      [&line](const std::string& w) { return line.find(w) != std::string::npos; })) {
        out.push_back(line);
      }
      at = eol + 1;
    }
    return out;
  }
  // SMTP sessions that ended, counted by Postfix's "disconnect from ... ehlo=1 ..."
  // (the start script's port check says no EHLO, and its log line may come late).
  std::size_t sessions() const { return log_lines({"disconnect from ", " ehlo="}).size(); }
  // Waits (running the io_context) until the server logged `n` ended sessions
  // and one of them has `counts` among its command counts, e.g. "mail=2 rcpt=1/2".
  bool wait_for_sessions(std::size_t n, const std::string& counts) {
    return test::wait_until(
        [&] {
          if (io_.stopped()) io_.restart();
          io_.poll();
          return sessions() == n && !log_lines({"disconnect from ", counts}).empty();
        },
        20s);
  }

  static inline std::unique_ptr<postfix_instance> server_;
  std::size_t log_offset_ = 0;
  asio::io_context io_;
  std::unique_ptr<mx_resolver> resolver_;
  std::unique_ptr<recipient_prober> prober_;
};

TEST_F(RecipientProbe, KnownUserIsGood) {
  const auto r = run_one(server_route(), "alice@customer.test");
  EXPECT_EQ(r.verdict, probe_verdict::good)
      << "got " << verdict_name(r.verdict) << " (" << r.reply << "), want good";
  EXPECT_TRUE(r.reply.starts_with("250")) << "got reply " << r.reply << ", want 250 ...";
  const std::string metrics = core::metrics().render();
  EXPECT_NE(metrics.find("flushgate_recipient_probes_total{result=\"good\"}"), std::string::npos)
      << "got\n" << metrics << "want a flushgate_recipient_probes_total{result=\"good\"} line";
}

TEST_F(RecipientProbe, UnknownUserIsBadWithThePostfixReply) {
  const auto r = run_one(server_route(), "carol@customer.test");
  EXPECT_EQ(r.verdict, probe_verdict::bad)
      << "got " << verdict_name(r.verdict) << " (" << r.reply << "), want bad";
  EXPECT_TRUE(r.reply.starts_with("550 5.1.1 <carol@customer.test>: Recipient address rejected"))
      << "got reply " << r.reply << ", want Postfix's 550 5.1.1";
}

TEST_F(RecipientProbe, SecondProbeReusesTheConnection) {
  const auto first = run_one(server_route(), "alice@customer.test");
  const auto second = run_one(server_route(), "carol@customer.test");
  EXPECT_EQ(first.verdict, probe_verdict::good) << "got " << first.reply;
  EXPECT_EQ(second.verdict, probe_verdict::bad) << "got " << second.reply;
  EXPECT_EQ(prober_->open_connections(), 1u);
  prober_->close_all();
  // One session that carried both transactions and ended with QUIT.
  EXPECT_TRUE(wait_for_sessions(1, "mail=2 rcpt=1/2 rset=2 quit=1"))
      << "got " << sessions() << " sessions, want 1 with mail=2 rcpt=1/2 rset=2 quit=1:\n"
      << new_log();
}

TEST_F(RecipientProbe, ManyRefusalsStartANewConnection) {
  // Postfix counts refused RCPTs per session (RSET does not clear them) and
  // slows, then drops, a session with many: the prober moves on after 5.
  for (int i = 0; i < 12; ++i) {
    const auto got = run_one(server_route(), "nobody" + std::to_string(i) + "@customer.test");
    ASSERT_EQ(got.verdict, probe_verdict::bad) << "probe " << i << ": got " << got.reply;
  }
  EXPECT_EQ(prober_->open_connections(), 1u) << "want the third connection pooled";
  prober_->close_all();
  // 5 + 5 + 2 refusals, each session ended with QUIT.
  EXPECT_TRUE(wait_for_sessions(3, "mail=2 rcpt=0/2 rset=2 quit=1"))
      << "got " << sessions() << " sessions, want 3, the last with mail=2 rcpt=0/2:\n"
      << new_log();
  EXPECT_EQ(log_lines({"disconnect from ", "mail=5 rcpt=0/5 rset=5 quit=1"}).size(), 2u)
      << "want two sessions of 5 refused RCPTs each:\n"
      << new_log();
}

TEST_F(RecipientProbe, ConcurrentProbesOfOneCustomerShareOneConnection) {
  const auto results = run_all({{server_route(), "alice@customer.test"},
                                {server_route(), "bob@customer.test"},
                                {server_route(), "dave@customer.test"}});
  EXPECT_EQ(results[0].verdict, probe_verdict::good) << "got " << results[0].reply;
  EXPECT_EQ(results[1].verdict, probe_verdict::good) << "got " << results[1].reply;
  EXPECT_EQ(results[2].verdict, probe_verdict::bad) << "got " << results[2].reply;
  prober_->close_all();
  EXPECT_TRUE(wait_for_sessions(1, "mail=3 rcpt=2/3"))
      << "got " << sessions() << " sessions, want 1 with mail=3 rcpt=2/3:\n" << new_log();
}

TEST_F(RecipientProbe, ForgetClosesThePooledConnection) {
  ASSERT_EQ(run_one(server_route(), "alice@customer.test").verdict, probe_verdict::good);
  ASSERT_EQ(prober_->open_connections(), 1u);
  prober_->forget(1);
  EXPECT_EQ(prober_->open_connections(), 0u);
  ASSERT_TRUE(wait_for_sessions(1, "quit=1"))
      << "got " << sessions() << " sessions, want 1 ended with QUIT after forget():\n"
      << new_log();
  // The next probe opens a new connection.
  EXPECT_EQ(run_one(server_route(), "bob@customer.test").verdict, probe_verdict::good);
  EXPECT_EQ(prober_->open_connections(), 1u);
  prober_->close_all();
  EXPECT_TRUE(wait_for_sessions(2, "quit=1"))
      << "got " << sessions() << " sessions, want 2:\n" << new_log();
}

TEST_F(RecipientProbe, IdleConnectionIsClosedWithQuit) {
  probe_settings s = settings();
  s.idle = 200ms;
  make_prober(s);
  ASSERT_EQ(run_one(server_route(), "alice@customer.test").verdict, probe_verdict::good);
  EXPECT_TRUE(wait_for_sessions(1, "quit=1"))
      << "got " << sessions() << " sessions, want 1 ended with QUIT after the idle time:\n"
      << new_log();
  EXPECT_EQ(prober_->open_connections(), 0u);
}

TEST_F(RecipientProbe, ForgetCutsAProbeInFlight) {
  asio::ip::tcp::acceptor silent(
      io_, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), test::free_port()));
  const route r = host_route("127.0.0.1", silent.local_endpoint().port());
  std::optional<probe_result> got;
  asio::co_spawn(io_, prober_->probe(1, r, "alice@customer.test"),
                 [&got](std::exception_ptr, probe_result res) { got = std::move(res); });
  // Connected, waiting for a greeting that never comes.
  ASSERT_TRUE(test::wait_until(
      [&] {
        if (io_.stopped()) io_.restart();
        io_.poll();
        return prober_->open_connections() == 1;
      },
      4s))
      << "got no connection to the silent server, want one";
  const auto forgotten = steady::now();
  prober_->forget(1);
  EXPECT_TRUE(test::wait_until(
      [&] {
        if (io_.stopped()) io_.restart();
        io_.poll();
        return got.has_value();
      },
      20s));
  ASSERT_TRUE(got.has_value()) << "got a probe still running after forget(), want it ended";
  EXPECT_EQ(got->verdict, probe_verdict::unknown);
  EXPECT_EQ(got->reply, "route changed");
  // Cut by forget(), not by the probe's 5 s timeout.
  EXPECT_LT(steady::now() - forgotten, 4s);
  EXPECT_EQ(prober_->open_connections(), 0u);
}

TEST_F(RecipientProbe, RateLimitAnswersUnknown) {
  probe_settings s = settings();
  s.per_minute = 2;
  make_prober(s);
  const auto results = run_all({{server_route(), "alice@customer.test"},
                                {server_route(), "carol@customer.test"},
                                {server_route(), "bob@customer.test"}});
  EXPECT_EQ(results[0].verdict, probe_verdict::good) << "got " << results[0].reply;
  EXPECT_EQ(results[1].verdict, probe_verdict::bad) << "got " << results[1].reply;
  EXPECT_EQ(results[2].verdict, probe_verdict::unknown) << "got " << results[2].reply;
  EXPECT_EQ(results[2].reply, "rate limit");
  // Another customer has its own window.
  EXPECT_EQ(run_one(server_route(), "bob@customer.test", 2).verdict, probe_verdict::good);
}

TEST_F(RecipientProbe, DualStackRouteFallsBackToTheSecondAddress) {
  route r;
  r.k = route::kind::link;
  r.link_user = "acme-dsl";
  r.host = "::1";  // the instance listens on 127.0.0.1 only: nothing on [::1]:port
  r.fallback = "127.0.0.1";
  r.port = server_->port();
  const auto got = run_one(r, "alice@customer.test");
  EXPECT_EQ(got.verdict, probe_verdict::good)
      << "got " << verdict_name(got.verdict) << " (" << got.reply << "), want good";
}

TEST_F(RecipientProbe, RoutesOtherThanLinkAndHostAreNotProbed) {
  for (const auto kind : {route::kind::mx, route::kind::hold, route::kind::odmr}) {
    route r;
    r.k = kind;
    const auto got = run_one(r, "alice@customer.test");
    EXPECT_EQ(got.verdict, probe_verdict::unknown) << "route " << r.describe();
    EXPECT_EQ(got.reply, "not probed") << "route " << r.describe();
  }
  EXPECT_EQ(prober_->open_connections(), 0u) << "got a connection, want none";
}

TEST_F(RecipientProbe, StoppedServerIsUnknownWithConnectionRefused) {
  auto own = start_server();
  const route r = host_route("127.0.0.1", own->port());
  ASSERT_EQ(run_one(r, "alice@customer.test").verdict, probe_verdict::good);
  ASSERT_TRUE(own->stop());
  // The pooled connection died with the server; the prober tries a new one,
  // which is refused at once (not after the probe's timeout).
  const auto got = run_one(r, "alice@customer.test");
  EXPECT_EQ(got.verdict, probe_verdict::unknown) << "got " << got.reply;
  EXPECT_NE(got.reply.find("connect to [127.0.0.1]:" + std::to_string(own->port()) +
                           ": Connection refused"),
            std::string::npos)
      << "got reply " << got.reply << ", want connection refused";
  const auto again = run_one(r, "bob@customer.test");
  EXPECT_EQ(again.verdict, probe_verdict::unknown) << "got " << again.reply;
  EXPECT_NE(again.reply.find("Connection refused"), std::string::npos)
      << "got reply " << again.reply << ", want connection refused";
}

TEST_F(RecipientProbe, SilentServerIsUnknownWithinTheTimeout) {
  // A dead peer: the kernel completes the handshake, nobody ever answers.
  asio::ip::tcp::acceptor silent(
      io_, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), test::free_port()));
  constexpr auto timeout = 1s;
  make_prober(settings(timeout));
  const route r = host_route("127.0.0.1", silent.local_endpoint().port());
  const auto started = steady::now();
  const auto results = run_all({{r, "alice@customer.test"}, {r, "bob@customer.test"}});
  const auto took = steady::now() - started;
  EXPECT_EQ(results[0].verdict, probe_verdict::unknown);
  EXPECT_EQ(results[0].reply, "timed out");
  // The second waited for the first's turn within its own (equal) timeout.
  EXPECT_EQ(results[1].verdict, probe_verdict::unknown);
  EXPECT_TRUE(results[1].reply == "busy" || results[1].reply == "timed out")
      << "got reply " << results[1].reply << ", want busy or timed out";
  // Generous slack for a loaded machine; the client's own step timeouts are 60s.
  EXPECT_LT(took, timeout + 5s) << "got "
                                << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                                << " ms, want the probe's 1 s bound to cut it";
  EXPECT_EQ(prober_->open_connections(), 0u) << "got a timed-out connection pooled, want it dropped";
}

TEST_F(RecipientProbe, StartTlsAsTheClientSettingsSay) {
  test::temp_dir certs("recipient-probe-tls");
  const auto cert = certs.path() / "mx.crt";
  const auto key = certs.path() / "mx.key";
  const auto made = test::run_command(
      {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", key.string(), "-out", cert.string(), "-days", "2", "-subj",
       "/CN=mx.test"},
      30s);
  if (made.exit_code != 0) GTEST_SKIP() << "cannot make a test certificate: " << made.stderr_text;
  auto own = std::make_unique<postfix_instance>(postfix_instance::final_destination(
      {"customer.test"}, "127.0.0.1:" + std::to_string(test::free_port()), {"alice"}));
  own->enable_tls(cert, key);
  own->start();
  asio::ssl::context tls(asio::ssl::context::tls_client);
  probe_settings s = settings();
  s.client.tls = tls_policy::encrypt;  // TLS or nothing; the certificate is not checked
  s.client.tls_context = &tls;
  make_prober(s);
  const route r = host_route("127.0.0.1", own->port());
  const auto good = run_one(r, "alice@customer.test");
  EXPECT_EQ(good.verdict, probe_verdict::good) << "got " << good.reply;
  const auto bad = run_one(r, "bob@customer.test");
  EXPECT_EQ(bad.verdict, probe_verdict::bad) << "got " << bad.reply;
  prober_->close_all();
  EXPECT_TRUE(test::wait_until(
      [&] {
        if (io_.stopped()) io_.restart();
        io_.poll();
        return own->log_text().find("starttls=1 mail=2 rcpt=1/2") != std::string::npos;
      },
      20s))
      << "got no session with starttls=1 mail=2 rcpt=1/2 in the log, want one:\n"
      << own->log_text();
}

TEST_F(RecipientProbe, CloseAllEndsProbing) {
  ASSERT_EQ(run_one(server_route(), "alice@customer.test").verdict, probe_verdict::good);
  prober_->close_all();
  EXPECT_EQ(prober_->open_connections(), 0u);
  const auto got = run_one(server_route(), "bob@customer.test");
  EXPECT_EQ(got.verdict, probe_verdict::unknown);
  EXPECT_EQ(got.reply, "shutting down");
}

}  // namespace
}  // namespace flushgate::gateway
