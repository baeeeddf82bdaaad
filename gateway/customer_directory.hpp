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
};

struct customer_entry {
  queue::customer info;
  std::unordered_set<std::string> recipients;  // lower-cased; used when info.recipients is set
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

 private:
  void index(customer_entry& e);
  void unindex(const customer_entry& e);

  std::map<std::int64_t, std::unique_ptr<customer_entry>> by_id_;
  std::unordered_map<std::string, customer_entry*> by_domain_;
  std::unordered_map<std::string, customer_entry*> by_name_;
  std::unordered_map<std::string, customer_entry*> by_link_user_;
  std::uint64_t generation_ = 0;
};

}  // namespace flushgate::gateway
