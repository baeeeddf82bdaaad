// recipients_test.cpp — the recipient checks (issue 15) against real peers:
// the real flushgated, a real Postfix as the customer's own server that has
// only the mailboxes alice and bob (RCPT for anyone else: 550 5.1.1), an
// smtp-sink as the bounce relay that counts DSNs, the real CLI and the HTTP
// API (a Poco client).
//
// Covers the policies of gateway/customer_directory.hpp:
//  - verify: callouts teach known-good and known-bad while the server runs;
//    with the server stopped known-good gets 250, known-bad 550 5.1.1, not
//    known 450 4.1.1; never a callout over a dial-up link, one over DSL.
//  - learn: deliveries teach; a 5.1.1 at delivery gives one DSN and makes
//    the next RCPT for that address 550 5.1.1; with the server down, not
//    known gets 450.
//  - a dictionary attack (1,000 random local parts) while the customer is
//    down queues nothing under learn, verify and list; alice's mail still is.
//  - list managed live over the CLI (add, remove, export, import of 100,000
//    addresses, *@domain, user+tag) and the API (PUT, GET, POST, DELETE).
//  - known addresses survive a daemon restart.
// See also: RFC 5321 §3.3 (RCPT), §4.2.5 (450/550), RFC 3463 (X.1.1),
// issue 15, TESTBED.md (Postfix as a private instance).
#include "tests/integration/admin_api.hpp"
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/smtp_probe.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;
using Poco::JSON::Object;

// What `customer recipients NAME --json` says about one known address.
struct known_address {
  std::string state;   // "good" or "bad"
  std::string source;  // "callout" or "delivery"
};

// Lines of `text` that contain `needle`.
std::size_t count_lines_with(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.find(needle) != std::string::npos) ++n;
  }
  return n;
}

// The known addresses in the store under `data_dir` as "address good|bad",
// read with SQLite directly (read-only, beside the running daemon: WAL).
std::set<std::string> known_rows_in_store(const std::filesystem::path& data_dir) {
  std::set<std::string> rows;
  sqlite3* db = nullptr;
  const auto path = (data_dir / "queue.db").string();
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT address, good FROM known_recipients", -1, &st, nullptr) == SQLITE_OK) {
      while (sqlite3_step(st) == SQLITE_ROW) {
        rows.insert(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) +
                    (sqlite3_column_int(st, 1) != 0 ? " good" : " bad"));
      }
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return rows;
}

class Recipients : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix (the customer's server)";
    if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
    bounces_ = std::make_unique<smtp_sink>("127.0.0.150", free_port_on("127.0.0.150"));
    bounces_->start();
  }

  void start_daemon(daemon_fixture::settings extra = {}) {
    daemon_.emplace(quick_retry_settings(*bounces_, std::move(extra)));
    daemon_->start();
  }

  // The customer's server: Postfix on `host` that knows alice and bob only.
  static std::unique_ptr<postfix_instance> customer_server(const std::string& host,
                                                           std::vector<std::string> domains = {"acme.test"}) {
    auto p = std::make_unique<postfix_instance>(postfix_instance::final_destination(
        std::move(domains), host + ":" + std::to_string(free_port_on(host)), {"alice", "bob"}));
    p->start();
    return p;
  }

  ::testing::AssertionResult cli_ok(const std::vector<std::string>& args) {
    auto r = daemon_->cli(args, 60s);
    if (r.exit_code == 0) return ::testing::AssertionSuccess();
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    return ::testing::AssertionFailure() << joined << ": got exit " << r.exit_code << " (" << r.err
                                         << r.out << "), want 0";
  }

  // MAIL FROM:<a@sender.test>, RCPT TO:<to> in a fresh session; the RCPT reply.
  probe_result rcpt(const std::string& to) { return rcpt_reply(daemon_->host(), daemon_->port(), to); }

  // The known address `address` of `customer`, or nullopt when it is not known.
  std::optional<known_address> known(const std::string& customer, const std::string& address) {
    auto r = daemon_->cli({"customer", "recipients", customer, "--json"});
    if (r.exit_code != 0) return std::nullopt;
    try {
      auto o = Poco::JSON::Parser().parse(r.out).extract<Object::Ptr>();
      auto list = o->getArray("known");
      for (std::size_t i = 0; list && i < list->size(); ++i) {
        auto k = list->getObject(static_cast<unsigned>(i));
        if (k->getValue<std::string>("address") == address) {
          return known_address{k->getValue<std::string>("state"), k->getValue<std::string>("source")};
        }
      }
    } catch (const std::exception&) {
    }
    return std::nullopt;
  }

  // Waits until `address` is known as `state` (from `source`); "got X, want Y" otherwise.
  ::testing::AssertionResult wait_known(const std::string& customer, const std::string& address,
                                        const std::string& state, const std::string& source) {
    std::optional<known_address> k;
    const bool ok = wait_until(
        [&] {
          k = known(customer, address);
          return k && k->state == state && k->source == source;
        },
        20s, 100ms);
    if (ok) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << address << ": got " << (k ? k->state + " from " + k->source : std::string("not known"))
           << ", want " << state << " from " << source << "; recipients:\n"
           << daemon_->cli({"customer", "recipients", customer}).out;
  }

  // Adds the verify customer "acme" (hold, host route to `server`, which
  // runs) and lets callouts teach it alice (good) and mallory (bad).
  void callouts_teach_alice_and_mallory(const postfix_instance& server) {
    ASSERT_TRUE(cli_ok({"customer", "add", "acme", "--domain", "acme.test", "--mode", "hold", "--route",
                        server.address(), "--recipient-check", "verify"}));
    EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 250)) << "alice, server up (a callout)";
    EXPECT_TRUE(reply_is(rcpt("mallory@acme.test"), 550, "5.1.1")) << "mallory, server up (a callout)";
    ASSERT_TRUE(wait_known("acme", "alice@acme.test", "good", "callout"));
    ASSERT_TRUE(wait_known("acme", "mallory@acme.test", "bad", "callout"));
  }

  // What a dictionary attack got back.
  struct attack_result {
    std::size_t answered = 0, accepted = 0, tempfailed = 0, refused = 0, sessions = 0, data_opened = 0;
    std::string unexpected;  // the first reply that was none of 2xx, 450, 550
    double seconds = 0;
  };

  // `n` distinct random local parts (10 letters and digits), never alice or bob.
  static std::vector<std::string> random_local_parts(std::size_t n, unsigned seed) {
    std::mt19937 random(seed);
    std::set<std::string> names;
    while (names.size() < n) {
      std::string local;
      for (int i = 0; i < 10; ++i) local += "abcdefghijklmnopqrstuvwxyz0123456789"[random() % 36];
      names.insert(local);
    }
    return {names.begin(), names.end()};
  }

  // RCPT TO:<local@domain> for each of `locals` from one client: MAIL, many
  // RCPTs, DATA; a session cut by the daemon (421 at the error limit) is
  // followed by a new one that goes on where it stopped (500 sessions at most).
  attack_result dictionary_attack(const std::vector<std::string>& locals, const std::string& domain) {
    attack_result a;
    const auto start = std::chrono::steady_clock::now();
    while (a.answered < locals.size() && a.sessions < 500) {
      ++a.sessions;
      smtp_probe probe;
      if (!open_session(probe, daemon_->port(), "attacker.test")) continue;
      if (auto mail = probe.command("MAIL FROM:<spam@attacker.test>"); !mail || mail->code != 250) continue;
      bool open = true;
      while (open && a.answered < locals.size()) {
        auto r = probe.command("RCPT TO:<" + locals[a.answered] + "@" + domain + ">");
        if (!r || r->code == 421) {
          open = false;  // the session was cut (error limit): a new one goes on
          break;
        }
        ++a.answered;
        if (r->code / 100 == 2) ++a.accepted;
        else if (r->code == 450) ++a.tempfailed;
        else if (r->code == 550) ++a.refused;
        else if (a.unexpected.empty()) a.unexpected = describe(r);
      }
      if (open) {
        auto data = probe.command("DATA");
        if (data && data->code == 354) {
          ++a.data_opened;
          probe.send_raw(dot_stuffed(make_message({"Subject: spam"}, "buy now\r\n")));
          probe.read_reply();
        }
        probe.command("QUIT");
      }
    }
    a.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return a;
  }

  std::unique_ptr<smtp_sink> bounces_;
  std::optional<daemon_fixture> daemon_;
};

// --- verify ------------------------------------------------------------------

TEST_F(Recipients, VerifyLearnsFromCalloutsAndAnswersWhileServerIsDown) {
  auto postfix = customer_server("127.0.0.151");
  start_daemon();
  ASSERT_NO_FATAL_FAILURE(callouts_teach_alice_and_mallory(*postfix));
  EXPECT_EQ(count_lines_with(daemon_->log_text(), "callout for <alice@acme.test>"), 1u)
      << daemon_->log_text();

  ASSERT_TRUE(postfix->stop());
  ASSERT_TRUE(wait_until([&] { return tcp_port_free(postfix->host(), postfix->port()); }, 10s))
      << "got the customer's server still listening after stop, want it gone";
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 250)) << "alice, server stopped (known good)";
  EXPECT_TRUE(reply_is(rcpt("mallory@acme.test"), 550, "5.1.1")) << "mallory, server stopped (known bad)";
  EXPECT_TRUE(reply_is(rcpt("carol@acme.test"), 450, "4.1.1")) << "carol, server stopped (never seen)";
  EXPECT_FALSE(known("acme", "carol@acme.test")) << "got carol known, want her unknown (the callout failed)";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
}

TEST_F(Recipients, VerifyNeverCallsOutOverDialupButDoesOverDsl) {
  auto postfix = customer_server("127.0.0.152", {"acme.test", "beta.test"});
  start_daemon();
  const std::string port = std::to_string(postfix->port());
  ASSERT_TRUE(cli_ok({"customer", "add", "acme", "--domain", "acme.test", "--mode", "hold", "--dialup-user",
                      "acme-dial", "--link-port", port, "--recipient-check", "verify"}));
  ASSERT_TRUE(cli_ok({"customer", "add", "beta", "--domain", "beta.test", "--mode", "hold", "--dsl-user",
                      "beta-dsl", "--link-port", port, "--recipient-check", "verify"}));
  ASSERT_TRUE(cli_ok({"link", "up", "acme-dial", "--ip", postfix->host(), "--session", "d1"}));

  // Over the dial-up line: no callout, the address stays unknown → 450.
  EXPECT_TRUE(reply_is(rcpt("carol@acme.test"), 450, "4.1.1")) << "carol over a dial-up link";
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 450, "4.1.1")) << "alice over a dial-up link (not known yet)";
  EXPECT_EQ(count_lines_with(daemon_->log_text(), "callout for <"), 0u)
      << "got a callout over a dial-up link, want none; log:\n" << daemon_->log_text();
  // (The maillog's own "connect from" lines include the start-up check of
  // postfix_instance; a callout for carol would leave her 5.1.1 there.)
  EXPECT_EQ(count_lines_with(postfix->log_text(), "<carol@acme.test>"), 0u)
      << "got carol asked at the customer's server over a dial-up link, want no callout; maillog:\n"
      << postfix->log_text();
  EXPECT_FALSE(known("acme", "carol@acme.test"));

  // Over DSL: the callout happens, both ways.
  ASSERT_TRUE(cli_ok({"link", "up", "beta-dsl", "--ip", postfix->host(), "--session", "s1"}));
  EXPECT_TRUE(reply_is(rcpt("carol@beta.test"), 550, "5.1.1")) << "carol over DSL (a callout)";
  EXPECT_TRUE(reply_is(rcpt("alice@beta.test"), 250)) << "alice over DSL (a callout)";
  EXPECT_TRUE(wait_known("beta", "carol@beta.test", "bad", "callout"));
  EXPECT_TRUE(wait_known("beta", "alice@beta.test", "good", "callout"));
  EXPECT_EQ(count_lines_with(daemon_->log_text(), "callout for <alice@beta.test>"), 1u) << daemon_->log_text();
  EXPECT_TRUE(wait_until([&] { return count_lines_with(postfix->log_text(), "<carol@beta.test>") >= 1; }, 10s))
      << "got carol not asked at the customer's server over DSL, want a callout; maillog:\n"
      << postfix->log_text();
  EXPECT_EQ(count_lines_with(daemon_->log_text(), "callout for <carol@acme.test>"), 0u);
}

// --- learn -------------------------------------------------------------------

TEST_F(Recipients, LearnTeachesFromDeliveriesAndBouncesOnlyOnce) {
  auto postfix = customer_server("127.0.0.153");
  start_daemon();
  ASSERT_TRUE(cli_ok({"customer", "add", "acme", "--domain", "acme.test", "--mode", "relay", "--route",
                      postfix->address(), "--recipient-check", "learn"}));

  // Reachable: an unknown address is accepted, and its delivery teaches.
  auto to_alice = submit(daemon_->port(), "sender@sender.test", {{"alice@acme.test", ""}},
                         test_message("one", "alice@acme.test", "hello alice\r\n"));
  ASSERT_TRUE(to_alice.error.empty()) << "alice while reachable and unknown: got " << to_alice.error
                                      << ", want queued";
  EXPECT_TRUE(wait_until([&] { return postfix->message_files().size() == 1; }, 20s))
      << "got " << postfix->message_files().size() << " messages at the customer's server, want 1; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(wait_known("acme", "alice@acme.test", "good", "delivery"));

  auto to_mallory = submit(daemon_->port(), "sender@sender.test", {{"mallory@acme.test", ""}},
                           test_message("two", "mallory@acme.test", "hello mallory\r\n"));
  ASSERT_TRUE(to_mallory.error.empty()) << "mallory while reachable and unknown: got " << to_mallory.error
                                        << ", want queued";
  EXPECT_TRUE(wait_known("acme", "mallory@acme.test", "bad", "delivery"));
  const bool settled = wait_until(
      [&] {
        return bounces_->dumps().size() >= 1 && queued_for(*daemon_, "acme") == 0u &&
               queued_for(*daemon_, "mailer-daemon") == 0u;
      },
      20s, 100ms);
  EXPECT_TRUE(settled) << "got " << bounces_->dumps().size() << " DSNs and "
                       << queued_for(*daemon_, "acme").value_or(99) << " queued, want 1 and 0; log:\n"
                       << daemon_->log_text();

  // Known bad now: refused at RCPT, so no second DSN can follow.
  EXPECT_TRUE(reply_is(rcpt("mallory@acme.test"), 550, "5.1.1")) << "mallory, second message";
  auto again = submit(daemon_->port(), "sender@sender.test", {{"mallory@acme.test", ""}},
                      test_message("three", "mallory@acme.test", "hello again\r\n"));
  EXPECT_FALSE(again.error.empty()) << "got mallory's second message queued as " << again.qid
                                    << ", want 550 5.1.1 at RCPT";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
  EXPECT_EQ(queued_for(*daemon_, "mailer-daemon"), 0u);
  const auto dumps = bounces_->dumps();
  ASSERT_EQ(dumps.size(), 1u) << "got " << dumps.size() << " DSNs, want exactly 1";
  EXPECT_EQ(field_values(dumps[0], "Final-Recipient"), std::vector<std::string>{"rfc822; mallory@acme.test"});
  EXPECT_EQ(field_values(dumps[0], "Status"), std::vector<std::string>{"5.1.1"});

  // The server goes down and a flush finds it so: unknown addresses wait (450).
  ASSERT_TRUE(postfix->stop());
  auto queued_alice = submit(daemon_->port(), "sender@sender.test", {{"alice@acme.test", ""}},
                             test_message("four", "alice@acme.test", "server down\r\n"));
  ASSERT_TRUE(queued_alice.error.empty()) << "alice (known good) while down: got " << queued_alice.error
                                          << ", want queued";
  probe_result last;
  int tries = 0;
  const bool tempfailed = wait_until(
      [&] {
        last = rcpt("nobody" + std::to_string(++tries) + "@acme.test");
        return reply_is(last, 450, "4.1.1");
      },
      30s, 200ms);
  EXPECT_TRUE(tempfailed) << "unknown address after a failed flush: got " << describe(last)
                          << ", want 450 4.1.1; log:\n" << daemon_->log_text();
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 250)) << "alice (known good) while down";
  EXPECT_TRUE(reply_is(rcpt("mallory@acme.test"), 550, "5.1.1")) << "mallory (known bad) while down";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u) << "alice's message waits";
  EXPECT_EQ(bounces_->dumps().size(), 1u);
}

// A TCP port whose connections the kernel completes and nobody answers: a
// customer's server that hangs before its greeting. Closed on destruction.
class silent_listener {
 public:
  explicit silent_listener(const std::string& host) : host_(host), port_(free_port_on(host)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 64) != 0) {
      throw std::runtime_error("silent_listener: cannot listen on " + address());
    }
  }
  ~silent_listener() { ::close(fd_); }
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;
  std::string address() const { return host_ + ":" + std::to_string(port_); }

 private:
  std::string host_;
  std::uint16_t port_;
  int fd_ = -1;
};

TEST_F(Recipients, LearnTempfailsUnknownAddressesWhileARetryRunsToADownServer) {
  silent_listener hung("127.0.0.156");
  start_daemon({{"smtp_helo_timeout", "4s"}});
  ASSERT_TRUE(cli_ok({"customer", "add", "acme", "--domain", "acme.test", "--mode", "relay", "--route",
                      hung.address(), "--recipient-check", "learn"}));
  auto sent = submit(daemon_->port(), "sender@sender.test", {{"alice@acme.test", ""}},
                     test_message("hung", "alice@acme.test", "waiting\r\n"));
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  // The first run finds the server hanging: it is down from now on.
  ASSERT_TRUE(wait_log_line(*daemon_, {"customer acme: mail left in the queue"}, 20s)) << daemon_->log_text();
  EXPECT_TRUE(reply_is(rcpt("nobody1@acme.test"), 450, "4.1.1")) << "after a failed run";
  // While the next attempt hangs too (4 s before its greeting times out),
  // nothing new is known about the server: still 450.
  const bool retrying = wait_until(
      [&] {
        const auto started = log_lines(*daemon_, {"customer acme: flush started"}).size();
        const auto failed = log_lines(*daemon_, {"customer acme: mail left in the queue"}).size();
        return failed >= 1 && started == failed + 1;
      },
      20s, 20ms);
  ASSERT_TRUE(retrying) << "got no retry running, want one; log:\n" << daemon_->log_text();
  EXPECT_TRUE(reply_is(rcpt("nobody2@acme.test"), 450, "4.1.1"))
      << "an unknown address while a retry to a down server runs";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);
}

// --- a dictionary attack while the customer is down ---------------------------

class RecipientsDictionaryAttack : public Recipients,
                                   public ::testing::WithParamInterface<std::string> {};

TEST_P(RecipientsDictionaryAttack, QueuesNothingButKnownUsersMail) {
  const std::string policy = GetParam();
  auto postfix = customer_server("127.0.0.154");
  start_daemon();
  ASSERT_TRUE(cli_ok({"customer", "add", "acme", "--domain", "acme.test", "--mode", "hold", "--dsl-user",
                      "acme-dsl", "--link-port", std::to_string(postfix->port()), "--recipient-check",
                      policy}));
  // The customer is on line: its server teaches alice (or she is listed).
  ASSERT_TRUE(cli_ok({"link", "up", "acme-dsl", "--ip", postfix->host(), "--session", "s1"}));
  if (policy == "list") {
    ASSERT_TRUE(cli_ok({"customer", "recipients", "acme", "add", "alice@acme.test"}));
  } else if (policy == "verify") {
    ASSERT_TRUE(reply_is(rcpt("alice@acme.test"), 250)) << "alice, server up (a callout)";
    ASSERT_TRUE(wait_known("acme", "alice@acme.test", "good", "callout"));
  } else {
    auto sent = submit(daemon_->port(), "sender@sender.test", {{"alice@acme.test", ""}},
                       test_message("first", "alice@acme.test", "hello\r\n"));
    ASSERT_TRUE(sent.error.empty()) << sent.error;
    ASSERT_TRUE(wait_known("acme", "alice@acme.test", "good", "delivery"));
    ASSERT_TRUE(wait_queued(*daemon_, "acme", 0, 20s));
  }
  // Down: the link drops and the server stops.
  ASSERT_TRUE(cli_ok({"link", "down", "acme-dsl", "--session", "s1"}));
  ASSERT_TRUE(postfix->stop());

  // 1,000 random local parts from one client.
  const auto a = dictionary_attack(random_local_parts(1000, 15), "acme.test");
  std::cout << "[ figures  ] dictionary attack under " << policy << ": " << a.answered << " RCPTs in "
            << a.sessions << " sessions, " << a.seconds << " s\n";
  EXPECT_EQ(a.answered, 1000u) << "got " << a.answered << " RCPTs answered in " << a.sessions
                               << " sessions, want all 1000";
  EXPECT_EQ(a.accepted, 0u) << "got " << a.accepted << " random addresses accepted, want 0";
  EXPECT_EQ(a.data_opened, 0u) << "got DATA 354 after refused recipients, want none";
  EXPECT_TRUE(a.unexpected.empty()) << "got " << a.unexpected << ", want 450 or 550";
  if (policy == "list") {
    EXPECT_EQ(a.refused, 1000u) << "got " << a.refused << " 550 replies, want all (not on the list)";
  } else {
    EXPECT_EQ(a.tempfailed, 1000u) << "got " << a.tempfailed << " 450 replies, want all (not known)";
  }
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u) << "after the attack";
  EXPECT_EQ(queued_for(*daemon_, "mailer-daemon"), 0u) << "after the attack";
  std::uint64_t known_count = 0;
  if (auto r = daemon_->cli({"customer", "recipients", "acme", "--json"}); r.exit_code == 0) {
    auto o = Poco::JSON::Parser().parse(r.out).extract<Object::Ptr>();
    known_count = o->getValue<std::uint64_t>("known_good") + o->getValue<std::uint64_t>("known_bad");
  }
  EXPECT_LE(known_count, 1u) << "got " << known_count << " known addresses after the attack, want only alice's";

  // The known user's mail is still taken.
  auto to_alice = submit(daemon_->port(), "friend@sender.test", {{"alice@acme.test", ""}},
                         test_message("during", "alice@acme.test", "still there\r\n"));
  EXPECT_TRUE(to_alice.error.empty()) << "alice while down: got " << to_alice.error << ", want queued";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u) << "alice's message only";
}

INSTANTIATE_TEST_SUITE_P(Policies, RecipientsDictionaryAttack, ::testing::Values("learn", "verify", "list"),
                         [](const auto& param_info) { return param_info.param; });

TEST_F(Recipients, VerifyCalloutsAreRateLimitedDuringAnAttack) {
  auto postfix = customer_server("127.0.0.157");
  start_daemon({{"recipient_probes_per_minute", "20"}});
  ASSERT_TRUE(cli_ok({"customer", "add", "acme", "--domain", "acme.test", "--mode", "hold", "--route",
                      postfix->address(), "--recipient-check", "verify"}));
  // The customer is up: 200 random addresses, at most 20 of them asked.
  const auto a = dictionary_attack(random_local_parts(200, 57), "acme.test");
  std::cout << "[ figures  ] attack on a verify customer that is up: 200 RCPTs in " << a.seconds
            << " s (" << a.refused << " refused after a callout, " << a.tempfailed << " tempfailed)\n";
  EXPECT_EQ(a.answered, 200u);
  EXPECT_EQ(a.accepted, 0u);
  EXPECT_TRUE(a.unexpected.empty()) << "got " << a.unexpected << ", want 450 or 550";
  EXPECT_EQ(a.refused + a.tempfailed, 200u);
  // Every callout is logged; those the limit stopped say "(rate limit)".
  const auto log = daemon_->log_text();
  const auto asked = count_lines_with(log, "callout for <") - count_lines_with(log, "(rate limit)");
  EXPECT_LE(asked, 20u) << "got " << asked << " callouts past the limit, want at most 20 (recipient_probes_per_minute)";
  // Distinct addresses the customer's server refused (its maillog may log one twice).
  std::set<std::string> refused_there;
  {
    std::istringstream maillog(postfix->log_text());
    for (std::string line; std::getline(maillog, line);) {
      const auto at = line.find(" to=<");
      if (line.find("Recipient address rejected") == std::string::npos || at == std::string::npos) continue;
      refused_there.insert(line.substr(at + 5, line.find('>', at) - at - 5));
    }
  }
  const auto at_server = refused_there.size();
  EXPECT_LE(at_server, 20u) << "got " << at_server
                            << " addresses refused at the customer's server, want at most 20 asked; "
                            << a.refused << " refused and " << a.tempfailed << " tempfailed here in "
                            << a.seconds << " s; maillog:\n" << postfix->log_text() << "\nlog:\n" << log;
  EXPECT_GE(a.refused, 1u) << "got no callout answered 550 5.1.1, want the first ones asked";
  EXPECT_LE(a.refused, 20u) << "got " << a.refused << " refused as known bad, want at most the 20 asked";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
}


// --- list, managed live ---------------------------------------------------------

class RecipientsList : public Recipients {
 protected:
  void start_with_api() {
    admin_port_ = free_port();
    start_daemon({{"admin_listen", "127.0.0.1:" + std::to_string(admin_port_)}, {"admin_timeout", "10s"}});
    token_ = admin_token(*daemon_);
    ASSERT_EQ(token_.size(), 64u) << "got token \"" << token_ << "\", want 64 hex digits";
  }

  http_answer call(const std::string& method, const std::string& target, const std::string& body = "") {
    return http_call(admin_port_, method, target, body, "Bearer " + token_);
  }

  // The list as `customer recipients NAME export` prints it, one address a line.
  std::vector<std::string> exported(const std::string& customer) {
    auto r = daemon_->cli({"customer", "recipients", customer, "export"}, 120s);
    EXPECT_EQ(r.exit_code, 0) << "export: " << r.err;
    std::vector<std::string> out;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

  std::uint16_t admin_port_ = 0;
  std::string token_;
};

TEST_F(RecipientsList, CliAndApiChangeWhatRcptAccepts) {
  start_with_api();
  ASSERT_TRUE(cli_ok({"customer", "add", "acme", "--domain", "acme.test", "--subdomains", "--mode", "hold",
                      "--recipient-check", "list"}));
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 550, "5.1.1")) << "empty list";

  ASSERT_TRUE(cli_ok({"customer", "recipients", "acme", "add", "alice@acme.test", "bob@acme.test",
                      "*@dept.acme.test"}));
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 250)) << "listed";
  EXPECT_TRUE(reply_is(rcpt("Alice@ACME.test"), 250)) << "listed, other case";
  EXPECT_TRUE(reply_is(rcpt("bob+news@acme.test"), 250)) << "user+tag of a listed user";
  EXPECT_TRUE(reply_is(rcpt("anyone@dept.acme.test"), 250)) << "*@dept.acme.test";
  EXPECT_TRUE(reply_is(rcpt("carol@acme.test"), 550, "5.1.1")) << "not listed";
  EXPECT_TRUE(reply_is(rcpt("anyone@sales.acme.test"), 550, "5.1.1")) << "another subdomain";
  EXPECT_EQ(exported("acme"), (std::vector<std::string>{"*@dept.acme.test", "alice@acme.test", "bob@acme.test"}));
  auto outside = daemon_->cli({"customer", "recipients", "acme", "add", "eve@other.test"});
  EXPECT_NE(outside.exit_code, 0) << "got an address outside the customer's domains added, want refused";

  ASSERT_TRUE(cli_ok({"customer", "recipients", "acme", "remove", "bob@acme.test"}));
  EXPECT_TRUE(reply_is(rcpt("bob@acme.test"), 550, "5.1.1")) << "removed";
  EXPECT_TRUE(reply_is(rcpt("bob+news@acme.test"), 550, "5.1.1")) << "user+tag of a removed user";
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 250)) << "still listed";

  // The API: the whole list replaced, read back, one address added, one removed.
  auto put = call("PUT", "/api/v1/customers/acme/recipients",
                  R"({"addresses":["dave@acme.test","erin@acme.test","*@acme.test"]})");
  ASSERT_EQ(put.status, 200) << put.body;
  auto got = call("GET", "/api/v1/customers/acme/recipients");
  ASSERT_EQ(got.status, 200) << got.body;
  auto o = got.json();
  ASSERT_TRUE(o) << got.body;
  auto result = o->has("result") ? o->getObject("result") : o;
  auto list = result->getArray("list");
  ASSERT_TRUE(list) << got.body;
  std::vector<std::string> entries;
  for (std::size_t i = 0; i < list->size(); ++i) entries.push_back(list->getElement<std::string>(static_cast<unsigned>(i)));
  EXPECT_EQ(entries, (std::vector<std::string>{"*@acme.test", "dave@acme.test", "erin@acme.test"})) << got.body;
  EXPECT_TRUE(reply_is(rcpt("anyone@acme.test"), 250)) << "*@acme.test (the customer's own domain)";
  EXPECT_TRUE(reply_is(rcpt("anyone@dept.acme.test"), 550, "5.1.1")) << "*@dept.acme.test replaced";

  auto put2 = call("PUT", "/api/v1/customers/acme/recipients", R"({"addresses":["dave@acme.test","erin@acme.test"]})");
  ASSERT_EQ(put2.status, 200) << put2.body;
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 550, "5.1.1")) << "not in the list PUT";
  EXPECT_TRUE(reply_is(rcpt("dave@acme.test"), 250)) << "in the list PUT";
  auto del = call("DELETE", "/api/v1/customers/acme/recipients?address=dave@acme.test");
  EXPECT_EQ(del.status, 200) << del.body;
  EXPECT_TRUE(reply_is(rcpt("dave@acme.test"), 550, "5.1.1")) << "deleted over the API";
  auto post = call("POST", "/api/v1/customers/acme/recipients", R"({"addresses":["frank@acme.test"]})");
  EXPECT_EQ(post.status, 200) << post.body;
  EXPECT_TRUE(reply_is(rcpt("frank@acme.test"), 250)) << "added over the API";
  EXPECT_EQ(exported("acme"), (std::vector<std::string>{"erin@acme.test", "frank@acme.test"}));
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
}

TEST_F(RecipientsList, ImportsOneHundredThousandAddresses) {
  start_daemon();
  ASSERT_TRUE(cli_ok({"customer", "add", "bulk", "--domain", "bulk.test", "--mode", "hold",
                      "--recipient-check", "list"}));
  const auto file = daemon_->dir() / "addresses.txt";
  {
    std::ofstream out(file);
    char line[64];
    for (int i = 0; i < 100000; ++i) {
      std::snprintf(line, sizeof line, "user%06d@bulk.test\n", i);
      out << line;
    }
  }
  // While the import runs, a client keeps asking RCPT: how long does one
  // take at worst (a figure, not a threshold: the import must not stall intake)?
  std::atomic<bool> importing{true};
  std::atomic<std::int64_t> worst_rcpt_ms{0};
  std::atomic<int> rcpts_during{0};
  std::thread meter([&] {
    while (importing) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = rcpt("nobody@bulk.test");
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
      if (r) ++rcpts_during;
      if (ms > worst_rcpt_ms) worst_rcpt_ms = ms;
      std::this_thread::sleep_for(50ms);  // pacing of the meter, not a synchronisation
    }
  });
  const auto start = std::chrono::steady_clock::now();
  auto imported = daemon_->cli({"customer", "recipients", "bulk", "import", file.string()}, 300s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  importing = false;
  meter.join();
  std::cout << "[ figures  ] import of 100000 addresses: " << seconds << " s (" << imported.out << ")\n";
  std::cout << "[ figures  ] during the import: " << rcpts_during << " RCPT sessions, the slowest took "
            << worst_rcpt_ms << " ms\n";
  RecordProperty("worst_rcpt_ms_during_import", std::to_string(worst_rcpt_ms.load()));
  RecordProperty("import_seconds", std::to_string(seconds));
  ASSERT_EQ(imported.exit_code, 0) << imported.err << imported.out;

  const auto export_start = std::chrono::steady_clock::now();
  const auto lines = exported("bulk");
  std::cout << "[ figures  ] export of the list: "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - export_start).count() << " s\n";
  EXPECT_EQ(lines.size(), 100000u) << "got " << lines.size() << " exported, want 100000";
  EXPECT_TRUE(reply_is(rcpt("user054321@bulk.test"), 250)) << "imported";
  EXPECT_TRUE(reply_is(rcpt("user099999@bulk.test"), 250)) << "imported, the last one";
  EXPECT_TRUE(reply_is(rcpt("user100000@bulk.test"), 550, "5.1.1")) << "not imported";
  EXPECT_TRUE(reply_is(rcpt("nobody@bulk.test"), 550, "5.1.1")) << "not imported";

  // A second import of the same file adds nothing and keeps the count.
  auto again = daemon_->cli({"customer", "recipients", "bulk", "import", file.string()}, 300s);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find(" 0 added"), std::string::npos) << "got \"" << again.out << "\", want 0 added";
}

// --- restart -------------------------------------------------------------------

TEST_F(Recipients, KnownAddressesSurviveRestart) {
  auto postfix = customer_server("127.0.0.155");
  start_daemon();
  ASSERT_NO_FATAL_FAILURE(callouts_teach_alice_and_mallory(*postfix));

  EXPECT_EQ(daemon_->stop(), 0) << daemon_->log_text();
  ASSERT_TRUE(postfix->stop());
  daemon_->restart();
  EXPECT_TRUE(wait_known("acme", "alice@acme.test", "good", "callout")) << "after the restart";
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 250)) << "alice after a restart, server stopped";
  EXPECT_TRUE(reply_is(rcpt("mallory@acme.test"), 550, "5.1.1")) << "mallory after a restart, server stopped";
  EXPECT_TRUE(reply_is(rcpt("carol@acme.test"), 450, "4.1.1")) << "carol after a restart, server stopped";
}

TEST_F(Recipients, KnownAddressesSurviveACrashOnceWritten) {
  auto postfix = customer_server("127.0.0.158");
  start_daemon();
  ASSERT_NO_FATAL_FAILURE(callouts_teach_alice_and_mallory(*postfix));
  // Written in batches (one transaction a second): wait for the batch.
  const std::set<std::string> want{"alice@acme.test good", "mallory@acme.test bad"};
  std::set<std::string> rows;
  EXPECT_TRUE(wait_until(
      [&] {
        rows = known_rows_in_store(daemon_->data_dir());
        return rows == want;
      },
      10s, 100ms))
      << "got " << rows.size() << " known rows in the store, want alice good and mallory bad";

  daemon_->kill();
  ASSERT_TRUE(postfix->stop());
  daemon_->restart();
  EXPECT_TRUE(reply_is(rcpt("alice@acme.test"), 250)) << "alice after a crash, server stopped";
  EXPECT_TRUE(reply_is(rcpt("mallory@acme.test"), 550, "5.1.1")) << "mallory after a crash, server stopped";
  EXPECT_TRUE(reply_is(rcpt("carol@acme.test"), 450, "4.1.1")) << "carol after a crash, server stopped";
}

}  // namespace
