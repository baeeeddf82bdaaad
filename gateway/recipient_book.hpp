// recipient_book.hpp — the addresses each customer's server has told about:
// known-good (it took mail for them) and known-bad (it refused them as
// unknown users), for the "learn" and "verify" recipient checks.
//
// Purpose: RCPT for a learn/verify customer is answered from here without
// disk access while the customer's server is down: known-good → 250,
// known-bad → 550 5.1.1, not known → the customer's unknown_recipients
// choice (tempfail by default, so senders keep the mail rather than the
// gateway bouncing it later). Delivery results and callouts teach it. The
// daemon loads it from the store at start; what it learns is written back in
// batches (take_pending) so a flush to thousands of new addresses costs one
// transaction a second, not one per address.
// Security: an attacker controls which addresses are tried, never what is
// learned: only the customer's own server's answers are recorded. Each
// customer keeps at most max_per_customer addresses (then the oldest
// known-bad go first, then the oldest known-good), so a dictionary attack
// cannot grow memory or the store without bound.
// Errors: none; lookups of unknown customers answer unknown.
// See also: customer_directory.hpp (the policies), queue/store.hpp
// (known_recipient, the table).
#pragma once

#include "queue/store.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace flushgate::gateway {

enum class known_state { unknown, good, bad };

class recipient_book {
 public:
  explicit recipient_book(std::size_t max_per_customer = 50000) : max_per_customer_(max_per_customer) {}

  // Start-up (or a cluster reload): replaces everything with the store's rows.
  void replace_all(const std::vector<queue::known_recipient>& rows);
  // A cluster node takes what other nodes wrote to the store: each row
  // replaces this node's entry unless that one was seen later. Nothing is
  // queued for the store (it came from there).
  void merge(const std::vector<queue::known_recipient>& rows);
  // Replaces one customer's addresses with the store's rows (another node
  // forgot some, or expired them earlier than this node).
  void replace_customer(std::int64_t customer_id, const std::vector<queue::known_recipient>& rows);
  // True while something of the customer's waits to be written.
  bool has_pending(std::int64_t customer_id) const;
  // What the customer's server said about `address` (lower-cased local@domain).
  known_state lookup(std::int64_t customer_id, std::string_view address) const;
  // Records an answer of the customer's server at unix time `now`. It is
  // queued for the store when it is new, changed good/bad, or was last
  // written more than refresh_seconds ago (the expiry counts from last_seen).
  void learn(std::int64_t customer_id, std::string_view address, bool good, std::string_view source,
             std::int64_t now);
  // Forgets one address ("" = all of the customer's).
  void forget(std::int64_t customer_id, std::string_view address);
  // Drops what expired: good last seen before good_before, bad before bad_before.
  void expire(std::int64_t good_before, std::int64_t bad_before);
  // The changes not yet written to the store (and empties that list).
  std::vector<queue::known_recipient> take_pending();
  // Puts back what could not be written (before anything learned since).
  void requeue(std::vector<queue::known_recipient> items);
  // One customer's addresses, by address.
  std::vector<queue::known_recipient> list(std::int64_t customer_id) const;
  std::size_t size(std::int64_t customer_id) const;

  static constexpr std::int64_t refresh_seconds = 86400;

 private:
  struct entry {
    bool good = true;
    std::string source;
    std::int64_t first_seen = 0;
    std::int64_t last_seen = 0;
    std::int64_t written = 0;  // last_seen as last queued for the store
  };
  using customer_map = std::unordered_map<std::string, entry>;
  // Evicts one address when the customer is full; `mark` queues its removal
  // for the store (not for rows that came from the store: other nodes hold them).
  void make_room(std::int64_t customer_id, customer_map& m, bool mark = true);

  std::size_t max_per_customer_;
  std::unordered_map<std::int64_t, customer_map> by_customer_;
  std::vector<queue::known_recipient> pending_;
};

}  // namespace flushgate::gateway
