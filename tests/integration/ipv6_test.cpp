// ipv6_test.cpp — everything besides the SMTP intake speaks IPv6 too: the
// real flushgated with listeners on [::1], driven by real peers over ::1
// (swaks -6, fetchmail in ETRN and ODMR mode, radclient, nsd with an
// AAAA-only MX host) and private Postfix instances listening on [::1].
//
// Covers README.md "IPv6": smtpd_listen with [ipv6]:port takes mail for a
// customer and refuses relaying (550); --etrn-net with an IPv6 prefix lets
// ETRN from that prefix start the flush (RFC 1985) and only from there (459
// from 127.0.0.1); odmr_listen on [::1] hands the mail out by ATRN (RFC
// 2645); radius_listen on [::1] with an IPv6 clients-file entry brings a
// dial-up link up from a NAS that talks IPv6 (RFC 3162: NAS-IPv6-Address);
// a --route mx customer whose MX host has only an AAAA record gets its mail
// over IPv6 on port 25 (RFC 5321 §5.1: the addresses of the MX host, A or
// AAAA).
// Security: test-only; every socket is on ::1 or 127.0.0.1.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/integration/fetchmail_peer.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/nsd_server.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/smtp_probe.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr const char* radius_secret = "testing123";
constexpr const char* odmr_password = "v6-secret-1";

// "[::1]:PORT", the form listen keys and routes take.
std::string v6(std::uint16_t port) {
  return "[::1]:" + std::to_string(port);
}

// A customer mail server for `domains` on [::1] at a free port, started.
postfix_instance ipv6_server(const std::vector<std::string>& domains) {
  auto p = postfix_instance::final_destination(domains, v6(free_port()));
  p.start();
  return p;
}

// Polls until `postfix` holds exactly `count` messages (more is a failure at once).
bool wait_files(const postfix_instance& postfix, std::size_t count,
                std::chrono::milliseconds timeout = 20s) {
  return wait_until([&] { return postfix.message_files().size() >= count; }, timeout, 50ms) &&
         postfix.message_files().size() == count;
}

// True when a message in `postfix`'s Maildir has this Subject.
bool delivered(const postfix_instance& postfix, const std::string& subject) {
  for (const auto& f : postfix.message_files()) {
    for (const auto& s : field_values(read_file(f), "Subject")) {
      if (s == subject) return true;
    }
  }
  return false;
}

// Postfix's own Received: of a delivered message names the client it took it from.
std::string postfix_trace(const postfix_instance& postfix) {
  const auto files = postfix.message_files();
  return files.empty() ? "" : split_maildir(read_file(files.front())).postfix_top;
}

void write_private_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
}

#define NEEDS(program)                                                               \
  if (!program_available(program)) {                                                 \
    GTEST_SKIP() << program << " is not installed (a real peer of this test)";       \
  }
#define NEEDS_POSTFIX()                                                              \
  if (!postfix_instance::available()) {                                              \
    GTEST_SKIP() << "needs root and Postfix (/usr/sbin/postfix) for the customer's " \
                    "server";                                                        \
  }

class Ipv6 : public ::testing::Test {
 protected:
  void start_daemon(daemon_fixture::settings extra = {}, bool smtpd_on_ipv6 = false) {
    extra.emplace("retry_schedule", "1s");
    daemon_.emplace(std::move(extra));
    if (smtpd_on_ipv6) daemon_->listen_ipv6();
    daemon_->start();
  }

  void add_customer(const std::string& name, const std::string& domain,
                    const std::vector<std::string>& options) {
    auto added = daemon_->add_customer(name, domain, options);
    ASSERT_EQ(added.exit_code, 0) << "customer add " << name << ": got exit " << added.exit_code
                                  << " (" << added.err << "), want 0";
  }

  // Queues one message for `rcpt` over 127.0.0.1; its queue id.
  std::string queue_mail(const std::string& rcpt, const std::string& subject) {
    auto s = submit(daemon_->port(), "alice@sender.test", {{rcpt, ""}},
                    test_message(subject, rcpt, "held until asked for over IPv6\r\n"));
    EXPECT_TRUE(s.error.empty()) << "submit to " << rcpt << ": " << s.error;
    return s.qid;
  }

  // swaks -6 to the daemon's SMTP port on ::1.
  command_result swaks_v6(const std::string& to) {
    return run_command({"swaks", "-6", "--server", "::1", "--port", std::to_string(daemon_->port()),
                        "--from", "alice@sender.test", "--to", to, "--helo", "client6.test",
                        "--header", "Subject: over-ipv6", "--timeout", "20"},
                       60s);
  }

  std::optional<daemon_fixture> daemon_;
};

// ------------------------------------------------------------ SMTP intake

TEST_F(Ipv6, SmtpListenerOnIpv6QueuesForCustomersAndRefusesRelay) {
  NEEDS("swaks");
  start_daemon({}, true);
  add_customer("acme", "v6.test", {"--mode", "hold", "--route", "127.0.0.1:1"});

  auto taken = swaks_v6("bob@v6.test");
  EXPECT_EQ(taken.exit_code, 0) << "swaks -6 to bob@v6.test: got exit " << taken.exit_code
                                << ", want 0\n"
                                << taken.stdout_text << taken.stderr_text;
  EXPECT_NE(taken.stdout_text.find("Connected to ::1"), std::string::npos)
      << "got swaks somewhere else than ::1, want ::1:\n"
      << taken.stdout_text;
  EXPECT_NE(taken.stdout_text.find("<-  250 2.0.0 Ok: queued as "), std::string::npos)
      << "got no \"250 2.0.0 Ok: queued as\", want one:\n"
      << taken.stdout_text;
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 1, 10s))
      << "got " << queued_for(*daemon_, "acme").value_or(0) << " queued for acme, want 1; log:\n"
      << daemon_->log_text();
  EXPECT_FALSE(log_lines(*daemon_, {"connect from [::1]"}).empty())
      << "got no session from ::1 in the log, want one; log:\n"
      << daemon_->log_text();

  auto refused = swaks_v6("someone@elsewhere.test");
  // swaks exits 24 when the server refuses every recipient.
  EXPECT_EQ(refused.exit_code, 24) << "swaks -6 to a foreign domain: got exit " << refused.exit_code
                                   << ", want 24 (RCPT refused)\n"
                                   << refused.stdout_text << refused.stderr_text;
  EXPECT_NE(refused.stdout_text.find("<** 550"), std::string::npos)
      << "got no 550 to a foreign recipient, want one (no relay):\n"
      << refused.stdout_text;
  EXPECT_EQ(daemon_->queued_messages(), 1u) << "want only acme's message queued";
}

// ------------------------------------------------------------ ETRN

TEST_F(Ipv6, EtrnFromAnIpv6EtrnNetFlushesAndIpv4IsRefused) {
  NEEDS_POSTFIX();
  NEEDS("fetchmail");
  auto server = ipv6_server({"v6.test"});
  start_daemon({}, true);
  add_customer("acme", "v6.test",
               {"--mode", "hold", "--route", server.address(), "--etrn-net", "::1/128"});
  queue_mail("bob@v6.test", "etrn-over-ipv6");
  ASSERT_TRUE(wait_queued(*daemon_, "acme", 1, 10s));

  // From 127.0.0.1, outside ::1/128: refused, nothing moves.
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  auto refused = probe.command("ETRN v6.test");
  EXPECT_TRUE(reply_is(refused, 459));
  EXPECT_TRUE(refused && refused->raw ==
                             "459 Node v6.test not allowed: not from the customer's link or "
                             "network, and not logged in as the customer\r\n")
      << "got \"" << describe(refused) << "\", want the one-line 459 of a client outside the "
      << "customer's networks";
  (void)probe.command("QUIT");
  EXPECT_TRUE(log_lines(*daemon_, {"customer acme: flush started"}).empty())
      << "got a flush after the refused ETRN, want none; log:\n"
      << daemon_->log_text();
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);

  // fetchmail in ETRN mode from ::1: 253 and the mail goes to [::1].
  const fs::path home = daemon_->dir() / "fetchmail-etrn";
  fetchmail_run run(home, "set no bouncemail\nset no syslog\npoll \"::1\" protocol ETRN port " +
                              std::to_string(daemon_->port()) +
                              " timeout 30\n    fetchdomains v6.test\n");
  auto r = run.wait(60s);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.output.find("253 OK, 1 pending messages for node v6.test started"),
            std::string::npos)
      << describe(r) << "\nlog:\n"
      << daemon_->log_text();
  EXPECT_FALSE(log_lines(*daemon_, {": ETRN v6.test from ", "::1", "messages waiting"}).empty())
      << "got no ETRN from ::1 in the log, want one; log:\n"
      << daemon_->log_text();
  ASSERT_TRUE(wait_files(server, 1))
      << "got " << server.message_files().size() << " messages at " << server.address()
      << ", want 1; log:\n"
      << daemon_->log_text() << "\npostfix:\n"
      << server.log_text();
  EXPECT_TRUE(delivered(server, "etrn-over-ipv6"));
  EXPECT_NE(postfix_trace(server).find("[IPv6:::1]"), std::string::npos)
      << "got Postfix's trace without [IPv6:::1], want the gateway over IPv6:\n"
      << postfix_trace(server);
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

// ------------------------------------------------------------ ODMR

TEST_F(Ipv6, FetchmailPullsOverOdmrOnIpv6) {
  NEEDS_POSTFIX();
  NEEDS("fetchmail");
  auto server = ipv6_server({"v6.test"});
  const std::uint16_t odmr_port = free_port();
  start_daemon({{"odmr_listen", v6(odmr_port)}});
  ASSERT_TRUE(wait_until([&] { return !tcp_port_free("::1", odmr_port); }, 10s))
      << "got no ODMR listener on " << v6(odmr_port) << ", want one; log:\n"
      << daemon_->log_text();
  add_customer("acme", "v6.test", {"--mode", "odmr"});
  auto set = run_command({daemon_fixture::cli_path().string(), "--config",
                          daemon_->config_path().string(), "customer", "passwd", "acme"},
                         15s, std::string(odmr_password) + "\n");
  ASSERT_EQ(set.exit_code, 0) << "customer passwd acme: got exit " << set.exit_code << " ("
                              << set.stderr_text << "), want 0";
  queue_mail("bob@v6.test", "odmr-over-ipv6-1");
  queue_mail("carol@v6.test", "odmr-over-ipv6-2");

  fetchmail_run run(daemon_->dir() / "fetchmail-odmr",
                    fetchmail_rc_text({.port = odmr_port,
                                       .user = "acme",
                                       .password = odmr_password,
                                       .domains = "v6.test",
                                       .smtphost = "::1/" + std::to_string(server.port()),
                                       .host = "::1"}));
  auto r = run.wait(60s);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.output.find("ODMR< 250 OK now reversing the connection"), std::string::npos)
      << "got no 250 to ATRN, want one; " << describe(r) << "\nlog:\n"
      << daemon_->log_text();
  ASSERT_TRUE(wait_files(server, 2))
      << "got " << server.message_files().size() << " messages at " << server.address()
      << ", want 2; " << describe(r) << "\nlog:\n"
      << daemon_->log_text();
  EXPECT_TRUE(delivered(server, "odmr-over-ipv6-1"));
  EXPECT_TRUE(delivered(server, "odmr-over-ipv6-2"));
  EXPECT_FALSE(log_lines(*daemon_, {"odmr session", "connect from", "::1"}).empty())
      << "got no ODMR session from ::1 in the log, want one; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

// ------------------------------------------------------------ RADIUS

class Ipv6Radius : public Ipv6 {
 protected:
  void SetUp() override {
    if (!program_available("radclient")) {
      GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
    }
  }

  // A daemon whose RADIUS listener is on [::1] and trusts ::1 as NAS "nas6"
  // (log_level debug: a dropped packet is logged with its reason only there).
  void start_radius_daemon() {
    radius_port_ = free_udp_port();
    write_private_file(work_.path() / "clients", "::1/128 testing123 nas6\n");
    start_daemon({{"log_level", "debug"},
                  {"radius_listen", v6(radius_port_)},
                  {"radius_clients_file", (work_.path() / "clients").string()}});
  }

  // radclient -6 to [::1]:port with `packet` on stdin; exit 0 when a valid
  // Accounting-Response came back.
  command_result radclient(const std::string& packet) {
    return run_command({"radclient", "-6", "-x", "-r", "3", "-t", "2", v6(radius_port_), "acct",
                        radius_secret},
                       30s, packet);
  }

  // `user`'s live link address per `link list --json`, or "".
  std::string link_address(const std::string& user) const {
    auto r = daemon_->cli({"--json", "link", "list"});
    if (r.exit_code != 0) return "";
    try {
      Poco::JSON::Parser parser;
      auto rows = parser.parse(r.out).extract<Poco::JSON::Array::Ptr>();
      for (std::size_t i = 0; i < rows->size(); ++i) {
        auto row = rows->getObject(static_cast<unsigned>(i));
        if (row->getValue<std::string>("user") == user) {
          return row->getValue<std::string>("address");
        }
      }
    } catch (const std::exception&) {  // Poco::Exception is one
    }
    return "";
  }

  // Start from NAS ::1 for acme-dial at 127.0.0.1: held mail flushes to `server`.
  void expect_start_flushes(const std::string& nas_attributes) {
    auto server = postfix_instance::final_destination(
        {"acme.test"}, "127.0.0.1:" + std::to_string(free_port()));
    server.start();
    start_radius_daemon();
    add_customer("acme", "acme.test",
                 {"--mode", "hold", "--dialup-user", "acme-dial", "--link-port",
                  std::to_string(server.port())});
    queue_mail("bob@acme.test", "radius-over-ipv6");
    ASSERT_TRUE(wait_queued(*daemon_, "acme", 1, 10s));

    auto sent = radclient("Acct-Status-Type = Start\n"
                          "User-Name = \"acme-dial\"\n"
                          "Acct-Session-Id = \"V6S1\"\n"
                          "Framed-IP-Address = 127.0.0.1\n" +
                          nas_attributes + "Acct-Delay-Time = 0\n");
    EXPECT_EQ(sent.exit_code, 0) << "radclient -6 Start: got exit " << sent.exit_code
                                 << ", want 0 (a valid Accounting-Response)\n"
                                 << sent.stdout_text << sent.stderr_text << "\nlog:\n"
                                 << daemon_->log_text();
    ASSERT_TRUE(wait_until([&] { return link_address("acme-dial") == "127.0.0.1"; }, 10s, 50ms))
        << "got link address \"" << link_address("acme-dial")
        << "\" for acme-dial, want 127.0.0.1; log:\n"
        << daemon_->log_text();
    EXPECT_TRUE(wait_files(server, 1))
        << "got " << server.message_files().size() << " messages at " << server.address()
        << ", want 1; log:\n"
        << daemon_->log_text();
    EXPECT_TRUE(delivered(server, "radius-over-ipv6"));
    EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  }

  temp_dir work_{"flushgate-v6radius"};
  std::uint16_t radius_port_ = 0;
};

TEST_F(Ipv6Radius, StartFromIpv6NasBringsTheLinkUpAndFlushes) {
  NEEDS_POSTFIX();
  expect_start_flushes("NAS-IPv6-Address = ::1\nNAS-Identifier = \"nas6\"\n");
}

// RFC 3162 §2.1: NAS-IPv6-Address alone identifies the NAS (a NAS with no
// IPv4 address sends neither NAS-IP-Address nor, necessarily, NAS-Identifier).
TEST_F(Ipv6Radius, StartWithOnlyNasIpv6AddressBringsTheLinkUp) {
  NEEDS_POSTFIX();
  expect_start_flushes("NAS-IPv6-Address = ::1\n");
}

// ------------------------------------------------------------ MX over IPv6

TEST_F(Ipv6, MxHostWithOnlyAnAaaaRecordGetsTheMailOverIpv6) {
  if (!nsd_server::available()) GTEST_SKIP() << nsd_server::nsd_path << " is not installed";
  NEEDS_POSTFIX();
  // The MX route always uses port 25.
  if (!tcp_port_free("::1", 25)) GTEST_SKIP() << "port 25 is taken on ::1";
  nsd_server nsd(std::vector<nsd_zone>{
      {"mx6.test",
                   "$ORIGIN mx6.test.\n"
                   "$TTL 300\n"
                   "@     IN SOA  ns.mx6.test. hostmaster.mx6.test. 1 3600 900 604800 300\n"
                   "@     IN NS   ns\n"
                   "ns    IN A    127.0.0.1\n"
                   "mx6   IN AAAA ::1\n"
                   "acme  IN MX   10 mx6\n"}});
  auto server = postfix_instance::final_destination({"acme.mx6.test"}, "[::1]:25");
  server.start();
  start_daemon({{"dns_servers", nsd.address()}, {"queue_sweep_interval", "1s"}});
  add_customer("acme", "acme.mx6.test", {"--route", "mx"});

  const std::string qid = queue_mail("bob@acme.mx6.test", "mx-over-ipv6");
  ASSERT_TRUE(wait_files(server, 1))
      << "got no delivery at mx6.mx6.test ([::1]:25), want one; log:\n"
      << daemon_->log_text() << "\nnsd:\n"
      << nsd.log_text() << "\npostfix:\n"
      << server.log_text();
  EXPECT_TRUE(delivered(server, "mx-over-ipv6"));
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  EXPECT_FALSE(log_lines(*daemon_, {qid, "relay=mx6.mx6.test", "status=sent"}).empty())
      << "got no delivery logged via mx6.mx6.test, want one; log:\n"
      << daemon_->log_text();
  EXPECT_NE(postfix_trace(server).find("[IPv6:::1]"), std::string::npos)
      << "got Postfix's trace without [IPv6:::1], want the gateway over IPv6:\n"
      << postfix_trace(server);
}

}  // namespace
