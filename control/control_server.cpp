// control_server.cpp — see control_server.hpp.
#include "control/control_server.hpp"

#include "core/log.hpp"
#include "core/unix_address.hpp"

#include <Poco/JSON/Parser.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace flushgate::control {

namespace asio = boost::asio;
using asio::local::stream_protocol;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {
constexpr std::size_t max_request = 1 << 20;
constexpr auto request_timeout = 30s;

// Supplementary groups of a process, from /proc/PID/status ("Groups: 4 27").
std::vector<long> process_groups(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  std::vector<long> out;
  while (std::getline(status, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream in(line.substr(7));
    long g = 0;
    while (in >> g) out.push_back(g);
  }
  return out;
}
}  // namespace

control_server::control_server(asio::io_context& io, daemon_context& ctx, std::string path,
                               std::string group)
    : io_(io), ctx_(ctx), path_(std::move(path)), group_(std::move(group)) {}

control_server::~control_server() { stop(); }

bool control_server::listen(std::string& error) {
  if (!group_.empty()) {
    struct group* g = getgrnam(group_.c_str());
    if (g == nullptr) {
      error = "control_group: no group named \"" + group_ + "\"";
      return false;
    }
    group_id_ = g->gr_gid;
  }
  boost::system::error_code ec;
  // A path longer than a socket address holds is bound through its directory.
  auto address = core::unix_address::make(path_);
  if (!address) {
    const std::string why = core::unix_address::check_length(path_);
    error = "control_socket " + path_ + ": " + (why.empty() ? address.error().message() : why);
    return false;
  }
  const stream_protocol::endpoint endpoint(address->socket_path());
  // A socket file left by a crashed daemon is replaced; a live daemon is not.
  if (::access(path_.c_str(), F_OK) == 0) {
    stream_protocol::socket probe(io_);
    probe.connect(endpoint, ec);
    if (!ec) {
      error = "control_socket " + path_ + " is in use: is another flushgated running?";
      return false;
    }
    ::unlink(path_.c_str());
  }
  acceptor_ = std::make_unique<stream_protocol::acceptor>(io_);
  acceptor_->open(stream_protocol(), ec);
  if (!ec) {
    mode_t old = ::umask(0117);  // the file is born 0660, never wider
    acceptor_->bind(endpoint, ec);
    ::umask(old);
  }
  if (!ec) acceptor_->listen(16, ec);
  if (ec) {
    error = "control_socket " + path_ + ": " + ec.message();
    return false;
  }
  if (group_id_ >= 0 && ::chown(path_.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(group_id_)) != 0) {
    error = "control_socket " + path_ + ": cannot give it to group " + group_;
    return false;
  }
  return true;
}

void control_server::start() { asio::co_spawn(io_, accept_loop(), asio::detached); }

void control_server::stop() {
  if (acceptor_ && acceptor_->is_open()) {
    boost::system::error_code ignored;
    acceptor_->close(ignored);
    ::unlink(path_.c_str());
  }
}

bool control_server::peer_allowed(int fd, std::string& who) const {
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  who = "uid " + std::to_string(cred.uid) + " pid " + std::to_string(cred.pid);
  if (cred.uid == 0 || cred.uid == ::geteuid()) return true;
  if (group_id_ < 0) return false;
  if (static_cast<long>(cred.gid) == group_id_) return true;
  for (long g : process_groups(cred.pid)) {
    if (g == group_id_) return true;
  }
  return false;
}

asio::awaitable<void> control_server::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_->async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!acceptor_->is_open()) co_return;
      core::log_warning("control: accept failed: {}", ec.message());
      continue;
    }
    asio::co_spawn(io_, serve(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> control_server::serve(stream_protocol::socket socket) {
  std::string who;
  if (!peer_allowed(socket.native_handle(), who)) {
    core::log_warning("control: refused connection from {}", who);
    std::string answer = to_json_line(command_result::failure(
        "permission denied: use root, the daemon's user, or a member of control_group"));
    co_await asio::async_write(socket, asio::buffer(answer), asio::as_tuple(asio::use_awaitable));
    co_return;
  }
  std::string buffer;
  asio::steady_timer timer(io_);
  for (;;) {
    timer.expires_after(request_timeout);
    auto outcome = co_await (
        asio::async_read_until(socket, asio::dynamic_buffer(buffer, max_request), '\n',
                               asio::as_tuple(asio::use_awaitable)) ||
        timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (outcome.index() == 1) co_return;  // idle too long
    auto [ec, n] = std::get<0>(outcome);
    if (ec) {
      if (ec == asio::error::not_found) {
        std::string answer = to_json_line(command_result::failure("request longer than 1 MiB"));
        co_await asio::async_write(socket, asio::buffer(answer), asio::as_tuple(asio::use_awaitable));
      }
      co_return;
    }
    std::string line = buffer.substr(0, n - 1);
    buffer.erase(0, n);

    command_result result;
    try {
      Poco::JSON::Parser parser;
      auto request = parser.parse(line).extract<Poco::JSON::Object::Ptr>();
      std::string name = request->optValue<std::string>("command", "");
      Poco::JSON::Object::Ptr args = request->getObject("args");
      result = co_await run_command(ctx_, name, args);
    } catch (const std::exception& e) {
      result = command_result::failure(std::string("malformed request: ") + e.what());
    }
    std::string answer = to_json_line(result);
    auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(answer),
                                                asio::as_tuple(asio::use_awaitable));
    if (wec) co_return;
  }
}

}  // namespace flushgate::control
