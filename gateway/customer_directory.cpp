// customer_directory.cpp — see customer_directory.hpp.
#include "gateway/customer_directory.hpp"

#include <algorithm>
#include <cctype>

namespace flushgate::gateway {

namespace {
std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}
}  // namespace

void customer_directory::replace_all(const std::vector<queue::customer>& customers,
                                     const std::vector<queue::queue_stats>& stats) {
  ++generation_;
  by_id_.clear();
  by_domain_.clear();
  by_name_.clear();
  by_link_user_.clear();
  for (const auto& c : customers) upsert(c);
  for (const auto& s : stats) {
    if (auto it = by_id_.find(s.customer_id); it != by_id_.end()) {
      it->second->queued_bytes = s.bytes;
    }
  }
}

void customer_directory::upsert(const queue::customer& c) {
  ++generation_;
  std::uint64_t queued = 0;
  if (auto it = by_id_.find(c.id); it != by_id_.end()) {
    queued = it->second->queued_bytes;
    unindex(*it->second);
    by_id_.erase(it);
  }
  auto entry = std::make_unique<customer_entry>();
  entry->info = c;
  entry->queued_bytes = queued;
  if (c.recipients) {
    for (const auto& r : *c.recipients) {
      std::string a = lower(r);
      if (a.starts_with("*@")) entry->whole_domains.insert(a.substr(2));
      else entry->recipients.insert(std::move(a));
    }
  }
  index(*entry);
  by_id_.emplace(c.id, std::move(entry));
}

void customer_directory::remove(std::int64_t customer_id) {
  auto it = by_id_.find(customer_id);
  if (it == by_id_.end()) return;
  ++generation_;
  unindex(*it->second);
  by_id_.erase(it);
}

void customer_directory::index(customer_entry& e) {
  for (const auto& d : e.info.domains) by_domain_[lower(d)] = &e;
  for (const auto& u : e.info.link_users) by_link_user_[u.user] = &e;
  by_name_[e.info.name] = &e;
}

void customer_directory::unindex(const customer_entry& e) {
  for (const auto& d : e.info.domains) {
    auto it = by_domain_.find(lower(d));
    if (it != by_domain_.end() && it->second == &e) by_domain_.erase(it);
  }
  for (const auto& u : e.info.link_users) {
    auto lu = by_link_user_.find(u.user);
    if (lu != by_link_user_.end() && lu->second == &e) by_link_user_.erase(lu);
  }
  auto it = by_name_.find(e.info.name);
  if (it != by_name_.end() && it->second == &e) by_name_.erase(it);
}

const customer_entry* customer_directory::find_by_domain(std::string_view domain) const {
  if (auto it = by_domain_.find(std::string(domain)); it != by_domain_.end()) {
    return it->second;
  }
  // Walk up the parents: a.b.acme.test → b.acme.test → acme.test, and accept a
  // parent only when its customer takes subdomains.
  std::string_view rest = domain;
  for (std::size_t dot = rest.find('.'); dot != std::string_view::npos; dot = rest.find('.')) {
    rest.remove_prefix(dot + 1);
    if (auto it = by_domain_.find(std::string(rest)); it != by_domain_.end()) {
      return it->second->info.subdomains ? it->second : nullptr;
    }
  }
  return nullptr;
}

const customer_entry* customer_directory::find_by_name(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : it->second;
}

const customer_entry* customer_directory::find_by_id(std::int64_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second.get();
}

rcpt_verdict customer_directory::check_recipient(std::string_view local, std::string_view domain,
                                                 const customer_entry** owner) const {
  const customer_entry* e = find_by_domain(domain);
  if (owner != nullptr) *owner = e;
  if (e == nullptr) return rcpt_verdict::relay_denied;
  switch (e->info.state) {
    case queue::customer_state::disabled: return rcpt_verdict::disabled;
    case queue::customer_state::suspended: return rcpt_verdict::suspended;
    case queue::customer_state::enabled: break;
  }
  const auto policy = recipient_policy(e->info);
  if (policy == "list") {
    bool listed = e->whole_domains.contains(std::string(domain));
    for (const auto& key : recipient_keys(local, domain, delimiter_)) {
      if (e->recipients.contains(key)) listed = true;
    }
    if (!listed) return rcpt_verdict::unknown_user;
  }
  if (e->info.quota != 0 && e->queued_bytes >= e->info.quota) return rcpt_verdict::over_quota;
  if (learns_recipients(e->info)) return rcpt_verdict::check_known;
  return rcpt_verdict::accept;
}

void customer_directory::add_recipients(std::int64_t customer_id, const std::vector<std::string>& addresses) {
  auto it = by_id_.find(customer_id);
  if (it == by_id_.end()) return;
  auto& e = *it->second;
  if (!e.info.recipients) e.info.recipients.emplace();
  // Membership from the sets (constant time): a 100,000-address import must
  // not scan the list once per address on the network thread.
  for (const auto& a : addresses) {
    const bool added = a.starts_with("*@") ? e.whole_domains.insert(a.substr(2)).second
                                           : e.recipients.insert(a).second;
    if (added) e.info.recipients->push_back(a);
  }
  ++generation_;
}

void customer_directory::remove_recipients(std::int64_t customer_id,
                                           const std::vector<std::string>& addresses) {
  auto it = by_id_.find(customer_id);
  if (it == by_id_.end() || !it->second->info.recipients) return;
  auto& e = *it->second;
  std::unordered_set<std::string> gone(addresses.begin(), addresses.end());
  std::erase_if(*e.info.recipients, [&](const std::string& a) { return gone.contains(a); });
  for (const auto& a : addresses) {
    if (a.starts_with("*@")) e.whole_domains.erase(a.substr(2));
    else e.recipients.erase(a);
  }
  ++generation_;
}

std::string_view recipient_policy(const queue::customer& c) {
  if (!c.recipient_check.empty()) return c.recipient_check;
  return c.recipients ? "list" : "any";
}

bool learns_recipients(const queue::customer& c) {
  const auto policy = recipient_policy(c);
  return policy == "learn" || policy == "verify";
}

std::vector<std::string> recipient_keys(std::string_view local, std::string_view domain,
                                        std::string_view delimiter) {
  std::string l = lower(local);
  std::vector<std::string> out{l + "@" + std::string(domain)};
  if (!delimiter.empty()) {
    const auto at = l.find(delimiter);
    if (at != std::string::npos && at > 0) out.push_back(l.substr(0, at) + "@" + std::string(domain));
  }
  return out;
}

const customer_entry* customer_directory::find_by_link_user(std::string_view user) const {
  auto it = by_link_user_.find(std::string(user));
  return it == by_link_user_.end() ? nullptr : it->second;
}

std::vector<const customer_entry*> customer_directory::all() const {
  std::vector<const customer_entry*> out;
  for (const auto& [id, e] : by_id_) out.push_back(e.get());
  return out;
}

void customer_directory::set_queued_bytes(std::int64_t customer_id, std::uint64_t bytes) {
  if (auto it = by_id_.find(customer_id); it != by_id_.end()) it->second->queued_bytes = bytes;
}

void customer_directory::add_queued_bytes(std::int64_t customer_id, std::int64_t delta) {
  auto it = by_id_.find(customer_id);
  if (it == by_id_.end()) return;
  auto& bytes = it->second->queued_bytes;
  if (delta < 0 && static_cast<std::uint64_t>(-delta) > bytes) {
    bytes = 0;
  } else {
    bytes = static_cast<std::uint64_t>(static_cast<std::int64_t>(bytes) + delta);
  }
}

bool customer_directory::would_exceed_quota(std::int64_t customer_id, std::uint64_t size) const {
  const customer_entry* e = find_by_id(customer_id);
  return e != nullptr && e->info.quota != 0 && e->queued_bytes + size > e->info.quota;
}

}  // namespace flushgate::gateway
