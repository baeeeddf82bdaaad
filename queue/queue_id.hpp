// queue_id.hpp — queue ids: the short name of one queued message.
//
// Purpose: every message the gateway accepts gets a queue id, shown in the
// 250 reply, in every log line about it and by the queue tools. An id is 12
// characters of Crockford base32 (0-9, A-Z without I, L, O, U), upper case:
// 60 bits made of the creation time in microseconds (52 bits, good until the
// year 2112) and an 8-bit sequence. Ids sort by creation time as strings.
// Security: ids are not secret and not guessing-proof; nothing may rely on an
// id being unpredictable.
// Errors: none. make_queue_id never fails and is safe from any thread.
// Several nodes writing one database (postgres_store) each take ids from a
// node_queue_ids with their own node number (0-255, assigned by the
// database, so no two live nodes share one): the low 8 bits are then the
// node instead of a sequence, and one node makes one id per microsecond
// (more borrow from the next microsecond). Ids of different nodes never
// collide, and all of them sort by creation time to the microsecond
// (within one microsecond, by node); the layout keeps the time in the same
// bits as make_queue_id, so both kinds of id sort together.
// postgres_store starts a node's ids after the greatest id queued in the
// database (start_after), so a node whose clock stepped back while it was
// down never repeats an id that is still queued.
// Limitations: for make_queue_id, uniqueness across restarts rests on the
// clock not stepping back past ids issued by the previous run; the store's
// UNIQUE constraint on qid turns such a rare clash into a failed commit
// (4xx), never a mix-up. Order across nodes is only as good as the nodes'
// clocks (NTP).
// See also: store.hpp (message_info::qid).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace flushgate::queue {

// Length of every queue id.
inline constexpr std::size_t queue_id_length = 12;

// Returns a new id, greater than every id returned before in this process.
std::string make_queue_id();

// Ids for one node of a cluster (see above); safe from any thread.
class node_queue_ids {
 public:
  explicit node_queue_ids(std::uint8_t node) noexcept : node_(node) {}
  node_queue_ids(const node_queue_ids&) = delete;
  node_queue_ids& operator=(const node_queue_ids&) = delete;

  // Returns a new id, greater than every id this object returned before,
  // with the node number in its low 8 bits.
  std::string next();
  std::uint8_t node() const noexcept { return node_; }
  // Every later id is greater than `qid` (a queue id, of any node).
  void start_after(std::string_view qid) noexcept;

 private:
  std::uint8_t node_;
  std::atomic<std::uint64_t> last_{0};
};

// The node number in the low 8 bits of a node_queue_ids id (s must be a queue id).
std::uint8_t queue_id_node(std::string_view s) noexcept;

// True when s has the form of a queue id (12 Crockford base32 upper-case characters).
bool is_queue_id(std::string_view s) noexcept;

}  // namespace flushgate::queue
