// pcap_frame_fuzz.cpp — libFuzzer target for linkmon::decode_frame.
//
// The first octet picks one of the supported link types, the rest is the
// captured frame. A decoded datagram's payload must lie inside the frame;
// anything else (a crash, a sanitizer report, an abort) is a finding.
#include "linkmon/pcap_sniffer.hpp"

#include <pcap/dlt.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static constexpr std::array<int, 7> link_types = {DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_RAW,
                                                    DLT_IPV4,   DLT_IPV6,      DLT_NULL};
  if (size == 0) return 0;
  const int link_type = link_types[data[0] % link_types.size()];
  const std::span<const std::uint8_t> frame(data + 1, size - 1);
  const auto d = flushgate::linkmon::decode_frame(link_type, frame);
  if (d) {
    const auto* begin = frame.data();
    const auto* end = frame.data() + frame.size();
    if (d->payload.data() < begin || d->payload.data() + d->payload.size() > end) std::abort();
    if (link_type == DLT_NULL) std::abort();  // not supported: must never decode
  }
  return 0;
}
