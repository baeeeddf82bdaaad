// hooks.hpp — run the operator's own scripts on link and flush events.
//
// Purpose: on link-up, link-down, route-changed, flush-done and flush-failed
// the daemon runs the executables the operator put in `hooks_dir`:
//   <hooks_dir>/<event>.d/*   for that event only ("link-up.d/10-route")
//   <hooks_dir>/any.d/*       for every event
// both sets together in name order (C locale), one after the other, like
// run-parts(8). A name counts only when it consists of A-Z a-z 0-9 _ and -
// alone, so editor backups (`x~`, `.x.swp`), package leftovers
// (`x.dpkg-old`), dotfiles and READMEs are skipped; so are non-executables
// (`chmod -x` disables a hook). Each hook gets the fixed argv {path, event}
// (no shell), stdin /dev/null, the working directory /, and a clean
// environment: PATH=/usr/sbin:/usr/bin:/sbin:/bin, FLUSHGATE_EVENT,
// FLUSHGATE_CUSTOMER, FLUSHGATE_USER, FLUSHGATE_IP, FLUSHGATE_IPV4,
// FLUSHGATE_IPV6, FLUSHGATE_PREFIX, FLUSHGATE_SESSION,
// FLUSHGATE_DOMAINS (space separated), FLUSHGATE_ROUTE, FLUSHGATE_DETAIL.
// Its stdout and stderr are logged line by line ("hook link-up.d/10-route:
// ..."; long lines in pieces of 500 bytes), up to max_output bytes per hook
// run; the rest is read and discarded, so a chatty hook never blocks.
// Hooks never block the io thread: fire() returns at once; processes are
// spawned with posix_spawn, their output is read through a pipe and their
// exit is watched through a pidfd (pidfd_open, Linux 5.3), both on the
// io_context — no SIGCHLD handler, so no other child of the daemon is ever
// reaped by mistake. Where pidfd_open is refused (old kernel, seccomp) the
// exit is polled with waitpid(WNOHANG) on a timer.
// Order: one customer's events run one after the other in the order fired
// (a link-down hook never overtakes that customer's link-up hook); different
// customers run side by side, at most max_running hook processes at once.
// Events beyond max_queued waiting ones are logged and dropped.
// A hook that runs past `timeout` gets SIGTERM, after `kill_grace` SIGKILL,
// both sent to its whole process group (each hook leads its own group).
// A non-zero exit, a signal, a timeout or a refusal is logged (warning or
// error) and counted; it never stops the next hook or the flush itself.
//
// Security: the daemon may run as root, so a hook runs only when nobody but
// root or the daemon's own user can change it: the hook file, its directory
// and hooks_dir must be owned by root or the effective uid, must not be
// world-writable, nor group-writable unless the group is root or the
// daemon's own; every directory above them must pass the same test, except
// that a sticky directory (like /tmp) may be writable by all.
// Symlinks are followed and the target is checked. A refused hook is logged
// as an error ("refused: ... is world-writable") and not run.
// The context's strings partly come from the network (RADIUS user names,
// session ids): they reach the hook only as environment values, never as
// argv or through a shell, with control characters replaced by '?'.
// Errors: none returned; every failure is logged and counted (counters below).
// Limitations: output that a hook's background children write after the hook
// itself exited is not captured (they should redirect it); the directory scan
// and posix_spawn (vfork-style, returns once the child has exec'd) run on the
// io thread, as cheap as opening a file. Call fire() and the counters from
// any thread, drain() and stop() on the io_context's thread; destroy the
// runner before its io_context.
// See also: scripts/hooks/README.md (examples), PROTOCOLS.md §11 (pppd).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace flushgate::linkmon {

enum class hook_event { link_up, link_down, route_changed, flush_done, flush_failed };

// "link-up", "link-down", "route-changed", "flush-done", "flush-failed".
const char* to_string(hook_event e);

// What a hook learns about the event (empty strings stay empty variables).
struct hook_context {
  hook_event event = hook_event::link_up;
  std::string customer;              // FLUSHGATE_CUSTOMER; also the ordering key
  std::string user;                  // FLUSHGATE_USER: the link's RADIUS/PPP user
  std::string ip;                    // FLUSHGATE_IP: the address mail goes to first (else the link's)
  std::string ipv4;                  // FLUSHGATE_IPV4: the link's IPv4 address, "" when none
  std::string ipv6;                  // FLUSHGATE_IPV6: the server's IPv6 address on the link, "" when none
  std::string prefix;                // FLUSHGATE_PREFIX: the link's IPv6 prefix, "" when none
  std::string session;               // FLUSHGATE_SESSION
  std::vector<std::string> domains;  // FLUSHGATE_DOMAINS, space separated
  std::string route;                 // FLUSHGATE_ROUTE, e.g. "192.0.2.7:25" or "hold"
  std::string detail;                // FLUSHGATE_DETAIL: flush figures or the error
};

struct hook_settings {
  std::string dir;  // hooks_dir; empty: hooks are off
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};  // SIGTERM → SIGKILL
  std::size_t max_output = 4096;                                  // bytes logged per hook run
  std::size_t max_running = 8;                                    // hook processes at once
  std::size_t max_queued = 256;                                   // events waiting; more are dropped
};

class hook_runner {
 public:
  // Logs a warning when settings.dir is set but is not a directory.
  hook_runner(boost::asio::io_context& io, hook_settings settings);
  // Events already fired still run: their coroutines share the runner's state.
  ~hook_runner();

  hook_runner(const hook_runner&) = delete;
  hook_runner& operator=(const hook_runner&) = delete;

  // Queues the event's hooks and returns at once (thread-safe).
  void fire(const hook_context& ctx);
  // Waits until no hook runs or waits; true when idle, false when `limit` passed first.
  boost::asio::awaitable<bool> drain(std::chrono::milliseconds limit);
  // For shutdown: drops queued events, refuses new ones, times out running hooks now.
  void stop();

  std::uint64_t started() const;    // hook processes spawned
  std::uint64_t failed() const;     // non-zero exit, signal, timeout or spawn failure
  std::uint64_t timed_out() const;  // killed at the timeout (also counted as failed)
  std::uint64_t refused() const;    // not run: untrusted owner or mode
  std::uint64_t dropped() const;    // events dropped: queue full or stopped

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace flushgate::linkmon
