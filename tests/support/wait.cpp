// wait.cpp — poll loops with deadlines.
#include "tests/support/wait.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

namespace flushgate::test {

namespace {

using steady = std::chrono::steady_clock;

// One non-blocking connect attempt, bounded by `budget`.
bool try_connect(const std::string& host, std::uint16_t port, std::chrono::milliseconds budget) {
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) {
    return false;
  }
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  bool connected = false;
  if (fd >= 0) {
    if (::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
      connected = true;
    } else if (errno == EINPROGRESS) {
      pollfd waiting{fd, POLLOUT, 0};
      int error = 0;
      socklen_t length = sizeof error;
      connected = ::poll(&waiting, 1, static_cast<int>(budget.count())) == 1 &&
                  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return connected;
}

}  // namespace

bool wait_until(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll_interval) {
  const auto deadline = steady::now() + timeout;
  while (true) {
    if (predicate()) {
      return true;
    }
    const auto now = steady::now();
    if (now >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::min<steady::duration>(poll_interval, deadline - now));
  }
}

bool wait_for_tcp(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  return wait_until([&] { return try_connect(host, port, 1000ms); }, timeout, 50ms);
}

}  // namespace flushgate::test
