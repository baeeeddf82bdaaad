// customer_directory.hpp — which customer a recipient domain belongs to, and
// whether mail for it may be accepted now.
//
// Purpose: the SMTP server's view of the customers, kept in memory on the
// network thread so that RCPT needs no disk access. The daemon fills it from
// the store at start and updates it after every change made through the
// control channel; queued byte counts are kept for quotas.
// Security: this is the no-open-relay check (ARCHITECTURE.md invariant 3):
// only domains of enabled customers are accepted; a recipient list, where
// set, is enforced here, at RCPT time.
//
// Recipient checks, per customer (queue::customer::recipient_check):
//   any     every local part of its domains (the old default; the status
//           page and the DNS doctor call it a back door)
//   list    its explicit list: exact addresses, "*@domain" for a whole
//           domain, and "user+tag@domain" matches "user@domain" (the
//           delimiter is recipient_delimiter)
//   learn   what its server took (known-good, 250) or refused as unknown
//           (known-bad, 550 5.1.1) — recipient_book.hpp; an address not
//           known yet gets check_known, and the session decides
//   verify  learn, and the session may ask the server (a callout)
// Errors: check_recipient returns a rcpt_verdict; the session maps it to a reply.
#pragma once

#include "queue/store.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace flushgate::gateway {

enum class rcpt_verdict {
  accept,
  relay_denied,   // no enabled customer has this domain: 550 5.7.1
  disabled,       // the customer's fallback is off: treated like relay_denied
  suspended,      // customer suspended: 450 4.7.1, nothing new accepted
  unknown_user,   // recipient list set and the address is not on it: 550 5.1.1
  over_quota,     // customer's quota reached: 552 5.2.2
  check_known,    // learn/verify: the session looks the address up in the recipient book
};

// The customer's recipient check with the default filled in: "any", "list", "learn" or "verify".
std::string_view recipient_policy(const queue::customer& c);
// True for learn and verify: the customer's server's answers are recorded (recipient_book.hpp).
bool learns_recipients(const queue::customer& c);
// The addresses RCPT local@domain may be known as: itself, and without its
// subaddress ("user+tag" → "user") when `delimiter` is set. Lower-cased.
std::vector<std::string> recipient_keys(std::string_view local, std::string_view domain,
                                        std::string_view delimiter);

struct customer_entry {
  queue::customer info;
  std::unordered_set<std::string> recipients;  // lower-cased; used when info.recipients is set
  std::unordered_set<std::string> whole_domains;  // "*@domain" entries of the list, as "domain"
  std::uint64_t queued_bytes = 0;
};

class customer_directory {
 public:
  // Replaces everything (start-up, or after a bulk change).
  void replace_all(const std::vector<queue::customer>& customers,
                   const std::vector<queue::queue_stats>& stats);
  // Adds or replaces one customer (keyed by id), keeping its queued byte count.
  void upsert(const queue::customer& c);
  void remove(std::int64_t customer_id);

  // The customer owning `domain` (lower-case): an exact domain, or a parent
  // domain of a customer that accepts subdomains. nullptr when none.
  const customer_entry* find_by_domain(std::string_view domain) const;
  const customer_entry* find_by_name(std::string_view name) const;
  const customer_entry* find_by_id(std::int64_t id) const;
  // The customer on which `user` is registered as a link user.
  const customer_entry* find_by_link_user(std::string_view user) const;
  // Every customer, in id order.
  std::vector<const customer_entry*> all() const;

  // The subaddress delimiter of list matching ("" = none; recipient_delimiter).
  void set_recipient_delimiter(std::string delimiter) { delimiter_ = std::move(delimiter); }
  const std::string& recipient_delimiter() const { return delimiter_; }

  // Decides whether RCPT `address` (local@domain, domain lower-cased) is accepted.
  rcpt_verdict check_recipient(std::string_view local, std::string_view domain,
                               const customer_entry** owner) const;

  // Quota bookkeeping: bytes committed (+) or delivered/deleted (-).
  void add_queued_bytes(std::int64_t customer_id, std::int64_t delta);
  // Cluster: the customer's queued bytes as the shared store counts them
  // (mail taken in and delivered by other nodes included).
  void set_queued_bytes(std::int64_t customer_id, std::uint64_t bytes);
  // True when `size` more bytes would exceed the customer's quota.
  bool would_exceed_quota(std::int64_t customer_id, std::uint64_t size) const;

  std::size_t size() const { return by_id_.size(); }
  // Grows with every change of a customer (not of queued bytes): a reader
  // that waited (on the store) can tell whether its view is still the latest.
  std::uint64_t generation() const noexcept { return generation_; }
  // Live list management: the customer's list gains or loses addresses
  // (the store changed them already); a customer without a list gets one.
  void add_recipients(std::int64_t customer_id, const std::vector<std::string>& addresses);
  void remove_recipients(std::int64_t customer_id, const std::vector<std::string>& addresses);

 private:
  void index(customer_entry& e);
  void unindex(const customer_entry& e);

  std::map<std::int64_t, std::unique_ptr<customer_entry>> by_id_;
  std::unordered_map<std::string, customer_entry*> by_domain_;
  std::unordered_map<std::string, customer_entry*> by_name_;
  std::unordered_map<std::string, customer_entry*> by_link_user_;
  std::uint64_t generation_ = 0;
  std::string delimiter_ = "+";
};

}  // namespace flushgate::gateway
