// http_api.hpp — the operator's HTTP API, /metrics and the status page.
//
// Purpose: an HTTP/1.1 server (Poco.Net) on admin_listen — loopback by
// default — that maps REST requests onto the control command table
// (commands.hpp), so the CLI, scripts and dashboards see one set of
// commands with one JSON schema (README "HTTP API"):
//   GET /                 the status page (HTML, refreshes itself)
//   GET /metrics          Prometheus text format
//   /api/v1/...           customers, links, queue, flush, config, events, doctor
//   /console/...          the operator console (console.hpp): its own login
// A request runs on one of a few Poco threads; the command itself runs on
// the daemon's io thread (co_spawn + future), like a control-socket request.
// Security: every request needs the token from admin_token_file, as
// "Authorization: Bearer TOKEN" or as the password of HTTP Basic (so a
// browser can open the page); compared in constant time. Two exceptions:
// /console/ checks its own sessions (login with the same token, CSRF
// token and Origin on every POST), and GET / is shown to a browser with a
// live console session. Bodies are
// limited to 1 MiB, requests and keep-alive to admin_timeout, threads and
// queued connections bounded. Malformed requests get 4xx with a JSON error,
// never a crash.
// Errors: listen() returns false with the reason; requests answer
// 400 bad_request, 401 (no or wrong token), 404 not_found, 405, 409
// conflict, 413, 503 unavailable/timeout, each {"ok": false, "error": ..., "code": ...}.
// See also: RFC 9110 (semantics), RFC 7617 (Basic), RFC 6750 (Bearer).
#pragma once

#include "control/commands.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace Poco::Net {
class HTTPServer;
class ServerSocket;
}  // namespace Poco::Net

namespace flushgate::control {

// What a request asks for, decided from method, path and body alone.
struct api_route {
  enum class kind { command, status_page, metrics, error };
  kind k = kind::error;
  std::string command;                 // for kind::command
  Poco::JSON::Object::Ptr args;        // for kind::command
  int http_status = 404;               // for kind::error
  std::string error;                   // for kind::error
};

// Maps one request onto a command (pure; tested without sockets). `target`
// is the request target (path and query, percent-encoded); `body` the JSON
// body (empty allowed).
api_route route_request(std::string_view method, std::string_view target, const std::string& body);

// The HTTP status for a failed command.
int http_status_of(command_status s) noexcept;

// True when an Authorization header value carries `token` (Bearer, or Basic
// with the token as password); constant time in the token's length.
bool authorized(std::string_view authorization, std::string_view token);

// Reads the token from `path`, creating it (32 random bytes, hex, mode 0640,
// group `group` when given) if absent. Refuses a file that other users can
// read or write. False with the reason.
bool load_admin_token(const std::string& path, const std::string& group, std::string& token,
                      std::string& error);

struct http_api_settings {
  std::vector<std::string> listen;                    // host:port, loopback by default
  std::string token;                                  // from admin_token_file
  std::chrono::seconds timeout{10};                   // per request: reading it, and the command
  std::size_t max_threads = 4;                        // requests served at once
  std::size_t max_queued = 64;                        // connections waiting for a thread
  std::size_t max_body = 8 * 1024 * 1024;  // a whole recipient list of ~300,000 addresses fits
};

class http_api {
 public:
  http_api(boost::asio::io_context& io, http_api_settings settings);
  ~http_api();
  http_api(const http_api&) = delete;
  http_api& operator=(const http_api&) = delete;

  // Binds every address (call while privileged, before dropping them).
  bool listen(std::string& error);
  // The bound ports (with the ports the kernel chose for port 0).
  std::vector<std::uint16_t> ports() const;
  // Starts serving the commands of `ctx` on the Poco threads.
  void start(daemon_context& ctx);
  // Stops accepting and waits for requests in progress (each bounded by the timeout).
  void stop();

  struct impl;  // the server's state, defined in http_api.cpp (its handlers use it)

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace flushgate::control
