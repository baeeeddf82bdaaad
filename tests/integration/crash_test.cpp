// crash_test.cpp — SIGKILL flushgated under load; no acknowledged message
// may be lost, duplicated, or stored partially — and, with a flush to a
// customer Postfix running, none lost on the way out either.
//
// Covers ARCHITECTURE.md invariants 1 ("250 after DATA only once durable")
// and 2 ("a recipient leaves the queue only after the next hop said 2xx";
// delivery is at-least-once, RFC 5321 §6.1).
//
// Intake only (Crash.SigkillUnderLoadLosesNoAcknowledgedMessage): each round
// runs smtp-source for load (10 sessions, more messages than it can send
// before the kill) and four tracking clients that send numbered messages
// with random bodies, kills the daemon with SIGKILL at a random moment,
// restarts it on the same data_dir, stops it and compares the store with
// what the clients were told:
//   - every message that got 250 is stored exactly once, byte for byte;
//   - every stored message is one that was sent in full (nothing partial);
//   - messages that got no reply after their dot may be present or absent;
//   - messages whose dot was never sent, or that were refused, are absent.
//
// With a flush (Crash.SigkillDuringFlushToPostfixLosesNoAcknowledgedMessage):
// one daemon and one data_dir for the whole run; the customer is in relay
// mode with its route at a private Postfix (final destination, Maildir), so
// delivery runs all the time while smtp-source and the tracking clients
// send. Each round kills the daemon at a random moment, lets Postfix finish
// what it accepted, and takes two pictures while nothing runs: the Maildir
// files new since the last kill (the "era" that just ended: every copy
// Postfix took from that daemon process) and the store. A token present in
// both was handed over (Postfix said 250) but its "delivered" was not yet
// committed: it was in flight at the kill, and that is the only case in which
// it may arrive again. Then the daemon restarts and the next round begins.
// At the end the queue drains to Postfix (bounded wait), and:
//   - every acknowledged token is at Postfix or still queued (lost = 0);
//   - refused or never-finished tokens are nowhere;
//   - every copy at Postfix is the content sent, byte for byte;
//   - no token arrives twice within one era (no kill in between: no
//     excuse), and every copy but a token's last comes from an era at
//     whose end the token was in flight — so duplicates <= in-flight
//     tokens, and a token is duplicated at most once per kill;
//   - at most smtp_connections_per_customer x 100 (the delivery batch: one
//     transaction records a whole batch) tokens are in flight at one kill.
//
// FLUSHGATE_CRASH_ROUNDS sets the rounds (default 5 for intake, 4 with a
// flush; scripts/torture/crash runs 50), FLUSHGATE_CRASH_SEED replays a run;
// the seed is printed. The flush test ends with one "crash flush summary:"
// line of key=value figures for scripts/torture/crash.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

constexpr const char* smtp_source_path = "/usr/sbin/smtp-source";
constexpr int tracking_clients = 4;
constexpr std::size_t smtp_source_length = 2048;

enum class outcome {
  unsent,     // the final dot never left: must be absent
  in_flight,  // sent in full, no reply: may be present
  acked,      // 250 after the dot: must be present exactly once
  refused,    // a 4xx/5xx reply: must be absent
};

const char* to_string(outcome o) {
  switch (o) {
    case outcome::unsent: return "unsent";
    case outcome::in_flight: return "in flight";
    case outcome::acked: return "acknowledged";
    case outcome::refused: return "refused";
  }
  return "?";
}

struct tracked_message {
  std::string id;
  std::string content;
  outcome result = outcome::unsent;
};

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  return std::strtoull(text, nullptr, 10);
}

// "X-Test-Id: ID" as the first header, then Date, From, To, Message-ID and
// Subject (all a Postfix would add to a message without them, so what
// arrives there is what was sent), and 1-200 random lines.
std::string tracked_content(const std::string& id, std::mt19937_64& rng) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ .,:;-=";
  std::uniform_int_distribution<int> lines(1, 200);
  std::uniform_int_distribution<int> length(0, 76);
  std::uniform_int_distribution<std::size_t> letter(0, sizeof alphabet - 2);
  std::string s = "X-Test-Id: " + id +
                  "\r\nDate: Sun, 22 Nov 2026 06:00:00 +0000\r\nFrom: <tracker@sender.test>\r\n"
                  "To: <tracked@demo.test>\r\nMessage-ID: <" +
                  id + "@sender.test>\r\nSubject: crash test " + id + "\r\n\r\n";
  for (int i = lines(rng); i > 0; --i) {
    for (int j = length(rng); j > 0; --j) s += alphabet[letter(rng)];
    s += "\r\n";
  }
  return s;
}

// One tracking client: one session, numbered messages until the daemon dies
// or `stop` is set. Records what it was told about each message.
void run_tracking_client(std::uint16_t port, const std::string& prefix, std::uint64_t seed,
                         const std::atomic<bool>& stop, std::atomic<int>& acked,
                         std::vector<tracked_message>& out) {
  std::mt19937_64 rng(seed);
  smtp_probe probe(5s);
  if (!open_session(probe, port)) return;
  for (int n = 0; n < 5000 && !stop.load(); ++n) {
    tracked_message m;
    m.id = prefix + "-" + std::to_string(n);
    m.content = tracked_content(m.id, rng);
    auto sent = send_message(probe, "tracker@sender.test", {"tracked@demo.test"}, m.content);
    if (sent.reply) {
      const bool at_end = sent.stopped_at == stage::done;
      m.result = at_end && sent.reply->code == 250 ? outcome::acked : outcome::refused;
    } else {
      m.result = sent.content_sent ? outcome::in_flight : outcome::unsent;
    }
    out.push_back(m);
    if (m.result != outcome::acked) return;  // the session is gone or in an unknown state
    acked.fetch_add(1);
  }
}

// The X-Test-Id of stored content (after our Received), or "".
std::string test_id_of(const std::string& rest) {
  const std::string marker = "X-Test-Id: ";
  if (!rest.starts_with(marker)) return "";
  return rest.substr(marker.size(), rest.find("\r\n") - marker.size());
}

// smtp-source's message: its headers, an empty line, then the -l payload.
::testing::AssertionResult is_whole_smtp_source_message(const stored_message& m,
                                                        const std::string& rest) {
  if (m.info.recipients.size() != 1 || m.info.recipients[0].address != "load@demo.test") {
    return ::testing::AssertionFailure() << "got a load message for " << m.info.recipients.size()
                                         << " recipients, want only load@demo.test";
  }
  if (m.info.sender != "load@sender.test") {
    return ::testing::AssertionFailure() << "got sender " << m.info.sender << ", want load@sender.test";
  }
  const auto blank = rest.find("\r\n\r\n");
  if (blank == std::string::npos) {
    return ::testing::AssertionFailure() << "got a load message without a header/body separator";
  }
  const std::string body = rest.substr(blank + 4);
  // The payload is -l octets of text; smtp-source may end its last line with
  // a CRLF of its own.
  if (body.size() != smtp_source_length && body.size() != smtp_source_length + 2) {
    return ::testing::AssertionFailure() << "got a load message body of " << body.size()
                                         << " octets, want " << smtp_source_length;
  }
  if (!body.ends_with("\r\n") ||
      body.find_first_not_of("0123456789X\r\n") != std::string::npos) {
    return ::testing::AssertionFailure()
           << "got a load message body that is not smtp-source's lines of X ending in CRLF";
  }
  return ::testing::AssertionSuccess();
}

// One round: load, kill, restart, stop, then the store against the clients' records.
void run_round(int round, std::uint64_t seed) {
  SCOPED_TRACE("round " + std::to_string(round) + ", seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  daemon_fixture daemon(daemon_fixture::settings{{"smtpd_max_connections_per_client", "100"}});
  daemon.start();
  auto added = daemon.add_customer("demo", "demo.test", {"--mode", "hold"});
  ASSERT_EQ(added.exit_code, 0) << added.err;

  process load({smtp_source_path, "-s", "10", "-m", "100000", "-l",
                std::to_string(smtp_source_length), "-f", "load@sender.test", "-t",
                "load@demo.test", "127.0.0.1:" + std::to_string(daemon.port())});

  std::atomic<bool> stop{false};
  std::atomic<int> acked{0};
  std::vector<std::vector<tracked_message>> sent(tracking_clients);
  std::vector<std::thread> clients;
  for (int t = 0; t < tracking_clients; ++t) {
    clients.emplace_back(run_tracking_client, daemon.port(),
                         "r" + std::to_string(round) + "t" + std::to_string(t), rng(), std::cref(stop),
                         std::ref(acked), std::ref(sent[static_cast<std::size_t>(t)]));
  }
  const auto delay = std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 500)(rng));
  const auto started = std::chrono::steady_clock::now();
  // The kill comes at `delay` after the start, but not before some mail was
  // acknowledged (else the round would prove nothing).
  wait_until([&] { return std::chrono::steady_clock::now() - started >= delay; }, delay + 1s, 5ms);
  const bool some_acked = wait_until([&] { return acked.load() > 0; }, 20s, 5ms);
  const int killed_status = daemon.kill();
  load.kill();
  stop = true;
  for (auto& c : clients) c.join();
  ASSERT_TRUE(some_acked) << "no tracked message was acknowledged within 20 s; log:\n"
                          << daemon.log_text();
  EXPECT_EQ(killed_status, 128 + 9) << "the daemon should have died of SIGKILL";

  // Restart on the same data_dir: recovery must work and mail flows again.
  daemon.restart();
  {
    smtp_probe probe;
    ASSERT_TRUE(open_session(probe, daemon.port()));
    auto after = send_message(probe, "tracker@sender.test", {"tracked@demo.test"},
                              "X-Test-Id: after-restart\r\n\r\nstill here\r\n");
    EXPECT_TRUE(reply_is(after.reply, 250)) << "a message after the restart";
  }
  ASSERT_EQ(daemon.stop(), 0) << daemon.log_text();

  auto stored = daemon_fixture::read_store(daemon.data_dir());
  ASSERT_TRUE(stored) << "read_store after the crash: " << stored.error().message();

  std::map<std::string, const tracked_message*> by_id;
  for (const auto& list : sent) {
    for (const auto& m : list) by_id[m.id] = &m;
  }
  std::map<std::string, int> stored_count;
  std::size_t load_messages = 0;
  for (const auto& m : *stored) {
    EXPECT_EQ(m.info.size, m.content.size()) << m.info.qid;
    auto [received, rest] = split_received(m.content);
    EXPECT_TRUE(received.starts_with("Received: from ")) << m.info.qid << ": " << m.content.substr(0, 200);
    const std::string id = test_id_of(rest);
    if (id == "after-restart") continue;
    if (id.empty()) {
      ++load_messages;
      EXPECT_TRUE(is_whole_smtp_source_message(m, rest)) << m.info.qid;
      continue;
    }
    ++stored_count[id];
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      ADD_FAILURE() << "got stored message " << id << " that no client sent";
      continue;
    }
    const tracked_message& original = *it->second;
    EXPECT_EQ(rest, original.content) << "message " << id << " (" << to_string(original.result)
                                      << "): got stored content differing from what was sent";
    EXPECT_TRUE(original.result == outcome::acked || original.result == outcome::in_flight)
        << "got message " << id << " stored, want it absent: it was " << to_string(original.result);
  }

  std::size_t counts[4] = {};
  std::size_t in_flight_present = 0;
  for (const auto& [id, m] : by_id) {
    ++counts[static_cast<int>(m->result)];
    const int n = stored_count.contains(id) ? stored_count[id] : 0;
    EXPECT_LE(n, 1) << "got message " << id << " stored " << n << " times, want at most once";
    if (m->result == outcome::acked) {
      EXPECT_EQ(n, 1) << "acknowledged message " << id << ": got it stored " << n
                      << " times, want exactly once";
    }
    if (m->result == outcome::in_flight && n > 0) ++in_flight_present;
  }
  std::cout << "crash round " << round << " (seed " << seed << ", kill after " << delay.count()
            << " ms): tracked acknowledged " << counts[static_cast<int>(outcome::acked)]
            << ", in flight " << counts[static_cast<int>(outcome::in_flight)] << " ("
            << in_flight_present << " stored), unsent " << counts[static_cast<int>(outcome::unsent)]
            << ", refused " << counts[static_cast<int>(outcome::refused)]
            << "; smtp-source messages stored " << load_messages << std::endl;
}

TEST(Crash, SigkillUnderLoadLosesNoAcknowledgedMessage) {
  if (!program_available(smtp_source_path)) {
    GTEST_SKIP() << smtp_source_path << " is not installed (Debian package postfix)";
  }
  const std::uint64_t rounds = env_number("FLUSHGATE_CRASH_ROUNDS", 5);
  const std::uint64_t seed = env_number("FLUSHGATE_CRASH_SEED", std::random_device{}());
  std::cout << "crash test: seed " << seed << " (FLUSHGATE_CRASH_SEED=" << seed
            << " replays it), " << rounds << " rounds" << std::endl;
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 seeds(seed);
  for (std::uint64_t round = 1; round <= rounds; ++round) {
    run_round(static_cast<int>(round), seeds());
    if (HasFatalFailure()) return;
  }
}

// ---------------------------------------------------------------- with a flush

constexpr std::size_t flush_connections = 2;  // smtp_connections_per_customer
// delivery_settings::batch_messages (not a config key): one transaction
// records the fate of a whole batch, so a kill can undo at most one batch of
// "delivered" per connection.
constexpr std::size_t delivery_batch = 100;
constexpr std::uint64_t flush_load_messages = 400;  // smtp-source -m per round
constexpr auto postfix_settle_timeout = 120s;
constexpr auto drain_timeout = 300s;

// Files in the instance's queue (maildrop, incoming, active, deferred, hold):
// messages Postfix has taken or is taking but not yet put in the Maildir.
std::size_t postfix_pending(const postfix_instance& postfix) {
  std::size_t count = 0;
  for (const char* queue : {"maildrop", "incoming", "active", "deferred", "hold"}) {
    std::error_code ec;
    for (std::filesystem::recursive_directory_iterator it(postfix.queue_dir() / queue, ec), end;
         !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;  // a file qmgr just moved is counted in its new place
      if (it->is_regular_file(type_ec)) ++count;
    }
  }
  return count;
}

// Waits until Postfix has delivered everything it accepted (its queue is
// empty); a deferred message is flushed rather than left to queue_run_delay.
::testing::AssertionResult settle_postfix(const postfix_instance& postfix) {
  std::size_t pending = 0;
  const bool settled = wait_until(
      [&] {
        pending = postfix_pending(postfix);
        if (pending > 0 && postfix.deferred_count() > 0) postfix.flush();
        return pending == 0;
      },
      postfix_settle_timeout, 50ms);
  if (settled) return ::testing::AssertionSuccess();
  const std::string maillog = postfix.log_text();
  return ::testing::AssertionFailure()
         << "got " << pending << " messages still in Postfix's queue after "
         << postfix_settle_timeout.count() << " s, want 0; maillog tail:\n"
         << maillog.substr(maillog.size() > 3000 ? maillog.size() - 3000 : 0);
}

// The torture's bookkeeping: every tracked token, every era (one daemon
// process, from a start to its kill or stop), and the figures.
class flush_torture {
 public:
  struct token {
    outcome result = outcome::unsent;
    std::string content_lf;         // what was sent, LF line ends
    std::vector<int> eras;          // the era of each copy at Postfix, in order
    std::set<int> in_flight_eras;   // eras at whose end it was at Postfix and still queued
    bool queued_at_end = false;
  };

  explicit flush_torture(const postfix_instance& postfix) : postfix_(postfix) {}

  void add_sent(const std::vector<std::vector<tracked_message>>& sent) {
    for (const auto& list : sent) {
      for (const auto& m : list) {
        auto& t = tokens_[m.id];
        t.result = m.result;
        t.content_lf = to_lf(m.content);
      }
    }
  }

  // Ends era `era` while no daemon runs: Postfix settles, the new Maildir
  // files are this era's copies, and the store says what is still queued.
  // `final` marks the era that ended with the clean stop after the drain.
  void end_era(int era, const std::filesystem::path& data_dir, bool final) {
    ASSERT_TRUE(settle_postfix(postfix_)) << "era " << era;
    std::set<std::string> copies_now;
    for (const auto& file : postfix_.message_files()) {
      if (!seen_files_.insert(file).second) continue;
      const auto m = split_maildir(read_file(file));
      auto [ours, original] = split_first_field(m.rest);
      if (!original.starts_with("X-Test-Id: ")) {
        ++load_delivered_;
        EXPECT_TRUE(original.starts_with("From: <load@sender.test>\n"))
            << file << ": got a message that is neither tracked nor smtp-source's:\n"
            << m.rest.substr(0, 300);
        continue;
      }
      const std::string id = original.substr(11, original.find('\n') - 11);
      auto it = tokens_.find(id);
      if (it == tokens_.end()) {
        ADD_FAILURE() << file << ": got token " << id << " at Postfix that no client sent";
        continue;
      }
      token& t = it->second;
      EXPECT_EQ(original, t.content_lf)
          << "token " << id << " (era " << era
          << "): got content at Postfix differing from what was sent";
      EXPECT_TRUE(ours.starts_with("Received: from ")) << file << ": " << ours;
      if (!copies_now.insert(id).second) {
        ADD_FAILURE() << "token " << id << ": got two copies at Postfix from era " << era
                      << " (one daemon process, no kill in between), want at most one";
      }
      t.eras.push_back(era);
    }

    auto stored = daemon_fixture::read_store(data_dir);
    ASSERT_TRUE(stored) << "read_store after era " << era << ": " << stored.error().message();
    std::map<std::string, int> queued;
    std::size_t load_queued = 0;
    for (const auto& m : *stored) {
      const std::string id = test_id_of(split_received(m.content).second);
      if (id.empty()) {
        ++load_queued;
        continue;
      }
      ++queued[id];
    }
    std::size_t in_flight = 0;
    for (const auto& [id, n] : queued) {
      EXPECT_EQ(n, 1) << "token " << id << ": got it queued " << n << " times after era " << era
                      << ", want once";
      auto it = tokens_.find(id);
      if (it == tokens_.end()) {
        ADD_FAILURE() << "got token " << id << " queued that no client sent";
        continue;
      }
      if (copies_now.contains(id)) {
        it->second.in_flight_eras.insert(era);
        ++in_flight;
      }
      if (final) it->second.queued_at_end = true;
    }
    EXPECT_LE(in_flight, flush_connections * delivery_batch)
        << "era " << era << ": got " << in_flight
        << " tokens at Postfix and still queued, want at most one batch per connection";
    in_flight_total_ += in_flight;
    if (in_flight > 0) ++eras_with_in_flight_;
    std::cout << "crash flush era " << era << (final ? " (drain, clean stop)" : "")
              << ": copies at Postfix " << copies_now.size() << " tracked, queued " << queued.size()
              << " tracked + " << load_queued << " load, in flight at the end " << in_flight
              << std::endl;
    if (final) load_queued_at_end_ = load_queued;
  }

  // The whole run's verdict; prints the summary line.
  void judge(int rounds, std::uint64_t seed, std::chrono::steady_clock::duration wall) {
    std::size_t acked = 0, delivered = 0, still_queued = 0, lost = 0, duplicates = 0;
    for (const auto& [id, t] : tokens_) {
      const std::size_t copies = t.eras.size();
      if (copies > 1) duplicates += copies - 1;
      // Every copy but the last must come from an era at whose end the token
      // was still queued: only then did the daemon have a reason to send it again.
      for (std::size_t i = 0; i + 1 < copies; ++i) {
        EXPECT_TRUE(t.in_flight_eras.contains(t.eras[i]))
            << "token " << id << ": got a copy from era " << t.eras[i] << " and another from era "
            << t.eras[i + 1] << ", but it was not queued at the end of era " << t.eras[i]
            << ": want no second copy of a message whose delivery was committed";
      }
      switch (t.result) {
        case outcome::acked:
          ++acked;
          if (copies > 0) ++delivered;
          if (t.queued_at_end) ++still_queued;
          if (copies == 0 && !t.queued_at_end) {
            ++lost;
            ADD_FAILURE() << "acknowledged token " << id
                          << ": got it neither at Postfix nor queued, want one of them (lost)";
          }
          break;
        case outcome::in_flight:
          break;  // sent in full, no reply: may be anywhere
        case outcome::unsent:
        case outcome::refused:
          EXPECT_TRUE(copies == 0 && !t.queued_at_end)
              << "token " << id << " (" << to_string(t.result) << "): got " << copies
              << " copies at Postfix" << (t.queued_at_end ? " and it queued" : "")
              << ", want it nowhere";
          break;
      }
    }
    EXPECT_LE(duplicates, in_flight_total_);
    const double seconds = std::chrono::duration<double>(wall).count();
    std::cout << "crash flush summary: rounds=" << rounds << " seed=" << seed << " acked=" << acked
              << " delivered=" << delivered << " queued=" << still_queued << " lost=" << lost
              << " duplicates=" << duplicates << " in_flight_at_kills=" << in_flight_total_
              << " rounds_with_in_flight=" << eras_with_in_flight_
              << " load_delivered=" << load_delivered_ << " load_queued=" << load_queued_at_end_
              << " wall_s=" << static_cast<long>(seconds + 0.5) << std::endl;
    ::testing::Test::RecordProperty("acked", std::to_string(acked));
    ::testing::Test::RecordProperty("lost", std::to_string(lost));
    ::testing::Test::RecordProperty("duplicates", std::to_string(duplicates));
  }

 private:
  const postfix_instance& postfix_;
  std::map<std::string, token> tokens_;
  std::set<std::filesystem::path> seen_files_;
  std::size_t in_flight_total_ = 0;
  std::size_t eras_with_in_flight_ = 0;
  std::size_t load_delivered_ = 0;
  std::size_t load_queued_at_end_ = 0;
};

// One round of the flush torture on a running daemon: load and tracking
// clients for a random while, SIGKILL, the era's pictures, restart.
void run_flush_round(int round, std::uint64_t seed, daemon_fixture& daemon,
                     flush_torture& torture) {
  SCOPED_TRACE("flush round " + std::to_string(round) + ", seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  process load({smtp_source_path, "-s", "3", "-m", std::to_string(flush_load_messages), "-l",
                std::to_string(smtp_source_length), "-f", "load@sender.test", "-t",
                "load@demo.test", "127.0.0.1:" + std::to_string(daemon.port())});
  std::atomic<bool> stop{false};
  std::atomic<int> acked{0};
  std::vector<std::vector<tracked_message>> sent(tracking_clients);
  std::vector<std::thread> clients;
  for (int t = 0; t < tracking_clients; ++t) {
    clients.emplace_back(run_tracking_client, daemon.port(),
                         "f" + std::to_string(round) + "t" + std::to_string(t), rng(),
                         std::cref(stop), std::ref(acked),
                         std::ref(sent[static_cast<std::size_t>(t)]));
  }
  // Delivery runs from the restart on (relay mode, a backlog from earlier
  // rounds), so any moment hits intake and the flush; not before some mail
  // of this round was acknowledged.
  const auto delay = std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 1500)(rng));
  const auto started = std::chrono::steady_clock::now();
  wait_until([&] { return std::chrono::steady_clock::now() - started >= delay; }, delay + 1s, 5ms);
  const bool some_acked = wait_until([&] { return acked.load() > 0; }, 20s, 5ms);
  const int killed_status = daemon.kill();
  load.kill();
  stop = true;
  for (auto& c : clients) c.join();
  torture.add_sent(sent);
  ASSERT_TRUE(some_acked) << "no tracked message was acknowledged within 20 s; log:\n"
                          << daemon.log_text();
  EXPECT_EQ(killed_status, 128 + 9) << "the daemon should have died of SIGKILL";
  std::cout << "crash flush round " << round << " (seed " << seed << "): killed after "
            << delay.count() << " ms, " << acked.load() << " tracked acknowledged" << std::endl;
  ASSERT_NO_FATAL_FAILURE(torture.end_era(round, daemon.data_dir(), false));
  daemon.restart();
}

TEST(Crash, SigkillDuringFlushToPostfixLosesNoAcknowledgedMessage) {
  if (!program_available(smtp_source_path)) {
    GTEST_SKIP() << smtp_source_path << " is not installed (Debian package postfix)";
  }
  if (!postfix_instance::available()) {
    GTEST_SKIP() << "needs root and Postfix for the customer's server";
  }
  const std::uint64_t rounds = env_number("FLUSHGATE_CRASH_ROUNDS", 4);
  const std::uint64_t seed = env_number("FLUSHGATE_CRASH_SEED", std::random_device{}());
  std::cout << "crash flush test: seed " << seed << " (FLUSHGATE_CRASH_SEED=" << seed
            << " replays it), " << rounds << " rounds" << std::endl;
  RecordProperty("seed", std::to_string(seed));
  const auto started = std::chrono::steady_clock::now();

  auto postfix = postfix_instance::final_destination(
      {"demo.test"}, "127.0.0.31:" + std::to_string(free_port_on("127.0.0.31")));
  postfix.start();
  daemon_fixture daemon(daemon_fixture::settings{
      {"smtpd_max_connections_per_client", "100"},
      {"retry_schedule", "1s"},
      {"smtp_connections_per_customer", std::to_string(flush_connections)}});
  daemon.start();
  auto added = daemon.add_customer(
      "demo", "demo.test",
      {"--mode", "relay", "--route", postfix.host() + ":" + std::to_string(postfix.port())});
  ASSERT_EQ(added.exit_code, 0) << added.err;

  flush_torture torture(postfix);
  std::mt19937_64 seeds(seed);
  for (std::uint64_t round = 1; round <= rounds; ++round) {
    run_flush_round(static_cast<int>(round), seeds(), daemon, torture);
    if (HasFatalFailure()) return;
  }

  // The last era: no kill; the queue drains to Postfix, then a clean stop.
  const bool drained = wait_queued(daemon, "demo", 0, drain_timeout);
  const auto left = queued_for(daemon, "demo");
  const std::string log = daemon.log_text();
  EXPECT_TRUE(drained) << "got " << left.value_or(0) << " messages still queued for demo after "
                       << drain_timeout.count() << " s of draining, want 0; log tail:\n"
                       << log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
  EXPECT_EQ(daemon.stop(), 0) << "a clean stop after the drain";
  ASSERT_NO_FATAL_FAILURE(torture.end_era(static_cast<int>(rounds) + 1, daemon.data_dir(), true));
  torture.judge(static_cast<int>(rounds), seed, std::chrono::steady_clock::now() - started);
}

}  // namespace
