// smtp_helpers.hpp — SMTP conversations for the integration tests, on top of
// smtp_probe: open a session, run one transaction, check a reply, build and
// dot-stuff content, take a stored message apart.
//
// Purpose: keep each test about the behaviour it checks, not about the
// mechanics of talking SMTP; every check reads "got X, want Y".
// Security: test-only; talks to 127.0.0.1 through smtp_probe, whose timeout
// bounds every step.
// Errors: reply checks return ::testing::AssertionResult; transactions
// return the reply (or the probe error) at the step where they stopped.
// See also: tests/support/smtp_probe.hpp, RFC 5321 §4.5.2 (transparency).
#pragma once

#include "tests/support/smtp_probe.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flushgate::test {

using probe_result = boost::system::result<probe_reply>;

// "250 2.0.0 Ok: queued as X" (the reply's lines joined by " | "), or "error: <what>".
std::string describe(const probe_result& r);

// Success when `r` is a reply with `code` whose first line starts with
// `enhanced` (when given); otherwise a "got X, want Y" failure.
::testing::AssertionResult reply_is(const probe_result& r, int code,
                                    std::string_view enhanced = {});

// The reply to "RCPT TO:<to>" in a fresh session with host:port (EHLO
// client.test, MAIL FROM:<a@sender.test>; QUIT after): the greeting's, EHLO's
// or MAIL's reply instead when that one was not positive, or the error.
probe_result rcpt_reply(const std::string& host, std::uint16_t port, const std::string& to);

// Connects to 127.0.0.1:port, expects 220, then (unless `ehlo` is empty)
// sends "EHLO ehlo" and expects 250.
::testing::AssertionResult open_session(smtp_probe& probe, std::uint16_t port,
                                        std::string_view ehlo = "client.test");

// What goes on the wire after 354 for `content`: lines starting with '.'
// get another '.', a CRLF is added when the content does not end in one,
// then ".\r\n".
std::string dot_stuffed(std::string_view content);

// Where a transaction stopped.
enum class stage { mail, rcpt, data, content, done };

struct transaction_result {
  stage stopped_at = stage::mail;  // done: `reply` answers the final dot
  bool content_sent = false;       // content and the final dot were handed to the kernel
  probe_result reply = probe_reply{};
};

// MAIL FROM:<from> [mail_params], RCPT TO:<to> for each, DATA, content. Stops
// at the first reply that is not 250 (MAIL, RCPT) or 354 (DATA), leaving the
// session as it is (the caller sends RSET or QUIT).
transaction_result send_message(smtp_probe& probe, std::string_view from,
                                const std::vector<std::string>& to, std::string_view content,
                                std::string_view mail_params = {});

// The queue ids in "250 2.0.0 Ok: queued as A B" (empty for other replies).
std::vector<std::string> queue_ids(const probe_reply& reply);

// Splits stored content into our Received: header (its first line and the
// folded lines after it, CRLFs included) and everything after it.
std::pair<std::string, std::string> split_received(std::string_view content);

// Content made of `headers` (each without CRLF), an empty line and `body`
// (CRLF line ends expected in body; one is added at the end when missing).
std::string make_message(const std::vector<std::string>& headers, std::string_view body);

// The client side of SASL for tests (computed with Poco, independently of
// the daemon's gateway/inbound/sasl): base64 and the CRAM-MD5 response of RFC 2195,
// base64("user" SP lowercase-hex HMAC-MD5(secret, challenge)).
std::string base64(std::string_view data);
std::string unbase64(const std::string& text);
std::string cram_md5_response(const std::string& user, const std::string& secret,
                              const std::string& challenge);

}  // namespace flushgate::test
