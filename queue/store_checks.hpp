// store_checks.hpp — the checks every store backend makes before it writes.
//
// Purpose: the rules of store.hpp that a backend enforces on its own (a
// customer's name and lists, a message's recipients, one fate per recipient,
// histogram bounds), written once so that sqlite_store and postgres_store
// cannot drift apart; plus the one-column list format both use for
// etrn_networks.
// Security: pure functions over values already parsed upstream; they only
// refuse, never rewrite.
// Errors: none; false means the caller returns errc::invalid_argument.
// See also: store.hpp, sqlite_store.hpp, postgres_store.hpp.
#pragma once

#include "queue/store.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flushgate::queue::detail {

// Every message has a recipient (notices are stored like any message).
bool all_have_recipients(std::span<const new_message> batch);

// No id twice: a recipient has one fate per attempt.
bool unique_ids(std::vector<std::int64_t> ids);

// What can be checked before the transaction of record_attempt: notices
// need a recipient, fates are known, and no recipient has two fates.
bool valid_attempt(std::span<const recipient_update> updates, std::span<const new_message> notices);

// The checks the store can make on a customer on its own (the CLI validates
// fully first): name form, lower-case unique domains, unique link users,
// lower-case recipients, CIDRs without commas, non-negative times.
bool valid_customer(const customer& c);

// Upper bounds of queue_age_histogram: ascending, >= 0, at most max_age_buckets.
bool valid_age_bounds(std::span<const std::int64_t> upper_bounds);

// A lease request names a node and lasts a positive time (take_lease, renew_lease).
bool valid_lease_request(std::string_view node, std::int64_t duration_ms);

// now - bound, saturating at INT64_MIN: the oldest arrival a bucket holds.
std::int64_t oldest_arrival_within(std::int64_t now, std::int64_t bound);

// The arrival times queue_age_histogram counts for each of its buckets
// (upper_bounds.size() + 1 of them, the last open-ended): bucket i holds
// oldest <= arrival <= newest. The ranges do not overlap; a bucket no
// arrival can fall in is left out (the histogram keeps it at zero), and
// none follow the one that reaches INT64_MIN.
struct arrival_range {
  std::size_t bucket = 0;
  std::int64_t oldest = 0;
  std::int64_t newest = 0;
};
std::vector<arrival_range> age_bucket_ranges(std::int64_t now,
                                             std::span<const std::int64_t> upper_bounds);

// Recipient addresses as the store keeps them: not empty, lower-cased.
bool valid_addresses(std::span<const std::string> addresses);
bool valid_known_recipients(std::span<const known_recipient> items);

// A short list kept in one column: comma-separated, no empty items.
std::string join_list(const std::vector<std::string>& items);
std::vector<std::string> split_list(std::string_view text);

}  // namespace flushgate::queue::detail
