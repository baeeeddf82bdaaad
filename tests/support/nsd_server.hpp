// nsd_server.hpp — a private nsd (authoritative DNS) on 127.0.0.1 for tests.
//
// Purpose: writes an nsd config and the given zone files into a fresh temp
// dir, starts `nsd -d -c CONF` on 127.0.0.1 at a free UDP/TCP port, waits
// until it answers an SOA query for the first zone, and stops it by PID
// (SIGTERM, then SIGKILL to its process group) in the destructor.
// Security: test-only; listens on 127.0.0.1 only, runs without chroot or
// privilege drop, no remote control, no zone transfers.
// Errors: the constructor throws std::runtime_error when nsd does not answer
// within the deadline (after a few ports; nsd's log is in the message), and
// std::system_error when it cannot be started at all.
// See also: TESTBED.md "DNS for MX tests", nsd.conf(5), process.hpp.
#pragma once

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace flushgate::test {

struct nsd_zone {
  std::string name;  // origin, e.g. "mx.test"
  std::string text;  // master-file text
};

class nsd_server {
 public:
  static constexpr const char* nsd_path = "/usr/sbin/nsd";

  // True when nsd is installed and executable (tests skip otherwise).
  static bool available();
  // Starts nsd serving `zones` (at least one); throws if it does not answer by `deadline`.
  explicit nsd_server(std::vector<nsd_zone> zones,
                      std::chrono::milliseconds deadline = std::chrono::seconds(10));
  // Stops nsd (SIGTERM, bounded wait, SIGKILL) and removes the temp dir.
  ~nsd_server();
  nsd_server(const nsd_server&) = delete;
  nsd_server& operator=(const nsd_server&) = delete;

  // The UDP and TCP port nsd answers on, at 127.0.0.1.
  std::uint16_t port() const noexcept { return port_; }
  // "127.0.0.1:PORT", the form mx_options::servers takes.
  std::string address() const;
  // nsd's log file so far (for failure messages).
  std::string log_text() const;

 private:
  bool start_on(std::uint16_t port, std::chrono::steady_clock::time_point until);
  void stop();

  temp_dir dir_;
  std::vector<nsd_zone> zones_;
  std::uint16_t port_ = 0;
  std::optional<process> nsd_;
};

// True when a DNS server at 127.0.0.1:port answers a UDP query for `name`
// (any rcode) within `timeout`.
bool dns_answers(std::uint16_t port, const std::string& name, std::chrono::milliseconds timeout);

// Reads a whole file (e.g. a zone under tests/data/dns); throws std::runtime_error if it cannot.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace flushgate::test
