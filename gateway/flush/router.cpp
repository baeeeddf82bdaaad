// router.cpp — see router.hpp.
#include "gateway/flush/router.hpp"

#include "core/ip_network.hpp"
#include "core/units.hpp"

#include <boost/asio/ip/address.hpp>

namespace flushgate::gateway {

namespace asio = boost::asio;

namespace {
// True when `ip` lies in `net` (a CIDR the control channel validated).
bool in_allowed_net(const asio::ip::address& ip, const std::string& net) {
  const auto parsed = core::parse_ip_network(net);
  return parsed && parsed->contains(ip);
}
}  // namespace

std::string route::describe() const {
  auto hostport = [this] {
    bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  };
  switch (k) {
    case kind::hold: return "hold";
    case kind::odmr: return "odmr";
    case kind::mx: return "mx";
    case kind::host: return "host " + hostport();
    case kind::link: return "link " + link_user + " " + hostport();
  }
  return "hold";
}

route router::route_for(const queue::customer& c) const {
  route r;
  if (c.mode == queue::delivery_mode::odmr) {
    r.k = route::kind::odmr;
    return r;
  }
  // The best live link: DSL before dial-up, then the newest.
  const queue::link_record* best = nullptr;
  for (const auto& [user, link] : links_) {
    if (link.customer_id != c.id) continue;
    if (best == nullptr) {
      best = &link;
      continue;
    }
    bool better_kind = link.kind == queue::link_kind::dsl && best->kind != queue::link_kind::dsl;
    bool same_kind = link.kind == best->kind;
    if (better_kind || (same_kind && link.since > best->since)) best = &link;
  }
  if (best != nullptr) {
    r.k = route::kind::link;
    r.host = best->address;
    r.port = c.link_port;
    r.link_user = best->user;
    return r;
  }
  if (c.route == "mx") {
    r.k = route::kind::mx;
  } else if (!c.route.empty()) {
    r.k = route::kind::host;
    if (auto hp = core::parse_host_port(c.route)) {
      r.host = hp->first;
      r.port = hp->second;
    } else {
      r.host = c.route;
      r.port = 25;
    }
  }
  return r;
}

link_refusal router::check_link(const customer_directory& customers, const std::string& user,
                                const std::string& address, const queue::link_user** user_out,
                                const customer_entry** owner_out) const {
  const customer_entry* owner = customers.find_by_link_user(user);
  if (owner == nullptr) return link_refusal::unknown_user;
  const queue::link_user* lu = nullptr;
  for (const auto& u : owner->info.link_users) {
    if (u.user == user) lu = &u;
  }
  if (user_out != nullptr) *user_out = lu;
  if (owner_out != nullptr) *owner_out = owner;
  boost::system::error_code ec;
  auto ip = asio::ip::make_address(address, ec);
  if (ec || ip.is_unspecified() || ip.is_multicast() ||
      (ip.is_v4() && ip.to_v4() == asio::ip::address_v4::broadcast())) {
    return link_refusal::bad_address;
  }
  if (lu != nullptr && !lu->allowed_net.empty() && !in_allowed_net(ip, lu->allowed_net)) {
    return link_refusal::outside_allowed_net;
  }
  return link_refusal::none;
}

void router::set_links(std::vector<queue::link_record> links) {
  ++generation_;
  links_.clear();
  for (auto& l : links) links_[l.user] = std::move(l);
}

void router::link_up(const queue::link_record& link) {
  ++generation_;
  links_[link.user] = link;
}

std::optional<queue::link_record> router::link_down(const std::string& user,
                                                    const std::string& session_id) {
  auto it = links_.find(user);
  if (it == links_.end()) return std::nullopt;
  if (!session_id.empty() && it->second.session_id != session_id) return std::nullopt;
  auto removed = std::move(it->second);
  links_.erase(it);
  ++generation_;
  return removed;
}

std::vector<queue::link_record> router::links_down_for_nas(const std::string& nas) {
  std::vector<queue::link_record> removed;
  ++generation_;
  for (auto it = links_.begin(); it != links_.end();) {
    if (!nas.empty() && it->second.nas == nas) {
      removed.push_back(std::move(it->second));
      it = links_.erase(it);
    } else {
      ++it;
    }
  }
  return removed;
}

std::vector<queue::link_record> router::links() const {
  std::vector<queue::link_record> out;
  for (const auto& [user, l] : links_) out.push_back(l);
  return out;
}

std::vector<queue::link_record> router::links_of(std::int64_t customer_id) const {
  std::vector<queue::link_record> out;
  for (const auto& [user, l] : links_) {
    if (l.customer_id == customer_id) out.push_back(l);
  }
  return out;
}

const queue::link_record* router::find_link(const std::string& user) const {
  auto it = links_.find(user);
  return it == links_.end() ? nullptr : &it->second;
}

}  // namespace flushgate::gateway
