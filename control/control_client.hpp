// control_client.hpp — the CLI's side of the control channel.
//
// Purpose: send one JSON request line to the daemon's control socket and read
// the one-line answer. Blocking; used only by the `flushgate` CLI.
// Errors: request() returns false with a message naming the socket when the
// daemon cannot be reached or does not answer within the timeout.
#pragma once

#include <chrono>
#include <string>

namespace flushgate::control {

class control_client {
 public:
  explicit control_client(std::string socket_path) : path_(std::move(socket_path)) {}
  // Sends `request` (one JSON object, no newline) and stores the answer line.
  bool request(const std::string& request, std::string& answer, std::string& error,
               std::chrono::seconds timeout = std::chrono::seconds(60));

 private:
  std::string path_;
};

}  // namespace flushgate::control
