// hooks.cpp — see hooks.hpp.
//
// Shape: fire() posts the event to the io thread, where it joins its
// customer's lane (a FIFO). A lane with work waits in `ready_` for one of
// max_running slots; a lane that holds a slot runs one event — its hooks one
// after the other — and then queues again behind the other lanes, so one
// busy customer cannot starve the rest. Each hook is one coroutine: a reader
// drains the output pipe while a supervisor waits for the exit (pidfd), the
// timeout, SIGTERM and SIGKILL.
#include "linkmon/hooks.hpp"

#include "core/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

namespace flushgate::linkmon {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace asio::experimental::awaitable_operators;
using std::chrono::milliseconds;

namespace {

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
// How long the reader may still take after the hook exited: long enough for
// the last bytes in the pipe, short enough that a background child that keeps
// the pipe open does not hold the customer's lane.
constexpr milliseconds output_linger{500};
// Exit polling interval, used only where pidfd_open is unavailable.
constexpr milliseconds exit_poll_interval{50};
// Output lines longer than this are logged in pieces (syslog cuts long ones).
constexpr std::size_t max_line = 500;
constexpr const char* hook_path = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

// run-parts(8) names: [A-Za-z0-9_-]+. Rules out backups, dotfiles, "x.bak".
bool valid_hook_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// An environment value: control characters (a forged line in a log the hook
// writes) become '?'; so do spaces where the value is a space-separated list.
std::string env_value(std::string_view text, bool in_list = false) {
  std::string out(text);
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || (in_list && c == ' ')) c = '?';
  }
  return out;
}

std::vector<std::string> hook_environment(const hook_context& ctx) {
  std::string domains;
  for (const auto& d : ctx.domains) {
    if (!domains.empty()) domains += ' ';
    domains += env_value(d, true);
  }
  return {
      hook_path,
      std::string("FLUSHGATE_EVENT=") + to_string(ctx.event),
      "FLUSHGATE_CUSTOMER=" + env_value(ctx.customer),
      "FLUSHGATE_USER=" + env_value(ctx.user),
      "FLUSHGATE_IP=" + env_value(ctx.ip),
      "FLUSHGATE_IPV4=" + env_value(ctx.ipv4),
      "FLUSHGATE_IPV6=" + env_value(ctx.ipv6),
      "FLUSHGATE_PREFIX=" + env_value(ctx.prefix),
      "FLUSHGATE_SESSION=" + env_value(ctx.session),
      "FLUSHGATE_DOMAINS=" + domains,
      "FLUSHGATE_ROUTE=" + env_value(ctx.route),
      "FLUSHGATE_DETAIL=" + env_value(ctx.detail),
  };
}

// Why `st` (of `what`) lets someone other than root or the daemon change it;
// "" when it does not. A sticky directory may be writable by all when
// `sticky_ok` (it is above the hooks: others cannot replace our entries).
std::string write_risk(const fs::path& what, const struct stat& st, bool sticky_ok) {
  if (st.st_uid != 0 && st.st_uid != ::geteuid())
    return fmt::format("{} is owned by uid {}", what.string(), st.st_uid);
  if (sticky_ok && S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) != 0) return {};
  if ((st.st_mode & S_IWOTH) != 0) return fmt::format("{} is world-writable", what.string());
  if ((st.st_mode & S_IWGRP) != 0 && st.st_gid != 0 && st.st_gid != ::getegid())
    return fmt::format("{} is writable by group {}", what.string(), st.st_gid);
  return {};
}

// Checks `path` (through symlinks) and every directory above its real
// location; returns why it cannot be trusted, or "" and its real path.
std::string untrusted_reason(const fs::path& path, fs::path& real) {
  std::error_code ec;
  real = fs::canonical(path, ec);
  if (ec) return fmt::format("{}: {}", path.string(), ec.message());
  struct stat st {};
  if (::stat(real.c_str(), &st) != 0) return fmt::format("{}: {}", real.string(), std::strerror(errno));
  if (auto risk = write_risk(real, st, false); !risk.empty()) return risk;
  for (fs::path dir = real.parent_path();; dir = dir.parent_path()) {
    if (::stat(dir.c_str(), &st) != 0) return fmt::format("{}: {}", dir.string(), std::strerror(errno));
    if (auto risk = write_risk(dir, st, true); !risk.empty()) return risk;
    if (dir == dir.parent_path()) break;
  }
  return {};
}

struct hook_file {
  std::string name;   // sort key: "10-route"
  std::string label;  // for the log: "link-up.d/10-route"
  fs::path path;
};

// The process of one hook run and what the two coroutines share about it.
struct child {
  pid_t pid = -1;
  std::optional<asio::posix::stream_descriptor> pidfd;  // absent: poll waitpid
  asio::posix::stream_descriptor out;                   // read end of stdout+stderr
  asio::steady_timer linger;                            // supervisor waits for the reader
  std::string label;
  bool output_done = false;
  bool reaped = false;
  int status = 0;  // waitpid status once reaped

  child(asio::any_io_executor ex, std::string l) : out(ex), linger(ex), label(std::move(l)) {}
};

// posix_spawn with a fixed argv, a clean environment, stdin /dev/null,
// stdout+stderr into a fresh pipe, cwd /, no other inherited descriptor,
// default signal dispositions, its own process group. Returns the errno.
int spawn_hook(const fs::path& path, const char* event, const std::vector<std::string>& env, pid_t& pid,
               int& out_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno;
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addchdir_np(&actions, "/");
  // Asio's sockets are not close-on-exec: without this a hook would inherit
  // the listening sockets and keep them bound after the daemon exits.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);  // e.g. an ignored SIGPIPE
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::string path_text = path.string();
  std::string event_text = event;
  std::vector<char*> argv{path_text.data(), event_text.data(), nullptr};
  std::vector<std::string> env_copy = env;
  std::vector<char*> envp;
  for (auto& e : env_copy) envp.push_back(e.data());
  envp.push_back(nullptr);

  int rc = ::posix_spawn(&pid, path_text.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return rc;
  }
  out_fd = fds[0];
  return 0;
}

// pidfd_open(2) by number: glibc 2.36's <sys/pidfd.h> is not C++-safe.
int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// Reaps the child if it has exited; true when it is gone.
bool try_reap(child& c) {
  if (c.reaped) return true;
  int status = 0;
  pid_t r = ::waitpid(c.pid, &status, WNOHANG);
  if (r == c.pid) {
    c.reaped = true;
    c.status = status;
  } else if (r < 0 && errno == ECHILD) {
    // Reaped elsewhere (SIGCHLD ignored): gone, status unknown.
    c.reaped = true;
    c.status = -1;
  }
  return c.reaped;
}

// Waits until the child exits (true) or `deadline` fires or is reset (false).
asio::awaitable<bool> wait_exit(child& c, asio::steady_timer& deadline) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer tick(ex);
  while (!try_reap(c)) {
    if (c.pidfd) {
      // The pidfd turns readable when the process exits (Linux 5.3).
      auto r = co_await (c.pidfd->async_wait(asio::posix::descriptor_base::wait_read, tuple_awaitable) ||
                         deadline.async_wait(tuple_awaitable));
      if (r.index() == 1) co_return try_reap(c);
      if (auto [ec] = std::get<0>(r); ec) c.pidfd.reset();  // fall back to polling
    } else {
      tick.expires_after(exit_poll_interval);
      auto r = co_await (tick.async_wait(tuple_awaitable) || deadline.async_wait(tuple_awaitable));
      if (r.index() == 1) co_return try_reap(c);
    }
  }
  co_return true;
}

// Logs the output line by line, keeping at most `max` bytes; reads (and
// discards) the rest so that the hook never blocks on a full pipe.
asio::awaitable<void> read_output(child& c, std::size_t max) {
  std::array<char, 1024> buf{};
  std::string line;
  std::size_t kept = 0, discarded = 0;
  auto emit = [&] {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) core::log_info("hook {}: {}", c.label, line);
    line.clear();
  };
  for (;;) {
    auto [ec, n] = co_await c.out.async_read_some(asio::buffer(buf), tuple_awaitable);
    for (std::size_t i = 0; i < n; ++i) {
      if (kept == max) {
        discarded += n - i;
        break;
      }
      ++kept;
      if (buf[i] == '\n') {
        emit();
      } else {
        line += buf[i];
        if (line.size() == max_line) emit();
      }
    }
    if (ec) break;  // eof, or cancelled by the supervisor
  }
  emit();
  if (discarded > 0)
    core::log_warning("hook {}: output truncated: {} bytes logged, {} discarded", c.label, kept, discarded);
  c.output_done = true;
  c.linger.cancel();
}

std::string describe_status(int status) {
  if (status == -1) return "exit status unknown";
  if (WIFEXITED(status)) return fmt::format("exit {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return fmt::format("status {:#x}", status);
}

}  // namespace

const char* to_string(hook_event e) {
  switch (e) {
    case hook_event::link_up: return "link-up";
    case hook_event::link_down: return "link-down";
    case hook_event::route_changed: return "route-changed";
    case hook_event::flush_done: return "flush-done";
    case hook_event::flush_failed: return "flush-failed";
  }
  return "unknown";
}

struct hook_runner::impl : std::enable_shared_from_this<impl> {
  struct lane {
    std::deque<hook_context> pending;
    bool busy = false;  // in `ready` or running an event
  };

  asio::io_context& io;
  hook_settings settings;
  std::map<std::string, lane> lanes;
  std::deque<std::string> ready;  // lanes waiting for a slot, in turn
  std::size_t queued = 0;         // events in lanes, not yet started
  std::size_t running = 0;        // lanes running an event (≤ max_running)
  bool stopping = false;
  std::set<asio::steady_timer*> deadlines;  // of running hooks: stop() fires them
  std::set<asio::steady_timer*> drain_waiters;
  std::atomic<std::uint64_t> posted{0};  // fired, not yet enqueued on the io thread
  std::atomic<std::uint64_t> started{0}, failed{0}, timed_out{0}, refused{0}, dropped{0};

  impl(asio::io_context& i, hook_settings s) : io(i), settings(std::move(s)) {
    settings.max_running = std::max<std::size_t>(settings.max_running, 1);
  }

  bool idle() const { return posted == 0 && queued == 0 && running == 0; }

  void notify_if_idle() {
    if (!idle()) return;
    for (auto* t : drain_waiters) t->cancel();
  }

  // On the io thread: the event joins its customer's lane, or is dropped.
  void enqueue(hook_context ctx) {
    --posted;
    if (stopping || queued >= settings.max_queued) {
      ++dropped;
      core::log_warning("hooks: {}: dropped {} for customer {}", stopping ? "stopping" : "queue full",
                        to_string(ctx.event), ctx.customer);
      notify_if_idle();
      return;
    }
    auto& l = lanes[ctx.customer];
    l.pending.push_back(std::move(ctx));
    ++queued;
    if (!l.busy) {
      l.busy = true;
      ready.push_back(l.pending.back().customer);
    }
    pump();
  }

  // Starts the next event of waiting lanes while slots are free.
  void pump() {
    while (running < settings.max_running && !ready.empty()) {
      std::string key = std::move(ready.front());
      ready.pop_front();
      auto it = lanes.find(key);
      if (it == lanes.end() || it->second.pending.empty()) continue;
      hook_context ctx = std::move(it->second.pending.front());
      it->second.pending.pop_front();
      --queued;
      ++running;
      auto self = shared_from_this();
      asio::co_spawn(io, run_event(std::move(ctx)), [self, key](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& x) {
            core::log_error("hooks: customer {}: {}", key, x.what());
          } catch (...) {
            core::log_error("hooks: customer {}: unknown exception", key);
          }
        }
        self->finish_event(key);
      });
    }
    notify_if_idle();
  }

  // The lane's event is over: its next event queues behind the other lanes.
  void finish_event(const std::string& key) {
    --running;
    auto it = lanes.find(key);
    if (it != lanes.end()) {
      if (it->second.pending.empty())
        lanes.erase(it);
      else
        ready.push_back(key);
    }
    pump();
  }

  // The executables for `e` from <dir>/<event>.d and <dir>/any.d, in name
  // order; an untrusted directory is refused as a whole.
  std::vector<hook_file> list_hooks(hook_event e) {
    std::vector<hook_file> hooks;
    fs::path real;
    fs::path base(settings.dir);
    std::error_code ec;
    if (!fs::is_directory(base, ec)) return hooks;
    if (auto why = untrusted_reason(base, real); !why.empty()) {
      ++refused;
      core::log_error("hooks: refused {}: {}", base.string(), why);
      return hooks;
    }
    for (std::string sub : {std::string(to_string(e)) + ".d", std::string("any.d")}) {
      fs::path dir = base / sub;
      if (!fs::is_directory(dir, ec)) continue;
      if (auto why = untrusted_reason(dir, real); !why.empty()) {
        ++refused;
        core::log_error("hooks: refused {}: {}", dir.string(), why);
        continue;
      }
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (!valid_hook_name(name)) {
          core::log_debug("hooks: skipped {}/{}: not a hook name", sub, name);
          continue;
        }
        struct stat st {};
        if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
            (st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)) == 0) {
          core::log_debug("hooks: skipped {}/{}: not an executable file", sub, name);
          continue;
        }
        hooks.push_back({name, sub + "/" + name, it->path()});
      }
      if (ec) core::log_warning("hooks: cannot list {}: {}", dir.string(), ec.message());
    }
    // Stable: on equal names the event's own hook runs before any.d's.
    std::stable_sort(hooks.begin(), hooks.end(),
                     [](const hook_file& a, const hook_file& b) { return a.name < b.name; });
    return hooks;
  }

  asio::awaitable<void> run_event(hook_context ctx) {
    for (const auto& h : list_hooks(ctx.event)) {
      if (stopping) break;
      co_await run_hook(h, ctx);
    }
  }

  // One hook process from spawn to reaping; all outcomes are logged.
  asio::awaitable<void> run_hook(const hook_file& h, const hook_context& ctx) {
    // Checked right before the spawn, on the path actually executed.
    fs::path real;
    if (auto why = untrusted_reason(h.path, real); !why.empty()) {
      ++refused;
      core::log_error("hook {}: refused: {}", h.label, why);
      co_return;
    }
    auto ex = co_await asio::this_coro::executor;
    child c(ex, h.label);
    int out_fd = -1;
    if (int err = spawn_hook(real, to_string(ctx.event), hook_environment(ctx), c.pid, out_fd); err != 0) {
      ++failed;
      core::log_error("hook {}: cannot start: {}", h.label, std::strerror(err));
      co_return;
    }
    ++started;
    auto began = std::chrono::steady_clock::now();
    core::log_info("hook {}: started pid {} for {} customer={} user={} ip={} session={}", h.label, c.pid,
                   to_string(ctx.event), ctx.customer, ctx.user, ctx.ip, ctx.session);
    c.out.assign(out_fd);
    if (int fd = open_pidfd(c.pid); fd >= 0) c.pidfd.emplace(ex, fd);

    co_await (read_output(c, settings.max_output) && supervise(c));

    auto ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - began);
    if (c.reaped && c.status == 0) {
      core::log_info("hook {}: exit 0 after {} ms", h.label, ms.count());
      co_return;
    }
    // A failed hook is reported and counted; the next hook and the flush go on.
    ++failed;
    core::log_warning("hook {}: {} after {} ms", h.label,
                      c.reaped ? describe_status(c.status) : "did not exit after SIGKILL; left behind",
                      ms.count());
  }

  // Waits for the exit within the timeout, else SIGTERM, then SIGKILL, to
  // the hook's process group (its own children too); then lets the reader
  // finish for a moment.
  asio::awaitable<void> supervise(child& c) {
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer deadline(ex);
    deadline.expires_after(settings.timeout);
    deadlines.insert(&deadline);
    bool exited = co_await wait_exit(c, deadline);
    deadlines.erase(&deadline);
    for (int sig : {SIGTERM, SIGKILL}) {
      if (exited) break;
      if (sig == SIGTERM) {
        ++timed_out;
        core::log_warning(
            "hook {}: {}; sending SIGTERM", c.label,
            stopping ? "daemon stopping" : fmt::format("timed out after {} ms", settings.timeout.count()));
      } else {
        core::log_warning("hook {}: still running {} ms after SIGTERM; sending SIGKILL", c.label,
                          settings.kill_grace.count());
      }
      ::kill(-c.pid, sig);
      deadline.expires_after(settings.kill_grace);
      exited = co_await wait_exit(c, deadline);
    }
    if (!c.output_done) {
      c.linger.expires_after(output_linger);
      co_await c.linger.async_wait(tuple_awaitable);
      if (!c.output_done) c.out.cancel();  // a background child holds the pipe
    }
  }

  // Drops what waits; running hooks get their timeout now (SIGTERM, SIGKILL).
  void stop() {
    stopping = true;
    std::uint64_t waiting = 0;
    for (auto& [key, l] : lanes) waiting += l.pending.size();
    dropped += waiting;
    if (waiting > 0) core::log_warning("hooks: stopping: dropped {} queued events", waiting);
    // Lanes that hold a slot find themselves gone in finish_event.
    lanes.clear();
    ready.clear();
    queued = 0;
    for (auto* t : deadlines) t->expires_at(asio::steady_timer::clock_type::now());
    notify_if_idle();
  }
};

hook_runner::hook_runner(asio::io_context& io, hook_settings settings)
    : impl_(std::make_shared<impl>(io, std::move(settings))) {
  const auto& dir = impl_->settings.dir;
  std::error_code ec;
  if (dir.empty())
    core::log_debug("hooks: off (no hooks_dir)");
  else if (!fs::is_directory(dir, ec))
    core::log_warning("hooks: hooks_dir {} is not a directory; no hooks will run", dir);
}

hook_runner::~hook_runner() = default;

void hook_runner::fire(const hook_context& ctx) {
  if (impl_->settings.dir.empty()) return;
  ++impl_->posted;
  asio::post(impl_->io, [self = impl_, ctx] { self->enqueue(ctx); });
}

asio::awaitable<bool> hook_runner::drain(milliseconds limit) {
  auto self = impl_;
  if (self->idle()) co_return true;
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(limit);
  self->drain_waiters.insert(&t);
  co_await t.async_wait(tuple_awaitable);  // cancelled by notify_if_idle
  self->drain_waiters.erase(&t);
  co_return self->idle();
}

void hook_runner::stop() { impl_->stop(); }

std::uint64_t hook_runner::started() const { return impl_->started; }
std::uint64_t hook_runner::failed() const { return impl_->failed; }
std::uint64_t hook_runner::timed_out() const { return impl_->timed_out; }
std::uint64_t hook_runner::refused() const { return impl_->refused; }
std::uint64_t hook_runner::dropped() const { return impl_->dropped; }

}  // namespace flushgate::linkmon
