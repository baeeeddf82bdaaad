// delivery.cpp — see delivery.hpp.
//
// A run, step by step:
//   1. read up to batch_messages deliverable messages after the last one seen;
//   2. split their recipients by destination (one destination for a link or a
//      host route; one per recipient domain for an MX route);
//   3. per destination: connect (every address of every MX host in order),
//      EHLO/STARTTLS, send the batch pipelined, read per-recipient results;
//   4. record all results of the batch in one transaction, DSNs included;
//   5. repeat until nothing is left or the connection is lost.
#include "gateway/flush/delivery.hpp"
#include "gateway/gateway_metrics.hpp"
#include "gateway/smtp_reply.hpp"

#include "core/log.hpp"
#include "core/units.hpp"
#include "queue/store.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <ctime>
#include <map>

namespace flushgate::gateway {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

std::int64_t now_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string domain_of(const std::string& address) {
  auto at = address.rfind('@');
  return at == std::string::npos ? std::string() : lower(address.substr(at + 1));
}

// The enhanced status code of a reply when it has one of the right class.
std::string status_of(const peer_reply& r, char cls, const char* fallback) {
  if (r.enhanced.size() >= 5 && r.enhanced[0] == cls) return r.enhanced;
  return fallback;
}

// The DSN status for a DNS answer that makes delivery impossible; "" when
// the error is temporary (or not a DNS error at all).
std::string permanent_status(const boost::system::error_code& dns_error) {
  if (dns_error == mx_errc::null_mx) return "5.1.10";
  if (dns_error == mx_errc::nxdomain) return "5.1.2";
  if (dns_error == mx_errc::self_only) return "5.4.6";
  if (dns_error == mx_errc::no_usable_hosts) return "5.4.4";
  return "";
}

bool notify_has(const std::string& notify, const char* word) {
  return notify.find(word) != std::string::npos;
}

}  // namespace

// Where a group of recipients goes: explicit addresses (link, host, relay)
// or the MX hosts of a domain.
struct delivery_agent::destination {
  std::int64_t customer_id = 0;  // whose STARTTLS policy applies
  std::string key;     // "host:port" or "mx:domain"
  std::string host;    // for host routes
  std::string fallback;  // a dual-stack link's other address, tried after host
  std::string link_user;  // the link a link route runs over, "" otherwise
  std::uint16_t port = 25;
  std::string domain;  // for MX routes
  bool is_mx = false;
};

struct delivery_agent::connection {
  std::string key;
  std::string peer_name;   // host name for Remote-MTA
  std::unique_ptr<smtp_stream> owned;  // our own connection; empty for ODMR
  smtp_stream* stream = nullptr;
  std::unique_ptr<smtp_client> client;
};

// One message, restricted to the recipients going to one destination.
struct delivery_agent::work_item {
  const queue::message_info* message = nullptr;
  std::vector<const queue::recipient_info*> recipients;
};

delivery_agent::delivery_agent(asio::io_context& io, delivery_settings settings,
                               customer_directory& customers, queue::store_worker& store,
                               mx_resolver& mx, std::int64_t notices_customer_id,
                               const router* routes)
    : io_(io),
      settings_(std::move(settings)),
      customers_(customers),
      store_(store),
      mx_(mx),
      notices_customer_id_(notices_customer_id),
      routes_(routes) {}

queue::new_message delivery_agent::make_notice(const queue::message_info& m,
                                               const std::string& content,
                                               std::vector<queue::dsn_recipient> recipients) const {
  queue::dsn_input in;
  in.reporting_mta = settings_.hostname;
  in.original_sender = m.sender;
  in.envid = m.envid;
  in.ret = m.ret;
  in.arrival = m.arrival;
  in.queue_id = m.qid;
  in.original_content = content;
  in.recipients = std::move(recipients);
  in.now = now_seconds();
  queue::new_message notice;
  auto text = queue::build_dsn(in);
  if (!text) return notice;  // nobody to notify: customer_id stays 0
  notice.customer_id = notices_customer_id_;
  notice.sender = "";  // the null sender: never a DSN about a DSN
  notice.recipients.push_back({m.sender, "", ""});
  notice.body_type = queue::needs_8bitmime(*text) ? "8BITMIME" : "";
  notice.client = "flushgate (delivery status notification)";
  notice.arrival = in.now;
  notice.content = std::move(*text);
  return notice;
}

namespace {

// How many messages at the front of a send_batch answer were tried: the
// rest (no MAIL reply, no recipient answered) never went out.
std::size_t attempted(const std::vector<message_result>& results) {
  std::size_t n = 0;
  for (const auto& r : results) {
    const bool untouched =
        r.status == message_status::connection_lost && r.mail_reply.code == 0 &&
        std::all_of(r.recipients.begin(), r.recipients.end(),
                    [](const recipient_result& x) { return x.reply.code == 0; });
    if (untouched) break;
    ++n;
  }
  return n;
}

}  // namespace

client_forwarding delivery_agent::forwarding_of(std::int64_t customer_id) const {
  const customer_entry* e = customers_.find_by_id(customer_id);
  if (e == nullptr) return client_forwarding::xforward;
  return parse_client_forwarding(e->info.forward_client).value_or(client_forwarding::xforward);
}

asio::awaitable<std::unique_ptr<delivery_agent::connection>> delivery_agent::connect(
    const destination& d, run_control& control, std::string& error,
    boost::system::error_code& dns_error, smtp_stream* turned_around) {
  if (turned_around != nullptr) {
    // ODMR: the customer's server speaks first, over the customer's own
    // connection (TLS kept). Over TLS, one line per write: fetchmail's relay
    // loop waits on the socket and would stall on a record of several lines
    // (FETCHMAIL.md §d5).
    auto conn = std::make_unique<connection>();
    conn->key = d.key;
    conn->peer_name = "odmr-customer[" + turned_around->remote_endpoint().address().to_string() + "]";
    conn->stream = turned_around;
    client_settings cs = settings_.client;
    cs.tls = tls_policy::none;
    cs.one_line_per_write = turned_around->tls_active();
    // The same rule as on any connection: what the EHLO seen here offers
    // (with fetchmail relaying, the customer's own MTA's EHLO). But never
    // XCLIENT: a session that took one client's identity serves no other,
    // and this connection is the only one there is (XFORWARD instead).
    cs.forward_client = forwarding_of(d.customer_id);
    if (cs.forward_client == client_forwarding::xclient) cs.forward_client = client_forwarding::xforward;
    conn->client = std::make_unique<smtp_client>(*turned_around, cs);
    control.cancel = [turned_around] { turned_around->close(); };
    auto opened = co_await conn->client->open();
    if (!opened) {
      error = "customer side of the ODMR connection: " +
              (conn->client->last_error().empty() ? opened.error().message() : conn->client->last_error());
      control.cancel = nullptr;
      co_return nullptr;
    }
    co_return conn;
  }
  // Candidates: (host name, address, port) in the order RFC 5321 §5.1 wants.
  struct candidate {
    std::string name;
    asio::ip::address address;
    std::uint16_t port;
  };
  std::vector<candidate> candidates;
  if (d.is_mx) {
    auto targets = co_await mx_.resolve(d.domain);
    if (!targets) {
      dns_error = targets.error();
      error = "MX lookup for " + d.domain + ": " + targets.error().message();
      co_return nullptr;
    }
    for (const auto& t : *targets) {
      for (const auto& a : t.addresses) candidates.push_back({t.host, a, 25});
    }
  } else {
    auto addresses = co_await mx_.resolve_host(d.host);
    if (!addresses) {
      dns_error = addresses.error();
      error = "address of " + d.host + ": " + addresses.error().message();
      co_return nullptr;
    }
    for (const auto& a : *addresses) candidates.push_back({d.host, a, d.port});
    if (!d.fallback.empty()) {
      // A dual-stack link: the other family's address after the first.
      auto more = co_await mx_.resolve_host(d.fallback);
      if (more) {
        for (const auto& a : *more) candidates.push_back({d.fallback, a, d.port});
      }
    }
  }
  if (candidates.empty()) {
    error = "no address for " + (d.is_mx ? d.domain : d.host);
    co_return nullptr;
  }
  for (const auto& c : candidates) {
    if (control.cancelled) {
      error = "cancelled";
      co_return nullptr;
    }
    tcp::socket socket(io_);
    asio::steady_timer timer(io_, settings_.connect_timeout);
    control.cancel = [&socket] {
      boost::system::error_code ignored;
      socket.close(ignored);
    };
    auto outcome = co_await (socket.async_connect(tcp::endpoint(c.address, c.port),
                                                  asio::as_tuple(asio::use_awaitable)) ||
                             timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    control.cancel = nullptr;
    // "mx.acme.test[192.0.2.7]:25"; an address literal once: "[2001:db8::25]:25".
    const std::string literal = c.address.to_string();
    std::string where = (c.name == literal ? "" : c.name) + "[" + literal + "]:" + std::to_string(c.port);
    const char* family = c.address.is_v6() ? "IPv6" : "IPv4";
    if (outcome.index() == 1) {
      error = "connect to " + where + ": timed out";
      if (!d.fallback.empty()) core::log_info("link {}: {} over {}", d.link_user, error, family);
      continue;
    }
    if (auto [ec] = std::get<0>(outcome); ec) {
      error = "connect to " + where + ": " + ec.message();
      if (!d.fallback.empty()) core::log_info("link {}: {} over {}", d.link_user, error, family);
      continue;
    }
    if (!d.link_user.empty()) {
      // Which family carried the customer's mail over its line.
      const bool first = c.name == d.host;
      core::log_info("link {}: connected over {} to {}{}", d.link_user, family, where,
                     first ? "" : " (its first address did not answer)");
      count_link_connection(c.address.is_v6() ? "ipv6" : "ipv4", first ? "first" : "fallback");
    }
    auto conn = std::make_unique<connection>();
    conn->key = d.key;
    conn->peer_name = c.name;
    conn->owned = std::make_unique<smtp_stream>(std::move(socket));
    conn->stream = conn->owned.get();
    client_settings cs = settings_.client;
    if (cs.tls_server_name.empty()) cs.tls_server_name = c.name;
    if (const customer_entry* e = customers_.find_by_id(d.customer_id); e && !e->info.tls.empty()) {
      cs.tls = parse_tls_policy(e->info.tls);
    }
    cs.forward_client = forwarding_of(d.customer_id);
    conn->client = std::make_unique<smtp_client>(*conn->stream, cs);
    smtp_stream* stream = conn->stream;
    control.cancel = [stream] { stream->close(); };
    auto opened = co_await conn->client->open();
    if (!opened) {
      error = where + ": " + (conn->client->last_error().empty() ? opened.error().message()
                                                                 : conn->client->last_error());
      control.cancel = nullptr;
      conn->stream->close();
      continue;
    }
    core::log_debug("connected to {} ({})", where,
                    conn->stream->tls_active() ? conn->stream->tls_description() : "no TLS");
    co_return conn;
  }
  co_return nullptr;
}

asio::awaitable<bool> delivery_agent::record(std::vector<queue::store::attempt>& attempts,
                                             const std::vector<std::uint64_t>& sizes,
                                             std::int64_t customer_id, flush_progress* progress,
                                             std::string& error) {
  if (attempts.empty()) co_return true;
  auto results = co_await store_.run(
      [&attempts](queue::store& s) { return s.record_attempts(attempts); });
  if (!results) {
    // Nothing changed: every recipient is still queued and will be tried again.
    error = "recording delivery results failed: " + results.error().message();
    core::log_error("{}", error);
    co_return false;
  }
  std::size_t notices = 0;
  for (std::size_t i = 0; i < results->size(); ++i) {
    const auto& r = (*results)[i];
    notices += r.notice_qids.size();
    for (const auto& u : attempts[i].updates) {
      switch (u.fate) {
        case queue::recipient_fate::delivered: count_delivery("sent"); break;
        case queue::recipient_fate::failed: count_delivery("bounced"); break;
        case queue::recipient_fate::deferred: count_delivery("deferred"); break;
      }
    }
    for (const auto& n : attempts[i].notices) {
      customers_.add_queued_bytes(notices_customer_id_, static_cast<std::int64_t>(n.content.size()));
    }
    for (const auto& qid : r.notice_qids) {
      core::log_info("{}: sender non-delivery notification: {}", attempts[i].qid, qid);
    }
    if (r.message_removed) {
      customers_.add_queued_bytes(customer_id, -static_cast<std::int64_t>(sizes[i]));
      if (progress != nullptr) {
        ++progress->messages_done;
        progress->bytes_done += sizes[i];
      }
      core::log_info("{}: removed", attempts[i].qid);
    }
  }
  if (notices > 0) {
    count_dsn_queued("final", notices);
    if (notice_queued_) notice_queued_(notices_customer_id_);
  }
  co_return true;
}

asio::awaitable<run_outcome> delivery_agent::run(std::int64_t customer_id, route r,
                                                 flush_progress& progress, run_control& control) {
  co_return co_await run_impl(customer_id, std::move(r), progress, control, nullptr, {});
}

asio::awaitable<run_outcome> delivery_agent::run_turned_around(std::int64_t customer_id,
                                                               smtp_stream& stream,
                                                               std::vector<std::string> domains,
                                                               flush_progress& progress,
                                                               run_control& control) {
  route r;
  r.k = route::kind::odmr;
  co_return co_await run_impl(customer_id, r, progress, control, &stream, domains);
}

asio::awaitable<run_outcome> delivery_agent::run_impl(std::int64_t customer_id, route r,
                                                      flush_progress& progress,
                                                      run_control& control,
                                                      smtp_stream* turned_around,
                                                      const std::vector<std::string>& domains) {
  const customer_entry* entry = customers_.find_by_id(customer_id);
  if (entry == nullptr || (!r.deliverable() && turned_around == nullptr)) {
    run_outcome nothing;
    nothing.nothing_deliverable = true;
    co_return nothing;
  }
  // Connections at once: one over a dial-up link (or as configured), one for
  // an ODMR session, smtp_connections_per_customer otherwise.
  std::size_t lanes = settings_.connections_per_customer;
  if (turned_around != nullptr) {
    lanes = 1;
  } else if (r.k == route::kind::link) {
    const auto* link = routes_ ? routes_->find_link(r.link_user) : nullptr;
    if (link != nullptr && link->kind == queue::link_kind::dialup) lanes = settings_.dialup_connections;
  }
  lanes = std::max<std::size_t>(lanes, 1);
  const std::string entry_name = entry->info.name;

  if (auto stats = co_await store_.run([customer_id](queue::store& s) {
        return s.customer_stats(customer_id);
      })) {
    progress.messages_at_start = stats->messages;
    progress.bytes_at_start = stats->bytes;
  }
  if (lanes == 1) {
    auto out = co_await run_lane(customer_id, r, progress, control, turned_around, domains, 0, 1);
    // The lane's connection is gone: a cancel after the run must not reach it.
    control.cancel = nullptr;
    co_return out;
  }

  // Several lanes, each with its own connection; a message belongs to one
  // lane (by its queue id), so no two connections ever carry the same one.
  std::vector<run_control> lane_controls(lanes);
  control.cancel = [&lane_controls] {
    for (auto& c : lane_controls) {
      c.cancelled = true;
      if (c.cancel) c.cancel();
    }
  };
  std::vector<run_outcome> outcomes(lanes);
  std::size_t remaining = lanes;
  asio::steady_timer all_done(io_, asio::steady_timer::time_point::max());
  for (std::size_t lane = 0; lane < lanes; ++lane) {
    asio::co_spawn(
        io_,
        [&, lane]() -> asio::awaitable<void> {
          outcomes[lane] = co_await run_lane(customer_id, r, progress, lane_controls[lane],
                                             turned_around, domains, lane, lanes);
        },
        [&](std::exception_ptr error) {
          if (error) {
            outcomes[0].left_mail = true;
            outcomes[0].error = "internal error in a delivery lane";
          }
          if (--remaining == 0) all_done.cancel();
        });
  }
  while (remaining > 0) {
    co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  control.cancel = nullptr;
  run_outcome out;
  out.nothing_deliverable = true;
  for (const auto& o : outcomes) {
    out.nothing_deliverable = out.nothing_deliverable && o.nothing_deliverable;
    out.left_mail = out.left_mail || o.left_mail;
    out.cancelled = out.cancelled || o.cancelled;
    if (out.error.empty()) out.error = o.error;
  }
  core::log_info("customer {}: flush over {} ({} connections) done: {} delivered, {} bounced, {} deferred{}{}",
                 entry_name, r.describe(), lanes, progress.recipients_delivered,
                 progress.recipients_failed, progress.recipients_deferred,
                 out.error.empty() ? "" : ": ", out.error);
  co_return out;
}

asio::awaitable<run_outcome> delivery_agent::run_lane(std::int64_t customer_id, route r,
                                                      flush_progress& progress,
                                                      run_control& control,
                                                      smtp_stream* turned_around,
                                                      const std::vector<std::string>& domains,
                                                      std::size_t lane, std::size_t lanes) {
  run_outcome out;
  out.nothing_deliverable = true;
  const customer_entry* entry = customers_.find_by_id(customer_id);
  if (entry == nullptr) co_return out;
  const std::string customer_name = entry->info.name;
  const bool notices = customer_id == notices_customer_id_;

  // Where each recipient goes.
  auto destination_for = [&](const std::string& rcpt) {
    destination d;
    d.customer_id = customer_id;
    if (turned_around != nullptr) {
      d.key = "odmr";
      return d;
    }
    if (notices && !settings_.bounce_relay.empty()) {
      auto hp = core::parse_host_port(settings_.bounce_relay);
      d.host = hp ? hp->first : settings_.bounce_relay;
      d.port = hp ? hp->second : 25;
    } else if (r.k == route::kind::mx || notices) {
      d.is_mx = true;
      d.domain = domain_of(rcpt);
      d.key = "mx:" + d.domain;
      return d;
    } else {
      d.host = r.host;
      d.port = r.port;
      if (r.k == route::kind::link) {
        d.fallback = r.fallback;
        d.link_user = r.link_user;
      }
    }
    d.key = d.host + ":" + std::to_string(d.port);
    return d;
  };

  std::unique_ptr<connection> conn;
  bool turned_around_used = false;  // an ODMR connection can be opened only once
  std::string after;
  bool stop = false;
  while (!stop) {
    if (control.cancelled) {
      out.cancelled = true;
      break;
    }
    auto batch = co_await store_.run([&](queue::store& s) {
      return s.list_deliverable(customer_id, after, settings_.batch_messages);
    });
    if (!batch) {
      out.left_mail = true;
      out.error = "reading the queue failed: " + batch.error().message();
      break;
    }
    if (batch->empty()) break;
    out.nothing_deliverable = false;
    // Bounded memory: the batch ends where its contents would pass the
    // budget (always at least one message, however large).
    std::size_t take = 0;
    std::uint64_t bytes = 0;
    while (take < batch->size() &&
           (take == 0 || bytes + (*batch)[take].size <= settings_.batch_bytes)) {
      bytes += (*batch)[take].size;
      ++take;
    }
    batch->resize(take);
    after = batch->back().qid;
    if (lanes > 1) {
      // This lane's share of the batch.
      std::erase_if(*batch, [lane, lanes](const queue::message_info& m) {
        return std::hash<std::string>{}(m.qid) % lanes != lane;
      });
      if (batch->empty()) continue;
    }

    // Group by destination, keeping queue order inside each group.
    std::map<std::string, std::pair<destination, std::vector<work_item>>> groups;
    std::vector<std::string> order;
    // ATRN names the domains to hand out: other recipients wait (RFC 2645 §5.2.1).
    auto wanted = [&domains](const std::string& address) {
      if (domains.empty()) return true;
      const std::string d = domain_of(address);
      for (const auto& w : domains) {
        if (d == w || (d.size() > w.size() && d.ends_with("." + w))) return true;
      }
      return false;
    };
    for (const auto& m : *batch) {
      for (const auto& rc : m.recipients) {
        if (!wanted(rc.address)) continue;
        destination d = destination_for(rc.address);
        auto [it, inserted] = groups.try_emplace(d.key, d, std::vector<work_item>{});
        if (inserted) order.push_back(d.key);
        auto& items = it->second.second;
        if (items.empty() || items.back().message != &m) items.push_back({&m, {}});
        items.back().recipients.push_back(&rc);
      }
    }

    // Contents of the messages that go out (ATRN may want only some domains),
    // read at once on the store thread (PostgreSQL: one query for the batch).
    std::map<std::string, std::string> contents;
    std::vector<std::string> wanted_qids;
    for (const auto& [key, group] : groups) {
      for (const auto& w : group.second) {
        if (contents.try_emplace(w.message->qid).second) wanted_qids.push_back(w.message->qid);
      }
    }
    auto loaded = co_await store_.run([&](queue::store& s) {
      auto read = s.read_contents(wanted_qids);
      if (!read) return read.error();
      for (std::size_t i = 0; i < wanted_qids.size(); ++i) contents[wanted_qids[i]] = std::move((*read)[i]);
      return boost::system::error_code{};
    });
    if (loaded) {
      out.left_mail = true;
      out.error = "reading message content failed: " + loaded.message();
      break;
    }

    // Per message: the updates of its recipients and the notices they produce.
    std::map<std::string, queue::store::attempt> attempts;
    std::map<std::string, std::vector<queue::dsn_recipient>> failures, relayed;
    auto update = [&](const work_item& w, const queue::recipient_info& rc, queue::recipient_fate fate,
                      const std::string& reply) {
      auto& a = attempts[w.message->qid];
      a.qid = w.message->qid;
      a.updates.push_back({rc.id, fate, reply});
      switch (fate) {
        case queue::recipient_fate::delivered: ++progress.recipients_delivered; break;
        case queue::recipient_fate::failed: ++progress.recipients_failed; break;
        case queue::recipient_fate::deferred: ++progress.recipients_deferred; break;
      }
    };
    auto fail = [&](const work_item& w, const queue::recipient_info& rc, const std::string& status,
                    const std::string& remote, const std::string& diagnostic) {
      update(w, rc, queue::recipient_fate::failed, diagnostic);
      queue::dsn_recipient d;
      d.final_recipient = rc.address;
      d.orcpt = rc.orcpt;
      d.notify = rc.notify;
      d.action = queue::dsn_action::failed;
      d.status = status;
      d.remote_mta = remote;
      d.diagnostic = diagnostic;
      d.last_attempt = now_seconds();
      failures[w.message->qid].push_back(d);
      core::log_info("{}: to=<{}>, relay={}, delay={}, dsn={}, status=bounced ({}), customer={}",
                     w.message->qid, rc.address, remote.empty() ? "none" : remote,
                     now_seconds() - w.message->arrival, status, diagnostic, customer_name);
    };
    auto defer = [&](const work_item& w, const queue::recipient_info& rc, const std::string& relay,
                     const std::string& why) {
      update(w, rc, queue::recipient_fate::deferred, why);
      out.left_mail = true;
      if (out.error.empty()) out.error = why;
      // 4.4.1: no answer from the host; a 4xx reply's own code when it gave one.
      const std::string dsn = why.size() > 9 && why[0] == '4' && why[3] == ' ' && why[4] == '4' && why[5] == '.'
                                  ? why.substr(4, why.find(' ', 4) - 4)
                                  : "4.4.1";
      core::log_info("{}: to=<{}>, relay={}, delay={}, dsn={}, status=deferred ({}), customer={}",
                     w.message->qid, rc.address, relay.empty() ? "none" : relay,
                     now_seconds() - w.message->arrival, dsn, why, customer_name);
    };

    for (const auto& key : order) {
      auto& [dest, items] = groups[key];
      if (stop || control.cancelled) {
        for (const auto& w : items) {
          for (const auto* rc : w.recipients) defer(w, *rc, "", "delivery stopped before this message");
        }
        continue;
      }
      if (!conn || conn->key != dest.key) {
        if (conn) {
          co_await conn->client->quit();
          conn.reset();
        }
        std::string error;
        boost::system::error_code dns_error;
        if (turned_around != nullptr && turned_around_used) {
          error = "the customer's ODMR connection was lost";
        } else {
          conn = co_await connect(dest, control, error, dns_error, turned_around);
          turned_around_used = turned_around != nullptr;
        }
        if (!conn && turned_around != nullptr) {
          // The customer's side hung up before its 220, or the connection is
          // gone: the mail stays queued as it was — no bounce, and no attempt
          // counted against the customer (FETCHMAIL.md, §d3).
          out.left_mail = true;
          out.error = error;
          stop = true;
          continue;
        }
        if (!conn) {
          // Permanent routing errors bounce (RFC 5321 §5.1, RFC 7505);
          // everything else waits for the next attempt.
          const std::string status = permanent_status(dns_error);
          for (const auto& w : items) {
            for (const auto* rc : w.recipients) {
              if (!status.empty()) fail(w, *rc, status, "", error);
              else defer(w, *rc, "", error);
            }
          }
          // One destination for the whole customer: no point going on.
          if (!dest.is_mx && status.empty()) stop = true;
          continue;
        }
      }

      std::vector<outgoing_message> outgoing;
      outgoing.reserve(items.size());
      for (const auto& w : items) {
        outgoing_message om;
        om.qid = w.message->qid;
        om.sender = w.message->sender;
        om.envid = w.message->envid;
        om.ret = w.message->ret;
        om.body_type = w.message->body_type;
        om.origin = w.message->origin;
        om.content = &contents[w.message->qid];
        for (const auto* rc : w.recipients) {
          om.recipients.push_back({rc->id, rc->address, rc->orcpt, rc->notify});
        }
        outgoing.push_back(std::move(om));
      }
      auto results = co_await conn->client->send_batch(outgoing);
      const std::string relay = conn->peer_name;
      const bool peer_dsn = conn->client->info().dsn;
      bool lost = false;
      // XCLIENT: a session that took one client's identity serves no other
      // (the customer's server authorizes only us, and re-checks): the rest
      // go on in new sessions. Never over ODMR (one connection).
      for (std::size_t sent = attempted(results); sent < outgoing.size() && turned_around == nullptr &&
                                                 conn->client->usable() && conn->client->identity_locked();) {
        co_await conn->client->quit();
        std::string error;
        boost::system::error_code dns_error;
        conn = co_await connect(dest, control, error, dns_error, nullptr);
        if (!conn) {
          lost = true;  // the rest stays queued ("connection lost")
          break;
        }
        auto more = co_await conn->client->send_batch(std::span(outgoing).subspan(sent));
        const std::size_t n = attempted(more);
        for (std::size_t k = 0; k < more.size(); ++k) results[sent + k] = std::move(more[k]);
        if (n == 0) break;
        sent += n;
      }
      for (std::size_t i = 0; i < items.size(); ++i) {
        const auto& w = items[i];
        const message_result& res = results[i];
        if (res.status == message_status::not_sent_8bit) {
          for (const auto* rc : w.recipients) {
            fail(w, *rc, "5.6.3", relay,
                 "message has 8-bit content and " + relay + " does not offer 8BITMIME");
          }
          continue;
        }
        if (res.status == message_status::too_big) {
          for (const auto* rc : w.recipients) {
            fail(w, *rc, "5.3.4", relay, "message is larger than " + relay + " accepts (SIZE)");
          }
          continue;
        }
        if (res.status == message_status::connection_lost) lost = true;
        for (const auto* rc : w.recipients) {
          const recipient_result* rr = nullptr;
          for (const auto& x : res.recipients) {
            if (x.id == rc->id) rr = &x;
          }
          if (rr == nullptr || rr->reply.code == 0) {
            defer(w, *rc, relay, "lost connection with " + relay + " while sending");
          } else if (rr->reply.code >= 200 && rr->reply.code < 300) {
            update(w, *rc, queue::recipient_fate::delivered, rr->reply.line());
            if (recipient_answer_) recipient_answer_(customer_id, rc->address, true);
            core::log_info("{}: to=<{}>, relay={}, delay={}, dsn={}, status=sent ({}), customer={}",
                           w.message->qid, rc->address, relay, now_seconds() - w.message->arrival,
                           status_of(rr->reply, '2', "2.0.0"), rr->reply.line(), customer_name);
            if (!peer_dsn && notify_has(rc->notify, "SUCCESS")) {
              // RFC 3461 §5.2.2: the next hop cannot report success; we say "relayed".
              queue::dsn_recipient d;
              d.final_recipient = rc->address;
              d.orcpt = rc->orcpt;
              d.notify = rc->notify;
              d.action = queue::dsn_action::relayed;
              d.status = "2.0.0";
              d.remote_mta = relay;
              d.diagnostic = rr->reply.line();
              relayed[w.message->qid].push_back(d);
            }
          } else if (rr->reply.code >= 500) {
            fail(w, *rc, status_of(rr->reply, '5', "5.0.0"), relay, rr->reply.line());
            if (recipient_answer_ && refuses_unknown_user(rr->reply.code, rr->reply.enhanced)) {
              recipient_answer_(customer_id, rc->address, false);
            }
          } else {
            defer(w, *rc, relay, rr->reply.line());
          }
        }
      }
      if (lost) {
        conn.reset();
        stop = true;
      }
    }

    // Notices and bookkeeping for the whole batch, in one transaction.
    std::vector<queue::store::attempt> batch_attempts;
    std::vector<std::uint64_t> sizes;
    for (const auto& m : *batch) {
      auto it = attempts.find(m.qid);
      if (it == attempts.end()) continue;
      auto& a = it->second;
      for (auto* list : {&failures, &relayed}) {
        auto f = list->find(m.qid);
        if (f == list->end()) continue;
        auto notice = make_notice(m, contents[m.qid], std::move(f->second));
        if (notice.customer_id != 0) a.notices.push_back(std::move(notice));
      }
      batch_attempts.push_back(std::move(a));
      sizes.push_back(m.size);
    }
    std::string error;
    if (!co_await record(batch_attempts, sizes, customer_id, &progress, error)) {
      out.left_mail = true;
      out.error = error;
      stop = true;
    }
  }
  if (turned_around != nullptr && !turned_around_used && !control.cancelled) {
    // ATRN said 250 but nothing matched: greet and leave (RFC 2645 §5.2.1).
    std::string error;
    boost::system::error_code dns_error;
    conn = co_await connect(destination{customer_id, "odmr"}, control, error, dns_error, turned_around);
  }
  if (conn) co_await conn->client->quit();
  if (control.cancelled) out.cancelled = true;
  if (lanes == 1) {
    core::log_info("customer {}: flush over {} done: {} delivered, {} bounced, {} deferred{}{}",
                   customer_name, r.describe(), progress.recipients_delivered,
                   progress.recipients_failed, progress.recipients_deferred,
                   out.error.empty() ? "" : ": ", out.error);
  } else {
    core::log_debug("customer {}: connection {}/{} of the flush over {} done{}{}", customer_name,
                    lane + 1, lanes, r.describe(), out.error.empty() ? "" : ": ", out.error);
  }
  co_return out;
}

asio::awaitable<void> delivery_agent::sweep() {
  const std::int64_t now = now_seconds();
  // Copied first: the directory's entries may be replaced while we wait on the store.
  struct sweep_target {
    std::int64_t id, lifetime, warning;
  };
  std::vector<sweep_target> targets;
  for (const customer_entry* e : customers_.all()) {
    if (e->queued_bytes == 0) continue;
    targets.push_back(
        {e->info.id, e->info.queue_lifetime ? e->info.queue_lifetime : settings_.queue_lifetime.count(),
         e->info.delay_warning ? e->info.delay_warning : settings_.delay_warning.count()});
  }
  for (const auto& target : targets) {
    const std::int64_t id = target.id;
    const std::int64_t lifetime = target.lifetime;
    std::int64_t delay_before = target.warning > 0 ? now - target.warning : 0;
    std::int64_t expire_before = now - lifetime;
    for (int round = 0; round < 100; ++round) {  // bounded: 100 × 100 messages a sweep
      auto due = co_await store_.run([&](queue::store& s) {
        return s.list_due_notices(id, delay_before, expire_before, 100);
      });
      if (!due || due->empty()) break;
      std::vector<queue::store::attempt> expired;
      std::vector<std::uint64_t> sizes;
      for (const auto& m : *due) {
        auto content = co_await store_.run([&](queue::store& s) { return s.read_content(m.qid); });
        const std::string body = content ? *content : std::string();
        std::vector<queue::dsn_recipient> list;
        if (m.arrival <= expire_before) {
          queue::store::attempt a;
          a.qid = m.qid;
          for (const auto& rc : m.recipients) {
            a.updates.push_back({rc.id, queue::recipient_fate::failed, "delivery time expired"});
            queue::dsn_recipient d;
            d.final_recipient = rc.address;
            d.orcpt = rc.orcpt;
            d.notify = rc.notify;
            d.action = queue::dsn_action::failed;
            d.status = "5.4.7";
            d.diagnostic = rc.last_reply;
            d.last_attempt = rc.attempts > 0 ? now : 0;
            list.push_back(d);
            core::log_info("{}: to=<{}>, relay=none, delay={}, dsn=5.4.7, status=expired, returned to sender ({})",
                           m.qid, rc.address, now - m.arrival,
                           rc.last_reply.empty() ? "never delivered" : rc.last_reply);
          }
          auto notice = make_notice(m, body, std::move(list));
          if (notice.customer_id != 0) a.notices.push_back(std::move(notice));
          expired.push_back(std::move(a));
          sizes.push_back(m.size);
        } else {
          std::vector<std::int64_t> ids;
          for (const auto& rc : m.recipients) {
            if (rc.delay_notified) continue;
            ids.push_back(rc.id);
            queue::dsn_recipient d;
            d.final_recipient = rc.address;
            d.orcpt = rc.orcpt;
            d.notify = rc.notify;
            d.action = queue::dsn_action::delayed;
            d.status = rc.last_reply.size() > 4 && rc.last_reply[0] == '4' ? "4.4.1" : "4.0.0";
            d.diagnostic = rc.last_reply;
            d.will_retry_until = m.arrival + lifetime;
            list.push_back(d);
          }
          if (ids.empty()) continue;
          std::vector<queue::new_message> notices;
          auto notice = make_notice(m, body, std::move(list));
          if (notice.customer_id != 0) notices.push_back(std::move(notice));
          auto done = co_await store_.run([&](queue::store& s) {
            return s.record_delay_notice(m.qid, ids, notices);
          });
          if (done) {
            for (const auto& qid : *done) {
              core::log_info("{}: sender delay notification: {}", m.qid, qid);
            }
            count_dsn_queued("delay", done->size());
            for (const auto& n : notices) {
              customers_.add_queued_bytes(notices_customer_id_, static_cast<std::int64_t>(n.content.size()));
            }
            if (!notices.empty() && notice_queued_) notice_queued_(notices_customer_id_);
          }
        }
      }
      std::string error;
      if (!co_await record(expired, sizes, id, nullptr, error)) break;
      if (due->size() < 100) break;
    }
  }
}

}  // namespace flushgate::gateway
