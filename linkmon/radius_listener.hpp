// radius_listener.hpp — the RADIUS accounting server: NASes tell flushgate
// when customers' sessions start, stop, or when the NAS itself restarts.
//
// Purpose: receives Accounting-Requests on the configured UDP addresses,
// IPv4 or IPv6, turns each into a link_event (Start/Interim-Update → up with
// the framed IPv4 address, the line's IPv6 address and the customer's IPv6
// prefix, whichever the NAS sent; Stop → down with the session id;
// Accounting-On/Off → nas_reset of the NAS keyed by NAS-IP-Address, else
// NAS-IPv6-Address, else NAS-Identifier, else the source address), hands it
// to the event handler, and sends the signed
// Accounting-Response only after the handler returned true — i.e. after the
// event was recorded durably (RFC 2866 §2, §4.1). When the handler returns
// false (or throws) nothing is sent and the NAS retransmits. Requests with
// other status types (tunnel, Failed, ...) and requests that carry no usable
// event (Start without User-Name, or with no address of either family) are
// answered at once without calling the handler. An IPv6 address is bound
// IPv6-only (IPV6_V6ONLY), as smtpd_listen does, so "0.0.0.0:1813" and
// "[::]:1813" can be configured side by side and every source is seen in its
// own family; an IPv6 NAS is matched against IPv6 entries of the NAS table.
//
// Security: datagrams are read into a 4097-octet buffer; a datagram longer
// than 4096 octets is cut by the kernel and dropped (RADIUS packets are at
// most 4095; RFC 2866 §3). Packets from a source that matches no NAS entry
// are dropped before they are parsed; packets whose Request Authenticator
// does not match the NAS's secret are dropped silently (RFC 5080 §2.3.3).
// Both are counted, and logged at warning level only when the count reaches a
// power of two, so a flood cannot flood the log. At most `max_in_flight`
// requests wait for or run in the handler; beyond that new requests are
// dropped (the NAS retransmits). Events of one user (one NAS for
// Accounting-On/Off) are handed to the handler one at a time, in arrival
// order, so a Stop never overtakes its Start. A retransmission — same
// receiving socket, source address and port, Identifier and Request
// Authenticator within `duplicate_window` — is answered from the cache and
// never applied twice; while the original is still being handled it is
// dropped. A new authenticator under the same key is a new request (RFC 5080
// §2.2.2, applied to accounting; PROTOCOLS.md §10 item 6).
//
// Errors: open() throws std::system_error when an address cannot be bound (a
// start-up failure). Per-packet problems are never errors to the caller: they
// are counted (radius_counters) and the packet is dropped.
//
// Threading: every member runs on the executor given to the constructor,
// which must not run handlers concurrently (one io_context thread, or a
// strand); stop() and counters() may be called from any thread. The listener
// must outlive run().
//
// See also: radius_packet.hpp, nas_table.hpp, RFC 2866, RFC 5080 §2.2.2,
// control/link_events.hpp (the handler the daemon installs).
#pragma once

#include "linkmon/link_event.hpp"
#include "linkmon/nas_table.hpp"
#include "linkmon/radius_packet.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

namespace flushgate::linkmon {

// Applies one event; returns true once it is recorded durably (or deliberately
// refused, e.g. an unknown user), false when it could not be recorded.
using link_event_handler = std::function<boost::asio::awaitable<bool>(const link_event&)>;

struct radius_listener_options {
  std::vector<boost::asio::ip::udp::endpoint> addresses;  // e.g. 0.0.0.0:1813, [::]:1813
  nas_table clients;                                      // who may send, with which secret
  std::size_t max_in_flight = 256;                        // requests queued for the handler
  std::chrono::milliseconds duplicate_window{30000};      // keep answers this long (5-30 s)
  std::size_t max_remembered = 16384;                     // duplicate-cache entries
};

// A snapshot of the listener's counters.
struct radius_counters {
  std::uint64_t received = 0;                   // datagrams read
  std::uint64_t answered = 0;                   // Accounting-Responses sent (resends included)
  std::uint64_t ignored = 0;                    // answered without calling the handler
  std::uint64_t dropped_unknown_source = 0;     // source matches no NAS entry
  std::uint64_t dropped_bad_authenticator = 0;  // Request Authenticator wrong
  std::uint64_t dropped_malformed = 0;          // any other radius_errc, or oversized
  std::uint64_t dropped_busy = 0;               // max_in_flight reached
  std::uint64_t duplicates = 0;                 // retransmissions seen
  std::uint64_t handler_failures = 0;           // handler returned false or threw
};

class radius_listener {
 public:
  // Stores the configuration; nothing is bound until open().
  radius_listener(boost::asio::any_io_executor ex, radius_listener_options options,
                  link_event_handler handler);
  radius_listener(const radius_listener&) = delete;
  radius_listener& operator=(const radius_listener&) = delete;

  // Binds every configured address; throws std::system_error on failure.
  void open();
  // The bound addresses (with the ports the kernel chose for port 0).
  std::vector<boost::asio::ip::udp::endpoint> local_endpoints() const;
  // Serves until stop(); returns once every receive loop and handler call has finished.
  boost::asio::awaitable<void> run();
  // Closes the sockets; handler calls already started still finish (they are durable steps).
  void stop();
  // The counters so far.
  radius_counters counters() const;

 private:
  using clock = std::chrono::steady_clock;
  // (receiving socket, source address, source port, Identifier): RFC 5080 §2.2.2.
  using cache_key = std::tuple<std::size_t, boost::asio::ip::udp::endpoint, std::uint8_t>;
  struct cache_entry {
    radius_authenticator authenticator{};
    std::vector<std::uint8_t> response;  // empty while the handler has not returned
    clock::time_point expires = clock::time_point::max();
  };
  struct job {
    cache_key key;
    radius_authenticator authenticator{};
    link_event event;
    std::vector<std::uint8_t> response;
  };
  struct atomic_counters {
    std::atomic<std::uint64_t> received{0}, answered{0}, ignored{0}, dropped_unknown_source{0},
        dropped_bad_authenticator{0}, dropped_malformed{0}, dropped_busy{0}, duplicates{0},
        handler_failures{0};
  };

  boost::asio::awaitable<void> receive_loop(std::size_t index);
  void handle_datagram(std::size_t index, const boost::asio::ip::udp::endpoint& peer,
                       std::span<const std::uint8_t> datagram);
  boost::asio::awaitable<void> process_lane(std::string lane);
  void finish(job& j, bool ok);
  void send(const cache_key& key, std::vector<std::uint8_t> response);
  void remember(const cache_key& key, const radius_authenticator& authenticator,
                std::vector<std::uint8_t> response);
  void expire_cache(clock::time_point now);
  void spawn(boost::asio::awaitable<void> task);

  boost::asio::any_io_executor ex_;
  radius_listener_options options_;
  link_event_handler handler_;
  std::vector<boost::asio::ip::udp::socket> sockets_;
  std::map<cache_key, cache_entry> cache_;
  std::deque<std::pair<clock::time_point, cache_key>> expiry_;  // answered entries, oldest first
  std::map<std::string, std::deque<job>> lanes_;                // per user / NAS; front is being handled
  std::size_t in_flight_ = 0;
  std::size_t active_ = 0;  // running receive loops and lanes
  bool stopped_ = false;
  boost::asio::steady_timer idle_;
  atomic_counters counters_;
};

}  // namespace flushgate::linkmon
