// control_server.hpp — the local control channel the `flushgate` CLI uses.
//
// Purpose: a UNIX stream socket (control_socket); each line on it is one JSON
// request, answered by one JSON line (commands.hpp).
// Security: the trust boundary. The socket file is mode 0660 (group:
// control_group), and every connection's peer credentials (SO_PEERCRED) are
// checked: root, the daemon's own user, or a member of control_group. Others
// get one error line and are closed. A request line is at most 1 MiB and must
// arrive within 30 s.
// A control_socket path longer than a socket address holds (107 bytes) is
// bound through its directory (core/unix_address.hpp).
// Errors: listen() reports bind/chmod/chown failures with the path (and the
// address limit when the file's own name is too long for it); a
// malformed request gets {"ok": false, "error": ...}.
#pragma once

#include "control/commands.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <memory>
#include <string>

namespace flushgate::control {

class control_server {
 public:
  control_server(boost::asio::io_context& io, daemon_context& ctx, std::string path,
                 std::string group);
  ~control_server();

  // Creates the socket (replacing a stale one; refusing if a daemon answers on it).
  bool listen(std::string& error);
  void start();
  void stop();

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(boost::asio::local::stream_protocol::socket socket);
  bool peer_allowed(int fd, std::string& who) const;

  boost::asio::io_context& io_;
  daemon_context& ctx_;
  std::string path_;
  std::string group_;
  long group_id_ = -1;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
};

}  // namespace flushgate::control
