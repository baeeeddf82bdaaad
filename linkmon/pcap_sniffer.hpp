// pcap_sniffer.hpp — link events from RADIUS accounting seen on the wire.
//
// Purpose: where flushgate cannot be a RADIUS accounting server itself, it
// watches the traffic between the NASes and the ISP's RADIUS server with
// libpcap — live on an interface, or once through a capture file — and turns
// each Accounting-Request into the same link_event the radius_listener makes
// (source "pcap"). By default a request counts only once the server's matching
// Accounting-Response has been seen (addresses and ports swapped, same
// Identifier, valid Response Authenticator, RFC 2866 §3): a server answers
// only what it recorded (§4.1), so an unanswered or forged request changes
// nothing (PROTOCOLS.md §10 item 13). `require_response = false` acts on
// authenticated requests alone.
//
// decode_frame() is the pure part: link-layer frame in, UDP datagram out, for
// Ethernet (DLT_EN10MB, with at most one 802.1Q/802.1ad tag), Linux cooked
// capture v1 and v2 (DLT_LINUX_SLL, DLT_LINUX_SLL2 — "any" device), and raw IP
// (DLT_RAW, DLT_IPV4, DLT_IPV6); IPv4 and IPv6 (hop-by-hop, routing and
// destination-options headers skipped) with UDP.
//
// Security: frames are untrusted; every read is bounds-checked against the
// captured length, and a datagram whose UDP length exceeds what was captured
// is dropped. Requests must come from a configured NAS (nas_table, by source
// address) and carry a valid Request Authenticator; responses are checked
// with the secret of the NAS they go to. Pending requests are kept in a table
// of at most `max_pending` entries for `pending_timeout` (by capture time);
// when full the oldest is forgotten. A retransmitted request (same addresses,
// ports, Identifier and authenticator) or a second copy of a frame (the "any"
// device can show a loopback packet twice) is acted on at most once.
//
// Threading: live capture does not block the executor: the pcap handle is
// non-blocking and its selectable descriptor is waited on with Asio; each
// ready batch (at most 256 frames) is decoded and its events are handed to
// the handler one at a time, in capture order, before the next batch is read
// (frames meanwhile wait in the kernel's capture buffer). Offline mode reads
// the whole file in batches, yielding to the executor between them. All
// members run on the constructor's executor, which must not run handlers
// concurrently; stop() and counters() may be called from any thread.
//
// Errors: open() throws std::runtime_error (a start-up failure) when the
// interface or file cannot be opened, the filter does not compile, or the
// link type is not supported; the message is libpcap's. A handler that
// returns false is counted; the sniffer cannot make the NAS retransmit.
//
// Limitations: IP fragments are not reassembled (RADIUS over a 1500-octet MTU
// fits unless a packet carries large attributes); UDP checksums are not
// checked (captures on the sending host carry offloaded, unfilled checksums).
//
// See also: radius_packet.hpp, radius_listener.hpp, RFC 2866 §3,
// pcap-linktype(7), PROTOCOLS.md §10 item 13, TESTBED.md "Captures".
#pragma once

#include "linkmon/link_event.hpp"
#include "linkmon/nas_table.hpp"
#include "linkmon/radius_listener.hpp"
#include "linkmon/radius_packet.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

struct pcap;
struct pcap_pkthdr;

namespace flushgate::linkmon {

// A UDP datagram found in a captured frame; payload points into the frame.
struct udp_datagram {
  boost::asio::ip::address source_address;
  boost::asio::ip::address destination_address;
  std::uint16_t source_port = 0;
  std::uint16_t destination_port = 0;
  std::span<const std::uint8_t> payload;
};

// The UDP datagram in a frame of libpcap link type `link_type` (a DLT_ value), or nullopt.
std::optional<udp_datagram> decode_frame(int link_type, std::span<const std::uint8_t> frame);

// True when decode_frame() understands `link_type`.
bool is_supported_link_type(int link_type) noexcept;

struct pcap_sniffer_options {
  std::string interface;  // live capture on this interface ("any", "eth0"), or
  std::string file;       // read this capture file once; exactly one of the two is set
  std::string filter = "udp port 1813 or udp port 1646";  // BPF, both directions; "" = all
  bool match_vlan = true;                            // on Ethernet, F becomes "F or (vlan and (F))": one tag
  nas_table clients;                                 // NAS addresses and secrets
  bool require_response = true;                      // act only once the server's valid response was seen
  std::size_t max_pending = 4096;                    // requests awaiting a response
  std::chrono::milliseconds pending_timeout{30000};  // by capture time
};

// A snapshot of the sniffer's counters.
struct pcap_counters {
  std::uint64_t frames = 0;               // frames read
  std::uint64_t undecodable = 0;          // not IPv4/IPv6 + UDP, truncated, fragments
  std::uint64_t requests = 0;             // Accounting-Requests seen
  std::uint64_t responses = 0;            // Accounting-Responses seen
  std::uint64_t other_codes = 0;          // other RADIUS codes (Access-*, CoA, ...)
  std::uint64_t unknown_nas = 0;          // request from / response to no configured NAS
  std::uint64_t bad_authenticator = 0;    // request with a wrong Request Authenticator
  std::uint64_t malformed = 0;            // request failing any other radius_errc check
  std::uint64_t bad_responses = 0;        // response whose authenticator does not match
  std::uint64_t unmatched_responses = 0;  // response to no pending request
  std::uint64_t duplicates = 0;           // retransmitted or twice-captured packets
  std::uint64_t expired = 0;              // requests never answered within pending_timeout
  std::uint64_t evicted = 0;              // pending requests forgotten because the table was full
  std::uint64_t events = 0;               // events handed to the handler
  std::uint64_t handler_failures = 0;     // the handler returned false or threw
};

class pcap_sniffer {
 public:
  // Stores the configuration; nothing is opened until open().
  pcap_sniffer(boost::asio::any_io_executor ex, pcap_sniffer_options options, link_event_handler handler);
  // Closes the capture.
  ~pcap_sniffer();
  pcap_sniffer(const pcap_sniffer&) = delete;
  pcap_sniffer& operator=(const pcap_sniffer&) = delete;

  // Opens the interface or file and sets the filter; throws std::runtime_error on failure.
  void open();
  // The link type (DLT_ value) of the open capture.
  int link_type() const noexcept { return link_type_; }
  // Live: captures until stop(). Offline: reads the whole file. Returns after the last event was handled.
  boost::asio::awaitable<void> run();
  // Ends run() after the batch being handled; safe from any thread.
  void stop();
  // The counters so far.
  pcap_counters counters() const;

 private:
  // (NAS address, NAS port, server address, server port, Identifier).
  using pending_key = std::tuple<boost::asio::ip::address, std::uint16_t, boost::asio::ip::address,
                                 std::uint16_t, std::uint8_t>;
  struct pending_entry {
    accounting_request request;
    std::string nas_address;  // the request's source, the NAS key of last resort
    std::int64_t expires_ms = 0;
    bool acted = false;
  };
  struct atomic_counters {
    std::atomic<std::uint64_t> frames{0}, undecodable{0}, requests{0}, responses{0}, other_codes{0},
        unknown_nas{0}, bad_authenticator{0}, malformed{0}, bad_responses{0}, unmatched_responses{0},
        duplicates{0}, expired{0}, evicted{0}, events{0}, handler_failures{0};
  };

  static void on_frame(unsigned char* self, const pcap_pkthdr* header, const unsigned char* bytes);
  void handle_frame(const pcap_pkthdr& header, std::span<const std::uint8_t> frame);
  void handle_request(const udp_datagram& d, std::int64_t now_ms);
  void handle_response(const udp_datagram& d, std::int64_t now_ms);
  void act(const pending_entry& e);
  void expire_pending(std::int64_t now_ms);
  boost::asio::awaitable<void> deliver_events();
  boost::asio::awaitable<void> run_live();
  boost::asio::awaitable<void> run_offline();

  boost::asio::any_io_executor ex_;
  pcap_sniffer_options options_;
  link_event_handler handler_;
  pcap* handle_ = nullptr;
  int link_type_ = -1;
  std::optional<boost::asio::posix::stream_descriptor> descriptor_;  // live mode; not owned
  boost::asio::steady_timer poll_timer_;
  std::map<pending_key, pending_entry> pending_;
  std::deque<std::pair<std::int64_t, pending_key>> expiry_;  // insertion order
  std::vector<link_event> ready_;                            // events of the current batch, in capture order
  std::atomic<bool> stopped_{false};
  atomic_counters counters_;
};

}  // namespace flushgate::linkmon
