// link_flush_test.cpp — routes follow links, and a link that drops
// mid-flush loses nothing: the real flushgated and CLI (`link up|down`,
// `flush --wait`), private Postfix instances and smtp-sink on 127.0.0.x.
//
// Covers ARCHITECTURE.md "Route" (derived: the best live link at the
// customer's link port, else the primary route, else hold), the link
// security rule (an address outside the user's allowed range is refused and
// changes nothing) and invariant 6 (a link going down mid-flush leaves every
// undelivered recipient queued; only the message in flight may go twice).
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <thread>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

class LinkFlush : public ::testing::Test {
 protected:
  void start_daemon() {
    daemon_.emplace(daemon_fixture::settings{{"retry_schedule", "1s"}});
    daemon_->start();
  }

  void add_acme(const std::vector<std::string>& options) {
    auto added = daemon_->add_customer("acme", "acme.test", options);
    ASSERT_EQ(added.exit_code, 0) << "customer add acme: got exit " << added.exit_code << " ("
                                  << added.err << "), want 0";
  }

  std::string queue_one(const std::string& subject) {
    auto s = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                    test_message(subject, "bob@acme.test", "via a link\r\n"));
    EXPECT_TRUE(s.error.empty()) << s.error;
    return s.qid;
  }

  // `link list --json` as (user, address) pairs; nullopt when the CLI failed.
  std::optional<std::vector<std::pair<std::string, std::string>>> links() {
    auto r = daemon_->cli({"--json", "link", "list"});
    if (r.exit_code != 0) return std::nullopt;
    std::vector<std::pair<std::string, std::string>> out;
    try {
      Poco::JSON::Parser parser;
      auto rows = parser.parse(r.out).extract<Poco::JSON::Array::Ptr>();
      for (std::size_t i = 0; i < rows->size(); ++i) {
        auto row = rows->getObject(static_cast<unsigned>(i));
        out.emplace_back(row->getValue<std::string>("user"), row->getValue<std::string>("address"));
      }
    } catch (const std::exception&) {  // Poco::Exception is one
      return std::nullopt;
    }
    return out;
  }

  // `flush acme` (no wait) must be refused because the route is "hold".
  void expect_no_route() {
    auto r = daemon_->cli({"flush", "acme"});
    EXPECT_EQ(r.exit_code, 1) << "flush with no route: got exit " << r.exit_code << ", want 1\n"
                              << r.out << r.err;
    EXPECT_NE(r.err.find("no route"), std::string::npos)
        << "got \"" << r.err << "\", want it to say the customer has no route";
  }

  static bool wait_files(const postfix_instance& postfix, std::size_t count,
                         std::chrono::milliseconds timeout = 20s) {
    return wait_until([&] { return postfix.message_files().size() >= count; }, timeout, 50ms) &&
           postfix.message_files().size() == count;
  }

  std::optional<daemon_fixture> daemon_;
};

// Starts both instances at once (each takes a few seconds to come up).
void start_together(postfix_instance& a, postfix_instance& b) {
  std::exception_ptr failed;
  std::thread other([&] {
    try {
      b.start();
    } catch (...) {
      failed = std::current_exception();
    }
  });
  try {
    a.start();
  } catch (...) {
    other.join();
    throw;
  }
  other.join();
  if (failed) std::rethrow_exception(failed);
}

TEST_F(LinkFlush, LinkUpSendsQueuedMailToTheLinkNotThePrimaryRoute) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  // The primary route's server and the server behind the dial-up link share
  // nothing but the domain; the link port is where the customer listens.
  const std::uint16_t link_port = free_port_on("127.0.0.6");
  auto primary = postfix_instance::final_destination(
      {"acme.test"}, "127.0.0.5:" + std::to_string(free_port_on("127.0.0.5")));
  auto linked = postfix_instance::final_destination({"acme.test"},
                                                    "127.0.0.6:" + std::to_string(link_port));
  start_together(primary, linked);
  start_daemon();
  add_acme({"--mode", "hold", "--route", primary.host() + ":" + std::to_string(primary.port()),
            "--link-port", std::to_string(link_port), "--dialup-user", "acme-dial"});

  queue_one("link-1");
  queue_one("link-2");
  EXPECT_FALSE(wait_until([&] { return !primary.message_files().empty(); }, 1500ms))
      << "got mail at the primary route in hold mode, want none before a trigger";

  auto up = daemon_->cli({"link", "up", "acme-dial", "--ip", "127.0.0.6", "--session", "s1"});
  ASSERT_EQ(up.exit_code, 0) << "link up: got exit " << up.exit_code << ", want 0\n" << up.err;
  auto live = links();
  ASSERT_TRUE(live.has_value()) << "link list --json failed";
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0], (std::pair<std::string, std::string>{"acme-dial", "127.0.0.6"}));

  EXPECT_TRUE(wait_files(linked, 2)) << "got " << linked.message_files().size()
                                     << " messages over the link, want 2; log:\n"
                                     << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
  EXPECT_TRUE(primary.message_files().empty())
      << "got " << primary.message_files().size() << " messages at the primary route, want 0";
  EXPECT_FALSE(log_lines(*daemon_, {"customer acme: flush started (link up) over link acme-dial"})
                   .empty())
      << "got no flush logged as started by the link, want one; log:\n" << daemon_->log_text();
}

TEST_F(LinkFlush, LinkDownHoldsNewMailAgain) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  const std::uint16_t link_port = free_port_on("127.0.0.7");
  auto linked = postfix_instance::final_destination({"acme.test"},
                                                    "127.0.0.7:" + std::to_string(link_port));
  linked.start();
  start_daemon();
  // Relay mode, no primary route: the link is the only way out.
  add_acme({"--link-port", std::to_string(link_port), "--dialup-user", "acme-dial"});

  const std::string first = queue_one("down-1");
  expect_no_route();
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);

  auto up = daemon_->cli({"link", "up", "acme-dial", "--ip", "127.0.0.7", "--session", "s1"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  ASSERT_TRUE(wait_files(linked, 1)) << "got no delivery over the link, want one; log:\n"
                                     << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));

  auto down = daemon_->cli({"link", "down", "acme-dial", "--session", "s1"});
  ASSERT_EQ(down.exit_code, 0) << down.err;
  auto live = links();
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty()) << "got " << live->size() << " live links after link down, want 0";

  // Held again: no route, no attempt, the server sees nothing new.
  const std::string second = queue_one("down-2");
  expect_no_route();
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);
  auto r = recipients_of(*daemon_, second);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].attempts, 0u) << "got an attempt with no route, want none";
  EXPECT_EQ(linked.message_files().size(), 1u);

  // The next link flushes it.
  up = daemon_->cli({"link", "up", "acme-dial", "--ip", "127.0.0.7", "--session", "s2"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  EXPECT_TRUE(wait_files(linked, 2)) << "got " << linked.message_files().size()
                                     << " messages over the link, want 2";
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

TEST_F(LinkFlush, LinkUpOutsideTheDialupNetIsRefusedAndChangesNothing) {
  start_daemon();
  // Nothing listens on the link port: an accepted link is only recorded.
  const std::uint16_t link_port = free_port_on("127.0.0.9");
  add_acme({"--link-port", std::to_string(link_port), "--dialup-user", "acme-dial",
            "--dialup-net", "127.0.0.0/24"});
  const std::string qid = queue_one("outside-net");

  auto forged = daemon_->cli({"link", "up", "acme-dial", "--ip", "127.0.1.9", "--session", "x"});
  EXPECT_EQ(forged.exit_code, 1) << "link up outside 127.0.0.0/24: got exit " << forged.exit_code
                                 << ", want 1\n" << forged.out << forged.err;
  EXPECT_NE(forged.err.find("outside"), std::string::npos)
      << "got \"" << forged.err << "\", want it to say the address is outside the allowed range";
  auto live = links();
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty()) << "got a live link after a refused link up, want none";
  expect_no_route();
  auto r = recipients_of(*daemon_, qid);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].attempts, 0u) << "got a delivery attempt after a refused link up, want none";
  EXPECT_FALSE(log_lines(*daemon_, {"SECURITY", "acme-dial", "REFUSED"}).empty())
      << "got no security warning in the log, want one; log:\n" << daemon_->log_text();

  // Inside the range the same user is accepted.
  auto good = daemon_->cli({"link", "up", "acme-dial", "--ip", "127.0.0.9", "--session", "y"});
  EXPECT_EQ(good.exit_code, 0) << good.err;
  live = links();
  ASSERT_TRUE(live.has_value());
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].second, "127.0.0.9");
}

TEST_F(LinkFlush, DroppedConnectionKeepsEveryUnansweredRecipientQueued) {
  if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
  const std::string host = "127.0.0.8";
  const std::uint16_t port = free_port_on(host);
  // smtp-sink -M 5 reads the fifth message and exits before answering it:
  // the line drops in the middle of a pipelined batch.
  smtp_sink dropping(host, port, {"-M", "5"});
  dropping.start();
  start_daemon();
  add_acme({"--mode", "hold", "--route", host + ":" + std::to_string(port)});

  constexpr int total = 12;
  std::string body;  // 8 KB a message: the batch spans several TCP writes
  for (int line = 0; line < 100; ++line) body += std::string(78, 'a' + line % 26) + "\r\n";
  std::map<std::string, std::string> subject_of;  // qid → subject
  for (int i = 1; i <= total; ++i) {
    const std::string subject = "drop-" + std::to_string(i) + "-x";
    auto s = submit(daemon_->port(), "alice@sender.test",
                    {{"bob@acme.test", ""}, {"carol@acme.test", ""}},
                    test_message(subject, "bob@acme.test", body));
    ASSERT_TRUE(s.error.empty()) << s.error;
    subject_of[s.qid] = subject;
  }

  auto flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(flushed.exit_code, 1) << "flush --wait over a dropping link: got exit "
                                  << flushed.exit_code << ", want 1\n" << flushed.out << flushed.err;
  EXPECT_TRUE(wait_until([&] { return !dropping.running(); }, 10s)) << "smtp-sink -M 5 still runs";

  // Every message either went (both recipients 2xx) or is whole in the queue.
  std::set<std::string> sent_first;
  const auto queued = queue_ids_of(*daemon_, "acme");
  const std::set<std::string> still(queued.begin(), queued.end());
  for (const auto& [qid, subject] : subject_of) {
    const auto sent = log_lines(*daemon_, {qid + ": to=<", "status=sent"});
    if (still.count(qid) == 0) {
      EXPECT_EQ(sent.size(), 2u) << qid << " (" << subject
                                 << ") left the queue: got " << sent.size()
                                 << " recipients logged as sent, want 2";
      sent_first.insert(subject);
      continue;
    }
    const auto r = recipients_of(*daemon_, qid);
    EXPECT_EQ(r.size(), 2u) << qid << ": got " << r.size() << " recipients queued, want 2";
    for (const auto& rc : r) {
      EXPECT_GE(rc.attempts, 1u) << qid << " " << rc.address << ": got no attempt counted";
    }
  }
  EXPECT_GE(sent_first.size(), 1u) << "got no message through before the drop, want some";
  EXPECT_LT(sent_first.size(), static_cast<std::size_t>(total))
      << "got every message through, want the drop to leave some behind";
  EXPECT_TRUE(log_lines(*daemon_, {"status=bounced"}).empty())
      << "got a bounce after a dropped connection, want none; log:\n" << daemon_->log_text();
  EXPECT_EQ(queued_for(*daemon_, "mailer-daemon"), 0u) << "got a DSN queued, want none";

  // The link comes back (a sink that answers on the same address): the rest goes.
  smtp_sink answering(host, port);
  answering.start();
  flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "30"}, 60s);
  EXPECT_EQ(flushed.exit_code, 0) << flushed.out << flushed.err;
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);

  // Each message arrived; only the one in flight at the drop may twice.
  std::map<std::string, int> seen;
  for (const auto* sink : {&dropping, &answering}) {
    for (const auto& dump : sink->dumps()) {
      for (const auto& [qid, subject] : subject_of) {
        if (dump.find("Subject: " + subject + "\n") != std::string::npos) ++seen[subject];
      }
    }
  }
  int twice = 0;
  for (const auto& [qid, subject] : subject_of) {
    EXPECT_GE(seen[subject], 1) << subject << ": got it at neither sink, want it delivered";
    EXPECT_LE(seen[subject], 2) << subject << ": got " << seen[subject] << " copies";
    if (seen[subject] == 2) {
      ++twice;
      EXPECT_EQ(sent_first.count(subject), 0u)
          << subject << " was acknowledged before the drop and still went again";
    }
  }
  EXPECT_LE(twice, 1) << "got " << twice << " messages delivered twice, want at most the one in flight";
}

}  // namespace
