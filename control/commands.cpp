// commands.cpp — see commands.hpp. The table at the bottom lists every
// command; each handler validates its arguments, acts through the store
// thread, then updates the in-memory customer directory on the network thread.
#include "control/commands.hpp"

#include "control/link_events.hpp"
#include "control/status_report.hpp"

#include "core/event_log.hpp"
#include "core/ip_network.hpp"
#include "core/log.hpp"
#include "core/units.hpp"
#include "gateway/inbound/address.hpp"
#include "gateway/dns/dns_doctor.hpp"
#include "gateway/flush/client_forwarding.hpp"
#include "gateway/inbound/sasl.hpp"
#include "queue/store_checks.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Stringifier.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <ctime>
#include <regex>
#include <sstream>

namespace flushgate::control {

namespace asio = boost::asio;
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

// ------------------------------------------------------------ validation

bool valid_customer_name(const std::string& name) {
  static const std::regex pattern("[a-z0-9][a-z0-9._-]{0,62}");
  return std::regex_match(name, pattern);
}

bool valid_host(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec || gateway::is_valid_domain(host);
}

// "mx", "host", "host:port", "[v6]:port", or "" (no primary route).
bool valid_route(const std::string& route) {
  if (route.empty() || route == "mx") return true;
  if (auto hp = core::parse_host_port(route)) return valid_host(hp->first);
  return valid_host(route);
}

bool valid_cidr(const std::string& text) { return core::parse_ip_network(text).has_value(); }

std::string lower(std::string s);

// A recipient list entry: a plain address (lower-cased here) or "*@domain"
// for every address of the domain. False, with the reason, otherwise.
bool normalize_recipient(std::string& address, std::string& error) {
  if (address.starts_with("*@")) {
    std::string domain = lower(address.substr(2));
    if (!gateway::is_valid_domain(domain)) {
      error = "recipient \"" + address + "\": *@ needs a domain after it";
      return false;
    }
    address = "*@" + domain;
    return true;
  }
  gateway::mailbox mb;
  if (gateway::parse_mailbox(address, mb) != gateway::address_error::ok) {
    error = "recipient \"" + address + "\" is not a plain address like user@domain (or *@domain)";
    return false;
  }
  address = lower(mb.local) + "@" + mb.domain;
  return true;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool domain_covered(const queue::customer& c, const std::string& domain) {
  for (const auto& d : c.domains) {
    if (domain == d) return true;
    if (c.subdomains && domain.size() > d.size() + 1 &&
        domain.compare(domain.size() - d.size(), d.size(), d) == 0 &&
        domain[domain.size() - d.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

template <typename T>
bool read_number(const Object::Ptr& args, const char* key, T& out, std::string& error) {
  if (!args->has(key)) return true;
  try {
    auto v = args->get(key);
    if (v.isString()) {
      // Sizes may be written with a unit ("10M"), as in the config file.
      auto size = core::parse_size(v.convert<std::string>());
      if (!size) throw std::invalid_argument("bad");
      out = static_cast<T>(*size);
    } else {
      auto n = v.convert<std::int64_t>();
      if (n < 0) throw std::invalid_argument("negative");
      out = static_cast<T>(n);
    }
    return true;
  } catch (const std::exception&) {
    error = std::string(key) + ": not a non-negative number";
    return false;
  }
}

// Applies the fields present in `args` to `c` and checks the result.
bool apply_customer_args(const Object::Ptr& args, queue::customer& c, std::string& error) {
  if (args->has("domains")) {
    c.domains.clear();
    auto list = args->getArray("domains");
    if (!list) {
      error = "domains: expected a list";
      return false;
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
      std::string d = lower(list->getElement<std::string>(static_cast<unsigned>(i)));
      if (!gateway::is_valid_domain(d)) {
        error = "domain \"" + d + "\" is not a valid domain name (letters, digits, hyphens, at least one dot)";
        return false;
      }
      if (std::find(c.domains.begin(), c.domains.end(), d) == c.domains.end()) {
        c.domains.push_back(d);
      }
    }
  }
  if (args->has("subdomains")) c.subdomains = args->getValue<bool>("subdomains");
  if (args->has("mode")) {
    auto mode = queue::parse_delivery_mode(args->getValue<std::string>("mode"));
    if (!mode) {
      error = "mode: must be relay, hold or odmr";
      return false;
    }
    c.mode = *mode;
  }
  if (args->has("state")) {
    auto state = queue::parse_customer_state(args->getValue<std::string>("state"));
    if (!state) {
      error = "state: must be enabled, disabled or suspended";
      return false;
    }
    c.state = *state;
  }
  if (args->has("route")) {
    std::string route = lower(args->getValue<std::string>("route"));
    if (!valid_route(route)) {
      error = "route \"" + route + "\": use HOST, HOST:PORT or mx";
      return false;
    }
    c.route = route;
  }
  std::int64_t link_port = c.link_port;
  if (!read_number(args, "link_port", link_port, error)) return false;
  if (link_port < 1 || link_port > 65535) {
    error = "link_port: must be 1-65535";
    return false;
  }
  c.link_port = static_cast<std::uint16_t>(link_port);
  if (args->has("tls")) {
    std::string tls = args->getValue<std::string>("tls");
    if (tls != "" && tls != "none" && tls != "may" && tls != "encrypt" && tls != "verify") {
      error = "tls: must be none, may, encrypt or verify (\"\" = the smtp_tls default)";
      return false;
    }
    c.tls = tls;
  }
  for (auto [key, field] : {std::pair{"queue_lifetime", &c.queue_lifetime},
                            std::pair{"delay_warning", &c.delay_warning}}) {
    if (!args->has(key)) continue;
    auto d = core::parse_duration(args->get(key).convert<std::string>());
    if (!d) {
      error = std::string(key) + ": a duration like 5d, 4h or 90m";
      return false;
    }
    *field = d->count();
  }
  if (args->has("ipv6_server")) {
    std::string server = args->getValue<std::string>("ipv6_server");
    if (server == "framed") server.clear();  // the default, kept as ""
    if (!gateway::valid_ipv6_server(server)) {
      error = "ipv6_server: framed, none, or an offset inside the line's prefix like ::25";
      return false;
    }
    c.ipv6_server = server;
  }
  if (args->has("recipient_check")) {
    std::string policy = args->getValue<std::string>("recipient_check");
    if (policy != "any" && policy != "list" && policy != "learn" && policy != "verify") {
      error = "recipient_check: any, list, learn or verify";
      return false;
    }
    c.recipient_check = policy;
  }
  if (args->has("unknown_recipients")) {
    std::string answer = args->getValue<std::string>("unknown_recipients");
    if (answer == "tempfail") answer.clear();  // the default, kept as ""
    if (!answer.empty() && answer != "accept" && answer != "reject") {
      error = "unknown_recipients: tempfail, accept or reject";
      return false;
    }
    c.unknown_recipients = answer;
  }
  if (args->has("forward_client")) {
    std::string how = args->getValue<std::string>("forward_client");
    if (!gateway::parse_client_forwarding(how)) {
      error = "forward_client: xforward, xclient or none";
      return false;
    }
    if (how == "xforward") how.clear();  // the default, kept as ""
    c.forward_client = how;
  }
  if (args->has("prefer_family")) {
    std::string family = args->getValue<std::string>("prefer_family");
    if (family == "ipv6") family.clear();  // the default, kept as ""
    if (!family.empty() && family != "ipv4") {
      error = "prefer_family: ipv6 or ipv4";
      return false;
    }
    c.prefer_family = family;
  }
  if (!read_number(args, "max_size", c.max_size, error)) return false;
  if (!read_number(args, "quota", c.quota, error)) return false;
  if (args->has("links")) {
    c.link_users.clear();
    auto list = args->getArray("links");
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      auto item = list->getObject(static_cast<unsigned>(i));
      queue::link_user u;
      u.user = item->optValue<std::string>("user", "");
      auto kind = queue::parse_link_kind(item->optValue<std::string>("kind", "dsl"));
      u.allowed_net = item->optValue<std::string>("net", "");
      if (u.user.empty() || u.user.size() > 253) {
        error = "link user: must be 1-253 characters";
        return false;
      }
      if (!kind) {
        error = "link kind: must be dsl or dialup";
        return false;
      }
      u.kind = *kind;
      // One range or several, comma-separated: IPv4 and IPv6 alike.
      std::string nets;
      for (const auto& net : queue::detail::split_list(u.allowed_net)) {
        if (!valid_cidr(net)) {
          error = "link net \"" + net + "\": not an address range like 192.0.2.0/24 or 2001:db8::/32";
          return false;
        }
        nets += (nets.empty() ? "" : ",") + core::parse_ip_network(net)->to_string();
      }
      u.allowed_net = nets;
      c.link_users.push_back(u);
    }
  }
  if (args->has("etrn_networks")) {
    c.etrn_networks.clear();
    auto list = args->getArray("etrn_networks");
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      std::string net = list->getElement<std::string>(static_cast<unsigned>(i));
      if (!valid_cidr(net)) {
        error = "ETRN network \"" + net + "\": not an address range like 192.0.2.0/24";
        return false;
      }
      c.etrn_networks.push_back(net);
    }
  }
  if (args->has("recipients")) {
    if (args->get("recipients").isEmpty()) {
      c.recipients.reset();
    } else {
      auto list = args->getArray("recipients");
      std::vector<std::string> out;
      for (std::size_t i = 0; list && i < list->size(); ++i) {
        std::string address = list->getElement<std::string>(static_cast<unsigned>(i));
        if (!normalize_recipient(address, error)) return false;
        out.push_back(std::move(address));
      }
      c.recipients = std::move(out);
    }
  }
  if (c.domains.empty()) {
    error = "a customer needs at least one domain";
    return false;
  }
  if (c.recipients) {
    for (const auto& r : *c.recipients) {
      if (!domain_covered(c, r.substr(r.find('@') + 1))) {
        error = "recipient " + r + " is not in one of the customer's domains";
        return false;
      }
    }
  }
  return true;
}

// ------------------------------------------------------------ JSON views

Object::Ptr to_json(const queue::customer& c, const queue::queue_stats* stats) {
  Object::Ptr o = new Object;
  o->set("name", c.name);
  Array::Ptr domains = new Array;
  for (const auto& d : c.domains) domains->add(d);
  o->set("domains", domains);
  o->set("subdomains", c.subdomains);
  o->set("state", std::string(queue::to_string(c.state)));
  o->set("mode", std::string(queue::to_string(c.mode)));
  o->set("route", c.route);
  o->set("link_port", static_cast<int>(c.link_port));
  o->set("ipv6_server", c.ipv6_server.empty() ? std::string("framed") : c.ipv6_server);
  o->set("prefer_family", c.prefer_family.empty() ? std::string("ipv6") : c.prefer_family);
  o->set("recipient_check", std::string(gateway::recipient_policy(c)));
  o->set("unknown_recipients", c.unknown_recipients.empty() ? std::string("tempfail") : c.unknown_recipients);
  o->set("forward_client", c.forward_client.empty() ? std::string("xforward") : c.forward_client);
  Array::Ptr links = new Array;
  for (const auto& u : c.link_users) {
    Object::Ptr l = new Object;
    l->set("user", u.user);
    l->set("kind", std::string(queue::to_string(u.kind)));
    l->set("net", u.allowed_net);
    links->add(l);
  }
  o->set("links", links);
  if (c.recipients) {
    Array::Ptr r = new Array;
    for (const auto& a : *c.recipients) r->add(a);
    o->set("recipients", r);
  } else {
    o->set("recipients", Poco::Dynamic::Var());
  }
  o->set("max_size", c.max_size);
  o->set("quota", c.quota);
  o->set("tls", c.tls);
  o->set("login", !c.credential.empty());
  Array::Ptr etrn = new Array;
  for (const auto& n : c.etrn_networks) etrn->add(n);
  o->set("etrn_networks", etrn);
  o->set("queue_lifetime", c.queue_lifetime);
  o->set("delay_warning", c.delay_warning);
  Object::Ptr q = new Object;
  q->set("messages", stats ? stats->messages : 0);
  q->set("bytes", stats ? stats->bytes : 0);
  q->set("oldest_arrival", stats ? stats->oldest_arrival : 0);
  o->set("queue", q);
  return o;
}

Object::Ptr to_json(const queue::message_info& m, bool with_recipients) {
  Object::Ptr o = new Object;
  o->set("qid", m.qid);
  o->set("customer", m.customer);
  o->set("sender", m.sender);
  o->set("arrival", m.arrival);
  o->set("size", m.size);
  o->set("held", m.held);
  o->set("recipient_count", static_cast<std::uint64_t>(m.recipients.size()));
  if (with_recipients) {
    o->set("envid", m.envid);
    o->set("ret", m.ret);
    o->set("body_type", m.body_type);
    o->set("client", m.client);
    // What XFORWARD tells the customer's server ("" / 0: unknown, not sent).
    Object::Ptr origin = new Object;
    origin->set("address", m.origin.address);
    origin->set("name", m.origin.name);
    origin->set("helo", m.origin.helo);
    origin->set("proto", m.origin.proto);
    origin->set("port", static_cast<int>(m.origin.port));
    o->set("client_origin", origin);
    Array::Ptr rs = new Array;
    for (const auto& r : m.recipients) {
      Object::Ptr ro = new Object;
      ro->set("address", r.address);
      ro->set("orcpt", r.orcpt);
      ro->set("notify", r.notify);
      ro->set("attempts", r.attempts);
      ro->set("next_attempt", r.next_attempt);
      ro->set("last_reply", r.last_reply);
      rs->add(ro);
    }
    o->set("recipients", rs);
  }
  return o;
}

Object::Ptr to_json(const queue::queue_stats& s) {
  Object::Ptr o = new Object;
  o->set("customer", s.customer);
  o->set("messages", s.messages);
  o->set("bytes", s.bytes);
  o->set("oldest_arrival", s.oldest_arrival);
  return o;
}

std::string describe(const boost::system::error_code& ec, const std::string& what) {
  if (ec == queue::errc::not_found) return "no " + what;
  return what + ": " + ec.message();
}

// A store error as a command failure: "no such thing" or "try again".
command_result store_failure(const boost::system::error_code& ec, const std::string& what) {
  return command_result::failure(describe(ec, what), ec == queue::errc::not_found
                                                         ? command_status::not_found
                                                         : command_status::unavailable);
}

std::vector<std::string> string_list(const Object::Ptr& args, const char* key) {
  std::vector<std::string> out;
  if (auto list = args->getArray(key)) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      out.push_back(list->getElement<std::string>(static_cast<unsigned>(i)));
    }
  }
  return out;
}

using handler = asio::awaitable<command_result> (*)(daemon_context&, const Object::Ptr&);

// ------------------------------------------------------------ customers

// A cluster's other nodes read the customer again (or drop it) from the store.
void announce_customer(daemon_context& ctx, std::int64_t id, const std::string& name) {
  if (ctx.announce) ctx.announce({.what = queue::cluster_signal::kind::customer, .customer_id = id, .text = name});
}

asio::awaitable<command_result> customer_add(daemon_context& ctx, const Object::Ptr& args) {
  queue::customer c;
  c.name = args->optValue<std::string>("name", "");
  if (!valid_customer_name(c.name)) {
    co_return command_result::failure(
        "customer name \"" + c.name +
        "\": use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit");
  }
  if (c.name == queue::notices_customer) {
    co_return command_result::failure("customer name " + c.name +
                                      " is reserved for the gateway's own delivery status notifications");
  }
  std::string error;
  if (!apply_customer_args(args, c, error)) co_return command_result::failure(error);
  if (ctx.customers.find_by_name(c.name) != nullptr) {
    co_return command_result::failure("customer " + c.name + " already exists", command_status::conflict);
  }
  for (const auto& d : c.domains) {
    if (const auto* other = ctx.customers.find_by_domain(d); other && other->info.domains.end() !=
        std::find(other->info.domains.begin(), other->info.domains.end(), d)) {
      co_return command_result::failure("domain " + d + " already belongs to customer " +
                                            other->info.name,
                                        command_status::conflict);
    }
  }
  auto ec = co_await ctx.store.run([&c](queue::store& s) { return s.add_customer(c); });
  if (ec == queue::errc::name_taken) co_return command_result::failure("customer " + c.name + " already exists", command_status::conflict);
  if (ec == queue::errc::domain_taken) co_return command_result::failure("a domain of " + c.name + " already belongs to another customer", command_status::conflict);
  if (ec) co_return store_failure(ec, "customer " + c.name);
  ctx.customers.upsert(c);
  announce_customer(ctx, c.id, c.name);
  core::log_info("control: customer {} added (domains {}, mode {}, route \"{}\")", c.name,
                 c.domains.front(), queue::to_string(c.mode), c.route);
  core::recent_events().record("customer_changed", c.name,
                               fmt::format("customer {} added ({}, {})", c.name, c.domains.front(),
                                           queue::to_string(c.mode)));
  co_return command_result::success(to_json(c, nullptr));
}

asio::awaitable<command_result> customer_set(daemon_context& ctx, const Object::Ptr& args) {
  std::string name = args->optValue<std::string>("name", "");
  const auto* entry = ctx.customers.find_by_name(name);
  if (entry == nullptr) co_return command_result::failure("no customer " + name, command_status::not_found);
  if (name == queue::notices_customer) {
    co_return command_result::failure(name + " is the gateway's own notices queue; it cannot be changed");
  }
  queue::customer c = entry->info;
  std::string error;
  if (!apply_customer_args(args, c, error)) co_return command_result::failure(error);
  for (const auto& d : c.domains) {
    const auto* other = ctx.customers.find_by_domain(d);
    if (other && other->info.id != c.id &&
        std::find(other->info.domains.begin(), other->info.domains.end(), d) != other->info.domains.end()) {
      co_return command_result::failure("domain " + d + " already belongs to customer " + other->info.name,
                                        command_status::conflict);
    }
  }
  auto ec = co_await ctx.store.run([&c](queue::store& s) { return s.update_customer(c); });
  if (ec == queue::errc::domain_taken) co_return command_result::failure("a domain of " + c.name + " already belongs to another customer", command_status::conflict);
  if (ec) co_return store_failure(ec, "customer " + name);
  ctx.customers.upsert(c);
  announce_customer(ctx, c.id, c.name);
  core::log_info("control: customer {} changed (state {}, mode {})", c.name,
                 queue::to_string(c.state), queue::to_string(c.mode));
  core::recent_events().record("customer_changed", c.name,
                               fmt::format("customer {} changed: {}, {}", c.name, queue::to_string(c.state),
                                           queue::to_string(c.mode)));
  // A new route, mode or link port applies to the mail already queued.
  ctx.scheduler.route_changed(c.id, "customer changed");
  co_return command_result::success(to_json(c, nullptr));
}

asio::awaitable<command_result> customer_passwd(daemon_context& ctx, const Object::Ptr& args) {
  std::string name = args->optValue<std::string>("name", "");
  std::string password = args->optValue<std::string>("password", "");
  const auto* entry = ctx.customers.find_by_name(name);
  if (entry == nullptr || name == queue::notices_customer) {
    co_return command_result::failure("no customer " + name, command_status::not_found);
  }
  if (password.size() < 8 || password.size() > 255) {
    co_return command_result::failure("the password must be 8 to 255 characters");
  }
  queue::customer c = entry->info;
  // Only the HMAC-MD5 key schedule is kept (gateway/inbound/sasl.hpp), never the password.
  c.credential = password == "-" ? std::string() : gateway::make_credential(password);
  auto ec = co_await ctx.store.run([&c](queue::store& s) { return s.update_customer(c); });
  if (ec) co_return store_failure(ec, "customer " + name);
  ctx.customers.upsert(c);
  announce_customer(ctx, c.id, c.name);
  core::log_info("control: login of customer {} changed", name);
  core::recent_events().record("customer_changed", name, "customer " + name + ": login changed");
  co_return command_result::success(Poco::Dynamic::Var(name));
}

asio::awaitable<command_result> customer_show(daemon_context& ctx, const Object::Ptr& args) {
  std::string name = args->optValue<std::string>("name", "");
  auto found = co_await ctx.store.run([&](queue::store& s) {
    auto c = s.find_customer(name);
    boost::system::result<std::pair<queue::customer, queue::queue_stats>> out =
        boost::system::error_code(queue::errc::not_found);
    if (!c) {
      out = c.error();
      return out;
    }
    auto stats = s.customer_stats(c->id);
    if (!stats) {
      out = stats.error();
      return out;
    }
    out = std::make_pair(*c, *stats);
    return out;
  });
  if (!found) co_return store_failure(found.error(), "customer " + name);
  auto out = to_json(found->first, &found->second);
  out->set("current_route", ctx.router.route_for(found->first).describe());
  co_return command_result::success(out);
}

// `customer recipients NAME ...`: the explicit list, managed live, and what
// the customer's server told about (learn/verify). action: "show" (default),
// "add", "remove", "replace" (the whole list; the API's PUT), "forget"
// (known addresses: one, or all with no address).
asio::awaitable<command_result> customer_recipients(daemon_context& ctx, const Object::Ptr& args) {
  const std::string name = args->optValue<std::string>("name", "");
  const std::string action = args->optValue<std::string>("action", "show");
  const auto* entry = ctx.customers.find_by_name(name);
  if (entry == nullptr) co_return command_result::failure("no customer " + name, command_status::not_found);
  const std::int64_t id = entry->info.id;
  std::vector<std::string> addresses;
  if (auto list = args->getArray("addresses")) {
    std::string error;
    for (std::size_t i = 0; i < list->size(); ++i) {
      std::string a = list->getElement<std::string>(static_cast<unsigned>(i));
      if (action == "forget") {
        addresses.push_back(lower(a));
        continue;
      }
      if (!normalize_recipient(a, error)) co_return command_result::failure(error);
      if (!domain_covered(entry->info, a.substr(a.find('@') + 1))) {  // "*@d" and "u@d" alike
        co_return command_result::failure("recipient " + a + " is not in one of the customer's domains");
      }
      addresses.push_back(std::move(a));
    }
  }
  Object::Ptr o = new Object;
  o->set("customer", name);
  if (action == "add" || action == "remove") {
    const bool add = action == "add";
    auto changed = co_await ctx.store.run([&](queue::store& s) {
      return add ? s.add_allowed_recipients(id, addresses) : s.remove_allowed_recipients(id, addresses);
    });
    if (!changed) co_return store_failure(changed.error(), "recipients of " + name);
    if (add) ctx.customers.add_recipients(id, addresses);
    else ctx.customers.remove_recipients(id, addresses);
    core::log_info("control: customer {}: {} {} of {} recipient list entries", name, add ? "added" : "removed",
                   *changed, addresses.size());
    announce_customer(ctx, id, name);
    o->set("changed", *changed);
  } else if (action == "replace") {
    auto c = entry->info;
    c.recipients = addresses;
    auto ec = co_await ctx.store.run([&c](queue::store& s) { return s.update_customer(c); });
    if (ec) co_return store_failure(ec, "recipients of " + name);
    ctx.customers.upsert(c);
    core::log_info("control: customer {}: recipient list replaced ({} entries)", name, addresses.size());
    announce_customer(ctx, id, name);
    o->set("changed", static_cast<std::uint64_t>(addresses.size()));
  } else if (action == "forget") {
    const std::string one = addresses.empty() ? std::string() : addresses.front();
    auto gone = co_await ctx.store.run([&](queue::store& s) { return s.forget_known_recipients(id, one); });
    if (!gone) co_return store_failure(gone.error(), "known recipients of " + name);
    if (ctx.known != nullptr) ctx.known->forget(id, one);
    announce_customer(ctx, id, name);  // other nodes read its known recipients again
    o->set("changed", *gone);
  } else if (action != "show") {
    co_return command_result::failure("recipients: show, add, remove, replace or forget");
  }
  // What answers RCPT now.
  entry = ctx.customers.find_by_name(name);
  if (entry == nullptr) co_return command_result::failure("no customer " + name, command_status::not_found);
  o->set("recipient_check", std::string(gateway::recipient_policy(entry->info)));
  o->set("unknown_recipients",
         entry->info.unknown_recipients.empty() ? std::string("tempfail") : entry->info.unknown_recipients);
  if (entry->info.recipients) {
    std::vector<std::string> sorted = *entry->info.recipients;
    std::sort(sorted.begin(), sorted.end());
    Array::Ptr list = new Array;
    for (const auto& a : sorted) list->add(a);
    o->set("list", list);
  } else {
    o->set("list", Poco::Dynamic::Var());
  }
  Array::Ptr known = new Array;
  std::uint64_t good = 0, bad = 0;
  if (ctx.known != nullptr) {
    for (const auto& k : ctx.known->list(id)) {
      Object::Ptr ko = new Object;
      ko->set("address", k.address);
      ko->set("state", std::string(k.good ? "good" : "bad"));
      ko->set("source", k.source);
      ko->set("first_seen", k.first_seen);
      ko->set("last_seen", k.last_seen);
      known->add(ko);
      ++(k.good ? good : bad);
    }
  }
  o->set("known", known);
  o->set("known_good", good);
  o->set("known_bad", bad);
  co_return command_result::success(o);
}

asio::awaitable<command_result> customer_list(daemon_context& ctx, const Object::Ptr&) {
  auto listing = co_await ctx.store.run([](queue::store& s) {
    auto customers = s.list_customers();
    auto summary = s.queue_summary();
    boost::system::result<std::pair<std::vector<queue::customer>, std::vector<queue::queue_stats>>> out =
        boost::system::error_code(queue::errc::io_error);
    if (!customers) {
      out = customers.error();
    } else if (!summary) {
      out = summary.error();
    } else {
      out = std::make_pair(std::move(*customers), std::move(*summary));
    }
    return out;
  });
  if (!listing) co_return store_failure(listing.error(), "customer list");
  Array::Ptr out = new Array;
  for (const auto& c : listing->first) {
    const queue::queue_stats* stats = nullptr;
    for (const auto& s : listing->second) {
      if (s.customer_id == c.id) stats = &s;
    }
    out->add(to_json(c, stats));
  }
  co_return command_result::success(out);
}

asio::awaitable<command_result> customer_remove(daemon_context& ctx, const Object::Ptr& args) {
  std::string name = args->optValue<std::string>("name", "");
  bool force = args->optValue<bool>("force", false);
  const auto* entry = ctx.customers.find_by_name(name);
  if (entry == nullptr) co_return command_result::failure("no customer " + name, command_status::not_found);
  if (name == queue::notices_customer) {
    co_return command_result::failure(name + " is the gateway's own notices queue; it cannot be removed");
  }
  std::int64_t id = entry->info.id;
  auto ec = co_await ctx.store.run([&](queue::store& s) { return s.remove_customer(name, force); });
  if (ec == queue::errc::not_empty) {
    co_return command_result::failure("customer " + name +
                                      " still has queued mail; deliver it first, or use --force to delete it",
                                      command_status::conflict);
  }
  if (ec) co_return store_failure(ec, "customer " + name);
  ctx.customers.remove(id);
  if (ctx.known != nullptr) ctx.known->forget(id, "");  // the store dropped them with the customer
  announce_customer(ctx, id, name);
  core::log_info("control: customer {} removed{}", name, force ? " (queued mail deleted)" : "");
  core::recent_events().record("customer_changed", name,
                               "customer " + name + " removed" + (force ? " with its queued mail" : ""));
  co_return command_result::success(Poco::Dynamic::Var(name));
}

// ------------------------------------------------------------ queue

asio::awaitable<command_result> queue_list(daemon_context& ctx, const Object::Ptr& args) {
  std::int64_t customer_id = 0;
  std::string name = args->optValue<std::string>("customer", "");
  if (!name.empty()) {
    const auto* entry = ctx.customers.find_by_name(name);
    if (entry == nullptr) co_return command_result::failure("no customer " + name, command_status::not_found);
    customer_id = entry->info.id;
  }
  std::size_t limit = 1000;
  std::string error;
  if (!read_number(args, "limit", limit, error)) co_return command_result::failure(error);
  // The page, and how many are queued in all, so that a cut list says so.
  std::uint64_t total = 0;
  auto list = co_await ctx.store.run([&](queue::store& s) -> boost::system::result<std::vector<queue::message_info>> {
    auto page = s.list_messages(customer_id, limit);
    if (!page) return page;
    if (customer_id != 0) {
      auto stats = s.customer_stats(customer_id);
      if (!stats) return stats.error();
      total = stats->messages;
    } else {
      auto summary = s.queue_summary();
      if (!summary) return summary.error();
      for (const auto& q : *summary) total += q.messages;
    }
    return page;
  });
  if (!list) co_return store_failure(list.error(), "queue list");
  Array::Ptr rows = new Array;
  for (const auto& m : *list) rows->add(to_json(m, false));
  Object::Ptr out = new Object;
  out->set("messages", rows);
  out->set("shown", static_cast<std::uint64_t>(list->size()));
  out->set("total", std::max<std::uint64_t>(total, list->size()));
  out->set("limit", static_cast<std::uint64_t>(limit));
  co_return command_result::success(out);
}

asio::awaitable<command_result> queue_show(daemon_context& ctx, const Object::Ptr& args) {
  std::string qid = args->optValue<std::string>("qid", "");
  auto m = co_await ctx.store.run([&](queue::store& s) { return s.find_message(qid); });
  if (!m) co_return store_failure(m.error(), "message " + qid);
  co_return command_result::success(to_json(*m, true));
}

// hold, release, delete: the same walk over a list of queue ids.
enum class queue_action { hold, release, remove };

asio::awaitable<command_result> act_on_messages(daemon_context& ctx, const Object::Ptr& args,
                                                queue_action action) {
  auto qids = string_list(args, "qids");
  if (qids.empty()) co_return command_result::failure("no queue ids given");
  struct outcome {
    std::string qid;
    boost::system::error_code ec;
    std::int64_t customer_id = 0;
    std::uint64_t size = 0;
  };
  auto outcomes = co_await ctx.store.run([&](queue::store& s) {
    std::vector<outcome> out;
    for (const auto& qid : qids) {
      outcome o{qid, {}, 0, 0};
      auto m = s.find_message(qid);
      if (!m) {
        o.ec = m.error();
      } else {
        o.customer_id = m->customer_id;
        o.size = m->size;
        switch (action) {
          case queue_action::hold: o.ec = s.set_held(qid, true); break;
          case queue_action::release: o.ec = s.set_held(qid, false); break;
          case queue_action::remove: o.ec = s.delete_message(qid); break;
        }
      }
      out.push_back(o);
    }
    return out;
  });
  std::string failed;
  command_status why = command_status::not_found;
  Array::Ptr done = new Array;
  for (const auto& o : outcomes) {
    if (o.ec) {
      failed += (failed.empty() ? "" : "; ") + describe(o.ec, "message " + o.qid);
      if (o.ec != queue::errc::not_found) why = command_status::unavailable;
      continue;
    }
    done->add(o.qid);
    if (action == queue_action::remove) {
      ctx.customers.add_queued_bytes(o.customer_id, -static_cast<std::int64_t>(o.size));
      core::log_info("{}: removed by the operator", o.qid);
    } else {
      core::log_info("{}: {} by the operator", o.qid,
                     action == queue_action::hold ? "held" : "released");
      if (action == queue_action::release) ctx.scheduler.mail_queued(o.customer_id);
    }
  }
  if (!failed.empty()) co_return command_result::failure(failed, why);
  co_return command_result::success(done);
}

asio::awaitable<command_result> queue_hold(daemon_context& ctx, const Object::Ptr& args) {
  return act_on_messages(ctx, args, queue_action::hold);
}
asio::awaitable<command_result> queue_release(daemon_context& ctx, const Object::Ptr& args) {
  return act_on_messages(ctx, args, queue_action::release);
}
asio::awaitable<command_result> queue_delete(daemon_context& ctx, const Object::Ptr& args) {
  return act_on_messages(ctx, args, queue_action::remove);
}

asio::awaitable<command_result> queue_summary(daemon_context& ctx, const Object::Ptr& args) {
  if (std::string name = args->optValue<std::string>("customer", ""); !name.empty()) {
    // One customer: its row of the per-customer totals, not the whole queue.
    const auto* entry = ctx.customers.find_by_name(name);
    if (entry == nullptr) co_return command_result::failure("no customer " + name, command_status::not_found);
    const std::int64_t id = entry->info.id;
    auto one = co_await ctx.store.run([id](queue::store& s) { return s.customer_stats(id); });
    if (!one) co_return store_failure(one.error(), "customer " + name);
    one->customer = name;
    one->customer_id = id;
    Array::Ptr single = new Array;
    single->add(to_json(*one));
    co_return command_result::success(single);
  }
  auto summary = co_await ctx.store.run([](queue::store& s) { return s.queue_summary(); });
  if (!summary) co_return store_failure(summary.error(), "queue summary");
  Array::Ptr out = new Array;
  for (const auto& s : *summary) out->add(to_json(s));
  co_return command_result::success(out);
}

// ------------------------------------------------------------ links

asio::awaitable<command_result> link_change(daemon_context& ctx, const Object::Ptr& args,
                                            linkmon::link_event::kind kind) {
  linkmon::link_event e;
  e.k = kind;
  e.user = args->optValue<std::string>("user", "");
  e.session_id = args->optValue<std::string>("session", "");
  e.nas = args->optValue<std::string>("nas", "");
  e.source = args->optValue<std::string>("source", "script");
  if (e.user.empty()) co_return command_result::failure("a link user is needed");
  // Addresses: "address" (one) or "addresses" (at most one per family), sorted by family.
  std::vector<std::string> addresses;
  if (args->has("address")) addresses.push_back(args->getValue<std::string>("address"));
  if (auto list = args->getArray("addresses")) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      addresses.push_back(list->getElement<std::string>(static_cast<unsigned>(i)));
    }
  }
  for (const auto& a : addresses) {
    boost::system::error_code ec;
    const auto ip = asio::ip::make_address(a, ec);
    if (ec) co_return command_result::failure("\"" + a + "\" is not an IP address");
    std::string& slot = ip.is_v4() ? e.address : e.ipv6_address;
    if (!slot.empty()) co_return command_result::failure("one address per family: " + slot + " and " + a);
    slot = ip.to_string();
  }
  e.ipv6_prefix = args->optValue<std::string>("prefix", "");
  if (!e.ipv6_prefix.empty()) {
    const auto net = core::parse_ip_network(e.ipv6_prefix);
    if (!net || !net->address.is_v6() || e.ipv6_prefix.find('/') == std::string::npos) {
      co_return command_result::failure("--prefix \"" + e.ipv6_prefix +
                                        "\": not an IPv6 prefix like 2001:db8:0:5600::/56");
    }
    e.ipv6_prefix = net->to_string();
  }
  const std::string family = args->optValue<std::string>("family", "");
  if (family == "ipv4") e.ended = linkmon::link_event::family::ipv4;
  else if (family == "ipv6") e.ended = linkmon::link_event::family::ipv6;
  else if (!family.empty()) co_return command_result::failure("--family: ipv4 or ipv6");
  if (kind == linkmon::link_event::kind::up && !e.has_address()) {
    co_return command_result::failure("link up needs --ip ADDRESS or --prefix PREFIX");
  }
  auto r = co_await apply_link_event(ctx, e);
  if (!r.ok) {
    co_return command_result::failure(r.error, r.temporary ? command_status::unavailable
                                                           : command_status::bad_request);
  }
  Object::Ptr o = new Object;
  o->set("customer", r.customer);
  o->set("changed", r.changed);
  if (const auto* entry = ctx.customers.find_by_name(r.customer)) {
    o->set("route", ctx.router.route_for(entry->info).describe());
  }
  co_return command_result::success(o);
}

asio::awaitable<command_result> link_up(daemon_context& ctx, const Object::Ptr& args) {
  return link_change(ctx, args, linkmon::link_event::kind::up);
}
asio::awaitable<command_result> link_down(daemon_context& ctx, const Object::Ptr& args) {
  return link_change(ctx, args, linkmon::link_event::kind::down);
}

asio::awaitable<command_result> link_list(daemon_context& ctx, const Object::Ptr&) {
  Array::Ptr out = new Array;
  for (const auto& l : ctx.router.links()) {
    const auto* owner = ctx.customers.find_by_id(l.customer_id);
    out->add(link_json(l, owner != nullptr ? &owner->info : nullptr));
  }
  co_return command_result::success(out);
}

// ------------------------------------------------------------ flush

Object::Ptr to_json(const gateway::flush_progress& p) {
  Object::Ptr o = new Object;
  o->set("running", p.running);
  o->set("trigger", p.trigger);
  o->set("route", p.route);
  o->set("messages_done", p.messages_done);
  o->set("bytes_done", p.bytes_done);
  o->set("recipients_delivered", p.recipients_delivered);
  o->set("recipients_failed", p.recipients_failed);
  o->set("recipients_deferred", p.recipients_deferred);
  o->set("messages_at_start", p.messages_at_start);
  o->set("bytes_at_start", p.bytes_at_start);
  o->set("error", p.error);
  o->set("started", p.started);
  o->set("finished", p.finished);
  return o;
}

asio::awaitable<command_result> flush_status(daemon_context& ctx, const Object::Ptr& args) {
  std::string name = args->optValue<std::string>("name", "");
  const auto* entry = ctx.customers.find_by_name(name);
  if (entry == nullptr) co_return command_result::failure("no customer " + name, command_status::not_found);
  std::int64_t id = entry->info.id;
  auto stats = co_await ctx.store.run([id](queue::store& s) { return s.customer_stats(id); });
  if (!stats) co_return store_failure(stats.error(), "customer " + name);
  Object::Ptr o = new Object;
  o->set("customer", name);
  o->set("route", ctx.router.route_for(entry->info).describe());
  o->set("messages_left", stats->messages);
  o->set("bytes_left", stats->bytes);
  o->set("next_attempt_in", ctx.scheduler.next_attempt_in(id));
  const auto* p = ctx.scheduler.progress(id);
  o->set("flush", p ? to_json(*p) : to_json(gateway::flush_progress{}));
  co_return command_result::success(o);
}

asio::awaitable<command_result> flush(daemon_context& ctx, const Object::Ptr& args) {
  std::string name = args->optValue<std::string>("name", "");
  const auto* entry = ctx.customers.find_by_name(name);
  if (entry == nullptr) co_return command_result::failure("no customer " + name, command_status::not_found);
  switch (ctx.scheduler.request_flush(entry->info.id, "operator")) {
    case gateway::flush_refusal::none:
    case gateway::flush_refusal::already_running:
      break;
    case gateway::flush_refusal::unknown_customer:
      co_return command_result::failure("no customer " + name, command_status::not_found);
    case gateway::flush_refusal::no_route:
      co_return command_result::failure("customer " + name +
                                        " has no route now (no live link and no primary route): its mail stays held",
                                        command_status::conflict);
    case gateway::flush_refusal::odmr_only:
      co_return command_result::failure("customer " + name +
                                        " is an ODMR customer: its mail goes out only over its own ATRN session",
                                        command_status::conflict);
  }
  core::log_info("control: flush of customer {} requested", name);
  co_return co_await flush_status(ctx, args);
}

// ------------------------------------------------------------ status, events, config

asio::awaitable<command_result> status(daemon_context& ctx, const Object::Ptr&) {
  co_return co_await collect_status(ctx, static_cast<std::int64_t>(std::time(nullptr)));
}

asio::awaitable<command_result> events(daemon_context& ctx, const Object::Ptr& args) {
  std::int64_t limit = 50;
  std::string error;
  if (!read_number(args, "limit", limit, error)) co_return command_result::failure(error);
  const auto list = co_await read_recent_events(ctx, static_cast<std::size_t>(std::clamp<std::int64_t>(limit, 1, 1000)));
  co_return command_result::success(events_json(list));
}

asio::awaitable<command_result> cluster_status(daemon_context& ctx, const Object::Ptr&) {
  co_return co_await collect_cluster_status(ctx);
}

// The configuration the daemon runs with (after $-expansion), every
// parameter, and whether it differs from the default.
asio::awaitable<command_result> config_show(daemon_context& ctx, const Object::Ptr&) {
  if (ctx.config == nullptr) co_return command_result::failure("no configuration", command_status::unavailable);
  Array::Ptr out = new Array;
  for (const auto& p : core::parameter_table()) {
    Object::Ptr o = new Object;
    o->set("name", std::string(p.name));
    o->set("value", core::shown_value(*ctx.config, p));
    o->set("default", std::string(p.default_value));
    o->set("changed", !ctx.config->is_default(p.name));
    out->add(o);
  }
  co_return command_result::success(out);
}

// The DNS doctor: the domain's MX set-up as senders see it, checked
// against what this gateway knows of the domain (gateway/dns/dns_doctor.hpp).
asio::awaitable<command_result> doctor(daemon_context& ctx, const Object::Ptr& args) {
  std::string domain = lower(args->optValue<std::string>("domain", ""));
  while (!domain.empty() && domain.back() == '.') domain.pop_back();
  if (domain.empty()) co_return command_result::failure("a domain is needed");
  if (ctx.dns == nullptr) co_return command_result::failure("no resolver configured", command_status::unavailable);
  std::optional<gateway::doctor_customer> customer;
  if (const auto* e = ctx.customers.find_by_domain(domain)) customer = gateway::make_doctor_customer(e->info);
  auto executor = co_await asio::this_coro::executor;
  // Named first: GCC 12 mishandles by-value temporaries inside a co_await.
  auto diagnosis = gateway::diagnose_domain(executor, *ctx.dns, domain, customer);
  gateway::doctor_report report = co_await std::move(diagnosis);
  Object::Ptr o = new Object;
  o->set("domain", report.domain);
  o->set("customer", customer ? customer->name : std::string());
  Array::Ptr mx = new Array;
  for (const auto& line : report.mx_lines) mx->add(line);
  o->set("mx", mx);
  Array::Ptr findings = new Array;
  for (const auto& f : report.findings) {
    Object::Ptr fo = new Object;
    fo->set("level", std::string(gateway::to_string(f.level)));
    fo->set("code", f.code);
    fo->set("text", f.text);
    findings->add(fo);
  }
  o->set("findings", findings);
  o->set("worst", std::string(gateway::to_string(gateway::worst_level(report))));
  o->set("text", gateway::format_report(report));
  co_return command_result::success(o);
}

struct command_entry {
  const char* name;
  handler run;
};

constexpr command_entry command_table[] = {
    {"customer.add", &customer_add},     {"customer.set", &customer_set},
    {"customer.show", &customer_show},   {"customer.list", &customer_list},
    {"customer.remove", &customer_remove}, {"customer.passwd", &customer_passwd},
    {"customer.recipients", &customer_recipients},
    {"queue.list", &queue_list},         {"queue.show", &queue_show},
    {"queue.hold", &queue_hold},         {"queue.release", &queue_release},
    {"queue.delete", &queue_delete},     {"queue.summary", &queue_summary},
    {"link.up", &link_up},               {"link.down", &link_down},
    {"link.list", &link_list},
    {"flush", &flush},                   {"flush.status", &flush_status},
    {"status", &status},                 {"events", &events},
    {"cluster.status", &cluster_status},
    {"config.show", &config_show},       {"doctor", &doctor},
};

}  // namespace

asio::awaitable<command_result> run_command(daemon_context& ctx, const std::string& name,
                                            const Object::Ptr& args) {
  for (const auto& entry : command_table) {
    if (name != entry.name) continue;
    try {
      // Named, not a temporary inside the co_await: GCC 12 destroys a
      // conditional-expression temporary twice across a suspension.
      Object::Ptr effective = args;
      if (!effective) effective = new Object;
      command_result r = co_await entry.run(ctx, effective);
      co_return r;
    } catch (const Poco::Exception& e) {
      co_return command_result::failure(name + ": bad arguments: " + e.displayText());
    } catch (const std::bad_cast&) {
      co_return command_result::failure(name + ": an argument has the wrong type");
    }
  }
  co_return command_result::failure("unknown command \"" + name + "\"", command_status::not_found);
}

std::string_view to_string(command_status s) noexcept {
  switch (s) {
    case command_status::ok: return "ok";
    case command_status::bad_request: return "bad_request";
    case command_status::not_found: return "not_found";
    case command_status::conflict: return "conflict";
    case command_status::unavailable: return "unavailable";
  }
  return "bad_request";
}

std::string to_json_line(const command_result& r) {
  Object out;
  out.set("ok", r.ok);
  if (r.ok) {
    out.set("result", r.result);
  } else {
    out.set("error", r.error);
    out.set("code", std::string(to_string(r.status)));
  }
  std::ostringstream os;
  out.stringify(os);
  os << '\n';
  return os.str();
}

}  // namespace flushgate::control
