// commands.hpp — what an operator can ask the running daemon.
//
// Purpose: one table of control commands ("customer.add", "queue.summary",
// ...) used by every control front end: the CLI's UNIX socket now, the HTTP
// API later. A request is a JSON object {"command": NAME, "args": {...}}; the
// answer is {"ok": true, "result": ...} or {"ok": false, "error": TEXT,
// "code": "bad_request|not_found|conflict|unavailable"}.
// The JSON schema of every result is documented in README.md ("Control
// channel").
// Security: requests come only from local users the control server has
// admitted (see control_server.hpp); every argument is validated here before
// it reaches the store, with an error that names the argument.
// Errors: a failed command answers ok=false with a one-line reason.
#pragma once

#include "control/daemon_context.hpp"

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Object.h>

#include <boost/asio/awaitable.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace flushgate::control {

// What kind of failure a command had; the HTTP API maps it to a status code.
enum class command_status { ok, bad_request, not_found, conflict, unavailable };
std::string_view to_string(command_status s) noexcept;

struct command_result {
  bool ok = true;
  std::string error;
  Poco::Dynamic::Var result;
  command_status status = command_status::ok;

  static command_result failure(std::string why, command_status s = command_status::bad_request) {
    return {false, std::move(why), {}, s};
  }
  static command_result success(Poco::Dynamic::Var value) {
    return {true, {}, std::move(value), command_status::ok};
  }
};

// Runs one request; never throws for bad input. Call on the io thread.
boost::asio::awaitable<command_result> run_command(daemon_context& ctx, const std::string& name,
                                                   const Poco::JSON::Object::Ptr& args);

// Serialises a result as the one-line JSON answer.
std::string to_json_line(const command_result& r);

}  // namespace flushgate::control
