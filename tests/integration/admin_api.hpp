// admin_api.hpp — a real HTTP client (Poco) for the daemon's HTTP API in
// the integration tests: one request, its status, content type and body.
//
// Purpose: the HTTP API test and the tests that manage customers over the
// API (e.g. the recipient list) make their requests the same way.
// Security: test-only; talks to 127.0.0.1:port only; every request is
// bounded by a socket timeout (30 s unless the caller says otherwise).
// Errors: none as values: a request that fails on the client side comes back
// with status 0 and "client error: ..." as its body.
// See also: control/http_api.hpp (routes, token), daemon_fixture.hpp.
#pragma once

#include "tests/integration/daemon_fixture.hpp"

#include <Poco/JSON/Object.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace flushgate::test {

struct http_answer {
  int status = 0;  // 0: the client failed (body says why)
  std::string content_type;
  std::string body;
  std::string www_authenticate;
  // The body as a JSON object; null when it is not one.
  Poco::JSON::Object::Ptr json() const;
};

// The bearer token the daemon wrote to DATA_DIR/admin.token ("" when there is none).
std::string admin_token(const daemon_fixture& daemon);

// Sends `method target` to 127.0.0.1:port with `body` (as application/json
// when not empty) and the Authorization header `authorization` ("" = none);
// `timeout` bounds each socket operation.
http_answer http_call(std::uint16_t port, const std::string& method, const std::string& target,
                      const std::string& body, const std::string& authorization,
                      std::chrono::seconds timeout = std::chrono::seconds(30));

}  // namespace flushgate::test
