// sqlite_store.cpp — see sqlite_store.hpp.
//
// Schema, version 11 (PRAGMA user_version = 11): version 1 below, then the
// migrations schema_v2 ... schema_v11. A released version is never edited: an
// existing database only ever moves forward through migrations[].
//
// Version 1:
//
//   customers           one row per customer; its list-valued fields live in
//                       the three child tables below (ON DELETE CASCADE).
//                       has_recipients tells an empty recipient list (refuse
//                       everyone) from none at all (accept every local part).
//   domains             domain PRIMARY KEY -> customer: a domain belongs to at
//                       most one customer, enforced by the key itself.
//                       position keeps the operator's order.
//   link_users          RADIUS/pppd user PRIMARY KEY -> customer, kind, net.
//   allowed_recipients  (customer, address) pairs of the optional list.
//   messages            one row per queued message for one customer: the
//                       envelope and, as the last column, the body as a BLOB,
//                       written in the same transaction so that one fsync
//                       covers both. customer_id has no cascade: a customer
//                       with mail cannot vanish by accident (remove_customer
//                       deletes the mail first when forced).
//   recipients          one row per RCPT with its delivery state; deleting a
//                       message deletes them (ON DELETE CASCADE).
//
// Indexes: messages_by_customer (customer_id, arrival, id, size) covers
// customer_stats (count, sum(size), min(arrival) read from the index alone,
// never touching the body pages) and lists one customer's messages in
// arrival order without a sort; messages_by_arrival lists all customers'
// messages in arrival order; recipients_by_message serves the per-message
// lookups and the cascade; the customer_id indexes of the child tables serve
// loading a customer and the cascades.
//
// Version 2 adds:
//
//   links               one live session per RADIUS/pppd user (PRIMARY KEY):
//                       a newer session of the same user replaces the row.
//                       Goes with its customer (ON DELETE CASCADE, served by
//                       links_by_customer).
//   messages_deliverable  (customer_id, held, qid): list_deliverable reads
//                       one customer's unheld mail after a qid in qid order
//                       straight from the index, without a sort and without
//                       touching held messages' rows.
//
// Versions 3 and 4 add customer columns (tls; credential, etrn_networks).
//
// Version 5 replaces messages_by_arrival with messages_by_arrival_size
// (arrival, id, size): the whole queue's age histogram sums size over
// arrival ranges from the index alone, and listing all messages in
// (arrival, id) order still needs no sort. One customer's histogram reads
// messages_by_customer the same way.
//
// Version 6 adds
//
//   queue_totals        customer PRIMARY KEY -> queued messages and bytes,
//                       kept by three triggers on messages (insert, delete,
//                       update of customer_id or size) inside the writing
//                       transaction, so it always equals the aggregate of
//                       messages; goes with its customer (ON DELETE CASCADE).
//                       queue_summary and customer_stats read it, plus one
//                       seek into messages_by_customer for the oldest
//                       arrival, instead of every message's index entry.
//
// Version 7 adds
//
//   leases              customer PRIMARY KEY -> the node delivering it
//                       (holder, '' when free), fence, expires, taken
//                       (store.hpp, delivery leases). A released lease keeps
//                       its row, so its fence only ever grows; goes with its
//                       customer (ON DELETE CASCADE).
//
// Version 8 adds what a cluster's nodes share (the same interface on both
// backends; the daemon on SQLite, one node, uses none of it yet)
//
//   nodes               name PRIMARY KEY -> version, started (unix s),
//                       heartbeat (unix ms)
//   retries             customer PRIMARY KEY -> failures, next_try (unix ms),
//                       node; goes with its customer
//   events              the recent-events list, id AUTOINCREMENT; each
//                       insert drops what falls beyond max_stored_events
//
// Version 11 adds the original client of each message field by field
// (messages.client_address, client_name, client_helo, client_proto,
// client_port; XFORWARD at flush time) and customers.forward_client.
//
// Version 10 adds recipient checks: customers.recipient_check and
// customers.unknown_recipients, and
//
//   known_recipients    (customer, address) PRIMARY KEY -> good or bad,
//                       source, first and last seen; goes with its customer;
//                       known_recipients_by_last_seen serves the expiry.
//
// Version 9 adds IPv6 lines: links.ipv6_address and links.ipv6_prefix
// (an IPv6 address that an older version kept in links.address moves),
// customers.ipv6_server and customers.prefer_family.
//
// list_due_notices needs no index of its own: it walks messages_by_customer
// in arrival order up to the later of its two thresholds, so the young mail
// of a large queue (the bulk of it) is never read.
#include "queue/sqlite_store.hpp"

#include "core/log.hpp"
#include "queue/queue_id.hpp"
#include "queue/store_checks.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>

namespace flushgate::queue {

namespace {

using boost::system::error_code;

constexpr const char* schema_v1 = R"sql(
CREATE TABLE customers (
  id              INTEGER PRIMARY KEY,
  name            TEXT    NOT NULL UNIQUE,
  subdomains      INTEGER NOT NULL DEFAULT 0,
  state           TEXT    NOT NULL,
  mode            TEXT    NOT NULL,
  route           TEXT    NOT NULL DEFAULT '',
  link_port       INTEGER NOT NULL DEFAULT 25,
  has_recipients  INTEGER NOT NULL DEFAULT 0,
  max_size        INTEGER NOT NULL DEFAULT 0,
  quota           INTEGER NOT NULL DEFAULT 0,
  queue_lifetime  INTEGER NOT NULL DEFAULT 0,
  delay_warning   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE domains (
  domain       TEXT    PRIMARY KEY,
  customer_id  INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  position     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX domains_by_customer ON domains(customer_id, position);
CREATE TABLE link_users (
  user         TEXT    PRIMARY KEY,
  customer_id  INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  position     INTEGER NOT NULL,
  kind         TEXT    NOT NULL,
  allowed_net  TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX link_users_by_customer ON link_users(customer_id, position);
CREATE TABLE allowed_recipients (
  customer_id  INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  address      TEXT    NOT NULL,
  PRIMARY KEY (customer_id, address)
) WITHOUT ROWID;
CREATE TABLE messages (
  id           INTEGER PRIMARY KEY,
  qid          TEXT    NOT NULL UNIQUE,
  customer_id  INTEGER NOT NULL REFERENCES customers(id),
  sender       TEXT    NOT NULL,
  arrival      INTEGER NOT NULL,
  size         INTEGER NOT NULL,
  held         INTEGER NOT NULL DEFAULT 0,
  envid        TEXT    NOT NULL DEFAULT '',
  ret          TEXT    NOT NULL DEFAULT '',
  body_type    TEXT    NOT NULL DEFAULT '',
  client       TEXT    NOT NULL DEFAULT '',
  content      BLOB    NOT NULL
);
CREATE INDEX messages_by_customer ON messages(customer_id, arrival, id, size);
CREATE INDEX messages_by_arrival ON messages(arrival);
CREATE TABLE recipients (
  id              INTEGER PRIMARY KEY,
  message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  address         TEXT    NOT NULL,
  orcpt           TEXT    NOT NULL DEFAULT '',
  notify          TEXT    NOT NULL DEFAULT '',
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt    INTEGER NOT NULL DEFAULT 0,
  last_reply      TEXT    NOT NULL DEFAULT '',
  delay_notified  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX recipients_by_message ON recipients(message_id);
)sql";

// Version 1 -> 2: live links, and the index of deliverable mail.
constexpr const char* schema_v2 = R"sql(
CREATE TABLE links (
  user         TEXT    PRIMARY KEY,
  customer_id  INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  kind         TEXT    NOT NULL,
  session_id   TEXT    NOT NULL DEFAULT '',
  address      TEXT    NOT NULL DEFAULT '',
  nas          TEXT    NOT NULL DEFAULT '',
  source       TEXT    NOT NULL DEFAULT '',
  since        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX links_by_customer ON links(customer_id);
CREATE INDEX messages_deliverable ON messages(customer_id, held, qid);
)sql";

// v2 -> v3: the customer's STARTTLS policy toward its server ("" = smtp_tls).
constexpr const char* schema_v3 = R"sql(
ALTER TABLE customers ADD COLUMN tls TEXT NOT NULL DEFAULT '';
)sql";

// v3 -> v4: the customer's login for ETRN/ODMR (a key schedule, never the
// password) and the networks allowed to ETRN without logging in
// (comma-separated CIDRs).
constexpr const char* schema_v4 = R"sql(
ALTER TABLE customers ADD COLUMN credential TEXT NOT NULL DEFAULT '';
ALTER TABLE customers ADD COLUMN etrn_networks TEXT NOT NULL DEFAULT '';
)sql";

// v4 -> v5: the queue's age histogram over all customers reads (arrival,
// size) ranges from an index alone; messages_by_arrival had no size, so
// each message cost a lookup of its row (a page of its own, next to the
// body): seconds for a million messages. The new index keeps id after
// arrival, so it still lists all messages in (arrival, id) order without a
// sort, and replaces the old one (no extra index to write per message).
constexpr const char* schema_v5 = R"sql(
CREATE INDEX messages_by_arrival_size ON messages(arrival, id, size);
DROP INDEX messages_by_arrival;
)sql";

// v5 -> v6: each customer's queued messages and bytes, kept by triggers in
// the same transaction as every insert and delete of a message (whatever
// path deletes it: delivery, an operator, a forced removal), so that
// queue_summary and customer_stats read one row per customer instead of
// aggregating every message's index entry: a third of a second for a
// million messages, on every restart and every `flushgate queue summary`,
// with the store thread (and so every commit) waiting meanwhile; tens of
// milliseconds for one customer holding 100,000. Filled from the messages
// here.
constexpr const char* schema_v6 = R"sql(
CREATE TABLE queue_totals (
  customer_id  INTEGER PRIMARY KEY REFERENCES customers(id) ON DELETE CASCADE,
  messages     INTEGER NOT NULL,
  bytes        INTEGER NOT NULL
);
INSERT INTO queue_totals (customer_id, messages, bytes)
  SELECT customer_id, count(*), sum(size) FROM messages GROUP BY customer_id;
CREATE TRIGGER queue_totals_insert AFTER INSERT ON messages BEGIN
  INSERT INTO queue_totals (customer_id, messages, bytes) VALUES (NEW.customer_id, 1, NEW.size)
    ON CONFLICT (customer_id) DO UPDATE SET messages = messages + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER queue_totals_delete AFTER DELETE ON messages BEGIN
  UPDATE queue_totals SET messages = messages - 1, bytes = bytes - OLD.size
    WHERE customer_id = OLD.customer_id;
END;
CREATE TRIGGER queue_totals_update AFTER UPDATE OF customer_id, size ON messages BEGIN
  UPDATE queue_totals SET messages = messages - 1, bytes = bytes - OLD.size
    WHERE customer_id = OLD.customer_id;
  INSERT INTO queue_totals (customer_id, messages, bytes) VALUES (NEW.customer_id, 1, NEW.size)
    ON CONFLICT (customer_id) DO UPDATE SET messages = messages + 1, bytes = bytes + NEW.size;
END;
)sql";

// v6 -> v7: delivery leases (one delivering node per customer).
constexpr const char* schema_v7 = R"sql(
CREATE TABLE leases (
  customer_id  INTEGER PRIMARY KEY REFERENCES customers(id) ON DELETE CASCADE,
  holder       TEXT    NOT NULL,
  fence        INTEGER NOT NULL,
  expires      INTEGER NOT NULL,
  taken        INTEGER NOT NULL
);
)sql";

// v7 -> v8: nodes, retry state and events (store.hpp).
constexpr const char* schema_v8 = R"sql(
CREATE TABLE nodes (
  name       TEXT    PRIMARY KEY,
  version    TEXT    NOT NULL,
  started    INTEGER NOT NULL,
  heartbeat  INTEGER NOT NULL
);
CREATE TABLE retries (
  customer_id  INTEGER PRIMARY KEY REFERENCES customers(id) ON DELETE CASCADE,
  failures     INTEGER NOT NULL,
  next_try     INTEGER NOT NULL,
  node         TEXT    NOT NULL
);
CREATE TABLE events (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  at        INTEGER NOT NULL,
  node      TEXT    NOT NULL,
  kind      TEXT    NOT NULL,
  customer  TEXT    NOT NULL,
  detail    TEXT    NOT NULL
);
)sql";

// v8 -> v9: IPv6 lines. A link keeps its IPv6 address and prefix beside
// the IPv4 address (an IPv6 address given to `link up --ip` before went
// into address: it moves); a customer says where its server sits on an
// IPv6 line and which family goes first.
constexpr const char* schema_v9 = R"sql(
ALTER TABLE links ADD COLUMN ipv6_address TEXT NOT NULL DEFAULT '';
ALTER TABLE links ADD COLUMN ipv6_prefix TEXT NOT NULL DEFAULT '';
UPDATE links SET ipv6_address = address, address = '' WHERE address LIKE '%:%';
ALTER TABLE customers ADD COLUMN ipv6_server TEXT NOT NULL DEFAULT '';
ALTER TABLE customers ADD COLUMN prefer_family TEXT NOT NULL DEFAULT '';
)sql";

// v9 -> v10: recipient checks. A customer's policy and what unknown
// addresses get; the addresses its server told about (store.hpp).
constexpr const char* schema_v10 = R"sql(
ALTER TABLE customers ADD COLUMN recipient_check TEXT NOT NULL DEFAULT '';
ALTER TABLE customers ADD COLUMN unknown_recipients TEXT NOT NULL DEFAULT '';
CREATE TABLE known_recipients (
  customer_id  INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  address      TEXT    NOT NULL,
  good         INTEGER NOT NULL,
  source       TEXT    NOT NULL,
  first_seen   INTEGER NOT NULL,
  last_seen    INTEGER NOT NULL,
  PRIMARY KEY (customer_id, address)
) WITHOUT ROWID;
CREATE INDEX known_recipients_by_last_seen ON known_recipients(last_seen);
)sql";

// v10 -> v11: the original client of each message, field by field, for
// XFORWARD/XCLIENT at flush time, and each customer's choice of which.
// Messages queued before stay without it (nothing is forwarded for them, as
// before the upgrade): filling the new columns would rewrite every row, body
// and all, in one transaction — a copy of the whole queue on a disk that a
// long-held queue may have nearly filled, and a daemon that cannot start.
constexpr const char* schema_v11 = R"sql(
ALTER TABLE messages ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN client_name TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN client_helo TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN client_proto TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN client_port INTEGER NOT NULL DEFAULT 0;
ALTER TABLE customers ADD COLUMN forward_client TEXT NOT NULL DEFAULT '';
)sql";

// migrations[k] takes the schema from version k to version k + 1.
constexpr const char* migrations[] = {schema_v1, schema_v2, schema_v3, schema_v4,
                                      schema_v5, schema_v6, schema_v7, schema_v8,
                                      schema_v9, schema_v10, schema_v11};
static_assert(std::size(migrations) == sqlite_store::schema_version);

// Statements, prepared once per connection and kept in the cache.
constexpr const char* sql_begin = "BEGIN IMMEDIATE";
constexpr const char* sql_begin_read = "BEGIN";
constexpr const char* sql_commit = "COMMIT";
constexpr const char* sql_rollback = "ROLLBACK";

constexpr const char* sql_customer_by_name =
    "SELECT id, name, subdomains, state, mode, route, link_port, has_recipients, max_size, "
    "quota, queue_lifetime, delay_warning, tls, credential, etrn_networks, ipv6_server, "
    "prefer_family, recipient_check, unknown_recipients, forward_client FROM customers WHERE name = ?1";
constexpr const char* sql_customers_all =
    "SELECT id, name, subdomains, state, mode, route, link_port, has_recipients, max_size, "
    "quota, queue_lifetime, delay_warning, tls, credential, etrn_networks, ipv6_server, "
    "prefer_family, recipient_check, unknown_recipients, forward_client FROM customers ORDER BY name";
constexpr const char* sql_customer_id_by_name = "SELECT id FROM customers WHERE name = ?1";
constexpr const char* sql_customer_exists = "SELECT 1 FROM customers WHERE id = ?1";
constexpr const char* sql_name_owner = "SELECT id FROM customers WHERE name = ?1 AND id <> ?2";
constexpr const char* sql_domain_owner =
    "SELECT customer_id FROM domains WHERE domain = ?1 AND customer_id <> ?2";
constexpr const char* sql_user_owner =
    "SELECT customer_id FROM link_users WHERE user = ?1 AND customer_id <> ?2";
constexpr int customer_columns = 19;  // bound by bind_customer_columns
constexpr const char* sql_insert_customer =
    "INSERT INTO customers (name, subdomains, state, mode, route, link_port, has_recipients, "
    "max_size, quota, queue_lifetime, delay_warning, tls, credential, etrn_networks, "
    "ipv6_server, prefer_family, recipient_check, unknown_recipients, forward_client) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
    "?19)";
// The same ?1..?19 as sql_insert_customer (bind_customer_columns), the id last.
constexpr const char* sql_update_customer =
    "UPDATE customers SET name = ?1, subdomains = ?2, state = ?3, mode = ?4, route = ?5, "
    "link_port = ?6, has_recipients = ?7, max_size = ?8, quota = ?9, queue_lifetime = ?10, "
    "delay_warning = ?11, tls = ?12, credential = ?13, etrn_networks = ?14, ipv6_server = ?15, "
    "prefer_family = ?16, recipient_check = ?17, unknown_recipients = ?18, "
    "forward_client = ?19 WHERE id = ?20";
constexpr const char* sql_set_has_recipients = "UPDATE customers SET has_recipients = 1 WHERE id = ?1";
constexpr const char* sql_delete_allowed_one =
    "DELETE FROM allowed_recipients WHERE customer_id = ?1 AND address = ?2";
constexpr const char* sql_save_known =
    "INSERT INTO known_recipients (customer_id, address, good, source, first_seen, last_seen) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (customer_id, address) DO UPDATE SET "
    "good = excluded.good, source = excluded.source, last_seen = excluded.last_seen";
constexpr const char* sql_known_one =
    "SELECT customer_id, address, good, source, first_seen, last_seen FROM known_recipients "
    "WHERE customer_id = ?1 ORDER BY address";
constexpr const char* sql_known_all =
    "SELECT customer_id, address, good, source, first_seen, last_seen FROM known_recipients "
    "ORDER BY customer_id, address";
constexpr const char* sql_known_since =
    "SELECT customer_id, address, good, source, first_seen, last_seen FROM known_recipients "
    "WHERE last_seen >= ?1 ORDER BY customer_id, address";
constexpr const char* sql_count_known =
    "SELECT customer_id, count(*) FROM known_recipients WHERE last_seen > 0 GROUP BY customer_id";
constexpr const char* sql_forget_known =
    "DELETE FROM known_recipients WHERE customer_id = ?1 AND (?2 = '' OR address = ?2)";
constexpr const char* sql_expire_known =
    "DELETE FROM known_recipients WHERE (good = 1 AND last_seen < ?1) OR (good = 0 AND last_seen < ?2)";
constexpr const char* sql_delete_domains = "DELETE FROM domains WHERE customer_id = ?1";
constexpr const char* sql_delete_users = "DELETE FROM link_users WHERE customer_id = ?1";
constexpr const char* sql_delete_allowed = "DELETE FROM allowed_recipients WHERE customer_id = ?1";
constexpr const char* sql_insert_domain =
    "INSERT INTO domains (domain, customer_id, position) VALUES (?1, ?2, ?3)";
constexpr const char* sql_insert_user =
    "INSERT INTO link_users (user, customer_id, position, kind, allowed_net) "
    "VALUES (?1, ?2, ?3, ?4, ?5)";
constexpr const char* sql_insert_allowed =
    "INSERT OR IGNORE INTO allowed_recipients (customer_id, address) VALUES (?1, ?2)";
constexpr const char* sql_domains_one =
    "SELECT customer_id, domain FROM domains WHERE customer_id = ?1 ORDER BY position";
constexpr const char* sql_domains_all =
    "SELECT customer_id, domain FROM domains ORDER BY customer_id, position";
constexpr const char* sql_users_one =
    "SELECT customer_id, user, kind, allowed_net FROM link_users WHERE customer_id = ?1 "
    "ORDER BY position";
constexpr const char* sql_users_all =
    "SELECT customer_id, user, kind, allowed_net FROM link_users ORDER BY customer_id, position";
constexpr const char* sql_allowed_one =
    "SELECT customer_id, address FROM allowed_recipients WHERE customer_id = ?1 ORDER BY address";
constexpr const char* sql_allowed_all =
    "SELECT customer_id, address FROM allowed_recipients ORDER BY customer_id, address";
constexpr const char* sql_customer_has_mail =
    "SELECT EXISTS (SELECT 1 FROM messages WHERE customer_id = ?1)";
constexpr const char* sql_delete_customer_mail = "DELETE FROM messages WHERE customer_id = ?1";
constexpr const char* sql_delete_customer = "DELETE FROM customers WHERE id = ?1";

// One message row and its recipient rows with every column: new mail
// (held 0, fresh recipient state) and imported mail (store copy) alike.
constexpr const char* sql_insert_message =
    "INSERT INTO messages (qid, customer_id, sender, arrival, size, held, envid, ret, "
    "body_type, client, content, client_address, client_name, client_helo, client_proto, "
    "client_port) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
constexpr const char* sql_insert_recipient =
    "INSERT INTO recipients (message_id, address, orcpt, notify, attempts, next_attempt, "
    "last_reply, delay_notified) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
// The three message queries select the columns read_messages expects.
constexpr const char* sql_messages_of_customer =
    "SELECT m.id, m.qid, m.customer_id, c.name, m.sender, m.arrival, m.size, m.held, "
    "m.envid, m.ret, m.body_type, m.client, m.client_address, m.client_name, m.client_helo, "
    "m.client_proto, m.client_port "
    "FROM messages m JOIN customers c ON c.id = m.customer_id "
    "WHERE m.customer_id = ?1 ORDER BY m.arrival, m.id LIMIT ?2";
constexpr const char* sql_messages_all =
    "SELECT m.id, m.qid, m.customer_id, c.name, m.sender, m.arrival, m.size, m.held, "
    "m.envid, m.ret, m.body_type, m.client, m.client_address, m.client_name, m.client_helo, "
    "m.client_proto, m.client_port "
    "FROM messages m JOIN customers c ON c.id = m.customer_id "
    "ORDER BY m.arrival, m.id LIMIT ?2";
constexpr const char* sql_message_by_qid =
    "SELECT m.id, m.qid, m.customer_id, c.name, m.sender, m.arrival, m.size, m.held, "
    "m.envid, m.ret, m.body_type, m.client, m.client_address, m.client_name, m.client_helo, "
    "m.client_proto, m.client_port "
    "FROM messages m JOIN customers c ON c.id = m.customer_id "
    "WHERE m.qid = ?1";
// held = 0 as an equality keeps the whole WHERE on messages_deliverable, so
// the rows come in qid order from the index (no sort) and the LIMIT stops
// the walk.
constexpr const char* sql_deliverable =
    "SELECT m.id, m.qid, m.customer_id, c.name, m.sender, m.arrival, m.size, m.held, "
    "m.envid, m.ret, m.body_type, m.client, m.client_address, m.client_name, m.client_helo, "
    "m.client_proto, m.client_port "
    "FROM messages m JOIN customers c ON c.id = m.customer_id "
    "WHERE m.customer_id = ?1 AND m.held = 0 AND m.qid > ?2 ORDER BY m.qid LIMIT ?3";
// ?2 is the later of the two thresholds: the range on messages_by_customer
// ends there, so younger mail is never read. Within it a message is due when
// expired (arrival <= ?3) or, failing that (so it is older than the delay
// threshold), when a recipient has not been delay-notified; the OR tests the
// cheap term first.
constexpr const char* sql_due_notices =
    "SELECT m.id, m.qid, m.customer_id, c.name, m.sender, m.arrival, m.size, m.held, "
    "m.envid, m.ret, m.body_type, m.client, m.client_address, m.client_name, m.client_helo, "
    "m.client_proto, m.client_port "
    "FROM messages m JOIN customers c ON c.id = m.customer_id "
    "WHERE m.customer_id = ?1 AND m.arrival <= ?2 AND (m.arrival <= ?3 OR EXISTS "
    "(SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.delay_notified = 0)) "
    "ORDER BY m.arrival, m.id LIMIT ?4";
constexpr const char* sql_message_id_by_qid = "SELECT id FROM messages WHERE qid = ?1";
// The message_id term makes a recipient of another message match nothing.
constexpr const char* sql_delete_recipient =
    "DELETE FROM recipients WHERE id = ?1 AND message_id = ?2";
constexpr const char* sql_defer_recipient =
    "UPDATE recipients SET attempts = attempts + 1, last_reply = ?3, next_attempt = ?4 "
    "WHERE id = ?1 AND message_id = ?2";
constexpr const char* sql_mark_delay_notified =
    "UPDATE recipients SET delay_notified = 1 WHERE id = ?1 AND message_id = ?2 "
    "AND delay_notified = 0";
constexpr const char* sql_delete_if_done =
    "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS "
    "(SELECT 1 FROM recipients WHERE message_id = ?1)";
constexpr const char* sql_save_link =
    "INSERT INTO links (user, customer_id, kind, session_id, address, nas, source, since, "
    "ipv6_address, ipv6_prefix) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (user) DO UPDATE SET "
    "customer_id = excluded.customer_id, kind = excluded.kind, session_id = excluded.session_id, "
    "address = excluded.address, nas = excluded.nas, source = excluded.source, "
    "since = excluded.since, ipv6_address = excluded.ipv6_address, "
    "ipv6_prefix = excluded.ipv6_prefix";
constexpr const char* sql_remove_link =
    "DELETE FROM links WHERE user = ?1 AND (?2 = '' OR session_id = ?2)";
// Delivery leases. ?3 is now, ?4 the new expiry. The row is taken when it
// is free or expired (expires <= now; a released row has expires 0) or
// already ours; the fence stays only when it was ours and still valid.
constexpr const char* sql_take_lease =
    "INSERT INTO leases (customer_id, holder, fence, expires, taken) VALUES (?1, ?2, 1, ?4, ?3) "
    "ON CONFLICT (customer_id) DO UPDATE SET "
    "fence = CASE WHEN holder = excluded.holder AND expires > excluded.taken THEN fence "
    "ELSE fence + 1 END, "
    "taken = CASE WHEN holder = excluded.holder AND expires > excluded.taken THEN taken "
    "ELSE excluded.taken END, "
    "holder = excluded.holder, expires = excluded.expires "
    "WHERE holder = excluded.holder OR expires <= excluded.taken "
    "RETURNING customer_id, holder, fence, expires, taken";
constexpr const char* sql_lease_of =
    "SELECT customer_id, holder, fence, expires, taken FROM leases WHERE customer_id = ?1";
constexpr const char* sql_renew_lease =
    "UPDATE leases SET expires = ?4 WHERE customer_id = ?1 AND holder = ?2 AND fence = ?3";
constexpr const char* sql_release_lease =
    "UPDATE leases SET holder = '', expires = 0 "
    "WHERE customer_id = ?1 AND holder = ?2 AND fence = ?3";
// Nodes, retry state and events (schema_v8). ?4 of the heartbeat is now in unix ms.
constexpr const char* sql_node_heartbeat =
    "INSERT INTO nodes (name, version, started, heartbeat) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (name) DO UPDATE SET version = excluded.version, started = excluded.started, "
    "heartbeat = excluded.heartbeat";
constexpr const char* sql_nodes_all =
    "SELECT name, version, started, heartbeat, ?1 - heartbeat FROM nodes ORDER BY name";
constexpr const char* sql_save_retry =
    "INSERT INTO retries (customer_id, failures, next_try, node) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (customer_id) DO UPDATE SET failures = excluded.failures, "
    "next_try = excluded.next_try, node = excluded.node";
constexpr const char* sql_clear_retry = "DELETE FROM retries WHERE customer_id = ?1";
constexpr const char* sql_retries_all =
    "SELECT customer_id, failures, next_try, node FROM retries ORDER BY customer_id";
constexpr const char* sql_record_event =
    "INSERT INTO events (at, node, kind, customer, detail) VALUES (?1, ?2, ?3, ?4, ?5)";
constexpr const char* sql_prune_events = "DELETE FROM events WHERE id <= ?1";
constexpr const char* sql_events_latest =
    "SELECT id, at, node, kind, customer, detail FROM events ORDER BY id DESC LIMIT ?1";

constexpr const char* sql_leases_all =
    "SELECT customer_id, holder, fence, expires, taken FROM leases WHERE holder <> '' "
    "ORDER BY customer_id";

constexpr const char* sql_links_all =
    "SELECT user, customer_id, kind, session_id, address, nas, source, since, ipv6_address, "
    "ipv6_prefix FROM links ORDER BY user";
constexpr const char* sql_recipients_of =
    "SELECT id, address, orcpt, notify, attempts, next_attempt, last_reply, delay_notified "
    "FROM recipients WHERE message_id = ?1 ORDER BY id";
constexpr const char* sql_content_by_qid = "SELECT content FROM messages WHERE qid = ?1";
constexpr const char* sql_set_held = "UPDATE messages SET held = ?2 WHERE qid = ?1";
constexpr const char* sql_delete_message = "DELETE FROM messages WHERE qid = ?1";
// Counts and bytes from queue_totals (one row per customer), the oldest
// arrival from one seek into messages_by_customer each (min() on the column
// after the equality reads the first index entry only).
constexpr const char* sql_summary =
    "SELECT t.customer_id, c.name, t.messages, t.bytes, "
    "(SELECT min(m.arrival) FROM messages m WHERE m.customer_id = t.customer_id) "
    "FROM queue_totals t JOIN customers c ON c.id = t.customer_id "
    "WHERE t.messages > 0 ORDER BY c.name";
constexpr const char* sql_customer_name = "SELECT name FROM customers WHERE id = ?1";
constexpr const char* sql_customer_stats =
    "SELECT coalesce((SELECT messages FROM queue_totals WHERE customer_id = ?1), 0), "
    "coalesce((SELECT bytes FROM queue_totals WHERE customer_id = ?1), 0), "
    "coalesce((SELECT min(arrival) FROM messages WHERE customer_id = ?1), 0)";

// One bucket of queue_age_histogram: an inclusive range of arrival times.
// Both read (arrival, size) from an index alone, never the message rows.
constexpr const char* sql_age_bucket_of_customer =
    "SELECT count(*), coalesce(sum(size), 0) FROM messages "
    "WHERE customer_id = ?1 AND arrival BETWEEN ?2 AND ?3";
constexpr const char* sql_age_bucket_all =
    "SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE arrival BETWEEN ?2 AND ?3";

// SQLite reads a negative LIMIT as no limit; the store's limit 0 means the same.
std::int64_t sql_limit(std::size_t limit) {
  return limit == 0 || limit > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())
             ? -1
             : static_cast<std::int64_t>(limit);
}

using detail::all_have_recipients;
using detail::join_list;
using detail::split_list;
using detail::unique_ids;
using detail::valid_attempt;
using detail::valid_customer;

}  // namespace

// A borrowed cached statement: bound on the way in, reset and unbound on the
// way out, so the next user of the cache finds it clean.
class sqlite_store::statement {
 public:
  explicit statement(sqlite3_stmt* s) noexcept : s_(s) {}
  ~statement() {
    if (s_ != nullptr) {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
  }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  explicit operator bool() const noexcept { return s_ != nullptr; }
  sqlite3_stmt* get() const noexcept { return s_; }

  // Text is bound without a copy (SQLITE_STATIC): the value outlives step().
  // SQLITE_STATIC: the text is not copied, so it must outlive the step.
  // A temporary string would dangle; those overloads do not compile.
  void bind(int i, std::string_view v) {
    note(sqlite3_bind_text(s_, i, v.data() != nullptr ? v.data() : "",
                           static_cast<int>(v.size()), SQLITE_STATIC));
  }
  void bind(int i, const char* v) { bind(i, std::string_view(v)); }  // literals live forever
  void bind(int i, std::string&& v) = delete;
  void bind_blob(int i, std::string&& v) = delete;
  void bind(int i, std::int64_t v) { note(sqlite3_bind_int64(s_, i, v)); }
  void bind_blob(int i, std::string_view v) {
    // Bodies above SQLite's 1 GB limit fail here with SQLITE_TOOBIG.
    if (v.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
      note(SQLITE_TOOBIG);
      return;
    }
    note(sqlite3_bind_blob(s_, i, v.data() != nullptr ? v.data() : "",
                           static_cast<int>(v.size()), SQLITE_STATIC));
  }
  // SQLITE_ROW, SQLITE_DONE or an error (a failed bind included).
  int step() { return bind_rc_ != SQLITE_OK ? bind_rc_ : sqlite3_step(s_); }

  std::int64_t int64(int col) const { return sqlite3_column_int64(s_, col); }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(s_, col);
    const int n = sqlite3_column_bytes(s_, col);
    return p != nullptr ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n))
                        : std::string();
  }
  std::string blob(int col) const {
    const void* p = sqlite3_column_blob(s_, col);
    const int n = sqlite3_column_bytes(s_, col);
    return p != nullptr ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n))
                        : std::string();
  }

 private:
  void note(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  sqlite3_stmt* s_;
  int bind_rc_ = SQLITE_OK;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back when left without a commit. IMMEDIATE
// takes the write lock at once, so a COMMIT never meets SQLITE_BUSY halfway.
// A reading transaction (plain BEGIN) takes no lock: it only makes several
// queries see one snapshot (WAL), and its COMMIT writes nothing.
class sqlite_store::transaction {
 public:
  enum mode { writing, reading };
  explicit transaction(sqlite_store& st, mode m = writing) noexcept : st_(st), mode_(m) {}
  ~transaction() {
    if (open_) rollback();
  }
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;

  error_code begin() {
    statement s{st_.prepare(mode_ == writing ? sql_begin : sql_begin_read)};
    if (!s) return st_.fail(st_.last_rc_, "prepare BEGIN");
    const int rc = s.step();
    if (rc != SQLITE_DONE) return st_.fail(rc, mode_ == writing ? "BEGIN IMMEDIATE" : "BEGIN");
    open_ = true;
    return {};
  }

  // With synchronous=FULL in WAL mode, COMMIT returns after the WAL is fsync'd.
  error_code commit() {
    statement s{st_.prepare(sql_commit)};
    if (!s) return st_.fail(st_.last_rc_, "prepare COMMIT");
    const int rc = s.step();
    if (rc != SQLITE_DONE) return st_.fail(rc, "COMMIT");
    open_ = false;
    return {};
  }

 private:
  // After some errors (SQLITE_FULL, SQLITE_IOERR) SQLite has already rolled
  // the transaction back itself; a second ROLLBACK would only fail.
  void rollback() {
    open_ = false;
    if (sqlite3_get_autocommit(st_.db_) != 0) return;
    statement s{st_.prepare(sql_rollback)};
    if (!s) {
      sqlite3_exec(st_.db_, sql_rollback, nullptr, nullptr, nullptr);
      return;
    }
    if (const int rc = s.step(); rc != SQLITE_DONE) st_.fail(rc, "ROLLBACK");
  }

  sqlite_store& st_;
  mode mode_;
  bool open_ = false;
};

sqlite_store::sqlite_store(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

sqlite_store::~sqlite_store() {
  for (auto& entry : cache_) sqlite3_finalize(entry.second);
  cache_.clear();
  sqlite3_close_v2(db_);
}

boost::system::result<std::unique_ptr<sqlite_store>> sqlite_store::open(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code fec;
  // A spool we create is private: queued mail is nobody else's business.
  if (fs::create_directories(dir, fec)) {
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, fec);
  }
  if (fec) {
    core::log_error("queue store: cannot create {}: {}", dir, fec.message());
    return errc::io_error;
  }
  std::string path = (fs::path(dir) / "queue.db").string();
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    core::log_error("queue store: cannot open {}: {}", path,
                    db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return (rc & 0xff) == SQLITE_FULL ? errc::disk_full : errc::io_error;
  }
  std::unique_ptr<sqlite_store> s(new sqlite_store(db, std::move(path)));
  sqlite3_extended_result_codes(db, 1);
  // Another process (an operator's sqlite3 shell, a backup) may hold the
  // lock for a moment; wait for it rather than failing a commit at once.
  sqlite3_busy_timeout(db, 5000);

  // Incremental vacuum (see release_space): takes effect only on a database
  // that has no table yet, i.e. a new spool; older ones are handled after
  // the migration (enable_incremental_vacuum).
  if (auto ec = s->exec("PRAGMA auto_vacuum=INCREMENTAL", "PRAGMA auto_vacuum")) return ec;

  // WAL: readers never block the writer, and a commit is one sequential
  // append. synchronous=FULL: the WAL is fsync'd at every COMMIT, which is
  // what "250 only after fsync" rests on (NORMAL would sync only at
  // checkpoints and could lose the last commits in a power cut).
  {
    sqlite3_stmt* raw = nullptr;
    int prc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &raw, nullptr);
    std::string mode;
    if (prc == SQLITE_OK && (prc = sqlite3_step(raw)) == SQLITE_ROW) {
      const auto* p = sqlite3_column_text(raw, 0);
      mode = p != nullptr ? reinterpret_cast<const char*>(p) : "";
      prc = SQLITE_OK;
    }
    sqlite3_finalize(raw);
    if (prc != SQLITE_OK) return s->fail(prc, "PRAGMA journal_mode=WAL");
    if (mode != "wal") {
      core::log_error("queue store {}: journal mode is {}, want wal", s->path_, mode);
      return errc::io_error;
    }
  }
  // secure_delete=FAST: zero deleted content only where that costs no extra
  // writes. Debian builds SQLite with secure_delete on, which would write
  // every freed body page once more: twice the I/O for every delivered
  // message, and a full disk that deleting mail cannot relieve.
  if (auto ec = s->exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; "
                        "PRAGMA secure_delete=FAST;",
                        "PRAGMA")) {
    return ec;
  }
  if (auto ec = s->migrate()) return ec;
  if (auto ec = s->enable_incremental_vacuum()) return ec;
  return s;
}

std::int64_t sqlite_store::pragma_int(const char* sql) {
  statement s{prepare(sql)};
  if (!s || s.step() != SQLITE_ROW) return -1;
  return s.int64(0);
}

// auto_vacuum can only be chosen before the first table exists, or by
// rebuilding the file with VACUUM. A new store gets it in its first
// transaction (the schema migration runs right after this is set); a store
// made before it is rebuilt once here when that is quick.
error_code sqlite_store::enable_incremental_vacuum() {
  constexpr std::int64_t incremental = 2;
  if (pragma_int("PRAGMA auto_vacuum") == incremental) return {};
  std::error_code fec;
  const auto size = std::filesystem::file_size(path_, fec);
  if (fec || size > max_vacuum_at_open) {
    core::log_warning("queue store {}: made before incremental vacuum and {} bytes large: free "
                      "pages are reused but not given back to the file system (rebuild it with "
                      "sqlite3 {} 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM' while flushgated is "
                      "stopped)",
                      path_, fec ? 0 : size, path_);
    return {};
  }
  if (auto ec = exec("PRAGMA auto_vacuum=INCREMENTAL; VACUUM", "VACUUM for incremental vacuum")) {
    return ec;
  }
  core::log_info("queue store {}: rebuilt for incremental vacuum ({} bytes)", path_, size);
  return {};
}

boost::system::result<space_info> sqlite_store::space() {
  space_info out;
  const std::int64_t free_pages = pragma_int("PRAGMA freelist_count");
  const std::int64_t page_size = pragma_int("PRAGMA page_size");
  if (free_pages < 0 || page_size < 0) return fail(sqlite3_errcode(db_), "PRAGMA freelist_count");
  out.reusable_bytes = static_cast<std::uint64_t>(free_pages) * static_cast<std::uint64_t>(page_size);
  out.gives_back = pragma_int("PRAGMA auto_vacuum") == 2;  // incremental
  for (const auto& file : {path_, path_ + "-wal"}) {
    std::error_code fec;
    const auto n = std::filesystem::file_size(file, fec);
    if (!fec) out.file_bytes += n;
  }
  return out;
}

// One step: move at most max_bytes of pages from the end of the file into
// free slots and cut the file there, then checkpoint so the moved pages
// leave the WAL, and truncate the WAL (otherwise it keeps its largest size
// for ever). Each step writes about max_bytes to the WAL, which is why the
// steps are small: on a nearly full disk the WAL has to fit.
boost::system::result<std::uint64_t> sqlite_store::release_space(std::uint64_t max_bytes) {
  const std::int64_t page_size = pragma_int("PRAGMA page_size");
  if (page_size <= 0) return fail(sqlite3_errcode(db_), "PRAGMA page_size");
  if (pragma_int("PRAGMA auto_vacuum") == 2) {
    const auto pages = std::max<std::uint64_t>(1, max_bytes / static_cast<std::uint64_t>(page_size));
    const std::string sql = "PRAGMA incremental_vacuum(" + std::to_string(pages) + ")";
    if (auto ec = exec(sql.c_str(), "PRAGMA incremental_vacuum")) return ec;
  }
  if (auto ec = exec("PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA wal_checkpoint")) return ec;
  if (pragma_int("PRAGMA auto_vacuum") != 2) return std::uint64_t{0};
  const std::int64_t free_pages = pragma_int("PRAGMA freelist_count");
  if (free_pages < 0) return fail(sqlite3_errcode(db_), "PRAGMA freelist_count");
  return static_cast<std::uint64_t>(free_pages) * static_cast<std::uint64_t>(page_size);
}

sqlite3_stmt* sqlite_store::prepare(const char* sql) {
  if (auto it = cache_.find(sql); it != cache_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  last_rc_ = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
  if (last_rc_ != SQLITE_OK) {
    sqlite3_finalize(s);
    return nullptr;
  }
  cache_.emplace(sql, s);
  return s;
}

error_code sqlite_store::fail(int rc, std::string_view what) {
  const int primary = rc & 0xff;
  const int sys = sqlite3_system_errno(db_);
  const bool full =
      primary == SQLITE_FULL || (primary == SQLITE_IOERR && (sys == ENOSPC || sys == EDQUOT));
  core::log_warning("queue store {}: {} failed: {} (sqlite {}, errno {})", path_, what,
                    sqlite3_errmsg(db_), rc, sys);
  return full ? errc::disk_full : errc::io_error;
}

error_code sqlite_store::exec(const char* sql, std::string_view what) {
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? error_code{} : fail(rc, what);
}

// Brings the schema to schema_version, one step per version, all in one
// transaction: a crash halfway leaves the old version intact.
error_code sqlite_store::migrate() {
  auto read_version = [this](int& out) -> error_code {
    statement s{prepare("PRAGMA user_version")};
    if (!s) return fail(last_rc_, "prepare PRAGMA user_version");
    const int rc = s.step();
    if (rc != SQLITE_ROW) return fail(rc, "PRAGMA user_version");
    out = static_cast<int>(s.int64(0));
    return {};
  };
  int version = 0;
  if (auto ec = read_version(version)) return ec;
  if (version == schema_version) return {};

  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  // Read again under the write lock: another process may have migrated.
  if (auto ec = read_version(version)) return ec;
  if (version > schema_version || version < 0) {
    core::log_error("queue store {}: schema version {} is newer than this flushgate's {}", path_,
                    version, schema_version);
    return errc::io_error;
  }
  for (int v = version; v < schema_version; ++v) {
    if (auto ec = exec(migrations[v], "schema migration")) return ec;
    core::log_info("queue store {}: schema migrated to version {}", path_, v + 1);
  }
  const std::string set_version = "PRAGMA user_version = " + std::to_string(schema_version);
  if (auto ec = exec(set_version.c_str(), "PRAGMA user_version")) return ec;
  return tx.commit();
}

boost::system::result<std::int64_t> sqlite_store::customer_id_of(std::string_view name) {
  statement s{prepare(sql_customer_id_by_name)};
  if (!s) return fail(last_rc_, "prepare customer lookup");
  s.bind(1, name);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return s.int64(0);
  if (rc == SQLITE_DONE) return errc::not_found;
  return fail(rc, "customer lookup");
}

// Inside a transaction: is c's name, each domain and each link user free
// for customer `self` (0 for a new customer)?
error_code sqlite_store::check_customer_free(const customer& c, std::int64_t self) {
  auto taken = [this, self](const char* sql, std::string_view value, bool& out) -> error_code {
    statement s{prepare(sql)};
    if (!s) return fail(last_rc_, "prepare ownership check");
    s.bind(1, value);
    s.bind(2, self);
    const int rc = s.step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return fail(rc, "ownership check");
    out = rc == SQLITE_ROW;
    return {};
  };
  bool is_taken = false;
  if (auto ec = taken(sql_name_owner, c.name, is_taken)) return ec;
  if (is_taken) return errc::name_taken;
  for (const auto& d : c.domains) {
    if (auto ec = taken(sql_domain_owner, d, is_taken)) return ec;
    if (is_taken) return errc::domain_taken;
  }
  for (const auto& u : c.link_users) {
    if (auto ec = taken(sql_user_owner, u.user, is_taken)) return ec;
    if (is_taken) return errc::name_taken;
  }
  return {};
}

error_code sqlite_store::write_customer_details(std::int64_t id, const customer& c) {
  std::int64_t position = 0;
  for (const auto& d : c.domains) {
    statement s{prepare(sql_insert_domain)};
    if (!s) return fail(last_rc_, "prepare insert domain");
    s.bind(1, d);
    s.bind(2, id);
    s.bind(3, position++);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "insert domain");
  }
  position = 0;
  for (const auto& u : c.link_users) {
    statement s{prepare(sql_insert_user)};
    if (!s) return fail(last_rc_, "prepare insert link user");
    s.bind(1, u.user);
    s.bind(2, id);
    s.bind(3, position++);
    s.bind(4, to_string(u.kind));
    s.bind(5, u.allowed_net);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "insert link user");
  }
  if (c.recipients) {
    for (const auto& r : *c.recipients) {
      statement s{prepare(sql_insert_allowed)};
      if (!s) return fail(last_rc_, "prepare insert recipient");
      s.bind(1, id);
      s.bind(2, r);
      if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "insert recipient");
    }
  }
  return {};
}

// Binds the customer columns ?1..?18 of sql_insert_customer and
// sql_update_customer (one list, so the two statements cannot drift apart).
// `networks` is join_list(c.etrn_networks), kept alive by the caller.
void sqlite_store::bind_customer_columns(statement& s, const customer& c,
                                         const std::string& networks) {
  s.bind(1, c.name);
  s.bind(2, std::int64_t{c.subdomains});
  s.bind(3, to_string(c.state));
  s.bind(4, to_string(c.mode));
  s.bind(5, c.route);
  s.bind(6, std::int64_t{c.link_port});
  s.bind(7, std::int64_t{c.recipients.has_value()});
  s.bind(8, static_cast<std::int64_t>(c.max_size));
  s.bind(9, static_cast<std::int64_t>(c.quota));
  s.bind(10, c.queue_lifetime);
  s.bind(11, c.delay_warning);
  s.bind(12, c.tls);
  s.bind(13, c.credential);
  s.bind(14, networks);
  s.bind(15, c.ipv6_server);
  s.bind(16, c.prefer_family);
  s.bind(17, c.recipient_check);
  s.bind(18, c.unknown_recipients);
  s.bind(19, c.forward_client);
}

error_code sqlite_store::add_customer(customer& c) {
  if (!valid_customer(c)) return errc::invalid_argument;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  // Checked inside the write transaction, so no other writer can take the
  // name or a domain between the check and the insert.
  if (auto ec = check_customer_free(c, 0)) return ec;
  std::int64_t id = 0;
  {
    statement s{prepare(sql_insert_customer)};
    if (!s) return fail(last_rc_, "prepare insert customer");
    const std::string networks = join_list(c.etrn_networks);
    bind_customer_columns(s, c, networks);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "insert customer");
    id = sqlite3_last_insert_rowid(db_);
  }
  if (auto ec = write_customer_details(id, c)) return ec;
  if (auto ec = tx.commit()) return ec;
  c.id = id;
  return {};
}

error_code sqlite_store::update_customer(const customer& c) {
  if (!valid_customer(c)) return errc::invalid_argument;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  {
    statement s{prepare(sql_customer_exists)};
    if (!s) return fail(last_rc_, "prepare customer lookup");
    s.bind(1, c.id);
    const int rc = s.step();
    if (rc == SQLITE_DONE) return errc::not_found;
    if (rc != SQLITE_ROW) return fail(rc, "customer lookup");
  }
  if (auto ec = check_customer_free(c, c.id)) return ec;
  {
    statement s{prepare(sql_update_customer)};
    if (!s) return fail(last_rc_, "prepare update customer");
    const std::string networks = join_list(c.etrn_networks);
    bind_customer_columns(s, c, networks);
    s.bind(customer_columns + 1, c.id);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "update customer");
  }
  // The lists are replaced whole: simpler than a diff, and still atomic.
  for (const char* sql : {sql_delete_domains, sql_delete_users, sql_delete_allowed}) {
    statement s{prepare(sql)};
    if (!s) return fail(last_rc_, "prepare clear customer lists");
    s.bind(1, c.id);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "clear customer lists");
  }
  if (auto ec = write_customer_details(c.id, c)) return ec;
  return tx.commit();
}

error_code sqlite_store::remove_customer(std::string_view name, bool force) {
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  auto id = customer_id_of(name);
  if (!id) return id.error();
  {
    statement s{prepare(sql_customer_has_mail)};
    if (!s) return fail(last_rc_, "prepare queued-mail check");
    s.bind(1, *id);
    const int rc = s.step();
    if (rc != SQLITE_ROW) return fail(rc, "queued-mail check");
    if (s.int64(0) != 0 && !force) return errc::not_empty;
  }
  // Forced: the mail goes first (its recipients by cascade), then the
  // customer with its domains, link users and recipient list (cascade).
  for (const char* sql : {sql_delete_customer_mail, sql_delete_customer}) {
    statement s{prepare(sql)};
    if (!s) return fail(last_rc_, "prepare remove customer");
    s.bind(1, *id);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "remove customer");
  }
  return tx.commit();
}

boost::system::result<std::vector<customer>> sqlite_store::read_customers(sqlite3_stmt* raw) {
  statement s{raw};
  std::vector<customer> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) {
    customer c;
    c.id = s.int64(0);
    c.name = s.text(1);
    c.subdomains = s.int64(2) != 0;
    auto state = parse_customer_state(s.text(3));
    auto mode = parse_delivery_mode(s.text(4));
    if (!state || !mode) {
      core::log_error("queue store {}: customer {} has a bad state or mode", path_, c.name);
      return errc::io_error;
    }
    c.state = *state;
    c.mode = *mode;
    c.route = s.text(5);
    c.link_port = static_cast<std::uint16_t>(s.int64(6));
    if (s.int64(7) != 0) c.recipients.emplace();
    c.max_size = static_cast<std::uint64_t>(s.int64(8));
    c.quota = static_cast<std::uint64_t>(s.int64(9));
    c.queue_lifetime = s.int64(10);
    c.delay_warning = s.int64(11);
    c.tls = s.text(12);
    c.credential = s.text(13);
    c.etrn_networks = split_list(s.text(14));
    c.ipv6_server = s.text(15);
    c.prefer_family = s.text(16);
    c.recipient_check = s.text(17);
    c.unknown_recipients = s.text(18);
    c.forward_client = s.text(19);
    out.push_back(std::move(c));
  }
  if (rc != SQLITE_DONE) return fail(rc, "read customers");
  if (auto ec = read_customer_details(out)) return ec;
  return out;
}

// One query per child table for all customers at once (not one per
// customer), distributed by customer id; for a single customer, a query on
// the customer_id indexes instead of a whole table.
error_code sqlite_store::read_customer_details(std::vector<customer>& customers) {
  if (customers.empty()) return {};
  const std::int64_t only_id = customers.size() == 1 ? customers.front().id : 0;
  std::unordered_map<std::int64_t, customer*> by_id;
  for (auto& c : customers) by_id.emplace(c.id, &c);
  auto for_each_row = [&](const char* sql_one, const char* sql_all, auto&& use) -> error_code {
    statement s{prepare(only_id != 0 ? sql_one : sql_all)};
    if (!s) return fail(last_rc_, "prepare read customer lists");
    if (only_id != 0) s.bind(1, only_id);
    int rc = 0;
    while ((rc = s.step()) == SQLITE_ROW) {
      if (auto it = by_id.find(s.int64(0)); it != by_id.end()) use(*it->second, s);
    }
    return rc == SQLITE_DONE ? error_code{} : fail(rc, "read customer lists");
  };
  if (auto ec = for_each_row(sql_domains_one, sql_domains_all,
                             [](customer& c, statement& s) { c.domains.push_back(s.text(1)); })) {
    return ec;
  }
  bool bad_kind = false;
  if (auto ec = for_each_row(sql_users_one, sql_users_all, [&](customer& c, statement& s) {
        link_user u;
        u.user = s.text(1);
        auto kind = parse_link_kind(s.text(2));
        bad_kind = bad_kind || !kind;
        u.kind = kind.value_or(link_kind::dsl);
        u.allowed_net = s.text(3);
        c.link_users.push_back(std::move(u));
      })) {
    return ec;
  }
  if (bad_kind) {
    core::log_error("queue store {}: a link user has a bad kind", path_);
    return errc::io_error;
  }
  return for_each_row(sql_allowed_one, sql_allowed_all, [](customer& c, statement& s) {
    if (c.recipients) c.recipients->push_back(s.text(1));
  });
}

boost::system::result<customer> sqlite_store::find_customer(std::string_view name) {
  sqlite3_stmt* raw = prepare(sql_customer_by_name);
  if (raw == nullptr) return fail(last_rc_, "prepare find customer");
  // Bound here, stepped (and reset) in read_customers.
  sqlite3_bind_text(raw, 1, name.data() != nullptr ? name.data() : "",
                    static_cast<int>(name.size()), SQLITE_STATIC);
  auto found = read_customers(raw);
  if (!found) return found.error();
  if (found->empty()) return errc::not_found;
  return std::move(found->front());
}

boost::system::result<std::vector<customer>> sqlite_store::list_customers() {
  sqlite3_stmt* raw = prepare(sql_customers_all);
  if (raw == nullptr) return fail(last_rc_, "prepare list customers");
  return read_customers(raw);
}

boost::system::result<std::vector<std::string>> sqlite_store::commit_messages(
    std::span<const new_message> batch) {
  std::vector<std::string> qids;
  if (batch.empty()) return qids;
  if (!all_have_recipients(batch)) return errc::invalid_argument;
  qids.reserve(batch.size());
  // One transaction for the whole batch: one fsync at COMMIT makes every
  // envelope and body in it durable together, and any failure rolls all of
  // it back (the transaction's destructor), leaving nothing half-stored. A
  // customer that is gone (removed while the session was in DATA) is
  // not_found; everything else is a storage failure.
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  if (auto ec = insert_messages(batch, errc::not_found, qids)) return ec;
  if (auto ec = tx.commit()) return ec;
  return qids;
}

error_code sqlite_store::import_message(const message_info& m, std::string_view content) {
  if (m.recipients.empty() || m.qid.empty()) return errc::invalid_argument;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  if (auto ec = insert_message_row(m, content, errc::not_found, errc::name_taken)) return ec;
  return tx.commit();
}

error_code sqlite_store::insert_messages(std::span<const new_message> batch, errc missing,
                                         std::vector<std::string>& qids) {
  for (const auto& n : batch) {
    message_info m;
    m.qid = make_queue_id();
    m.customer_id = n.customer_id;
    m.sender = n.sender;
    m.arrival = n.arrival;
    m.envid = n.envid;
    m.ret = n.ret;
    m.body_type = n.body_type;
    m.client = n.client;
    m.origin = n.origin;
    for (const auto& r : n.recipients) {
      recipient_info ri;
      ri.address = r.address;
      ri.orcpt = r.orcpt;
      ri.notify = r.notify;
      m.recipients.push_back(std::move(ri));
    }
    if (auto ec = insert_message_row(m, n.content, missing, errc::io_error)) return ec;
    qids.push_back(std::move(m.qid));
  }
  return {};
}

error_code sqlite_store::insert_message_row(const message_info& m, std::string_view content,
                                            errc missing, errc duplicate) {
  auto insert_failed = [&](int rc, std::string_view what) -> error_code {
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
      core::log_info("queue store {}: {}: no such customer", path_, what);
      return missing;
    }
    if (rc == SQLITE_CONSTRAINT_UNIQUE && duplicate != errc::io_error) return duplicate;
    return fail(rc, what);
  };
  std::int64_t message_id = 0;
  {
    statement s{prepare(sql_insert_message)};
    if (!s) return fail(last_rc_, "prepare insert message");
    s.bind(1, m.qid);
    s.bind(2, m.customer_id);
    s.bind(3, m.sender);
    s.bind(4, m.arrival);
    s.bind(5, static_cast<std::int64_t>(content.size()));
    s.bind(6, std::int64_t{m.held ? 1 : 0});
    s.bind(7, m.envid);
    s.bind(8, m.ret);
    s.bind(9, m.body_type);
    s.bind(10, m.client);
    s.bind_blob(11, content);
    s.bind(12, m.origin.address);
    s.bind(13, m.origin.name);
    s.bind(14, m.origin.helo);
    s.bind(15, m.origin.proto);
    s.bind(16, std::int64_t{m.origin.port});
    if (const int rc = s.step(); rc != SQLITE_DONE) return insert_failed(rc, "insert message");
    message_id = sqlite3_last_insert_rowid(db_);
  }
  for (const auto& r : m.recipients) {
    statement s{prepare(sql_insert_recipient)};
    if (!s) return fail(last_rc_, "prepare insert recipient");
    s.bind(1, message_id);
    s.bind(2, r.address);
    s.bind(3, r.orcpt);
    s.bind(4, r.notify);
    s.bind(5, std::int64_t{r.attempts});
    s.bind(6, r.next_attempt);
    s.bind(7, r.last_reply);
    s.bind(8, std::int64_t{r.delay_notified ? 1 : 0});
    if (const int rc = s.step(); rc != SQLITE_DONE) return insert_failed(rc, "insert recipient");
  }
  return {};
}

error_code sqlite_store::read_recipients(message_info& m, std::int64_t message_id) {
  statement s{prepare(sql_recipients_of)};
  if (!s) return fail(last_rc_, "prepare read recipients");
  s.bind(1, message_id);
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) {
    recipient_info r;
    r.id = s.int64(0);
    r.address = s.text(1);
    r.orcpt = s.text(2);
    r.notify = s.text(3);
    r.attempts = static_cast<int>(s.int64(4));
    r.next_attempt = s.int64(5);
    r.last_reply = s.text(6);
    r.delay_notified = s.int64(7) != 0;
    m.recipients.push_back(std::move(r));
  }
  return rc == SQLITE_DONE ? error_code{} : fail(rc, "read recipients");
}

// Reads the rows of a statement selecting the message columns (bound by
// the caller), then each message's recipients.
boost::system::result<std::vector<message_info>> sqlite_store::read_messages(
    sqlite3_stmt* raw, std::string_view what) {
  std::vector<message_info> out;
  std::vector<std::int64_t> ids;
  {
    statement s{raw};
    int rc = 0;
    while ((rc = s.step()) == SQLITE_ROW) {
      message_info m;
      ids.push_back(s.int64(0));
      m.qid = s.text(1);
      m.customer_id = s.int64(2);
      m.customer = s.text(3);
      m.sender = s.text(4);
      m.arrival = s.int64(5);
      m.size = static_cast<std::uint64_t>(s.int64(6));
      m.held = s.int64(7) != 0;
      m.envid = s.text(8);
      m.ret = s.text(9);
      m.body_type = s.text(10);
      m.client = s.text(11);
      m.origin.address = s.text(12);
      m.origin.name = s.text(13);
      m.origin.helo = s.text(14);
      m.origin.proto = s.text(15);
      m.origin.port = static_cast<std::uint16_t>(s.int64(16));
      out.push_back(std::move(m));
    }
    if (rc != SQLITE_DONE) return fail(rc, what);
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (auto ec = read_recipients(out[i], ids[i])) return ec;
  }
  return out;
}

boost::system::result<std::vector<message_info>> sqlite_store::list_messages(
    std::int64_t customer_id, std::size_t limit) {
  sqlite3_stmt* raw = prepare(customer_id != 0 ? sql_messages_of_customer : sql_messages_all);
  if (raw == nullptr) return fail(last_rc_, "prepare list messages");
  if (customer_id != 0) sqlite3_bind_int64(raw, 1, customer_id);
  sqlite3_bind_int64(raw, 2, sql_limit(limit));
  return read_messages(raw, "list messages");
}

boost::system::result<message_info> sqlite_store::find_message(std::string_view qid) {
  sqlite3_stmt* raw = prepare(sql_message_by_qid);
  if (raw == nullptr) return fail(last_rc_, "prepare find message");
  sqlite3_bind_text(raw, 1, qid.data() != nullptr ? qid.data() : "", static_cast<int>(qid.size()),
                    SQLITE_STATIC);
  auto found = read_messages(raw, "find message");
  if (!found) return found.error();
  if (found->empty()) return errc::not_found;
  return std::move(found->front());
}

boost::system::result<std::string> sqlite_store::read_content(std::string_view qid) {
  statement s{prepare(sql_content_by_qid)};
  if (!s) return fail(last_rc_, "prepare read content");
  s.bind(1, qid);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return s.blob(0);
  if (rc == SQLITE_DONE) return errc::not_found;
  return fail(rc, "read content");
}

error_code sqlite_store::set_held(std::string_view qid, bool held) {
  statement s{prepare(sql_set_held)};
  if (!s) return fail(last_rc_, "prepare set held");
  s.bind(1, qid);
  s.bind(2, std::int64_t{held});
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "set held");
  return sqlite3_changes(db_) == 0 ? error_code{errc::not_found} : error_code{};
}

error_code sqlite_store::delete_message(std::string_view qid) {
  statement s{prepare(sql_delete_message)};
  if (!s) return fail(last_rc_, "prepare delete message");
  s.bind(1, qid);
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "delete message");
  return sqlite3_changes(db_) == 0 ? error_code{errc::not_found} : error_code{};
}

boost::system::result<std::vector<queue_stats>> sqlite_store::queue_summary() {
  statement s{prepare(sql_summary)};
  if (!s) return fail(last_rc_, "prepare queue summary");
  std::vector<queue_stats> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) {
    queue_stats q;
    q.customer_id = s.int64(0);
    q.customer = s.text(1);
    q.messages = static_cast<std::uint64_t>(s.int64(2));
    q.bytes = static_cast<std::uint64_t>(s.int64(3));
    q.oldest_arrival = s.int64(4);
    out.push_back(std::move(q));
  }
  if (rc != SQLITE_DONE) return fail(rc, "queue summary");
  return out;
}

boost::system::result<queue_stats> sqlite_store::customer_stats(std::int64_t customer_id) {
  queue_stats q;
  q.customer_id = customer_id;
  {
    statement s{prepare(sql_customer_name)};
    if (!s) return fail(last_rc_, "prepare customer stats");
    s.bind(1, customer_id);
    const int rc = s.step();
    if (rc == SQLITE_DONE) return errc::not_found;
    if (rc != SQLITE_ROW) return fail(rc, "customer stats");
    q.customer = s.text(0);
  }
  statement s{prepare(sql_customer_stats)};
  if (!s) return fail(last_rc_, "prepare customer stats");
  s.bind(1, customer_id);
  const int rc = s.step();
  if (rc != SQLITE_ROW) return fail(rc, "customer stats");
  q.messages = static_cast<std::uint64_t>(s.int64(0));
  q.bytes = static_cast<std::uint64_t>(s.int64(1));
  q.oldest_arrival = s.int64(2);
  return q;
}

// Each bucket is one range of arrival times, counted by its own query: the
// ranges do not overlap, so the whole histogram reads each index entry of
// the customer (or of the queue) once. age <= bound is arrival >= now -
// bound; the arithmetic saturates, so extreme bounds and clocks cannot wrap.
boost::system::result<std::vector<age_bucket>> sqlite_store::queue_age_histogram(
    std::int64_t customer_id, std::int64_t now, std::span<const std::int64_t> upper_bounds) {
  if (!detail::valid_age_bounds(upper_bounds)) return errc::invalid_argument;
  transaction tx(*this, transaction::reading);
  if (auto ec = tx.begin()) return ec;
  if (customer_id != 0) {
    statement s{prepare(sql_customer_exists)};
    if (!s) return fail(last_rc_, "prepare customer lookup");
    s.bind(1, customer_id);
    const int rc = s.step();
    if (rc == SQLITE_DONE) return errc::not_found;
    if (rc != SQLITE_ROW) return fail(rc, "customer lookup");
  }
  std::vector<age_bucket> out(upper_bounds.size() + 1);
  for (std::size_t i = 0; i < upper_bounds.size(); ++i) out[i].upper_seconds = upper_bounds[i];
  for (const auto& range : detail::age_bucket_ranges(now, upper_bounds)) {
    statement s{prepare(customer_id != 0 ? sql_age_bucket_of_customer : sql_age_bucket_all)};
    if (!s) return fail(last_rc_, "prepare queue age histogram");
    if (customer_id != 0) s.bind(1, customer_id);
    s.bind(2, range.oldest);
    s.bind(3, range.newest);
    const int rc = s.step();
    if (rc != SQLITE_ROW) return fail(rc, "queue age histogram");
    out[range.bucket].messages = static_cast<std::uint64_t>(s.int64(0));
    out[range.bucket].bytes = static_cast<std::uint64_t>(s.int64(1));
  }
  if (auto ec = tx.commit()) return ec;
  return out;
}

const char* sqlite_store::deliverable_sql() noexcept { return sql_deliverable; }
const char* sqlite_store::summary_sql() noexcept { return sql_summary; }
const char* sqlite_store::customer_stats_sql() noexcept { return sql_customer_stats; }
const char* sqlite_store::age_bucket_sql(bool one_customer) noexcept {
  return one_customer ? sql_age_bucket_of_customer : sql_age_bucket_all;
}
const char* sqlite_store::due_notices_sql() noexcept { return sql_due_notices; }

boost::system::result<std::int64_t> sqlite_store::message_id_of(std::string_view qid) {
  statement s{prepare(sql_message_id_by_qid)};
  if (!s) return fail(last_rc_, "prepare message lookup");
  s.bind(1, qid);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return s.int64(0);
  if (rc == SQLITE_DONE) return errc::not_found;
  return fail(rc, "message lookup");
}

boost::system::result<std::vector<message_info>> sqlite_store::list_deliverable(
    std::int64_t customer_id, std::string_view after_qid, std::size_t limit) {
  sqlite3_stmt* raw = prepare(sql_deliverable);
  if (raw == nullptr) return fail(last_rc_, "prepare list deliverable");
  // Bound here, stepped (and reset) in read_messages; after_qid outlives it.
  sqlite3_bind_int64(raw, 1, customer_id);
  sqlite3_bind_text(raw, 2, after_qid.data() != nullptr ? after_qid.data() : "",
                    static_cast<int>(after_qid.size()), SQLITE_STATIC);
  sqlite3_bind_int64(raw, 3, sql_limit(limit));
  return read_messages(raw, "list deliverable");
}

// Steps, inside the caller's transaction: the notices first (the DSNs that
// let failed recipients go), then each recipient's fate, then the message
// if no recipient is left. Every recipient statement names the message too,
// so a foreign id matches nothing, and the caller rolls everything back.
error_code sqlite_store::apply_attempt(std::string_view qid,
                                       std::span<const recipient_update> updates,
                                       std::int64_t next_attempt,
                                       std::span<const new_message> notices, attempt_result& out) {
  auto message_id = message_id_of(qid);
  if (!message_id) return message_id.error();
  if (auto ec = insert_messages(notices, errc::invalid_argument, out.notice_qids)) return ec;
  for (const auto& u : updates) {
    const bool stays = u.fate == recipient_fate::deferred;
    statement s{prepare(stays ? sql_defer_recipient : sql_delete_recipient)};
    if (!s) return fail(last_rc_, "prepare record attempt");
    s.bind(1, u.recipient_id);
    s.bind(2, *message_id);
    if (stays) {
      s.bind(3, u.reply);
      s.bind(4, next_attempt);
    }
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "record attempt");
    if (sqlite3_changes(db_) != 1) {
      core::log_warning("queue store {}: attempt on {}: recipient {} is not queued for it", path_,
                        qid, u.recipient_id);
      return errc::invalid_argument;
    }
  }
  statement s{prepare(sql_delete_if_done)};
  if (!s) return fail(last_rc_, "prepare remove delivered message");
  s.bind(1, *message_id);
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "remove delivered message");
  out.message_removed = sqlite3_changes(db_) == 1;
  return {};
}

// COMMIT makes the notices durable in the same fsync that removes the
// recipients they report on (invariant 2): a crash before it leaves
// everything queued, and delivery stays at-least-once.
boost::system::result<store::attempt_result> sqlite_store::record_attempt(
    std::string_view qid, std::span<const recipient_update> updates, std::int64_t next_attempt,
    std::span<const new_message> notices) {
  if (!valid_attempt(updates, notices)) return errc::invalid_argument;
  attempt_result out;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  if (auto ec = apply_attempt(qid, updates, next_attempt, notices, out)) return ec;
  if (auto ec = tx.commit()) return ec;
  return out;
}

// The attempts apply in order, so a qid named twice sees the first
// attempt's result (a recipient already removed is then invalid_argument,
// a message already removed not_found); any error rolls back the batch.
boost::system::result<std::vector<store::attempt_result>> sqlite_store::record_attempts(
    std::span<const attempt> attempts) {
  for (const auto& a : attempts) {
    if (!valid_attempt(a.updates, a.notices)) return errc::invalid_argument;
  }
  std::vector<attempt_result> out(attempts.size());
  if (attempts.empty()) return out;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    const auto& a = attempts[i];
    if (auto ec = apply_attempt(a.qid, a.updates, a.next_attempt, a.notices, out[i])) return ec;
  }
  if (auto ec = tx.commit()) return ec;
  return out;
}

boost::system::result<std::vector<std::string>> sqlite_store::record_delay_notice(
    std::string_view qid, std::span<const std::int64_t> recipient_ids,
    std::span<const new_message> notices) {
  if (!all_have_recipients(notices)) return errc::invalid_argument;
  if (!unique_ids(std::vector<std::int64_t>(recipient_ids.begin(), recipient_ids.end()))) {
    return errc::invalid_argument;
  }
  std::vector<std::string> qids;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  auto message_id = message_id_of(qid);
  if (!message_id) return message_id.error();
  if (auto ec = insert_messages(notices, errc::invalid_argument, qids)) return ec;
  for (const std::int64_t id : recipient_ids) {
    statement s{prepare(sql_mark_delay_notified)};
    if (!s) return fail(last_rc_, "prepare mark delay notified");
    s.bind(1, id);
    s.bind(2, *message_id);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "mark delay notified");
    if (sqlite3_changes(db_) != 1) {
      core::log_info("queue store {}: delay notice on {}: recipient {} is not queued for it or "
                     "was notified already",
                     path_, qid, id);
      return errc::invalid_argument;
    }
  }
  if (auto ec = tx.commit()) return ec;
  return qids;
}

boost::system::result<std::vector<message_info>> sqlite_store::list_due_notices(
    std::int64_t customer_id, std::int64_t delay_before, std::int64_t expire_before,
    std::size_t limit) {
  // delay_before 0 switches delay notices off: no arrival is that old then.
  const std::int64_t delay =
      delay_before != 0 ? delay_before : std::numeric_limits<std::int64_t>::min();
  sqlite3_stmt* raw = prepare(sql_due_notices);
  if (raw == nullptr) return fail(last_rc_, "prepare list due notices");
  sqlite3_bind_int64(raw, 1, customer_id);
  sqlite3_bind_int64(raw, 2, std::max(delay, expire_before));
  sqlite3_bind_int64(raw, 3, expire_before);
  sqlite3_bind_int64(raw, 4, sql_limit(limit));
  return read_messages(raw, "list due notices");
}

error_code sqlite_store::save_link(const link_record& link) {
  if (link.user.empty()) return errc::invalid_argument;
  statement s{prepare(sql_save_link)};
  if (!s) return fail(last_rc_, "prepare save link");
  s.bind(1, link.user);
  s.bind(2, link.customer_id);
  s.bind(3, to_string(link.kind));
  s.bind(4, link.session_id);
  s.bind(5, link.address);
  s.bind(6, link.nas);
  s.bind(7, link.source);
  s.bind(8, link.since);
  s.bind(9, link.ipv6_address);
  s.bind(10, link.ipv6_prefix);
  const int rc = s.step();
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
    core::log_info("queue store {}: link {}: no such customer {}", path_, link.user,
                   link.customer_id);
    return errc::not_found;
  }
  return rc == SQLITE_DONE ? error_code{} : fail(rc, "save link");
}

error_code sqlite_store::remove_link(std::string_view user, std::string_view session_id) {
  statement s{prepare(sql_remove_link)};
  if (!s) return fail(last_rc_, "prepare remove link");
  s.bind(1, user);
  s.bind(2, session_id);
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "remove link");
  return sqlite3_changes(db_) == 0 ? error_code{errc::not_found} : error_code{};
}

boost::system::result<std::uint64_t> sqlite_store::add_allowed_recipients(
    std::int64_t customer_id, std::span<const std::string> addresses) {
  if (!detail::valid_addresses(addresses)) return errc::invalid_argument;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  {
    statement s{prepare(sql_set_has_recipients)};
    if (!s) return fail(last_rc_, "prepare set has_recipients");
    s.bind(1, customer_id);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "set has_recipients");
    if (sqlite3_changes(db_) == 0) return errc::not_found;
  }
  auto added = per_address(sql_insert_allowed, "insert recipient", customer_id, addresses);
  if (!added) return added;
  if (auto ec = tx.commit()) return ec;
  return added;
}

boost::system::result<std::uint64_t> sqlite_store::remove_allowed_recipients(
    std::int64_t customer_id, std::span<const std::string> addresses) {
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  auto removed = per_address(sql_delete_allowed_one, "delete recipient", customer_id, addresses);
  if (!removed) return removed;
  if (auto ec = tx.commit()) return ec;
  return removed;
}

boost::system::result<std::uint64_t> sqlite_store::per_address(const char* sql, const char* what,
                                                              std::int64_t customer_id,
                                                              std::span<const std::string> addresses) {
  std::uint64_t changed = 0;
  for (const auto& a : addresses) {
    statement s{prepare(sql)};
    if (!s) return fail(last_rc_, std::string("prepare ") + what);
    s.bind(1, customer_id);
    s.bind(2, a);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, what);
    changed += static_cast<std::uint64_t>(sqlite3_changes(db_));
  }
  return changed;
}

error_code sqlite_store::save_known_recipients(std::span<const known_recipient> items) {
  if (!detail::valid_known_recipients(items)) return errc::invalid_argument;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  for (const auto& k : items) {
    statement s{prepare(sql_save_known)};
    if (!s) return fail(last_rc_, "prepare save known recipient");
    s.bind(1, k.customer_id);
    s.bind(2, k.address);
    s.bind(3, std::int64_t{k.good});
    s.bind(4, k.source);
    s.bind(5, k.first_seen);
    s.bind(6, k.last_seen);
    const int rc = s.step();
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) continue;  // the customer went meanwhile
    if (rc != SQLITE_DONE) return fail(rc, "save known recipient");
  }
  return tx.commit();
}

boost::system::result<std::vector<known_recipient>> sqlite_store::list_known_recipients(
    std::int64_t customer_id) {
  if (customer_id > 0) return read_known_recipients(sql_known_one, customer_id);
  return read_known_recipients(sql_known_all, std::nullopt);
}

boost::system::result<std::vector<known_recipient>> sqlite_store::list_known_recipients_since(
    std::int64_t since) {
  return read_known_recipients(sql_known_since, since);
}

boost::system::result<std::map<std::int64_t, std::uint64_t>> sqlite_store::count_known_recipients() {
  statement s{prepare(sql_count_known)};
  if (!s) return fail(last_rc_, "prepare count known recipients");
  std::map<std::int64_t, std::uint64_t> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) out[s.int64(0)] = static_cast<std::uint64_t>(s.int64(1));
  if (rc != SQLITE_DONE) return fail(rc, "count known recipients");
  return out;
}

boost::system::result<std::vector<known_recipient>> sqlite_store::read_known_recipients(
    const char* sql, std::optional<std::int64_t> arg) {
  statement s{prepare(sql)};
  if (!s) return fail(last_rc_, "prepare list known recipients");
  if (arg) s.bind(1, *arg);
  std::vector<known_recipient> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) {
    out.push_back({.customer_id = s.int64(0), .address = s.text(1), .good = s.int64(2) != 0,
                   .source = s.text(3), .first_seen = s.int64(4), .last_seen = s.int64(5)});
  }
  if (rc != SQLITE_DONE) return fail(rc, "list known recipients");
  return out;
}

boost::system::result<std::uint64_t> sqlite_store::forget_known_recipients(std::int64_t customer_id,
                                                                           std::string_view address) {
  statement s{prepare(sql_forget_known)};
  if (!s) return fail(last_rc_, "prepare forget known recipients");
  s.bind(1, customer_id);
  s.bind(2, address);
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "forget known recipients");
  return static_cast<std::uint64_t>(sqlite3_changes(db_));
}

boost::system::result<std::uint64_t> sqlite_store::expire_known_recipients(std::int64_t good_before,
                                                                           std::int64_t bad_before) {
  statement s{prepare(sql_expire_known)};
  if (!s) return fail(last_rc_, "prepare expire known recipients");
  s.bind(1, good_before);
  s.bind(2, bad_before);
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "expire known recipients");
  return static_cast<std::uint64_t>(sqlite3_changes(db_));
}

boost::system::result<std::vector<link_record>> sqlite_store::list_links() {
  statement s{prepare(sql_links_all)};
  if (!s) return fail(last_rc_, "prepare list links");
  std::vector<link_record> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) {
    link_record l;
    l.user = s.text(0);
    l.customer_id = s.int64(1);
    auto kind = parse_link_kind(s.text(2));
    if (!kind) {
      core::log_error("queue store {}: link {} has a bad kind", path_, l.user);
      return errc::io_error;
    }
    l.kind = *kind;
    l.session_id = s.text(3);
    l.address = s.text(4);
    l.nas = s.text(5);
    l.source = s.text(6);
    l.since = s.int64(7);
    l.ipv6_address = s.text(8);
    l.ipv6_prefix = s.text(9);
    out.push_back(std::move(l));
  }
  if (rc != SQLITE_DONE) return fail(rc, "list links");
  return out;
}

namespace {

// now 0: this host's clock (one node: nobody to disagree with).
std::int64_t lease_clock(std::int64_t now) {
  if (now != 0) return now;
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Reads a lease row (customer_id, holder, fence, expires, taken) of s.
delivery_lease lease_row(sqlite3_stmt* s) {
  delivery_lease l;
  l.customer_id = sqlite3_column_int64(s, 0);
  const auto* holder = sqlite3_column_text(s, 1);
  if (holder != nullptr) l.holder = reinterpret_cast<const char*>(holder);
  l.fence = sqlite3_column_int64(s, 2);
  l.expires = sqlite3_column_int64(s, 3);
  l.taken = sqlite3_column_int64(s, 4);
  return l;
}

}  // namespace

// One IMMEDIATE transaction: the upsert takes the lease when it may; when
// it may not, the row as it stands names the holder (the write lock is
// ours, so nobody changed it in between).
boost::system::result<lease_take> sqlite_store::take_lease(std::int64_t customer_id,
                                                           std::string_view node,
                                                           std::int64_t now,
                                                           std::int64_t duration_ms) {
  if (!detail::valid_lease_request(node, duration_ms)) return errc::invalid_argument;
  now = lease_clock(now);
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  lease_take out;
  {
    statement s{prepare(sql_take_lease)};
    if (!s) return fail(last_rc_, "prepare take lease");
    s.bind(1, customer_id);
    s.bind(2, node);
    s.bind(3, now);
    s.bind(4, now + duration_ms);
    int rc = s.step();
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return errc::not_found;
    if (rc == SQLITE_ROW) {
      out.ours = true;
      out.lease = lease_row(s.get());
      rc = s.step();
    }
    if (rc != SQLITE_DONE) return fail(rc, "take lease");
  }
  if (!out.ours) {
    statement s{prepare(sql_lease_of)};
    if (!s) return fail(last_rc_, "prepare read lease");
    s.bind(1, customer_id);
    const int rc = s.step();
    if (rc != SQLITE_ROW) return fail(rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, "read lease");
    out.lease = lease_row(s.get());
    out.now = now;
  }
  if (auto ec = tx.commit()) return ec;
  return out;
}

boost::system::result<std::int64_t> sqlite_store::renew_lease(std::int64_t customer_id,
                                                              std::string_view node,
                                                              std::int64_t fence,
                                                              std::int64_t now,
                                                              std::int64_t duration_ms) {
  if (!detail::valid_lease_request(node, duration_ms)) return errc::invalid_argument;
  const std::int64_t expires = lease_clock(now) + duration_ms;
  statement s{prepare(sql_renew_lease)};
  if (!s) return fail(last_rc_, "prepare renew lease");
  s.bind(1, customer_id);
  s.bind(2, node);
  s.bind(3, fence);
  s.bind(4, expires);
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "renew lease");
  if (sqlite3_changes(db_) != 1) return errc::lease_lost;
  return expires;
}

error_code sqlite_store::release_lease(std::int64_t customer_id, std::string_view node,
                                       std::int64_t fence) {
  statement s{prepare(sql_release_lease)};
  if (!s) return fail(last_rc_, "prepare release lease");
  s.bind(1, customer_id);
  s.bind(2, node);
  s.bind(3, fence);
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "release lease");
  return sqlite3_changes(db_) == 1 ? error_code{} : error_code{errc::lease_lost};
}

boost::system::result<std::vector<delivery_lease>> sqlite_store::list_leases() {
  statement s{prepare(sql_leases_all)};
  if (!s) return fail(last_rc_, "prepare list leases");
  std::vector<delivery_lease> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(lease_row(s.get()));
  if (rc != SQLITE_DONE) return fail(rc, "list leases");
  return out;
}

error_code sqlite_store::heartbeat(const node_record& node) {
  if (node.name.empty()) return errc::invalid_argument;
  statement s{prepare(sql_node_heartbeat)};
  if (!s) return fail(last_rc_, "prepare node heartbeat");
  s.bind(1, node.name);
  s.bind(2, node.version);
  s.bind(3, node.started);
  s.bind(4, lease_clock(0));
  if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "node heartbeat");
  return {};
}

boost::system::result<std::vector<node_record>> sqlite_store::list_nodes() {
  statement s{prepare(sql_nodes_all)};
  if (!s) return fail(last_rc_, "prepare list nodes");
  s.bind(1, lease_clock(0));
  std::vector<node_record> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) {
    out.push_back(node_record{.name = s.text(0), .version = s.text(1), .started = s.int64(2),
                              .heartbeat = s.int64(3), .age_ms = s.int64(4)});
  }
  if (rc != SQLITE_DONE) return fail(rc, "list nodes");
  return out;
}

error_code sqlite_store::save_retry(const retry_record& r) {
  if (r.failures < 0) return errc::invalid_argument;
  statement s{prepare(r.failures == 0 ? sql_clear_retry : sql_save_retry)};
  if (!s) return fail(last_rc_, "prepare save retry state");
  s.bind(1, r.customer_id);
  if (r.failures != 0) {
    s.bind(2, static_cast<std::int64_t>(r.failures));
    s.bind(3, r.next_try);
    s.bind(4, r.node);
  }
  const int rc = s.step();
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return errc::not_found;
  if (rc != SQLITE_DONE) return fail(rc, "save retry state");
  return {};
}

boost::system::result<std::vector<retry_record>> sqlite_store::list_retries() {
  statement s{prepare(sql_retries_all)};
  if (!s) return fail(last_rc_, "prepare list retry state");
  std::vector<retry_record> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) {
    out.push_back(retry_record{.customer_id = s.int64(0), .failures = static_cast<int>(s.int64(1)),
                               .next_try = s.int64(2), .node = s.text(3)});
  }
  if (rc != SQLITE_DONE) return fail(rc, "list retry state");
  return out;
}

// The insert and the pruning in one transaction.
error_code sqlite_store::record_event(const event_record& e) {
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  {
    statement s{prepare(sql_record_event)};
    if (!s) return fail(last_rc_, "prepare record event");
    s.bind(1, e.time);
    s.bind(2, e.node);
    s.bind(3, e.kind);
    s.bind(4, e.customer);
    s.bind(5, e.text);
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "record event");
  }
  {
    statement s{prepare(sql_prune_events)};
    if (!s) return fail(last_rc_, "prepare prune events");
    s.bind(1, sqlite3_last_insert_rowid(db_) - static_cast<std::int64_t>(max_stored_events));
    if (const int rc = s.step(); rc != SQLITE_DONE) return fail(rc, "prune events");
  }
  return tx.commit();
}

boost::system::result<std::vector<event_record>> sqlite_store::list_events(std::size_t limit) {
  statement s{prepare(sql_events_latest)};
  if (!s) return fail(last_rc_, "prepare list events");
  s.bind(1, sql_limit(limit));
  std::vector<event_record> out;
  int rc = 0;
  while ((rc = s.step()) == SQLITE_ROW) {
    out.push_back(event_record{.id = s.int64(0), .time = s.int64(1), .node = s.text(2),
                               .kind = s.text(3), .customer = s.text(4), .text = s.text(5)});
  }
  if (rc != SQLITE_DONE) return fail(rc, "list events");
  return out;
}

}  // namespace flushgate::queue
