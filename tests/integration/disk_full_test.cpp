// disk_full_test.cpp — a full disk defers mail and never loses it.
//
// Covers ARCHITECTURE.md invariants 1 and 4: with data_dir on a small tmpfs
// and queue_min_free = 4M, messages are sent until the daemon answers
// 452 4.3.1 (at MAIL, RCPT or after the dot) — never a 5xx, never a 250 that
// is later missing; once space is freed the daemon accepts mail again by
// itself within seconds, and every acknowledged message is in the store.
// And queue_min_free itself: "free disk space below which new mail gets
// 452" — a burst of mail must not eat the headroom down to the last byte.
// And invariant 2 when the disk fills between intake and a bounce: a
// recipient whose next hop says 5xx leaves the queue only together with its
// failure DSN, in one transaction; with no room for the DSN the recipient
// stays queued (intake says 452 meanwhile), and once space returns the next
// retry queues the DSN and sends it — one DSN, no operator action.
// And invariant 8, the outage the product exists for: a 20M disk that
// held mail filled up to 452 takes mail again within seconds once the queue
// empties — by a flush to the customer's real Postfix, by expiry with DSNs,
// by `queue delete`, by `customer remove --force` — and twenty rounds of
// "fill, flush" do not ratchet the store's files up.
// Needs root to mount the tmpfs; skips with the reason otherwise.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
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

  // Sends messages of `octets` back to back until the first 452; remembers
  // every 250 in acked_. Fails on a 5xx or a lost connection.
  void send_until_deferred(smtp_probe& probe, std::size_t octets = message_octets,
                           const std::string& rcpt = "u@demo.test", const std::string& prefix = "fill-") {
    // The disks here (at most 32M) can never take 32M / octets messages
    // plus one: the 452 must come first.
    const std::size_t most = 32 * mebibyte / octets + 1;
    for (std::size_t n = 0; n < most; ++n) {
      const std::string id = prefix + std::to_string(n);
      const std::string content = numbered_message(id, octets);
      auto r = send_message(probe, "a@sender.test", {rcpt}, content);
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
    FAIL() << "got no 452 after " << most << " messages of " << octets << " octets";
  }

  // Sends small messages to `rcpt` every `period` until one is answered with
  // 250 (remembered in acked_), a 5xx or no reply ends it, or `timeout`
  // passes; true when it ended before the deadline. The last reply and the
  // number of tries come back for the failure message.
  bool retry_until_accepted(smtp_probe& probe, const std::string& rcpt, const std::string& prefix,
                            std::chrono::milliseconds timeout, std::chrono::milliseconds period,
                            probe_result& last, int& tries) {
    return wait_until(
        [&] {
          const std::string id = prefix + std::to_string(tries++);
          const std::string content = numbered_message(id, 4096);
          auto r = send_message(probe, "a@sender.test", {rcpt}, content);
          last = r.reply;
          if (r.reply && r.reply->code == 250) acked_[id] = content;
          if (!r.reply || r.reply->code == 250 || r.reply->code >= 500) return true;
          if (r.stopped_at != stage::done) probe.command("RSET");
          return false;
        },
        timeout, period);
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
  const bool answered = retry_until_accepted(probe, "u@demo.test", "recover-", 15s, 200ms, last, tries);
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

// Writes `path` until the file system refuses another byte (ENOSPC): big
// blocks first, then pages. The octets written, or -1 on another error.
std::int64_t fill_to_the_brim(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  std::int64_t written = 0;
  const std::string block(mebibyte, 'f');
  for (std::size_t size : {mebibyte, std::size_t{4096}, std::size_t{512}}) {
    // Bounded: the disks here are at most 32M.
    for (int n = 0; n < 64 * 1024; ++n) {
      const ssize_t w = ::write(fd, block.data(), size);
      if (w > 0) {
        written += w;
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno != ENOSPC) {
        ::close(fd);
        return -1;
      }
      break;
    }
  }
  ::close(fd);
  return written;
}

// A 5xx for a recipient while there is no room for its DSN. The customer's
// server is down at first (the message waits, retried every second), the
// disk is filled to the last byte, then the server comes up refusing the
// recipient with 550: each attempt bounces it, the transaction that would
// remove it and queue the DSN fails, so it must stay queued. Space returns;
// the next retry queues the DSN, and it goes out through bounce_relay.
TEST_F(DiskFull, DsnOnFullDiskKeepsRecipientQueuedThenGoesOut) {
  if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
  ASSERT_NO_FATAL_FAILURE(mount_disk(16));
  if (!mounted_) return;
  smtp_sink bounces("127.0.0.41", free_port_on("127.0.0.41"));
  bounces.start();
  // The customer's server: its address is fixed now, it starts later.
  const std::string customer_host = "127.0.0.42";
  const std::uint16_t customer_port = free_port_on(customer_host);
  smtp_sink customer(customer_host, customer_port,
                     {"-f", "RCPT", "-B", "550 5.1.1 flushgate-test: no such user"});
  daemon_.emplace(daemon_fixture::settings{{"data_dir", (disk_ / "data").string()},
                                           {"queue_min_free", "1M"},
                                           {"retry_schedule", "1s"},
                                           {"queue_sweep_interval", "1s"},
                                           {"bounce_relay", bounces.address()}});
  daemon_->start();
  auto added = daemon_->add_customer(
      "acme", "acme.test",
      {"--mode", "relay", "--route", customer_host + ":" + std::to_string(customer_port)});
  ASSERT_EQ(added.exit_code, 0) << added.err;

  const std::string content = test_message("dsn-on-full-disk", "bob@acme.test",
                                           numbered_message("dsn-body", 64 * 1024));
  auto sent = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}}, content);
  ASSERT_TRUE(sent.error.empty()) << sent.error;
  ASSERT_TRUE(wait_log_line(*daemon_, {sent.qid, "status=deferred"}, 20s))
      << "got no deferral while the customer's server is down, want one; log:\n"
      << daemon_->log_text();

  // The disk fills up to its last byte.
  const std::int64_t filled = fill_to_the_brim(filler());
  ASSERT_GT(filled, 0) << "cannot fill the tmpfs";
  const auto free_when_full = std::filesystem::space(disk_).available;
  std::cout << "disk full: filler of " << filled << " octets, " << free_when_full
            << " octets left" << std::endl;
  ASSERT_LT(free_when_full, 4096u) << "the filler should leave no room for a DSN";

  // The customer's server comes up and refuses bob: attempts bounce him but
  // the DSN cannot be stored. Two attempts that bounced, and a failed
  // record after each, show the daemon keeps trying without losing him.
  customer.start();
  const auto bounced_while_full = [&] {
    return log_lines(*daemon_, {sent.qid + ": to=<bob@acme.test>", "status=bounced"}).size();
  };
  EXPECT_TRUE(wait_until([&] { return bounced_while_full() >= 2; }, 30s, 100ms))
      << "got " << bounced_while_full() << " bounced attempts in 30 s, want >= 2; log:\n"
      << daemon_->log_text();
  const std::size_t failed_records =
      log_lines(*daemon_, {"recording delivery results failed"}).size();
  EXPECT_GT(failed_records, 0u)
      << "got no failed record of the results, want one for each attempt on the full disk";
  std::cout << "disk full: " << bounced_while_full() << " attempts bounced bob, " << failed_records
            << " records of results failed" << std::endl;
  const auto still = recipients_of(*daemon_, sent.qid);
  ASSERT_EQ(still.size(), 1u) << sent.qid << ": got " << still.size()
                              << " recipients queued while its DSN cannot be stored, want bob "
                                 "still queued (invariant 2); log:\n"
                              << daemon_->log_text();
  EXPECT_EQ(still[0].address, "bob@acme.test");
  EXPECT_EQ(queued_for(*daemon_, "mailer-daemon"), 0u) << "no DSN can be queued on a full disk";
  EXPECT_TRUE(bounces.dumps().empty()) << "got a notice at the bounce relay, want none yet";

  // Intake meanwhile: 452 4.3.1, the sender keeps the mail.
  {
    smtp_probe probe(20s);
    ASSERT_TRUE(open_session(probe, daemon_->port()));
    auto r = send_message(probe, "carol@sender.test", {"dave@acme.test"},
                          numbered_message("while-full", 4096));
    EXPECT_TRUE(reply_is(r.reply, 452, "4.3.1")) << "a message while the disk is full";
    ASSERT_FALSE(r.reply && r.reply->code == 250) << "got 250 on a full disk";
  }

  // Space returns; no operator action.
  std::filesystem::remove(filler());
  const bool settled = wait_until(
      [&] {
        return !bounces.dumps().empty() && queued_for(*daemon_, "acme") == 0u &&
               queued_for(*daemon_, "mailer-daemon") == 0u;
      },
      30s, 100ms);
  EXPECT_TRUE(settled) << "after freeing the disk: got " << bounces.dumps().size()
                       << " notices at the bounce relay, "
                       << queued_for(*daemon_, "acme").value_or(99) << " messages queued for acme, "
                       << queued_for(*daemon_, "mailer-daemon").value_or(99)
                       << " notices queued, want >= 1, 0 and 0 within 30 s; log:\n"
                       << daemon_->log_text();

  const auto dumps = bounces.dumps();
  ASSERT_EQ(dumps.size(), 1u) << "got " << dumps.size() << " notices, want exactly one";
  const std::string& dsn = dumps[0];
  EXPECT_EQ(field_values(dsn, "X-Mail-Args"), std::vector<std::string>{"<>"})
      << "the DSN's envelope sender";
  const auto rcpt_args = field_values(dsn, "X-Rcpt-Args");
  ASSERT_EQ(rcpt_args.size(), 1u) << dsn;
  EXPECT_TRUE(rcpt_args[0].starts_with("<alice@sender.test>"))
      << "got RCPT " << rcpt_args[0] << ", want the original sender";
  EXPECT_EQ(field_values(dsn, "Final-Recipient"),
            std::vector<std::string>{"rfc822; bob@acme.test"});
  EXPECT_EQ(field_values(dsn, "Action"), std::vector<std::string>{"failed"});
  EXPECT_EQ(field_values(dsn, "Status"), std::vector<std::string>{"5.1.1"});
  EXPECT_NE(dsn.find("Message-ID: <dsn-on-full-disk@sender.test>"), std::string::npos)
      << "got a DSN without the original's headers, want them returned";
  EXPECT_EQ(log_lines(*daemon_, {sent.qid, "sender non-delivery notification"}).size(), 1u)
      << "got the DSN queued other than once; log:\n" << daemon_->log_text();
  for (const auto& d : customer.dumps()) {
    EXPECT_EQ(d.find("dsn-body line"), std::string::npos)
        << "got the message's content at the customer's server, want it refused at RCPT";
  }
  const bool ok = daemon_->stop() == 0;
  EXPECT_TRUE(ok) << daemon_->log_text();
  auto stored = daemon_fixture::read_store(daemon_->data_dir());
  ASSERT_TRUE(stored) << "read_store: " << stored.error().message();
  EXPECT_TRUE(stored->empty()) << "got " << stored->size()
                               << " messages left in the store, want none: bob bounced and his "
                                  "DSN went out";
}

// ------------------------------------------------------------ recovery
//
// The outage (issue "Recovery"): data_dir on a 20M tmpfs, queue_min_free 2M,
// the customer in hold mode; senders fill it with 64K messages until 452.
// Then the queue empties one of four ways, and intake must answer 250 again
// within 10 s of the queue being empty, with no operator action.

constexpr std::size_t outage_disk_mib = 20;
constexpr std::size_t outage_message_octets = 64 * 1024;

class Recovery : public DiskFull {
 protected:
  // Mounts the 20M disk and starts the daemon on it (extra settings added),
  // with customer acme (acme.test) in hold mode, routed to `route` if given.
  void start_outage(daemon_fixture::settings extra = {}, const std::string& route = "") {
    ASSERT_NO_FATAL_FAILURE(mount_disk(outage_disk_mib));
    if (!mounted_) return;
    extra.emplace("data_dir", (disk_ / "data").string());
    extra.emplace("queue_min_free", "2M");
    daemon_.emplace(extra);
    daemon_->start();
    std::vector<std::string> options{"--mode", "hold"};
    if (!route.empty()) options.insert(options.end(), {"--route", route});
    auto added = daemon_->add_customer("acme", "acme.test", options);
    ASSERT_EQ(added.exit_code, 0) << added.err;
  }

  // Fills the disk with 64K messages for acme until the 452; returns how many were acknowledged.
  std::size_t fill(const std::string& prefix) {
    const std::size_t before = acked_.size();
    smtp_probe probe(20s);
    EXPECT_TRUE(open_session(probe, daemon_->port()));
    send_until_deferred(probe, outage_message_octets, "bob@acme.test", prefix);
    probe.command("QUIT");
    return acked_.size() - before;
  }

  // Waits for acme's queue to be empty (true), then sends small messages
  // until one gets 250; returns the seconds from the empty queue to that 250,
  // or nullopt when none came within 10 s (with the last reply in `why`).
  std::optional<double> seconds_until_intake(std::string& why, const std::string& id_prefix) {
    if (!wait_until([&] { return queued_for(*daemon_, "acme") == 0u; }, 120s, 50ms)) {
      why = "acme's queue did not empty within 120 s (" +
            std::to_string(queued_for(*daemon_, "acme").value_or(99)) + " left)";
      return std::nullopt;
    }
    const auto emptied = std::chrono::steady_clock::now();
    smtp_probe probe(20s);
    if (!open_session(probe, daemon_->port())) {
      why = "cannot open an SMTP session";
      return std::nullopt;
    }
    int tries = 0;
    probe_result last = make_error_code(probe_errc::timed_out);
    const bool accepted = retry_until_accepted(probe, "bob@acme.test", id_prefix, 10s, 100ms, last, tries);
    probe.command("QUIT");
    if (!accepted || !reply_is(last, 250)) {
      why = "got " + describe(last) + " after " + std::to_string(tries) + " tries";
      return std::nullopt;
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - emptied).count();
  }

  // The store's files on the tmpfs (queue.db and its WAL), in octets.
  std::uintmax_t store_octets() const {
    std::uintmax_t total = 0;
    for (const char* name : {"queue.db", "queue.db-wal"}) {
      std::error_code ec;
      const auto n = std::filesystem::file_size(disk_ / "data" / name, ec);
      if (!ec) total += n;
    }
    return total;
  }

  // Every acknowledged message arrived at the customer's Postfix, once.
  void expect_all_acked_arrived(const postfix_instance& postfix) {
    std::map<std::string, int> seen;
    for (const auto& f : postfix.message_files()) {
      const std::string text = read_file(f);
      const auto at = text.find("X-Test-Id: ");
      if (at == std::string::npos) continue;
      ++seen[text.substr(at + 11, text.find('\n', at) - at - 11)];
    }
    for (const auto& [id, content] : acked_) {
      EXPECT_EQ(seen[id], 1) << "acknowledged message " << id << ": got it at the customer "
                             << seen[id] << " times, want once";
    }
  }

  void report(const char* how, std::size_t acked, double seconds) {
    std::cout << "recovery (" << how << "): " << acked << " messages of " << outage_message_octets
              << " octets filled the " << outage_disk_mib << "M disk; intake answered 250 "
              << seconds << " s after the queue emptied; store files " << store_octets()
              << " octets" << std::endl;
  }
};

#define SKIP_WITHOUT_POSTFIX()                                                   \
  if (!postfix_instance::available()) {                                          \
    GTEST_SKIP() << "needs root and Postfix (/usr/sbin/postfix) for the customer"; \
  }

TEST_F(Recovery, FlushToPostfixFreesTheDiskForIntake) {
  SKIP_WITHOUT_POSTFIX();
  auto postfix = postfix_instance::final_destination(
      {"acme.test"}, "127.0.0.51:" + std::to_string(free_port_on("127.0.0.51")));
  postfix.start();
  ASSERT_NO_FATAL_FAILURE(start_outage({}, postfix.host() + ":" + std::to_string(postfix.port())));
  if (IsSkipped()) return;
  const std::size_t acked = fill("flush-");
  ASSERT_GT(acked, 100u) << "the 20M disk should take over 100 messages of 64K before 452";

  auto flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "120"}, 150s);
  ASSERT_EQ(flushed.exit_code, 0) << flushed.out << flushed.err << daemon_->log_text();
  std::string why;
  auto seconds = seconds_until_intake(why, "after-flush-");
  ASSERT_TRUE(seconds) << "after the flush: " << why << ", want 250 within 10 s of the queue "
                       << "emptying; log:\n" << daemon_->log_text();
  report("flush to Postfix", acked, *seconds);
  // The mail accepted after the flush goes out too; then every
  // acknowledged message is at the customer, once.
  flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "60"}, 90s);
  EXPECT_EQ(flushed.exit_code, 0) << flushed.out << flushed.err;
  ASSERT_TRUE(wait_until([&] { return postfix.message_files().size() >= acked_.size(); }, 30s, 50ms))
      << "got " << postfix.message_files().size() << " messages at the customer, want "
      << acked_.size();
  expect_all_acked_arrived(postfix);
}

TEST_F(Recovery, ExpiryWithDsnsFreesTheDiskForIntake) {
  if (!smtp_sink::available()) GTEST_SKIP() << smtp_sink::sink_path << " is not installed";
  smtp_sink bounces("127.0.0.52", free_port_on("127.0.0.52"));
  bounces.start();
  ASSERT_NO_FATAL_FAILURE(start_outage({{"queue_lifetime", "20s"},
                                        {"delay_warning_time", "0"},
                                        {"queue_sweep_interval", "1s"},
                                        {"bounce_relay", bounces.address()}}));
  if (IsSkipped()) return;
  const std::size_t acked = fill("expire-");
  ASSERT_GT(acked, 100u);
  std::string why;
  auto seconds = seconds_until_intake(why, "after-expiry-");
  ASSERT_TRUE(seconds) << "after expiry: " << why << "; log:\n" << daemon_->log_text();
  report("expiry with DSNs", acked, *seconds);
  // One failure DSN for every expired message went out (none lost, none twice).
  ASSERT_TRUE(wait_until([&] { return bounces.dumps().size() >= acked; }, 60s, 100ms))
      << "got " << bounces.dumps().size() << " DSNs at the bounce relay, want " << acked;
  EXPECT_EQ(bounces.dumps().size(), acked);
}

TEST_F(Recovery, QueueDeleteFreesTheDiskForIntake) {
  ASSERT_NO_FATAL_FAILURE(start_outage());
  if (IsSkipped()) return;
  const std::size_t acked = fill("delete-");
  ASSERT_GT(acked, 100u);
  std::vector<std::string> args{"queue", "delete"};
  for (const auto& qid : queue_ids_of(*daemon_, "acme")) args.push_back(qid);
  ASSERT_EQ(args.size(), acked + 2) << "queue list shows other than the acknowledged messages";
  auto deleted = daemon_->cli(args, 60s);
  ASSERT_EQ(deleted.exit_code, 0) << deleted.out << deleted.err;
  std::string why;
  auto seconds = seconds_until_intake(why, "after-delete-");
  ASSERT_TRUE(seconds) << "after queue delete: " << why << "; log:\n" << daemon_->log_text();
  report("queue delete", acked, *seconds);
  // The operator sees both numbers the guard works from.
  auto status = daemon_->cli({"status"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find(" free, +"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find(" inside the queue store, minimum 2.0 MB)"), std::string::npos)
      << "got " << status.out << ", want the disk line with the room inside the store";
}

TEST_F(Recovery, CustomerRemoveForceFreesTheDiskForIntake) {
  ASSERT_NO_FATAL_FAILURE(start_outage());
  if (IsSkipped()) return;
  const std::size_t acked = fill("remove-");
  ASSERT_GT(acked, 100u);
  auto removed = daemon_->cli({"customer", "remove", "acme", "--force"}, 60s);
  ASSERT_EQ(removed.exit_code, 0) << removed.out << removed.err;
  auto added = daemon_->add_customer("acme", "acme.test", {"--mode", "hold"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  std::string why;
  auto seconds = seconds_until_intake(why, "after-remove-");
  ASSERT_TRUE(seconds) << "after customer remove --force: " << why << "; log:\n" << daemon_->log_text();
  report("customer remove --force", acked, *seconds);
}

// Twenty outages in a row on the same disk: each ends with intake taking
// mail again, and the store's files never need more than the disk (they
// would grow past it if freed pages were not reused or given back).
TEST_F(Recovery, TwentyFillAndFlushCyclesDoNotRatchet) {
  SKIP_WITHOUT_POSTFIX();
  auto postfix = postfix_instance::final_destination(
      {"acme.test"}, "127.0.0.53:" + std::to_string(free_port_on("127.0.0.53")));
  postfix.start();
  ASSERT_NO_FATAL_FAILURE(start_outage({}, postfix.host() + ":" + std::to_string(postfix.port())));
  if (IsSkipped()) return;
  std::uintmax_t largest = 0;
  double slowest = 0;
  std::size_t least = SIZE_MAX, most = 0;
  for (int cycle = 0; cycle < 20; ++cycle) {
    const std::size_t acked = fill("c" + std::to_string(cycle) + "-");
    least = std::min(least, acked);
    most = std::max(most, acked);
    largest = std::max(largest, store_octets());
    auto flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "120"}, 150s);
    ASSERT_EQ(flushed.exit_code, 0) << "cycle " << cycle << ": " << flushed.out << flushed.err;
    std::string why;
    auto seconds = seconds_until_intake(why, "c" + std::to_string(cycle) + "-after-");
    ASSERT_TRUE(seconds) << "cycle " << cycle << ": " << why << "; log:\n" << daemon_->log_text();
    slowest = std::max(slowest, *seconds);
    EXPECT_GT(acked, 100u) << "cycle " << cycle << ": the disk took only " << acked
                           << " messages: space is not coming back";
  }
  std::cout << "recovery: 20 cycles, " << least << ".." << most
            << " messages acknowledged per cycle, slowest return of intake " << slowest
            << " s, largest store files " << largest << " octets, after the last cycle "
            << store_octets() << " octets" << std::endl;
  EXPECT_LT(largest, outage_disk_mib * mebibyte);
  auto flushed = daemon_->cli({"flush", "acme", "--wait", "--timeout", "60"}, 90s);
  EXPECT_EQ(flushed.exit_code, 0) << flushed.out << flushed.err;
  ASSERT_TRUE(wait_until([&] { return postfix.message_files().size() >= acked_.size(); }, 60s, 50ms))
      << "got " << postfix.message_files().size() << " messages at the customer, want "
      << acked_.size();
  expect_all_acked_arrived(postfix);
}

}  // namespace
