// commands.hpp — what an operator can ask the running daemon.
//
// Purpose: one table of control commands ("customer.add", "queue.summary",
// ...) used by every control front end: the CLI's UNIX socket now, the HTTP
// API later. A request is a JSON object {"command": NAME, "args": {...}}; the
// answer is {"ok": true, "result": ...} or {"ok": false, "error": TEXT}.
// The JSON schema of every result is documented in README.md ("Control
// channel").
// Security: requests come only from local users the control server has
// admitted (see control_server.hpp); every argument is validated here before
// it reaches the store, with an error that names the argument.
// Errors: a failed command answers ok=false with a one-line reason.
#pragma once

#include "gateway/customer_directory.hpp"
#include "gateway/router.hpp"
#include "gateway/scheduler.hpp"
#include "linkmon/hooks.hpp"
#include "queue/store_worker.hpp"

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Object.h>

#include <boost/asio/awaitable.hpp>

#include <string>

namespace flushgate::control {

// The parts of the daemon the commands act on.
struct daemon_context {
  queue::store_worker& store;
  gateway::customer_directory& customers;
  gateway::router& router;
  gateway::scheduler& scheduler;
  linkmon::hook_runner* hooks = nullptr;  // operator scripts on link and flush events
};

struct command_result {
  bool ok = true;
  std::string error;
  Poco::Dynamic::Var result;

  static command_result failure(std::string why) { return {false, std::move(why), {}}; }
  static command_result success(Poco::Dynamic::Var value) { return {true, {}, std::move(value)}; }
};

// Runs one request; never throws for bad input.
boost::asio::awaitable<command_result> run_command(daemon_context& ctx, const std::string& name,
                                                   const Poco::JSON::Object::Ptr& args);

// Serialises a result as the one-line JSON answer.
std::string to_json_line(const command_result& r);

}  // namespace flushgate::control
