// process.cpp — fork/exec with files for stdio, a pidfd to wait on, and a
// process group so that a kill also takes the child's own children.
#include "tests/support/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

extern char** environ;

namespace flushgate::test {

namespace {

using steady = std::chrono::steady_clock;

int decode_status(int status) {
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status);
  }
  if (WIFSIGNALED(status)) {
    return 128 + WTERMSIG(status);
  }
  return -1;
}

// The inherited environment with `extra` entries added or replacing same-named ones.
std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
  std::vector<std::string> result;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    result.emplace_back(*entry);
  }
  for (const auto& addition : extra) {
    const auto name = addition.substr(0, addition.find('=') + 1);  // "NAME="
    std::erase_if(result, [&](const std::string& e) { return e.starts_with(name); });
    result.push_back(addition);
  }
  return result;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) {
    result.push_back(s.data());
  }
  result.push_back(nullptr);
  return result;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// In the child, between fork and exec: only async-signal-safe calls. Reports
// errno through `error_fd` and exits 127 on failure.
[[noreturn]] void exec_child(char** argv, char** envp, const char* stdin_path,
                             const char* stdout_path, const char* stderr_path,
                             const char* working_dir, int error_fd) {
  ::setpgid(0, 0);
  int in = ::open(stdin_path, O_RDONLY);
  int out = ::open(stdout_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  int err = ::open(stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  bool ok = in >= 0 && out >= 0 && err >= 0 && ::dup2(in, 0) >= 0 && ::dup2(out, 1) >= 0 &&
            ::dup2(err, 2) >= 0 && (working_dir[0] == '\0' || ::chdir(working_dir) == 0);
  if (ok) {
    ::execvpe(argv[0], argv, envp);
  }
  int error = errno;
  [[maybe_unused]] auto written = ::write(error_fd, &error, sizeof error);
  ::_exit(127);
}

}  // namespace

process::process(const std::vector<std::string>& argv, const spawn_options& options)
    : scratch_("flushgate-process") {
  if (argv.empty()) {
    throw std::invalid_argument("process: empty argv");
  }
  stdout_path_ = options.stdout_path.empty() ? scratch_.path() / "stdout" : options.stdout_path;
  stderr_path_ = options.stderr_path.empty() ? scratch_.path() / "stderr" : options.stderr_path;
  std::filesystem::path stdin_path = "/dev/null";
  if (options.stdin_text) {
    // A file, not a pipe: the child reads it at its own pace and we never block.
    stdin_path = scratch_.path() / "stdin";
    std::ofstream(stdin_path, std::ios::binary) << *options.stdin_text;
  }

  // Everything the child needs is prepared before fork: after fork only
  // async-signal-safe calls are allowed.
  std::vector<std::string> argv_copy = argv;
  std::vector<std::string> env = merged_environment(options.env);
  std::vector<char*> argv_c = c_strings(argv_copy);
  std::vector<char*> env_c = c_strings(env);
  const std::string in = stdin_path, out = stdout_path_, err = stderr_path_;
  const std::string dir = options.working_dir;

  // exec closes the write end (O_CLOEXEC): EOF on the read end means exec worked.
  int error_pipe[2];
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "pipe2");
  }
  pid_ = ::fork();
  if (pid_ < 0) {
    int error = errno;
    ::close(error_pipe[0]);
    ::close(error_pipe[1]);
    throw std::system_error(error, std::generic_category(), "fork");
  }
  if (pid_ == 0) {
    exec_child(argv_c.data(), env_c.data(), in.c_str(), out.c_str(), err.c_str(), dir.c_str(),
               error_pipe[1]);
  }
  ::close(error_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(error_pipe[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(error_pipe[0]);
  if (n > 0) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    throw std::system_error(child_errno, std::generic_category(), "exec " + argv[0]);
  }
  // glibc 2.36's <sys/pidfd.h> lacks extern "C"; the raw system call works.
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd_ < 0) {
    int error = errno;
    kill();
    throw std::system_error(error, std::generic_category(), "pidfd_open");
  }
}

process::~process() {
  if (pid_ > 0 && !status_) {
    kill();
  }
  if (pidfd_ >= 0) {
    ::close(pidfd_);
  }
}

process::process(process&& other) noexcept
    : scratch_(std::move(other.scratch_)),
      stdout_path_(std::move(other.stdout_path_)),
      stderr_path_(std::move(other.stderr_path_)),
      pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      status_(other.status_) {}

bool process::try_reap() {
  if (status_) {
    return true;
  }
  if (pid_ <= 0) {
    return false;
  }
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    status_ = decode_status(status);
    return true;
  }
  return false;
}

bool process::running() {
  return pid_ > 0 && !try_reap();
}

std::optional<int> process::wait_for_exit(std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  while (!try_reap()) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now()).count();
    if (left <= 0 || pidfd_ < 0) {
      return std::nullopt;
    }
    pollfd exited{pidfd_, POLLIN, 0};
    ::poll(&exited, 1, static_cast<int>(std::min<long long>(left, 60'000)));
  }
  return status_;
}

bool process::signal(int sig) {
  if (pid_ <= 0 || status_) {
    return false;
  }
  return ::kill(pid_, sig) == 0;
}

int process::kill() {
  if (status_) {
    return *status_;
  }
  if (pid_ <= 0) {
    return -1;
  }
  // The group id is our child's PID; it stays ours until the child is reaped.
  ::kill(-pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  status_ = decode_status(status);
  return *status_;
}

std::string process::stdout_text() const {
  return read_file(stdout_path_);
}

std::string process::stderr_text() const {
  return read_file(stderr_path_);
}

command_result run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                           const std::optional<std::string>& stdin_text) {
  spawn_options options;
  options.stdin_text = stdin_text;
  process child(argv, options);
  command_result result;
  if (auto status = child.wait_for_exit(timeout)) {
    result.exit_code = *status;
  } else {
    result.timed_out = true;
    result.exit_code = child.kill();
  }
  result.stdout_text = child.stdout_text();
  result.stderr_text = child.stderr_text();
  return result;
}

}  // namespace flushgate::test
