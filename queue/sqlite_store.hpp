// sqlite_store.hpp — the queue store on SQLite: one database file per spool.
//
// Purpose: the embedded default backend of store (store.hpp). The database is
// DIR/queue.db in WAL mode with synchronous=FULL, so every COMMIT is fsync'd
// before it returns: commit_messages returning a qid means the message and
// its envelope are on disk ("250 only after fsync", ARCHITECTURE.md
// invariant 1). Message bodies are BLOBs written in the same transaction as
// their envelope, so one fsync per group commit covers both.
// Security: a new spool directory is created mode 0700 (queued mail is
// private). All values are bound as SQL parameters. Bodies are stored and
// returned byte for byte (binary-safe).
// Errors: queue::errc. SQLITE_FULL, or SQLITE_IOERR with ENOSPC/EDQUOT, gives
// disk_full; a message naming a customer that does not exist gives not_found;
// any other SQLite failure gives io_error (details go to the log). A failed
// write rolls its transaction back: nothing of it remains. A link user name
// held by another customer gives name_taken (errc has no code of its own).
// Input that breaks the documented forms (customer name, lower-case domains,
// a message without recipients) gives invalid_argument. record_attempt(s) and
// record_delay_notice give not_found for an unknown qid and invalid_argument
// for a recipient id that is not one of the message's queued recipients (or
// is named twice), and for a notice naming a customer that does not exist
// (not_found is kept for "no such message"); on any error nothing of the
// attempt is stored — a failed recipient whose DSN could not be stored stays
// queued (ARCHITECTURE.md invariant 2). save_link for a customer that does
// not exist gives not_found. Delivery leases (store.hpp) live in the table
// leases; each take is one IMMEDIATE transaction, so two stores on one spool
// take turns; now = 0 is this host's system clock.
// Threads: one sqlite_store is used by one thread at a time (the store
// thread, store_worker.hpp); it may be created on another thread first.
// Limitations: list_messages, list_deliverable and list_due_notices with
// limit 0 return every match. list_due_notices reads the customer's messages
// in arrival order up to the later of its two thresholds and stops there (or
// at the limit): young mail is never read, but messages between the expiry
// and the delay threshold whose recipients were all delay-notified are read
// (index only, plus one recipient probe each) on every call. The schema
// is versioned with PRAGMA user_version; a database from a newer flushgate
// is refused (io_error) rather than guessed at. A spool from an older one is
// migrated inside open(), before the daemon serves: v4 -> v5 builds an index
// from every message row (about 9 s for a million queued messages on the
// development machine), v5 -> v6 sums them (about 0.4 s), once, at the first
// start after the upgrade. On a disk that is full to the last byte even
// delete_message can fail with disk_full (the WAL must grow by a few
// pages); freeing some space elsewhere first always works.
// Space: the database uses incremental vacuum (auto_vacuum = INCREMENTAL),
// so the pages that deleted mail freed can be given back to the file system
// a step at a time (release_space: PRAGMA incremental_vacuum, then a WAL
// checkpoint that truncates the WAL), never with a full VACUUM while mail
// comes in; until then space() counts them as reusable.
// See also: store.hpp, store_worker.hpp, https://sqlite.org/wal.html.
#pragma once

#include "queue/store.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

struct sqlite3;
struct sqlite3_stmt;

namespace flushgate::queue {

class sqlite_store final : public store {
 public:
  // Schema version this build writes (PRAGMA user_version).
  static constexpr int schema_version = 11;

  // Opens (creating if needed) DIR and DIR/queue.db, migrating the schema.
  static boost::system::result<std::unique_ptr<sqlite_store>> open(const std::string& dir);
  ~sqlite_store() override;
  sqlite_store(const sqlite_store&) = delete;
  sqlite_store& operator=(const sqlite_store&) = delete;

  // Path of the database file.
  const std::string& path() const noexcept { return path_; }

  boost::system::error_code add_customer(customer& c) override;
  boost::system::error_code update_customer(const customer& c) override;
  boost::system::error_code remove_customer(std::string_view name, bool force) override;
  boost::system::result<customer> find_customer(std::string_view name) override;
  boost::system::result<std::vector<customer>> list_customers() override;

  boost::system::result<std::vector<std::string>> commit_messages(
      std::span<const new_message> batch) override;

  boost::system::error_code import_message(const message_info& m, std::string_view content) override;
  boost::system::result<std::vector<message_info>> list_messages(std::int64_t customer_id,
                                                                 std::size_t limit) override;
  boost::system::result<message_info> find_message(std::string_view qid) override;
  boost::system::result<std::string> read_content(std::string_view qid) override;
  boost::system::error_code set_held(std::string_view qid, bool held) override;
  boost::system::error_code delete_message(std::string_view qid) override;
  boost::system::result<std::vector<queue_stats>> queue_summary() override;
  boost::system::result<queue_stats> customer_stats(std::int64_t customer_id) override;
  boost::system::result<std::vector<age_bucket>> queue_age_histogram(
      std::int64_t customer_id, std::int64_t now,
      std::span<const std::int64_t> upper_bounds) override;

  boost::system::result<std::vector<message_info>> list_deliverable(
      std::int64_t customer_id, std::string_view after_qid, std::size_t limit) override;
  boost::system::result<attempt_result> record_attempt(
      std::string_view qid, std::span<const recipient_update> updates, std::int64_t next_attempt,
      std::span<const new_message> notices) override;
  boost::system::result<std::vector<attempt_result>> record_attempts(
      std::span<const attempt> attempts) override;
  boost::system::result<std::vector<std::string>> record_delay_notice(
      std::string_view qid, std::span<const std::int64_t> recipient_ids,
      std::span<const new_message> notices) override;
  boost::system::result<std::vector<message_info>> list_due_notices(
      std::int64_t customer_id, std::int64_t delay_before, std::int64_t expire_before,
      std::size_t limit) override;

  boost::system::error_code save_link(const link_record& link) override;
  boost::system::error_code remove_link(std::string_view user,
                                        std::string_view session_id) override;
  boost::system::result<std::vector<link_record>> list_links() override;
  boost::system::result<std::uint64_t> add_allowed_recipients(
      std::int64_t customer_id, std::span<const std::string> addresses) override;
  boost::system::result<std::uint64_t> remove_allowed_recipients(
      std::int64_t customer_id, std::span<const std::string> addresses) override;
  boost::system::error_code save_known_recipients(std::span<const known_recipient> items) override;
  boost::system::result<std::vector<known_recipient>> list_known_recipients(
      std::int64_t customer_id) override;
  boost::system::result<std::vector<known_recipient>> list_known_recipients_since(
      std::int64_t since) override;
  boost::system::result<std::map<std::int64_t, std::uint64_t>> count_known_recipients() override;
  boost::system::result<std::uint64_t> forget_known_recipients(std::int64_t customer_id,
                                                               std::string_view address) override;
  boost::system::result<std::uint64_t> expire_known_recipients(std::int64_t good_before,
                                                               std::int64_t bad_before) override;

  boost::system::result<lease_take> take_lease(std::int64_t customer_id, std::string_view node,
                                               std::int64_t now,
                                               std::int64_t duration_ms) override;
  boost::system::result<std::int64_t> renew_lease(std::int64_t customer_id,
                                                  std::string_view node, std::int64_t fence,
                                                  std::int64_t now,
                                                  std::int64_t duration_ms) override;
  boost::system::error_code release_lease(std::int64_t customer_id, std::string_view node,
                                          std::int64_t fence) override;
  boost::system::result<std::vector<delivery_lease>> list_leases() override;
  boost::system::result<space_info> space() override;
  boost::system::result<std::uint64_t> release_space(std::uint64_t max_bytes) override;
  boost::system::error_code heartbeat(const node_record& node) override;
  boost::system::result<std::vector<node_record>> list_nodes() override;
  boost::system::error_code save_retry(const retry_record& r) override;
  boost::system::result<std::vector<retry_record>> list_retries() override;
  boost::system::error_code record_event(const event_record& e) override;
  boost::system::result<std::vector<event_record>> list_events(std::size_t limit) override;

  // A store from before incremental vacuum (auto_vacuum = none) up to this
  // size is rebuilt at open (one VACUUM, before the daemon serves); a larger
  // one keeps reusing its free pages but gives none back to the file system.
  static constexpr std::uint64_t max_vacuum_at_open = 256ull << 20;

  // The exact SQL of list_deliverable (customer, after_qid, limit), for query-plan tests.
  static const char* deliverable_sql() noexcept;
  // The exact SQL of list_due_notices (customer, arrival bound, expire_before, limit), ditto.
  static const char* due_notices_sql() noexcept;
  // The exact SQL of queue_summary and of customer_stats (customer), ditto.
  static const char* summary_sql() noexcept;
  static const char* customer_stats_sql() noexcept;
  // The exact SQL counting one age bucket of queue_age_histogram, for one customer or all.
  static const char* age_bucket_sql(bool one_customer) noexcept;

 private:
  // Runs `sql` (?1 customer, ?2 address) once per address, in the caller's
  // transaction; the rows it changed in all.
  boost::system::result<std::uint64_t> per_address(const char* sql, const char* what, std::int64_t customer_id,
                                                   std::span<const std::string> addresses);
  // The rows of a known_recipients SELECT with at most one parameter.
  boost::system::result<std::vector<known_recipient>> read_known_recipients(const char* sql,
                                                                           std::optional<std::int64_t> arg);
  class statement;
  static void bind_customer_columns(statement& s, const customer& c, const std::string& networks);
  class transaction;

  sqlite_store(sqlite3* db, std::string path);

  // The cached prepared statement for sql (a string literal), reset and
  // unbound; nullptr (and last_rc_ set) when it cannot be prepared.
  sqlite3_stmt* prepare(const char* sql);
  // Maps a failed SQLite result to errc and logs what failed.
  boost::system::error_code fail(int rc, std::string_view what);
  boost::system::error_code migrate();
  // Turns on incremental vacuum for a store made before it (see max_vacuum_at_open).
  boost::system::error_code enable_incremental_vacuum();
  // One integer PRAGMA (freelist_count, page_size, auto_vacuum); -1 on failure.
  std::int64_t pragma_int(const char* sql);
  boost::system::error_code exec(const char* sql, std::string_view what);
  boost::system::result<std::int64_t> customer_id_of(std::string_view name);
  boost::system::error_code check_customer_free(const customer& c, std::int64_t self);
  // Writes domains, link users and the recipient list of c (inside a transaction).
  boost::system::error_code write_customer_details(std::int64_t id, const customer& c);
  // Fills in the domains, link users and recipient lists of customers.
  boost::system::error_code read_customer_details(std::vector<customer>& customers);
  // Reads the customer rows of s (bound by the caller) with their lists.
  boost::system::result<std::vector<customer>> read_customers(sqlite3_stmt* s);
  // Inserts batch inside the caller's transaction, appending one qid per
  // message; a message naming a customer that does not exist gives missing.
  boost::system::error_code insert_messages(std::span<const new_message> batch, errc missing,
                                            std::vector<std::string>& qids);
  // Inserts one message row and its recipients, every column as given,
  // inside the caller's transaction: an unknown customer gives missing, a
  // queue id already present gives duplicate (io_error: report it as a failure).
  boost::system::error_code insert_message_row(const message_info& m, std::string_view content,
                                               errc missing, errc duplicate);
  // Applies one attempt inside the caller's transaction, filling out.
  boost::system::error_code apply_attempt(std::string_view qid,
                                          std::span<const recipient_update> updates,
                                          std::int64_t next_attempt,
                                          std::span<const new_message> notices,
                                          attempt_result& out);
  // The row id of the message qid (inside a transaction), or not_found.
  boost::system::result<std::int64_t> message_id_of(std::string_view qid);
  boost::system::error_code read_recipients(message_info& m, std::int64_t message_id);
  boost::system::result<std::vector<message_info>> read_messages(sqlite3_stmt* s,
                                                                 std::string_view what);

  sqlite3* db_;
  std::string path_;
  int last_rc_ = 0;
  std::unordered_map<std::string_view, sqlite3_stmt*> cache_;  // keys: string literals
};

}  // namespace flushgate::queue
