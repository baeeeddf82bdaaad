// queue_id.cpp — see queue_id.hpp.
#include "queue/queue_id.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>

namespace flushgate::queue {

namespace {

// Crockford's base32 alphabet: digits and upper-case letters without I, L, O
// and U, so that an id read aloud or retyped is not misread. Its characters
// are in ASCII order, which makes string order equal numeric order.
constexpr std::string_view alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr int sequence_bits = 8;
constexpr int id_bits = 60;  // 12 characters of 5 bits

// The last value handed out; every new value is strictly greater.
std::atomic<std::uint64_t> last_value{0};

std::uint64_t now_microseconds() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(now).count());
}

std::string encode(std::uint64_t value) {
  std::string id(queue_id_length, '0');
  for (std::size_t i = queue_id_length; i-- > 0;) {
    id[i] = alphabet[value & 31];
    value >>= 5;
  }
  return id;
}

}  // namespace

std::string make_queue_id() {
  // Time in the high bits, a sequence in the low 8: more than 256 ids in one
  // microsecond borrow from the next microsecond, which keeps the ids unique
  // and increasing without ever waiting.
  constexpr std::uint64_t mask = (std::uint64_t{1} << id_bits) - 1;
  std::uint64_t candidate = (now_microseconds() << sequence_bits) & mask;
  std::uint64_t previous = last_value.load(std::memory_order_relaxed);
  std::uint64_t value = 0;
  do {
    value = candidate > previous ? candidate : previous + 1;
  } while (!last_value.compare_exchange_weak(previous, value, std::memory_order_relaxed));
  return encode(value);
}

// The same time bits as make_queue_id; the low 8 bits are the node, so a
// node steps by 256 (one microsecond) and borrows from the future when it
// makes more than one id per microsecond.
std::string node_queue_ids::next() {
  constexpr std::uint64_t mask = (std::uint64_t{1} << id_bits) - 1;
  constexpr std::uint64_t step = std::uint64_t{1} << sequence_bits;
  const std::uint64_t candidate = ((now_microseconds() << sequence_bits) & mask) | node_;
  std::uint64_t previous = last_.load(std::memory_order_relaxed);
  std::uint64_t value = 0;
  do {
    value = candidate > previous ? candidate : previous + step;
  } while (!last_.compare_exchange_weak(previous, value, std::memory_order_relaxed));
  return encode(value);
}

// The floor takes this node's bits in the same microsecond: next() then
// steps past the given id even when its node bits are greater than ours.
void node_queue_ids::start_after(std::string_view qid) noexcept {
  if (!is_queue_id(qid)) return;
  std::uint64_t value = 0;
  for (char ch : qid) value = (value << 5) | alphabet.find(ch);
  std::uint64_t floor = (value & ~std::uint64_t{0xff}) | node_;
  if (floor < value) floor += std::uint64_t{1} << sequence_bits;
  std::uint64_t previous = last_.load(std::memory_order_relaxed);
  while (previous < floor &&
         !last_.compare_exchange_weak(previous, floor, std::memory_order_relaxed)) {
  }
}

std::uint8_t queue_id_node(std::string_view s) noexcept {
  // The last two characters hold the low 10 bits; the node is the low 8.
  if (s.size() < 2) return 0;
  const auto hi = alphabet.find(s[s.size() - 2]);
  const auto lo = alphabet.find(s[s.size() - 1]);
  if (hi == std::string_view::npos || lo == std::string_view::npos) return 0;
  return static_cast<std::uint8_t>(((hi << 5) | lo) & 0xff);
}

bool is_queue_id(std::string_view s) noexcept {
  if (s.size() != queue_id_length) return false;
  for (char ch : s) {
    if (alphabet.find(ch) == std::string_view::npos) return false;
  }
  return true;
}

}  // namespace flushgate::queue
