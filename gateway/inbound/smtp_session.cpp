// smtp_session.cpp — see smtp_session.hpp.
//
// The loop: greet; then read one bounded line, parse it (pure), look the verb
// up in the command table, check the state, proceed, reply. Replies are
// buffered and written whenever the input runs dry (RFC 2920 §3.2), so a
// pipelining client gets its replies in one packet.
#include "gateway/inbound/smtp_session.hpp"

#include "core/ip_network.hpp"
#include "core/log.hpp"
#include "core/time_format.hpp"
#include "gateway/inbound/address.hpp"
#include "gateway/customer_directory.hpp"
#include "gateway/dns/mx_resolver.hpp"
#include "gateway/inbound/data_reader.hpp"
#include "gateway/gateway_metrics.hpp"
#include "gateway/inbound/sasl.hpp"
#include "gateway/smtp_reply.hpp"
#include "gateway/inbound/smtp_server.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <ctime>
#include <map>

namespace flushgate::gateway {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

// How long the last reply before closing may take to go out.
constexpr auto final_write_timeout = 10s;
// DATA rate is judged only after this much time, so a slow start is no offence.
constexpr auto data_rate_grace = 10s;
// RFC 4954 §4: an AUTH line of 12288 octets is "considered sufficient".
constexpr std::size_t auth_line_limit = 12288;
// Authentication failures: each one waits a little longer; the third ends the session.
constexpr int auth_failure_limit = 3;

// True when the buffered line is an AUTH command or an AUTH response, whose
// base64 may exceed 512 octets (RFC 4954 §4: up to 12288 is "sufficient").
bool long_line_allowed(std::string_view buffered, bool in_auth) {
  if (in_auth) return true;
  if (buffered.size() < 5) return false;
  std::string verb(buffered.substr(0, 5));
  for (char& c : verb) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return verb == "AUTH ";
}

std::string bracketed(std::string_view path) {
  std::string out = "<";
  out += path;
  out += '>';
  return out;
}

}  // namespace

smtp_session::smtp_session(smtp_server& server, asio::ip::tcp::socket socket, std::uint64_t id)
    : server_(server), stream_(std::move(socket)), id_(id), reader_(stream_) {
  client_address_ = stream_.remote_endpoint().address().to_string();
  client_port_ = stream_.remote_endpoint().port();
  client_ = "unknown[" + client_address_ + "]";
}

// ---------------------------------------------------------------- the client's name

struct smtp_session::reverse_lookup {
  explicit reverse_lookup(const asio::any_io_executor& ex) : wake(ex) {}
  asio::steady_timer wake;  // cancelled when the answer is in
  clock_type::time_point deadline;
  bool done = false;
  std::string name;
};

// Starts the lookup at connect, so that by the time a message is committed
// the answer is usually in and intake waits for nothing.
void smtp_session::start_reverse_lookup() {
  const auto& services = server_.services();
  const auto timeout = server_.settings().reverse_lookup_timeout;
  if (!services.reverse_name || timeout <= std::chrono::milliseconds::zero()) return;
  const auto address = stream_.remote_endpoint().address();
  auto state = std::make_shared<reverse_lookup>(stream_.socket().get_executor());
  state->deadline = clock_type::now() + timeout;
  reverse_ = state;
  asio::co_spawn(
      stream_.socket().get_executor(),
      [state, lookup = services.reverse_name, address]() -> asio::awaitable<void> {
        try {
          state->name = co_await lookup(address);
        } catch (const std::exception& e) {
          core::log_warning("reverse lookup of {}: {}", address.to_string(), e.what());
          state->name = tempunavail_name;
        }
        state->done = true;
        state->wake.cancel();
      },
      asio::detached);
}

// The client field by field for the queue (XFORWARD at flush time). A
// lookup not answered by its deadline gives "[TEMPUNAVAIL]", as Postfix
// says for a name it could not learn in time.
asio::awaitable<queue::client_origin> smtp_session::collect_origin() {
  queue::client_origin o;
  o.address = client_address_;
  if (o.address.rfind("::ffff:", 0) == 0 && o.address.find('.') != std::string::npos) {
    o.address.erase(0, 7);  // a v4-mapped listener: the IPv4 client it is
  }
  o.port = client_port_;
  o.helo = helo_;
  o.proto = esmtp_ ? "ESMTP" : "SMTP";
  if (reverse_) {
    if (!reverse_->done && clock_type::now() < reverse_->deadline) {
      const auto state = reverse_;  // the wait keeps it alive
      state->wake.expires_at(state->deadline);
      co_await state->wake.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    o.name = reverse_->done ? reverse_->name : std::string(tempunavail_name);
  }
  co_return o;
}

// ---------------------------------------------------------------- I/O

std::chrono::steady_clock::duration smtp_session::read_timeout(std::chrono::seconds wanted) const {
  auto left = deadline_ - clock_type::now();
  if (left < clock_type::duration::zero()) left = clock_type::duration::zero();
  return std::min<clock_type::duration>(wanted, left);
}

void smtp_session::reply(int code, std::string_view enhanced, std::string_view text) {
  reader_.write(format_reply(code, enhanced, text));
  if (code >= 400) count_smtp_refusal(code, enhanced);
  if (code >= 500) ++errors_;
}

asio::awaitable<bool> smtp_session::flush() {
  const auto timeout = read_timeout(server_.settings().timeout);
  bool ok = co_await reader_.flush(timeout);
  co_return ok;
}

// Input ran dry and could not be refilled: say why (timeout, shutdown) and end.
void smtp_session::input_failed() {
  const auto& ec = reader_.error();
  if (ec == asio::error::timed_out) {
    core::log_info("session {}: timeout after {} from {}", id_,
                   idle_ ? "command wait" : "reading", client_);
    reply(421, "4.4.2", server_.settings().hostname + " Error: timeout exceeded");
  } else if (interrupted_) {
    reply(421, "4.3.2", server_.settings().hostname +
                            " Service shutting down, closing transmission channel");
  }
  quit_ = true;
}

asio::awaitable<bool> smtp_session::fill_input(clock_type::duration timeout) {
  bool ok = co_await reader_.fill(timeout);
  if (!ok) input_failed();
  co_return ok;
}

asio::awaitable<smtp_session::line_status> smtp_session::read_line(std::string& line) {
  const auto& settings = server_.settings();
  // Named, not temporaries inside the co_await: GCC 12 mishandles
  // temporaries that live across a suspension.
  const line_reader::long_line_test may_be_long = [this](std::string_view start) {
    return long_line_allowed(start, in_auth_);
  };
  const std::size_t long_limit = std::max<std::size_t>(settings.command_line_limit, auth_line_limit);
  const auto timeout = read_timeout(settings.timeout);
  auto status = co_await reader_.read_line(line, settings.command_line_limit, timeout, may_be_long,
                                           long_limit);
  switch (status) {
    case line_reader::status::line: co_return line_status::ok;
    case line_reader::status::too_long: co_return line_status::too_long;
    case line_reader::status::closed: break;
  }
  input_failed();
  co_return line_status::closed;
}

// ---------------------------------------------------------------- the loop

void smtp_session::interrupt_if_idle() {
  if (idle_) {
    interrupted_ = true;
    stream_.cancel();
  }
}

void smtp_session::interrupt() {
  interrupted_ = true;
  stream_.cancel();
}

asio::awaitable<void> smtp_session::run() {
  const auto& settings = server_.settings();
  deadline_ = clock_type::now() + settings.session_timeout;
  core::log_info("session {}: connect from [{}]", id_, client_address_);
  start_reverse_lookup();
  reply(220, "", settings.banner);

  struct command_spec {
    verb v;
    bool need_helo;       // 503 before HELO/EHLO
    bool need_mail;       // 503 outside a transaction
    bool no_transaction;  // 503 inside a transaction
    asio::awaitable<void> (smtp_session::*proceed)(const command&);
  };
  static constexpr command_spec table[] = {
      {verb::helo, false, false, false, &smtp_session::do_helo},
      {verb::ehlo, false, false, false, &smtp_session::do_ehlo},
      {verb::mail, true, false, true, &smtp_session::do_mail},
      {verb::rcpt, true, true, false, &smtp_session::do_rcpt},
      {verb::data, true, true, false, &smtp_session::do_data},
      {verb::rset, false, false, false, &smtp_session::do_rset},
      {verb::noop, false, false, false, &smtp_session::do_noop},
      {verb::quit, false, false, false, &smtp_session::do_quit},
      {verb::vrfy, false, false, false, &smtp_session::do_vrfy},
      {verb::help, false, false, false, &smtp_session::do_help},
      {verb::starttls, false, false, true, &smtp_session::do_starttls},
      {verb::expn, false, false, false, &smtp_session::do_not_implemented},
      {verb::bdat, false, false, false, &smtp_session::do_not_implemented},
      {verb::auth, true, false, true, &smtp_session::do_auth},
      {verb::etrn, true, false, true, &smtp_session::do_etrn},
      {verb::atrn, false, false, false, &smtp_session::do_not_implemented},
  };

  while (!quit_) {
    if (server_.shutting_down() && (interrupted_ || !in_transaction())) {
      reply(421, "4.3.2",
            settings.hostname + " Service shutting down, closing transmission channel");
      break;
    }
    if (errors_ >= settings.error_limit) {
      core::log_info("session {}: too many errors from {}", id_, client_);
      reply(421, "4.7.0", settings.hostname + " Error: too many errors");
      break;
    }
    idle_ = !in_transaction();
    std::string line;
    line_status status = co_await read_line(line);
    idle_ = false;
    if (status == line_status::closed) break;
    if (status == line_status::too_long) {
      reply(500, "5.5.6", "Error: line too long");
      continue;
    }
    if (line.find_first_of("\r\n") != std::string::npos) {
      // RFC 5321 §2.3.8: CRLF is the only line ending; never split on a bare one.
      reply(500, "5.5.2", "Error: bare <CR> or <LF> in command");
      continue;
    }
    command c = parse_command(line);
    const command_spec* spec = nullptr;
    for (const auto& s : table) {
      if (s.v == c.v) spec = &s;
    }
    if (spec == nullptr) {
      co_await do_unknown(c);
      continue;
    }
    if (spec->need_helo && helo_.empty()) {
      reply(503, "5.5.1", "Error: send HELO/EHLO first");
    } else if (spec->need_mail && !have_mail_) {
      reply(503, "5.5.1", "Error: need MAIL command");
    } else if (spec->no_transaction && have_mail_) {
      reply(503, "5.5.1", "Error: not allowed inside a mail transaction");
    } else {
      co_await (this->*(spec->proceed))(c);
    }
  }
  co_await reader_.flush(final_write_timeout);
  stream_.close();
  core::log_info("session {}: disconnect from {}", id_, client_);
}

void smtp_session::reset_transaction() {
  have_mail_ = false;
  mail_ = mail_args{};
  rcpts_.clear();
}

const char* smtp_session::protocol_name() const {
  if (!esmtp_) return "SMTP";
  if (authenticated_customer_ != 0) return stream_.tls_active() ? "ESMTPSA" : "ESMTPA";
  return stream_.tls_active() ? "ESMTPS" : "ESMTP";
}

bool smtp_session::etrn_offered() const {
  return server_.services().routes != nullptr && server_.services().flushes != nullptr;
}

// ---------------------------------------------------------------- commands

asio::awaitable<void> smtp_session::do_helo(const command& c) {
  if (c.arg.empty()) {
    reply(501, "5.5.4", "Syntax: HELO hostname");
    co_return;
  }
  reset_transaction();  // RFC 5321 §4.1.4: a new HELO/EHLO resets like RSET
  helo_ = c.arg;
  esmtp_ = false;
  client_ = helo_ + "[" + client_address_ + "]";
  reply(250, "", server_.settings().hostname);
}

asio::awaitable<void> smtp_session::do_ehlo(const command& c) {
  if (c.arg.empty()) {
    reply(501, "5.5.4", "Syntax: EHLO hostname");
    co_return;
  }
  reset_transaction();
  helo_ = c.arg;
  esmtp_ = true;
  client_ = helo_ + "[" + client_address_ + "]";
  const auto& settings = server_.settings();
  std::string lines = settings.hostname;
  lines += "\nPIPELINING";
  lines += "\nSIZE " + std::to_string(settings.message_size_limit);
  lines += "\n8BITMIME";
  lines += "\nENHANCEDSTATUSCODES";
  lines += "\nDSN";
  if (server_.services().tls != nullptr && !stream_.tls_active()) lines += "\nSTARTTLS";
  if (etrn_offered()) {
    lines += "\nETRN";
    lines += "\nAUTH " + sasl_exchange::mechanisms(stream_.tls_active());
  }
  reply(250, "", lines);
  co_await flush();  // RFC 2920 §3.2: the EHLO reply is never held back
}

// The one mapping from MAIL/RCPT argument errors to replies (RFC 5321
// §4.1.1.11: unknown parameters 555, the rest 501). True when refused.
bool smtp_session::refused_params(const parse_result& parsed) {
  switch (parsed.error) {
    case param_error::ok: return false;
    case param_error::unknown_param: reply(555, "5.5.4", parsed.detail); return true;
    case param_error::syntax:
    case param_error::duplicate:
    case param_error::bad_value: reply(501, "5.5.4", parsed.detail); return true;
  }
  return true;
}

asio::awaitable<void> smtp_session::do_mail(const command& c) {
  const auto& settings = server_.settings();
  auto& disk = server_.services().disk;
  mail_args args;
  if (refused_params(parse_mail_args(c.arg, args))) co_return;
  if (!args.path.empty()) {
    mailbox sender;
    switch (parse_mailbox(args.path, sender)) {
      case address_error::ok:
      case address_error::routing_chars:    // a sender's local part is not routed on
      case address_error::address_literal:  // nor is its domain
        break;
      case address_error::non_ascii:
        reply(553, "5.6.7", "Error: non-ASCII address needs SMTPUTF8, which is not offered");
        co_return;
      case address_error::syntax:
      case address_error::too_long:
        reply(501, "5.1.7", "Error: bad sender address syntax");
        co_return;
    }
  }
  if (args.size && *args.size > settings.message_size_limit) {
    core::log_info("NOQUEUE: reject: MAIL from {}: 552 5.3.4 message size {} exceeds the limit; from=<{}>",
                   client_, *args.size, args.path);
    reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size");
    co_return;
  }
  if (disk.low() || (args.size && *args.size > disk.room_bytes())) {
    core::log_info("NOQUEUE: reject: MAIL from {}: 452 4.3.1 insufficient system storage; from=<{}>",
                   client_, args.path);
    reply(452, "4.3.1", "Error: insufficient system storage");
    co_return;
  }
  mail_ = std::move(args);
  have_mail_ = true;
  rcpts_.clear();
  reply(250, "2.1.0", "Ok");
}

// learn/verify: what the customer's server said about the address, else
// ask it (verify, while it can be asked), else the customer's choice for
// addresses not known yet. Returns {0} to accept.
asio::awaitable<smtp_session::reply_text> smtp_session::check_known_recipient(const customer_entry& owner,
                                                                              const mailbox& rcpt,
                                                                              const std::string& path) {
  auto& services = server_.services();
  const std::int64_t id = owner.info.id;
  const std::string policy(recipient_policy(owner.info));
  const std::string unknown = owner.info.unknown_recipients;
  const reply_text user_unknown{550, "5.1.1", bracketed(path) + ": Recipient address rejected: User unknown"};
  const auto keys = recipient_keys(rcpt.local, rcpt.domain, services.customers.recipient_delimiter());
  known_state state = known_state::unknown;
  for (const auto& key : keys) {
    if (services.known == nullptr) break;
    const auto k = services.known->lookup(id, key);
    if (k == known_state::good) state = k;
    if (k == known_state::bad && state == known_state::unknown) state = k;
  }
  const bool reachable = services.server_reachable && services.server_reachable(id);
  if (state == known_state::unknown && reachable) {
    if (policy == "learn") co_return reply_text{0, "", {}};  // delivery will teach it
    if (services.verify_recipient) state = co_await services.verify_recipient(id, keys.front());
  }
  switch (state) {
    case known_state::good: co_return reply_text{0, "", {}};
    case known_state::bad: co_return user_unknown;
    case known_state::unknown: break;
  }
  if (unknown == "accept") co_return reply_text{0, "", {}};
  if (unknown == "reject") co_return user_unknown;
  co_return reply_text{450, "4.1.1",
                       bracketed(path) + ": Recipient address not yet known; the customer's server cannot "
                                         "be asked now, try again later"};
}

asio::awaitable<void> smtp_session::do_rcpt(const command& c) {
  const auto& settings = server_.settings();
  auto& services = server_.services();
  if (rcpts_.size() >= settings.recipient_limit) {
    reply(452, "4.5.3", "Error: too many recipients");
    co_return;
  }
  rcpt_args args;
  if (refused_params(parse_rcpt_args(c.arg, args))) co_return;
  mailbox rcpt;
  reply_text refusal{0, "", {}};
  switch (parse_mailbox(args.path, rcpt)) {
    case address_error::ok: break;
    case address_error::syntax:
    case address_error::too_long:
      refusal = {501, "5.1.3", "Error: bad recipient address syntax"};
      break;
    case address_error::non_ascii:
      refusal = {553, "5.6.7", "Error: non-ASCII address needs SMTPUTF8, which is not offered"};
      break;
    case address_error::routing_chars:
    case address_error::address_literal:
      // Percent hack, bang paths, quoted '@', address literals: never routed.
      refusal = {550, "5.7.1", bracketed(args.path) + ": Relay access denied"};
      break;
  }
  const customer_entry* owner = nullptr;
  if (refusal.code == 0) {
    switch (services.customers.check_recipient(rcpt.local, rcpt.domain, &owner)) {
      case rcpt_verdict::accept: break;
      case rcpt_verdict::check_known: {
        const std::int64_t id = owner->info.id;
        refusal = co_await check_known_recipient(*owner, rcpt, args.path);
        // A callout waited: the customer may have changed or gone meanwhile.
        owner = services.customers.find_by_id(id);
        if (owner == nullptr) refusal = {550, "5.7.1", bracketed(args.path) + ": Relay access denied"};
        break;
      }
      case rcpt_verdict::relay_denied:
      case rcpt_verdict::disabled:
        refusal = {550, "5.7.1", bracketed(args.path) + ": Relay access denied"};
        break;
      case rcpt_verdict::suspended:
        refusal = {450, "4.7.1", bracketed(args.path) + ": Recipient domain temporarily not accepting mail"};
        break;
      case rcpt_verdict::unknown_user:
        refusal = {550, "5.1.1", bracketed(args.path) + ": Recipient address rejected: User unknown"};
        break;
      case rcpt_verdict::over_quota:
        refusal = {552, "5.2.2", bracketed(args.path) + ": Recipient domain over quota"};
        break;
    }
  }
  if (refusal.code == 0 && owner != nullptr && mail_.size) {
    std::uint64_t max = owner->info.max_size ? owner->info.max_size : settings.message_size_limit;
    if (*mail_.size > max) {
      refusal = {552, "5.3.4", "Error: message size exceeds fixed maximum message size"};
    } else if (services.customers.would_exceed_quota(owner->info.id, *mail_.size)) {
      refusal = {552, "5.2.2", bracketed(args.path) + ": Recipient domain over quota"};
    }
  }
  if (refusal.code == 0 && services.disk.low()) {
    refusal = {452, "4.3.1", "Error: insufficient system storage"};
  }
  if (refusal.code != 0) {
    core::log_info("NOQUEUE: reject: RCPT from {}: {} {} {}; from=<{}> to=<{}>", client_,
                   refusal.code, refusal.enhanced, refusal.text, mail_.path, args.path);
    reply(refusal);
    co_return;
  }
  rcpts_.push_back({owner->info.id, std::move(args)});
  reply(250, "2.1.5", "Ok");
}

asio::awaitable<bool> smtp_session::receive_content(std::string& content, reply_text& failure,
                                                    std::size_t& received_headers) {
  const auto& settings = server_.settings();
  data_reader reader({static_cast<std::size_t>(settings.message_size_limit),
                      settings.text_line_limit});
  const auto start = clock_type::now();
  for (;;) {
    if (auto& in = reader_.input(); !in.empty()) {
      std::size_t used = reader.feed(in);
      in.erase(0, used);
      if (reader.status() == data_status::done) break;
    }
    auto elapsed = clock_type::now() - start;
    if (settings.min_data_rate != 0 && elapsed > data_rate_grace) {
      double seconds = std::chrono::duration<double>(elapsed).count();
      if (static_cast<double>(reader.octets()) / seconds <
          static_cast<double>(settings.min_data_rate)) {
        core::log_info("session {}: DATA rate too low from {} ({} octets in {:.0f}s)", id_,
                       client_, reader.octets(), seconds);
        reply(421, "4.4.2", settings.hostname + " Error: data rate too low");
        quit_ = true;
        co_return false;
      }
    }
    if (!co_await fill_input(read_timeout(settings.data_timeout))) co_return false;
  }
  received_headers = reader.received_header_count();
  // One mapping from content errors to replies.
  switch (reader.error()) {
    case data_error::none: break;
    case data_error::too_big:
      failure = {552, "5.3.4", "Error: message size exceeds fixed maximum message size"};
      break;
    case data_error::line_too_long:
      failure = {554, "5.6.0", "Error: message has a line longer than " +
                                   std::to_string(settings.text_line_limit - 2) + " octets"};
      break;
    case data_error::bare_lf:
    case data_error::bare_cr:
      failure = {554, "5.6.0",
                 "Error: bare <CR> or <LF> in message content (RFC 5321 2.3.8)"};
      break;
    case data_error::nul:
      failure = {554, "5.6.0", "Error: NUL octet in message content"};
      break;
  }
  content = reader.take_content();
  co_return true;
}

std::string smtp_session::received_header() const {
  const auto& settings = server_.settings();
  std::string h = "Received: from " + helo_ + " ([" + client_address_ + "])\r\n\tby " +
                  settings.hostname + " (flushgate) with " + protocol_name();
  if (stream_.tls_active()) h += " (" + stream_.tls_description() + ")";
  h += "\r\n\t";
  if (rcpts_.size() == 1) h += "for " + bracketed(rcpts_.front().args.path) + "; ";
  h += core::rfc5322_date(std::time(nullptr));
  h += "\r\n";
  return h;
}

asio::awaitable<smtp_session::reply_text> smtp_session::commit_message(std::string content) {
  auto& services = server_.services();
  // One queue entry per customer: each customer's queue stands on its own.
  std::map<std::int64_t, std::vector<queue::recipient>> by_customer;
  for (const auto& r : rcpts_) {
    by_customer[r.customer_id].push_back({r.args.path, r.args.orcpt, r.args.notify});
  }
  std::vector<queue::new_message> batch;
  const queue::client_origin origin = co_await collect_origin();
  const auto arrival = static_cast<std::int64_t>(std::time(nullptr));
  for (auto& [customer_id, recipients] : by_customer) {
    queue::new_message m;
    m.customer_id = customer_id;
    m.sender = mail_.path;
    m.recipients = std::move(recipients);
    m.envid = mail_.envid;
    m.ret = mail_.ret;
    m.body_type = mail_.body;
    m.client = client_;
    m.origin = origin;
    m.arrival = arrival;
    m.content = by_customer.size() == 1 ? std::move(content) : content;
    batch.push_back(std::move(m));
  }

  // Room for this commit, taken before it and given back after: a message
  // costs about twice its size while it is written (the WAL, then the
  // database). Concurrent sessions cannot all squeeze past queue_min_free.
  std::uint64_t reservation = 0;
  for (const auto& m : batch) reservation += 2 * m.content.size();
  if (!services.disk.try_reserve(reservation)) {
    core::log_info("NOQUEUE: reject: DATA from {}: 452 4.3.1 insufficient system storage; from=<{}>", client_,
                   mail_.path);
    co_return reply_text{452, "4.3.1", "Error: insufficient system storage"};
  }
  struct release_room {
    queue::disk_guard& disk;
    std::uint64_t bytes;
    ~release_room() { disk.release(bytes); }
  } release{services.disk, reservation};

  boost::system::result<std::vector<std::string>> qids;
  if (batch.size() == 1) {
    auto one = co_await services.store.commit(batch.front());
    if (one) {
      qids = std::vector<std::string>{std::move(*one)};
    } else {
      qids = one.error();
    }
  } else {
    // Rare: recipients of several customers. One transaction for all copies.
    qids = co_await services.store.run(
        [&batch](queue::store& s) { return s.commit_messages(batch); });
  }

  if (!qids) {
    core::log_warning("NOQUEUE: commit failed for message from {}: {}", client_,
                      qids.error().message());
    if (qids.error() == queue::errc::disk_full) {
      services.disk.mark_full();
      co_return reply_text{452, "4.3.1", "Error: insufficient system storage"};
    }
    co_return reply_text{451, "4.3.0", "Error: local error in processing, try again later"};
  }
  // The commit just used disk space: re-read it now, so that a burst of
  // messages meets 452 at queue_min_free rather than at a full disk.
  services.disk.refresh();
  std::string queued;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& m = batch[i];
    const auto& qid = (*qids)[i];
    services.customers.add_queued_bytes(m.customer_id, static_cast<std::int64_t>(m.content.size()));
    if (services.queued) services.queued(m.customer_id);
    count_message_accepted(m.content.size());
    const customer_entry* owner = services.customers.find_by_id(m.customer_id);
    core::log_info("{}: client={}, from=<{}>, size={}, nrcpt={}, customer={} (queue active)", qid, client_,
                   m.sender, m.content.size(), m.recipients.size(), owner ? owner->info.name : "?");
    if (!queued.empty()) queued += ' ';
    queued += qid;
  }
  co_return reply_text{250, "2.0.0", "Ok: queued as " + queued};
}

asio::awaitable<void> smtp_session::do_data(const command& c) {
  const auto& settings = server_.settings();
  auto& services = server_.services();
  if (!c.arg.empty()) {
    reply(501, "5.5.4", "Syntax: DATA");
    co_return;
  }
  if (rcpts_.empty()) {
    reply(554, "5.5.1", "Error: no valid recipients");
    co_return;
  }
  if (services.disk.low()) {
    reply(452, "4.3.1", "Error: insufficient system storage");
    co_return;
  }
  reply(354, "", "End data with <CR><LF>.<CR><LF>");
  if (!co_await flush()) {
    quit_ = true;
    co_return;
  }

  std::string content;
  reply_text failure{0, "", {}};
  std::size_t received_headers = 0;
  if (!co_await receive_content(content, failure, received_headers)) {
    // Connection lost or cut off mid-DATA: nothing was stored, nothing acknowledged.
    reset_transaction();
    co_return;
  }
  if (failure.code == 0 && received_headers >= settings.max_hops) {
    failure = {554, "5.4.6", "Error: too many hops (mail loop?)"};
  }
  // Per-customer limits, now that the size is known.
  for (const auto& r : rcpts_) {
    if (failure.code != 0) break;
    const customer_entry* e = services.customers.find_by_id(r.customer_id);
    if (e == nullptr) {
      failure = {451, "4.3.0", "Error: recipient's customer was removed, try again later"};
    } else if (e->info.max_size != 0 && content.size() > e->info.max_size) {
      failure = {552, "5.3.4", "Error: message size exceeds fixed maximum message size"};
    } else if (services.customers.would_exceed_quota(r.customer_id, content.size())) {
      failure = {552, "5.2.2", "Error: recipient domain over quota"};
    }
  }
  if (failure.code == 0 && services.disk.low()) {
    failure = {452, "4.3.1", "Error: insufficient system storage"};
  }
  if (failure.code != 0) {
    core::log_info("NOQUEUE: reject: DATA from {}: {} {} {}; from=<{}>", client_, failure.code,
                   failure.enhanced, failure.text, mail_.path);
    reply(failure);
  } else {
    // The durable step: 250 is said only after the commit has been fsync'd.
    reply(co_await commit_message(received_header() + std::move(content)));
  }
  reset_transaction();
}

asio::awaitable<void> smtp_session::do_rset(const command&) {
  reset_transaction();
  reply(250, "2.0.0", "Ok");
  co_return;
}

asio::awaitable<void> smtp_session::do_noop(const command&) {
  reply(250, "2.0.0", "Ok");
  co_return;
}

asio::awaitable<void> smtp_session::do_quit(const command&) {
  reply(221, "2.0.0", "Bye");
  quit_ = true;
  co_return;
}

asio::awaitable<void> smtp_session::do_vrfy(const command& c) {
  if (c.arg.empty()) {
    reply(501, "5.5.4", "Syntax: VRFY address");
    co_return;
  }
  reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
}

asio::awaitable<void> smtp_session::do_help(const command&) {
  reply(214, "2.0.0",
        "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS");
  co_return;
}

asio::awaitable<void> smtp_session::do_starttls(const command& c) {
  auto* context = server_.services().tls;
  if (context == nullptr) {
    reply(454, "4.7.0", "TLS not available");
    co_return;
  }
  if (stream_.tls_active()) {
    reply(503, "5.5.1", "Error: TLS already active");
    co_return;
  }
  if (!c.arg.empty()) {
    reply(501, "5.5.4", "Syntax error (no parameters allowed)");
    co_return;
  }
  reply(220, "2.0.0", "Ready to start TLS");
  if (!co_await flush()) {
    quit_ = true;
    co_return;
  }
  // CVE-2011-0411: anything pipelined behind STARTTLS arrived in plaintext
  // and must not be executed as if it came over TLS.
  if (auto& in = reader_.input(); !in.empty()) {
    core::log_warning("session {}: discarding {} octets of plaintext sent after STARTTLS by {}",
                      id_, in.size(), client_);
    in.clear();
  }
  auto ec = co_await stream_.start_tls_server(*context, read_timeout(server_.settings().timeout));
  if (ec) {
    core::log_info("session {}: TLS handshake with {} failed: {}", id_, client_, ec.message());
    quit_ = true;
    co_return;
  }
  // RFC 3207 §4.2: forget everything learnt before TLS; the client says EHLO again.
  helo_.clear();
  esmtp_ = false;
  reset_transaction();
  core::log_info("session {}: TLS established with {}: {}", id_, client_,
                 stream_.tls_description());
}

asio::awaitable<void> smtp_session::do_auth(const command& c) {
  const auto& services = server_.services();
  if (!etrn_offered()) {
    reply(502, "5.5.1", "Error: AUTH not implemented");
    co_return;
  }
  if (authenticated_customer_ != 0) {
    reply(503, "5.5.1", "Error: already authenticated");
    co_return;
  }
  if (c.arg.empty()) {
    reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
    co_return;
  }
  sasl_exchange exchange(
      [&services](std::string_view user) {
        const auto* e = services.customers.find_by_name(user);
        return e ? e->info.credential : std::string();
      },
      server_.settings().hostname, stream_.tls_active());
  auto step = exchange.start(c.arg);
  in_auth_ = true;
  while (!step.done) {
    // "334 " + challenge, the space kept even when the challenge is empty (RFC 4954 §4).
    reader_.write("334 " + step.text + "\r\n");
    std::string line;
    line_status status = co_await read_line(line);
    if (status == line_status::closed) {
      in_auth_ = false;
      co_return;
    }
    if (status == line_status::too_long) {
      in_auth_ = false;
      reply(500, "5.5.6", "Authentication exchange line is too long");
      co_return;
    }
    step = exchange.respond(line);
  }
  in_auth_ = false;
  reply(step.code, step.enhanced, step.text);
  if (step.success) {
    const auto* e = services.customers.find_by_name(step.user);
    authenticated_customer_ = e ? e->info.id : 0;
    core::log_info("session {}: {} authenticated as customer {}", id_, client_, step.user);
    co_return;
  }
  if (step.code != 535) co_return;  // cancelled or malformed: no guess was made
  ++auth_failures_;
  core::log_warning("session {}: authentication failure {} from {} (user \"{}\")", id_,
                    auth_failures_, client_, step.user);
  // Slow down guessing; after a few failures, close (RFC 4954 §9 allows it after 3).
  co_await flush();
  asio::steady_timer pause(stream_.socket().get_executor(), std::chrono::seconds(auth_failures_));
  co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  if (auth_failures_ >= auth_failure_limit) {
    reply(421, "4.7.0", server_.settings().hostname + " Error: too many authentication failures");
    quit_ = true;
  }
}

asio::awaitable<void> smtp_session::do_etrn(const command& c) {
  auto& services = server_.services();
  if (!etrn_offered()) {
    reply(502, "5.5.1", "Error: ETRN not implemented");
    co_return;
  }
  // RFC 1985 §5: ETRN [option character] node. Replies carry RFC 1985's
  // exact texts on one line each (fetchmail reads one line per ETRN).
  if (c.arg.empty()) {
    reader_.write("500 Syntax Error\r\n");
    ++errors_;
    co_return;
  }
  std::string node = c.arg;
  char option = 0;
  if (node[0] == '@' || node[0] == '#') {
    option = node[0];
    node.erase(0, 1);
  }
  for (char& ch : node) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  // "#name" names a customer's queue; anything else must be a domain name.
  const bool syntax_ok =
      option == '#'
          ? !node.empty() && node.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") ==
                                 std::string::npos
          : is_valid_domain(node);
  if (!syntax_ok) {
    reader_.write("501 Syntax Error in Parameters\r\n");
    ++errors_;
    co_return;
  }

  // Which customers the node names.
  std::vector<const customer_entry*> targets;
  if (option == '#') {
    if (const auto* e = services.customers.find_by_name(node)) targets.push_back(e);
  } else if (option == '@') {
    for (const auto* e : services.customers.all()) {
      for (const auto& d : e->info.domains) {
        if (d == node || (d.size() > node.size() && d.ends_with("." + node))) {
          targets.push_back(e);
          break;
        }
      }
    }
  } else if (const auto* e = services.customers.find_by_domain(node)) {
    targets.push_back(e);
  }

  // Who may ask: from the customer's live link, its etrn_networks, or its login.
  boost::system::error_code ec;
  auto client_ip = asio::ip::make_address(client_address_, ec);
  std::vector<const customer_entry*> allowed;
  std::string why = "unknown node";
  for (const auto* e : targets) {
    if (e->info.name == queue::notices_customer) continue;
    if (e->info.mode == queue::delivery_mode::odmr) {
      why = "mail for it is handed out by ATRN on the ODMR port";
      continue;
    }
    bool ok = authenticated_customer_ == e->info.id;
    for (const auto& link : services.routes->links_of(e->info.id)) {
      // The line's own addresses, or any address of the customer's LAN prefix.
      if (link.address == client_address_ || link.ipv6_address == client_address_) ok = true;
      const auto lan = core::parse_ip_network(link.ipv6_prefix);
      if (!ec && lan && lan->contains(client_ip)) ok = true;
    }
    for (const auto& net : e->info.etrn_networks) {
      const auto parsed = core::parse_ip_network(net);
      if (!ec && parsed && parsed->contains(client_ip)) ok = true;
    }
    if (ok) {
      allowed.push_back(e);
    } else {
      why = "not from the customer's link or network, and not logged in as the customer";
    }
  }
  const std::string shown = (option ? std::string(1, option) : std::string()) + node;
  if (allowed.empty()) {
    core::log_info("session {}: ETRN {} from {} refused: {}", id_, shown, client_, why);
    reader_.write("459 Node " + shown + " not allowed: " + why + "\r\n");
    co_return;
  }

  // How much is waiting, then start the flushes (the route is the gateway's own).
  std::vector<std::int64_t> ids;
  for (const auto* e : allowed) ids.push_back(e->info.id);
  auto counts = co_await services.store.run([&ids](queue::store& s) {
    boost::system::result<std::uint64_t> total = std::uint64_t{0};
    for (auto id : ids) {
      auto st = s.customer_stats(id);
      if (!st) return boost::system::result<std::uint64_t>(st.error());
      *total += st->messages;
    }
    return total;
  });
  if (!counts) {
    reader_.write("458 Unable to queue messages for node " + shown + "\r\n");
    co_return;
  }
  bool no_route = false;
  const auto now = std::chrono::steady_clock::now();
  for (auto id : ids) {
    auto& last = server_.last_etrn_[id];
    if (last != std::chrono::steady_clock::time_point{} &&
        now - last < server_.settings().etrn_min_interval) {
      // Rate limit: the flush starts when the interval is over, once.
      auto wait = server_.settings().etrn_min_interval - (now - last);
      core::log_info("session {}: ETRN {} from {}: within etrn_min_interval, flush in {}s", id_,
                     shown, client_, std::chrono::duration_cast<std::chrono::seconds>(wait).count() + 1);
      server_.flush_later(id, wait);
      continue;
    }
    switch (services.flushes->request_flush(id, "etrn")) {
      case flush_refusal::none:
        last = now;
        break;
      case flush_refusal::already_running:  // the running flush serves this ETRN too
        break;
      case flush_refusal::no_route:
        no_route = true;
        break;
      case flush_refusal::unknown_customer:
      case flush_refusal::odmr_only:
        break;
    }
  }
  if (no_route && *counts > 0) {
    reader_.write("458 Unable to queue messages for node " + shown + "\r\n");
    co_return;
  }
  core::log_info("session {}: ETRN {} from {}: {} messages waiting", id_, shown, client_, *counts);
  if (*counts > 0) {
    reader_.write("253 OK, " + std::to_string(*counts) + " pending messages for node " + shown + " started\r\n");
  } else if (server_.settings().etrn_report_empty) {
    reader_.write("251 OK, no messages waiting for node " + shown + "\r\n");
  } else {
    reader_.write("250 OK, queuing for node " + shown + " started\r\n");
  }
}

asio::awaitable<void> smtp_session::do_not_implemented(const command& c) {
  reply(502, "5.5.1", "Error: " + c.name + " not implemented");
  co_return;
}

asio::awaitable<void> smtp_session::do_unknown(const command&) {
  reply(500, "5.5.2", "Error: command not recognized");
  co_return;
}

}  // namespace flushgate::gateway
