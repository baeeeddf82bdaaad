// delivery_peers.hpp — the far side of delivery for the integration tests:
// smtp-sink with its fault flags, free ports on other loopback addresses,
// messages as they arrive (Postfix Maildir files, smtp-sink dumps) taken
// apart, submission with per-recipient DSN parameters, and the queue of one
// customer as the CLI shows it.
//
// Purpose: keep the delivery tests about what the gateway did with the mail
// (where it went, what stayed queued, which DSN came back), not about
// running the peers.
// Security: test-only. smtp_sink listens on the 127.0.0.0/8 address it is
// given; as root it runs as "nobody" (-u), and its dump directory is the
// only place it writes. Every wait is bounded.
// Errors: smtp_sink::start() and make_self_signed() throw std::runtime_error
// (a start-up failure of the test, with the program's output); queries
// return empty/nullopt when the CLI or a file read fails.
// Limitations: an smtp-sink dump file is written while the transaction runs;
// only a message the sink has answered (the client saw 250) is known to be
// complete in it.
// See also: smtp-sink(1) (fault flags -r/-f/-q/-Q/-8/-M, dump format),
// postfix_instance.hpp, daemon_fixture.hpp, RFC 3464 (DSN fields).
#pragma once

#include "tests/integration/daemon_fixture.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flushgate::test {

// A TCP port nothing was bound to on `host` (a 127.x.y.z address or ::1) a moment ago.
std::uint16_t free_port_on(const std::string& host);
// True when a TCP socket can bind host:port right now (nothing listens there).
bool tcp_port_free(const std::string& host, std::uint16_t port);

// A running /usr/sbin/smtp-sink that dumps every transaction to a file.
class smtp_sink {
 public:
  static constexpr const char* sink_path = "/usr/sbin/smtp-sink";
  // True when smtp-sink is installed (tests skip otherwise).
  static bool available();

  // Prepares a sink on host:port with extra flags (e.g. {"-f", "RCPT"}); start() runs it.
  smtp_sink(std::string host, std::uint16_t port, std::vector<std::string> flags = {});
  // Kills the sink (its process group).
  ~smtp_sink();
  smtp_sink(const smtp_sink&) = delete;
  smtp_sink& operator=(const smtp_sink&) = delete;

  // Starts the sink and waits until the port answers; throws if it does not.
  void start();
  // Kills the sink; dumps stay readable.
  void stop();
  // True while the sink process runs (smtp-sink -M exits by itself).
  bool running();

  const std::string& host() const noexcept { return host_; }
  std::uint16_t port() const noexcept { return port_; }
  // "host:port", the form routes and bounce_relay take.
  std::string address() const { return host_ + ":" + std::to_string(port_); }
  // The text of every dump file so far (LF line ends), in no particular order.
  std::vector<std::string> dumps() const;
  // The message in a dump as the client sent it (dot-stuffing undone by the
  // sink): what follows the sink's own Received:, without the blank line the
  // sink appends; "" when the dump has no Received: of the sink's.
  static std::string message_of(std::string_view dump);
  // The sink's own output, for failure messages.
  std::string log_text() const;

 private:
  temp_dir dir_;
  std::string host_;
  std::uint16_t port_;
  std::vector<std::string> flags_;
  std::optional<process> sink_;
};

// `text` with every CRLF made LF (Maildir files and sink dumps use LF).
std::string to_lf(std::string_view text);
// The whole file, or "" when it cannot be read.
std::string read_file(const std::filesystem::path& path);

// The value of every "Name: value" line in `text` (header fields, DSN
// fields; folded lines joined with one space), in order; name case-insensitive.
std::vector<std::string> field_values(std::string_view text, std::string_view name);

// A message as Postfix's virtual(8) delivered it to a Maildir: the lines
// Postfix put on top (Return-Path, X-Original-To, Delivered-To and its own
// Received:) and everything after them, i.e. what the gateway sent.
struct maildir_message {
  std::string return_path;  // the value of Return-Path:, e.g. "<alice@sender.test>"
  std::string postfix_top;  // Postfix's lines, LF line ends
  std::string rest;         // the delivered message, LF line ends
};
maildir_message split_maildir(std::string_view file_text);
// Splits LF text into its first header field (first line and folded lines)
// and everything after it.
std::pair<std::string, std::string> split_first_field(std::string_view lf_text);

// A complete test message (Date, From, To, Subject, Message-ID, then body),
// CRLF line ends; `extra_headers` go after the standard ones.
std::string test_message(const std::string& subject, const std::string& to, std::string_view body,
                         const std::vector<std::string>& extra_headers = {});

// One recipient of a submission and its RCPT parameters (e.g. "NOTIFY=NEVER").
struct rcpt_spec {
  std::string address;
  std::string params;
};

// What a submission gave back: the queue id, or "" and why not.
struct submission {
  std::string qid;
  std::string error;
};

// Sends one message in a fresh SMTP session to 127.0.0.1:port; `from` "" is
// the null sender. Success when the final dot got "250 ... queued as QID".
submission submit(std::uint16_t port, const std::string& from, const std::vector<rcpt_spec>& to,
                  const std::string& content, const std::string& mail_params = {});

// Messages queued for `customer` per `queue summary --json` (0 when it has
// none); nullopt when the CLI failed.
std::optional<std::uint64_t> queued_for(const daemon_fixture& daemon, const std::string& customer);
// Queue ids of `customer`'s messages per `queue list --customer NAME --json`.
std::vector<std::string> queue_ids_of(const daemon_fixture& daemon, const std::string& customer);
// Polls until `customer` has exactly `count` messages queued; false at the deadline.
bool wait_queued(const daemon_fixture& daemon, const std::string& customer, std::uint64_t count,
                 std::chrono::milliseconds timeout);
// Polls the daemon's log until it contains every one of `needles` on one line.
bool wait_log_line(const daemon_fixture& daemon, const std::vector<std::string>& needles,
                   std::chrono::milliseconds timeout);
// Lines of the daemon's log that contain every one of `needles`.
std::vector<std::string> log_lines(const daemon_fixture& daemon,
                                   const std::vector<std::string>& needles);

// One recipient as `queue show --json` shows it.
struct queued_recipient {
  std::string address;
  std::uint64_t attempts = 0;
  std::string last_reply;
};
// The recipients of message `qid` still queued; empty when it is gone (or the CLI failed).
std::vector<queued_recipient> recipients_of(const daemon_fixture& daemon, const std::string& qid);

// A PEM certificate and its key.
struct certificate_files {
  std::filesystem::path cert;
  std::filesystem::path key;
};
// Writes a self-signed certificate for `name` (CN and DNS SAN) to
// dir/NAME.crt and dir/NAME.key with openssl; throws when openssl fails.
certificate_files make_self_signed(const std::filesystem::path& dir, const std::string& name);

// Settings for a daemon that retries and sweeps every second and sends its
// DSNs to `bounces`; `extra` adds to or overrides them.
daemon_fixture::settings quick_retry_settings(const smtp_sink& bounces, daemon_fixture::settings extra = {});

}  // namespace flushgate::test
