// postgres_store.cpp — see postgres_store.hpp; the SQL is in postgres_sql.hpp.
#include "queue/postgres_store.hpp"

#include "core/config.hpp"
#include "core/log.hpp"
#include "queue/postgres_sql.hpp"
#include "queue/store_checks.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <unordered_map>
#include <utility>

namespace flushgate::queue {

namespace {

using boost::system::error_code;

// SQLSTATEs the store tells apart (PostgreSQL Appendix A).
constexpr std::string_view state_foreign_key = "23503";
constexpr std::string_view state_unique = "23505";
constexpr std::string_view state_disk_full = "53100";

// A libpq message on one log line: its newlines become "; ", tabs go.
std::string one_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::string out;
  for (char ch : text) {
    if (ch == '\n') {
      out += "; ";
    } else if (ch != '\t') {  // libpq indents continuation lines
      out += ch;
    }
  }
  return out;
}

// Server notices (e.g. "terminating connection due to immediate shutdown")
// go to the log, not to stderr.
void log_notice(void*, const char* message) {
  core::log_info("queue store: postgresql says: {}", one_line(message != nullptr ? message : ""));
}

std::int64_t to_int64(const char* s) {
  std::int64_t v = 0;
  if (s != nullptr) std::from_chars(s, s + std::strlen(s), v);
  return v;
}

// Rows a DELETE/UPDATE touched.
std::int64_t affected(pg_result* r) { return to_int64(PQcmdTuples(r)); }

// A text[] literal for an array parameter: every element quoted, with '\'
// and '"' escaped (https://www.postgresql.org/docs/15/arrays.html#ARRAYS-IO).
std::string text_array(const std::vector<std::string_view>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char ch : items[i]) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return out;
}

std::string int64_array(const std::vector<std::int64_t>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(items[i]);
  }
  out += '}';
  return out;
}

}  // namespace

void postgres_store::result_deleter::operator()(pg_result* r) const noexcept { PQclear(r); }

// The parameters of one statement. Text values are copied (libpq reads text
// parameters up to their NUL); binary ones (bodies) are referenced, so a
// 10 MB body is not copied: it must outlive the statement.
class postgres_store::params {
 public:
  params() = default;
  // Moved, never copied: values_ points into text_, whose strings keep
  // their addresses when the deque moves, not when it is copied (and a
  // std::vector of something copyable copies on growth unless its move is
  // noexcept, which a deque's is not).
  params(const params&) = delete;
  params& operator=(const params&) = delete;
  params(params&&) = default;
  params& operator=(params&&) = default;
  template <typename... Ts>
  explicit params(const Ts&... vs) {
    (add(vs), ...);
  }

  params& add(std::string_view v) { return push(text_.emplace_back(v).c_str(), 0); }
  params& add(const std::string& v) { return add(std::string_view(v)); }
  params& add(const char* v) { return add(std::string_view(v)); }
  params& add(std::int64_t v) { return add(std::to_string(v)); }
  params& add(bool v) { return push(v ? "true" : "false", 0); }
  params& add_null() { return push(nullptr, 0); }
  // A limit: 0 is NULL (no limit).
  params& add_limit(std::size_t limit) {
    if (limit == 0 || limit > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())) {
      return add_null();
    }
    return add(static_cast<std::int64_t>(limit));
  }
  params& add_binary(std::string_view v) {
    values_.push_back(v.data() != nullptr ? v.data() : "");
    lengths_.push_back(static_cast<int>(v.size()));
    formats_.push_back(1);
    return *this;
  }

  int size() const noexcept { return static_cast<int>(values_.size()); }
  const char* const* values() const noexcept { return values_.data(); }
  const int* lengths() const noexcept { return lengths_.data(); }
  const int* formats() const noexcept { return formats_.data(); }

 private:
  params& push(const char* v, int format) {
    values_.push_back(v);
    lengths_.push_back(0);
    formats_.push_back(format);
    return *this;
  }
  std::deque<std::string> text_;  // stable addresses
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

// BEGIN ... COMMIT; rolls back when left without a commit (an early return
// on error). commit() succeeds only when the server answered COMMIT: a
// COMMIT in an aborted transaction answers ROLLBACK, and a lost connection
// answers nothing — both are failures, so no caller ever reports a write
// the server did not confirm.
class postgres_store::transaction {
 public:
  explicit transaction(postgres_store& st, const char* begin_sql = pg_sql::begin) noexcept
      : st_(st), begin_sql_(begin_sql) {}
  ~transaction() {
    if (open_ && st_.conn_ != nullptr && PQstatus(st_.conn_) == CONNECTION_OK) {
      PQclear(PQexec(st_.conn_, pg_sql::rollback));
    }
    if (open_) st_.in_transaction_ = false;
  }
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;

  error_code begin() {
    if (auto ec = st_.ensure_connected()) return ec;
    if (auto ec = st_.run_void(begin_sql_, "BEGIN")) return ec;
    open_ = true;
    st_.in_transaction_ = true;
    return {};
  }

  error_code commit() {
    auto r = st_.run(pg_sql::commit, params{}, "COMMIT");
    if (!r) return r.error();
    open_ = false;
    st_.in_transaction_ = false;
    if (std::strcmp(PQcmdStatus(r->get()), "COMMIT") != 0) {
      core::log_warning("queue store: COMMIT answered {}", PQcmdStatus(r->get()));
      return errc::io_error;
    }
    return {};
  }

 private:
  postgres_store& st_;
  const char* begin_sql_;
  bool open_ = false;
};

postgres_store::postgres_store(postgres_options options)
    : options_(std::move(options)), backoff_(options_.min_retry) {}

postgres_store::~postgres_store() {
  if (conn_ != nullptr) PQfinish(conn_);
}

bool postgres_store::connected() const noexcept {
  return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
}

boost::system::result<std::unique_ptr<postgres_store>> postgres_store::open(
    postgres_options options) {
  if (options.node_name.empty()) {
    core::log_error("queue store: postgresql needs a node name");
    return errc::invalid_argument;
  }
  std::unique_ptr<postgres_store> s(new postgres_store(std::move(options)));
  if (auto ec = s->connect()) return ec;
  std::uint8_t node = 0;
  if (auto ec = s->migrate_and_register(node)) return ec;
  s->ids_ = std::make_unique<node_queue_ids>(node);
  // A clock that stepped back while the node was down must not repeat an
  // id that is still queued: new ids start after the greatest one.
  auto newest = s->run(pg_sql::max_qid, params{}, "newest queue id");
  if (!newest) return newest.error();
  if (PQntuples(newest->get()) == 1 && !PQgetisnull(newest->get(), 0, 0)) {
    s->ids_->start_after(PQgetvalue(newest->get(), 0, 0));
  }
  core::log_info("queue store: postgresql database {} on {}, node {} is number {}", PQdb(s->conn_),
                 PQhost(s->conn_), s->options_.node_name, int{node});
  return s;
}

// Keywords are read in order and a later one wins: connect_timeout first,
// so a conninfo that names its own keeps it. The conninfo itself is never
// logged (it may hold a password): core::mask_conninfo_password.
error_code postgres_store::connect() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  const char* keys[] = {"connect_timeout", "application_name", "dbname", nullptr};
  const char* values[] = {"5", "flushgated", options_.conninfo.c_str(), nullptr};
  conn_ = PQconnectdbParams(keys, values, 1);
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    const std::string why = one_line(conn_ != nullptr ? PQerrorMessage(conn_) : "out of memory");
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = nullptr;
    if (!lost_) {
      core::log_warning("queue store: cannot connect to postgresql ({}): {}",
                        core::mask_conninfo_password(options_.conninfo), why);
    }
    return errc::io_error;
  }
  PQsetNoticeProcessor(conn_, log_notice, nullptr);
  // Every COMMIT waits for the server's WAL flush, whatever the database's
  // or role's default says (invariant 1).
  if (auto ec = run_void(pg_sql::session_setup, "session setup")) return ec;
  return {};
}

error_code postgres_store::ensure_connected() {
  if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return {};
  // Never reconnect inside a transaction: what it did so far is gone.
  if (in_transaction_) return errc::io_error;
  const auto now = std::chrono::steady_clock::now();
  if (now < next_attempt_) return errc::io_error;  // backing off: do not hammer
  const bool was_lost = lost_;
  lost_ = true;  // connect() logs only a first failure
  if (auto ec = connect()) {
    if (!was_lost) core::log_warning("queue store: postgresql connection lost; retrying");
    next_attempt_ = now + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.max_retry);
    return ec;
  }
  // A node that upgraded the database meanwhile: refuse, do not guess.
  auto v = run(pg_sql::read_version, params{}, "read schema version");
  if (!v) return v.error();
  const auto version = PQntuples(v->get()) == 1 ? to_int64(PQgetvalue(v->get(), 0, 0)) : -1;
  if (version != schema_version) {
    core::log_error("queue store: postgresql schema version is {}, this flushgate's {}", version,
                    schema_version);
    PQfinish(conn_);
    conn_ = nullptr;
    next_attempt_ = now + options_.max_retry;
    return errc::io_error;
  }
  lost_ = false;
  backoff_ = options_.min_retry;
  next_attempt_ = {};
  core::log_info("queue store: postgresql connection recovered");
  return {};
}

error_code postgres_store::lose_connection(std::string_view what, std::string_view why) {
  if (!lost_) {
    core::log_warning("queue store: postgresql connection lost during {}: {}", what,
                      one_line(std::string(why)));
    lost_ = true;
  }
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
  // The first reconnect may come at once: a restarted server is often back.
  backoff_ = options_.min_retry;
  next_attempt_ = {};
  return errc::io_error;
}

boost::system::result<postgres_store::result_ptr> postgres_store::run(const char* sql,
                                                                      const params& p,
                                                                      std::string_view what,
                                                                      postgres_violation v,
                                                                      int result_format) {
  if (auto ec = ensure_connected()) return ec;
  result_ptr r(PQexecParams(conn_, sql, p.size(), nullptr, p.values(), p.lengths(), p.formats(),
                            result_format));
  const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return r;
  return fail(r.get(), what, v);
}

error_code postgres_store::run_void(const char* sql, std::string_view what) {
  // The simple protocol, on the connection as it is (no reconnect): for
  // session set-up and BEGIN, which take no parameters.
  result_ptr r(PQexec(conn_, sql));
  const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return {};
  return fail(r.get(), what, {});
}

error_code postgres_store::fail(const pg_result* r, std::string_view what, postgres_violation v) {
  std::string why = one_line(r != nullptr ? PQresultErrorMessage(r) : "");
  if (why.empty() && conn_ != nullptr) why = one_line(PQerrorMessage(conn_));
  // A broken connection (server gone, network down, administrator's
  // shutdown) is io_error, and the next call reconnects.
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) return lose_connection(what, why);
  const char* state_p = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  const std::string_view state = state_p != nullptr ? state_p : "";
  if (state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03") {
    return lose_connection(what, why);
  }
  if (state == state_foreign_key && v.foreign_key != errc::io_error) {
    core::log_info("queue store: {}: {}", what, why);
    return v.foreign_key;
  }
  if (state == state_unique) {
    // Another node took the name or domain between our check and our write.
    const char* c = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    const std::string_view constraint = c != nullptr ? c : "";
    core::log_info("queue store: {}: {}", what, why);
    if (constraint == "domains_pkey") return errc::domain_taken;
    if (constraint == "customers_name_key" || constraint == "link_users_pkey" ||
        constraint == "messages_qid_key") {
      return errc::name_taken;
    }
  }
  core::log_warning("queue store: {} failed: {} (sqlstate {})", what, why, state);
  return state == state_disk_full ? errc::disk_full : errc::io_error;
}

// One transaction under an advisory lock: read the version (0 when the
// database is empty), refuse a newer one, run the missing migrations,
// register this node's name. Two nodes starting at once take turns.
error_code postgres_store::migrate_and_register(std::uint8_t& node) {
  {
    auto f = run(pg_sql::show_fsync, params{}, "SHOW fsync");
    if (f && PQntuples(f->get()) == 1 && std::strcmp(PQgetvalue(f->get(), 0, 0), "on") != 0) {
      core::log_warning(
          "queue store: the postgresql server runs with fsync = off: a crash of "
          "its host can lose acknowledged mail");
    }
    auto e = run(pg_sql::show_encoding, params{}, "SHOW server_encoding");
    if (e && PQntuples(e->get()) == 1 &&
        std::strcmp(PQgetvalue(e->get(), 0, 0), "SQL_ASCII") != 0) {
      core::log_info(
          "queue store: database encoding is {}: envelopes that are not valid in it "
          "get 451 (SQL_ASCII takes any bytes)",
          PQgetvalue(e->get(), 0, 0));
    }
  }
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  if (auto ec = run_void(pg_sql::lock_schema, "schema lock")) return ec;
  auto exists = run(pg_sql::schema_exists, params{}, "schema lookup");
  if (!exists) return exists.error();
  std::int64_t version = 0;
  if (PQgetvalue(exists->get(), 0, 0)[0] == 't') {
    auto v = run(pg_sql::read_version, params{}, "read schema version");
    if (!v) return v.error();
    version = PQntuples(v->get()) == 1 ? to_int64(PQgetvalue(v->get(), 0, 0)) : -1;
  }
  if (version > schema_version || version < 0) {
    core::log_error("queue store: postgresql schema version {} is newer than this flushgate's {}",
                    version, schema_version);
    return errc::io_error;
  }
  for (auto k = version; k < schema_version; ++k) {
    if (auto ec = run_void(pg_sql::migrations[k], "schema migration")) return ec;
    core::log_info("queue store: postgresql schema migrated to version {}", k + 1);
  }
  if (version != schema_version) {
    auto w = run(pg_sql::write_version, params{std::int64_t{schema_version}}, "write version");
    if (!w) return w.error();
  }
  if (auto r = run(pg_sql::register_node, params{options_.node_name}, "register node"); !r) {
    return r.error();
  }
  auto n = run(pg_sql::node_number, params{options_.node_name}, "node number");
  if (!n) return n.error();
  if (PQntuples(n->get()) != 1) {
    core::log_error(
        "queue store: no node number left for {} (256 names registered; delete "
        "retired ones from the nodes table)",
        options_.node_name);
    return errc::io_error;
  }
  node = static_cast<std::uint8_t>(to_int64(PQgetvalue(n->get(), 0, 0)));
  return tx.commit();
}

boost::system::result<std::int64_t> postgres_store::customer_id_of(std::string_view name) {
  auto r = run(pg_sql::lock_customer_by_name, params{name}, "customer lookup");
  if (!r) return r.error();
  if (PQntuples(r->get()) == 0) return errc::not_found;
  return to_int64(PQgetvalue(r->get(), 0, 0));
}

// Inside a transaction: is c's name, each domain and each link user free
// for customer `self` (0 for a new customer)? A concurrent writer on another
// node can still win the race; the unique keys then answer (fail()).
error_code postgres_store::check_customer_free(const customer& c, std::int64_t self) {
  auto taken = [this, self](const char* sql,
                            std::string_view value) -> boost::system::result<bool> {
    auto r = run(sql, params{value, self}, "ownership check");
    if (!r) return {boost::system::in_place_error, r.error()};
    return PQntuples(r->get()) > 0;
  };
  auto name = taken(pg_sql::name_owner, c.name);
  if (!name) return name.error();
  if (*name) return errc::name_taken;
  for (const auto& d : c.domains) {
    auto t = taken(pg_sql::domain_owner, d);
    if (!t) return t.error();
    if (*t) return errc::domain_taken;
  }
  for (const auto& u : c.link_users) {
    auto t = taken(pg_sql::user_owner, u.user);
    if (!t) return t.error();
    if (*t) return errc::name_taken;
  }
  return {};
}

// Each list in one statement (arrays), not one statement per item.
error_code postgres_store::write_customer_details(std::int64_t id, const customer& c) {
  if (!c.domains.empty()) {
    std::vector<std::string_view> d(c.domains.begin(), c.domains.end());
    if (auto r = run(pg_sql::insert_domains, params{text_array(d), id}, "insert domains"); !r) {
      return r.error();
    }
  }
  if (!c.link_users.empty()) {
    std::vector<std::string_view> users, kinds, nets;
    for (const auto& u : c.link_users) {
      users.push_back(u.user);
      kinds.push_back(to_string(u.kind));
      nets.push_back(u.allowed_net);
    }
    params p{text_array(users), text_array(kinds), text_array(nets), id};
    if (auto r = run(pg_sql::insert_users, p, "insert link users"); !r) return r.error();
  }
  if (c.recipients && !c.recipients->empty()) {
    std::vector<std::string_view> a(c.recipients->begin(), c.recipients->end());
    if (auto r = run(pg_sql::insert_allowed, params{text_array(a), id}, "insert recipients"); !r) {
      return r.error();
    }
  }
  return {};
}

namespace {

// $1..$19 of insert_customer and update_customer (one list: they cannot drift).
void add_customer_columns(auto& p, const customer& c) {
  p.add(c.name)
      .add(c.subdomains)
      .add(to_string(c.state))
      .add(to_string(c.mode))
      .add(c.route)
      .add(std::int64_t{c.link_port})
      .add(c.recipients.has_value())
      .add(static_cast<std::int64_t>(c.max_size))
      .add(static_cast<std::int64_t>(c.quota))
      .add(c.queue_lifetime)
      .add(c.delay_warning)
      .add(c.tls)
      .add(c.credential)
      .add(detail::join_list(c.etrn_networks))
      .add(c.ipv6_server)
      .add(c.prefer_family)
      .add(c.recipient_check)
      .add(c.unknown_recipients)
      .add(c.forward_client);
}

}  // namespace

error_code postgres_store::add_customer(customer& c) {
  if (!detail::valid_customer(c)) return errc::invalid_argument;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  if (auto ec = check_customer_free(c, 0)) return ec;
  params p;
  add_customer_columns(p, c);
  auto r = run(pg_sql::insert_customer, p, "insert customer");
  if (!r) return r.error();
  const std::int64_t id = to_int64(PQgetvalue(r->get(), 0, 0));
  if (auto ec = write_customer_details(id, c)) return ec;
  if (auto ec = tx.commit()) return ec;
  c.id = id;
  return {};
}

error_code postgres_store::update_customer(const customer& c) {
  if (!detail::valid_customer(c)) return errc::invalid_argument;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  {
    auto r = run(pg_sql::lock_customer, params{c.id}, "customer lookup");
    if (!r) return r.error();
    if (PQntuples(r->get()) == 0) return errc::not_found;
  }
  if (auto ec = check_customer_free(c, c.id)) return ec;
  params p;
  add_customer_columns(p, c);
  p.add(c.id);
  if (auto r = run(pg_sql::update_customer, p, "update customer"); !r) return r.error();
  // The lists are replaced whole: simpler than a diff, and still atomic.
  if (auto r = run(pg_sql::clear_customer_lists, params{c.id}, "clear customer lists"); !r) {
    return r.error();
  }
  if (auto ec = write_customer_details(c.id, c)) return ec;
  return tx.commit();
}

error_code postgres_store::remove_customer(std::string_view name, bool force) {
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  auto id = customer_id_of(name);
  if (!id) return id.error();
  {
    auto r = run(pg_sql::customer_has_mail, params{*id}, "queued-mail check");
    if (!r) return r.error();
    if (PQgetvalue(r->get(), 0, 0)[0] == 't' && !force) return errc::not_empty;
  }
  // Mail committed by another node after the check makes the customer's
  // delete fail on the messages' foreign key: not_empty, try again.
  if (auto r = run(pg_sql::delete_customer_mail, params{*id}, "remove customer mail"); !r) {
    return r.error();
  }
  if (auto r = run(pg_sql::delete_customer, params{*id}, "remove customer",
                   {.foreign_key = errc::not_empty});
      !r) {
    return r.error();
  }
  return tx.commit();
}

boost::system::result<std::vector<customer>> postgres_store::read_customers(const char* sql,
                                                                            const params& p) {
  auto r = run(sql, p, "read customers");
  if (!r) return r.error();
  pg_result* res = r->get();
  std::vector<customer> out;
  const int rows = PQntuples(res);
  for (int i = 0; i < rows; ++i) {
    auto text = [&](int col) {
      return std::string(PQgetvalue(res, i, col), PQgetlength(res, i, col));
    };
    auto integer = [&](int col) { return to_int64(PQgetvalue(res, i, col)); };
    customer c;
    c.id = integer(0);
    c.name = text(1);
    c.subdomains = text(2) == "t";
    auto state = parse_customer_state(text(3));
    auto mode = parse_delivery_mode(text(4));
    if (!state || !mode) {
      core::log_error("queue store: customer {} has a bad state or mode", c.name);
      return errc::io_error;
    }
    c.state = *state;
    c.mode = *mode;
    c.route = text(5);
    c.link_port = static_cast<std::uint16_t>(integer(6));
    if (text(7) == "t") c.recipients.emplace();
    c.max_size = static_cast<std::uint64_t>(integer(8));
    c.quota = static_cast<std::uint64_t>(integer(9));
    c.queue_lifetime = integer(10);
    c.delay_warning = integer(11);
    c.tls = text(12);
    c.credential = text(13);
    c.etrn_networks = detail::split_list(text(14));
    c.ipv6_server = text(15);
    c.prefer_family = text(16);
    c.recipient_check = text(17);
    c.unknown_recipients = text(18);
    c.forward_client = text(19);
    out.push_back(std::move(c));
  }
  if (out.empty()) return out;
  // The lists: one query per child table for all customers at once.
  const std::int64_t only_id = out.size() == 1 ? out.front().id : 0;
  std::unordered_map<std::int64_t, customer*> by_id;
  for (auto& c : out) by_id.emplace(c.id, &c);
  bool bad_kind = false;
  auto for_each_row = [&](const char* sql_one, const char* sql_all, auto&& use) -> error_code {
    params q;
    if (only_id != 0) q.add(only_id);
    auto rows_r = run(only_id != 0 ? sql_one : sql_all, q, "read customer lists");
    if (!rows_r) return rows_r.error();
    pg_result* lr = rows_r->get();
    for (int i = 0; i < PQntuples(lr); ++i) {
      auto it = by_id.find(to_int64(PQgetvalue(lr, i, 0)));
      if (it == by_id.end()) continue;
      auto text = [&](int col) {
        return std::string(PQgetvalue(lr, i, col), PQgetlength(lr, i, col));
      };
      use(*it->second, text);
    }
    return {};
  };
  if (auto ec = for_each_row(pg_sql::domains_one, pg_sql::domains_all,
                             [](customer& c, auto& text) { c.domains.push_back(text(1)); })) {
    return ec;
  }
  if (auto ec = for_each_row(pg_sql::users_one, pg_sql::users_all, [&](customer& c, auto& text) {
        link_user u;
        u.user = text(1);
        auto kind = parse_link_kind(text(2));
        bad_kind = bad_kind || !kind;
        u.kind = kind.value_or(link_kind::dsl);
        u.allowed_net = text(3);
        c.link_users.push_back(std::move(u));
      })) {
    return ec;
  }
  if (bad_kind) {
    core::log_error("queue store: a link user has a bad kind");
    return errc::io_error;
  }
  if (auto ec = for_each_row(pg_sql::allowed_one, pg_sql::allowed_all, [](customer& c, auto& text) {
        if (c.recipients) c.recipients->push_back(text(1));
      })) {
    return ec;
  }
  return out;
}

boost::system::result<customer> postgres_store::find_customer(std::string_view name) {
  auto found = read_customers(pg_sql::customer_by_name, params{name});
  if (!found) return found.error();
  if (found->empty()) return errc::not_found;
  return std::move(found->front());
}

boost::system::result<std::vector<customer>> postgres_store::list_customers() {
  return read_customers(pg_sql::customers_all, params{});
}

namespace {

// The message's client field by field: the last five parameters of
// insert_message and import_message.
template <typename Params>
void add_origin_params(Params& p, const client_origin& o) {
  p.add(o.address).add(o.name).add(o.helo).add(o.proto).add(std::int64_t{o.port});
}

// The 18 parameters of pg_sql::insert_message; the body is referenced, not copied.
template <typename Params>
void add_message_params(Params& p, const std::string& qid, const new_message& m) {
  std::vector<std::string_view> addresses, orcpts, notifies;
  for (const auto& r : m.recipients) {
    addresses.push_back(r.address);
    orcpts.push_back(r.orcpt);
    notifies.push_back(r.notify);
  }
  p.add(qid)
      .add(m.customer_id)
      .add(m.sender)
      .add(m.arrival)
      .add(static_cast<std::int64_t>(m.content.size()))
      .add(m.envid)
      .add(m.ret)
      .add(m.body_type)
      .add(m.client)
      .add_binary(m.content)
      .add(text_array(addresses))
      .add(text_array(orcpts))
      .add(text_array(notifies));
  add_origin_params(p, m.origin);
}

}  // namespace

// One pipeline: BEGIN, one INSERT per message, COMMIT, then a single Sync —
// one round trip to the server for the whole batch, one WAL flush at the
// COMMIT. After an error the server skips the rest up to the Sync (the
// COMMIT included) and leaves the transaction aborted; it is rolled back
// here, so nothing of the batch stays.
// One statement of a pipelined batch (run_pipelined).
struct postgres_store::pipelined {
  const char* sql;
  params p;
  postgres_violation v;
};

// Results come back one per statement (each followed by a null); the first
// failure decides the error, the rest are drained. Reading never waits for
// more than `window` statements: with a large batch in blocking mode the
// server would otherwise stall writing results we do not read while we
// stall writing bodies it does not read (libpq-pipeline-mode, "Interleaving").
boost::system::result<std::vector<std::int64_t>> postgres_store::run_pipelined(
    std::vector<pipelined>& batch, std::string_view what) {
  if (auto ec = ensure_connected()) return ec;
  if (PQenterPipelineMode(conn_) != 1) return lose_connection(what, PQerrorMessage(conn_));
  constexpr std::size_t window = 64;
  // -1 until the server answered the statement (so a COMMIT with no or an
  // odd answer never counts as confirmed).
  std::vector<std::int64_t> rows(batch.size(), -1);
  error_code first_error;
  std::size_t sent = 0;
  std::size_t read = 0;
  auto read_results = [&]() -> bool {
    for (; read < sent; ++read) {
      result_ptr r(PQgetResult(conn_));
      if (!r) {
        if (!first_error) first_error = lose_connection(what, PQerrorMessage(conn_));
        return false;
      }
      const auto status = PQresultStatus(r.get());
      if (status == PGRES_FATAL_ERROR && !first_error) {
        first_error = fail(r.get(), what, batch[read].v);
        if (conn_ == nullptr) return false;
      } else if (status == PGRES_TUPLES_OK) {
        rows[read] = PQntuples(r.get());
      } else if (status == PGRES_COMMAND_OK) {
        const char* tag = PQcmdStatus(r.get());
        rows[read] = std::strcmp(tag, "ROLLBACK") == 0 ? -1 : affected(r.get());
      }
      for (int k = 0; k < 8; ++k) {  // a null ends this statement's results
        result_ptr extra(PQgetResult(conn_));
        if (!extra) break;
      }
    }
    return true;
  };
  bool ok = true;
  for (std::size_t i = 0; ok && i < batch.size(); ++i) {
    const params& p = batch[i].p;
    ok = PQsendQueryParams(conn_, batch[i].sql, p.size(), nullptr, p.values(), p.lengths(),
                           p.formats(), 0) == 1;
    ++sent;
    if (ok && sent - read >= window) {
      ok = PQsendFlushRequest(conn_) == 1 && PQflush(conn_) == 0;
      if (ok && !read_results()) return first_error;
    }
  }
  ok = ok && PQpipelineSync(conn_) == 1;
  if (!ok) return lose_connection(what, PQerrorMessage(conn_));
  if (!read_results()) return first_error;
  if (conn_ != nullptr) {
    // The sync (bounded: libpq yields it once, or a null on a broken connection).
    for (int i = 0; i < 4; ++i) {
      result_ptr r(PQgetResult(conn_));
      if (!r || PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC) break;
    }
    if (PQexitPipelineMode(conn_) != 1 || PQstatus(conn_) != CONNECTION_OK) {
      const auto ec = lose_connection(what, PQerrorMessage(conn_));
      if (!first_error) first_error = ec;
    }
  }
  if (first_error) return first_error;
  return rows;
}

// BEGIN, one INSERT per message, COMMIT: one pipelined batch, one round
// trip per 64 messages and one WAL flush.
boost::system::result<std::vector<std::string>> postgres_store::commit_messages(
    std::span<const new_message> batch) {
  std::vector<std::string> qids;
  if (batch.empty()) return qids;
  if (!detail::all_have_recipients(batch)) return errc::invalid_argument;
  if (auto ec = ensure_connected()) return ec;
  qids.reserve(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) qids.push_back(ids_->next());

  std::vector<pipelined> statements;
  statements.reserve(batch.size() + 2);
  statements.push_back({pg_sql::begin, params{}, {}});
  for (std::size_t i = 0; i < batch.size(); ++i) {
    params p;
    add_message_params(p, qids[i], batch[i]);
    statements.push_back({pg_sql::insert_message, std::move(p), {.foreign_key = errc::not_found}});
  }
  statements.push_back({pg_sql::commit, params{}, {}});
  auto rows = run_pipelined(statements, "commit messages");
  if (conn_ != nullptr && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
    PQclear(PQexec(conn_, pg_sql::rollback));
  }
  if (!rows) return rows.error();
  if (rows->back() < 0) {
    core::log_warning("queue store: commit of {} messages was not confirmed", batch.size());
    return errc::io_error;
  }
  return qids;
}

error_code postgres_store::insert_messages(std::span<const new_message> batch, errc missing,
                                           std::vector<std::string>& qids) {
  for (const auto& m : batch) {
    std::string qid = ids_->next();
    params p;
    add_message_params(p, qid, m);
    if (auto r = run(pg_sql::insert_message, p, "insert message", {.foreign_key = missing}); !r) {
      return r.error();
    }
    qids.push_back(std::move(qid));
  }
  return {};
}

// The message rows of sql, then all their recipients in one more query.
boost::system::result<std::vector<message_info>> postgres_store::read_messages(
    const char* sql, const params& p, std::string_view what) {
  auto r = run(sql, p, what);
  if (!r) return r.error();
  pg_result* res = r->get();
  std::vector<message_info> out;
  std::vector<std::int64_t> ids;
  std::unordered_map<std::int64_t, std::size_t> index;
  const int rows = PQntuples(res);
  for (int i = 0; i < rows; ++i) {
    auto text = [&](int col) {
      return std::string(PQgetvalue(res, i, col), PQgetlength(res, i, col));
    };
    message_info m;
    ids.push_back(to_int64(PQgetvalue(res, i, 0)));
    index.emplace(ids.back(), out.size());
    m.qid = text(1);
    m.customer_id = to_int64(PQgetvalue(res, i, 2));
    m.customer = text(3);
    m.sender = text(4);
    m.arrival = to_int64(PQgetvalue(res, i, 5));
    m.size = static_cast<std::uint64_t>(to_int64(PQgetvalue(res, i, 6)));
    m.held = text(7) == "t";
    m.envid = text(8);
    m.ret = text(9);
    m.body_type = text(10);
    m.client = text(11);
    m.origin.address = text(12);
    m.origin.name = text(13);
    m.origin.helo = text(14);
    m.origin.proto = text(15);
    m.origin.port = static_cast<std::uint16_t>(to_int64(PQgetvalue(res, i, 16)));
    out.push_back(std::move(m));
  }
  if (out.empty()) return out;
  auto rr = run(pg_sql::recipients_of, params{int64_array(ids)}, "read recipients");
  if (!rr) return rr.error();
  pg_result* rec = rr->get();
  for (int i = 0; i < PQntuples(rec); ++i) {
    auto it = index.find(to_int64(PQgetvalue(rec, i, 0)));
    if (it == index.end()) continue;
    auto text = [&](int col) {
      return std::string(PQgetvalue(rec, i, col), PQgetlength(rec, i, col));
    };
    recipient_info ri;
    ri.id = to_int64(PQgetvalue(rec, i, 1));
    ri.address = text(2);
    ri.orcpt = text(3);
    ri.notify = text(4);
    ri.attempts = static_cast<int>(to_int64(PQgetvalue(rec, i, 5)));
    ri.next_attempt = to_int64(PQgetvalue(rec, i, 6));
    ri.last_reply = text(7);
    ri.delay_notified = text(8) == "t";
    out[it->second].recipients.push_back(std::move(ri));
  }
  return out;
}

boost::system::result<std::vector<message_info>> postgres_store::list_messages(
    std::int64_t customer_id, std::size_t limit) {
  params p;
  if (customer_id != 0) p.add(customer_id);
  p.add_limit(limit);
  return read_messages(customer_id != 0 ? pg_sql::messages_of_customer : pg_sql::messages_all, p,
                       "list messages");
}

boost::system::result<message_info> postgres_store::find_message(std::string_view qid) {
  auto found = read_messages(pg_sql::message_by_qid, params{qid}, "find message");
  if (!found) return found.error();
  if (found->empty()) return errc::not_found;
  return std::move(found->front());
}

// One query for the lot (a flush reads a batch's bodies before sending it).
boost::system::result<std::vector<std::string>> postgres_store::read_contents(
    std::span<const std::string> qids) {
  std::vector<std::string_view> wanted(qids.begin(), qids.end());
  auto r = run(pg_sql::contents_by_qids, params{text_array(wanted)}, "read contents", {}, 1);
  if (!r) return r.error();
  std::map<std::string, std::string, std::less<>> found;
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    found.emplace(std::string(PQgetvalue(r->get(), i, 0), PQgetlength(r->get(), i, 0)),
                  std::string(PQgetvalue(r->get(), i, 1), PQgetlength(r->get(), i, 1)));
  }
  std::vector<std::string> out;
  out.reserve(qids.size());
  for (const auto& qid : qids) {
    auto it = found.find(qid);
    if (it == found.end()) return errc::not_found;
    out.push_back(it->second);  // a copy: the same qid may be asked twice
  }
  return out;
}

boost::system::result<std::string> postgres_store::read_content(std::string_view qid) {
  // Binary result: the body's bytes as they are, not hex text.
  auto r = run(pg_sql::content_by_qid, params{qid}, "read content", {}, 1);
  if (!r) return r.error();
  if (PQntuples(r->get()) == 0) return errc::not_found;
  return std::string(PQgetvalue(r->get(), 0, 0), PQgetlength(r->get(), 0, 0));
}

error_code postgres_store::import_message(const message_info& m, std::string_view content) {
  if (m.recipients.empty() || m.qid.empty()) return errc::invalid_argument;
  std::vector<std::string> numbers;  // text of attempts, next_attempt, delay_notified
  numbers.reserve(2 * m.recipients.size());
  std::vector<std::string_view> addresses, orcpts, notifies, attempts, next, replies, notified;
  for (const auto& r : m.recipients) {
    addresses.push_back(r.address);
    orcpts.push_back(r.orcpt);
    notifies.push_back(r.notify);
    replies.push_back(r.last_reply);
  }
  for (const auto& r : m.recipients) numbers.push_back(std::to_string(r.attempts));
  for (const auto& r : m.recipients) numbers.push_back(std::to_string(r.next_attempt));
  const std::size_t n = m.recipients.size();
  for (std::size_t i = 0; i < n; ++i) {
    attempts.push_back(numbers[i]);
    next.push_back(numbers[n + i]);
    notified.push_back(m.recipients[i].delay_notified ? "true" : "false");
  }
  params p;
  p.add(m.qid)
      .add(m.customer_id)
      .add(m.sender)
      .add(m.arrival)
      .add(static_cast<std::int64_t>(content.size()))
      .add(m.held)
      .add(m.envid)
      .add(m.ret)
      .add(m.body_type)
      .add(m.client)
      .add_binary(content)
      .add(text_array(addresses))
      .add(text_array(orcpts))
      .add(text_array(notifies))
      .add(text_array(attempts))
      .add(text_array(next))
      .add(text_array(replies))
      .add(text_array(notified));
  add_origin_params(p, m.origin);
  // One statement: its own transaction, durable when it returns (synchronous_commit).
  auto r = run(pg_sql::import_message, p, "import message", {.foreign_key = errc::not_found});
  return r ? error_code{} : r.error();
}

error_code postgres_store::set_held(std::string_view qid, bool held) {
  auto r = run(pg_sql::set_held, params{qid, held}, "set held");
  if (!r) return r.error();
  return affected(r->get()) == 0 ? error_code{errc::not_found} : error_code{};
}

error_code postgres_store::delete_message(std::string_view qid) {
  auto r = run(pg_sql::delete_message, params{qid}, "delete message");
  if (!r) return r.error();
  return affected(r->get()) == 0 ? error_code{errc::not_found} : error_code{};
}

boost::system::result<std::vector<queue_stats>> postgres_store::queue_summary() {
  auto r = run(pg_sql::summary, params{}, "queue summary");
  if (!r) return r.error();
  pg_result* res = r->get();
  std::vector<queue_stats> out;
  for (int i = 0; i < PQntuples(res); ++i) {
    queue_stats q;
    q.customer_id = to_int64(PQgetvalue(res, i, 0));
    q.customer.assign(PQgetvalue(res, i, 1), PQgetlength(res, i, 1));
    q.messages = static_cast<std::uint64_t>(to_int64(PQgetvalue(res, i, 2)));
    q.bytes = static_cast<std::uint64_t>(to_int64(PQgetvalue(res, i, 3)));
    q.oldest_arrival = to_int64(PQgetvalue(res, i, 4));
    out.push_back(std::move(q));
  }
  return out;
}

boost::system::result<queue_stats> postgres_store::customer_stats(std::int64_t customer_id) {
  transaction tx(*this, pg_sql::begin_snapshot);
  if (auto ec = tx.begin()) return ec;
  queue_stats q;
  q.customer_id = customer_id;
  {
    auto r = run(pg_sql::customer_name, params{customer_id}, "customer stats");
    if (!r) return r.error();
    if (PQntuples(r->get()) == 0) return errc::not_found;
    q.customer = PQgetvalue(r->get(), 0, 0);
  }
  auto r = run(pg_sql::customer_stats, params{customer_id}, "customer stats");
  if (!r) return r.error();
  q.messages = static_cast<std::uint64_t>(to_int64(PQgetvalue(r->get(), 0, 0)));
  q.bytes = static_cast<std::uint64_t>(to_int64(PQgetvalue(r->get(), 0, 1)));
  q.oldest_arrival = to_int64(PQgetvalue(r->get(), 0, 2));
  if (auto ec = tx.commit()) return ec;
  return q;
}

// As sqlite_store: one range of arrival times per bucket, all read in one
// snapshot so that a message moving meanwhile is counted once.
boost::system::result<std::vector<age_bucket>> postgres_store::queue_age_histogram(
    std::int64_t customer_id, std::int64_t now, std::span<const std::int64_t> upper_bounds) {
  if (!detail::valid_age_bounds(upper_bounds)) return errc::invalid_argument;
  transaction tx(*this, pg_sql::begin_snapshot);
  if (auto ec = tx.begin()) return ec;
  if (customer_id != 0) {
    auto r = run(pg_sql::customer_exists, params{customer_id}, "customer lookup");
    if (!r) return r.error();
    if (PQntuples(r->get()) == 0) return errc::not_found;
  }
  std::vector<age_bucket> out(upper_bounds.size() + 1);
  for (std::size_t i = 0; i < upper_bounds.size(); ++i) out[i].upper_seconds = upper_bounds[i];
  for (const auto& range : detail::age_bucket_ranges(now, upper_bounds)) {
    params p;
    if (customer_id != 0) p.add(customer_id);
    p.add(range.oldest).add(range.newest);
    auto r = run(customer_id != 0 ? pg_sql::age_bucket_of_customer : pg_sql::age_bucket_all, p,
                 "queue age histogram");
    if (!r) return r.error();
    out[range.bucket].messages = static_cast<std::uint64_t>(to_int64(PQgetvalue(r->get(), 0, 0)));
    out[range.bucket].bytes = static_cast<std::uint64_t>(to_int64(PQgetvalue(r->get(), 0, 1)));
  }
  if (auto ec = tx.commit()) return ec;
  return out;
}

boost::system::result<std::int64_t> postgres_store::message_id_of(std::string_view qid) {
  auto r = run(pg_sql::message_id_by_qid, params{qid}, "message lookup");
  if (!r) return r.error();
  if (PQntuples(r->get()) == 0) return errc::not_found;
  return to_int64(PQgetvalue(r->get(), 0, 0));
}

boost::system::result<std::vector<message_info>> postgres_store::list_deliverable(
    std::int64_t customer_id, std::string_view after_qid, std::size_t limit) {
  params p{customer_id, after_qid};
  p.add_limit(limit);
  return read_messages(pg_sql::deliverable, p, "list deliverable");
}

boost::system::result<store::attempt_result> postgres_store::record_attempt(
    std::string_view qid, std::span<const recipient_update> updates, std::int64_t next_attempt,
    std::span<const new_message> notices) {
  const attempt one{.qid = std::string(qid),
                    .updates = {updates.begin(), updates.end()},
                    .next_attempt = next_attempt,
                    .notices = {notices.begin(), notices.end()}};
  auto r = record_attempts(std::span<const attempt>(&one, 1));
  if (!r) return r.error();
  return std::move(r->front());
}

void postgres_store::add_attempt_statements(const attempt& a, std::vector<std::string>& notice_qids,
                                            std::vector<pipelined>& batch) {
  batch.push_back({pg_sql::message_id_by_qid, params{a.qid}, {}});
  for (const auto& n : a.notices) {
    params p;
    notice_qids.push_back(ids_->next());
    add_message_params(p, notice_qids.back(), n);
    batch.push_back({pg_sql::insert_message, std::move(p), {.foreign_key = errc::invalid_argument}});
  }
  for (const auto& u : a.updates) {
    const bool stays = u.fate == recipient_fate::deferred;
    params p{u.recipient_id, a.qid};
    if (stays) p.add(u.reply).add(a.next_attempt);
    batch.push_back({stays ? pg_sql::defer_recipient_of_qid : pg_sql::delete_recipient_of_qid,
                     std::move(p), {}});
  }
  batch.push_back({pg_sql::delete_qid_if_done, params{a.qid}, {}});
}

namespace {

// An attempt that takes its message out of the queue whole (every update
// delivered or failed, no notice to store, its qid alone in the batch):
// record_attempts does all of those in one statement.
std::vector<bool> whole_removals(std::span<const store::attempt> attempts) {
  std::map<std::string_view, int> seen;
  for (const auto& a : attempts) ++seen[a.qid];
  std::vector<bool> out;
  for (const auto& a : attempts) {
    bool whole = !a.updates.empty() && a.notices.empty() && seen[a.qid] == 1;
    for (const auto& u : a.updates) whole = whole && u.fate != recipient_fate::deferred;
    out.push_back(whole);
  }
  return out;
}

}  // namespace

// One transaction: BEGIN; the attempts that remove their message whole in
// one DELETE (the bulk of a flush), every statement of the others after it
// in the same pipelined batch (a round trip per 64 statements, not one per
// statement); then — when each did what it should — COMMIT, else ROLLBACK.
boost::system::result<std::vector<store::attempt_result>> postgres_store::record_attempts(
    std::span<const attempt> attempts) {
  for (const auto& a : attempts) {
    if (!detail::valid_attempt(a.updates, a.notices)) return errc::invalid_argument;
  }
  std::vector<attempt_result> out(attempts.size());
  if (attempts.empty()) return out;
  const auto whole = whole_removals(attempts);
  std::vector<std::string_view> whole_qids;
  std::vector<std::int64_t> whole_recipients;
  std::vector<pipelined> batch;
  std::vector<std::vector<std::string>> notice_qids(attempts.size());
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    if (!whole[i]) continue;
    whole_qids.push_back(attempts[i].qid);
    for (const auto& u : attempts[i].updates) whole_recipients.push_back(u.recipient_id);
  }
  if (!whole_qids.empty()) {
    batch.push_back({pg_sql::delete_done_messages,
                     params{text_array(whole_qids), int64_array(whole_recipients)}, {}});
  }
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    if (!whole[i]) add_attempt_statements(attempts[i], notice_qids[i], batch);
  }
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  std::map<std::string, std::int64_t, std::less<>> removed;  // qid -> recipients it had
  std::vector<std::int64_t> rows;
  if (!whole_qids.empty()) {
    // Its result rows are needed, so it goes first and alone.
    auto r = run(batch.front().sql, batch.front().p, "record attempts");
    if (!r) return r.error();
    for (int i = 0; i < PQntuples(r->get()); ++i) {
      removed.emplace(std::string(PQgetvalue(r->get(), i, 0), PQgetlength(r->get(), i, 0)),
                      to_int64(PQgetvalue(r->get(), i, 1)));
    }
    batch.erase(batch.begin());
  }
  if (!batch.empty()) {
    auto pipelined_rows = run_pipelined(batch, "record attempts");
    if (!pipelined_rows) return pipelined_rows.error();
    rows = std::move(*pipelined_rows);
  }
  std::size_t k = 0;
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    const auto& a = attempts[i];
    if (whole[i]) {
      auto it = removed.find(a.qid);
      if (it != removed.end() && it->second == static_cast<std::int64_t>(a.updates.size())) {
        out[i].message_removed = true;
        continue;
      }
      // Not removed (or not with exactly these recipients): gone already, or
      // an update names a recipient that is not queued for it.
      auto exists = run(pg_sql::message_exists, params{a.qid}, "record attempts");
      if (!exists) return exists.error();
      if (PQntuples(exists->get()) == 0 && it == removed.end()) return errc::not_found;
      core::log_warning("queue store: attempt on {}: its recipients are not the ones queued for it",
                        a.qid);
      return errc::invalid_argument;
    }
    if (rows[k++] != 1) return errc::not_found;  // the message is gone
    k += a.notices.size();
    for (const auto& u : a.updates) {
      if (rows[k++] != 1) {
        core::log_warning("queue store: attempt on {}: recipient {} is not queued for it", a.qid,
                          u.recipient_id);
        return errc::invalid_argument;
      }
    }
    out[i].message_removed = rows[k++] == 1;
    out[i].notice_qids = std::move(notice_qids[i]);
  }
  if (auto ec = tx.commit()) return ec;
  return out;
}

boost::system::result<std::vector<std::string>> postgres_store::record_delay_notice(
    std::string_view qid, std::span<const std::int64_t> recipient_ids,
    std::span<const new_message> notices) {
  if (!detail::all_have_recipients(notices)) return errc::invalid_argument;
  if (!detail::unique_ids(std::vector<std::int64_t>(recipient_ids.begin(), recipient_ids.end()))) {
    return errc::invalid_argument;
  }
  std::vector<std::string> qids;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  auto message_id = message_id_of(qid);
  if (!message_id) return message_id.error();
  if (auto ec = insert_messages(notices, errc::invalid_argument, qids)) return ec;
  for (const std::int64_t id : recipient_ids) {
    auto r = run(pg_sql::mark_delay_notified, params{id, *message_id}, "mark delay notified");
    if (!r) return r.error();
    if (affected(r->get()) != 1) {
      core::log_info("queue store: delay notice on {}: recipient {} is not queued for it or was "
                     "notified already (by another node)",
                     qid, id);
      return errc::invalid_argument;
    }
  }
  if (auto ec = tx.commit()) return ec;
  return qids;
}

boost::system::result<std::vector<message_info>> postgres_store::list_due_notices(
    std::int64_t customer_id, std::int64_t delay_before, std::int64_t expire_before,
    std::size_t limit) {
  // delay_before 0 switches delay notices off: no arrival is that old then.
  const std::int64_t delay =
      delay_before != 0 ? delay_before : std::numeric_limits<std::int64_t>::min();
  params p{customer_id, std::max(delay, expire_before), expire_before};
  p.add_limit(limit);
  return read_messages(pg_sql::due_notices, p, "list due notices");
}

error_code postgres_store::save_link(const link_record& link) {
  if (link.user.empty()) return errc::invalid_argument;
  params p{link.user,       link.customer_id, std::string_view(to_string(link.kind)),
           link.session_id, link.address,     link.nas,
           link.source,     link.since,       link.ipv6_address,
           link.ipv6_prefix};
  auto r = run(pg_sql::save_link, p, "save link", {.foreign_key = errc::not_found});
  return r ? error_code{} : r.error();
}

error_code postgres_store::remove_link(std::string_view user, std::string_view session_id) {
  auto r = run(pg_sql::remove_link, params{user, session_id}, "remove link");
  if (!r) return r.error();
  return affected(r->get()) == 0 ? error_code{errc::not_found} : error_code{};
}

boost::system::result<std::uint64_t> postgres_store::add_allowed_recipients(
    std::int64_t customer_id, std::span<const std::string> addresses) {
  if (!detail::valid_addresses(addresses)) return errc::invalid_argument;
  transaction tx(*this);
  if (auto ec = tx.begin()) return ec;
  auto marked = run(pg_sql::set_has_recipients, params{customer_id}, "set has_recipients");
  if (!marked) return marked.error();
  if (affected(marked->get()) == 0) return errc::not_found;
  std::vector<std::string_view> list(addresses.begin(), addresses.end());
  auto r = run(pg_sql::add_allowed, params{text_array(list), customer_id}, "add recipients");
  if (!r) return r.error();
  const auto added = static_cast<std::uint64_t>(affected(r->get()));
  if (auto ec = tx.commit()) return ec;
  return added;
}

boost::system::result<std::uint64_t> postgres_store::remove_allowed_recipients(
    std::int64_t customer_id, std::span<const std::string> addresses) {
  std::vector<std::string_view> list(addresses.begin(), addresses.end());
  auto r = run(pg_sql::remove_allowed, params{text_array(list), customer_id}, "remove recipients");
  if (!r) return r.error();
  return static_cast<std::uint64_t>(affected(r->get()));
}

error_code postgres_store::save_known_recipients(std::span<const known_recipient> items) {
  if (!detail::valid_known_recipients(items)) return errc::invalid_argument;
  if (items.empty()) return {};
  std::vector<std::string> ids, goods, firsts, lasts;
  std::vector<std::string_view> addresses, sources;
  for (const auto& k : items) {
    ids.push_back(std::to_string(k.customer_id));
    addresses.push_back(k.address);
    goods.push_back(k.good ? "t" : "f");
    sources.push_back(k.source);
    firsts.push_back(std::to_string(k.first_seen));
    lasts.push_back(std::to_string(k.last_seen));
  }
  auto view = [](const std::vector<std::string>& v) {
    return std::vector<std::string_view>(v.begin(), v.end());
  };
  params p{text_array(view(ids)),    text_array(addresses),    text_array(view(goods)),
           text_array(sources),      text_array(view(firsts)), text_array(view(lasts))};
  auto r = run(pg_sql::save_known, p, "save known recipients");
  return r ? error_code{} : r.error();
}

boost::system::result<std::vector<known_recipient>> postgres_store::list_known_recipients(
    std::int64_t customer_id) {
  auto r = customer_id > 0 ? run(pg_sql::known_one, params{customer_id}, "list known recipients")
                           : run(pg_sql::known_all, params{}, "list known recipients");
  if (!r) return r.error();
  return known_rows(r->get());
}

boost::system::result<std::vector<known_recipient>> postgres_store::list_known_recipients_since(
    std::int64_t since) {
  auto r = run(pg_sql::known_since, params{since}, "list known recipients");
  if (!r) return r.error();
  return known_rows(r->get());
}

boost::system::result<std::map<std::int64_t, std::uint64_t>> postgres_store::count_known_recipients() {
  auto r = run(pg_sql::count_known, params{}, "count known recipients");
  if (!r) return r.error();
  pg_result* res = r->get();
  std::map<std::int64_t, std::uint64_t> out;
  for (int i = 0; i < PQntuples(res); ++i) {
    out[to_int64(PQgetvalue(res, i, 0))] = static_cast<std::uint64_t>(to_int64(PQgetvalue(res, i, 1)));
  }
  return out;
}

std::vector<known_recipient> postgres_store::known_rows(pg_result* res) {
  std::vector<known_recipient> out;
  for (int i = 0; i < PQntuples(res); ++i) {
    auto text = [&](int col) { return std::string(PQgetvalue(res, i, col), PQgetlength(res, i, col)); };
    out.push_back({.customer_id = to_int64(PQgetvalue(res, i, 0)), .address = text(1),
                   .good = text(2) == "t", .source = text(3),
                   .first_seen = to_int64(PQgetvalue(res, i, 4)),
                   .last_seen = to_int64(PQgetvalue(res, i, 5))});
  }
  return out;
}

boost::system::result<std::uint64_t> postgres_store::forget_known_recipients(std::int64_t customer_id,
                                                                             std::string_view address) {
  auto r = run(pg_sql::forget_known, params{customer_id, address}, "forget known recipients");
  if (!r) return r.error();
  return static_cast<std::uint64_t>(affected(r->get()));
}

boost::system::result<std::uint64_t> postgres_store::expire_known_recipients(std::int64_t good_before,
                                                                             std::int64_t bad_before) {
  auto r = run(pg_sql::expire_known, params{good_before, bad_before}, "expire known recipients");
  if (!r) return r.error();
  return static_cast<std::uint64_t>(affected(r->get()));
}

boost::system::result<std::vector<link_record>> postgres_store::list_links() {
  auto r = run(pg_sql::links_all, params{}, "list links");
  if (!r) return r.error();
  pg_result* res = r->get();
  std::vector<link_record> out;
  for (int i = 0; i < PQntuples(res); ++i) {
    auto text = [&](int col) {
      return std::string(PQgetvalue(res, i, col), PQgetlength(res, i, col));
    };
    link_record l;
    l.user = text(0);
    l.customer_id = to_int64(PQgetvalue(res, i, 1));
    auto kind = parse_link_kind(text(2));
    if (!kind) {
      core::log_error("queue store: link {} has a bad kind", l.user);
      return errc::io_error;
    }
    l.kind = *kind;
    l.session_id = text(3);
    l.address = text(4);
    l.nas = text(5);
    l.source = text(6);
    l.since = to_int64(PQgetvalue(res, i, 7));
    l.ipv6_address = text(8);
    l.ipv6_prefix = text(9);
    out.push_back(std::move(l));
  }
  return out;
}

namespace {

// A lease row (customer_id, holder, fence, expires, taken) of row i.
delivery_lease lease_row(pg_result* r, int i) {
  delivery_lease l;
  l.customer_id = to_int64(PQgetvalue(r, i, 0));
  l.holder.assign(PQgetvalue(r, i, 1), static_cast<std::size_t>(PQgetlength(r, i, 1)));
  l.fence = to_int64(PQgetvalue(r, i, 2));
  l.expires = to_int64(PQgetvalue(r, i, 3));
  l.taken = to_int64(PQgetvalue(r, i, 4));
  return l;
}

// Rounds of take_lease: a lease released between our refused upsert and
// our read of its holder is tried again, a few times at most.
constexpr int take_rounds = 3;

}  // namespace

// The upsert (pg_sql::take_lease) decides atomically; when it refuses, a
// second statement (a fresh snapshot) reads who holds the lease. If that
// holder let it go in between, the upsert is tried again.
boost::system::result<lease_take> postgres_store::take_lease(std::int64_t customer_id,
                                                             std::string_view node,
                                                             std::int64_t now,
                                                             std::int64_t duration_ms) {
  if (!detail::valid_lease_request(node, duration_ms)) return errc::invalid_argument;
  lease_take out;
  for (int round = 0; round < take_rounds; ++round) {
    auto r = run(pg_sql::take_lease, params{customer_id, node, now, duration_ms}, "take lease",
                 {.foreign_key = errc::not_found});
    if (!r) return r.error();
    if (PQntuples(r->get()) == 1) {
      out.ours = true;
      out.lease = lease_row(r->get(), 0);
      return out;
    }
    auto held = run(pg_sql::lease_of, params{customer_id, now}, "read lease");
    if (!held) return held.error();
    if (PQntuples(held->get()) != 1) continue;  // the customer went meanwhile: not_found next
    out.lease = lease_row(held->get(), 0);
    out.now = to_int64(PQgetvalue(held->get(), 0, 6));
    if (PQgetvalue(held->get(), 0, 5)[0] != 't') return out;
  }
  return out;
}

boost::system::result<std::int64_t> postgres_store::renew_lease(std::int64_t customer_id,
                                                                std::string_view node,
                                                                std::int64_t fence,
                                                                std::int64_t now,
                                                                std::int64_t duration_ms) {
  if (!detail::valid_lease_request(node, duration_ms)) return errc::invalid_argument;
  auto r = run(pg_sql::renew_lease, params{customer_id, node, now, duration_ms, fence},
               "renew lease");
  if (!r) return r.error();
  if (PQntuples(r->get()) != 1) return errc::lease_lost;
  return to_int64(PQgetvalue(r->get(), 0, 0));
}

error_code postgres_store::release_lease(std::int64_t customer_id, std::string_view node,
                                         std::int64_t fence) {
  auto r = run(pg_sql::release_lease, params{customer_id, node, fence}, "release lease");
  if (!r) return r.error();
  return affected(r->get()) == 1 ? error_code{} : error_code{errc::lease_lost};
}

boost::system::result<std::vector<delivery_lease>> postgres_store::list_leases() {
  auto r = run(pg_sql::leases_all, params{}, "list leases");
  if (!r) return r.error();
  std::vector<delivery_lease> out;
  for (int i = 0; i < PQntuples(r->get()); ++i) out.push_back(lease_row(r->get(), i));
  return out;
}

namespace {

std::string column_text(pg_result* r, int i, int col) {
  return std::string(PQgetvalue(r, i, col), static_cast<std::size_t>(PQgetlength(r, i, col)));
}

}  // namespace

error_code postgres_store::heartbeat(const node_record& node) {
  if (node.name.empty()) return errc::invalid_argument;
  auto r = run(pg_sql::node_heartbeat, params{node.name, node.version, node.started},
               "node heartbeat");
  if (!r) return r.error();
  return affected(r->get()) == 1 ? error_code{} : error_code{errc::not_found};
}

boost::system::result<std::vector<node_record>> postgres_store::list_nodes() {
  auto r = run(pg_sql::nodes_all, params{}, "list nodes");
  if (!r) return r.error();
  std::vector<node_record> out;
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    node_record n;
    n.name = column_text(r->get(), i, 0);
    n.version = column_text(r->get(), i, 1);
    n.started = to_int64(PQgetvalue(r->get(), i, 2));
    n.heartbeat = to_int64(PQgetvalue(r->get(), i, 3));
    n.age_ms = to_int64(PQgetvalue(r->get(), i, 4));
    out.push_back(std::move(n));
  }
  return out;
}

error_code postgres_store::save_retry(const retry_record& rr) {
  if (rr.failures < 0) return errc::invalid_argument;
  if (rr.failures == 0) {
    auto r = run(pg_sql::clear_retry, params{rr.customer_id}, "clear retry state");
    return r ? error_code{} : r.error();
  }
  auto r = run(pg_sql::save_retry,
               params{rr.customer_id, static_cast<std::int64_t>(rr.failures), rr.next_try, rr.node},
               "save retry state", {.foreign_key = errc::not_found});
  return r ? error_code{} : r.error();
}

boost::system::result<std::vector<retry_record>> postgres_store::list_retries() {
  auto r = run(pg_sql::retries_all, params{}, "list retry state");
  if (!r) return r.error();
  std::vector<retry_record> out;
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    retry_record rr;
    rr.customer_id = to_int64(PQgetvalue(r->get(), i, 0));
    rr.failures = static_cast<int>(to_int64(PQgetvalue(r->get(), i, 1)));
    rr.next_try = to_int64(PQgetvalue(r->get(), i, 2));
    rr.node = column_text(r->get(), i, 3);
    out.push_back(std::move(rr));
  }
  return out;
}

error_code postgres_store::record_event(const event_record& e) {
  auto r = run(pg_sql::record_event,
               params{e.time, e.node, e.kind, e.customer, e.text,
                      static_cast<std::int64_t>(max_stored_events)},
               "record event");
  return r ? error_code{} : r.error();
}

boost::system::result<std::vector<event_record>> postgres_store::list_events(std::size_t limit) {
  params p;
  p.add_limit(limit);
  auto r = run(pg_sql::events_latest, p, "list events");
  if (!r) return r.error();
  std::vector<event_record> out;
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    event_record e;
    e.id = to_int64(PQgetvalue(r->get(), i, 0));
    e.time = to_int64(PQgetvalue(r->get(), i, 1));
    e.node = column_text(r->get(), i, 2);
    e.kind = column_text(r->get(), i, 3);
    e.customer = column_text(r->get(), i, 4);
    e.text = column_text(r->get(), i, 5);
    out.push_back(std::move(e));
  }
  return out;
}

// The database's files are on its server, and autovacuum gives room back.
boost::system::result<space_info> postgres_store::space() { return space_info{}; }
boost::system::result<std::uint64_t> postgres_store::release_space(std::uint64_t) {
  return std::uint64_t{0};
}

}  // namespace flushgate::queue
