// xforward_test.cpp — the customer's own checks judge the real
// client: flushgate passes each message's original client to a real Postfix
// with XFORWARD (and XCLIENT on request) at flush time.
//
// The customer's Postfix has a check_client_access table refusing 127.0.0.9
// and logs every SMTP dialogue (debug_peer_list), so its log shows what
// flushgate sent. Mail comes in from 127.0.0.9 (HELO spammer.example) and
// from 127.0.0.12 (HELO good.example); nsd answers the reverse lookups
// (127.0.0.12 confirms as good.fwd.test, 127.0.0.9's PTR does not confirm).
//   - with smtpd_authorized_xforward_hosts: Postfix's log (orig_client=)
//     names the original clients; its own Received: still names the
//     gateway (ours below it names the client). Its smtpd
//     restrictions still judge the connecting gateway — Postfix uses
//     XFORWARD for logging, Received: and what it hands on, not for access
//     control — so both messages are delivered (the test proves it, so that
//     the README can say it);
//   - without it: Postfix offers no XFORWARD, flushgate sends none, and
//     both messages are delivered as before (judged as the gateway);
//   - --forward-client xclient with smtpd_authorized_xclient_hosts: Postfix
//     takes the original client as the session's, its check_client_access
//     refuses 127.0.0.9 at flush time, the refusal comes back to the sender
//     as a DSN, and the other message's Received: names its real client.
// See also: www.postfix.org/XFORWARD_README.html, XCLIENT_README.html.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/support/nsd_server.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

constexpr const char* spammer_address = "127.0.0.9";
constexpr const char* good_address = "127.0.0.12";

class ForwardClient : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix (/usr/sbin/postfix)";
    if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
    if (!nsd_server::available()) GTEST_SKIP() << nsd_server::nsd_path << " is not installed";
    if (!program_available("swaks")) GTEST_SKIP() << "swaks is not installed";
    nsd_ = std::make_unique<nsd_server>(std::vector<nsd_zone>{
        {"0.0.127.in-addr.arpa",
         "$ORIGIN 0.0.127.in-addr.arpa.\n"
         "$TTL 300\n"
         "@   IN SOA ns.fwd.test. hostmaster.fwd.test. 1 3600 900 604800 300\n"
         "@   IN NS  ns.fwd.test.\n"
         "12  IN PTR good.fwd.test.\n"
         "9   IN PTR spoofed.fwd.test.\n"},
        {"fwd.test",
         "$ORIGIN fwd.test.\n"
         "$TTL 300\n"
         "@       IN SOA ns.fwd.test. hostmaster.fwd.test. 1 3600 900 604800 300\n"
         "@       IN NS  ns\n"
         "ns      IN A   127.0.0.1\n"
         "good    IN A   127.0.0.12\n"
         "spoofed IN A   127.0.0.99\n"}});
    bounces_ = std::make_unique<smtp_sink>("127.0.0.10", free_port_on("127.0.0.10"));
    bounces_->start();
    daemon_.emplace(daemon_fixture::settings{{"retry_schedule", "1s"},
                                             {"queue_sweep_interval", "1s"},
                                             {"bounce_relay", bounces_->address()},
                                             {"dns_servers", nsd_->address()},
                                             {"smtpd_reverse_lookup_timeout", "10s"}});
    daemon_->start();
  }

  // The customer's Postfix on 127.0.0.4: refuses 127.0.0.9 by its own
  // client check and logs every dialogue with the 127/8 clients.
  static postfix_instance customer_server(const std::vector<std::pair<std::string, std::string>>& extra) {
    auto p = postfix_instance::final_destination(
        {"acme.test"}, std::string("127.0.0.4:") + std::to_string(free_port_on("127.0.0.4")));
    p.add_main_cf("smtpd_client_restrictions",
                  std::string("check_client_access inline:{ { ") + spammer_address +
                      " = REJECT listed by acme's own blocklist } }");
    p.add_main_cf("debug_peer_list", "127.0.0.0/8");
    for (const auto& [key, value] : extra) p.add_main_cf(key, value);
    return p;
  }

  // One message from `address` saying HELO `helo`, into the gateway; its qid.
  std::string send_from(const std::string& address, const std::string& helo,
                        const std::string& subject) {
    auto r = run_command({"swaks", "--server", "127.0.0.1:" + std::to_string(daemon_->port()),
                          "--local-interface", address, "--helo", helo, "--from",
                          "alice@sender.test", "--to", "bob@acme.test", "--header",
                          "Subject: " + subject, "--body", "from " + address, "--timeout", "30"},
                         60s);
    const std::string transcript = r.stdout_text + r.stderr_text;
    EXPECT_EQ(r.exit_code, 0) << "swaks from " << address << ": got exit " << r.exit_code
                              << ", want 0\n" << transcript;
    const auto at = transcript.find("queued as ");
    if (at == std::string::npos) return {};
    return transcript.substr(at + 10, transcript.find_first_of("\r\n", at) - at - 10);
  }

  // Holds both messages, then flushes them in one session.
  void queue_both_and_flush(const postfix_instance& postfix) {
    auto added = daemon_->add_customer(
        "acme", "acme.test",
        {"--mode", "hold", "--route", postfix.host() + ":" + std::to_string(postfix.port()),
         "--forward-client", forward_client_});
    ASSERT_EQ(added.exit_code, 0) << "customer add: got exit " << added.exit_code << " ("
                                  << added.err << "), want 0";
    spammer_qid_ = send_from(spammer_address, "spammer.example", "from a spammer");
    good_qid_ = send_from(good_address, "good.example", "from a friend");
    ASSERT_FALSE(spammer_qid_.empty());
    ASSERT_FALSE(good_qid_.empty());
    auto flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "60"}, 90s);
    EXPECT_EQ(flushed.exit_code, 0) << "flush --wait: got exit " << flushed.exit_code << "\n"
                                    << flushed.out << flushed.err;
  }

  // The Maildir file whose body says it came from `address`, LF line ends.
  static std::optional<maildir_message> delivered_from(const postfix_instance& postfix,
                                                        const std::string& address) {
    for (const auto& file : postfix.message_files()) {
      auto m = split_maildir(read_file(file));
      if (m.rest.find("\nfrom " + address + "\n") != std::string::npos) return m;
    }
    return std::nullopt;
  }

  // Postfix's own Received: (the one it added on top), LF line ends.
  static std::string postfix_received(const maildir_message& m) {
    const auto at = m.postfix_top.find("Received: ");
    return at == std::string::npos ? std::string() : m.postfix_top.substr(at);
  }

  // The spammer's message was refused by the customer's check at flush time
  // and came back as a failure DSN; the friend's message arrived and
  // Postfix's Received: names its real client.
  void expect_judged_by_the_real_client(const postfix_instance& postfix) {
    ASSERT_TRUE(wait_until([&] { return !bounces_->dumps().empty(); }, 20s))
        << "got no DSN at the bounce relay, want one for the refused message; log:\n"
        << daemon_->log_text() << "\nPostfix:\n" << postfix.log_text();
    const auto dsns = bounces_->dumps();
    ASSERT_EQ(dsns.size(), 1u);
    EXPECT_EQ(field_values(dsns[0], "Status"), std::vector<std::string>{"5.7.1"}) << dsns[0];
    EXPECT_NE(dsns[0].find("listed by acme's own blocklist"), std::string::npos)
        << "got a DSN without the customer's reason:\n" << dsns[0];
    EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));

    const std::string log = postfix.log_text();
    EXPECT_NE(log.find(std::string("reject: RCPT from unknown[") + spammer_address + "]"),
              std::string::npos)
        << "got no refusal of [" << spammer_address << "] in Postfix's log, want one:\n" << log;
    EXPECT_NE(log.find("helo=<spammer.example>"), std::string::npos)
        << "got Postfix's log without the original HELO:\n" << log;

    ASSERT_TRUE(wait_until([&] { return postfix.message_files().size() == 1; }, 10s))
        << "got " << postfix.message_files().size() << " messages delivered, want 1";
    auto good = delivered_from(postfix, good_address);
    ASSERT_TRUE(good.has_value()) << "got no delivered message from " << good_address;
    const std::string received = postfix_received(*good);
    EXPECT_TRUE(received.starts_with(std::string("Received: from good.example (good.fwd.test [") +
                                     good_address + "])"))
        << "got Postfix's header \"" << received << "\", want the original client in it";
    EXPECT_EQ(received.find("[127.0.0.1]"), std::string::npos)
        << "got the gateway's address in Postfix's Received: " << received;
  }

  std::unique_ptr<nsd_server> nsd_;
  std::unique_ptr<smtp_sink> bounces_;
  std::optional<daemon_fixture> daemon_;
  std::string forward_client_ = "xforward";
  std::string spammer_qid_;
  std::string good_qid_;
};

TEST_F(ForwardClient, AuthorizedPostfixLogsTheOriginalClientButJudgesTheGateway) {
  auto postfix = customer_server({{"smtpd_authorized_xforward_hosts", "127.0.0.0/8"}});
  postfix.start();
  queue_both_and_flush(postfix);
  ASSERT_TRUE(wait_until([&] { return postfix.message_files().size() == 2; }, 20s))
      << "got " << postfix.message_files().size() << " messages delivered, want 2; log:\n"
      << daemon_->log_text();
  const std::string log = postfix.log_text();
  EXPECT_NE(log.find(std::string("XFORWARD NAME=[UNAVAILABLE] ADDR=") + spammer_address),
            std::string::npos)
      << "got no XFORWARD for the spammer (its PTR does not confirm) in Postfix's log:\n" << log;
  EXPECT_NE(log.find("PROTO=ESMTP HELO=spammer.example"), std::string::npos) << log;
  EXPECT_NE(log.find(std::string("orig_client=unknown[") + spammer_address + "]"), std::string::npos)
      << "got Postfix's log without the original client:\n" << log;
  EXPECT_NE(log.find(std::string("orig_client=good.fwd.test[") + good_address + "]"),
            std::string::npos) << log;
  // Postfix's own Received: names the connecting gateway under XFORWARD;
  // the original client is in ours, right below it.
  auto spam = delivered_from(postfix, spammer_address);
  ASSERT_TRUE(spam.has_value());
  EXPECT_TRUE(postfix_received(*spam).starts_with("Received: from gw.test (unknown [127.0.0.1])"))
      << "got \"" << postfix_received(*spam) << "\"";
  EXPECT_TRUE(spam->rest.starts_with(std::string("Received: from spammer.example ([") +
                                     spammer_address + "])"))
      << "got \"" << spam->rest.substr(0, 200) << "\", want our Received: naming the client";
  // Postfix's access checks are not XFORWARD's business: the connecting
  // gateway was judged, and 127.0.0.9's message passed.
  EXPECT_NE(log.find("check_namadr_access: name unknown addr 127.0.0.1"), std::string::npos)
      << "got Postfix judging someone else than the gateway under XFORWARD:\n" << log;
  EXPECT_TRUE(bounces_->dumps().empty()) << "got a DSN, want none";
}

TEST_F(ForwardClient, UnauthorizedPostfixGetsNoXforwardAndTakesTheMail) {
  auto postfix = customer_server({});
  postfix.start();
  queue_both_and_flush(postfix);
  ASSERT_TRUE(wait_until([&] { return postfix.message_files().size() == 2; }, 20s))
      << "got " << postfix.message_files().size() << " messages delivered, want 2; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  const std::string log = postfix.log_text();
  // debug_peer_list logs every line both ways: the EHLO reply and the commands.
  EXPECT_NE(log.find("MAIL FROM:<alice@sender.test>"), std::string::npos)
      << "got no dialogue in Postfix's log (debug_peer_list), so it proves nothing:\n" << log;
  EXPECT_EQ(log.find("XFORWARD"), std::string::npos)
      << "got XFORWARD in the log of a Postfix that did not authorize it, want none:\n" << log;
  auto spam = delivered_from(postfix, spammer_address);
  ASSERT_TRUE(spam.has_value());
  EXPECT_NE(postfix_received(*spam).find("[127.0.0.1]"), std::string::npos)
      << "got \"" << postfix_received(*spam) << "\", want the gateway as the client";
  EXPECT_TRUE(bounces_->dumps().empty()) << "got a DSN, want none";
}

TEST_F(ForwardClient, XclientMakesTheCustomersClientCheckRefuseTheSpammer) {
  forward_client_ = "xclient";
  // Only the gateway is authorized: Postfix re-checks after each XCLIENT,
  // so the second message needs a second connection.
  auto postfix = customer_server({{"smtpd_authorized_xclient_hosts", "127.0.0.1"}});
  postfix.start();
  queue_both_and_flush(postfix);
  expect_judged_by_the_real_client(postfix);
  const std::string log = postfix.log_text();
  EXPECT_NE(log.find(std::string("XCLIENT NAME=[UNAVAILABLE] ADDR=") + spammer_address),
            std::string::npos)
      << "got no XCLIENT for the spammer in Postfix's log:\n" << log;
  EXPECT_EQ(log.find("XFORWARD NAME"), std::string::npos) << "got XFORWARD, want XCLIENT only";
  // Each XCLIENT came from the gateway's own identity, i.e. in a fresh
  // session (a second one in the same session would come from 127.0.0.9).
  const std::string fresh = "< unknown[127.0.0.1]: XCLIENT ";
  std::size_t sessions = 0;
  for (auto at = log.find(fresh); at != std::string::npos; at = log.find(fresh, at + 1)) ++sessions;
  EXPECT_EQ(sessions, 2u) << "got " << sessions
                          << " XCLIENTs from the gateway's own identity, want one per message";
}

}  // namespace
