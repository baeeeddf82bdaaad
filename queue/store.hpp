// store.hpp — the queue store: customers, queued messages, recipients.
//
// Purpose: the one narrow interface behind which the queue lives. The daemon
// uses it only from the store thread (see store_worker.hpp); a second backend
// (PostgreSQL, several gateway nodes sharing one queue) implements the same
// class without the protocol code changing.
// Security: values come from the CLI/control channel (already validated there)
// and from SMTP envelopes (already parsed); the store binds everything as SQL
// parameters, never as SQL text.
// Errors: operations return boost::system::error_code / result<T> with
// queue::errc (below). commit_messages is all-or-nothing: on error nothing of
// the batch is stored, and every sender of the batch is told 4xx.
// Delivery leases (ARCHITECTURE.md invariant 9): one row per customer says
// which node delivers it (take_lease, renew_lease, release_lease). Times are
// unix milliseconds. A call's `now` is the clock the lease is judged by:
// tests pass their own, so they are deterministic; the daemon passes 0, "the
// store's clock" — PostgreSQL's clock_timestamp() on the database server, so
// that nodes whose clocks disagree still agree on expiry, and the local
// system clock in SQLite (one node). take_lease is atomic across nodes: of
// several nodes racing for a free or expired lease, exactly one gets it.
// The fence grows by one with every take that is not a renewal of a lease
// still held (a new holder, or after a release or an expiry), and never
// goes back for that customer, so a holder that was away past its expiry
// learns from renew_lease that it lost the lease (lease_lost) even when
// the node that took it over has already released it.
// See also: ARCHITECTURE.md (domain model, invariants 1-2, 9).
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace flushgate::queue {

enum class errc {
  ok = 0,
  not_found = 1,         // no such customer / message
  name_taken = 2,        // customer name already exists
  domain_taken = 3,      // a domain already belongs to another customer
  not_empty = 4,         // customer still has queued mail (remove without force)
  disk_full = 5,         // SQLITE_FULL / ENOSPC: answer 452 4.3.1, keep nothing
  io_error = 6,          // any other storage failure: answer 451 4.3.0
  invalid_argument = 7,  // malformed value reached the store (a bug upstream)
  lease_lost = 8,        // renew/release of a delivery lease this node no longer holds
};
const boost::system::error_category& queue_category() noexcept;
inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), queue_category()};
}

enum class customer_state { enabled, disabled, suspended };
enum class delivery_mode { relay, hold, odmr };
enum class link_kind { dsl, dialup };

const char* to_string(customer_state s) noexcept;
const char* to_string(delivery_mode m) noexcept;
const char* to_string(link_kind k) noexcept;
std::optional<customer_state> parse_customer_state(std::string_view s) noexcept;
std::optional<delivery_mode> parse_delivery_mode(std::string_view s) noexcept;
std::optional<link_kind> parse_link_kind(std::string_view s) noexcept;

// A RADIUS/pppd user name that marks one of the customer's lines.
struct link_user {
  std::string user;
  link_kind kind = link_kind::dsl;
  // CIDRs the line's addresses and prefix must fall in, comma-separated,
  // IPv4 and IPv6 alike ("192.0.2.0/24,2001:db8::/32"); "" = any. A family
  // without a range of its own is ignored on a pinned user's line.
  std::string allowed_net;
  bool operator==(const link_user&) const = default;
};

struct customer {
  std::int64_t id = 0;                 // assigned by add_customer
  std::string name;                    // [a-z0-9][a-z0-9._-]{0,62}
  std::vector<std::string> domains;    // lower-case, no trailing dot, unique
  bool subdomains = false;             // also accept *.domain
  customer_state state = customer_state::enabled;
  delivery_mode mode = delivery_mode::relay;
  std::string route;                   // "host", "host:port", "mx", or "" (none)
  std::uint16_t link_port = 25;        // port of the customer's server over a link
  std::vector<link_user> link_users;
  // Lower-cased addresses; nullopt: every local part of the domains is accepted.
  std::optional<std::vector<std::string>> recipients;
  std::uint64_t max_size = 0;          // bytes; 0: the global message_size_limit
  std::uint64_t quota = 0;             // bytes queued at most; 0: no quota
  std::int64_t queue_lifetime = 0;     // seconds; 0: the global queue_lifetime
  std::int64_t delay_warning = 0;      // seconds; 0: the global delay_warning_time
  std::string tls;                     // STARTTLS toward its server: none|may|encrypt|verify; "" = smtp_tls
  std::string credential;              // ETRN/ODMR login: "hmac-md5:..." (gateway/inbound/sasl.hpp), "" = none; never a password
  std::vector<std::string> etrn_networks;  // CIDRs from which ETRN is allowed without AUTH
  // Where the server sits on an IPv6 line: "" or "framed" (the line's own
  // IPv6 address), "none" (IPv4 only), or an offset inside the line's
  // delegated prefix ("::25" on 2001:db8:0:5600::/56 is 2001:db8:0:5600::25).
  std::string ipv6_server;
  std::string prefer_family;  // which address of a dual-stack link first: "" = "ipv6", or "ipv4"
  // Which RCPTs are taken for the customer's domains (recipient_policy.hpp):
  // "any", "list", "learn", "verify"; "" = "list" when recipients is set, else "any".
  std::string recipient_check;
  // learn/verify: what an address not known yet gets while the customer's
  // server cannot be asked: "" = "tempfail" (450 4.1.1), "accept", "reject" (550 5.1.1).
  std::string unknown_recipients;
  // Whether its server is told the original client of each message at
  // flush time: "" = "xforward" (when the server offers XFORWARD), "xclient"
  // (XCLIENT when offered), "none".
  std::string forward_client;
  bool operator==(const customer&) const = default;
};

// The client a message came from, as the next hop's XFORWARD/XCLIENT wants
// it (www.postfix.org/XFORWARD_README.html). An empty field (0 for port) is
// unknown: nothing is sent for it. Messages queued before these fields
// existed have the address and HELO parsed from `client`, nothing else.
struct client_origin {
  std::string address;  // "192.0.2.1" or "2001:db8::1" (no "IPv6:" prefix)
  // The reverse name as looked up at arrival, forward-confirmed; or
  // "[UNAVAILABLE]" (no name, or it did not confirm) or "[TEMPUNAVAIL]"
  // (the lookup failed or took too long).
  std::string name;
  std::string helo;     // the HELO/EHLO argument as the client sent it
  std::string proto;    // "SMTP" (HELO) or "ESMTP" (EHLO)
  std::uint16_t port = 0;
  bool operator==(const client_origin&) const = default;
};

// One RCPT of an incoming message, DSN parameters as received (RFC 3461).
struct recipient {
  std::string address;  // the RCPT path without <>, case kept
  std::string orcpt;    // ORCPT value "addr-type;xtext", "" when absent
  std::string notify;   // NOTIFY value upper-cased, "" when absent
};

// A message accepted by the SMTP server, for one customer. A message whose
// recipients belong to several customers is committed as one entry per
// customer, so that each customer's queue stands on its own.
struct new_message {
  std::int64_t customer_id = 0;
  std::string sender;   // reverse-path without <>; "" is the null sender
  std::vector<recipient> recipients;
  std::string envid;    // ENVID xtext as received, "" when absent
  std::string ret;      // "FULL", "HDRS" or ""
  std::string body_type;  // "7BIT", "8BITMIME" or "" (not given)
  std::string client;   // "helo-name[address]" for logs and DSNs
  client_origin origin; // the same client, field by field (XFORWARD)
  std::int64_t arrival = 0;  // unix seconds
  std::string content;  // the message: CRLF lines, Received: prepended, not dot-stuffed
};

// A queued recipient as the queue tools show it.
struct recipient_info {
  std::int64_t id = 0;
  std::string address;
  std::string orcpt;
  std::string notify;
  int attempts = 0;
  std::int64_t next_attempt = 0;   // unix seconds; 0: as soon as a route exists
  std::string last_reply;          // last reply from the next hop, "" if none
  bool delay_notified = false;     // a delay DSN went out for it
};

struct message_info {
  std::string qid;
  std::int64_t customer_id = 0;
  std::string customer;            // customer name
  std::string sender;
  std::int64_t arrival = 0;
  std::uint64_t size = 0;          // octets of content
  bool held = false;               // on operator hold: not delivered until released
  std::string envid;
  std::string ret;
  std::string body_type;
  std::string client;
  client_origin origin;
  std::vector<recipient_info> recipients;
};

// What became of one recipient in a delivery attempt.
enum class recipient_fate {
  delivered,  // the next hop said 2xx: it leaves the queue
  deferred,   // 4xx, or not tried (connection lost): it stays, attempts + 1
  failed,     // 5xx or expired: it leaves the queue, together with its DSN
};

struct recipient_update {
  std::int64_t recipient_id = 0;
  recipient_fate fate = recipient_fate::deferred;
  std::string reply;  // the next hop's reply (or our reason), kept as last_reply
};

// One live session of a customer's line (from RADIUS, pcap or a script).
struct link_record {
  std::string user;          // RADIUS User-Name / pppd peer name
  std::int64_t customer_id = 0;
  link_kind kind = link_kind::dsl;
  std::string session_id;    // Acct-Session-Id, "" when the source has none
  std::string address;       // framed IPv4 address, "" when none
  std::string ipv6_address;  // the line's own IPv6 address, "" when none
  std::string ipv6_prefix;   // the customer LAN's IPv6 prefix "ADDR/LEN", "" when none
  std::string nas;           // NAS-IP-Address or NAS-Identifier, "" when unknown
  std::string source;        // "radius", "pcap" or "script"
  std::int64_t since = 0;    // unix seconds
  bool operator==(const link_record&) const = default;
};

// An address the customer's server told about: it took mail for it (good)
// or refused it as unknown (bad), during a flush or a callout.
struct known_recipient {
  std::int64_t customer_id = 0;
  std::string address;       // lower-cased local@domain
  bool good = true;
  std::string source;        // "delivery" or "callout"
  std::int64_t first_seen = 0;  // unix seconds
  std::int64_t last_seen = 0;   // unix seconds; expiry counts from here
  bool operator==(const known_recipient&) const = default;
};

// The name of the system customer that owns DSNs and other notices the
// gateway itself originates. It has no domains, so no mail is accepted for it.
inline constexpr const char* notices_customer = "mailer-daemon";

struct queue_stats {
  std::int64_t customer_id = 0;
  std::string customer;
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
  std::int64_t oldest_arrival = 0;  // unix seconds; 0 when empty
};

// One bucket of queue_age_histogram: the queued messages whose age (now -
// arrival, seconds) is above the previous bucket's bound and at most
// upper_seconds.
struct age_bucket {
  std::int64_t upper_seconds = -1;  // -1: no upper bound (the last bucket)
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;          // octets of content
};

// Most upper bounds queue_age_histogram takes (its work grows with them).
inline constexpr std::size_t max_age_buckets = 32;

// The room a store keeps inside its own files on this host (see store::space).
struct space_info {
  std::uint64_t file_bytes = 0;      // its files on the local disk (database and log); 0: not local
  std::uint64_t reusable_bytes = 0;  // free inside those files: new mail fills it before they grow
  bool gives_back = false;           // release_space can return that room to the file system
};

// Who delivers a customer right now (see the header comment).
struct delivery_lease {
  std::int64_t customer_id = 0;
  std::string holder;        // node_name of the holder
  std::int64_t fence = 0;    // grows with every new take (never reused for the customer)
  std::int64_t expires = 0;  // unix ms in the clock it was taken with
  std::int64_t taken = 0;    // unix ms when this holder took it (renewals keep it)
};

// One gateway node as the shared store knows it (cluster status). Written
// by the node itself (store::heartbeat) every few seconds.
struct node_record {
  std::string name;             // node_name
  std::string version;          // the flushgate version it runs
  std::int64_t started = 0;     // unix seconds, when its daemon started
  std::int64_t heartbeat = 0;   // unix ms of its last heartbeat, the store's clock
  std::int64_t age_ms = 0;      // list_nodes: ms since that heartbeat, the store's clock
};

// A customer's retry state (scheduler.hpp) as the node that ran its last
// flush left it, so that other nodes keep the same backoff instead of each
// trying on its own schedule.
struct retry_record {
  std::int64_t customer_id = 0;
  int failures = 0;             // consecutive runs that left mail behind
  std::int64_t next_try = 0;    // unix ms (the writer's clock): not before then
  std::string node;             // who wrote it
};

// One entry of the recent-events list (core/event_log.hpp), shared by the
// nodes of a cluster and kept across restarts.
struct event_record {
  std::int64_t id = 0;          // assigned by record_event; grows with time
  std::int64_t time = 0;        // unix seconds
  std::string node;             // the node it happened on
  std::string kind;
  std::string customer;         // "" when none
  std::string text;
};

// How many events record_event keeps (older ones are dropped).
inline constexpr std::size_t max_stored_events = 1000;

// The answer of store::take_lease.
struct lease_take {
  bool ours = false;     // true: this node holds the lease now (lease is ours)
  delivery_lease lease;  // ours: our lease; else the other holder's (holder, expires)
  std::int64_t now = 0;  // not ours: the clock the answer was judged by (expires - now: how
                         // long the holder keeps it unless it renews)
};

class store {
 public:
  virtual ~store() = default;

  // Customers. add_customer assigns c.id; domains must be unused.
  virtual boost::system::error_code add_customer(customer& c) = 0;
  virtual boost::system::error_code update_customer(const customer& c) = 0;
  // Refused with errc::not_empty while mail is queued unless force (which
  // deletes that mail: the operator said so).
  virtual boost::system::error_code remove_customer(std::string_view name, bool force) = 0;
  virtual boost::system::result<customer> find_customer(std::string_view name) = 0;
  virtual boost::system::result<std::vector<customer>> list_customers() = 0;

  // Stores a batch in one transaction and makes it durable (fsync) before
  // returning: this is where "250 only after fsync" holds. Returns one queue
  // id per message, in order.
  virtual boost::system::result<std::vector<std::string>> commit_messages(
      std::span<const new_message> batch) = 0;

  // Copies one message from another store (store copy), keeping its queue
  // id, hold flag and each recipient's state (attempts, next attempt, last
  // reply, delay notice), in one durable transaction. m.customer_id is this
  // store's id of the customer; m.size and recipient ids are ignored.
  // name_taken when the queue id is already here (a resumed copy skips it),
  // not_found for an unknown customer, invalid_argument without recipients.
  virtual boost::system::error_code import_message(const message_info& m,
                                                   std::string_view content) = 0;

  // Queue inspection and operator actions. customer_id 0 = all customers.
  virtual boost::system::result<std::vector<message_info>> list_messages(
      std::int64_t customer_id, std::size_t limit) = 0;
  virtual boost::system::result<message_info> find_message(std::string_view qid) = 0;
  virtual boost::system::result<std::string> read_content(std::string_view qid) = 0;
  // The contents of several messages, in the order of qids; not_found when
  // one is gone. A backend may read them at once (PostgreSQL: one query);
  // the default reads them one by one.
  virtual boost::system::result<std::vector<std::string>> read_contents(
      std::span<const std::string> qids);
  virtual boost::system::error_code set_held(std::string_view qid, bool held) = 0;
  virtual boost::system::error_code delete_message(std::string_view qid) = 0;
  virtual boost::system::result<std::vector<queue_stats>> queue_summary() = 0;
  virtual boost::system::result<queue_stats> customer_stats(std::int64_t customer_id) = 0;
  // Queued messages (any recipient left, held ones included) counted by age
  // at `now` into one bucket per upper bound (ascending, >= 0, at most
  // max_age_buckets) plus a last open-ended one: bounds.size() + 1 buckets,
  // empty ones included. A bucket holds previous bound < age <= its bound;
  // the first also holds negative ages (arrival after now: clock skew).
  // Bounds not ascending or out of range give invalid_argument, an unknown
  // customer not_found.
  virtual boost::system::result<std::vector<age_bucket>> queue_age_histogram(
      std::int64_t customer_id, std::int64_t now, std::span<const std::int64_t> upper_bounds) = 0;

  // Delivery. Messages of a customer that are not held, with qid > after_qid
  // (qids sort by arrival), at most limit, recipients included.
  virtual boost::system::result<std::vector<message_info>> list_deliverable(
      std::int64_t customer_id, std::string_view after_qid, std::size_t limit) = 0;
  // Records one delivery attempt of `qid` in ONE transaction: delivered and
  // failed recipients are deleted; deferred ones get attempts + 1, last_reply
  // and next_attempt; `notices` (the DSNs this attempt produced) are inserted
  // as new messages in the same transaction, so a recipient never leaves the
  // queue without its DSN being durable (ARCHITECTURE.md invariant 2). The
  // message goes when no recipient is left. Returns the queue ids of the
  // notices and whether the message is gone (its bytes freed).
  struct attempt_result {
    std::vector<std::string> notice_qids;
    bool message_removed = false;
  };
  virtual boost::system::result<attempt_result> record_attempt(
      std::string_view qid, std::span<const recipient_update> updates, std::int64_t next_attempt,
      std::span<const new_message> notices) = 0;
  // Several attempts in ONE transaction (one fsync for a batch of delivered
  // messages), all or nothing; same rules as record_attempt for each.
  struct attempt {
    std::string qid;
    std::vector<recipient_update> updates;
    std::int64_t next_attempt = 0;
    std::vector<new_message> notices;
  };
  virtual boost::system::result<std::vector<attempt_result>> record_attempts(
      std::span<const attempt> attempts) = 0;
  // Marks recipients as delay-notified and inserts the delay DSN, in one
  // transaction. A recipient that is not queued for qid, or was
  // delay-notified already (by another node's sweep), refuses the whole
  // call with invalid_argument: the notice is never sent twice.
  virtual boost::system::result<std::vector<std::string>> record_delay_notice(
      std::string_view qid, std::span<const std::int64_t> recipient_ids,
      std::span<const new_message> notices) = 0;
  // The customer's messages that need a notice: arrival <= delay_before with a
  // recipient not yet delay-notified, or arrival <= expire_before. Oldest first.
  virtual boost::system::result<std::vector<message_info>> list_due_notices(
      std::int64_t customer_id, std::int64_t delay_before, std::int64_t expire_before,
      std::size_t limit) = 0;

  // Live links, one per user: save replaces the user's link; remove deletes it
  // only when session_id matches (or is ""), so a late Stop of an old session
  // never ends a newer one. remove returns not_found when nothing matched.
  virtual boost::system::error_code save_link(const link_record& link) = 0;
  virtual boost::system::error_code remove_link(std::string_view user,
                                                std::string_view session_id) = 0;
  virtual boost::system::result<std::vector<link_record>> list_links() = 0;

  // Recipient lists (the customer's explicit list, managed live: no whole
  // customer rewrite for one address). add skips addresses already there;
  // both return how many changed. A customer that had no list gets one.
  virtual boost::system::result<std::uint64_t> add_allowed_recipients(
      std::int64_t customer_id, std::span<const std::string> addresses) = 0;
  virtual boost::system::result<std::uint64_t> remove_allowed_recipients(
      std::int64_t customer_id, std::span<const std::string> addresses) = 0;

  // Known recipients (learn/verify): save upserts (first_seen kept, the rest
  // replaced); list gives one customer's (customer_id > 0) or everyone's, by
  // customer then address; forget drops one address ("" = all of the
  // customer's); expire drops good ones last seen before good_before and bad
  // ones before bad_before. forget/expire return how many went.
  virtual boost::system::error_code save_known_recipients(std::span<const known_recipient> items) = 0;
  virtual boost::system::result<std::vector<known_recipient>> list_known_recipients(
      std::int64_t customer_id) = 0;
  // For a cluster node keeping its copy in step (control/cluster_sync): the
  // rows of every customer last seen at or after `since`, and the number of
  // rows per customer (eviction marks, last_seen 0, not counted).
  virtual boost::system::result<std::vector<known_recipient>> list_known_recipients_since(
      std::int64_t since) = 0;
  virtual boost::system::result<std::map<std::int64_t, std::uint64_t>> count_known_recipients() = 0;
  virtual boost::system::result<std::uint64_t> forget_known_recipients(std::int64_t customer_id,
                                                                       std::string_view address) = 0;
  virtual boost::system::result<std::uint64_t> expire_known_recipients(std::int64_t good_before,
                                                                       std::int64_t bad_before) = 0;

  // Delivery leases (see the header comment; times in unix ms, now 0 = the
  // store's clock). take_lease gives the customer's lease to `node` for
  // duration_ms when it is free, expired, or already node's (then it is
  // renewed and keeps its fence; otherwise the fence grows); while another
  // node holds it, the answer is ours = false with that holder and its
  // expiry. An unknown customer gives not_found, an empty node or a
  // duration <= 0 invalid_argument.
  virtual boost::system::result<lease_take> take_lease(std::int64_t customer_id,
                                                       std::string_view node, std::int64_t now,
                                                       std::int64_t duration_ms) = 0;
  // Extends the lease to now + duration_ms while node still holds it with
  // this fence (also past its expiry, when nobody took it meanwhile: the
  // fence would have grown); the new expiry, or lease_lost.
  virtual boost::system::result<std::int64_t> renew_lease(std::int64_t customer_id,
                                                          std::string_view node,
                                                          std::int64_t fence, std::int64_t now,
                                                          std::int64_t duration_ms) = 0;
  // Frees the lease when node holds it with this fence (the fence is kept
  // for the next take); lease_lost when it did not.
  virtual boost::system::error_code release_lease(std::int64_t customer_id,
                                                  std::string_view node, std::int64_t fence) = 0;
  // The leases that have a holder (expired ones included), by customer id.
  virtual boost::system::result<std::vector<delivery_lease>> list_leases() = 0;

  // Nodes: heartbeat() records (or refreshes) node.name with its version
  // and start time, stamped with the store's clock; node.name is the
  // store's own node (PostgreSQL registers it at open: another name is
  // not_found). list_nodes() gives every node that ever beat, with the age
  // of its last beat, by name.
  virtual boost::system::error_code heartbeat(const node_record& node) = 0;
  virtual boost::system::result<std::vector<node_record>> list_nodes() = 0;

  // Retry state shared between nodes: save_retry replaces the customer's row
  // (failures 0 removes it; an unknown customer is not_found); list_retries
  // gives every row, by customer id.
  virtual boost::system::error_code save_retry(const retry_record& r) = 0;
  virtual boost::system::result<std::vector<retry_record>> list_retries() = 0;

  // The recent-events list: record_event appends e (its id is assigned; the
  // oldest beyond max_stored_events go); list_events gives at most limit,
  // newest first.
  virtual boost::system::error_code record_event(const event_record& e) = 0;
  virtual boost::system::result<std::vector<event_record>> list_events(std::size_t limit) = 0;

  // Space (ARCHITECTURE.md invariant 8: room that mail leaving the queue
  // freed is usable again within seconds). space() is cheap (no scan of the
  // queue). release_space gives at most about max_bytes of the free room
  // back to the file system in one short step and returns how much it could
  // still give back afterwards; call it again while that is not 0. A backend
  // whose files are not on this host returns zeros from both.
  virtual boost::system::result<space_info> space() = 0;
  virtual boost::system::result<std::uint64_t> release_space(std::uint64_t max_bytes) = 0;
};

}  // namespace flushgate::queue

namespace boost::system {
template <>
struct is_error_code_enum<flushgate::queue::errc> : std::true_type {};
}  // namespace boost::system
