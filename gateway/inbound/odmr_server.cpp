// odmr_server.cpp — see odmr_server.hpp.
#include "gateway/inbound/odmr_server.hpp"

#include "core/config.hpp"
#include "core/log.hpp"
#include "gateway/inbound/address.hpp"
#include "gateway/inbound/line_reader.hpp"
#include "gateway/inbound/sasl.hpp"
#include "gateway/inbound/smtp_command.hpp"
#include "gateway/smtp_reply.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>

namespace flushgate::gateway {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {
constexpr std::size_t auth_line_limit = 12288;  // RFC 4954 §4
constexpr int auth_failure_limit = 3;
constexpr auto final_write_timeout = 10s;
}  // namespace

odmr_settings odmr_settings::from_config(const core::config& cfg, const std::string& hostname) {
  odmr_settings s;
  s.hostname = hostname;
  s.timeout = cfg.duration("smtpd_timeout");
  s.session_timeout = cfg.duration("smtpd_session_timeout");
  s.command_line_limit = static_cast<std::size_t>(cfg.count("smtpd_command_line_limit"));
  s.max_connections = static_cast<std::size_t>(cfg.count("odmr_max_connections"));
  return s;
}

// One ODMR connection. The coroutine frame owns it (shared_ptr captured by run).
class odmr_server::session : public std::enable_shared_from_this<session> {
 public:
  session(odmr_server& server, tcp::socket socket, std::uint64_t id, bool implicit_tls)
      : server_(server), stream_(std::move(socket)), reader_(stream_), id_(id),
        implicit_tls_(implicit_tls) {
    client_ = "[" + stream_.remote_endpoint().address().to_string() + "]";
    // AUTH command lines and AUTH responses may be long (RFC 4954 §4).
    may_be_long_ = [this](std::string_view start) {
      if (in_auth_) return true;
      if (start.size() < 5) return false;
      std::string verb(start.substr(0, 5));
      for (char& ch : verb) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      return verb == "AUTH ";
    };
  }

  asio::awaitable<void> run();
  void cut_off() { stream_.close(); }

 private:
  clock_type::duration timeout() const {
    auto left = deadline_ - clock_type::now();
    return std::clamp<clock_type::duration>(left, clock_type::duration::zero(),
                                            server_.settings_.timeout);
  }
  // One line per reply: fetchmail reads exactly one line per step.
  void say(const std::string& line) { reader_.write(line + "\r\n"); }
  asio::awaitable<void> do_auth(const command& c);
  asio::awaitable<void> do_atrn(const command& c);
  asio::awaitable<bool> do_starttls(const command& c);

  odmr_server& server_;
  smtp_stream stream_;
  line_reader reader_;
  std::uint64_t id_;
  bool implicit_tls_;
  std::string client_;
  clock_type::time_point deadline_;
  bool greeted_ = false;
  bool in_auth_ = false;
  bool done_ = false;
  int auth_failures_ = 0;
  // After AUTH: the customer's id. Never a pointer into the directory: an
  // operator's change replaces the entry while this session lives.
  std::int64_t customer_id_ = 0;
  line_reader::long_line_test may_be_long_;
};

asio::awaitable<void> odmr_server::session::run() {
  auto& services = server_.services_;
  deadline_ = clock_type::now() + server_.settings_.session_timeout;
  core::log_info("odmr session {}: connect from {}{}", id_, client_, implicit_tls_ ? " (TLS port)" : "");
  if (implicit_tls_) {
    if (auto ec = co_await stream_.start_tls_server(*services.tls, timeout())) {
      core::log_info("odmr session {}: TLS handshake with {} failed: {}", id_, client_, ec.message());
      stream_.close();
      co_return;
    }
  }
  say("220 " + server_.settings_.hostname + " ESMTP flushgate ODMR (RFC 2645)");
  while (!done_) {
    std::string line;
    const auto wait = timeout();
    auto status = co_await reader_.read_line(line, server_.settings_.command_line_limit, wait,
                                             may_be_long_, auth_line_limit);
    if (status == line_reader::status::closed) {
      if (reader_.error() == asio::error::timed_out) say("421 4.4.2 " + server_.settings_.hostname + " timeout");
      break;
    }
    if (status == line_reader::status::too_long) {
      say("500 5.5.6 Line too long");
      continue;
    }
    if (line.find_first_of("\r\n") != std::string::npos) {
      say("500 5.5.2 Bare <CR> or <LF> in command");
      continue;
    }
    command c = parse_command(line);
    switch (c.v) {
      case verb::ehlo:
      case verb::helo: {
        if (c.arg.empty()) {
          say("501 5.5.4 Syntax: EHLO hostname");
          break;
        }
        greeted_ = true;
        if (c.v == verb::helo) {
          say("250 " + server_.settings_.hostname);
          break;
        }
        // RFC 2645 §5.1.1: the EHLO response MUST include AUTH and ATRN.
        std::string lines = "250-" + server_.settings_.hostname + "\r\n";
        lines += "250-AUTH " + sasl_exchange::mechanisms(stream_.tls_active()) + "\r\n";
        if (services.tls != nullptr && !stream_.tls_active()) lines += "250-STARTTLS\r\n";
        lines += "250 ATRN\r\n";
        reader_.write(lines);
        co_await reader_.flush(timeout());
        break;
      }
      case verb::auth:
        if (!greeted_) {
          say("503 5.5.1 Send EHLO first");
          break;
        }
        co_await do_auth(c);
        break;
      case verb::atrn:
        co_await do_atrn(c);
        break;
      case verb::starttls:
        if (!co_await do_starttls(c)) done_ = true;
        break;
      case verb::quit:
        say("221 2.0.0 Bye");
        done_ = true;
        break;
      case verb::rset:
      case verb::noop:
        say("250 2.0.0 Ok");
        break;
      default:
        // RFC 2645 §5.4: only EHLO, AUTH, ATRN and QUIT are needed here.
        say("502 5.5.1 Command not implemented on the ODMR port");
        break;
    }
  }
  co_await reader_.flush(final_write_timeout);
  stream_.close();
  core::log_info("odmr session {}: disconnect from {}", id_, client_);
}

asio::awaitable<bool> odmr_server::session::do_starttls(const command& c) {
  auto* context = server_.services_.tls;
  if (context == nullptr || stream_.tls_active()) {
    say("502 5.5.1 STARTTLS not available");
    co_return true;
  }
  if (!c.arg.empty()) {
    say("501 5.5.4 Syntax error (no parameters allowed)");
    co_return true;
  }
  say("220 2.0.0 Ready to start TLS");
  if (!co_await reader_.flush(timeout())) co_return false;
  reader_.input().clear();  // CVE-2011-0411: nothing pipelined in plaintext survives
  if (auto ec = co_await stream_.start_tls_server(*context, timeout())) {
    core::log_info("odmr session {}: TLS handshake with {} failed: {}", id_, client_, ec.message());
    co_return false;
  }
  greeted_ = false;  // RFC 3207 §4.2: start again with EHLO
  customer_id_ = 0;
  co_return true;
}

asio::awaitable<void> odmr_server::session::do_auth(const command& c) {
  auto& customers = server_.services_.customers;
  sasl_exchange exchange(
      [&customers](std::string_view user) {
        const auto* e = customers.find_by_name(user);
        return e ? e->info.credential : std::string();
      },
      server_.settings_.hostname, stream_.tls_active());
  auto step = exchange.start(c.arg);
  in_auth_ = true;
  while (!step.done) {
    say("334 " + step.text);  // the space stays, even for an empty challenge
    std::string line;
    const auto wait = timeout();
    auto status = co_await reader_.read_line(line, auth_line_limit, wait);
    if (status == line_reader::status::closed) {
      done_ = true;
      in_auth_ = false;
      co_return;
    }
    if (status == line_reader::status::too_long) {
      in_auth_ = false;
      say("500 5.5.6 Authentication exchange line is too long");
      co_return;
    }
    step = exchange.respond(line);
  }
  in_auth_ = false;
  if (step.success) {
    const auto* e = customers.find_by_name(step.user);
    const std::int64_t id = e ? e->info.id : 0;
    // fetchmail with esmtpname set authenticates twice: accept a second
    // AUTH for the same identity; another identity keeps the first.
    if (customer_id_ != 0 && customer_id_ != id) {
      say("503 5.5.1 Already authenticated as another customer");
      co_return;
    }
    customer_id_ = id;
    say(std::to_string(step.code) + " " + step.enhanced + " " + step.text);
    core::log_info("odmr session {}: {} authenticated as customer {}", id_, client_, step.user);
    co_return;
  }
  say(std::to_string(step.code) + " " + step.enhanced + " " + step.text);
  if (step.code != 535) co_return;
  ++auth_failures_;
  core::log_warning("odmr session {}: authentication failure {} from {} (user \"{}\")", id_,
                    auth_failures_, client_, step.user);
  co_await reader_.flush(timeout());
  asio::steady_timer pause(stream_.socket().get_executor(), std::chrono::seconds(auth_failures_));
  co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  if (auth_failures_ >= auth_failure_limit) {
    say("421 4.7.0 " + server_.settings_.hostname + " Too many authentication failures");
    done_ = true;
  }
}

asio::awaitable<void> odmr_server::session::do_atrn(const command& c) {
  auto& services = server_.services_;
  const customer_entry* entry = services.customers.find_by_id(customer_id_);
  if (entry == nullptr) {
    say("530 Authentication required");  // RFC 2645 §5.2.1, §7
    co_return;
  }
  const queue::customer owner = entry->info;  // a copy: the entry may change while we wait
  // "ATRN" alone means every domain of the customer (RFC 2645 §5.2.1).
  std::vector<std::string> domains;
  if (c.arg.empty()) {
    domains = owner.domains;
  } else {
    std::string_view rest = c.arg;
    while (true) {
      auto comma = rest.find(',');
      std::string d(rest.substr(0, comma));
      std::transform(d.begin(), d.end(), d.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      if (!is_valid_domain(d)) {
        say("501 Syntax error in the ATRN domain list");
        co_return;
      }
      domains.push_back(d);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  // Every domain must be the customer's, or nothing is sent (RFC 2645 §5.2.1).
  for (const auto& d : domains) {
    bool owned = false;
    for (const auto& mine : owner.domains) {
      if (d == mine || (owner.subdomains && d.size() > mine.size() && d.ends_with("." + mine))) owned = true;
    }
    if (!owned) {
      core::log_warning("odmr session {}: ATRN {} by customer {} refused: {} is not its domain", id_,
                        c.arg, owner.name, d);
      say("450 ATRN request refused");
      co_return;
    }
  }
  const std::int64_t id = owner.id;
  auto stats = co_await services.store.run([id](queue::store& s) { return s.customer_stats(id); });
  if (!stats) {
    say("451 Unable to process ATRN request now");
    co_return;
  }
  if (stats->messages == 0) {
    say("453 You have no mail");
    co_return;
  }
  if (!services.flushes.begin_external(id, "atrn")) {
    core::log_info("odmr session {}: ATRN by customer {} refused: a delivery is already running",
                   id_, owner.name);
    say("450 ATRN request refused");
    co_return;
  }
  // Another node delivering this customer: the same 450 as a running
  // delivery here (ARCHITECTURE.md invariant 9).
  lease_keeper::taken lease;
  if (services.leases != nullptr) {
    lease = co_await services.leases->take(id);
    if (lease.status != lease_keeper::take_status::ours) {
      services.flushes.end_external(id, false);
      if (lease.status == lease_keeper::take_status::held_elsewhere) {
        core::log_info("odmr session {}: ATRN by customer {} refused: its delivery is held by node {}",
                       id_, owner.name, lease.holder);
        say("450 ATRN request refused");
      } else {
        say("451 Unable to process ATRN request now");
      }
      co_return;
    }
  }
  core::log_info("odmr session {}: ATRN {} by customer {}: {} messages queued, reversing", id_,
                 c.arg.empty() ? "(all domains)" : c.arg, owner.name, stats->messages);
  say("250 OK now reversing the connection");
  bool sent = co_await reader_.flush(timeout());
  if (auto& in = reader_.input(); !in.empty()) {
    // ATRN must end its pipeline group (RFC 2920 §3.1); what came after it
    // was not the customer's greeting, which can only follow our 250.
    core::log_warning("odmr session {}: discarding {} octets sent after ATRN", id_, in.size());
    in.clear();
  }
  flush_progress progress;
  run_control control;
  if (sent && services.leases != nullptr) {
    const lease_keeper::run_body body = [&]() {
      return services.delivery.run_turned_around(id, stream_, domains, progress, control);
    };
    co_await services.leases->hold(lease, control, body);
  } else if (sent) {
    co_await services.delivery.run_turned_around(id, stream_, domains, progress, control);
  } else if (services.leases != nullptr) {
    co_await services.leases->release(lease);
  }
  services.flushes.end_external(id);
  done_ = true;  // the roles were swapped: this connection ends with the delivery's QUIT
}

odmr_server::odmr_server(asio::io_context& io, odmr_settings settings, odmr_services services,
                         acceptor_list plain, acceptor_list implicit_tls)
    : io_(io),
      settings_(std::move(settings)),
      services_(services),
      plain_(std::move(plain)),
      implicit_tls_(std::move(implicit_tls)) {}

odmr_server::~odmr_server() = default;

void odmr_server::start() {
  for (auto& a : plain_) {
    core::log_info("odmr: listening on {}:{}", a->local_endpoint().address().to_string(), a->local_endpoint().port());
    asio::co_spawn(io_, accept_loop(*a, false), asio::detached);
  }
  for (auto& a : implicit_tls_) {
    core::log_info("odmr: listening on {}:{} (TLS)", a->local_endpoint().address().to_string(), a->local_endpoint().port());
    asio::co_spawn(io_, accept_loop(*a, true), asio::detached);
  }
}

void odmr_server::stop() {
  for (auto* list : {&plain_, &implicit_tls_}) {
    for (auto& a : *list) {
      boost::system::error_code ignored;
      a->close(ignored);
    }
  }
  for (auto& weak : sessions_) {
    if (auto s = weak.lock()) s->cut_off();
  }
}

asio::awaitable<void> odmr_server::accept_loop(tcp::acceptor& acceptor, bool implicit_tls) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!acceptor.is_open()) co_return;
      core::log_warning("odmr: accept failed: {}", ec.message());
      continue;
    }
    if (sessions_.size() >= settings_.max_connections) {
      boost::system::error_code ignored;
      socket.close(ignored);
      core::log_warning("odmr: refusing a connection: {} sessions open", sessions_.size());
      continue;
    }
    auto s = std::make_shared<session>(*this, std::move(socket), next_id_++, implicit_tls);
    auto it = sessions_.insert(sessions_.end(), s);
    asio::co_spawn(
        io_, [s]() -> asio::awaitable<void> { co_await s->run(); },
        [this, it](std::exception_ptr error) {
          if (error) {
            try {
              std::rethrow_exception(error);
            } catch (const std::exception& e) {
              core::log_error("odmr: session failed: {}", e.what());
            }
          }
          sessions_.erase(it);
        });
  }
}

}  // namespace flushgate::gateway
