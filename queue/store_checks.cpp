// store_checks.cpp — see store_checks.hpp.
#include "queue/store_checks.hpp"

#include <algorithm>
#include <limits>
#include <set>

namespace flushgate::queue::detail {

namespace {

bool has_upper(std::string_view s) {
  for (char ch : s) {
    if (ch >= 'A' && ch <= 'Z') return true;
  }
  return false;
}

// [a-z0-9][a-z0-9._-]{0,62}, as store.hpp documents for customer names.
bool valid_customer_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  auto alnum = [](char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'); };
  if (!alnum(name.front())) return false;
  for (char ch : name) {
    if (!alnum(ch) && ch != '.' && ch != '_' && ch != '-') return false;
  }
  return true;
}

}  // namespace

bool all_have_recipients(std::span<const new_message> batch) {
  for (const auto& m : batch) {
    if (m.recipients.empty()) return false;
  }
  return true;
}

bool unique_ids(std::vector<std::int64_t> ids) {
  std::sort(ids.begin(), ids.end());
  return std::adjacent_find(ids.begin(), ids.end()) == ids.end();
}

bool valid_attempt(std::span<const recipient_update> updates,
                   std::span<const new_message> notices) {
  if (!all_have_recipients(notices)) return false;
  std::vector<std::int64_t> ids;
  ids.reserve(updates.size());
  for (const auto& u : updates) {
    if (u.fate != recipient_fate::delivered && u.fate != recipient_fate::deferred &&
        u.fate != recipient_fate::failed) {
      return false;
    }
    ids.push_back(u.recipient_id);
  }
  return unique_ids(std::move(ids));
}

bool valid_addresses(std::span<const std::string> addresses) {
  for (const auto& a : addresses) {
    if (a.empty() || has_upper(a)) return false;
  }
  return true;
}

bool valid_known_recipients(std::span<const known_recipient> items) {
  for (const auto& k : items) {
    if (k.address.empty() || has_upper(k.address) || k.customer_id <= 0) return false;
  }
  return true;
}

bool valid_customer(const customer& c) {
  if (!valid_customer_name(c.name)) return false;
  std::set<std::string_view> seen;
  for (const auto& d : c.domains) {
    if (d.empty() || d.back() == '.' || has_upper(d) || !seen.insert(d).second) return false;
  }
  seen.clear();
  for (const auto& u : c.link_users) {
    if (u.user.empty() || !seen.insert(u.user).second) return false;
  }
  if (c.recipients) {
    for (const auto& r : *c.recipients) {
      if (r.empty() || has_upper(r)) return false;
    }
  }
  for (const auto& n : c.etrn_networks) {
    if (n.empty() || n.find(',') != std::string::npos) return false;
  }
  if (!c.prefer_family.empty() && c.prefer_family != "ipv4" && c.prefer_family != "ipv6") return false;
  if (!c.recipient_check.empty() && c.recipient_check != "any" && c.recipient_check != "list" &&
      c.recipient_check != "learn" && c.recipient_check != "verify") {
    return false;
  }
  if (!c.unknown_recipients.empty() && c.unknown_recipients != "tempfail" &&
      c.unknown_recipients != "accept" && c.unknown_recipients != "reject") {
    return false;
  }
  return c.queue_lifetime >= 0 && c.delay_warning >= 0;
}

bool valid_age_bounds(std::span<const std::int64_t> upper_bounds) {
  if (upper_bounds.size() > max_age_buckets) return false;
  for (std::size_t i = 0; i < upper_bounds.size(); ++i) {
    if (upper_bounds[i] < 0 || (i > 0 && upper_bounds[i] <= upper_bounds[i - 1])) return false;
  }
  return true;
}

std::int64_t oldest_arrival_within(std::int64_t now, std::int64_t bound) {
  std::int64_t t = 0;
  return __builtin_sub_overflow(now, bound, &t) ? std::numeric_limits<std::int64_t>::min() : t;
}

std::vector<arrival_range> age_bucket_ranges(std::int64_t now,
                                             std::span<const std::int64_t> upper_bounds) {
  constexpr std::int64_t lowest = std::numeric_limits<std::int64_t>::min();
  std::vector<arrival_range> out;
  std::int64_t newest = std::numeric_limits<std::int64_t>::max();  // inclusive
  for (std::size_t i = 0; i <= upper_bounds.size(); ++i) {
    const bool last = i == upper_bounds.size();
    const std::int64_t oldest = last ? lowest : oldest_arrival_within(now, upper_bounds[i]);
    if (oldest <= newest) out.push_back({i, oldest, newest});
    if (oldest == lowest) break;  // the remaining buckets are empty
    newest = oldest - 1;
  }
  return out;
}

std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += ',';
    out += i;
  }
  return out;
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    auto comma = text.find(',');
    auto item = text.substr(0, comma);
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

bool valid_lease_request(std::string_view node, std::int64_t duration_ms) {
  return !node.empty() && duration_ms > 0;
}

}  // namespace flushgate::queue::detail
