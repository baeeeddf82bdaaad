// recipient_book_test.cpp — the known-recipient book: what it learns and
// queues for the store, its bound per customer, and how a cluster node takes
// in what other nodes wrote (merge, replace_customer).
#include "gateway/recipient_book.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flushgate::gateway {
namespace {

using queue::known_recipient;

TEST(RecipientBook, LearnedAddressesAnswerAndAreQueuedOnce) {
  recipient_book book;
  book.learn(1, "alice@acme.example", true, "delivery", 100);
  book.learn(1, "mallory@acme.example", false, "callout", 100);
  book.learn(1, "alice@acme.example", true, "delivery", 200);  // seen again soon: not written again
  EXPECT_EQ(book.lookup(1, "alice@acme.example"), known_state::good);
  EXPECT_EQ(book.lookup(1, "mallory@acme.example"), known_state::bad);
  EXPECT_EQ(book.lookup(2, "alice@acme.example"), known_state::unknown) << "got another customer's answer";
  EXPECT_TRUE(book.has_pending(1));
  EXPECT_FALSE(book.has_pending(2));
  const auto pending = book.take_pending();
  EXPECT_EQ(pending.size(), 2u) << "want alice and mallory queued once each";
  EXPECT_FALSE(book.has_pending(1));
}

TEST(RecipientBook, FullCustomerLosesItsOldestKnownBadFirst) {
  recipient_book book(2);
  book.learn(1, "alice@acme.example", true, "delivery", 100);
  book.learn(1, "x1@acme.example", false, "callout", 200);
  book.learn(1, "x2@acme.example", false, "callout", 300);
  EXPECT_EQ(book.size(1), 2u);
  EXPECT_EQ(book.lookup(1, "alice@acme.example"), known_state::good) << "a known-good went before a known-bad";
  EXPECT_EQ(book.lookup(1, "x1@acme.example"), known_state::unknown) << "want the oldest known-bad evicted";
}

TEST(RecipientBook, MergeTakesRowsOtherNodesWroteWithoutWritingThemBack) {
  recipient_book book;
  book.learn(1, "alice@acme.example", true, "delivery", 500);
  (void)book.take_pending();
  book.merge({
      {1, "alice@acme.example", false, "callout", 100, 400},  // older than this node's: ignored
      {1, "bob@acme.example", true, "delivery", 100, 450},
      {2, "carol@bravo.example", false, "callout", 100, 460},
      {1, "evicted@acme.example", true, "evicted", 0, 0},  // an eviction mark, not an answer
  });
  EXPECT_EQ(book.lookup(1, "alice@acme.example"), known_state::good) << "an older row overwrote a newer answer";
  EXPECT_EQ(book.lookup(1, "bob@acme.example"), known_state::good);
  EXPECT_EQ(book.lookup(2, "carol@bravo.example"), known_state::bad);
  EXPECT_EQ(book.lookup(1, "evicted@acme.example"), known_state::unknown);
  EXPECT_TRUE(book.take_pending().empty()) << "merged rows came from the store; want nothing to write";
  book.merge({{1, "alice@acme.example", false, "callout", 100, 600}});  // newer: taken
  EXPECT_EQ(book.lookup(1, "alice@acme.example"), known_state::bad);
}

TEST(RecipientBook, MergeIntoAFullCustomerEvictsWithoutWritingAMark) {
  recipient_book book(1);
  book.learn(1, "alice@acme.example", true, "delivery", 100);
  (void)book.take_pending();
  book.merge({{1, "bob@acme.example", true, "delivery", 100, 200}});
  EXPECT_EQ(book.size(1), 1u);
  EXPECT_TRUE(book.take_pending().empty())
      << "got an eviction mark written for a merge, want none (other nodes still hold the row)";
}

TEST(RecipientBook, ReplaceCustomerDropsWhatTheStoreNoLongerHas) {
  recipient_book book;
  book.learn(1, "alice@acme.example", true, "delivery", 100);
  book.learn(1, "bob@acme.example", true, "delivery", 100);
  book.learn(2, "carol@bravo.example", true, "delivery", 100);
  book.replace_customer(1, {{1, "bob@acme.example", true, "delivery", 100, 100}});
  EXPECT_EQ(book.lookup(1, "alice@acme.example"), known_state::unknown) << "got a forgotten address";
  EXPECT_EQ(book.lookup(1, "bob@acme.example"), known_state::good);
  EXPECT_EQ(book.lookup(2, "carol@bravo.example"), known_state::good) << "another customer's addresses went";
  EXPECT_EQ(book.size(1), 1u);
}

}  // namespace
}  // namespace flushgate::gateway
