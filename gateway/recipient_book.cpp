// recipient_book.cpp — see recipient_book.hpp.
#include "gateway/recipient_book.hpp"

#include <algorithm>
#include <iterator>

namespace flushgate::gateway {

void recipient_book::replace_all(const std::vector<queue::known_recipient>& rows) {
  by_customer_.clear();
  pending_.clear();
  for (const auto& r : rows) {
    if (r.last_seen <= 0) continue;  // an eviction mark, removed by the next expiry
    by_customer_[r.customer_id][r.address] = {r.good, r.source, r.first_seen, r.last_seen, r.last_seen};
  }
}

void recipient_book::merge(const std::vector<queue::known_recipient>& rows) {
  for (const auto& r : rows) {
    if (r.last_seen <= 0) continue;  // an eviction mark, not an answer
    auto& m = by_customer_[r.customer_id];
    auto it = m.find(r.address);
    if (it == m.end()) {
      make_room(r.customer_id, m, false);
      m.emplace(r.address, entry{r.good, r.source, r.first_seen, r.last_seen, r.last_seen});
    } else if (r.last_seen >= it->second.last_seen) {
      it->second = {r.good, r.source, std::min(r.first_seen, it->second.first_seen), r.last_seen, r.last_seen};
    }
  }
}

void recipient_book::replace_customer(std::int64_t customer_id,
                                      const std::vector<queue::known_recipient>& rows) {
  auto& m = by_customer_[customer_id];
  m.clear();
  for (const auto& r : rows) {
    if (r.customer_id != customer_id || r.last_seen <= 0) continue;
    if (m.size() >= max_per_customer_) break;
    m[r.address] = {r.good, r.source, r.first_seen, r.last_seen, r.last_seen};
  }
}

bool recipient_book::has_pending(std::int64_t customer_id) const {
  return std::any_of(pending_.begin(), pending_.end(),
                     [customer_id](const auto& k) { return k.customer_id == customer_id; });
}

known_state recipient_book::lookup(std::int64_t customer_id, std::string_view address) const {
  auto c = by_customer_.find(customer_id);
  if (c == by_customer_.end()) return known_state::unknown;
  auto it = c->second.find(std::string(address));
  if (it == c->second.end()) return known_state::unknown;
  return it->second.good ? known_state::good : known_state::bad;
}

void recipient_book::learn(std::int64_t customer_id, std::string_view address, bool good,
                           std::string_view source, std::int64_t now) {
  auto& m = by_customer_[customer_id];
  auto it = m.find(std::string(address));
  if (it == m.end()) {
    make_room(customer_id, m);
    it = m.emplace(std::string(address), entry{good, std::string(source), now, now, 0}).first;
  }
  entry& e = it->second;
  const bool changed = e.good != good || e.written == 0;
  e.good = good;
  e.source = std::string(source);
  e.last_seen = now;
  if (changed || now - e.written >= refresh_seconds) {
    e.written = now;
    pending_.push_back({customer_id, it->first, e.good, e.source, e.first_seen, e.last_seen});
  }
}

void recipient_book::make_room(std::int64_t customer_id, customer_map& m, bool mark) {
  if (m.size() < max_per_customer_) return;
  // The oldest known-bad first (an attack's addresses), else the oldest known-good.
  auto oldest = m.end();
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (oldest == m.end() || (!it->second.good && oldest->second.good) ||
        (it->second.good == oldest->second.good && it->second.last_seen < oldest->second.last_seen)) {
      oldest = it;
    }
  }
  if (oldest == m.end()) return;
  // The store forgets it too: a pending "forget" is a row with last_seen 0,
  // which the next expiry removes (the daemon writes it with the batch).
  if (mark) pending_.push_back({customer_id, oldest->first, oldest->second.good, "evicted", 0, 0});
  m.erase(oldest);
}

void recipient_book::forget(std::int64_t customer_id, std::string_view address) {
  auto c = by_customer_.find(customer_id);
  if (c == by_customer_.end()) return;
  if (address.empty()) {
    by_customer_.erase(c);
  } else {
    c->second.erase(std::string(address));
  }
  std::erase_if(pending_, [&](const queue::known_recipient& k) {
    return k.customer_id == customer_id && (address.empty() || k.address == address);
  });
}

void recipient_book::expire(std::int64_t good_before, std::int64_t bad_before) {
  for (auto& [id, m] : by_customer_) {
    std::erase_if(m, [&](const auto& kv) {
      return kv.second.good ? kv.second.last_seen < good_before : kv.second.last_seen < bad_before;
    });
  }
}

std::vector<queue::known_recipient> recipient_book::take_pending() {
  std::vector<queue::known_recipient> out;
  out.swap(pending_);
  return out;
}

void recipient_book::requeue(std::vector<queue::known_recipient> items) {
  items.insert(items.end(), std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.end()));
  pending_ = std::move(items);
}

std::vector<queue::known_recipient> recipient_book::list(std::int64_t customer_id) const {
  std::vector<queue::known_recipient> out;
  auto c = by_customer_.find(customer_id);
  if (c == by_customer_.end()) return out;
  for (const auto& [address, e] : c->second) {
    out.push_back({customer_id, address, e.good, e.source, e.first_seen, e.last_seen});
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.address < b.address; });
  return out;
}

std::size_t recipient_book::size(std::int64_t customer_id) const {
  auto c = by_customer_.find(customer_id);
  return c == by_customer_.end() ? 0 : c->second.size();
}

}  // namespace flushgate::gateway
