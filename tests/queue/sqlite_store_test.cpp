// sqlite_store_test.cpp — tests for queue/sqlite_store.cpp: customers,
// commit/read round trips, batch atomicity, figures, hold/delete, reopening,
// schema versioning and a real full disk (a small tmpfs).
#include "queue/sqlite_store.hpp"

#include "queue/queue_id.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace flushgate::queue {
namespace {

namespace fs = std::filesystem;

// A fresh /tmp/flushgate-store.XXXXXX; the spool is a subdirectory that
// open() has to create.
class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/flushgate-store.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << "mkdtemp: " << std::strerror(errno);
    root_ = tmpl;
    spool_ = (root_ / "spool").string();
    open_store();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  void open_store() {
    store_.reset();
    auto s = sqlite_store::open(spool_);
    ASSERT_TRUE(s) << "open: got " << s.error().message() << ", want success";
    store_ = std::move(*s);
  }

  // Reads one integer with a separate connection, as an outside observer.
  std::int64_t query_int(const std::string& sql) {
    sqlite3* db = nullptr;
    std::int64_t value = -1;
    if (sqlite3_open_v2((spool_ + "/queue.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
        SQLITE_OK) {
      sqlite3_stmt* s = nullptr;
      if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
          sqlite3_step(s) == SQLITE_ROW) {
        value = sqlite3_column_int64(s, 0);
      }
      sqlite3_finalize(s);
    }
    sqlite3_close_v2(db);
    return value;
  }

  std::int64_t add(const std::string& name, std::vector<std::string> domains) {
    customer c;
    c.name = name;
    c.domains = std::move(domains);
    auto ec = store_->add_customer(c);
    EXPECT_FALSE(ec) << "add_customer " << name << ": got " << ec.message() << ", want success";
    return c.id;
  }

  static new_message message(std::int64_t customer_id, std::string content,
                             std::int64_t arrival = 1700000000) {
    new_message m;
    m.customer_id = customer_id;
    m.sender = "alice@example.org";
    m.recipients = {{"Bob@customer.example", "rfc822;bob@customer.example", "SUCCESS,FAILURE"},
                    {"carol@customer.example", "", ""}};
    m.envid = "QQ314159";
    m.ret = "HDRS";
    m.body_type = "8BITMIME";
    m.client = "mail.example.org [192.0.2.1]";
    m.arrival = arrival;
    m.content = std::move(content);
    return m;
  }

  std::string commit_one(const new_message& m) {
    auto r = store_->commit_messages(std::span<const new_message>(&m, 1));
    EXPECT_TRUE(r) << "commit: got " << r.error().message() << ", want success";
    return r && r->size() == 1 ? r->front() : std::string();
  }

  fs::path root_;
  std::string spool_;
  std::unique_ptr<sqlite_store> store_;
};

TEST_F(SqliteStoreTest, OpenCreatesPrivateSpoolInWalMode) {
  struct stat st {};
  ASSERT_EQ(::stat(spool_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "spool mode: got " << std::oct << (st.st_mode & 0777)
                                      << ", want 700";
  EXPECT_TRUE(fs::exists(spool_ + "/queue.db"));
  EXPECT_EQ(query_int("PRAGMA user_version"), sqlite_store::schema_version);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((spool_ + "/queue.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  std::string mode = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close_v2(db);
  EXPECT_EQ(mode, "wal") << "journal mode: got " << mode << ", want wal";
}

TEST_F(SqliteStoreTest, RefusesDatabaseFromNewerSchema) {
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((spool_ + "/queue.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close_v2(db);
  auto s = sqlite_store::open(spool_);
  ASSERT_FALSE(s) << "open: got success, want io_error";
  EXPECT_EQ(s.error(), errc::io_error);
}

TEST_F(SqliteStoreTest, CustomerRoundTripKeepsEveryField) {
  customer c;
  c.name = "acme";
  c.domains = {"acme.example", "acme-mail.example"};
  c.subdomains = true;
  c.state = customer_state::suspended;
  c.mode = delivery_mode::odmr;
  c.route = "mx.acme.example:2525";
  c.link_port = 587;
  c.link_users = {{"acme-dsl", link_kind::dsl, "198.51.100.0/24"},
                  {"acme-isdn", link_kind::dialup, ""}};
  c.recipients = std::vector<std::string>{"boss@acme.example", "info@acme.example"};
  c.max_size = 10'000'000;
  c.quota = 500'000'000;
  c.queue_lifetime = 86400;
  c.delay_warning = 3600;
  ASSERT_FALSE(store_->add_customer(c));
  EXPECT_GT(c.id, 0);

  auto found = store_->find_customer("acme");
  ASSERT_TRUE(found) << "find_customer: got " << found.error().message() << ", want success";
  EXPECT_EQ(found->id, c.id);
  EXPECT_EQ(found->name, c.name);
  EXPECT_EQ(found->domains, c.domains);
  EXPECT_TRUE(found->subdomains);
  EXPECT_EQ(found->state, customer_state::suspended);
  EXPECT_EQ(found->mode, delivery_mode::odmr);
  EXPECT_EQ(found->route, c.route);
  EXPECT_EQ(found->link_port, 587);
  ASSERT_EQ(found->link_users.size(), 2u);
  EXPECT_EQ(found->link_users[0].user, "acme-dsl");
  EXPECT_EQ(found->link_users[0].kind, link_kind::dsl);
  EXPECT_EQ(found->link_users[0].allowed_net, "198.51.100.0/24");
  EXPECT_EQ(found->link_users[1].user, "acme-isdn");
  EXPECT_EQ(found->link_users[1].kind, link_kind::dialup);
  ASSERT_TRUE(found->recipients.has_value());
  EXPECT_EQ(*found->recipients, *c.recipients);
  EXPECT_EQ(found->max_size, c.max_size);
  EXPECT_EQ(found->quota, c.quota);
  EXPECT_EQ(found->queue_lifetime, 86400);
  EXPECT_EQ(found->delay_warning, 3600);

  auto missing = store_->find_customer("nobody");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), errc::not_found);
}

TEST_F(SqliteStoreTest, EmptyRecipientListDiffersFromNone) {
  customer open_list;
  open_list.name = "open";
  open_list.domains = {"open.example"};
  customer closed_list;
  closed_list.name = "closed";
  closed_list.domains = {"closed.example"};
  closed_list.recipients = std::vector<std::string>{};
  ASSERT_FALSE(store_->add_customer(open_list));
  ASSERT_FALSE(store_->add_customer(closed_list));
  EXPECT_FALSE(store_->find_customer("open")->recipients.has_value());
  auto closed = store_->find_customer("closed");
  ASSERT_TRUE(closed && closed->recipients.has_value());
  EXPECT_TRUE(closed->recipients->empty());
}

TEST_F(SqliteStoreTest, AddCustomerRefusesTakenNameDomainAndLinkUser) {
  customer first;
  first.name = "first";
  first.domains = {"one.example", "two.example"};
  first.link_users = {{"first-dsl", link_kind::dsl, ""}};
  ASSERT_FALSE(store_->add_customer(first));

  customer same_name;
  same_name.name = "first";
  same_name.domains = {"three.example"};
  EXPECT_EQ(store_->add_customer(same_name), errc::name_taken);

  customer same_domain;
  same_domain.name = "second";
  same_domain.domains = {"new.example", "two.example"};
  EXPECT_EQ(store_->add_customer(same_domain), errc::domain_taken);
  // Refused whole: neither the customer nor its free domain was stored.
  EXPECT_EQ(store_->find_customer("second").error(), errc::not_found);
  EXPECT_EQ(query_int("SELECT count(*) FROM domains WHERE domain = 'new.example'"), 0);

  customer same_user;
  same_user.name = "third";
  same_user.domains = {"third.example"};
  same_user.link_users = {{"first-dsl", link_kind::dialup, ""}};
  EXPECT_EQ(store_->add_customer(same_user), errc::name_taken);

  auto all = store_->list_customers();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 1u) << "customers: got " << all->size() << ", want 1";
}

TEST_F(SqliteStoreTest, AddCustomerRefusesMalformedValues) {
  const std::vector<customer> bad = {
      customer{.name = ""},
      customer{.name = "Upper"},
      customer{.name = "-dash-first"},
      customer{.name = std::string(64, 'a')},
      customer{.name = "ok", .domains = {"Mixed.Example"}},
      customer{.name = "ok", .domains = {"trailing.example."}},
      customer{.name = "ok", .domains = {"twice.example", "twice.example"}},
      customer{.name = "ok", .domains = {""}},
  };
  for (auto c : bad) {
    auto domains = c.domains.empty() ? std::string() : c.domains.front();
    EXPECT_EQ(store_->add_customer(c), errc::invalid_argument)
        << "name '" << c.name << "' domain '" << domains << "'";
  }
  customer longest;
  longest.name = std::string(63, 'a');
  EXPECT_FALSE(store_->add_customer(longest));
}

TEST_F(SqliteStoreTest, UpdateCustomerReplacesFieldsAndLists) {
  const auto acme = add("acme", {"acme.example", "old.example"});
  add("other", {"other.example"});

  auto c = store_->find_customer("acme");
  ASSERT_TRUE(c);
  c->name = "acme-corp";
  c->domains = {"acme.example", "new.example"};
  c->mode = delivery_mode::hold;
  c->link_users = {{"acme-dialup", link_kind::dialup, ""}};
  c->recipients = std::vector<std::string>{"postmaster@acme.example"};
  ASSERT_FALSE(store_->update_customer(*c));

  auto updated = store_->find_customer("acme-corp");
  ASSERT_TRUE(updated);
  EXPECT_EQ(updated->id, acme);
  EXPECT_EQ(updated->domains, (std::vector<std::string>{"acme.example", "new.example"}));
  EXPECT_EQ(updated->mode, delivery_mode::hold);
  ASSERT_EQ(updated->link_users.size(), 1u);
  EXPECT_EQ(updated->link_users[0].user, "acme-dialup");
  EXPECT_EQ(updated->recipients, c->recipients);
  EXPECT_EQ(store_->find_customer("acme").error(), errc::not_found);
  // old.example is free again.
  add("third", {"old.example"});

  auto taken = *updated;
  taken.domains.push_back("other.example");
  EXPECT_EQ(store_->update_customer(taken), errc::domain_taken);
  taken = *updated;
  taken.name = "other";
  EXPECT_EQ(store_->update_customer(taken), errc::name_taken);
  EXPECT_EQ(store_->find_customer("acme-corp")->domains, updated->domains);

  customer ghost;
  ghost.id = 9999;
  ghost.name = "ghost";
  EXPECT_EQ(store_->update_customer(ghost), errc::not_found);
}

TEST_F(SqliteStoreTest, ListCustomersSortsByNameWithLists) {
  add("zulu", {"z.example"});
  add("alpha", {"a.example", "a2.example"});
  add("mike", {});
  auto all = store_->list_customers();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].name, "alpha");
  EXPECT_EQ((*all)[0].domains, (std::vector<std::string>{"a.example", "a2.example"}));
  EXPECT_EQ((*all)[1].name, "mike");
  EXPECT_TRUE((*all)[1].domains.empty());
  EXPECT_EQ((*all)[2].name, "zulu");
  EXPECT_EQ((*all)[2].domains, (std::vector<std::string>{"z.example"}));
}

TEST_F(SqliteStoreTest, RemoveCustomerRefusesQueuedMailUnlessForced) {
  const auto acme = add("acme", {"acme.example"});
  add("empty", {"empty.example"});
  const auto qid = commit_one(message(acme, "Subject: x\r\n\r\nhi\r\n"));

  EXPECT_EQ(store_->remove_customer("acme", false), errc::not_empty);
  EXPECT_TRUE(store_->find_message(qid));
  EXPECT_EQ(store_->remove_customer("nobody", false), errc::not_found);

  EXPECT_FALSE(store_->remove_customer("empty", false));
  EXPECT_EQ(store_->find_customer("empty").error(), errc::not_found);

  EXPECT_FALSE(store_->remove_customer("acme", true));
  EXPECT_EQ(store_->find_customer("acme").error(), errc::not_found);
  EXPECT_EQ(store_->find_message(qid).error(), errc::not_found);
  EXPECT_EQ(query_int("SELECT count(*) FROM recipients"), 0);
  EXPECT_EQ(query_int("SELECT count(*) FROM domains"), 0);
  // The domains are free for a new customer.
  add("acme2", {"acme.example"});
}

TEST_F(SqliteStoreTest, CommitAndReadBackIsBinarySafe) {
  const auto acme = add("acme", {"customer.example"});
  std::string binary;
  for (int i = 0; i < 4096; ++i) binary.push_back(static_cast<char>(i % 256));
  std::string big(2 * 1024 * 1024, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7919) % 251);

  const std::vector<new_message> batch = {message(acme, binary), message(acme, big),
                                          message(acme, "")};
  auto qids = store_->commit_messages(batch);
  ASSERT_TRUE(qids) << "commit: got " << qids.error().message() << ", want success";
  ASSERT_EQ(qids->size(), 3u);
  EXPECT_EQ(std::set<std::string>(qids->begin(), qids->end()).size(), 3u);
  for (const auto& q : *qids) EXPECT_TRUE(is_queue_id(q)) << "qid " << q;

  auto content = store_->read_content((*qids)[0]);
  ASSERT_TRUE(content);
  EXPECT_EQ(*content, binary);
  content = store_->read_content((*qids)[1]);
  ASSERT_TRUE(content);
  EXPECT_EQ(content->size(), big.size());
  EXPECT_TRUE(*content == big) << "2 MB body differs after read_content";
  content = store_->read_content((*qids)[2]);
  ASSERT_TRUE(content);
  EXPECT_TRUE(content->empty());
  EXPECT_EQ(store_->read_content("0000000000ZZ").error(), errc::not_found);

  auto m = store_->find_message((*qids)[1]);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->qid, (*qids)[1]);
  EXPECT_EQ(m->customer_id, acme);
  EXPECT_EQ(m->customer, "acme");
  EXPECT_EQ(m->sender, "alice@example.org");
  EXPECT_EQ(m->arrival, 1700000000);
  EXPECT_EQ(m->size, big.size());
  EXPECT_FALSE(m->held);
  EXPECT_EQ(m->envid, "QQ314159");
  EXPECT_EQ(m->ret, "HDRS");
  EXPECT_EQ(m->body_type, "8BITMIME");
  EXPECT_EQ(m->client, "mail.example.org [192.0.2.1]");
  ASSERT_EQ(m->recipients.size(), 2u);
  EXPECT_EQ(m->recipients[0].address, "Bob@customer.example");
  EXPECT_EQ(m->recipients[0].orcpt, "rfc822;bob@customer.example");
  EXPECT_EQ(m->recipients[0].notify, "SUCCESS,FAILURE");
  EXPECT_EQ(m->recipients[0].attempts, 0);
  EXPECT_EQ(m->recipients[0].next_attempt, 0);
  EXPECT_EQ(m->recipients[0].last_reply, "");
  EXPECT_FALSE(m->recipients[0].delay_notified);
  EXPECT_EQ(m->recipients[1].address, "carol@customer.example");
}

TEST_F(SqliteStoreTest, FailedBatchLeavesNothing) {
  const auto acme = add("acme", {"acme.example"});
  // The middle message names a customer that does not exist: the foreign
  // key fails after the first message was already inserted.
  const std::vector<new_message> batch = {message(acme, "first"), message(9999, "ghost"),
                                          message(acme, "third")};
  auto r = store_->commit_messages(batch);
  ASSERT_FALSE(r) << "commit: got success, want not_found";
  EXPECT_EQ(r.error(), errc::not_found);
  EXPECT_EQ(query_int("SELECT count(*) FROM messages"), 0);
  EXPECT_EQ(query_int("SELECT count(*) FROM recipients"), 0);
  auto stats = store_->customer_stats(acme);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->messages, 0u) << "messages: got " << stats->messages << ", want 0";
  // The store is usable afterwards.
  EXPECT_FALSE(commit_one(message(acme, "later")).empty());
}

TEST_F(SqliteStoreTest, MessageWithoutRecipientsIsInvalid) {
  const auto acme = add("acme", {"acme.example"});
  auto m = message(acme, "x");
  m.recipients.clear();
  auto r = store_->commit_messages(std::span<const new_message>(&m, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::invalid_argument);
  auto empty = store_->commit_messages({});
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

TEST_F(SqliteStoreTest, SummaryAndStatsAddUp) {
  const auto acme = add("acme", {"acme.example"});
  const auto bravo = add("bravo", {"bravo.example"});
  const auto idle = add("idle", {"idle.example"});
  commit_one(message(acme, std::string(100, 'a'), 1700000300));
  commit_one(message(acme, std::string(250, 'a'), 1700000100));
  commit_one(message(acme, std::string(50, 'a'), 1700000200));
  commit_one(message(bravo, std::string(7, 'b'), 1700000500));

  auto summary = store_->queue_summary();
  ASSERT_TRUE(summary);
  ASSERT_EQ(summary->size(), 2u) << "summary rows: got " << summary->size() << ", want 2";
  EXPECT_EQ((*summary)[0].customer, "acme");
  EXPECT_EQ((*summary)[0].customer_id, acme);
  EXPECT_EQ((*summary)[0].messages, 3u);
  EXPECT_EQ((*summary)[0].bytes, 400u);
  EXPECT_EQ((*summary)[0].oldest_arrival, 1700000100);
  EXPECT_EQ((*summary)[1].customer, "bravo");
  EXPECT_EQ((*summary)[1].messages, 1u);
  EXPECT_EQ((*summary)[1].bytes, 7u);
  EXPECT_EQ((*summary)[1].oldest_arrival, 1700000500);

  auto stats = store_->customer_stats(acme);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->customer, "acme");
  EXPECT_EQ(stats->messages, 3u);
  EXPECT_EQ(stats->bytes, 400u);
  EXPECT_EQ(stats->oldest_arrival, 1700000100);

  auto empty = store_->customer_stats(idle);
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->customer, "idle");
  EXPECT_EQ(empty->messages, 0u);
  EXPECT_EQ(empty->bytes, 0u);
  EXPECT_EQ(empty->oldest_arrival, 0);
  EXPECT_EQ(store_->customer_stats(9999).error(), errc::not_found);
}

TEST_F(SqliteStoreTest, ListMessagesInArrivalOrderWithLimit) {
  const auto acme = add("acme", {"acme.example"});
  const auto bravo = add("bravo", {"bravo.example"});
  const auto late = commit_one(message(acme, "late", 300));
  const auto early = commit_one(message(acme, "early", 100));
  const auto middle = commit_one(message(bravo, "middle", 200));
  const auto same = commit_one(message(acme, "same second as early", 100));

  auto mine = store_->list_messages(acme, 0);
  ASSERT_TRUE(mine);
  ASSERT_EQ(mine->size(), 3u);
  EXPECT_EQ((*mine)[0].qid, early);
  EXPECT_EQ((*mine)[1].qid, same);
  EXPECT_EQ((*mine)[2].qid, late);
  EXPECT_EQ((*mine)[0].recipients.size(), 2u);

  auto all = store_->list_messages(0, 2);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u) << "limit 2: got " << all->size() << " messages";
  EXPECT_EQ((*all)[0].qid, early);
  EXPECT_EQ((*all)[1].qid, same);
  all = store_->list_messages(0, 0);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[2].qid, middle);
  EXPECT_EQ((*all)[2].customer, "bravo");

  auto none = store_->list_messages(9999, 10);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

TEST_F(SqliteStoreTest, HoldAndDelete) {
  const auto acme = add("acme", {"acme.example"});
  const auto qid = commit_one(message(acme, "body"));
  const auto other = commit_one(message(acme, "other"));

  ASSERT_FALSE(store_->set_held(qid, true));
  EXPECT_TRUE(store_->find_message(qid)->held);
  EXPECT_FALSE(store_->find_message(other)->held);
  ASSERT_FALSE(store_->set_held(qid, true));  // already held: still fine
  ASSERT_FALSE(store_->set_held(qid, false));
  EXPECT_FALSE(store_->find_message(qid)->held);
  EXPECT_EQ(store_->set_held("0000000000ZZ", true), errc::not_found);

  ASSERT_FALSE(store_->delete_message(qid));
  EXPECT_EQ(store_->find_message(qid).error(), errc::not_found);
  EXPECT_EQ(store_->read_content(qid).error(), errc::not_found);
  EXPECT_EQ(store_->delete_message(qid), errc::not_found);
  // Its recipients went with it; the other message's stayed.
  EXPECT_EQ(query_int("SELECT count(*) FROM recipients"), 2);
  EXPECT_EQ(store_->customer_stats(acme)->messages, 1u);
}

TEST_F(SqliteStoreTest, ReopenedStoreFindsEverything) {
  customer c;
  c.name = "acme";
  c.domains = {"acme.example"};
  c.link_users = {{"acme-dsl", link_kind::dsl, ""}};
  ASSERT_FALSE(store_->add_customer(c));
  const std::string body = "Received: from x\r\n\r\nbody\r\n";
  const auto qid = commit_one(message(c.id, body));
  ASSERT_FALSE(store_->set_held(qid, true));

  open_store();
  auto found = store_->find_customer("acme");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->id, c.id);
  EXPECT_EQ(found->link_users.size(), 1u);
  auto m = store_->find_message(qid);
  ASSERT_TRUE(m) << "find_message after reopen: got " << m.error().message();
  EXPECT_TRUE(m->held);
  EXPECT_EQ(m->recipients.size(), 2u);
  EXPECT_EQ(*store_->read_content(qid), body);
  EXPECT_EQ(store_->customer_stats(c.id)->messages, 1u);
  // And keeps writing.
  EXPECT_FALSE(commit_one(message(c.id, "after reopen")).empty());
  EXPECT_EQ(store_->add_customer(c), errc::name_taken);
}

// A real full disk: the spool on a 2 MB tmpfs. Needs root (mount(2)).
class SqliteStoreDiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/flushgate-full.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << "mkdtemp: " << std::strerror(errno);
    mount_point_ = tmpl;
    if (::mount("tmpfs", tmpl, "tmpfs", MS_NOSUID | MS_NODEV, "size=2m,mode=0700") != 0) {
      const int err = errno;
      fs::remove(mount_point_);
      mount_point_.clear();
      GTEST_SKIP() << "cannot mount a 2 MB tmpfs for the disk-full test (needs root or "
                      "CAP_SYS_ADMIN): "
                   << std::strerror(err);
    }
    mounted_ = true;
  }
  void TearDown() override {
    store_.reset();
    if (mounted_) ::umount2(mount_point_.c_str(), MNT_DETACH);
    if (!mount_point_.empty()) {
      std::error_code ec;
      fs::remove_all(mount_point_, ec);
    }
  }

  fs::path mount_point_;
  bool mounted_ = false;
  std::unique_ptr<sqlite_store> store_;
};

TEST_F(SqliteStoreDiskFullTest, FullDiskGivesDiskFullAndRecovers) {
  // Ballast stands for "other files on the disk": deleting it is the
  // operator freeing space.
  const auto ballast = mount_point_ / "ballast";
  {
    std::ofstream out(ballast, std::ios::binary);
    out << std::string(640 * 1024, 'x');
    ASSERT_TRUE(out.good());
  }
  auto opened = sqlite_store::open((mount_point_ / "spool").string());
  ASSERT_TRUE(opened) << "open: got " << opened.error().message();
  store_ = std::move(*opened);
  customer c;
  c.name = "acme";
  c.domains = {"acme.example"};
  ASSERT_FALSE(store_->add_customer(c));

  new_message m;
  m.customer_id = c.id;
  m.sender = "a@example.org";
  m.recipients = {{"b@acme.example", "", ""}};
  m.arrival = 1700000000;
  m.content = std::string(64 * 1024, 'm');
  const std::vector<new_message> batch = {m, m};

  std::vector<std::string> stored;
  boost::system::error_code failure;
  for (int i = 0; i < 100 && !failure; ++i) {  // the tmpfs holds about 10 batches
    auto r = store_->commit_messages(batch);
    if (r) {
      stored.insert(stored.end(), r->begin(), r->end());
    } else {
      failure = r.error();
    }
  }
  ASSERT_EQ(failure, errc::disk_full) << "got " << failure.message() << ", want disk_full";
  ASSERT_FALSE(stored.empty());

  // Still answers reads, and the failed batch left nothing behind.
  auto stats = store_->customer_stats(c.id);
  ASSERT_TRUE(stats) << "customer_stats on a full disk: got " << stats.error().message();
  EXPECT_EQ(stats->messages, stored.size());
  auto content = store_->read_content(stored.front());
  ASSERT_TRUE(content);
  EXPECT_EQ(*content, m.content);
  auto listed = store_->list_messages(c.id, 0);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), stored.size());

  // Space freed, mail deleted: commits work again.
  fs::remove(ballast);
  for (std::size_t i = 0; i < stored.size(); i += 2) {
    ASSERT_FALSE(store_->delete_message(stored[i])) << "delete " << stored[i];
  }
  auto again = store_->commit_messages(batch);
  ASSERT_TRUE(again) << "commit after freeing space: got " << again.error().message();
  EXPECT_EQ(store_->customer_stats(c.id)->messages, stored.size() - (stored.size() + 1) / 2 + 2);
}

}  // namespace
}  // namespace flushgate::queue
