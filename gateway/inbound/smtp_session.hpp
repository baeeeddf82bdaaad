// smtp_session.hpp — one inbound SMTP connection, from greeting to close.
//
// Purpose: RFC 5321 ESMTP with PIPELINING, SIZE, 8BITMIME,
// ENHANCEDSTATUSCODES, DSN and STARTTLS; accepts mail only for enabled
// customers and answers 250 to DATA only after the message is durable.
// Security: every command line is bounded (smtpd_command_line_limit) and read
// under smtpd_timeout; the session has a total deadline
// (smtpd_session_timeout); DATA is bounded in size, line length and rate
// (smtpd_min_data_rate); too many errors end the session with 421. Bare CR or
// LF is refused in commands and content (SMTP smuggling, PROTOCOLS.md §6);
// plaintext pipelined behind STARTTLS is discarded (CVE-2011-0411).
// ETRN (RFC 1985) starts a flush of a customer's queue over the route the
// gateway already has — never toward the client that asked — for a client on
// the customer's live link, in its etrn_networks, or logged in with AUTH as
// that customer. AUTH (RFC 4954) exists for that: CRAM-MD5, and PLAIN/LOGIN
// only under TLS; failures are slowed down and the third ends the session.
// Errors: every outcome is an SMTP reply; the mapping from verdicts and store
// errors to replies is in one place each (do_rcpt, receive_content, do_etrn).
// See also: RFC 5321, 1870, 2034, 2920, 3207, 3461, 6152; ARCHITECTURE.md
// invariants 1, 3, 4, 7.
#pragma once

#include "gateway/inbound/address.hpp"
#include "gateway/inbound/line_reader.hpp"
#include "gateway/inbound/smtp_command.hpp"
#include "gateway/smtp_stream.hpp"
#include "queue/store.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace flushgate::gateway {

class smtp_server;
struct customer_entry;

class smtp_session : public std::enable_shared_from_this<smtp_session> {
 public:
  smtp_session(smtp_server& server, boost::asio::ip::tcp::socket socket, std::uint64_t id);

  // Runs the whole session; returns when the connection is closed.
  boost::asio::awaitable<void> run();
  // Shutdown: ends the session with 421 if it is waiting between transactions.
  void interrupt_if_idle();
  // Shutdown grace over: ends the session with 421 whatever it is doing.
  void interrupt();

  const std::string& client_address() const { return client_address_; }

 private:
  enum class line_status { ok, too_long, closed };
  struct accepted_rcpt {
    std::int64_t customer_id;
    rcpt_args args;
  };
  struct reply_text {
    int code;
    const char* enhanced;
    std::string text;
  };

  // I/O
  boost::asio::awaitable<line_status> read_line(std::string& line);
  boost::asio::awaitable<bool> fill_input(std::chrono::steady_clock::duration timeout);
  boost::asio::awaitable<bool> flush();
  void input_failed();
  bool refused_params(const parse_result& parsed);
  void reply(int code, std::string_view enhanced, std::string_view text);
  void reply(const reply_text& r) { reply(r.code, r.enhanced, r.text); }
  std::chrono::steady_clock::duration read_timeout(std::chrono::seconds wanted) const;

  // Commands (the table in smtp_session.cpp says when each is allowed).
  boost::asio::awaitable<void> do_helo(const command& c);
  boost::asio::awaitable<void> do_ehlo(const command& c);
  boost::asio::awaitable<void> do_mail(const command& c);
  boost::asio::awaitable<void> do_rcpt(const command& c);
  boost::asio::awaitable<reply_text> check_known_recipient(const customer_entry& owner, const mailbox& rcpt,
                                                           const std::string& path);
  boost::asio::awaitable<void> do_data(const command& c);
  boost::asio::awaitable<void> do_rset(const command& c);
  boost::asio::awaitable<void> do_noop(const command& c);
  boost::asio::awaitable<void> do_quit(const command& c);
  boost::asio::awaitable<void> do_vrfy(const command& c);
  boost::asio::awaitable<void> do_help(const command& c);
  boost::asio::awaitable<void> do_starttls(const command& c);
  boost::asio::awaitable<void> do_auth(const command& c);
  boost::asio::awaitable<void> do_etrn(const command& c);
  boost::asio::awaitable<void> do_not_implemented(const command& c);
  boost::asio::awaitable<void> do_unknown(const command& c);

  // DATA helpers
  boost::asio::awaitable<bool> receive_content(std::string& content, reply_text& failure,
                                               std::size_t& received_headers);
  boost::asio::awaitable<reply_text> commit_message(std::string content);
  std::string received_header() const;

  void reset_transaction();
  bool in_transaction() const { return have_mail_; }
  const char* protocol_name() const;
  bool etrn_offered() const;
  void start_reverse_lookup();
  boost::asio::awaitable<queue::client_origin> collect_origin();

  smtp_server& server_;
  smtp_stream stream_;
  std::uint64_t id_;
  std::string client_address_;  // textual IP
  std::string client_;          // "helo [ip]" for logs and Received:
  std::uint16_t client_port_ = 0;
  // The client's reverse name, looked up while the session goes on
  // (started at connect, awaited at the first commit, bounded in time).
  struct reverse_lookup;
  std::shared_ptr<reverse_lookup> reverse_;

  line_reader reader_;      // command lines in, replies out (pipelining)
  std::chrono::steady_clock::time_point deadline_;
  std::size_t errors_ = 0;
  bool quit_ = false;
  bool idle_ = true;               // waiting for a command outside a transaction
  bool interrupted_ = false;

  std::string helo_;
  bool esmtp_ = false;
  std::int64_t authenticated_customer_ = 0;  // after AUTH; 0 = none
  int auth_failures_ = 0;
  bool in_auth_ = false;  // reading AUTH responses: longer lines allowed
  bool have_mail_ = false;
  mail_args mail_;
  std::vector<accepted_rcpt> rcpts_;
};

}  // namespace flushgate::gateway
