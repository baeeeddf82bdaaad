// mx_resolver.hpp — asynchronous MX and address resolution on c-ares.
//
// Purpose: turns a recipient domain into the ordered list of hosts and
// addresses the SMTP client tries (RFC 5321 §5.1), and resolves the host of a
// configured route ("host[:port]"). MX records are sorted by preference with
// equal preferences shuffled; each host keeps its addresses in the order the
// resolver gave them; no MX means the implicit MX (the domain itself, pref 0);
// a null MX (RFC 7505) means no mail; when the gateway finds itself in the
// list — by name (smtp_self_names), by a bound listener address, or by an
// address inside smtp_self_addresses (NAT, listeners on 0.0.0.0) — it keeps
// only strictly better preferences.
//
// Design: c-ares runs inside Asio on the constructor's executor (through a
// strand), never in a thread of its own. c-ares reports the sockets it wants
// watched through its sock_state_cb; each becomes a non-owning
// posix::stream_descriptor waiting for read/write readiness, which then calls
// ares_process_fd; one steady_timer follows ares_timeout for retransmissions.
// Nothing blocks the network thread once constructed, there is no extra
// thread to start, stop and synchronise with, and all c-ares calls are
// serialised by the strand. (A dedicated c-ares thread would need its own
// wake-up pipe and a hand-off for every query and result.)
//
// Security: every answer is untrusted. At most `max_mx_records` MX records
// (the best ones) and `max_addresses_per_host` addresses per host are used;
// MX target names that are not letter-digit-hyphen host names are dropped;
// each round of queries is cut off after timeout × tries × servers even if
// c-ares would keep retrying (it doubles later timeouts); resolve() makes at
// most two rounds (MX, then all A/AAAA in parallel), resolve_host() one.
// Queries go only to the configured servers; /etc/hosts is never read.
//
// Errors (mx_errc, category "flushgate.mx"):
//   temporary        SERVFAIL, REFUSED, timeout, bad answer: retry later
//                    (also when no host has an address and a lookup failed
//                    temporarily; hosts that do resolve are returned)
//   nxdomain         the domain does not exist, or its name cannot exist
//                    (empty label, longer than 253 octets, not LDH): permanent
//   null_mx          RFC 7505 "MX 0 .": the domain accepts no mail (5.1.10)
//   no_usable_hosts  MX records (or the implicit MX) exist but no host has an
//                    address
//   self_only        the gateway is the best MX left: return as
//                    undeliverable (5.4.6), RFC 5321 §5.1
//
// Threading and lifetime: resolve()/resolve_host() may be awaited from any
// executor; results are delivered on the caller's executor. The resolver
// must be destroyed on its executor's thread (or after its io_context
// stopped) and before its io_context; destroying it completes pending calls
// with `temporary`. Pending calls ignore cancellation and finish within the
// time bound above.
//
// Limitations: no DNSSEC/DANE, no answer cache (c-ares 1.18 has none; put a
// caching resolver in `servers`), names must already be A-labels (IDNA is
// the caller's), an MX target's CNAME is followed but logged.
//
// See also: RFC 5321 §5.1, RFC 7505, RFC 2181 §10.3, RFC 1035 §3.3.9.
// Wing: gateway/dns/ answers DNS questions (MX resolver, answer reading, the
// DNS doctor). It includes neither gateway/inbound/ nor gateway/flush/ and
// uses only core/ and queue/ (flushgate::gateway_dns links nothing else).
#pragma once

#include "core/ip_network.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace flushgate::gateway {

enum class mx_errc {
  ok = 0,
  temporary,        // SERVFAIL, timeout, refused: retry later
  nxdomain,         // no such domain: permanent
  null_mx,          // RFC 7505: no mail, DSN 5.1.10
  no_usable_hosts,  // MX records exist but none resolves
  self_only,        // we are the best MX: return as undeliverable, 5.4.6
};

const boost::system::error_category& mx_category() noexcept;
boost::system::error_code make_error_code(mx_errc e) noexcept;

// One host to try, with its addresses in resolver order.
struct mx_target {
  std::string host;  // lower case, no trailing dot
  int preference = 0;
  std::vector<boost::asio::ip::address> addresses;
};

struct mx_options {
  std::vector<std::string> servers;  // "127.0.0.1:5353", "[::1]:53"; empty = resolv.conf
  std::vector<std::string> self_names;  // our own host names, lower case
  std::vector<boost::asio::ip::address> self_addresses;  // the bound listeners' addresses
  // smtp_self_addresses: networks holding our public addresses (NAT, 0.0.0.0).
  std::vector<core::ip_network> self_networks;
  std::chrono::milliseconds timeout{5000};  // per try and server (c-ares timeout)
  int tries = 2;                            // tries per server
  std::size_t max_mx_records = 50;          // the best ones are kept
  std::size_t max_addresses_per_host = 10;
  bool prefer_ipv6 = false;  // AAAA addresses before A addresses of a host
  std::uint64_t shuffle_seed = 0;  // equal-preference shuffle; 0 = std::random_device

  // True when one of `addresses` is this gateway: a bound listener address,
  // or one inside self_networks.
  bool holds_self_address(const std::vector<boost::asio::ip::address>& addresses) const;
};

// What reverse_name() gives when there is no name to give.
inline constexpr const char* unavailable_name = "[UNAVAILABLE]";
inline constexpr const char* tempunavail_name = "[TEMPUNAVAIL]";

class mx_resolver {
 public:
  // Sets up c-ares (reads resolv.conf); throws std::invalid_argument / std::runtime_error.
  mx_resolver(boost::asio::any_io_executor ex, mx_options opts);
  // Completes pending calls with `temporary`; call on the executor's thread.
  ~mx_resolver();
  mx_resolver(const mx_resolver&) = delete;
  mx_resolver& operator=(const mx_resolver&) = delete;

  // Hosts to try for `domain`, best first, or an mx_errc (RFC 5321 §5.1, see above).
  boost::asio::awaitable<boost::system::result<std::vector<mx_target>>> resolve(
      std::string domain);

  // A/AAAA of one host (IP literals, also "[v6]", without a query), or an mx_errc.
  boost::asio::awaitable<boost::system::result<std::vector<boost::asio::ip::address>>>
  resolve_host(std::string host);

  // The client's name as Postfix's smtpd would give it (XFORWARD NAME): the
  // PTR name of `client` when one of that name's addresses is `client`
  // again (forward-confirmed), lower case, no trailing dot; else
  // unavailable_name (no PTR, or it does not confirm) or tempunavail_name
  // (a lookup failed or ran out of time). Bounded like resolve(): two rounds.
  // A loopback client is asked only of `servers`: with resolv.conf's servers
  // it is unavailable_name at once, without a query.
  boost::asio::awaitable<std::string> reverse_name(boost::asio::ip::address client);

 private:
  class impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace flushgate::gateway

template <>
struct boost::system::is_error_code_enum<flushgate::gateway::mx_errc> : std::true_type {};
