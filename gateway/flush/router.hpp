// router.hpp — where a customer's mail goes right now.
//
// Purpose: a customer's route is derived, never typed in by hand
// (ARCHITECTURE.md, "Route"): its best live link — a DSL session before a
// dial-up one, the newest first — at the link's address and the customer's
// link port; else its primary route (HOST[:PORT], or "mx"); else hold. ODMR
// customers are served only over their own ATRN session. The router keeps the
// live links (one per link user) in memory; link sources (the CLI's
// `link up|down`, RADIUS, pcap) hand it events after the event is durable.
//
// IPv6 lines: a link may carry an IPv4 address, an IPv6 address and the
// customer LAN's IPv6 prefix. The server's IPv6 address follows the
// customer's ipv6_server: the line's own address ("" or "framed"), none
// ("none"), or an offset inside the prefix ("::25" on 2001:db8:0:5600::/56
// is 2001:db8:0:5600::25). A dual-stack route holds both addresses in the
// customer's order (IPv6 first unless prefer_family is "ipv4"); delivery
// tries the second when the first does not answer. A link with no address
// the customer can use (IPv6 only, ipv6_server "none") gives no route.
// Security: a link event names a user; the user must be registered on a
// customer, and when the customer pinned that user to address ranges
// (allowed_net, IPv4 and IPv6 CIDRs), an address or prefix outside them is
// refused (a forged RADIUS Start must not redirect a customer's mail). A
// pinned user's family without a range of its own is dropped from the event
// (reported in link_check.ignored): pinning IPv4 must not let an unchecked
// IPv6 address in.
// Errors: check_link returns link_refusal values; the caller words them.
#pragma once

#include "gateway/customer_directory.hpp"
#include "queue/store.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace flushgate::gateway {

struct route {
  enum class kind { hold, link, host, mx, odmr };
  kind k = kind::hold;
  std::string host;          // link address (the first to try) or configured host; "" for mx
  std::uint16_t port = 25;
  std::string link_user;     // the link the route runs over, "" otherwise
  std::string fallback;      // a dual-stack link's other address, tried when host does not answer

  bool deliverable() const { return k == kind::link || k == kind::host || k == kind::mx; }
  // "link acme-dial 192.0.2.7:25", "link acme-dsl [2001:db8::25]:25 or 192.0.2.7:25",
  // "host mail.acme.test:25", "mx", "hold", "odmr"
  std::string describe() const;
  bool operator==(const route&) const = default;
};

enum class link_refusal { none, unknown_user, bad_address, outside_allowed_net, no_usable_address };

// What check_link found. `offending` names the value refused; `ignored` the
// values dropped because the user is pinned to ranges of the other family
// only (the caller clears them from the event and logs it).
struct link_check {
  link_refusal refusal = link_refusal::none;
  const queue::link_user* user = nullptr;
  const customer_entry* owner = nullptr;
  std::string offending;
  bool drop_ipv4 = false;
  bool drop_ipv6 = false;
};

// The IPv6 address of the customer's server on `link`, "" when there is none
// (see the header comment); the IPv4 one is the link's address.
std::string ipv6_server_address(const queue::customer& c, const queue::link_record& link);
// True when `text` is a valid ipv6_server setting ("", "framed", "none", or an IPv6 offset).
bool valid_ipv6_server(const std::string& text);

class router {
 public:
  // The route of customer `c` given the live links.
  route route_for(const queue::customer& c) const;

  // Checks an up event before it is recorded: the user must belong to a
  // customer; the IPv4 address, the IPv6 address and the IPv6 prefix (each
  // may be "", not all) must be usable and inside the user's allowed_net.
  link_check check_link(const customer_directory& customers, const std::string& user,
                        const std::string& address, const std::string& ipv6_address,
                        const std::string& ipv6_prefix) const;

  // Start-up: the links recorded in the store.
  void set_links(std::vector<queue::link_record> links);
  // Records a live link (replacing the user's previous one).
  void link_up(const queue::link_record& link);
  // Ends the user's link if session_id matches (or is ""); returns the link removed.
  std::optional<queue::link_record> link_down(const std::string& user, const std::string& session_id);
  // Ends every link learned from NAS `nas` (RADIUS Accounting-On/Off).
  std::vector<queue::link_record> links_down_for_nas(const std::string& nas);

  std::vector<queue::link_record> links() const;
  // Grows with every change of the links: a reader that waited (on the
  // store) can tell whether its view is still the latest.
  std::uint64_t generation() const noexcept { return generation_; }
  std::vector<queue::link_record> links_of(std::int64_t customer_id) const;
  const queue::link_record* find_link(const std::string& user) const;

 private:
  std::map<std::string, queue::link_record> links_;  // by user
  std::uint64_t generation_ = 0;
};

}  // namespace flushgate::gateway
