// disk_full_test.cpp — a full disk defers mail and never loses it.
//
// Covers ARCHITECTURE.md invariants 1 and 4: with data_dir on a small tmpfs
// and queue_min_free = 4M, messages are sent until the daemon answers
// 452 4.3.1 (at MAIL, RCPT or after the dot) — never a 5xx, never a 250 that
// is later missing; once space is freed the daemon accepts mail again by
// itself within seconds, and every acknowledged message is in the store.
// And queue_min_free itself: "free disk space below which new mail gets
// 452" — a burst of mail must not eat the headroom down to the last byte.
// Needs root to mount the tmpfs; skips with the reason otherwise.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <map>
#include <optional>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

constexpr std::size_t mebibyte = 1024 * 1024;
constexpr std::size_t message_octets = 256 * 1024;
constexpr std::size_t filler_octets = 8 * mebibyte;  // freeing it lifts free space over 4M

const char* stage_name(stage s) {
  switch (s) {
    case stage::mail: return "MAIL";
    case stage::rcpt: return "RCPT";
    case stage::data: return "DATA";
    case stage::content: return "the content";
    case stage::done: return "the final dot";
  }
  return "?";
}

// About `octets` of text: X-Test-Id first, then numbered lines.
std::string numbered_message(const std::string& id, std::size_t octets) {
  std::string s = "X-Test-Id: " + id + "\r\nSubject: disk full " + id + "\r\n\r\n";
  for (std::size_t line = 0; s.size() < octets; ++line) {
    s += id + " line " + std::to_string(line) + " " + std::string(60, 'd') + "\r\n";
  }
  return s;
}

class DiskFull : public ::testing::Test {
 protected:
  // Mounts a tmpfs of `disk_mib` MiB (skips when that is not possible).
  void mount_disk(std::size_t disk_mib) {
    std::filesystem::create_directories(disk_);
    auto mounted = run_command({"mount", "-t", "tmpfs", "-o", "size=" + std::to_string(disk_mib) + "m",
                                "tmpfs", disk_.string()},
                               30s);
    if (mounted.exit_code != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs at " << disk_ << " (exit " << mounted.exit_code
                   << "): " << mounted.stderr_text << mounted.stdout_text;
    }
    mounted_ = true;
  }

  void TearDown() override {
    daemon_.reset();  // the daemon must be gone before its disk
    if (!mounted_) return;
    auto unmounted = run_command({"umount", disk_.string()}, 30s);
    if (unmounted.exit_code != 0) run_command({"umount", "-l", disk_.string()}, 30s);
  }

  // Mounts the disk, writes the filler file, starts the daemon with data_dir
  // on the disk and queue_min_free = min_free_mib, adds demo.test.
  void start_on_small_disk(std::size_t disk_mib, std::size_t min_free_mib) {
    ASSERT_NO_FATAL_FAILURE(mount_disk(disk_mib));
    if (!mounted_) return;
    std::ofstream out(filler(), std::ios::binary);
    const std::string block(64 * 1024, 'f');
    for (std::size_t written = 0; written < filler_octets; written += block.size()) out << block;
    out.close();
    ASSERT_TRUE(out.good()) << "cannot write the filler file on the tmpfs";
    daemon_.emplace(daemon_fixture::settings{{"data_dir", (disk_ / "data").string()},
                                             {"queue_min_free", std::to_string(min_free_mib) + "M"}});
    daemon_->start();
    auto added = daemon_->add_customer("demo", "demo.test", {"--mode", "hold"});
    ASSERT_EQ(added.exit_code, 0) << added.err;
  }

  // Sends 256 KB messages back to back until the first 452; remembers every
  // 250 in acked_. Fails on a 5xx or a lost connection.
  void send_until_deferred(smtp_probe& probe) {
    // The disks here (at most 32M) can never take 200 messages of 256K: the
    // 452 must come first.
    for (int n = 0; n < 200; ++n) {
      const std::string id = "fill-" + std::to_string(n);
      const std::string content = numbered_message(id, message_octets);
      auto r = send_message(probe, "a@sender.test", {"u@demo.test"}, content);
      ASSERT_TRUE(r.reply) << "message " << id << ": " << describe(r.reply) << "\nlog:\n"
                           << daemon_->log_text();
      ASSERT_LT(r.reply->code, 500) << "message " << id << ": got " << describe(r.reply)
                                    << ", want 250 or 452 4.3.1, never a 5xx";
      if (r.reply->code == 250) {
        acked_[id] = content;
        continue;
      }
      free_at_deferral_ = std::filesystem::space(disk_).available;
      EXPECT_TRUE(reply_is(r.reply, 452, "4.3.1")) << "message " << id;
      if (r.stopped_at != stage::done) {
        EXPECT_TRUE(reply_is(probe.command("RSET"), 250));
      }
      std::cout << "disk full: " << acked_.size() << " messages acknowledged, then "
                << describe(r.reply) << " after " << stage_name(r.stopped_at) << " with "
                << free_at_deferral_ << " octets free" << std::endl;
      deferred_ = r;
      return;
    }
    FAIL() << "got no 452 after 200 messages of " << message_octets << " octets";
  }

  // Stops the daemon; every acknowledged message is stored once, unchanged,
  // and nothing else is.
  void expect_store_holds_exactly_the_acknowledged() {
    ASSERT_EQ(daemon_->stop(), 0) << daemon_->log_text();
    auto stored = daemon_fixture::read_store(daemon_->data_dir());
    ASSERT_TRUE(stored) << "read_store: " << stored.error().message();
    std::map<std::string, int> found;
    for (const auto& m : *stored) {
      auto [received, rest] = split_received(m.content);
      const auto end = rest.find("\r\n");
      const std::string id = rest.starts_with("X-Test-Id: ") ? rest.substr(11, end - 11) : "";
      ++found[id];
      auto it = acked_.find(id);
      if (it == acked_.end()) {
        ADD_FAILURE() << "got stored message \"" << id << "\" that was never acknowledged";
        continue;
      }
      EXPECT_EQ(rest, it->second) << "message " << id << ": stored content differs";
    }
    for (const auto& [id, content] : acked_) {
      EXPECT_EQ(found[id], 1) << "acknowledged message " << id << ": got it stored " << found[id]
                              << " times, want once";
    }
  }

  std::filesystem::path filler() const { return disk_ / "filler"; }

  temp_dir dir_{"flushgate-disk"};
  std::filesystem::path disk_ = dir_.path() / "tmpfs";
  bool mounted_ = false;
  std::optional<daemon_fixture> daemon_;
  std::map<std::string, std::string> acked_;  // id → content
  std::optional<transaction_result> deferred_;
  std::uintmax_t free_at_deferral_ = 0;
};

TEST_F(DiskFull, FullDiskDefersWith452AndRecoversByItself) {
  ASSERT_NO_FATAL_FAILURE(start_on_small_disk(24, 4));
  if (IsSkipped()) return;
  smtp_probe probe(20s);
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  ASSERT_NO_FATAL_FAILURE(send_until_deferred(probe));
  EXPECT_GT(acked_.size(), 0u) << "the disk should have taken some mail before filling up";

  // While the disk stays full the answer stays 452.
  const std::string small = numbered_message("still-full", 1024);
  auto again = send_message(probe, "a@sender.test", {"u@demo.test"}, small);
  EXPECT_TRUE(reply_is(again.reply, 452, "4.3.1")) << "a small message while the disk is full";
  if (again.reply && again.reply->code == 250) acked_["still-full"] = small;
  if (again.stopped_at != stage::done) probe.command("RSET");

  // Free space; no operator action: mail is accepted again within seconds.
  std::filesystem::remove(filler());
  int tries = 0;
  probe_result last = make_error_code(probe_errc::timed_out);
  const bool answered = wait_until(
      [&] {
        const std::string id = "recover-" + std::to_string(tries++);
        const std::string content = numbered_message(id, 4096);
        auto r = send_message(probe, "a@sender.test", {"u@demo.test"}, content);
        last = r.reply;
        if (r.reply && r.reply->code == 250) acked_[id] = content;
        if (!r.reply || r.reply->code == 250 || r.reply->code >= 500) return true;
        if (r.stopped_at != stage::done) probe.command("RSET");
        return false;
      },
      15s, 200ms);
  EXPECT_TRUE(answered && reply_is(last, 250))
      << "after freeing " << filler_octets << " octets: got " << describe(last) << " after "
      << tries << " tries, want 250 within 15 s";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
  expect_store_holds_exactly_the_acknowledged();
}

// queue_min_free is the headroom the daemon keeps: a burst of mail must get
// 452 while much of queue_min_free is still free, not run the disk down to
// its last byte (where even SQLite's own bookkeeping fails, sqlite_store.hpp).
// 8M of headroom: one message plus one WAL checkpoint (SQLite's default
// autocheckpoint copies up to ~4M into the database at once) always fits.
TEST_F(DiskFull, BurstLeavesQueueMinFreeHeadroom) {
  constexpr std::size_t min_free_octets = 8 * mebibyte;
  ASSERT_NO_FATAL_FAILURE(start_on_small_disk(32, min_free_octets / mebibyte));
  if (IsSkipped()) return;
  smtp_probe probe(20s);
  ASSERT_TRUE(open_session(probe, daemon_->port()));
  ASSERT_NO_FATAL_FAILURE(send_until_deferred(probe));
  // A daemon that checks the headroom per commit stops at most one message
  // and one checkpoint below 8M; 2M is a generous floor.
  EXPECT_GE(free_at_deferral_, 2 * mebibyte)
      << "at the first 452: got " << free_at_deferral_ << " octets free (the 452 came after "
      << stage_name(deferred_->stopped_at) << "), want at least " << 2 * mebibyte << " of the "
      << min_free_octets << " of queue_min_free left";
  EXPECT_EQ(daemon_->log_text().find("commit failed"), std::string::npos)
      << "got a commit that failed for lack of space, want the 452 before the disk runs out";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
  expect_store_holds_exactly_the_acknowledged();
}

}  // namespace
