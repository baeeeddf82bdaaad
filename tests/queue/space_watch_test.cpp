// space_watch_test.cpp — tests for queue/space_watch.cpp, queue/disk_guard.hpp
// and the space functions of queue/sqlite_store.cpp: mail that left the
// queue leaves room inside the store that counts for intake at once and
// goes back to the file system in steps (ARCHITECTURE.md invariant 8).
#include "queue/space_watch.hpp"

#include "queue/disk_guard.hpp"
#include "queue/sqlite_store.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace flushgate::queue {
namespace {

namespace fs = std::filesystem;
constexpr std::size_t message_octets = 64 * 1024;

class StoreSpace : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/flushgate-space.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << "mkdtemp: " << std::strerror(errno);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::string spool() const { return (root_ / "spool").string(); }
  std::uintmax_t file_octets() const {
    std::uintmax_t total = 0;
    for (const char* name : {"queue.db", "queue.db-wal"}) {
      std::error_code ec;
      const auto n = fs::file_size(root_ / "spool" / name, ec);
      if (!ec) total += n;
    }
    return total;
  }

  // Opens the store, adds a customer and queues `count` messages of 64K.
  std::unique_ptr<sqlite_store> open_with_mail(int count, std::vector<std::string>& qids) {
    auto s = sqlite_store::open(spool());
    EXPECT_TRUE(s) << "open: got " << s.error().message();
    if (!s) return nullptr;
    customer c;
    c.name = "acme";
    c.domains = {"acme.example"};
    EXPECT_FALSE((*s)->add_customer(c));
    std::vector<new_message> batch;
    for (int i = 0; i < count; ++i) {
      new_message m;
      m.customer_id = c.id;
      m.sender = "a@sender.example";
      m.recipients = {{"bob@acme.example", "", ""}};
      m.arrival = 1700000000 + i;
      m.content = std::string(message_octets, static_cast<char>('a' + i % 26));
      batch.push_back(std::move(m));
    }
    auto committed = (*s)->commit_messages(batch);
    EXPECT_TRUE(committed) << committed.error().message();
    if (committed) qids = *committed;
    return std::move(*s);
  }

  fs::path root_;
};

TEST(DiskGuard, RoomInsideTheStoreCountsOnlyWhereItCannotBeGivenBack) {
  disk_guard guard("/", UINT64_MAX / 2);
  guard.refresh();
  EXPECT_TRUE(guard.low()) << "no file system has 2^63 octets free";
  // A store that gives its room back: shown, not counted (new mail goes to
  // the WAL first, in fresh file-system space).
  guard.set_store_space(123, UINT64_MAX / 2, false);
  EXPECT_TRUE(guard.low()) << "got room counted that the store is about to give back";
  EXPECT_EQ(guard.store_free_bytes(), UINT64_MAX / 2);
  EXPECT_EQ(guard.store_file_bytes(), 123u);
  // A store that cannot give it back: counted.
  guard.set_store_space(123, UINT64_MAX / 2, true);
  EXPECT_FALSE(guard.low()) << "got low with " << guard.store_free_bytes()
                            << " octets free inside the store, want the room counted";
  guard.set_store_space(123, UINT64_MAX, true);
  EXPECT_EQ(guard.room_bytes(), UINT64_MAX) << "room saturates rather than wrapping";
  EXPECT_FALSE(guard.low());
  guard.mark_full();
  EXPECT_TRUE(guard.low()) << "after ENOSPC the guard says low until the next look";
}

TEST(DiskGuard, CommitsInFlightTakeRoomSoTogetherTheyStopAtTheMinimum) {
  // Room as a store that cannot give back its pages reports it: 10 MB over
  // a 2 MB minimum. Commits of 3 MB each: two fit, the third would go below.
  disk_guard guard("/", 2'000'000);
  guard.mark_full();  // the file system's own free space out of the way: only the counted room
  guard.set_store_space(0, 10'000'000, true);
  EXPECT_TRUE(guard.try_reserve(3'000'000));
  EXPECT_TRUE(guard.try_reserve(3'000'000));
  EXPECT_FALSE(guard.try_reserve(3'000'000)) << "got a third 3 MB commit, want it refused below 2 MB";
  EXPECT_EQ(guard.reserved_bytes(), 6'000'000u) << "a refused reservation took room";
  EXPECT_FALSE(guard.low()) << "8 MB over the minimum with 6 MB in flight is not low";
  EXPECT_TRUE(guard.try_reserve(2'000'000));
  EXPECT_FALSE(guard.low()) << "exactly at the minimum is not below it";
  guard.release(3'000'000);
  EXPECT_TRUE(guard.try_reserve(3'000'000)) << "released room is free again";
  guard.release(8'000'000);
  EXPECT_EQ(guard.reserved_bytes(), 0u);
}

TEST_F(StoreSpace, DeletedMailIsReusableThenGivenBackInSteps) {
  std::vector<std::string> qids;
  auto store = open_with_mail(60, qids);
  ASSERT_TRUE(store);
  ASSERT_EQ(qids.size(), 60u);
  auto before = store->space();
  ASSERT_TRUE(before);
  EXPECT_TRUE(before->gives_back) << "a new store uses incremental vacuum";
  EXPECT_LT(before->reusable_bytes, message_octets) << "nothing deleted yet";
  for (const auto& q : qids) ASSERT_FALSE(store->delete_message(q));

  auto freed = store->space();
  ASSERT_TRUE(freed);
  EXPECT_GE(freed->reusable_bytes, 55 * message_octets)
      << "got " << freed->reusable_bytes << " octets free inside the store after deleting 60 "
      << "messages of 64K, want about 60 x 64K";
  const auto big = file_octets();

  // Steps of 256K: each gives some back; bounded number of calls.
  std::uint64_t left = freed->reusable_bytes;
  int steps = 0;
  for (; steps < 200 && left > 0; ++steps) {
    auto r = store->release_space(256 * 1024);
    ASSERT_TRUE(r) << "release_space: " << r.error().message();
    ASSERT_LT(*r, left) << "step " << steps << " gave nothing back";
    left = *r;
  }
  EXPECT_EQ(left, 0u);
  EXPECT_GT(steps, 5) << "256K steps should take several calls for about 3.8M";
  auto after = store->space();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->reusable_bytes, 0u);
  EXPECT_LT(file_octets() + 50 * message_octets, big)
      << "got the store's files " << big << " -> " << file_octets()
      << " octets, want the deleted mail's room back in the file system";
}

TEST_F(StoreSpace, StoreMadeBeforeIncrementalVacuumIsRebuiltAtOpen) {
  std::vector<std::string> qids;
  { ASSERT_TRUE(open_with_mail(4, qids)); }
  // Turn the file into what an older flushgate made: auto_vacuum = none.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((root_ / "spool" / "queue.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA auto_vacuum=NONE; VACUUM", nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);

  auto s = sqlite_store::open(spool());
  ASSERT_TRUE(s);
  for (const auto& q : qids) ASSERT_FALSE((*s)->delete_message(q));
  auto r = (*s)->release_space(1 << 20);
  ASSERT_TRUE(r);
  auto sp = (*s)->space();
  ASSERT_TRUE(sp);
  EXPECT_EQ(sp->reusable_bytes, 0u) << "got " << sp->reusable_bytes
                                    << " octets still free inside, want the rebuilt store to "
                                       "give them back (incremental vacuum on)";
  auto messages = (*s)->list_messages(0, 0);
  ASSERT_TRUE(messages);
  EXPECT_TRUE(messages->empty());
}

TEST_F(StoreSpace, WatchReportsTheRoomAndGivesItBack) {
  std::vector<std::string> qids;
  auto store = open_with_mail(40, qids);
  ASSERT_TRUE(store);
  for (const auto& q : qids) ASSERT_FALSE(store->delete_message(q));
  const auto big = file_octets();

  boost::asio::io_context io;
  disk_guard guard(spool(), 1);
  {
    store_worker worker(std::move(store));
    space_watch watch(worker, guard);
    auto done = boost::asio::co_spawn(io, watch.check_once(), boost::asio::use_future);
    io.run();
    done.get();
    EXPECT_GE(watch.released_bytes(), 35 * message_octets)
        << "one period (8M steps, 200 ms) should give back the 2.5M freed";
    EXPECT_EQ(guard.store_free_bytes(), 0u);
    EXPECT_GT(guard.store_file_bytes(), 0u);
    EXPECT_LT(guard.store_file_bytes() + 30 * message_octets, big)
        << "got store files " << guard.store_file_bytes() << " octets, had " << big;
  }
}

}  // namespace
}  // namespace flushgate::queue
