// dsn.hpp — builds delivery status notifications (bounces, delay warnings).
//
// Purpose: turns the outcome of delivery attempts for one queued message into
// the RFC 3464 notice for its sender: a multipart/report (RFC 6522) with a
// human-readable part, a message/delivery-status part and the returned
// content. Pure: no I/O, no clock, no store; the same input gives the same
// octets (Date:, Message-ID and boundary come from the input only).
//   The envelope of the notice is the caller's business: send it with
// MAIL FROM:<> (RFC 5321 §6.1, §4.5.5) to RCPT TO:<original_sender>, without
// RET or ENVID, with NOTIFY=NEVER or no NOTIFY (RFC 3461 §6.1), with
// BODY=8BITMIME when needs_8bitmime() says so, and dot-stuffed as usual.
// Security: addresses, ORCPT, ENVID, the remote host name and the remote
// reply come from peers. Every value that lands in a header or in the
// delivery-status part is reduced to one line of printable US-ASCII (other
// octets become '?') and cut to keep lines within 998 octets, so a peer
// cannot inject header fields or MIME parts. Returned content gets CRLF line
// endings; the boundary is changed until it does not occur in it.
// Errors: none. build_dsn returns nullopt when no notice is due (null sender,
// or NOTIFY excludes every recipient). Malformed values degrade: a bad Status
// becomes 5.0.0/4.0.0/2.0.0 (RFC 3461 §6.3g), a malformed ORCPT is left out.
// Limitations: ORCPT/ENVID that decode to non-ASCII (e.g. RFC 6533 utf-8
// addresses) are shown with '?' for those octets. Returned content that has a
// line over 998 octets is returned as headers only, and over-long header
// lines are cut.
// See also: RFC 3461 §4-6, RFC 3464 §2-3, RFC 6522, RFC 3834 §5,
// RFC 5321 §4.5.4-4.5.5, PROTOCOLS.md §9.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flushgate::queue {

// RFC 3464 §2.3.3 actions this gateway reports ("expanded" it never does).
enum class dsn_action { failed, delayed, delivered, relayed };

// One recipient the notice reports on.
struct dsn_recipient {
  std::string final_recipient;  // envelope address without <>, case kept
  std::string orcpt;            // ORCPT as received "addr-type;xtext", "" = not given
  std::string notify;           // NOTIFY as received (any case), "" = not given
  dsn_action action = dsn_action::failed;
  std::string status;           // RFC 3463 code: "5.1.1", "4.4.1", "5.1.10", ...
  std::string remote_mta;       // host name (or address literal) of the next hop, "" = none
  std::string diagnostic;       // next hop's reply verbatim, lines split by \n; "" = none
  std::int64_t last_attempt = 0;      // unix seconds, 0 = omit Last-Attempt-Date
  std::int64_t will_retry_until = 0;  // unix seconds, delayed only; 0 = omit
};

// Everything one notice is built from.
struct dsn_input {
  std::string reporting_mta;     // our FQDN; without a dot it is typed x-local-hostname
  std::string original_sender;   // MAIL FROM of the original; "" = null sender: no DSN
  std::string envid;             // ENVID xtext as received, "" = not given
  std::string ret;               // "FULL", "HDRS" or "" (any case)
  std::int64_t arrival = 0;      // unix seconds, 0 = omit Arrival-Date
  std::string queue_id;
  std::string original_content;  // the original message, CRLF lines
  std::vector<dsn_recipient> recipients;
  std::string postmaster = "postmaster";  // local part of From:, @reporting_mta
  std::int64_t now = 0;          // unix seconds: Date:, Message-ID, boundary
  std::size_t max_returned = 64 * 1024;  // full content above this: headers only
};

// "failed", "delayed", "delivered", "relayed" (the RFC 3464 Action value).
const char* to_string(dsn_action a) noexcept;

// True when NOTIFY asks for a notice of this action (RFC 3461 §4.1, §5.2.5-6).
bool wants_notice(std::string_view notify, dsn_action action);

// The whole notice (CRLF lines, none over 998 octets) for the recipients that
// want one; nullopt when none does or the original sender is null.
std::optional<std::string> build_dsn(const dsn_input& in);

// True when a message holds octets above 0x7F and so needs BODY=8BITMIME.
bool needs_8bitmime(std::string_view message) noexcept;

}  // namespace flushgate::queue
