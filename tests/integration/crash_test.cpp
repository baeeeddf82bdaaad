// crash_test.cpp — SIGKILL flushgated under load; no acknowledged message
// may be lost, duplicated, or stored partially.
//
// Covers ARCHITECTURE.md invariant 1 ("250 after DATA only once durable"):
// each round runs smtp-source for load (10 sessions, more messages than it
// can send before the kill) and four tracking clients that send
// numbered messages with random bodies, kills the daemon with SIGKILL at a
// random moment, restarts it on the same data_dir, stops it and compares the
// store with what the clients were told:
//   - every message that got 250 is stored exactly once, byte for byte;
//   - every stored message is one that was sent in full (nothing partial);
//   - messages that got no reply after their dot may be present or absent;
//   - messages whose dot was never sent, or that were refused, are absent.
// FLUSHGATE_CRASH_ROUNDS (default 5) sets the rounds, FLUSHGATE_CRASH_SEED
// replays a run; the seed is printed.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
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

// "X-Test-Id: ID" as the first header, a Subject, and 1-200 random lines.
std::string tracked_content(const std::string& id, std::mt19937_64& rng) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ .,:;-=";
  std::uniform_int_distribution<int> lines(1, 200);
  std::uniform_int_distribution<int> length(0, 76);
  std::uniform_int_distribution<std::size_t> letter(0, sizeof alphabet - 2);
  std::string s = "X-Test-Id: " + id + "\r\nSubject: crash test " + id + "\r\n\r\n";
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

}  // namespace
