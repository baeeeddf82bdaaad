// control_client.cpp — see control_client.hpp.
#include "control/control_client.hpp"

#include "core/unix_address.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace flushgate::control {

bool control_client::request(const std::string& request, std::string& answer, std::string& error,
                             std::chrono::seconds timeout) {
  // A path longer than sun_path is reached through its directory.
  auto address = core::unix_address::make(path_);
  if (!address) {
    const std::string why = core::unix_address::check_length(path_);
    error = "cannot reach flushgated at control_socket " + path_ + ": " +
            (why.empty() ? address.error().message() : why);
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string& short_path = address->socket_path();
  std::memcpy(addr.sun_path, short_path.c_str(), short_path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    error = "cannot reach flushgated at " + path_ + ": " + std::strerror(errno) +
            " (is the daemon running, and is this the right --config?)";
    return false;
  }
  std::string line = request + "\n";
  for (std::size_t off = 0; off < line.size();) {
    ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      error = std::string("write to control socket: ") + std::strerror(errno);
      return false;
    }
    off += static_cast<std::size_t>(n);
  }
  answer.clear();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[8192];
  while (answer.empty() || answer.back() != '\n') {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      error = "flushgated did not answer within " + std::to_string(timeout.count()) + "s";
      return false;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      error = "flushgated closed the control connection";
      return false;
    }
    answer.append(buf, static_cast<std::size_t>(n));
  }
  answer.pop_back();
  return true;
}

}  // namespace flushgate::control
