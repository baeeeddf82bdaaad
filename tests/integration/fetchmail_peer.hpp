// fetchmail_peer.hpp — the customer's ODMR client in integration tests: a
// real fetchmail polling flushgate's ODMR port once, in the foreground.
//
// Purpose: odmr_test and cluster_test run the client most customers run
// (shared/FETCHMAIL.md) with an rc file of their own: `protocol ODMR`,
// fetchdomains, and an smtphost that is the customer's server (a private
// Postfix or a test server).
// Security: test-only; fetchmail talks to 127.0.0.1 or ::1 only.
// Errors: a fetchmail that outlives its deadline is killed (timed_out).
// See also: shared/FETCHMAIL.md, tests/support/process.hpp.
#pragma once

#include "tests/support/process.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace flushgate::test {

struct fetchmail_result {
  int exit_code = -1;
  bool timed_out = false;
  std::string output;  // the -v transcript
};

// What one ODMR poll of fetchmail is told (its rc file).
struct fetchmail_odmr_poll {
  std::uint16_t port = 0;
  std::string user;
  std::string password;
  std::string domains;     // fetchdomains, comma-separated
  std::string smtphost;    // "127.0.0.1/PORT" or "::1/PORT": the customer's server
  bool ssl = false;        // TLS from the first byte, certificate not checked
  bool esmtp_auth = false; // esmtpname/esmtppassword too: fetchmail logs in twice
  std::string host = "127.0.0.1";  // the poll name: the gateway's address ("::1" for IPv6)
};

std::string fetchmail_rc_text(const fetchmail_odmr_poll& p);

// One fetchmail process with its own FETCHMAILHOME (its lock and rc file).
class fetchmail_run {
 public:
  fetchmail_run(const std::filesystem::path& home, const std::string& rc);
  fetchmail_result wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  std::filesystem::path home_;
  std::optional<process> process_;
};

std::string describe(const fetchmail_result& r);

}  // namespace flushgate::test
