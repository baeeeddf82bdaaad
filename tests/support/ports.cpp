// ports.cpp — pick a port below the ephemeral range, check it binds, claim it
// with an flock so that parallel test processes never share one.
#include "tests/support/ports.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <random>
#include <string>
#include <system_error>

namespace flushgate::test {

namespace {

constexpr int first_port = 20000;
constexpr int last_port = 32767;  // the kernel's ephemeral range starts above
constexpr const char* claim_directory = "/tmp/flushgate-test-ports";

// Can a socket of this type bind the port on this loopback address?
// A missing address family (no IPv6 here) counts as free.
bool binds(int family, int type, int port) {
  int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return errno == EAFNOSUPPORT;
  }
  int result = -1;
  if (family == AF_INET) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    result = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  } else {
    int only_v6 = 1;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only_v6, sizeof only_v6);
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_addr = in6addr_loopback;
    address.sin6_port = htons(static_cast<std::uint16_t>(port));
    result = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  }
  const int error = errno;
  ::close(fd);
  return result == 0 || (family == AF_INET6 && error == EADDRNOTAVAIL);
}

// Take the port's claim file for the rest of this process's life. The lock
// goes with the process, however it ends; the descriptor is never closed.
bool claim(int port) {
  if (::mkdir(claim_directory, 01777) == 0) {
    ::chmod(claim_directory, 01777);  // sticky and shared, like /tmp, whatever the umask
  }
  const std::string path = std::string(claim_directory) + "/" + std::to_string(port);
  int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0444);
  if (fd < 0) {
    return false;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return false;
  }
  return true;
}

std::uint16_t pick(int type) {
  static std::mutex mutex;  // tests may start servers from several threads
  static std::minstd_rand random{static_cast<unsigned>(::getpid()) * 2654435761u};
  std::lock_guard lock(mutex);
  constexpr int span = last_port - first_port + 1;
  const int start = static_cast<int>(random() % span);
  for (int step = 0; step < span; ++step) {
    const int port = first_port + (start + step) % span;
    if (binds(AF_INET, type, port) && binds(AF_INET6, type, port) && claim(port)) {
      // Checked again under the claim: a test that held the claim until a
      // moment ago may have left a server (a child it started) on the port.
      if (binds(AF_INET, type, port) && binds(AF_INET6, type, port)) {
        return static_cast<std::uint16_t>(port);
      }
    }
  }
  throw std::system_error(EADDRINUSE, std::generic_category(),
                          "no free loopback port in 20000-32767");
}

}  // namespace

std::uint16_t free_port() {
  return pick(SOCK_STREAM);
}

std::uint16_t free_udp_port() {
  return pick(SOCK_DGRAM);
}

}  // namespace flushgate::test
