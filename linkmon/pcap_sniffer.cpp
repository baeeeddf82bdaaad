// pcap_sniffer.cpp — see pcap_sniffer.hpp.
#include "linkmon/pcap_sniffer.hpp"

#include "core/log.hpp"

#include <pcap/pcap.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <exception>
#include <stdexcept>

namespace flushgate::linkmon {

namespace asio = boost::asio;
namespace ip = boost::asio::ip;

namespace {

constexpr std::uint16_t ethertype_ipv4 = 0x0800;
constexpr std::uint16_t ethertype_ipv6 = 0x86DD;
constexpr std::uint16_t ethertype_vlan = 0x8100;  // IEEE 802.1Q
constexpr std::uint16_t ethertype_qinq = 0x88A8;  // IEEE 802.1ad outer tag
constexpr std::uint8_t ip_proto_udp = 17;
constexpr int frames_per_batch = 256;
constexpr int snapshot_length = 65535;
constexpr int capture_timeout_ms = 100;

std::uint16_t read_u16(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

// UDP header (RFC 768): the datagram must be wholly inside `packet`.
std::optional<udp_datagram> decode_udp(std::span<const std::uint8_t> packet, ip::address source,
                                       ip::address destination) {
  if (packet.size() < 8) return std::nullopt;
  const std::size_t length = read_u16(packet, 4);
  if (length < 8 || length > packet.size()) return std::nullopt;
  udp_datagram d;
  d.source_address = source;
  d.destination_address = destination;
  d.source_port = read_u16(packet, 0);
  d.destination_port = read_u16(packet, 2);
  d.payload = packet.subspan(8, length - 8);
  return d;
}

// IPv4 (RFC 791): no options parsing needed beyond IHL; fragments are skipped.
std::optional<udp_datagram> decode_ipv4(std::span<const std::uint8_t> b) {
  if (b.size() < 20 || (b[0] >> 4) != 4) return std::nullopt;
  const std::size_t header_length = std::size_t{b[0] & 0x0fu} * 4;
  const std::size_t total_length = read_u16(b, 2);
  if (header_length < 20 || total_length < header_length || total_length > b.size()) return std::nullopt;
  if ((read_u16(b, 6) & 0x3fff) != 0) return std::nullopt;  // MF set or offset: a fragment
  if (b[9] != ip_proto_udp) return std::nullopt;
  ip::address_v4::bytes_type src{}, dst{};
  std::copy_n(b.begin() + 12, 4, src.begin());
  std::copy_n(b.begin() + 16, 4, dst.begin());
  // Octets past Total Length are link-layer padding.
  return decode_udp(b.subspan(header_length, total_length - header_length), ip::address_v4(src),
                    ip::address_v4(dst));
}

// IPv6 (RFC 8200): skips hop-by-hop (0), routing (43) and destination-options
// (60) headers; a fragment header (44) or anything else but UDP ends the walk.
std::optional<udp_datagram> decode_ipv6(std::span<const std::uint8_t> b) {
  if (b.size() < 40 || (b[0] >> 4) != 6) return std::nullopt;
  const std::size_t payload_length = read_u16(b, 4);
  if (payload_length == 0 || 40 + payload_length > b.size()) return std::nullopt;  // jumbo or truncated
  ip::address_v6::bytes_type src{}, dst{};
  std::copy_n(b.begin() + 8, 16, src.begin());
  std::copy_n(b.begin() + 24, 16, dst.begin());
  auto rest = b.subspan(40, payload_length);
  std::uint8_t next = b[6];
  for (int i = 0; i < 8 && (next == 0 || next == 43 || next == 60); ++i) {
    if (rest.size() < 8) return std::nullopt;
    const std::size_t len = (std::size_t{rest[1]} + 1) * 8;
    if (len > rest.size()) return std::nullopt;
    next = rest[0];
    rest = rest.subspan(len);
  }
  if (next != ip_proto_udp) return std::nullopt;
  return decode_udp(rest, ip::address_v6(src), ip::address_v6(dst));
}

std::optional<udp_datagram> decode_by_ethertype(std::uint16_t type, std::span<const std::uint8_t> b) {
  if (type == ethertype_ipv4) return decode_ipv4(b);
  if (type == ethertype_ipv6) return decode_ipv6(b);
  return std::nullopt;
}

std::optional<udp_datagram> decode_raw_ip(std::span<const std::uint8_t> b) {
  if (b.empty()) return std::nullopt;
  if ((b[0] >> 4) == 4) return decode_ipv4(b);
  if ((b[0] >> 4) == 6) return decode_ipv6(b);
  return std::nullopt;
}

std::int64_t capture_time_ms(const pcap_pkthdr& h) {
  return static_cast<std::int64_t>(h.ts.tv_sec) * 1000 + static_cast<std::int64_t>(h.ts.tv_usec) / 1000;
}

}  // namespace

bool is_supported_link_type(int link_type) noexcept {
  switch (link_type) {
    case DLT_EN10MB:
    case DLT_LINUX_SLL:
    case DLT_LINUX_SLL2:
    case DLT_RAW:
    case DLT_IPV4:
    case DLT_IPV6: return true;
    default: return false;
  }
}

std::optional<udp_datagram> decode_frame(int link_type, std::span<const std::uint8_t> frame) {
  switch (link_type) {
    case DLT_EN10MB: {
      // Destination(6) Source(6) EtherType(2), or one tag: TPID(2) TCI(2) EtherType(2).
      if (frame.size() < 14) return std::nullopt;
      std::uint16_t type = read_u16(frame, 12);
      std::size_t offset = 14;
      if (type == ethertype_vlan || type == ethertype_qinq) {
        if (frame.size() < 18) return std::nullopt;
        type = read_u16(frame, 16);
        offset = 18;
      }
      return decode_by_ethertype(type, frame.subspan(offset));
    }
    case DLT_LINUX_SLL:
      // Packet type(2) ARPHRD(2) address length(2) address(8) protocol(2).
      if (frame.size() < 16) return std::nullopt;
      return decode_by_ethertype(read_u16(frame, 14), frame.subspan(16));
    case DLT_LINUX_SLL2:
      // Protocol(2) reserved(2) interface index(4) ARPHRD(2) packet type(1)
      // address length(1) address(8).
      if (frame.size() < 20) return std::nullopt;
      return decode_by_ethertype(read_u16(frame, 0), frame.subspan(20));
    case DLT_RAW: return decode_raw_ip(frame);
    case DLT_IPV4: return decode_ipv4(frame);
    case DLT_IPV6: return decode_ipv6(frame);
    default: return std::nullopt;
  }
}

pcap_sniffer::pcap_sniffer(asio::any_io_executor ex, pcap_sniffer_options options, link_event_handler handler)
    : ex_(std::move(ex)), options_(std::move(options)), handler_(std::move(handler)), poll_timer_(ex_) {}

pcap_sniffer::~pcap_sniffer() {
  if (descriptor_) descriptor_->release();  // the descriptor belongs to libpcap
  if (handle_ != nullptr) pcap_close(handle_);
}

void pcap_sniffer::open() {
  if (options_.interface.empty() == options_.file.empty()) {
    throw std::runtime_error("pcap: set exactly one of interface and file");
  }
  std::array<char, PCAP_ERRBUF_SIZE> errbuf{};
  if (!options_.file.empty()) {
    handle_ = pcap_open_offline(options_.file.c_str(), errbuf.data());
    if (handle_ == nullptr) throw std::runtime_error("pcap: " + options_.file + ": " + errbuf.data());
  } else {
    handle_ = pcap_create(options_.interface.c_str(), errbuf.data());
    if (handle_ == nullptr) throw std::runtime_error("pcap: " + options_.interface + ": " + errbuf.data());
    pcap_set_snaplen(handle_, snapshot_length);
    pcap_set_promisc(handle_, 0);
    pcap_set_timeout(handle_, capture_timeout_ms);
    pcap_set_immediate_mode(handle_, 1);  // hand frames over as they come, not per buffer block
    const int rc = pcap_activate(handle_);
    if (rc < 0) {
      throw std::runtime_error("pcap: " + options_.interface + ": " + pcap_statustostr(rc) + ": " +
                               pcap_geterr(handle_));
    }
    if (rc > 0) core::log_warning("pcap: {}: {}", options_.interface, pcap_statustostr(rc));
    if (pcap_setnonblock(handle_, 1, errbuf.data()) != 0) {
      throw std::runtime_error("pcap: " + options_.interface + ": " + errbuf.data());
    }
    const int fd = pcap_get_selectable_fd(handle_);
    if (fd < 0) throw std::runtime_error("pcap: " + options_.interface + ": no selectable descriptor");
    descriptor_.emplace(ex_, fd);
  }
  link_type_ = pcap_datalink(handle_);
  if (!is_supported_link_type(link_type_)) {
    const char* name = pcap_datalink_val_to_name(link_type_);
    throw std::runtime_error("pcap: link type " + std::string(name ? name : std::to_string(link_type_)) +
                             " is not supported");
  }
  if (options_.filter.empty()) return;  // everything reaches the decoder
  // A BPF expression only looks past a VLAN tag after the "vlan" keyword, and
  // "vlan" exists only for Ethernet-like link types (pcap-filter(7)).
  std::string filter = options_.filter;
  if (options_.match_vlan && link_type_ == DLT_EN10MB) filter = filter + " or (vlan and (" + filter + "))";
  bpf_program program{};
  if (pcap_compile(handle_, &program, filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
    throw std::runtime_error("pcap: filter \"" + filter + "\": " + pcap_geterr(handle_));
  }
  const int rc = pcap_setfilter(handle_, &program);
  pcap_freecode(&program);
  if (rc != 0)
    throw std::runtime_error("pcap: setting the filter failed: " + std::string(pcap_geterr(handle_)));
}

void pcap_sniffer::stop() {
  stopped_ = true;
  asio::post(ex_, [this] {
    if (descriptor_) descriptor_->cancel();
    poll_timer_.cancel();
    if (handle_ != nullptr) pcap_breakloop(handle_);
  });
}

pcap_counters pcap_sniffer::counters() const {
  pcap_counters c;
  c.frames = counters_.frames.load();
  c.undecodable = counters_.undecodable.load();
  c.requests = counters_.requests.load();
  c.responses = counters_.responses.load();
  c.other_codes = counters_.other_codes.load();
  c.unknown_nas = counters_.unknown_nas.load();
  c.bad_authenticator = counters_.bad_authenticator.load();
  c.malformed = counters_.malformed.load();
  c.bad_responses = counters_.bad_responses.load();
  c.unmatched_responses = counters_.unmatched_responses.load();
  c.duplicates = counters_.duplicates.load();
  c.expired = counters_.expired.load();
  c.evicted = counters_.evicted.load();
  c.events = counters_.events.load();
  c.handler_failures = counters_.handler_failures.load();
  return c;
}

asio::awaitable<void> pcap_sniffer::run() {
  if (handle_ == nullptr) throw std::logic_error("pcap_sniffer::run() before open()");
  if (descriptor_) {
    co_await run_live();
  } else {
    co_await run_offline();
  }
}

asio::awaitable<void> pcap_sniffer::run_offline() {
  while (!stopped_) {
    const int n = pcap_dispatch(handle_, frames_per_batch, &pcap_sniffer::on_frame,
                                reinterpret_cast<unsigned char*>(this));
    co_await deliver_events();
    if (n == 0) break;  // end of file
    if (n == PCAP_ERROR) {
      core::log_error("pcap: reading {} failed: {}", options_.file, pcap_geterr(handle_));
      break;
    }
    if (n == PCAP_ERROR_BREAK) break;
    co_await asio::post(ex_, asio::use_awaitable);  // let other work run between batches
  }
}

asio::awaitable<void> pcap_sniffer::run_live() {
  using namespace asio::experimental::awaitable_operators;
  while (!stopped_) {
    // Some capture mechanisms need a periodic pcap_dispatch even without a
    // readable descriptor (pcap_get_required_select_timeout(3PCAP)).
    if (const timeval* t = pcap_get_required_select_timeout(handle_)) {
      poll_timer_.expires_after(std::chrono::seconds(t->tv_sec) + std::chrono::microseconds(t->tv_usec));
      co_await (descriptor_->async_wait(asio::posix::descriptor_base::wait_read,
                                        asio::as_tuple(asio::use_awaitable)) ||
                poll_timer_.async_wait(asio::as_tuple(asio::use_awaitable)));
    } else {
      auto [ec] = co_await descriptor_->async_wait(asio::posix::descriptor_base::wait_read,
                                                   asio::as_tuple(asio::use_awaitable));
      if (ec && ec != asio::error::operation_aborted) {
        core::log_error("pcap: waiting on {} failed: {}", options_.interface, ec.message());
        break;
      }
    }
    if (stopped_) break;
    // Non-blocking: takes what is there, at most one batch.
    const int n = pcap_dispatch(handle_, frames_per_batch, &pcap_sniffer::on_frame,
                                reinterpret_cast<unsigned char*>(this));
    co_await deliver_events();
    if (n == PCAP_ERROR) {
      core::log_error("pcap: capturing on {} failed: {}", options_.interface, pcap_geterr(handle_));
      break;
    }
  }
}

asio::awaitable<void> pcap_sniffer::deliver_events() {
  // Hand the batch's events over one at a time, in capture order.
  auto batch = std::move(ready_);
  ready_.clear();
  for (const auto& e : batch) {
    ++counters_.events;
    bool ok = false;
    try {
      ok = co_await handler_(e);
    } catch (const std::exception& ex) {
      core::log_error("pcap: link event handler failed for user {}: {}", e.user, ex.what());
    }
    if (!ok) {
      ++counters_.handler_failures;
      core::log_error("pcap: link event for user {} (session {}) was not recorded", e.user, e.session_id);
    }
  }
}

void pcap_sniffer::on_frame(unsigned char* self, const pcap_pkthdr* header, const unsigned char* bytes) {
  reinterpret_cast<pcap_sniffer*>(self)->handle_frame(*header,
                                                      std::span<const std::uint8_t>(bytes, header->caplen));
}

void pcap_sniffer::handle_frame(const pcap_pkthdr& header, std::span<const std::uint8_t> frame) {
  ++counters_.frames;
  const auto d = decode_frame(link_type_, frame);
  if (!d || d->payload.empty()) {
    ++counters_.undecodable;
    return;
  }
  const auto now = capture_time_ms(header);
  expire_pending(now);
  switch (d->payload[0]) {
    case radius_accounting_request: handle_request(*d, now); break;
    case radius_accounting_response: handle_response(*d, now); break;
    default: ++counters_.other_codes; break;
  }
}

void pcap_sniffer::handle_request(const udp_datagram& d, std::int64_t now_ms) {
  ++counters_.requests;
  const nas_client* nas = options_.clients.find(d.source_address);
  if (nas == nullptr) {
    ++counters_.unknown_nas;
    return;
  }
  auto parsed = parse_accounting_request(d.payload, nas->secret);
  if (!parsed) {
    if (parsed.error() == radius_errc::bad_authenticator) {
      ++counters_.bad_authenticator;
    } else {
      ++counters_.malformed;
    }
    core::log_debug("pcap: request from NAS {} ({}) ignored: {}", nas->name, d.source_address.to_string(),
                    parsed.error().message());
    return;
  }
  const pending_key key{d.source_address, d.source_port, d.destination_address, d.destination_port,
                        parsed->identifier};
  if (auto it = pending_.find(key); it != pending_.end()) {
    if (it->second.request.authenticator == parsed->authenticator) {
      ++counters_.duplicates;  // a retransmission, or the same frame seen twice
      return;
    }
    pending_.erase(it);  // a new request under a reused Identifier
  }
  while (pending_.size() >= options_.max_pending && !expiry_.empty()) {
    auto [when, old] = expiry_.front();
    expiry_.pop_front();
    if (auto it = pending_.find(old); it != pending_.end() && it->second.expires_ms == when) {
      if (!it->second.acted) ++counters_.evicted;
      pending_.erase(it);
    }
  }
  const auto expires = now_ms + options_.pending_timeout.count();
  auto& entry = pending_[key];
  entry = pending_entry{std::move(*parsed), d.source_address.to_string(), expires, false};
  expiry_.emplace_back(expires, key);
  if (!options_.require_response) {
    act(entry);
    entry.acted = true;  // kept so that a retransmission is not acted on again
  }
}

void pcap_sniffer::handle_response(const udp_datagram& d, std::int64_t now_ms) {
  ++counters_.responses;
  (void)now_ms;
  if (d.payload.size() < radius_header_size) {
    ++counters_.bad_responses;
    return;
  }
  // The request went NAS → server; its answer comes back with addresses and
  // ports swapped (RFC 2866 §3).
  const pending_key key{d.destination_address, d.destination_port, d.source_address, d.source_port,
                        d.payload[1]};
  auto it = pending_.find(key);
  if (it == pending_.end()) {
    ++counters_.unmatched_responses;
    return;
  }
  const nas_client* nas = options_.clients.find(d.destination_address);
  if (nas == nullptr) {
    ++counters_.unknown_nas;
    return;
  }
  auto& entry = it->second;
  if (auto ec = verify_accounting_response(d.payload, entry.request.identifier, entry.request.authenticator,
                                           nas->secret)) {
    // Not the server's answer (or not to this request): keep waiting for it.
    ++counters_.bad_responses;
    core::log_debug("pcap: response to NAS {} ignored: {}", nas->name, ec.message());
    return;
  }
  if (entry.acted) {
    ++counters_.duplicates;  // the answer to a retransmission, or a second copy
    return;
  }
  act(entry);
  entry.acted = true;
}

void pcap_sniffer::act(const pending_entry& e) {
  if (auto event = to_link_event(e.request, e.nas_address, "pcap")) ready_.push_back(std::move(*event));
}

void pcap_sniffer::expire_pending(std::int64_t now_ms) {
  while (!expiry_.empty() && expiry_.front().first <= now_ms) {
    auto [when, key] = expiry_.front();
    expiry_.pop_front();
    if (auto it = pending_.find(key); it != pending_.end() && it->second.expires_ms == when) {
      if (!it->second.acted) ++counters_.expired;
      pending_.erase(it);
    }
  }
}

}  // namespace flushgate::linkmon
