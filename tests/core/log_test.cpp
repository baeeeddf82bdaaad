// log_test.cpp — tests core/log.cpp: the line format, levels, control
// characters, and reopening the log file the way logrotate needs it.
#include "core/log.hpp"

#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace flushgate::core {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> read_lines(const fs::path& file) {
  std::vector<std::string> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// The text after "PROGRAM[PID]: LEVEL: " of each line, or the whole line when
// it does not have that shape (so a test shows it).
std::vector<std::string> messages(const fs::path& file) {
  static const std::regex shape(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ log_test\[\d+\]: [a-z]+: (.*)$)");
  std::vector<std::string> out;
  for (const auto& line : read_lines(file)) {
    std::smatch m;
    out.push_back(std::regex_match(line, m, shape) ? m[1].str() : "MALFORMED " + line);
  }
  return out;
}

std::string show(const std::vector<std::string>& lines) {
  std::string out = "[";
  for (const auto& l : lines) out += (out.size() > 1 ? ", \"" : "\"") + l + "\"";
  return out + "]";
}

class LogFile : public ::testing::Test {
 protected:
  void SetUp() override {
    set_log_level(log_level::info);
    ASSERT_TRUE(set_log_target(path_.string(), "log_test")) << "cannot open " << path_;
  }
  void TearDown() override {
    set_log_target("stderr", "log_test");
    set_log_level(log_level::info);
  }

  test::temp_dir dir_{"flushgate-log-test"};
  fs::path path_ = dir_.path() / "flushgated.log";
};

TEST_F(LogFile, WritesOneStampedLinePerEvent) {
  log_info("{}: to=<{}>, status={}", "CR6QFDBZ5H00", "bob@demo.test", "sent");
  log_warning("disk: {} bytes free", 42);
  auto lines = read_lines(path_);
  ASSERT_EQ(lines.size(), 2u) << "got " << show(lines) << ", want 2 lines";
  const std::regex first(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ log_test\[\d+\]: info: CR6QFDBZ5H00: to=<bob@demo\.test>, status=sent$)");
  EXPECT_TRUE(std::regex_match(lines[0], first)) << "got \"" << lines[0] << "\", want a stamped info line";
  EXPECT_NE(lines[1].find(": warning: disk: 42 bytes free"), std::string::npos)
      << "got \"" << lines[1] << "\", want a warning line";
}

TEST_F(LogFile, ReplacesControlCharactersSoNoLineCanBeForged) {
  log_info("EHLO {}", "evil\r\n2026-01-01T00:00:00Z flushgated[1]: info: forged\x1b[2J\x7f");
  auto got = messages(path_);
  std::vector<std::string> want = {"EHLO evil??2026-01-01T00:00:00Z flushgated[1]: info: forged?[2J?"};
  EXPECT_EQ(got, want) << "got " << show(got) << ", want " << show(want);
}

TEST_F(LogFile, DropsLinesBelowTheLevel) {
  set_log_level(log_level::warning);
  log_debug("debug line");
  log_info("info line");
  log_warning("warning line");
  log_error("error line");
  auto got = messages(path_);
  std::vector<std::string> want = {"warning line", "error line"};
  EXPECT_EQ(got, want) << "got " << show(got) << ", want " << show(want);
}

TEST_F(LogFile, ReopenAfterRotationWritesToTheNewFile) {
  log_info("before rotation");
  const fs::path rotated = path_.string() + ".1";
  fs::rename(path_, rotated);
  log_info("after rename, before reopen");  // still the open descriptor: the old file
  ASSERT_TRUE(reopen_log_target()) << "got false from reopen_log_target, want true";
  log_info("after reopen");

  auto old_lines = messages(rotated);
  std::vector<std::string> want_old = {"before rotation", "after rename, before reopen"};
  EXPECT_EQ(old_lines, want_old) << "rotated file: got " << show(old_lines) << ", want " << show(want_old);
  auto new_lines = messages(path_);
  std::vector<std::string> want_new = {"after reopen"};
  EXPECT_EQ(new_lines, want_new) << "new file: got " << show(new_lines) << ", want " << show(want_new);
}

TEST_F(LogFile, ReopenAppendsToAFileLogrotateCreated) {
  // logrotate's `create` makes the new, empty file itself before the signal.
  fs::rename(path_, path_.string() + ".1");
  { std::ofstream created(path_); }
  ASSERT_TRUE(reopen_log_target()) << "got false from reopen_log_target, want true";
  log_info("one");
  ASSERT_TRUE(reopen_log_target()) << "got false from a second reopen, want true";
  log_info("two");
  auto got = messages(path_);
  std::vector<std::string> want = {"one", "two"};
  EXPECT_EQ(got, want) << "got " << show(got) << ", want " << show(want);
}

TEST_F(LogFile, FailedReopenKeepsWritingToTheOldFile) {
  // The whole directory moves away, so the path cannot be opened again.
  const fs::path moved = dir_.path() / "moved";
  const fs::path sub = dir_.path() / "sub";
  fs::create_directory(sub);
  const fs::path inner = sub / "flushgated.log";
  ASSERT_TRUE(set_log_target(inner.string(), "log_test"));
  log_info("first");
  fs::rename(sub, moved);
  EXPECT_FALSE(reopen_log_target()) << "got true from reopen_log_target with the directory gone, want false";
  log_info("second");
  auto got = messages(moved / "flushgated.log");
  std::vector<std::string> want = {"first", "second"};
  EXPECT_EQ(got, want) << "got " << show(got) << ", want " << show(want);
  EXPECT_FALSE(fs::exists(inner)) << "got a new " << inner << ", want none";
}

TEST(LogTarget, ReopenWithoutAFileDoesNothing) {
  ASSERT_TRUE(set_log_target("stderr", "log_test"));
  EXPECT_TRUE(reopen_log_target()) << "got false for stderr, want true (nothing to reopen)";
}

TEST(LogTarget, UnopenableFileFallsBackToStderr) {
  EXPECT_FALSE(set_log_target("/nonexistent-flushgate-dir/x.log", "log_test"))
      << "got true for a file in a missing directory, want false";
  EXPECT_TRUE(reopen_log_target()) << "got false after the fallback to stderr, want true";
}

// Writers on several threads while the file is rotated again and again:
// every line must land whole in exactly one of the files. The writers go in
// phases and may run at most one phase ahead of the rotations, so lines are
// being written while each reopen happens, however the threads are scheduled.
TEST_F(LogFile, ConcurrentLinesAreNeitherLostNorTornAcrossReopens) {
  constexpr int writers = 4;
  constexpr int lines_each = 3000;
  constexpr int rotations = 20;
  constexpr int phases = rotations + 1;
  std::atomic<int> written{0};
  std::atomic<int> rotated_count{0};
  std::atomic<bool> go{false};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto before_deadline = [deadline] { return std::chrono::steady_clock::now() < deadline; };
  std::vector<std::thread> threads;
  for (int t = 0; t < writers; ++t) {
    threads.emplace_back([t, &written, &rotated_count, &go, &before_deadline] {
      while (!go.load() && before_deadline()) std::this_thread::yield();
      for (int i = 0; i < lines_each; ++i) {
        const int phase = i * phases / lines_each;
        while (rotated_count.load() < phase - 1 && before_deadline()) std::this_thread::yield();
        log_info("writer={} line={} padding={}", t, i, std::string(static_cast<std::size_t>(40 + i % 200), 'x'));
        written.fetch_add(1);
      }
    });
  }
  go.store(true);
  std::vector<fs::path> files;
  for (int r = 0; r < rotations; ++r) {
    const int target = (r + 1) * writers * lines_each / phases;
    while (written.load() < target && before_deadline()) std::this_thread::yield();
    fs::path rotated = path_.string() + "." + std::to_string(r);
    fs::rename(path_, rotated);
    files.push_back(rotated);
    const bool reopened = reopen_log_target();
    rotated_count.fetch_add(1);
    EXPECT_TRUE(reopened) << "rotation " << r << ": got false from reopen_log_target, want true";
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(before_deadline()) << "got a run past the 60s deadline, want it done well before";
  files.push_back(path_);

  static const std::regex line_shape(R"(^writer=(\d) line=(\d+) padding=(x+)$)");
  std::set<std::pair<int, int>> seen;
  std::size_t files_with_lines = 0;
  for (const auto& f : files) {
    auto got = messages(f);
    if (!got.empty()) ++files_with_lines;
    for (const auto& m : got) {
      std::smatch sm;
      ASSERT_TRUE(std::regex_match(m, sm, line_shape)) << f << ": got torn line \"" << m << "\"";
      const int t = std::stoi(sm[1].str());
      const int i = std::stoi(sm[2].str());
      ASSERT_EQ(sm[3].length(), 40 + i % 200) << f << ": got a cut line for writer " << t << " line " << i;
      ASSERT_TRUE(seen.emplace(t, i).second) << "got writer " << t << " line " << i << " twice";
    }
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(writers * lines_each))
      << "got " << seen.size() << " distinct lines, want " << writers * lines_each;
  // The first rotation waits for written lines; the last phase is written
  // only after the 19th rotation: so at least two files hold lines.
  EXPECT_GE(files_with_lines, 2u) << "got lines in " << files_with_lines << " files, want at least 2";
}

}  // namespace
}  // namespace flushgate::core
