// mx_tls_delivery_test.cpp — delivery by MX through a real nsd, and
// STARTTLS toward the customer's server: the real flushgated, a private nsd
// (dns_servers), private Postfix instances with and without TLS, smtp-sink.
//
// Covers RFC 5321 §5.1 (MX route, always port 25; the gateway's own name in
// the list at the best preference leaves nothing: bounce 5.4.6, no loop),
// RFC 7505 (a null MX bounces at once, 5.1.10), RFC 3207 with the customer's
// TLS policy (encrypt: TLS or nothing; verify: a certificate that chains to
// smtp_tls_ca_file and names the route's host, else deferred — never a
// fallback to plaintext).
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/support/nsd_server.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

// The zone every test here serves; @MX@ is the address of the MX host.
std::string zone_text(const std::string& mx_address) {
  return "$ORIGIN mxdeliver.test.\n"
         "$TTL 300\n"
         "@      IN SOA ns.mxdeliver.test. hostmaster.mxdeliver.test. 1 3600 900 604800 300\n"
         "@      IN NS  ns\n"
         "ns     IN A   127.0.0.1\n"
         "mx1    IN A   " + mx_address + "\n"
         "gw     IN A   127.0.0.41\n"
         "mail   IN A   " + mx_address + "\n"
         // The customer's domain: one MX, on port 25 of mx1.
         "acme   IN MX  10 mx1\n"
         // RFC 7505: no mail at all.
         "void   IN MX  0 .\n"
         // The gateway (smtp_self_names gw.mxdeliver.test) is the best MX: the
         // worse mx1 must not be tried either (RFC 5321 §5.1).
         "loop   IN MX  10 gw\n"
         "loop   IN MX  20 mx1\n";
}

class MxTlsDelivery : public ::testing::Test {
 protected:
  void start_daemon(daemon_fixture::settings extra) {
    daemon_fixture::settings s{{"retry_schedule", "1s"}, {"queue_sweep_interval", "1s"}};
    for (auto& [k, v] : extra) s[k] = v;
    daemon_.emplace(std::move(s));
    daemon_->start();
  }

  void add_customer(const std::string& name, const std::string& domain,
                    const std::vector<std::string>& options) {
    auto added = daemon_->add_customer(name, domain, options);
    ASSERT_EQ(added.exit_code, 0) << "customer add " << name << ": got exit " << added.exit_code
                                  << " (" << added.err << "), want 0";
  }

  static bool wait_files(const postfix_instance& postfix, std::size_t count,
                         std::chrono::milliseconds timeout = 20s) {
    return wait_until([&] { return postfix.message_files().size() >= count; }, timeout, 50ms) &&
           postfix.message_files().size() == count;
  }

  // A bounce relay sink on 127.0.0.40 and a daemon resolving through `nsd`.
  void start_with_dns(const nsd_server& nsd) {
    bounces_ = std::make_unique<smtp_sink>("127.0.0.40", free_port_on("127.0.0.40"));
    bounces_->start();
    start_daemon({{"dns_servers", nsd.address()},
                  {"smtp_self_names", "gw.mxdeliver.test"},
                  {"bounce_relay", bounces_->address()}});
  }

  // Sends to `rcpt`, then waits for its failure DSN and checks its Status.
  void expect_immediate_bounce(const std::string& customer, const std::string& rcpt,
                               const std::string& status) {
    auto sent = submit(daemon_->port(), "alice@sender.test", {{rcpt, ""}},
                       test_message("bounce-" + customer, rcpt, "no way there\r\n"));
    ASSERT_TRUE(sent.error.empty()) << sent.error;
    ASSERT_TRUE(wait_until(
        [&] {
          return !bounces_->dumps().empty() && queued_for(*daemon_, customer) == 0u &&
                 queued_for(*daemon_, "mailer-daemon") == 0u;
        },
        20s, 100ms))
        << "got " << bounces_->dumps().size() << " notices and "
        << queued_for(*daemon_, customer).value_or(99)
        << " messages queued, want a DSN and none queued; log:\n" << daemon_->log_text();
    const auto dumps = bounces_->dumps();
    ASSERT_EQ(dumps.size(), 1u);
    EXPECT_EQ(field_values(dumps[0], "Final-Recipient"), std::vector<std::string>{"rfc822; " + rcpt});
    EXPECT_EQ(field_values(dumps[0], "Action"), std::vector<std::string>{"failed"});
    EXPECT_EQ(field_values(dumps[0], "Status"), std::vector<std::string>{status});
    EXPECT_EQ(field_values(dumps[0], "X-Mail-Args"), std::vector<std::string>{"<>"});
    // At once: the first attempt decided it, nothing was deferred.
    EXPECT_TRUE(log_lines(*daemon_, {sent.qid, "status=deferred"}).empty())
        << "got a deferral before the bounce, want an immediate bounce; log:\n"
        << daemon_->log_text();
  }

  std::unique_ptr<smtp_sink> bounces_;
  std::optional<daemon_fixture> daemon_;
};

TEST_F(MxTlsDelivery, MxRouteDeliversToTheMxHostOnPort25) {
  if (!nsd_server::available()) GTEST_SKIP() << nsd_server::nsd_path << " is not installed";
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  // The MX route always uses port 25: find a 127.0.0.x where it is free.
  std::string mx_address;
  for (int host = 201; host <= 210 && mx_address.empty(); ++host) {
    const std::string a = "127.0.0." + std::to_string(host);
    if (tcp_port_free(a, 25)) mx_address = a;
  }
  if (mx_address.empty()) GTEST_SKIP() << "port 25 is taken on 127.0.0.201-210";
  nsd_server nsd({{"mxdeliver.test", zone_text(mx_address)}});
  auto postfix = postfix_instance::final_destination({"acme.mxdeliver.test"}, mx_address + ":25");
  postfix.start();
  start_with_dns(nsd);
  add_customer("acme", "acme.mxdeliver.test", {"--route", "mx"});

  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.mxdeliver.test", ""}},
                     test_message("by-mx", "bob@acme.mxdeliver.test", "found by MX\r\n"));
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_files(postfix, 1)) << "got no delivery at mx1 (" << mx_address
                                      << ":25), want one; log:\n" << daemon_->log_text()
                                      << "\nnsd:\n" << nsd.log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  EXPECT_FALSE(log_lines(*daemon_, {sent.qid, "relay=mx1.mxdeliver.test", "status=sent"}).empty())
      << "got no delivery logged via mx1.mxdeliver.test, want one; log:\n" << daemon_->log_text();
}

TEST_F(MxTlsDelivery, NullMxBouncesAtOnceWith5110) {
  if (!nsd_server::available()) GTEST_SKIP() << nsd_server::nsd_path << " is not installed";
  if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
  nsd_server nsd({{"mxdeliver.test", zone_text("127.0.0.42")}});
  start_with_dns(nsd);
  add_customer("void", "void.mxdeliver.test", {"--route", "mx"});
  expect_immediate_bounce("void", "bob@void.mxdeliver.test", "5.1.10");
}

TEST_F(MxTlsDelivery, OwnNameAtBestPreferenceBounces546) {
  if (!nsd_server::available()) GTEST_SKIP() << nsd_server::nsd_path << " is not installed";
  if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
  nsd_server nsd({{"mxdeliver.test", zone_text("127.0.0.42")}});
  start_with_dns(nsd);
  add_customer("loop", "loop.mxdeliver.test", {"--route", "mx"});
  expect_immediate_bounce("loop", "bob@loop.mxdeliver.test", "5.4.6");
}

class TlsDelivery : public MxTlsDelivery {
 protected:
  void SetUp() override {
    if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
    if (!program_available("openssl")) GTEST_SKIP() << "openssl is not installed";
    cert_ = make_self_signed(certs_.path(), "mail.mxdeliver.test");
  }

  // A customer Postfix offering STARTTLS with cert_ on a free port of `host`, started.
  postfix_instance tls_server(const std::string& host) {
    auto postfix = postfix_instance::final_destination(
        {"acme.test"}, host + ":" + std::to_string(free_port_on(host)));
    postfix.enable_tls(cert_.cert, cert_.key);
    postfix.start();
    return postfix;
  }

  // Postfix's Received: names the TLS protocol and cipher of its session.
  static void expect_received_over_tls(const std::filesystem::path& file) {
    const auto m = split_maildir(read_file(file));
    EXPECT_NE(m.postfix_top.find("(using TLSv1."), std::string::npos)
        << "got Postfix's trace without TLS, want \"(using TLSv1.x ...\":\n" << m.postfix_top;
    EXPECT_NE(m.postfix_top.find("with ESMTPS"), std::string::npos) << m.postfix_top;
  }

  temp_dir certs_{"flushgate-certs"};
  certificate_files cert_;
};

TEST_F(TlsDelivery, EncryptDeliversOverTls) {
  auto postfix = tls_server("127.0.0.43");
  start_daemon({});
  add_customer("acme", "acme.test",
               {"--route", postfix.host() + ":" + std::to_string(postfix.port()), "--tls", "encrypt"});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                     test_message("tls-encrypt", "bob@acme.test", "secret\r\n"));
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_files(postfix, 1)) << "got no delivery, want one; log:\n" << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  expect_received_over_tls(postfix.message_files().front());
  EXPECT_NE(postfix.log_text().find("TLS connection established from"), std::string::npos)
      << "got no TLS session in Postfix's log, want one:\n" << postfix.log_text();
}

TEST_F(TlsDelivery, EncryptToServerWithoutStartTlsDefers) {
  if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
  // smtp-sink offers no STARTTLS.
  smtp_sink sink("127.0.0.44", free_port_on("127.0.0.44"));
  sink.start();
  start_daemon({});
  add_customer("acme", "acme.test", {"--route", sink.address(), "--tls", "encrypt"});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                     test_message("tls-none", "bob@acme.test", "secret\r\n"));
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_log_line(*daemon_, {sent.qid + ": to=<bob@acme.test>", "status=deferred"}, 15s))
      << "got no deferral, want one; log:\n" << daemon_->log_text();
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);
  EXPECT_TRUE(sink.dumps().empty()) << "got a transaction in plaintext, want none:\n"
                                    << sink.dumps().front();
}

TEST_F(TlsDelivery, VerifyDefersWithoutTheCaAndDeliversWithIt) {
  if (!nsd_server::available()) GTEST_SKIP() << nsd_server::nsd_path << " is not installed";
  // The route names the host the certificate names; nsd resolves it.
  const std::string address = "127.0.0.45";
  nsd_server nsd({{"mxdeliver.test", zone_text(address)}});
  auto postfix = tls_server(address);
  start_daemon({{"dns_servers", nsd.address()}});
  add_customer("acme", "acme.test",
               {"--route", "mail.mxdeliver.test:" + std::to_string(postfix.port()), "--tls",
                "verify"});
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                     test_message("tls-verify", "bob@acme.test", "for verified eyes\r\n"));
  ASSERT_TRUE(sent.error.empty()) << sent.error;

  // Self-signed and not in the system's CAs: deferred, never sent in the clear.
  ASSERT_TRUE(wait_log_line(*daemon_, {sent.qid + ": to=<bob@acme.test>", "status=deferred"}, 15s))
      << "got no deferral, want one; log:\n" << daemon_->log_text();
  auto r = recipients_of(*daemon_, sent.qid);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_NE(r[0].last_reply.find("not verified"), std::string::npos)
      << "got last_reply \"" << r[0].last_reply << "\", want it to say the certificate did not verify";
  EXPECT_TRUE(postfix.message_files().empty());
  EXPECT_EQ(postfix.log_text().find("alice@sender.test"), std::string::npos)
      << "got the envelope in Postfix's log, want no MAIL without a verified TLS session:\n"
      << postfix.log_text();

  // With the certificate as CA the same message goes, over TLS.
  ASSERT_EQ(daemon_->stop(), 0) << daemon_->log_text();
  daemon_->set_setting("smtp_tls_ca_file", cert_.cert.string());
  daemon_->restart();
  ASSERT_TRUE(wait_files(postfix, 1)) << "got no delivery with the CA, want one; log:\n"
                                      << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  expect_received_over_tls(postfix.message_files().front());
}

}  // namespace
