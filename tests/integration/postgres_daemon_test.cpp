// postgres_daemon_test.cpp — the daemon runs on PostgreSQL: the real
// flushgated with store = postgresql against a private server
// (tests/support/postgres_instance.hpp), swaks for intake, the real CLI, a
// private Postfix as the customer's mail server.
//
// Covers: mail taken in over SMTP is held in the PostgreSQL database (read
// there directly, not through flushgate), `flushgate queue list` shows it,
// a flush delivers it to Postfix and removes it from the database; the
// conninfo's password is in no log line and not in `config running`; while
// the database is down (pg_ctl stop -m immediate) intake answers 451 4.3.0
// and the daemon keeps running, and once it is back mail is taken again
// without a restart of flushgated; `flushgate store copy` moves a single
// node's SQLite queue into PostgreSQL, and a second run copies nothing. Two
// nodes on one database: while a silent node gw-z holds a customer's
// delivery lease (a row the test writes), node gw-a's flush of it answers
// that the customer is held by gw-z and delivers nothing; once that lease
// is released, gw-a delivers to Postfix; while the live node gw-b holds
// it, a flush asked of gw-a is run by gw-b. (cluster_test.cpp has three
// nodes, RADIUS, fetchmail and a kill -9.)
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"  // free_port_on
#include "tests/support/postfix_instance.hpp"
#include "tests/support/postgres_instance.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <regex>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

// swaks to daemon for bob@acme.test; the transcript (stdout and stderr).
command_result send_with_swaks(const daemon_fixture& daemon, const std::string& subject) {
  auto r = run_command(
      {"swaks", "--server", "127.0.0.1:" + std::to_string(daemon.port()), "--helo", "client.test",
       "--timeout", "20", "--from", "alice@sender.test", "--to", "bob@acme.test", "--header",
       "Subject: " + subject, "--body", "kept in a cluster"},
      60s);
  r.stdout_text += r.stderr_text;
  return r;
}

bool skip_reason(std::string& why) {
  if (!postgres_instance::available()) {
    why = postgres_instance::unavailable_reason();
  } else if (!program_available("swaks")) {
    why = "swaks is not installed";
  } else if (!postfix_instance::available()) {
    why = "needs root and Postfix (/usr/sbin/postfix) for the customer's mail server";
  }
  return !why.empty();
}

// A private PostgreSQL with a fresh database for each test (skips where
// PostgreSQL, swaks or Postfix is missing).
class PostgresDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why; skip_reason(why)) GTEST_SKIP() << why;
    ASSERT_NO_THROW(pg.start());
    auto created = pg.create_database();
    ASSERT_TRUE(created) << "CREATE DATABASE failed:\n" << pg.log_text();
    db = *created;
  }

  // The customer's Postfix for acme.test on `host`, started.
  static postfix_instance customer_server(const std::string& host) {
    auto postfix = postfix_instance::final_destination(
        {"acme.test"}, host + ":" + std::to_string(free_port_on(host)));
    postfix.start();
    return postfix;
  }

  postgres_instance pg;
  std::optional<std::string> db;
};

TEST_F(PostgresDaemon, HoldsMailInPostgresqlAndFlushesItToPostfix) {
  auto postfix = customer_server("127.0.0.4");

  // A password the server does not ask for (trust), there only to be masked.
  const std::string secret = "hunter2-never-shown";
  daemon_fixture daemon({{"store", "postgresql"},
                         {"postgresql_conninfo", pg.conninfo(*db) + " password=" + secret},
                         {"node_name", "gw-a"},
                         {"retry_schedule", "1s"}});
  daemon.start();
  auto added = daemon.add_customer(
      "acme", "acme.test",
      {"--mode", "hold", "--route", postfix.host() + ":" + std::to_string(postfix.port())});
  ASSERT_EQ(added.exit_code, 0) << "customer add acme: got exit " << added.exit_code << " ("
                                << added.err << "), want 0";
  EXPECT_EQ(pg.query_int(*db, "SELECT count(*) FROM customers WHERE name = 'acme'"), 1)
      << "the customer is in PostgreSQL";

  auto sent = send_with_swaks(daemon, "held in postgresql");
  const std::string& transcript = sent.stdout_text;
  ASSERT_EQ(sent.exit_code, 0) << "swaks: got exit " << sent.exit_code << ", want 0\n"
                               << transcript << daemon.log_text();
  std::smatch match;
  ASSERT_TRUE(
      std::regex_search(transcript, match, std::regex("<-  250 2\\.0\\.0 Ok: queued as (\\S+)")))
      << "got no \"250 2.0.0 Ok: queued as\" in the swaks transcript, want one:\n"
      << transcript;
  const std::string qid = match[1];

  // Held, and held in PostgreSQL: an outside connection sees the row.
  EXPECT_EQ(pg.query_int(*db, "SELECT count(*) FROM messages WHERE qid = '" + qid + "'"), 1)
      << "message " << qid << " in the database";
  EXPECT_EQ(pg.query_int(*db, "SELECT count(*) FROM recipients"), 1);
  auto listed = daemon.cli({"queue", "list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(qid), std::string::npos) << "queue list: got\n"
                                                     << listed.out << "want " << qid;
  EXPECT_TRUE(postfix.message_files().empty()) << "hold mode delivered before the flush";

  auto flushed = daemon.cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(flushed.exit_code, 0) << "flush --wait: got exit " << flushed.exit_code << ", want 0\n"
                                  << flushed.out << flushed.err;
  EXPECT_TRUE(wait_until([&] { return postfix.message_files().size() == 1; }, 20s, 50ms))
      << "got " << postfix.message_files().size() << " messages at Postfix, want 1";
  EXPECT_TRUE(wait_until(
      [&] {
        return pg.query_int(*db, "SELECT count(*) FROM messages") == std::optional<std::int64_t>(0);
      },
      10s, 50ms))
      << "the delivered message is still in the database";

  // The password is masked where the configuration is shown, and never logged.
  auto running = daemon.cli({"config", "running"});
  EXPECT_EQ(running.exit_code, 0) << running.err;
  EXPECT_NE(running.out.find("password=********"), std::string::npos)
      << "config running: got\n"
      << running.out << "want the password masked";
  EXPECT_EQ(running.out.find(secret), std::string::npos) << "config running shows the password";
  ASSERT_EQ(daemon.stop(), 0) << daemon.log_text();
  EXPECT_EQ(daemon.log_text().find(secret), std::string::npos) << "the log holds the password";
  EXPECT_NE(daemon.log_text().find("node gw-a is number"), std::string::npos)
      << "got log without the PostgreSQL store's start line:\n"
      << daemon.log_text();
}

TEST_F(PostgresDaemon, AnswersTemporaryFailureWhileTheDatabaseIsDownAndRecovers) {
  daemon_fixture daemon({{"store", "postgresql"},
                         {"postgresql_conninfo", pg.tcp_conninfo(*db)},
                         {"node_name", "gw-a"}});
  daemon.start();
  auto added = daemon.add_customer("acme", "acme.test", {"--mode", "hold"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  auto first = send_with_swaks(daemon, "before");
  ASSERT_EQ(first.exit_code, 0) << first.stdout_text;

  ASSERT_TRUE(pg.stop_immediate());
  auto during = send_with_swaks(daemon, "during");
  EXPECT_NE(during.exit_code, 0) << "swaks with the database down: got exit 0, want a failure";
  EXPECT_NE(during.stdout_text.find("<** 451 4.3.0"), std::string::npos)
      << "got, with the database down:\n"
      << during.stdout_text << "want 451 4.3.0 after DATA";
  EXPECT_EQ(during.stdout_text.find("queued as"), std::string::npos) << during.stdout_text;
  EXPECT_TRUE(daemon.running()) << "flushgated died with its database:\n" << daemon.log_text();

  ASSERT_NO_THROW(pg.start());
  // Polled: the daemon reconnects on its own, at most once per backoff step.
  std::string last;
  const bool accepted = wait_until(
      [&] {
        auto r = send_with_swaks(daemon, "after");
        last = r.stdout_text;
        return r.exit_code == 0;
      },
      30s, 200ms);
  EXPECT_TRUE(accepted) << "got, 30 s after the database came back:\n" << last << daemon.log_text();
  EXPECT_EQ(pg.query_int(*db, "SELECT count(*) FROM messages"), 2)
      << "the message from before the outage and the one after, nothing from during it";
  ASSERT_EQ(daemon.stop(), 0) << daemon.log_text();
}

// The migration of README "Moving a running single node to PostgreSQL":
// a node on SQLite holds mail, is stopped, `flushgate store copy` moves its
// queue into PostgreSQL (run twice: the second copies nothing), and a
// daemon on PostgreSQL finds the same queue ids and delivers them.
TEST_F(PostgresDaemon, StoreCopyMovesASingleNodesQueueIntoPostgresql) {
  auto postfix = customer_server("127.0.0.5");

  daemon_fixture single;  // store = sqlite in its data_dir
  single.start();
  auto added = single.add_customer(
      "acme", "acme.test",
      {"--mode", "hold", "--route", postfix.host() + ":" + std::to_string(postfix.port())});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  for (int i = 0; i < 3; ++i) {
    auto sent = send_with_swaks(single, "before the move " + std::to_string(i));
    ASSERT_EQ(sent.exit_code, 0) << sent.stdout_text;
  }
  const auto qids = queue_ids_of(single, "acme");
  ASSERT_EQ(qids.size(), 3u);
  ASSERT_EQ(single.stop(), 0) << single.log_text();

  const std::vector<std::string> copy{"store", "copy", "--from", "sqlite:" + single.data_dir().string(),
                                      "--to", "postgresql:" + pg.conninfo(*db)};
  auto first = single.cli(copy, 60s);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_NE(first.out.find("customers: 2 added"), std::string::npos)
      << "got " << first.out << ", want acme and the notices customer added";
  EXPECT_NE(first.out.find("messages: 3 copied"), std::string::npos) << first.out;
  auto again = single.cli(copy, 60s);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("messages: 0 copied (0 B), 3 already there"), std::string::npos)
      << "a second run: got " << again.out;
  EXPECT_EQ(pg.query_int(*db, "SELECT count(*) FROM messages"), 3);

  daemon_fixture cluster_node({{"store", "postgresql"},
                               {"postgresql_conninfo", pg.conninfo(*db)},
                               {"node_name", "gw-a"}});
  cluster_node.start();
  auto moved = queue_ids_of(cluster_node, "acme");
  std::sort(moved.begin(), moved.end());
  auto want = qids;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(moved, want) << "the same queue ids on PostgreSQL";
  auto flushed = cluster_node.cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(flushed.exit_code, 0) << flushed.out << flushed.err;
  EXPECT_TRUE(wait_until([&] { return postfix.message_files().size() == 3; }, 20s, 50ms))
      << "got " << postfix.message_files().size() << " messages at Postfix, want 3";
  ASSERT_EQ(cluster_node.stop(), 0) << cluster_node.log_text();
}

// A lease held by a silent node is left alone until it ends; a lease held
// by a live node makes that node run the flush another node was asked for.
TEST_F(PostgresDaemon, CustomerHeldByAnotherNodeIsLeftToItAndTheHolderRunsTheFlush) {
  auto postfix = customer_server("127.0.0.6");

  daemon_fixture node_a({{"store", "postgresql"},
                         {"postgresql_conninfo", pg.conninfo(*db)},
                         {"node_name", "gw-a"}});
  daemon_fixture node_b({{"store", "postgresql"},
                         {"postgresql_conninfo", pg.conninfo(*db)},
                         {"node_name", "gw-b"}});
  node_a.start();
  node_b.start();
  auto added = node_a.add_customer(
      "acme", "acme.test",
      {"--mode", "hold", "--route", postfix.host() + ":" + std::to_string(postfix.port())});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  auto sent = send_with_swaks(node_a, "one node at a time");
  ASSERT_EQ(sent.exit_code, 0) << sent.stdout_text << node_a.log_text();

  // gw-z, a node that stopped answering, holds acme's delivery lease for
  // an hour (by the database's clock).
  ASSERT_TRUE(pg.exec(*db,
                      "INSERT INTO leases (customer_id, holder, fence, expires, taken) "
                      "SELECT id, 'gw-z', 1, (extract(epoch FROM now()) * 1000)::bigint + 3600000, "
                      "(extract(epoch FROM now()) * 1000)::bigint FROM customers "
                      "WHERE name = 'acme'"));
  auto refused = node_a.cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(refused.exit_code, 1) << "flush --wait while gw-z holds the lease: got exit "
                                  << refused.exit_code << ", want 1\n"
                                  << refused.out << refused.err;
  EXPECT_NE(refused.err.find("held by node gw-z"), std::string::npos)
      << "flush --wait: got\n"
      << refused.out << refused.err << "want it to say the customer is held by node gw-z";
  EXPECT_TRUE(postfix.message_files().empty()) << "a node delivered while gw-z held the lease";
  EXPECT_EQ(pg.query_int(*db, "SELECT count(*) FROM messages"), std::optional<std::int64_t>(1));
  EXPECT_EQ(pg.query_int(*db, "SELECT count(*) FROM leases WHERE holder = 'gw-z'"),
            std::optional<std::int64_t>(1))
      << "a node touched gw-z's lease";

  // gw-z lets go: gw-a takes the lease (a higher fence) and delivers.
  ASSERT_TRUE(pg.exec(*db, "UPDATE leases SET holder = '', expires = 0"));
  auto flushed = node_a.cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(flushed.exit_code, 0) << "flush --wait after the release: got exit "
                                  << flushed.exit_code << ", want 0\n"
                                  << flushed.out << flushed.err << node_a.log_text();
  EXPECT_TRUE(wait_until([&] { return postfix.message_files().size() == 1; }, 20s, 50ms))
      << "got " << postfix.message_files().size() << " messages at Postfix, want 1";
  EXPECT_EQ(pg.query_int(*db, "SELECT fence FROM leases"), std::optional<std::int64_t>(2))
      << "gw-a's take after gw-z's release";
  EXPECT_EQ(pg.query_int(*db, "SELECT count(*) FROM leases WHERE holder <> ''"),
            std::optional<std::int64_t>(0))
      << "gw-a's lease is released after its flush";

  // An operator's flush on gw-a while gw-b (alive) holds the lease: gw-a
  // tells gw-b, and gw-b runs the flush.
  auto second = send_with_swaks(node_a, "flushed by the holder");
  ASSERT_EQ(second.exit_code, 0) << second.stdout_text;
  ASSERT_TRUE(pg.exec(*db, "UPDATE leases SET holder = 'gw-b', fence = fence + 1, "
                           "expires = (extract(epoch FROM now()) * 1000)::bigint + 3600000"));
  auto asked = node_a.cli({"flush", "acme"});
  EXPECT_EQ(asked.exit_code, 0) << asked.out << asked.err;
  EXPECT_TRUE(wait_until([&] { return postfix.message_files().size() == 2; }, 20s, 50ms))
      << "got " << postfix.message_files().size() << " messages at Postfix, want 2\n"
      << node_a.log_text() << node_b.log_text();
  ASSERT_EQ(node_a.stop(), 0) << node_a.log_text();
  ASSERT_EQ(node_b.stop(), 0) << node_b.log_text();
  EXPECT_NE(node_a.log_text().find("delivery held by node gw-z"), std::string::npos)
      << "got log without the held-elsewhere line:\n"
      << node_a.log_text();
  EXPECT_NE(node_b.log_text().find("flush started (operator (node gw-a))"), std::string::npos)
      << "gw-b did not run the flush gw-a was asked for:\n" << node_b.log_text();
}

}  // namespace
