// gateway_metrics.hpp — what the SMTP server, the delivery agent and the
// scheduler count, in one place (names as /metrics shows them).
//
// Purpose: one function per thing counted, so that the metric names, their
// labels and help texts live here and not scattered through the protocol
// code. Everything lands in core::metrics().
//   flushgate_smtp_connections_total{result}   accepted | refused_limit | refused_shutdown
//   flushgate_messages_accepted_total          messages acknowledged with 250 (after fsync)
//   flushgate_message_bytes_accepted_total
//   flushgate_smtp_refusals_total{reason}      4xx/5xx replies, by reason (smtp_refusal_reason)
//   flushgate_deliveries_total{outcome}        recipients: sent | bounced | deferred (as recorded in the store)
//   flushgate_dsns_queued_total{kind}          delay | final (non-delivery, expiry, relayed reports)
//   flushgate_flushes_total{result}            delivery runs that tried mail: complete | left_mail | cancelled
//   flushgate_flush_duration_seconds           histogram of those runs
//   flushgate_recipient_probes_total{result}   recipient verification callouts: good | bad | unknown
// Security: labels are fixed words from this file; no peer data.
// Errors: none.
#pragma once

#include <cstdint>
#include <string_view>

namespace flushgate::gateway {

// The reason label for a refusing reply, from its enhanced status code
// (RFC 3463) and code: relay_denied, unknown_recipient, suspended, disk_full,
// over_quota, too_large, too_many_recipients, mail_loop, bare_cr_lf,
// non_ascii, timeout, unavailable, policy, local_error, syntax, other.
std::string_view smtp_refusal_reason(int code, std::string_view enhanced);

void count_smtp_connection(std::string_view result);
void count_smtp_refusal(int code, std::string_view enhanced);
void count_message_accepted(std::uint64_t bytes);
void count_delivery(std::string_view outcome, std::uint64_t recipients = 1);
void count_dsn_queued(std::string_view kind, std::uint64_t notices = 1);
// A connection to a customer's server over a link opened, by address family
// ("ipv4", "ipv6") and whether it was the route's first address ("first", "fallback").
void count_link_connection(std::string_view family, std::string_view which);
// A recipient verification callout ended with verdict "good", "bad" or "unknown".
void count_recipient_probe(std::string_view result);
void observe_flush(std::string_view result, double seconds);

}  // namespace flushgate::gateway
