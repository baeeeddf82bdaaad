// postfix_instance.hpp — a private Postfix 3.7 for integration tests.
//
// Purpose: a real peer in two roles.
//  - final_destination: the customer's own mail server; every message for
//    its domains lands as one file in maildir_new(). Given `users`, only
//    those local parts exist; RCPT for others gets 550 5.1.1.
//  - holding_relay: a reference ISP relay that holds its domains (a cloned
//    smtp transport "hold-customer" in defer_transports, fast_flush_domains,
//    ETRN from 127.0.0.0/8) until etrn() or flush() sends them to next_hop.
// Either role can offer STARTTLS (enable_tls) and take extra main.cf lines
// (add_main_cf, e.g. an access map that refuses chosen recipients).
// The instance lives in its own temp dir (config, queue, data, Maildir,
// maillog). scripts/testbed/postfix-instance writes the configuration and
// starts/stops it, so tests, benchmarks and people at a shell all use the
// same one (see that script and shared/TESTBED.md for the settings).
// Security: listens on 127.0.0.0/8 or ::1 only; no DNS, default/relay/local
// transports are error:, mynetworks = 127.0.0.0/8 (and [::1]/128 when it
// listens on ::1, with inet_protocols = all). Needs root (a Postfix
// master runs as root); tests GTEST_SKIP when available() is false.
// Errors: start() throws std::runtime_error with the script's output and the
// maillog tail (a start-up failure). stop() is idempotent; the destructor
// stops. Queries return empty/zero when the directories do not exist.
// See also: RFC 1985 (ETRN), shared/TESTBED.md (Postfix traps).
#pragma once

#include "tests/support/smtp_probe.hpp"
#include "tests/support/temp_dir.hpp"

#include <boost/system/result.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace flushgate::test {

class postfix_instance {
 public:
  // A customer mail server for `domains`, listening on "127.0.0.x:PORT" or "[::1]:PORT";
  // every local part is a mailbox, or only `users` (e.g. {"alice", "bob"}) when given.
  static postfix_instance final_destination(std::vector<std::string> domains, std::string listen,
                                            std::vector<std::string> users = {});
  // A relay holding `domains` for "HOST:PORT" next_hop, listening on "127.0.0.x:PORT" or
  // "[::1]:PORT".
  static postfix_instance holding_relay(std::vector<std::string> domains, std::string listen,
                                        std::string next_hop);
  // True when this machine can run one: postfix installed and we are root.
  static bool available();

  ~postfix_instance();  // stops the instance
  postfix_instance(postfix_instance&& other) noexcept;
  postfix_instance(const postfix_instance&) = delete;
  postfix_instance& operator=(const postfix_instance&) = delete;
  postfix_instance& operator=(postfix_instance&&) = delete;

  // Before start(): offer STARTTLS with this PEM certificate chain and key
  // (smtpd_tls_security_level = may; TLS named in maillog and Received:).
  void enable_tls(std::filesystem::path cert_file, std::filesystem::path key_file);
  // Before start(): adds "key = value" to main.cf after the generated lines.
  void add_main_cf(const std::string& key, const std::string& value);
  // Writes the configuration, starts Postfix and returns once the port answers.
  void start();
  // Stops Postfix and waits for its master to exit; true when nothing runs.
  bool stop();

  // The listen address without brackets ("127.0.0.3", "::1").
  const std::string& host() const noexcept { return host_; }
  // "127.0.0.3:PORT" or "[::1]:PORT": the form --listen and --route take.
  std::string address() const;
  std::uint16_t port() const noexcept { return port_; }
  const std::filesystem::path& dir() const noexcept { return dir_.path(); }
  std::filesystem::path config_dir() const { return dir() / "etc"; }
  std::filesystem::path queue_dir() const { return dir() / "queue"; }
  std::filesystem::path maildir_new() const { return dir() / "mail" / "inbox" / "new"; }
  std::filesystem::path log_file() const { return dir() / "maillog"; }

  // Delivered messages (final_destination), sorted by file name.
  std::vector<std::filesystem::path> message_files() const;
  // Messages in queue/deferred, counted as files (postqueue -p may count a
  // message twice while qmgr moves it).
  std::size_t deferred_count() const;
  // Sends "ETRN domain" over SMTP and returns the reply (250 / 459 / ...).
  boost::system::result<probe_reply> etrn(const std::string& domain) const;
  // Flushes the whole queue ("postqueue -f"); true when postqueue exited 0.
  bool flush() const;
  // The instance's maillog, for failure messages.
  std::string log_text() const;

 private:
  postfix_instance(std::string role, std::vector<std::string> domains, std::string listen,
                   std::string next_hop);

  temp_dir dir_;
  std::string role_;  // "final" or "relay", the script's words
  std::vector<std::string> domains_;
  std::vector<std::string> users_;  // final role: the only local parts; empty: all
  std::string host_;
  std::uint16_t port_ = 0;
  std::string next_hop_;
  std::filesystem::path tls_cert_;
  std::filesystem::path tls_key_;
  std::vector<std::string> extra_main_;  // "key = value"
  bool started_ = false;
};

}  // namespace flushgate::test
