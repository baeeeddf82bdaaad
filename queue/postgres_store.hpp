// postgres_store.hpp — the queue store on PostgreSQL: one database shared by
// several gateway nodes.
//
// Purpose: the cluster backend of store (store.hpp), selected with
// `store = postgresql` and `postgresql_conninfo` (core/config_table.cpp). It
// talks to the server with libpq, over one connection used by the store
// thread. Message bodies are bytea columns written in the same transaction as
// their envelope, so the COMMIT that makes the envelope durable makes the
// body durable too (large objects would need a second write path, their own
// cleanup and a vacuumlo; a body is at most message_size_limit, well under
// bytea's 1 GB). Measured (scripts/bench/bytea-vs-lo, 5000 × 5 KB): large
// objects took 1.4× as long to write and 2.5× as long to delete, read about
// as fast, and took the same space. Every session runs `SET synchronous_commit = on`, so
// commit_messages returns only after the server has flushed its WAL for the
// COMMIT ("250 only after fsync", ARCHITECTURE.md invariant 1); open() warns
// when the server runs with fsync = off, which no client setting can undo.
// Group commit: the batch of one commit_messages call is ONE transaction sent
// in libpq pipeline mode — BEGIN, one INSERT per message (the message and its
// recipients in one statement), COMMIT — so a batch costs one round trip to
// the server per 64 messages (results are read in windows of 64, so that
// neither side stalls on a full socket) and one WAL flush. Measured on the
// development VM (2 shared cores, load about 3, fsync on, local server, 200
// messages of 2 KB with 3 recipients; store_test
// --gtest_filter='*GroupCommitFigures' --gtest_also_run_disabled_tests,
// three runs, noisy): one message per commit 0.7-1.1 ms per message,
// batches of 20 0.33-0.66 ms, batches of 200 0.25-0.44 ms — sharing the WAL
// flush is most of the gain. Against the same statements sent one round
// trip at a time, pipelining saved 0-40% on loopback (e.g. 0.25 vs 0.40 ms
// per message at 200 over TCP); the saving grows with the network's round
// trip time, which a sequential batch pays once per message.
// Queue ids: each node registers its node_name in the `nodes` table at open
// and gets a number 0-255 that no other name holds; its queue ids carry that
// number in their low 8 bits (queue_id.hpp, node_queue_ids), so nodes never
// make the same id and all ids sort by arrival time to the microsecond. At
// open, a node's ids start after the greatest id queued in the database, so
// a clock that stepped back while it was down never repeats a queued id.
// node_name must be unique per running node (default: myhostname).
// Connection loss: an operation on a broken connection (the server
// restarted, the network failed) returns io_error — never a success, and a
// commit whose COMMIT reply was lost is io_error too (the sender retries:
// at-least-once) — and the next call reconnects, at most one attempt per
// backoff interval (250 ms doubling to 5 s), so a dead server is not
// hammered. The loss is logged once as a warning, the recovery once.
// Security: every value is a query parameter, never SQL text. The password
// in a conninfo never appears in logs (core::mask_conninfo_password); prefer
// a passfile (~/.pgpass or passfile=) so it is not in the configuration.
// Errors: queue::errc, with sqlite_store's contract (sqlite_store.hpp):
// SQLSTATE 53100 (disk full) gives disk_full; a foreign key naming a missing
// customer gives not_found (commit_messages, save_link) or invalid_argument
// (notices); a unique key lost to another node gives name_taken or
// domain_taken; connection failures and every other error give io_error,
// details in the log. A failed write rolls its transaction back.
// Schema: versioned in the table flushgate_schema, migrated at open in one
// transaction under an advisory lock (two nodes starting together migrate
// once); a database from a newer flushgate is refused (io_error). The
// database should be created with ENCODING 'SQL_ASCII' (README): envelope
// fields are bytes from the network, and a UTF8 database refuses the rare
// 8-bit ones (io_error, so the sender gets 451, never a lost message).
// Leases: take_lease is one INSERT ... ON CONFLICT DO UPDATE ... WHERE
// (free, expired or ours) RETURNING: atomic across nodes, exactly one of
// several racing nodes gets the lease. now = 0 is the database server's
// clock, so nodes with skewed clocks agree on every expiry.
// Threads: one postgres_store is used by one thread at a time.
// Limitations: space() and release_space() return zeros (the files are not
// on this host; autovacuum gives room back). A query blocked by an
// unresponsive server (no RST, no FIN) waits for the kernel's TCP timeouts;
// put keepalives/tcp_user_timeout in the conninfo where that matters.
// See also: store.hpp, sqlite_store.hpp, queue_id.hpp,
// https://www.postgresql.org/docs/15/libpq-pipeline-mode.html.
#pragma once

#include "queue/queue_id.hpp"
#include "queue/store.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct pg_conn;
struct pg_result;

namespace flushgate::queue {

struct postgres_options {
  std::string conninfo;   // libpq keyword string or URI
  std::string node_name;  // this node's name in the nodes table; unique per node
  std::chrono::milliseconds min_retry{250};   // first reconnect backoff
  std::chrono::milliseconds max_retry{5000};  // backoff ceiling
};

// What a foreign-key violation means for the statement at hand (postgres_store::run).
struct postgres_violation {
  errc foreign_key = errc::io_error;
};

class postgres_store final : public store {
 public:
  // Schema version this build writes (table flushgate_schema).
  static constexpr int schema_version = 6;

  // Connects, migrates the schema and registers the node. Fails (io_error)
  // when the server cannot be reached: the daemon does not start without
  // its queue.
  static boost::system::result<std::unique_ptr<postgres_store>> open(postgres_options options);
  ~postgres_store() override;
  postgres_store(const postgres_store&) = delete;
  postgres_store& operator=(const postgres_store&) = delete;

  // This node's number (the low 8 bits of its queue ids).
  std::uint8_t node_number() const noexcept { return ids_->node(); }
  // True while the last operation found the connection working.
  bool connected() const noexcept;

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
  boost::system::result<std::vector<std::string>> read_contents(
      std::span<const std::string> qids) override;
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
  boost::system::error_code heartbeat(const node_record& node) override;
  boost::system::result<std::vector<node_record>> list_nodes() override;
  boost::system::error_code save_retry(const retry_record& r) override;
  boost::system::result<std::vector<retry_record>> list_retries() override;
  boost::system::error_code record_event(const event_record& e) override;
  boost::system::result<std::vector<event_record>> list_events(std::size_t limit) override;
  boost::system::result<space_info> space() override;
  boost::system::result<std::uint64_t> release_space(std::uint64_t max_bytes) override;

 private:
  // The rows of a known_recipients SELECT (the columns of known_recipient, in order).
  static std::vector<known_recipient> known_rows(pg_result* res);
  class params;
  class transaction;
  struct result_deleter {
    void operator()(pg_result* r) const noexcept;
  };
  using result_ptr = std::unique_ptr<pg_result, result_deleter>;

  explicit postgres_store(postgres_options options);

  // Connects (or reconnects, honouring the backoff) and prepares the session.
  boost::system::error_code connect();
  boost::system::error_code ensure_connected();
  // Marks the connection lost (logged once) and returns io_error.
  boost::system::error_code lose_connection(std::string_view what, std::string_view why);
  // Runs one statement; its result on success, else the mapped error (logged).
  boost::system::result<result_ptr> run(const char* sql, const params& p, std::string_view what,
                                        postgres_violation v = {}, int result_format = 0);
  boost::system::error_code run_void(const char* sql, std::string_view what);
  // Sends every statement of `batch` at once (libpq pipeline mode) and reads
  // all answers: per statement the rows it returned or touched (-1 for one
  // without such an answer, e.g. a COMMIT the server answered with
  // ROLLBACK), or the first error.
  struct pipelined;
  boost::system::result<std::vector<std::int64_t>> run_pipelined(std::vector<pipelined>& batch,
                                                                 std::string_view what);
  // Maps a failed result (or a null one) to errc and logs what failed.
  boost::system::error_code fail(const pg_result* r, std::string_view what, postgres_violation v);
  boost::system::error_code migrate_and_register(std::uint8_t& node);

  boost::system::result<std::int64_t> customer_id_of(std::string_view name);
  boost::system::error_code check_customer_free(const customer& c, std::int64_t self);
  boost::system::error_code write_customer_details(std::int64_t id, const customer& c);
  boost::system::result<std::vector<customer>> read_customers(const char* sql, const params& p);
  // Inserts batch inside the caller's transaction (one statement per message).
  boost::system::error_code insert_messages(std::span<const new_message> batch, errc missing,
                                            std::vector<std::string>& qids);
  // Appends the statements of one attempt to a pipelined batch.
  void add_attempt_statements(const attempt& a, std::vector<std::string>& notice_qids,
                              std::vector<pipelined>& batch);
  boost::system::result<std::int64_t> message_id_of(std::string_view qid);
  boost::system::result<std::vector<message_info>> read_messages(const char* sql, const params& p,
                                                                 std::string_view what);

  postgres_options options_;
  std::unique_ptr<node_queue_ids> ids_;  // set by open() once the node has its number
  pg_conn* conn_ = nullptr;
  bool in_transaction_ = false;  // a transaction is open: never reconnect halfway
  bool lost_ = false;  // the loss was logged; log the recovery next
  std::chrono::milliseconds backoff_;
  std::chrono::steady_clock::time_point next_attempt_{};
};

}  // namespace flushgate::queue
