// queue_id_test.cpp — tests for queue/queue_id.cpp: form, order, uniqueness
// across threads, and the time in the high bits.
#include "queue/queue_id.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace flushgate::queue {
namespace {

constexpr std::string_view crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

std::uint64_t decode(const std::string& id) {
  std::uint64_t value = 0;
  for (char ch : id) value = (value << 5) | crockford.find(ch);
  return value;
}

std::uint64_t now_us() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

TEST(QueueId, IsTwelveCrockfordCharacters) {
  const auto id = make_queue_id();
  EXPECT_EQ(id.size(), 12u) << "length: got " << id.size() << ", want 12";
  EXPECT_TRUE(is_queue_id(id)) << "got " << id;
  EXPECT_EQ(id.find_first_of("ILOUilou"), std::string::npos) << "got " << id;
}

TEST(QueueId, HighBitsAreCreationTimeInMicroseconds) {
  const auto before = now_us();
  const auto id = make_queue_id();
  const auto after = now_us();
  const auto stamp = decode(id) >> 8;
  EXPECT_GE(stamp, before) << "id " << id;
  // Earlier tests in this process may have borrowed a few microseconds ahead.
  EXPECT_LE(stamp, after + 1000) << "id " << id;
}

TEST(QueueId, IncreaseAsStrings) {
  std::string previous = make_queue_id();
  for (int i = 0; i < 10000; ++i) {
    auto id = make_queue_id();
    ASSERT_LT(previous, id) << "got " << id << " after " << previous << ", want increasing";
    previous = std::move(id);
  }
}

TEST(QueueId, UniqueAcrossTwoThreads) {
  constexpr int per_thread = 50000;
  std::vector<std::string> a(per_thread);
  std::vector<std::string> b(per_thread);
  std::thread ta([&] {
    for (auto& id : a) id = make_queue_id();
  });
  std::thread tb([&] {
    for (auto& id : b) id = make_queue_id();
  });
  ta.join();
  tb.join();
  std::unordered_set<std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 2u * per_thread) << "distinct ids: got " << all.size() << ", want "
                                         << 2 * per_thread;
}

TEST(QueueId, IsQueueIdRejectsOtherForms) {
  const struct {
    std::string_view text;
    bool valid;
  } cases[] = {
      {"0123456789AB", true},  {"ZZZZZZZZZZZZ", true},   {"0123456789A", false},
      {"0123456789ABC", false}, {"0123456789ab", false}, {"01234567890I", false},
      {"0123456789OL", false}, {"0123456789 U", false},  {"", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(is_queue_id(c.text), c.valid) << "'" << c.text << "'";
  }
}

TEST(NodeQueueIds, CarryTheirNodeAndNeverCollideAcrossNodes) {
  node_queue_ids a(7);
  node_queue_ids b(200);
  std::unordered_set<std::string> seen;
  std::string last_a;
  std::string last_b;
  for (int i = 0; i < 5000; ++i) {
    const auto ia = a.next();
    const auto ib = b.next();
    ASSERT_TRUE(is_queue_id(ia)) << "got " << ia;
    EXPECT_EQ(queue_id_node(ia), 7) << "node of " << ia << ": got " << int{queue_id_node(ia)};
    EXPECT_EQ(queue_id_node(ib), 200) << "node of " << ib << ": got " << int{queue_id_node(ib)};
    EXPECT_GT(ia, last_a) << "ids of one node must increase";
    EXPECT_GT(ib, last_b);
    last_a = ia;
    last_b = ib;
    ASSERT_TRUE(seen.insert(ia).second) << "duplicate " << ia;
    ASSERT_TRUE(seen.insert(ib).second) << "duplicate " << ib;
  }
}

TEST(NodeQueueIds, SortWithPlainIdsByTime) {
  // Same time bits as make_queue_id: an id made later sorts after, whichever kind.
  node_queue_ids n(255);
  const auto before = now_us();
  const auto node_id = n.next();
  const auto after = now_us();
  const auto t = decode(node_id) >> 8;
  EXPECT_GE(t, before);
  EXPECT_LE(t, after + 1);
  std::string plain;
  // Bounded: a plain id made in a later microsecond sorts after node_id.
  for (int i = 0; i < 1000000 && plain <= node_id; ++i) plain = make_queue_id();
  EXPECT_GT(plain, node_id) << "got " << plain << " <= " << node_id;
  EXPECT_GT(n.next(), plain) << "a later node id sorts after an earlier plain one";
}

TEST(NodeQueueIds, StartAfterAnIdFromTheFutureKeepsIncreasing) {
  // An id from about 2100, of a node with greater low bits than ours.
  const std::string future = "Y000000000ZZ";
  node_queue_ids n(3);
  n.start_after(future);
  const auto first = n.next();
  EXPECT_GT(first, future) << "got " << first;
  EXPECT_EQ(queue_id_node(first), 3) << "got " << first;
  EXPECT_GT(n.next(), first);
  n.start_after("0000000000AB");  // an older id changes nothing
  EXPECT_GT(n.next(), first);
  n.start_after("not an id");  // ignored
  EXPECT_GT(n.next(), first);
}

}  // namespace
}  // namespace flushgate::queue
