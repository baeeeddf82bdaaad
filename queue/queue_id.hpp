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
// Limitations: uniqueness across restarts rests on the clock not stepping
// back past ids issued by the previous run; the store's UNIQUE constraint on
// qid turns such a rare clash into a failed commit (4xx), never a mix-up.
// See also: store.hpp (message_info::qid).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace flushgate::queue {

// Length of every queue id.
inline constexpr std::size_t queue_id_length = 12;

// Returns a new id, greater than every id returned before in this process.
std::string make_queue_id();

// True when s has the form of a queue id (12 Crockford base32 upper-case characters).
bool is_queue_id(std::string_view s) noexcept;

}  // namespace flushgate::queue
