// smtp_client.hpp — the outbound SMTP client: one session on a connected
// smtp_stream, many messages, pipelined.
//
// Purpose: delivers queued messages to the next hop (a customer's server, an
// MX host, or — after an ODMR turnaround — the customer's MTA at the other
// end of an ATRN connection). open() reads the greeting, says EHLO (HELO when
// EHLO gets a 5xx) and runs STARTTLS as the tls_policy says. send() and
// send_batch() run mail transactions and return a verdict per message and per
// recipient; probe_recipient() asks whether the peer takes one address
// without sending mail (a recipient verification callout); quit() ends the
// session.
//   - PIPELINING (RFC 2920): MAIL, every RCPT and DATA go in one write and the
//     replies are matched by counting, never by code. When every RCPT failed
//     but DATA still got 354, a lone "." ends the transaction (§3.1).
//   - CHUNKING (RFC 3030), used when the peer offers it together with
//     PIPELINING: "BDAT <n> LAST" and the raw content follow the RCPTs in the
//     same write, so a message costs no round trip for a 354.
//   - send_batch() keeps the pipe full: it writes the next messages (their
//     envelope, and with CHUNKING their content) before reading the replies
//     of earlier ones, as long as at most `pipeline_window` octets and
//     `max_pipelined_replies` replies are outstanding — small enough that
//     neither side can block writing while the other is not reading
//     (RFC 2920 §3.1 item 5). A message that was written while an earlier
//     one's outcome was still unknown starts with RSET, so a failed earlier
//     transaction cannot make the next MAIL a nested one. Without CHUNKING
//     the next envelope rides in the same write as the previous message's
//     content (RFC 2920 §3.1: the content may start the next group).
//   - Without PIPELINING, or with `one_line_per_write`, every command waits
//     for its reply (RFC 5321 §4.3.1).
//   - probe_recipient(): "MAIL FROM:<>", "RCPT TO:<address>", "RSET" — in one
//     write with PIPELINING (RFC 2920 §3.1: all three may go anywhere in a
//     group), else lock-step (no RCPT after a refused MAIL). The RSET ends
//     the transaction, so the session stays usable for the next probe or
//     message; no DATA is ever sent.
//   - XFORWARD (client_forwarding.hpp): when the peer's EHLO offers it and
//     the settings want it, each message's original client goes before its
//     MAIL, in the same group (after any RSET, which would clear it). A
//     refusal is logged and the transaction goes on without it (the MAIL is
//     already on its way): the message is judged as coming from us, as
//     without XFORWARD; message_result.forward_reply keeps the refusal.
//   - XCLIENT (settings xclient, when offered): before each message, in lock
//     step: RSET if needed, XCLIENT (the peer answers 220), EHLO again —
//     with the original client's HELO name when it is a plain word, since
//     the server takes the new EHLO's name over XCLIENT's HELO; then the
//     message alone. A message without a known client never goes under
//     an identity an earlier XCLIENT set: the batch ends before it.
// Content goes out dot-stuffed (DATA), never with a bare CR or LF (a stray
// one becomes CRLF, with a warning), and always ending in CRLF before the
// final ".".
//
// Security: every reply is untrusted: at most 256 lines of at most 4096
// octets each (RFC 5321 says 512; we are lenient, not unbounded), and only
// codes 200..599, else the connection is dropped (errc bad_reply). Every read and write has the RFC
// 5321 §4.5.3.2 timeout of its step. Envelope values come from our queue but
// are checked anyway: an address with a control character, '<' or '>' is
// refused locally (501) and a DSN parameter outside printable ASCII is left
// out, so nothing can inject a command line. CVE-2011-0411 (client side):
// bytes that arrive together with the 220 to STARTTLS are discarded, never
// read as a reply under TLS. With `encrypt`/`verify` no MAIL is ever sent
// in plaintext: open() fails instead. After STARTTLS the old EHLO answer is
// forgotten (RFC 3207 §4.2) and STARTTLS is never run twice.
// 8-bit content to a peer without 8BITMIME is never sent (RFC 6152 §3): we do
// not downgrade MIME; the message gets status not_sent_8bit and the caller
// bounces it with 5.6.3. A message larger than the peer's SIZE gets too_big
// (5.3.4) without being sent (RFC 1870 §6).
//
// Errors (client_errc, category "flushgate.smtp_client"), from open():
//   connection_lost   the peer closed or a read/write failed
//   timed_out         the peer said nothing within the step's timeout
//   bad_reply         a reply line that is not SMTP, or too long/many lines
//   greeting_refused  the greeting was not 220 (e.g. 554)
//   helo_refused      EHLO and HELO were both refused (or EHLO got 4xx)
//   tls_unavailable   `encrypt`/`verify` but no STARTTLS offered, STARTTLS
//                     refused, or no (prepared) TLS context
//   tls_failed        the TLS handshake failed
//   tls_not_verified  `verify`: the certificate chain or the name did not verify
//   not_open          send() before a successful open(), or after quit()
// probe_recipient() returns connection_lost (also for a 421 reply: the peer
// is closing the channel, RFC 5321 §3.8), timed_out, bad_reply, not_open,
// or sender_refused (MAIL FROM:<> refused; the session stays usable and
// last_error() holds the reply).
// send()/send_batch() report in message_result (below); a lost connection
// leaves every recipient that got no final answer with code 0 — "not
// delivered, keep it queued" (at-least-once).
//
// Timeouts: greeting, EHLO/HELO, STARTTLS (and the handshake), MAIL (also
// RSET), RCPT, DATA initiation (354), each data block written, DATA/BDAT
// termination (the final reply), QUIT — each bounds its own read or write,
// never the whole transaction (RFC 5321 §4.5.3.2).
//
// Limitations: no AUTH, no SMTPUTF8, no 8-bit-to-7-bit conversion, no
// BINARYMIME; CHUNKING only together with PIPELINING (RFC 3030 §4.2 makes a
// pipelining server discard the octets of a failed BDAT, which keeps the
// stream in step); each message goes as one BDAT chunk. A peer whose 552
// "too many recipients" should be split into chunks of 100 is left to the
// caller (the refused recipients simply come back 4xx/5xx).
//
// See also: RFC 5321 §3.3, §4.1.1.4, §4.5.2, §4.5.3; RFC 2920; RFC 3030;
// RFC 3207; RFC 1870; RFC 6152; RFC 2034; RFC 3461 §5.2; FETCHMAIL.md §d5;
// smtp_stream.hpp.
#pragma once

#include "gateway/flush/client_forwarding.hpp"
#include "gateway/smtp_stream.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace flushgate::gateway {

enum class client_errc {
  ok = 0,
  connection_lost,
  timed_out,
  bad_reply,
  greeting_refused,
  helo_refused,
  tls_unavailable,
  tls_failed,
  tls_not_verified,
  not_open,
  sender_refused,
};

const boost::system::error_category& client_category() noexcept;
boost::system::error_code make_error_code(client_errc e) noexcept;

enum class tls_policy {
  none,     // never STARTTLS
  may,      // STARTTLS when offered; plaintext when not offered or refused
  encrypt,  // TLS or nothing; the certificate is not checked
  verify,   // TLS with a certificate that chains to the context's CAs and names tls_server_name
};

// "none", "may", "encrypt", "verify" (the smtp_tls and customer --tls values); anything else: may.
tls_policy parse_tls_policy(std::string_view text);

struct client_settings {
  std::string helo_name;  // our myhostname, sent in EHLO/HELO
  std::chrono::seconds greeting_timeout{300}, helo_timeout{300}, starttls_timeout{300},
      mail_timeout{300}, rcpt_timeout{300}, data_init_timeout{120}, data_block_timeout{180},
      data_done_timeout{600}, quit_timeout{300};
  tls_policy tls = tls_policy::may;
  // Client context, prepared with prepare_client_tls_context() (needed for `verify`).
  boost::asio::ssl::context* tls_context = nullptr;
  std::string tls_server_name;  // SNI, and the name `verify` checks
  // ODMR over implicit TLS (FETCHMAIL.md §d5): every line — command, content
  // line, final "." — in its own write (one TLS record); no pipelining.
  bool one_line_per_write = false;
  bool use_chunking = true;                   // BDAT when offered with PIPELINING
  std::size_t pipeline_window = 64 * 1024;    // octets written but not yet answered
  std::size_t max_pipelined_replies = 256;    // replies outstanding at most
  // Whether the peer is told each message's original client
  // (client_forwarding.hpp); only ever when its EHLO offers the command.
  client_forwarding forward_client = client_forwarding::xforward;
};

// One reply from the peer. code 0: no reply (connection lost, or not sent).
struct peer_reply {
  int code = 0;
  std::string enhanced;  // "5.1.1" (RFC 3463) when the reply carried one, else ""
  std::string text;      // every line's text without code and enhanced code, joined by '\n'
  // The first line as on the wire, e.g. "550 5.1.1 no such user".
  std::string line() const;
  bool positive() const { return code >= 200 && code < 300; }
};

struct outgoing_recipient {
  std::int64_t id = 0;
  std::string address;  // without <>
  std::string orcpt;    // "addr-type;xtext" as received, "" when absent
  std::string notify;   // NOTIFY value as received, "" when absent
};

struct outgoing_message {
  std::string qid;     // for logs
  std::string sender;  // without <>; "" is the null sender
  std::vector<outgoing_recipient> recipients;
  std::string envid;      // ENVID xtext as received, "" when absent
  std::string ret;        // "FULL", "HDRS" or ""
  std::string body_type;  // "7BIT", "8BITMIME" or ""
  const std::string* content = nullptr;  // CRLF lines, not dot-stuffed
  queue::client_origin origin;  // the client it came from (XFORWARD); empty: unknown
};

enum class message_status {
  sent,             // at least one RCPT accepted and the final reply was 2xx
  rejected,         // MAIL, every RCPT, DATA or the final reply refused (see the replies)
  connection_lost,  // the session broke before the final reply: see code 0 below
  not_sent_8bit,    // 8-bit content and the peer offers no 8BITMIME: bounce 5.6.3
  too_big,          // larger than the peer's SIZE: bounce 5.3.4
};

struct recipient_result {
  std::int64_t id = 0;
  // The RCPT refusal, or for an accepted recipient the final (DATA/"."/BDAT)
  // reply; the MAIL reply when MAIL was refused; a reply made up locally for a
  // recipient never sent (501 bad address, 554 5.6.3, 552 5.3.4). code 0:
  // no answer (connection lost): not delivered, keep it queued.
  peer_reply reply;
};

struct message_result {
  message_status status = message_status::connection_lost;
  std::vector<recipient_result> recipients;  // one per outgoing recipient, same order
  peer_reply mail_reply;  // the reply to MAIL (code 0: not sent / not answered)
  peer_reply data_reply;  // the reply to DATA if not 354, else to "."/BDAT
  // The first reply to XFORWARD/XCLIENT that was not the expected one
  // (code 0: none sent, or all accepted); the message went on without it.
  peer_reply forward_reply;
  bool client_forwarded = false;  // XFORWARD/XCLIENT sent and accepted
};

struct session_info {
  bool esmtp = false;
  bool pipelining = false;
  bool size_offered = false;
  bool eightbitmime = false;
  bool dsn = false;
  bool chunking = false;
  bool starttls = false;
  bool enhanced_status_codes = false;
  std::uint64_t max_size = 0;  // SIZE value; 0: no limit given
  bool tls_active = false;
  bool tls_verified = false;   // chain and name verified (only meaningful with TLS)
  std::string tls_description; // e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"
  std::string peer_greeting;   // text of the 220 greeting
  std::vector<std::string> xforward;  // attributes the EHLO's XFORWARD line offered
  std::vector<std::string> xclient;   // attributes the EHLO's XCLIENT line offered
};

// Content as it goes on the wire: stray CR/LF made CRLF, a final CRLF added
// when missing, dot-stuffed when asked (the final "." is not included).
struct encoded_content {
  std::string wire;
  std::uint64_t size = 0;          // octets for SIZE=: normalised, without stuffing
  std::size_t stray_line_ends = 0; // bare CRs and LFs that were turned into CRLF
  bool eight_bit = false;          // some octet > 127
};
encoded_content encode_content(std::string_view content, bool dot_stuff);

// Prepares a client TLS context for smtp_client: loads `ca_file` (the system
// CAs when empty), lets every handshake complete, and records whether the
// chain and the SNI name verified, so that `verify` can insist and `may` /
// `encrypt` can go on. Call once, before sharing the context.
boost::system::error_code prepare_client_tls_context(boost::asio::ssl::context& context,
                                                     const std::string& ca_file);

class smtp_client {
 public:
  // `stream` is connected (plain, or already TLS after an ODMR turnaround)
  // and must outlive the client.
  smtp_client(smtp_stream& stream, client_settings settings);
  smtp_client(const smtp_client&) = delete;
  smtp_client& operator=(const smtp_client&) = delete;

  // Greeting, EHLO (HELO fallback), STARTTLS per policy; the session's facts or an error.
  boost::asio::awaitable<boost::system::result<session_info>> open();
  // Sends one message; its verdict.
  boost::asio::awaitable<message_result> send(const outgoing_message& m);
  // Sends messages pipelined back to back; one verdict per message, same order.
  boost::asio::awaitable<std::vector<message_result>> send_batch(
      std::span<const outgoing_message> messages);
  // Recipient verification: MAIL FROM:<>, RCPT TO:<address>, RSET; the RCPT
  // reply (an unsafe address gets a local 501 5.1.3, nothing is sent), or an
  // error (see Errors). After a reply the session is ready for more.
  boost::asio::awaitable<boost::system::result<peer_reply>> probe_recipient(
      std::string_view address);
  // QUIT, waits (bounded) for the 221, closes the stream; never throws.
  boost::asio::awaitable<void> quit();

  // What the peer offered (after open()).
  const session_info& info() const { return info_; }
  // The reason of the last failure ("" when none), e.g. "EHLO/HELO refused: 550 ...".
  const std::string& last_error() const { return last_error_; }
  // True after a successful open() while the connection is in step.
  bool usable() const { return state_ == state::ready; }
  // True when an XCLIENT gave this session another client's identity and it
  // cannot be changed again (Postfix re-checks smtpd_authorized_xclient_hosts
  // against the new identity and stops offering XCLIENT): a message of
  // another client needs a new session.
  bool identity_locked() const { return identity_changed_ && (info_.xclient.empty() || identity_spent_); }

 private:
  enum class state { fresh, ready, refused, lost, closed };
  enum class step { rset, mail, rcpt, data, dot, lone_dot, bdat, xforward };
  struct expected_reply {
    step what;
    std::size_t flight;
    std::size_t rcpt;
    std::chrono::seconds timeout;
  };
  struct flight;

  boost::asio::awaitable<boost::system::result<peer_reply>> read_reply(
      std::chrono::seconds timeout);
  boost::asio::awaitable<bool> write_out(std::chrono::seconds command_timeout);
  boost::asio::awaitable<boost::system::error_code> say_hello(std::string_view name = {});
  boost::asio::awaitable<boost::system::error_code> start_tls();
  boost::system::error_code fail_open(client_errc e, std::string reason, bool in_step);
  void lose(const boost::system::error_code& ec, std::string_view what);

  bool prepare(flight& f, bool chunking);
  void queue_envelope(flight& f, std::size_t index, bool rset_first, bool chunking);
  void queue_line(std::string line);
  void expect(step what, std::size_t flight_index, std::size_t rcpt, std::chrono::seconds timeout);
  boost::asio::awaitable<bool> read_next(std::vector<flight>& flights, expected_reply& done);
  boost::asio::awaitable<bool> command(std::vector<flight>& flights, std::string line, step what,
                                       std::size_t index, std::size_t rcpt,
                                       std::chrono::seconds timeout);
  void apply(flight& f, const expected_reply& e, const peer_reply& r);
  void finish(flight& f);
  boost::asio::awaitable<void> run_pipelined(std::vector<flight>& flights, bool chunking);
  boost::asio::awaitable<void> run_lockstep(std::vector<flight>& flights);
  boost::asio::awaitable<void> run_transactions(std::vector<flight>& flights);
  boost::asio::awaitable<void> run_with_xclient(std::vector<flight>& flights);
  enum class xclient_outcome { accepted, refused, broken };
  boost::asio::awaitable<xclient_outcome> send_xclient(flight& f,
                                                       const std::vector<std::string>& lines);

  smtp_stream& stream_;
  client_settings settings_;
  session_info info_;
  state state_ = state::fresh;
  std::string last_error_;
  std::string in_;         // received octets not yet parsed
  std::string out_;        // queued octets not yet written
  bool out_has_content_ = false;
  bool needs_rset_ = false;  // a transaction may still be open at the peer
  std::deque<expected_reply> expected_;
  std::size_t inflight_bytes_ = 0;
  bool identity_changed_ = false;  // an XCLIENT took effect in this session
  bool identity_spent_ = false;    // and the next message cannot go under it (refused, or no client known)
};

}  // namespace flushgate::gateway

template <>
struct boost::system::is_error_code_enum<flushgate::gateway::client_errc> : std::true_type {};
