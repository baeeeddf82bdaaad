// hooks_test.cpp — linkmon/hooks with real processes: the test hooks in
// tests/data/hooks/ are copied into a private hooks_dir with the names and
// modes each test needs, and write what they saw into files beside it.
#include "linkmon/hooks.hpp"

#include "core/log.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using flushgate::linkmon::hook_context;
using flushgate::linkmon::hook_event;
using flushgate::linkmon::hook_runner;
using flushgate::linkmon::hook_settings;
using flushgate::linkmon::to_string;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::vector<std::string> lines;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// "KEY=value" lines (as `env` prints them) into a map; others are ignored.
std::multimap<std::string, std::string> parse_pairs(const fs::path& p) {
  std::multimap<std::string, std::string> out;
  for (const auto& line : read_lines(p)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) out.emplace(line.substr(0, eq), line.substr(eq + 1));
  }
  return out;
}

std::string value_of(const std::multimap<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? "<unset>" : it->second;
}

// A pid is gone once /proc has no entry for it or it is a zombie.
bool process_gone(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return true;
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

hook_context context(hook_event e, const std::string& customer, const std::string& detail = "") {
  hook_context ctx;
  ctx.event = e;
  ctx.customer = customer;
  ctx.user = customer + "-dsl";
  ctx.ip = "192.0.2.7";
  ctx.session = "s-1";
  ctx.detail = detail;
  return ctx;
}

class HookRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path();
    hooks_ = root_ / "hooks";
    fs::create_directory(hooks_);
    fs::permissions(hooks_, fs::perms(0755));
    log_ = root_ / "daemon.log";
    ASSERT_TRUE(flushgate::core::set_log_target(log_.string(), "hooks_test"));
    flushgate::core::set_log_level(flushgate::core::log_level::debug);
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "daemon log:\n" << log_text();
    flushgate::core::set_log_target("stderr", "hooks_test");
    flushgate::core::set_log_level(flushgate::core::log_level::info);
  }

  // Copies tests/data/hooks/<script> to <hooks_dir>/<rel> with `mode`.
  fs::path install(const std::string& script, const std::string& rel, unsigned mode = 0755) {
    fs::path to = hooks_ / rel;
    fs::create_directories(to.parent_path());
    fs::permissions(to.parent_path(), fs::perms(0755));
    fs::copy_file(fs::path(FLUSHGATE_SOURCE_DIR) / "tests/data/hooks" / script, to,
                  fs::copy_options::overwrite_existing);
    fs::permissions(to, fs::perms(mode));
    return to;
  }

  hook_settings settings() const {
    hook_settings s;
    s.dir = hooks_.string();
    s.timeout = 20s;
    s.kill_grace = 2s;
    return s;
  }

  // Runs the io_context until the runner is idle (true) or `limit` passed.
  static bool run_until_drained(asio::io_context& io, hook_runner& r, std::chrono::milliseconds limit = 30s) {
    bool drained = false;
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { drained = co_await r.drain(limit); }, asio::detached);
    io.run();
    return drained;
  }

  std::string log_text() const { return read_file(log_); }

  flushgate::test::temp_dir tmp_{"hooks-test"};
  fs::path root_, hooks_, log_;
};

TEST(HookEvent, ToStringNamesEveryEvent) {
  const std::map<hook_event, std::string> want = {
      {hook_event::link_up, "link-up"},
      {hook_event::link_down, "link-down"},
      {hook_event::route_changed, "route-changed"},
      {hook_event::flush_done, "flush-done"},
      {hook_event::flush_failed, "flush-failed"},
  };
  for (const auto& [e, name] : want)
    EXPECT_EQ(to_string(e), name) << "got " << to_string(e) << ", want " << name;
}

TEST_F(HookRunnerTest, PassesFixedArgvAndCleanEnvironment) {
  install("record", "link-up.d/10-record");
  ::setenv("HOOKS_TEST_LEAK", "secret", 1);
  // A descriptor the daemon holds without close-on-exec must not reach the hook.
  fs::path marker = root_ / "marker";
  int leaky = ::open(marker.c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(leaky, 0);

  asio::io_context io;
  hook_runner runner(io, settings());
  hook_context ctx = context(hook_event::link_up, "acme");
  ctx.user = "bad\nuser";
  ctx.domains = {"acme.example", "mail.acme.example"};
  ctx.route = "192.0.2.7:25";
  ctx.detail = "3 messages";
  ctx.ipv4 = "192.0.2.7";
  ctx.ipv6 = "2001:db8:0:5600::25";
  ctx.prefix = "2001:db8:0:5600::/56";
  runner.fire(ctx);
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";
  ::close(leaky);
  ::unsetenv("HOOKS_TEST_LEAK");

  fs::path out = root_ / "env.link-up.acme";
  auto env = parse_pairs(out);
  const std::map<std::string, std::string> want = {
      {"argv0", (hooks_ / "link-up.d/10-record").string()},
      {"argv1", "link-up"},
      {"argc", "1"},
      {"cwd", "/"},
      {"stdin", "/dev/null"},
      {"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"},
      {"FLUSHGATE_EVENT", "link-up"},
      {"FLUSHGATE_CUSTOMER", "acme"},
      {"FLUSHGATE_USER", "bad?user"},
      {"FLUSHGATE_IP", "192.0.2.7"},
      {"FLUSHGATE_IPV4", "192.0.2.7"},
      {"FLUSHGATE_IPV6", "2001:db8:0:5600::25"},
      {"FLUSHGATE_PREFIX", "2001:db8:0:5600::/56"},
      {"FLUSHGATE_SESSION", "s-1"},
      {"FLUSHGATE_DOMAINS", "acme.example mail.acme.example"},
      {"FLUSHGATE_ROUTE", "192.0.2.7:25"},
      {"FLUSHGATE_DETAIL", "3 messages"},
  };
  for (const auto& [key, value] : want)
    EXPECT_EQ(value_of(env, key), value) << key << ": got " << value_of(env, key) << ", want " << value;
  EXPECT_EQ(env.count("HOOKS_TEST_LEAK"), 0u) << "got the daemon's environment, want a clean one";
  auto [from, to] = env.equal_range("fd");
  for (auto it = from; it != to; ++it)
    EXPECT_NE(it->second, marker.string()) << "got the daemon's descriptor in the hook";
  EXPECT_EQ(runner.started(), 1u);
  EXPECT_EQ(runner.failed(), 0u);
}

TEST_F(HookRunnerTest, LogsOutputUpToTheBoundAndReadsTheRest) {
  install("chatty", "flush-done.d/10-chatty");
  asio::io_context io;
  hook_settings s = settings();
  s.max_output = 1024;
  hook_runner runner(io, s);
  runner.fire(context(hook_event::flush_done, "acme"));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";

  std::string log = log_text();
  for (std::string want :
       {"hook flush-done.d/10-chatty: hello from stdout", "hook flush-done.d/10-chatty: hello from stderr",
        "hook flush-done.d/10-chatty: escape ?[31mred",
        "hook flush-done.d/10-chatty: output truncated: 1024 bytes logged",
        "hook flush-done.d/10-chatty: exit 0"})
    EXPECT_NE(log.find(want), std::string::npos) << "got no \"" << want << "\" in:\n" << log;
  EXPECT_EQ(log.find("last line"), std::string::npos) << "got output beyond the bound logged";
  // The filler comes in pieces of at most 500 bytes and no more than the bound.
  EXPECT_NE(log.find(std::string(500, 'x')), std::string::npos) << log;
  EXPECT_EQ(log.find(std::string(501, 'x')), std::string::npos) << "got a line over 500 bytes";
  std::size_t filler = 0;
  for (const auto& line : read_lines(log_))
    if (line.find("xxxxxxxxxx") != std::string::npos)
      filler += static_cast<std::size_t>(std::count(line.begin(), line.end(), 'x'));
  EXPECT_GT(filler, 900u) << "got " << filler << " filler bytes logged, want most of 1024";
  EXPECT_LE(filler, 1024u) << "got " << filler << " filler bytes logged, want ≤ 1024";
  EXPECT_EQ(runner.failed(), 0u) << "got a failure, want the hook to finish (pipe drained)";
}

TEST_F(HookRunnerTest, KillsAHangingHookAndStaysResponsive) {
  install("hang", "link-down.d/10-hang");
  asio::io_context io;
  hook_settings s = settings();
  s.timeout = 1000ms;  // room for the shell to set its trap, even on a loaded machine
  s.kill_grace = 300ms;
  hook_runner runner(io, s);
  runner.fire(context(hook_event::link_down, "acme"));

  int ticks = 0;
  bool early_drain = true, drained = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        early_drain = co_await runner.drain(50ms);
        drained = co_await runner.drain(30s);
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer t(co_await asio::this_coro::executor);
        while (!drained && ticks < 3000) {  // bounded: 60 s at most
          t.expires_after(20ms);
          co_await t.async_wait(asio::use_awaitable);
          ++ticks;
        }
      },
      asio::detached);
  io.run();

  EXPECT_FALSE(early_drain) << "got drained within 50 ms, want the hook still running";
  ASSERT_TRUE(drained) << "got timeout, want the hook killed";
  // The hook took ≥ 1.3 s (timeout + grace); a 20 ms timer must have kept firing.
  EXPECT_GE(ticks, 10) << "got " << ticks << " timer ticks while the hook hung, want ≥ 10";
  EXPECT_EQ(runner.timed_out(), 1u);
  EXPECT_EQ(runner.failed(), 1u);
  std::string log = log_text();
  for (std::string want : {"hook link-down.d/10-hang: timed out after 1000 ms; sending SIGTERM",
                           "sending SIGKILL", "hook link-down.d/10-hang: killed by signal 9"})
    EXPECT_NE(log.find(want), std::string::npos) << "got no \"" << want << "\" in:\n" << log;

  // Both the hook and the child it started are gone (the group was killed).
  std::istringstream pids(read_file(root_ / "hang.pids"));
  pid_t hook_pid = 0, child_pid = 0;
  ASSERT_TRUE(pids >> hook_pid >> child_pid) << "got no pids from the hang hook";
  EXPECT_TRUE(process_gone(hook_pid)) << "got hook pid " << hook_pid << " alive";
  EXPECT_TRUE(flushgate::test::wait_until([&] { return process_gone(child_pid); }, 5s))
      << "got the hook's child " << child_pid << " alive, want it killed with the group";
}

TEST_F(HookRunnerTest, RunsOneCustomersEventsInOrderAndCustomersSideBySide) {
  install("record", "link-up.d/10-record");
  install("record", "link-down.d/10-record");
  asio::io_context io;
  hook_runner runner(io, settings());
  // acme's link-up waits for the gate that beta's hook opens: this only
  // finishes (gate-ok) when customers run side by side; acme's link-down
  // is quick and must still come after acme's link-up.
  runner.fire(context(hook_event::link_up, "acme", "wait-gate"));
  runner.fire(context(hook_event::link_down, "acme"));
  runner.fire(context(hook_event::link_up, "beta", "open-gate"));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";

  std::vector<std::string> want = {"link-up beta 10-record", "link-up acme 10-record gate-ok",
                                   "link-down acme 10-record"};
  auto got = read_lines(root_ / "order.log");
  EXPECT_EQ(got, want) << "got " << ::testing::PrintToString(got) << ", want "
                       << ::testing::PrintToString(want);
}

TEST_F(HookRunnerTest, SkipsBackupsDotfilesAndNonExecutables) {
  install("record", "link-up.d/10-record");
  install("record", "link-up.d/20-record~");
  install("record", "link-up.d/30-record.bak");
  install("record", "link-up.d/.40-record");
  install("record", "link-up.d/50-record", 0644);
  fs::create_directory(hooks_ / "link-up.d/60-dir");
  asio::io_context io;
  hook_runner runner(io, settings());
  runner.fire(context(hook_event::link_up, "acme"));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";

  std::vector<std::string> want = {"link-up acme 10-record"};
  auto got = read_lines(root_ / "order.log");
  EXPECT_EQ(got, want) << "got " << ::testing::PrintToString(got) << ", want "
                       << ::testing::PrintToString(want);
  EXPECT_EQ(runner.started(), 1u);
  EXPECT_EQ(runner.refused(), 0u);
}

TEST_F(HookRunnerTest, RefusesAWorldWritableHook) {
  install("record", "link-up.d/10-record", 0757);
  install("record", "link-up.d/20-record");
  asio::io_context io;
  hook_runner runner(io, settings());
  runner.fire(context(hook_event::link_up, "acme"));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";

  std::vector<std::string> want = {"link-up acme 20-record"};
  auto got = read_lines(root_ / "order.log");
  EXPECT_EQ(got, want) << "got " << ::testing::PrintToString(got) << ", want "
                       << ::testing::PrintToString(want);
  EXPECT_EQ(runner.refused(), 1u);
  std::string log = log_text();
  EXPECT_NE(log.find("error: hook link-up.d/10-record: refused: "), std::string::npos)
      << "got no refusal in:\n"
      << log;
  EXPECT_NE(log.find("10-record is world-writable"), std::string::npos) << log;
}

TEST_F(HookRunnerTest, RefusesAWorldWritableHookDirectory) {
  install("record", "link-up.d/10-record");
  fs::permissions(hooks_ / "link-up.d", fs::perms(01777));  // even sticky
  asio::io_context io;
  hook_runner runner(io, settings());
  runner.fire(context(hook_event::link_up, "acme"));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";

  EXPECT_FALSE(fs::exists(root_ / "order.log")) << "got the hook run, want it refused";
  EXPECT_EQ(runner.started(), 0u);
  EXPECT_EQ(runner.refused(), 1u);
  EXPECT_NE(log_text().find("link-up.d is world-writable"), std::string::npos) << log_text();
}

TEST_F(HookRunnerTest, CountsAFailingHookAndRunsTheNext) {
  install("fail", "flush-failed.d/10-fail");
  install("record", "flush-failed.d/20-record");
  asio::io_context io;
  hook_runner runner(io, settings());
  runner.fire(context(hook_event::flush_failed, "acme", "451 4.4.1 no answer"));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";

  EXPECT_EQ(runner.started(), 2u);
  EXPECT_EQ(runner.failed(), 1u);
  EXPECT_EQ(runner.timed_out(), 0u);
  std::vector<std::string> want = {"flush-failed acme 20-record"};
  EXPECT_EQ(read_lines(root_ / "order.log"), want);
  std::string log = log_text();
  for (std::string line : {"hook flush-failed.d/10-fail: failing on purpose",
                           "warning: hook flush-failed.d/10-fail: exit 3 after"})
    EXPECT_NE(log.find(line), std::string::npos) << "got no \"" << line << "\" in:\n" << log;
}

TEST_F(HookRunnerTest, RunsAnyDirHooksForEveryEventInNameOrder) {
  install("record", "any.d/10-record");
  install("record", "link-up.d/20-record");
  install("record", "any.d/30-record");
  asio::io_context io;
  hook_runner runner(io, settings());
  runner.fire(context(hook_event::link_up, "acme"));
  runner.fire(context(hook_event::route_changed, "acme"));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";

  std::vector<std::string> want = {"link-up acme 10-record", "link-up acme 20-record",
                                   "link-up acme 30-record", "route-changed acme 10-record",
                                   "route-changed acme 30-record"};
  auto got = read_lines(root_ / "order.log");
  EXPECT_EQ(got, want) << "got " << ::testing::PrintToString(got) << ", want "
                       << ::testing::PrintToString(want);
}

TEST_F(HookRunnerTest, DropsEventsBeyondTheQueueBound) {
  install("record", "any.d/10-record");
  asio::io_context io;
  hook_settings s = settings();
  s.max_running = 1;
  s.max_queued = 2;
  hook_runner runner(io, s);
  // The first event starts at once, two wait, the fourth finds the queue full.
  for (auto c : {"a", "b", "c", "d"}) runner.fire(context(hook_event::link_up, c));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";

  EXPECT_EQ(runner.started(), 3u);
  EXPECT_EQ(runner.dropped(), 1u);
  EXPECT_NE(log_text().find("hooks: queue full: dropped link-up for customer d"), std::string::npos)
      << log_text();
}

TEST_F(HookRunnerTest, StopEndsRunningHooksAndDropsQueuedOnes) {
  install("hang", "link-down.d/10-hang");
  asio::io_context io;
  hook_settings s = settings();
  s.kill_grace = 300ms;
  hook_runner runner(io, s);
  runner.fire(context(hook_event::link_down, "acme"));
  runner.fire(context(hook_event::link_down, "acme"));  // waits behind the first

  bool drained = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        // Stop once the hook is really running (it wrote its pids), ≤ 10 s.
        asio::steady_timer t(co_await asio::this_coro::executor);
        for (int i = 0; i < 500 && !fs::exists(root_ / "hang.pids"); ++i) {
          t.expires_after(20ms);
          co_await t.async_wait(asio::use_awaitable);
        }
        runner.stop();
        drained = co_await runner.drain(30s);
      },
      asio::detached);
  io.run();

  ASSERT_TRUE(drained) << "got timeout, want the hook ended by stop()";
  EXPECT_EQ(runner.started(), 1u);
  EXPECT_EQ(runner.dropped(), 1u);
  std::string log = log_text();
  for (std::string want : {"hooks: stopping: dropped 1 queued events",
                           "hook link-down.d/10-hang: daemon stopping; sending SIGTERM"})
    EXPECT_NE(log.find(want), std::string::npos) << "got no \"" << want << "\" in:\n" << log;
}

TEST_F(HookRunnerTest, DoesNothingWithoutHooksDir) {
  install("record", "link-up.d/10-record");
  asio::io_context io;
  hook_settings s = settings();
  s.dir.clear();
  hook_runner runner(io, s);
  runner.fire(context(hook_event::link_up, "acme"));
  ASSERT_TRUE(run_until_drained(io, runner)) << "got timeout, want drained";
  EXPECT_EQ(runner.started(), 0u);
  EXPECT_FALSE(fs::exists(root_ / "order.log"));
}

}  // namespace
