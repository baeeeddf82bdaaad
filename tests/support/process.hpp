// process.hpp — start a program for a test, watch it, and always reap it.
//
// Purpose: tests run the daemon under test and real peers (swaks, postfix,
// fetchmail, radclient) as child processes. A process object owns its child:
// when it goes out of scope while the child still runs, the child's process
// group is killed and reaped, so a failed test leaves no stray processes.
// Security: argv is passed to execvp(3) as is, never through a shell.
// Output goes to files (named, or private ones read back with stdout_text()),
// never to pipes, so a chatty child can never block on a full pipe.
// Errors: the constructor throws std::system_error when the program cannot be
// started (fork or exec failed, e.g. not installed) — a start-up failure.
// Exit statuses follow the shell: the exit code, or 128 + signal number.
// See also: wait.hpp, postfix_instance.hpp.
#pragma once

#include "tests/support/temp_dir.hpp"

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace flushgate::test {

struct spawn_options {
  std::vector<std::string> env;           // "NAME=value", added to or replacing the inherited ones
  std::filesystem::path working_dir;      // empty: the caller's
  std::filesystem::path stdout_path;      // appended to; empty: a private file
  std::filesystem::path stderr_path;      // appended to; empty: a private file
  std::optional<std::string> stdin_text;  // the child's stdin; nullopt: /dev/null
};

class process {
 public:
  // Starts argv[0] (looked up in PATH) with argv in its own process group.
  explicit process(const std::vector<std::string>& argv, const spawn_options& options = {});
  // Kills the process group (SIGKILL) and reaps the child if it still runs.
  ~process();

  process(process&& other) noexcept;
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  process& operator=(process&&) = delete;

  // The child's PID (also its process group id); -1 after a move.
  pid_t pid() const noexcept { return pid_; }
  // True while the child has not exited (reaps it when it has).
  bool running();
  // Waits up to `timeout`; the exit status, or nullopt if it still runs.
  std::optional<int> wait_for_exit(std::chrono::milliseconds timeout);
  // Sends `sig` to the child alone; false when it has already been reaped.
  bool signal(int sig);
  // SIGKILL to the child's process group, then reaps; returns the exit status.
  int kill();
  // The exit status once reaped, else nullopt.
  std::optional<int> exit_status() const noexcept { return status_; }

  // The child's output so far, read back from its stdout/stderr file.
  std::string stdout_text() const;
  std::string stderr_text() const;

 private:
  bool try_reap();

  temp_dir scratch_;  // captured stdout/stderr, stdin text
  std::filesystem::path stdout_path_;
  std::filesystem::path stderr_path_;
  pid_t pid_ = -1;
  int pidfd_ = -1;  // readable once the child has exited
  std::optional<int> status_;
};

struct command_result {
  int exit_code = -1;      // exit code or 128 + signal; 137 after a timeout kill
  bool timed_out = false;  // the timeout expired and the command was killed
  std::string stdout_text;
  std::string stderr_text;
};

// Runs argv to completion with a hard timeout (kills its process group on
// expiry) and returns its exit code and output. Throws like process().
command_result run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                           const std::optional<std::string>& stdin_text = std::nullopt);

}  // namespace flushgate::test
