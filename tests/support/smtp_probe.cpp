// smtp_probe.cpp — non-blocking socket + poll(2) for the timeouts; replies
// parsed line by line from a buffer that keeps pipelined leftovers.
#include "tests/support/smtp_probe.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

namespace flushgate::test {

namespace {

using steady = std::chrono::steady_clock;

constexpr std::size_t max_reply_bytes = 64 * 1024;

// Boost 1.81 keeps error_category's destructor public and non-virtual (so that
// categories work after main); categories are never deleted through a base
// pointer, so -Wnon-virtual-dtor is a false alarm here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class probe_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "smtp_probe"; }
  std::string message(int value) const override {
    switch (static_cast<probe_errc>(value)) {
      case probe_errc::ok:
        return "ok";
      case probe_errc::timed_out:
        return "timed out";
      case probe_errc::closed:
        return "connection closed by the server";
      case probe_errc::bad_reply:
        return "not an SMTP reply";
      case probe_errc::reply_too_long:
        return "reply longer than 64 KiB";
      case probe_errc::not_connected:
        return "not connected";
    }
    return "unknown smtp_probe error";
  }
};
#pragma GCC diagnostic pop

boost::system::error_code last_system_error() {
  return {errno, boost::system::system_category()};
}

// Milliseconds left until `deadline` for poll(2); 0 once it has passed.
int poll_budget(steady::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now());
  return static_cast<int>(std::clamp<long long>(left.count(), 0, 3'600'000));
}

// "250-text" / "250 text" / "250": the code, or -1 when the line is none of these.
int reply_code(std::string_view text) {
  if (text.size() < 3 || !std::isdigit(static_cast<unsigned char>(text[0])) ||
      !std::isdigit(static_cast<unsigned char>(text[1])) ||
      !std::isdigit(static_cast<unsigned char>(text[2]))) {
    return -1;
  }
  if (text.size() > 3 && text[3] != '-' && text[3] != ' ') {
    return -1;
  }
  return (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
}

}  // namespace

const boost::system::error_category& probe_category() noexcept {
  static const probe_category_impl category;
  return category;
}

smtp_probe::smtp_probe(std::chrono::milliseconds timeout) : timeout_(timeout) {}

smtp_probe::~smtp_probe() {
  close();
}

boost::system::error_code smtp_probe::connect(const std::string& host, std::uint16_t port) {
  close();
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) {
    return boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
  }
  boost::system::error_code ec;
  fd_ = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    ec = last_system_error();
  } else if (::connect(fd_, found->ai_addr, found->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      ec = last_system_error();
    } else {
      pollfd connecting{fd_, POLLOUT, 0};
      int error = 0;
      socklen_t length = sizeof error;
      if (::poll(&connecting, 1, static_cast<int>(timeout_.count())) != 1) {
        ec = probe_errc::timed_out;
      } else if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) {
        ec = {error, boost::system::system_category()};
      }
    }
  }
  ::freeaddrinfo(found);
  if (ec) {
    close();
  }
  return ec;
}

boost::system::error_code smtp_probe::send_raw(std::string_view bytes) {
  if (fd_ < 0) {
    return probe_errc::not_connected;
  }
  const auto deadline = steady::now() + timeout_;
  while (!bytes.empty()) {
    // MSG_NOSIGNAL: a closed peer is an error value, not SIGPIPE.
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return last_system_error();
    }
    pollfd writable{fd_, POLLOUT, 0};
    if (::poll(&writable, 1, poll_budget(deadline)) == 0) {
      return probe_errc::timed_out;
    }
  }
  return {};
}

boost::system::error_code smtp_probe::fill_buffer(steady::time_point deadline) {
  while (true) {
    char chunk[4096];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      return {};
    }
    if (n == 0) {
      return probe_errc::closed;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return last_system_error();
    }
    pollfd readable{fd_, POLLIN, 0};
    if (::poll(&readable, 1, poll_budget(deadline)) == 0) {
      return probe_errc::timed_out;
    }
  }
}

boost::system::result<probe_reply> smtp_probe::read_reply() {
  if (fd_ < 0) {
    return make_error_code(probe_errc::not_connected);
  }
  const auto deadline = steady::now() + timeout_;
  probe_reply reply;
  std::size_t offset = 0;  // start of the next unparsed line in buffer_
  while (true) {
    const std::size_t end = buffer_.find('\n', offset);
    if (end == std::string::npos) {
      if (buffer_.size() > max_reply_bytes) {
        return make_error_code(probe_errc::reply_too_long);
      }
      if (auto ec = fill_buffer(deadline)) {
        return ec;
      }
      continue;
    }
    // One line: accept CRLF and, leniently, a bare LF from the server.
    std::string_view line(buffer_.data() + offset, end + 1 - offset);
    std::string_view text = line.substr(0, line.size() - 1);
    if (!text.empty() && text.back() == '\r') {
      text.remove_suffix(1);
    }
    const int code = reply_code(text);
    if (code < 0 || (!reply.lines.empty() && code != reply.code)) {
      buffer_.erase(0, end + 1);
      return make_error_code(probe_errc::bad_reply);
    }
    reply.code = code;
    reply.lines.emplace_back(text.size() > 4 ? text.substr(4) : std::string_view{});
    reply.raw.append(line);
    offset = end + 1;
    const bool last_line = text.size() == 3 || text[3] == ' ';
    if (last_line) {
      buffer_.erase(0, offset);
      return reply;
    }
  }
}

boost::system::result<probe_reply> smtp_probe::command(std::string_view line) {
  std::string bytes(line);
  bytes += "\r\n";
  if (auto ec = send_raw(bytes)) {
    return ec;
  }
  return read_reply();
}

void smtp_probe::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  buffer_.clear();
}

}  // namespace flushgate::test
