// router.cpp — see router.hpp.
#include "gateway/flush/router.hpp"

#include "core/ip_network.hpp"
#include "core/units.hpp"
#include "queue/store_checks.hpp"

#include <boost/asio/ip/address.hpp>

#include <optional>
#include <string_view>
#include <vector>

namespace flushgate::gateway {

namespace asio = boost::asio;

namespace {

// "192.0.2.7:25" or "[2001:db8::25]:25".
std::string host_port(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// The user's allowed ranges, parsed ("" = none; the control channel validated them).
std::vector<core::ip_network> allowed_networks(const queue::link_user* lu) {
  std::vector<core::ip_network> out;
  if (lu == nullptr) return out;
  for (const auto& item : queue::detail::split_list(lu->allowed_net)) {
    if (auto n = core::parse_ip_network(item)) out.push_back(*n);
  }
  return out;
}

bool usable_ipv6(const asio::ip::address_v6& a) {
  return !a.is_unspecified() && !a.is_multicast() && !a.is_link_local() && !a.is_v4_mapped();
}

}  // namespace

std::string route::describe() const {
  switch (k) {
    case kind::hold: return "hold";
    case kind::odmr: return "odmr";
    case kind::mx: return "mx";
    case kind::host: return "host " + host_port(host, port);
    case kind::link:
      return "link " + link_user + " " + host_port(host, port) +
             (fallback.empty() ? "" : " or " + host_port(fallback, port));
  }
  return "hold";
}

bool valid_ipv6_server(const std::string& text) {
  if (text.empty() || text == "framed" || text == "none") return true;
  boost::system::error_code ec;
  const auto a = asio::ip::make_address_v6(text, ec);
  return !ec && !a.is_unspecified();
}

std::string ipv6_server_address(const queue::customer& c, const queue::link_record& link) {
  if (c.ipv6_server == "none") return "";
  if (c.ipv6_server.empty() || c.ipv6_server == "framed") return link.ipv6_address;
  // An offset inside the delegated prefix: the prefix's bits, then the
  // offset's bits below the prefix length.
  const auto prefix = core::parse_ip_network(link.ipv6_prefix);
  boost::system::error_code ec;
  const auto offset = asio::ip::make_address_v6(c.ipv6_server, ec);
  if (!prefix || !prefix->address.is_v6() || ec) return "";
  auto bytes = prefix->address.to_v6().to_bytes();
  const auto offset_bytes = offset.to_bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const std::size_t bits_before = i * 8;
    std::uint8_t host_mask = 0xff;  // the bits of this octet below the prefix length
    if (bits_before + 8 <= prefix->prefix_length) {
      host_mask = 0;
    } else if (bits_before < prefix->prefix_length) {
      host_mask = static_cast<std::uint8_t>(0xff >> (prefix->prefix_length - bits_before));
    }
    bytes[i] = static_cast<std::uint8_t>(bytes[i] | (offset_bytes[i] & host_mask));
  }
  const auto server = asio::ip::address_v6(bytes);
  return usable_ipv6(server) ? server.to_string() : "";
}

route router::route_for(const queue::customer& c) const {
  route r;
  if (c.mode == queue::delivery_mode::odmr) {
    r.k = route::kind::odmr;
    return r;
  }
  // The best live link with an address the customer can use: DSL before
  // dial-up, then the newest.
  const queue::link_record* best = nullptr;
  std::string best_v6;
  for (const auto& [user, link] : links_) {
    if (link.customer_id != c.id) continue;
    std::string v6 = ipv6_server_address(c, link);
    if (link.address.empty() && v6.empty()) continue;
    bool better_kind = best != nullptr && link.kind == queue::link_kind::dsl &&
                       best->kind != queue::link_kind::dsl;
    bool same_kind = best != nullptr && link.kind == best->kind;
    if (best == nullptr || better_kind || (same_kind && link.since > best->since)) {
      best = &link;
      best_v6 = std::move(v6);
    }
  }
  if (best != nullptr) {
    r.k = route::kind::link;
    r.port = c.link_port;
    r.link_user = best->user;
    const bool ipv4_first = c.prefer_family == "ipv4";
    std::string first = ipv4_first ? best->address : best_v6;
    std::string second = ipv4_first ? best_v6 : best->address;
    if (first.empty()) std::swap(first, second);
    r.host = std::move(first);
    r.fallback = std::move(second);
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

link_check router::check_link(const customer_directory& customers, const std::string& user,
                              const std::string& address, const std::string& ipv6_address,
                              const std::string& ipv6_prefix) const {
  link_check out;
  out.owner = customers.find_by_link_user(user);
  if (out.owner == nullptr) {
    out.refusal = link_refusal::unknown_user;
    return out;
  }
  for (const auto& u : out.owner->info.link_users) {
    if (u.user == user) out.user = &u;
  }
  auto refuse = [&out](link_refusal why, const std::string& what) {
    out.refusal = why;
    out.offending = what;
    return out;
  };
  if (address.empty() && ipv6_address.empty() && ipv6_prefix.empty()) {
    return refuse(link_refusal::no_usable_address, "");
  }
  // Each value on its own.
  boost::system::error_code ec;
  std::optional<asio::ip::address> v4, v6;
  std::optional<core::ip_network> prefix;
  if (!address.empty()) {
    auto ip = asio::ip::make_address(address, ec);
    if (ec || ip.is_unspecified() || ip.is_multicast() ||
        (ip.is_v4() && ip.to_v4() == asio::ip::address_v4::broadcast())) {
      return refuse(link_refusal::bad_address, address);
    }
    // An IPv6 address given as "the" address (`link up --ip` of old) is the line's IPv6 one.
    if (ip.is_v6() && !ipv6_address.empty()) return refuse(link_refusal::bad_address, address);
    (ip.is_v4() ? v4 : v6) = ip;
    if (ip.is_v6() && !usable_ipv6(ip.to_v6())) return refuse(link_refusal::bad_address, address);
  }
  if (!ipv6_address.empty()) {
    auto ip = asio::ip::make_address_v6(ipv6_address, ec);
    if (ec || !usable_ipv6(ip)) return refuse(link_refusal::bad_address, ipv6_address);
    v6 = asio::ip::address(ip);
  }
  if (!ipv6_prefix.empty()) {
    prefix = core::parse_ip_network(ipv6_prefix);
    if (!prefix || !prefix->address.is_v6() || ipv6_prefix.find('/') == std::string::npos ||
        !usable_ipv6(prefix->address.to_v6())) {
      return refuse(link_refusal::bad_address, ipv6_prefix);
    }
  }
  // Against the user's ranges: outside → refused; a family without ranges → dropped.
  const auto nets = allowed_networks(out.user);
  if (nets.empty()) return out;
  bool have_v4_net = false, have_v6_net = false;
  for (const auto& n : nets) (n.address.is_v4() ? have_v4_net : have_v6_net) = true;
  auto inside = [&nets](const asio::ip::address& a, unsigned length) {
    for (const auto& n : nets) {
      if (n.address.is_v4() == a.is_v4() && n.contains(a) && length >= n.prefix_length) return true;
    }
    return false;
  };
  if (v4) {
    if (!have_v4_net) out.drop_ipv4 = true;
    else if (!inside(*v4, 32)) return refuse(link_refusal::outside_allowed_net, address);
  }
  if (v6 || prefix) {
    if (!have_v6_net) {
      out.drop_ipv6 = true;
    } else {
      if (v6 && !inside(*v6, 128)) return refuse(link_refusal::outside_allowed_net, v6->to_string());
      if (prefix && !inside(prefix->address, prefix->prefix_length)) {
        return refuse(link_refusal::outside_allowed_net, ipv6_prefix);
      }
    }
  }
  if ((out.drop_ipv4 || !v4) && (out.drop_ipv6 || (!v6 && !prefix))) {
    return refuse(link_refusal::no_usable_address, "");
  }
  return out;
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
