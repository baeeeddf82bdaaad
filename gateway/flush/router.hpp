// router.hpp — where a customer's mail goes right now.
//
// Purpose: a customer's route is derived, never typed in by hand
// (ARCHITECTURE.md, "Route"): its best live link — a DSL session before a
// dial-up one, the newest first — at the link's address and the customer's
// link port; else its primary route (HOST[:PORT], or "mx"); else hold. ODMR
// customers are served only over their own ATRN session. The router keeps the
// live links (one per link user) in memory; link sources (the CLI's
// `link up|down`, RADIUS, pcap) hand it events after the event is durable.
// Security: a link event names a user; the user must be registered on a
// customer, and when the customer pinned that user to an address range
// (allowed_net), an address outside it is refused (a forged RADIUS Start must
// not redirect a customer's mail).
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
  std::string host;          // link address or configured host; "" for mx
  std::uint16_t port = 25;
  std::string link_user;     // the link the route runs over, "" otherwise

  bool deliverable() const { return k == kind::link || k == kind::host || k == kind::mx; }
  // "link acme-dial [192.0.2.7]:25", "host mail.acme.test:25", "mx", "hold", "odmr"
  std::string describe() const;
  bool operator==(const route&) const = default;
};

enum class link_refusal { none, unknown_user, bad_address, outside_allowed_net };

class router {
 public:
  // The route of customer `c` given the live links.
  route route_for(const queue::customer& c) const;

  // Checks an up event before it is recorded: the user must belong to a
  // customer, the address must be an IP address inside the user's allowed_net.
  link_refusal check_link(const customer_directory& customers, const std::string& user,
                          const std::string& address, const queue::link_user** user_out,
                          const customer_entry** owner_out) const;

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
