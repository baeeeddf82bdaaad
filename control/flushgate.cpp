// flushgate — the operator's command line.
//
//   flushgate [--config FILE] [--json] customer add NAME --domain D ... 
//   flushgate [--config FILE] [--json] queue summary
//   (run `flushgate help` for the whole list)
//
// Every command except `config` talks to the running daemon over its control
// socket (control_socket in the config, $data_dir/control.sock by default).
// The config file is FILE, else $FLUSHGATE_CONFIG, else
// /etc/flushgate/flushgated.cf. Exit status: 0 done, 1 the daemon refused
// (the reason is printed), 2 usage error, 3 the daemon could not be reached.
#include "control/control_client.hpp"
#include "core/config.hpp"
#include "core/units.hpp"
#include "queue/postgres_store.hpp"
#include "queue/sqlite_store.hpp"
#include "queue/store_copy.hpp"

#include <fmt/format.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>

#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace flushgate;
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

constexpr const char* help_text = R"(usage: flushgate [--config FILE] [--json] COMMAND

Customers:
  customer add NAME --domain D [--domain D ...] [--subdomains]
               [--route HOST[:PORT] | --route mx] [--link-port PORT]
               [--mode relay|hold|odmr] [--recipients FILE]
               [--max-size BYTES] [--quota BYTES] [--tls none|may|encrypt|verify]
               [--queue-lifetime DURATION] [--delay-warning DURATION]
               [--dsl-user USER ...] [--dialup-user USER ...]
               [--dsl-net CIDR ...] [--dialup-net CIDR ...] [--etrn-net CIDR ...]
               [--ipv6-server framed|none|::OFFSET] [--prefer-family ipv6|ipv4]
               [--recipient-check any|list|learn|verify]
               [--unknown-recipients tempfail|accept|reject]
               [--forward-client xforward|xclient|none]
  customer set NAME [the options of add; --no-recipients drops the list]
  customer enable|disable|suspend NAME
  customer passwd NAME          (reads the ETRN/ODMR password from stdin)
  customer show NAME
  customer recipients NAME [list | add ADDRESS... | remove ADDRESS... | import FILE | export |
                            forget [ADDRESS]]   the list (ADDRESS may be *@domain), the known addresses
  customer list
  customer remove NAME [--force]
Links (what pppd ip-up/ip-down/ipv6-up/ipv6-down scripts call):
  link up USER [--ip ADDRESS]... [--prefix PREFIX] [--session ID] [--nas NAS]
                                --ip: an IPv4 and/or an IPv6 address; --prefix: the line's
                                delegated IPv6 prefix; the same session keeps what is not given
  link down USER [--session ID] [--family ipv4|ipv6]
  link list
Delivery:
  flush NAME [--wait] [--timeout SECONDS]
Queue:
  queue list [--customer NAME] [--limit N]
  queue show ID
  queue hold|release|delete ID [ID ...]
  queue summary [--customer NAME]
Operations:
  status                        customers, queues and links at a glance
  events [--limit N]            what happened lately (links, flushes, changes), on every node
  cluster status                the nodes sharing the queue, and which node delivers whom
  doctor DOMAIN                 checks the domain's MX set-up in DNS (exit 1 on a warning)
Configuration (reads the file, no daemon needed):
  config show [--changed]
  config params
  config running                what the running daemon uses (asks the daemon)
Stores (no daemon; stop the source's flushgated first):
  store copy --from sqlite:DIR|postgresql[:CONNINFO] --to sqlite:DIR|postgresql[:CONNINFO]
                                customers, links and the whole queue, keeping queue ids;
                                run it again to resume (what is there is skipped)

--json prints the daemon's answer as JSON (schema in README.md).
)";

struct cli_error {
  std::string message;
  int status;
};

[[noreturn]] void fail(const std::string& message, int status = 2) {
  throw cli_error{message, status};
}

// Bytes for a person: "12.3 MB", "4.0 KB", "17 B".
std::string human_bytes(std::uint64_t n) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1);
  if (n >= (1ull << 20)) os << static_cast<double>(n) / (1 << 20) << " MB";
  else if (n >= 1024) os << static_cast<double>(n) / 1024 << " KB";
  else os << n << " B";
  return os.str();
}

std::string age(std::int64_t since) {
  if (since == 0) return "-";
  std::int64_t s = std::time(nullptr) - since;
  if (s < 0) s = 0;
  std::ostringstream os;
  if (s >= 86400) os << s / 86400 << "d" << (s % 86400) / 3600 << "h";
  else if (s >= 3600) os << s / 3600 << "h" << (s % 3600) / 60 << "m";
  else if (s >= 60) os << s / 60 << "m" << s % 60 << "s";
  else os << s << "s";
  return os.str();
}

// Prints rows as an aligned table, the first row being the header.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

std::string join(const Array::Ptr& list, const char* sep = ",") {
  std::string out;
  for (std::size_t i = 0; list && i < list->size(); ++i) {
    if (i) out += sep;
    out += list->get(static_cast<unsigned>(i)).convert<std::string>();
  }
  return out;
}

std::vector<std::string> read_recipient_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("--recipients " + path + ": cannot read the file");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    auto hash = line.find('#');
    if (hash != std::string::npos) line.erase(hash);
    auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    auto last = line.find_last_not_of(" \t\r");
    out.push_back(line.substr(first, last - first + 1));
  }
  return out;
}

// Turns the options of `customer add|set` into the request's arguments.
Object::Ptr customer_options(const std::vector<std::string>& args, std::size_t from) {
  Object::Ptr o = new Object;
  Array::Ptr domains = new Array;
  std::vector<std::pair<std::string, std::string>> users;  // (user, kind)
  std::string dsl_net, dialup_net;
  bool links_given = false;
  Array::Ptr etrn_nets;
  for (std::size_t i = from; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) fail(a + " needs a value");
      return args[++i];
    };
    if (a == "--domain") domains->add(value());
    else if (a == "--subdomains") o->set("subdomains", true);
    else if (a == "--no-subdomains") o->set("subdomains", false);
    else if (a == "--route") o->set("route", value());
    else if (a == "--link-port") o->set("link_port", value());
    else if (a == "--mode") o->set("mode", value());
    else if (a == "--max-size") o->set("max_size", value());
    else if (a == "--quota") o->set("quota", value());
    else if (a == "--tls") o->set("tls", value());
    else if (a == "--queue-lifetime") o->set("queue_lifetime", value());
    else if (a == "--delay-warning") o->set("delay_warning", value());
    else if (a == "--recipients") {
      Array::Ptr r = new Array;
      for (const auto& addr : read_recipient_file(value())) r->add(addr);
      o->set("recipients", r);
    } else if (a == "--no-recipients") o->set("recipients", Poco::Dynamic::Var());
    else if (a == "--dsl-user") { users.emplace_back(value(), "dsl"); links_given = true; }
    else if (a == "--dialup-user") { users.emplace_back(value(), "dialup"); links_given = true; }
    else if (a == "--dsl-net") { dsl_net += (dsl_net.empty() ? "" : ",") + value(); links_given = true; }
    else if (a == "--dialup-net") {
      dialup_net += (dialup_net.empty() ? "" : ",") + value();
      links_given = true;
    } else if (a == "--ipv6-server") o->set("ipv6_server", value());
    else if (a == "--recipient-check") o->set("recipient_check", value());
    else if (a == "--unknown-recipients") o->set("unknown_recipients", value());
    else if (a == "--prefer-family") o->set("prefer_family", value());
    else if (a == "--forward-client") o->set("forward_client", value());
    else if (a == "--etrn-net") {
      if (!etrn_nets) etrn_nets = new Array;
      etrn_nets->add(value());
    } else if (a == "--no-etrn-net") etrn_nets = new Array;
    else fail("unknown option " + a + " (see flushgate help)");
  }
  if (domains->size() > 0) o->set("domains", domains);
  if (etrn_nets) o->set("etrn_networks", etrn_nets);
  if (links_given) {
    Array::Ptr links = new Array;
    for (const auto& [user, kind] : users) {
      Object::Ptr l = new Object;
      l->set("user", user);
      l->set("kind", kind);
      l->set("net", kind == "dsl" ? dsl_net : dialup_net);
      links->add(l);
    }
    o->set("links", links);
  }
  // link_port, max_size and quota travel as text: the daemon parses units.
  return o;
}

void print_customer(const Object::Ptr& c) {
  auto q = c->getObject("queue");
  std::vector<std::vector<std::string>> rows = {
      {"name:", c->getValue<std::string>("name")},
      {"state:", c->getValue<std::string>("state")},
      {"mode:", c->getValue<std::string>("mode")},
      {"domains:", join(c->getArray("domains"), " ") +
                       (c->getValue<bool>("subdomains") ? " (and subdomains)" : "")},
      {"route:", c->getValue<std::string>("route").empty() ? "(none: hold until a link comes up)"
                                                           : c->getValue<std::string>("route")},
      {"link port:", c->get("link_port").convert<std::string>()},
      {"IPv6 server:", c->optValue<std::string>("ipv6_server", "framed") +
                           " (first: " + c->optValue<std::string>("prefer_family", "ipv6") + ")"},
  };
  if (c->has("current_route")) rows.push_back({"current route:", c->getValue<std::string>("current_route")});
  std::string links;
  auto link_list = c->getArray("links");
  for (std::size_t i = 0; link_list && i < link_list->size(); ++i) {
    auto l = link_list->getObject(static_cast<unsigned>(i));
    if (!links.empty()) links += ", ";
    links += l->getValue<std::string>("user") + " (" + l->getValue<std::string>("kind");
    if (!l->getValue<std::string>("net").empty()) links += " in " + l->getValue<std::string>("net");
    links += ")";
  }
  rows.push_back({"link users:", links.empty() ? "-" : links});
  auto recipients = c->get("recipients");
  const std::string policy = c->optValue<std::string>("recipient_check", "any");
  std::string taken = policy == "any"    ? "any address in its domains (a back door for spam)"
                      : policy == "list" ? std::to_string(recipients.isEmpty() ? 0 : c->getArray("recipients")->size()) + " listed"
                                         : policy + ": what its server took; not yet known: " +
                                               c->optValue<std::string>("unknown_recipients", "tempfail");
  rows.push_back({"recipients:", taken});
  auto max_size = c->getValue<std::uint64_t>("max_size");
  auto quota = c->getValue<std::uint64_t>("quota");
  rows.push_back({"max size:", max_size ? core::format_size(max_size) : "(message_size_limit)"});
  rows.push_back({"quota:", quota ? core::format_size(quota) : "none"});
  rows.push_back({"login:", c->optValue<bool>("login", false) ? "set (ETRN after AUTH, ODMR)" : "none"});
  std::string etrn = join(c->getArray("etrn_networks"), " ");
  rows.push_back({"ETRN from:", etrn.empty() ? "its live links" : etrn + " and its live links"});
  std::string tls = c->optValue<std::string>("tls", "");
  rows.push_back({"tls:", tls.empty() ? "(smtp_tls)" : tls});
  rows.push_back({"forward client:", c->optValue<std::string>("forward_client", "xforward")});
  auto lifetime = c->optValue<std::int64_t>("queue_lifetime", 0);
  auto warning = c->optValue<std::int64_t>("delay_warning", 0);
  rows.push_back({"queue lifetime:", lifetime ? core::format_duration(std::chrono::seconds(lifetime)) : "(queue_lifetime)"});
  rows.push_back({"delay warning:", warning ? core::format_duration(std::chrono::seconds(warning)) : "(delay_warning_time)"});
  if (q) {
    rows.push_back({"queued:", q->get("messages").convert<std::string>() + " messages, " +
                                   q->get("bytes").convert<std::string>() + " bytes, oldest " +
                                   age(q->getValue<std::int64_t>("oldest_arrival"))});
  }
  print_table(rows);
}

void print_result(const std::string& command, const Poco::Dynamic::Var& result) {
  if (command == "customer.recipients") {
    auto o = result.extract<Object::Ptr>();
    const std::string policy = o->getValue<std::string>("recipient_check");
    std::cout << "customer " << o->getValue<std::string>("customer") << ": recipient check " << policy;
    if (policy == "learn" || policy == "verify") {
      std::cout << ", not yet known: " << o->getValue<std::string>("unknown_recipients");
    }
    if (o->has("changed")) std::cout << "; " << o->get("changed").convert<std::string>() << " changed";
    std::cout << "\n";
    auto list = o->getArray("list");
    std::cout << "list: " << (list ? std::to_string(list->size()) + " entries" : std::string("none")) << "\n";
    for (std::size_t i = 0; list && i < list->size() && i < 50; ++i) {
      std::cout << "  " << list->getElement<std::string>(static_cast<unsigned>(i)) << "\n";
    }
    if (list && list->size() > 50) std::cout << "  ... (export prints them all)\n";
    auto known = o->getArray("known");
    std::cout << "known: " << o->get("known_good").convert<std::string>() << " good, "
              << o->get("known_bad").convert<std::string>() << " bad\n";
    if (known && known->size() > 0) {
      std::vector<std::vector<std::string>> rows = {{"ADDRESS", "STATE", "SOURCE", "FIRST SEEN", "LAST SEEN"}};
      for (std::size_t i = 0; i < known->size(); ++i) {
        auto k = known->getObject(static_cast<unsigned>(i));
        rows.push_back({k->getValue<std::string>("address"), k->getValue<std::string>("state"),
                        k->getValue<std::string>("source"), age(k->getValue<std::int64_t>("first_seen")) + " ago",
                        age(k->getValue<std::int64_t>("last_seen")) + " ago"});
      }
      print_table(rows);
    }
    return;
  }
  if (command == "customer.list") {
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "STATE", "MODE", "ROUTE", "DOMAINS", "MESSAGES", "BYTES", "OLDEST"}};
    auto list = result.extract<Array::Ptr>();
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto c = list->getObject(static_cast<unsigned>(i));
      auto q = c->getObject("queue");
      std::string route = c->getValue<std::string>("route");
      rows.push_back({c->getValue<std::string>("name"), c->getValue<std::string>("state"),
                      c->getValue<std::string>("mode"), route.empty() ? "-" : route,
                      join(c->getArray("domains")), q->get("messages").convert<std::string>(),
                      q->get("bytes").convert<std::string>(),
                      age(q->getValue<std::int64_t>("oldest_arrival"))});
    }
    print_table(rows);
  } else if (command == "customer.show" || command == "customer.add" ||
             command == "customer.set") {
    print_customer(result.extract<Object::Ptr>());
  } else if (command == "queue.summary") {
    std::vector<std::vector<std::string>> rows = {{"CUSTOMER", "MESSAGES", "BYTES", "OLDEST"}};
    auto list = result.extract<Array::Ptr>();
    std::uint64_t messages = 0, bytes = 0;
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto s = list->getObject(static_cast<unsigned>(i));
      messages += s->getValue<std::uint64_t>("messages");
      bytes += s->getValue<std::uint64_t>("bytes");
      rows.push_back({s->getValue<std::string>("customer"), s->get("messages").convert<std::string>(),
                      s->get("bytes").convert<std::string>(),
                      age(s->getValue<std::int64_t>("oldest_arrival"))});
    }
    rows.push_back({"TOTAL", std::to_string(messages), std::to_string(bytes), ""});
    print_table(rows);
  } else if (command == "queue.list") {
    std::vector<std::vector<std::string>> rows = {
        {"QUEUE ID", "CUSTOMER", "SIZE", "AGE", "RCPTS", "HELD", "SENDER"}};
    auto page = result.extract<Object::Ptr>();
    auto list = page->getArray("messages");
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto m = list->getObject(static_cast<unsigned>(i));
      std::string sender = m->getValue<std::string>("sender");
      rows.push_back({m->getValue<std::string>("qid"), m->getValue<std::string>("customer"),
                      m->get("size").convert<std::string>(), age(m->getValue<std::int64_t>("arrival")),
                      m->get("recipient_count").convert<std::string>(),
                      m->getValue<bool>("held") ? "held" : "", "<" + sender + ">"});
    }
    print_table(rows);
    // A cut list says so (on stderr, so that a pipe reading the table gets only rows).
    const auto shown = page->getValue<std::uint64_t>("shown");
    const auto total = page->getValue<std::uint64_t>("total");
    if (shown < total) {
      std::cerr << shown << " of " << total << " shown (--limit N, --customer NAME)\n";
    }
  } else if (command == "queue.show") {
    auto m = result.extract<Object::Ptr>();
    print_table({{"queue id:", m->getValue<std::string>("qid")},
                 {"customer:", m->getValue<std::string>("customer")},
                 {"sender:", "<" + m->getValue<std::string>("sender") + ">"},
                 {"arrived:", age(m->getValue<std::int64_t>("arrival")) + " ago"},
                 {"size:", m->get("size").convert<std::string>()},
                 {"held:", m->getValue<bool>("held") ? "yes" : "no"},
                 {"client:", m->getValue<std::string>("client")}});
    std::vector<std::vector<std::string>> rows = {{"RECIPIENT", "ATTEMPTS", "LAST REPLY"}};
    auto rs = m->getArray("recipients");
    for (std::size_t i = 0; rs && i < rs->size(); ++i) {
      auto r = rs->getObject(static_cast<unsigned>(i));
      rows.push_back({"<" + r->getValue<std::string>("address") + ">",
                      r->get("attempts").convert<std::string>(), r->getValue<std::string>("last_reply")});
    }
    std::cout << "\n";
    print_table(rows);
  } else if (command == "link.list") {
    std::vector<std::vector<std::string>> rows = {
        {"USER", "CUSTOMER", "KIND", "IPV4", "IPV6", "PREFIX", "NAS", "SINCE", "SOURCE"}};
    auto list = result.extract<Array::Ptr>();
    auto or_dash = [](const std::string& v) { return v.empty() ? std::string("-") : v; };
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto l = list->getObject(static_cast<unsigned>(i));
      // The IPv6 column shows the customer server's address on the line (after
      // --ipv6-server), and the line's own address when they differ.
      std::string v6 = l->optValue<std::string>("ipv6_server", "");
      const std::string line_v6 = l->optValue<std::string>("ipv6_address", "");
      if (v6.empty()) v6 = line_v6;
      else if (!line_v6.empty() && line_v6 != v6) v6 += " (line " + line_v6 + ")";
      rows.push_back({l->getValue<std::string>("user"), l->getValue<std::string>("customer"),
                      l->getValue<std::string>("kind"), or_dash(l->getValue<std::string>("address")),
                      or_dash(v6), or_dash(l->optValue<std::string>("ipv6_prefix", "")),
                      or_dash(l->getValue<std::string>("nas")),
                      age(l->getValue<std::int64_t>("since")) + " ago", l->getValue<std::string>("source")});
    }
    print_table(rows);
  } else if (command == "link.up" || command == "link.down") {
    auto o = result.extract<Object::Ptr>();
    std::cout << "customer " << o->getValue<std::string>("customer") << ": route now "
              << o->optValue<std::string>("route", "?")
              << (o->getValue<bool>("changed") ? "" : " (nothing changed)") << "\n";
  } else if (command == "flush" || command == "flush.status") {
    auto o = result.extract<Object::Ptr>();
    auto f = o->getObject("flush");
    std::cout << "customer " << o->getValue<std::string>("customer") << ": route "
              << o->getValue<std::string>("route") << ", "
              << o->get("messages_left").convert<std::string>() << " messages ("
              << o->get("bytes_left").convert<std::string>() << " bytes) queued"
              << (f->getValue<bool>("running") ? ", flush running" : "") << "\n";
  } else if (command == "events") {
    auto list = result.extract<Array::Ptr>();
    std::vector<std::vector<std::string>> rows{{"AGO", "NODE", "KIND", "CUSTOMER", "WHAT"}};
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto e = list->getObject(static_cast<unsigned>(i));
      const std::string node = e->optValue<std::string>("node", "");
      rows.push_back({age(e->getValue<std::int64_t>("time")), node.empty() ? "-" : node,
                      e->getValue<std::string>("kind"), e->getValue<std::string>("customer"),
                      e->getValue<std::string>("text")});
    }
    print_table(rows);
  } else if (command == "cluster.status") {
    auto o = result.extract<Object::Ptr>();
    auto nodes = o->getArray("nodes");
    std::cout << "node " << o->getValue<std::string>("node") << ", store "
              << o->getValue<std::string>("store") << ", " << nodes->size()
              << (nodes->size() == 1 ? " node" : " nodes") << "\n";
    std::vector<std::vector<std::string>> rows{{"NODE", "VERSION", "STARTED", "HEARTBEAT", "STATE", "LEASES"}};
    for (std::size_t i = 0; i < nodes->size(); ++i) {
      auto n = nodes->getObject(static_cast<unsigned>(i));
      const auto beat = n->getValue<std::int64_t>("heartbeat_age_ms");
      rows.push_back({n->getValue<std::string>("name") + (n->getValue<bool>("self") ? " (this)" : ""),
                      n->getValue<std::string>("version"),
                      age(n->getValue<std::int64_t>("started")) + " ago",
                      fmt::format("{:.1f} s ago", static_cast<double>(beat) / 1000.0),
                      n->getValue<bool>("alive") ? "alive" : "SILENT",
                      n->get("leases").convert<std::string>()});
    }
    print_table(rows);
    auto leases = o->getArray("leases");
    if (leases->size() > 0) {
      std::cout << "\n";
      std::vector<std::vector<std::string>> lrows{{"CUSTOMER", "DELIVERED BY", "FOR", "EXPIRES IN"}};
      for (std::size_t i = 0; i < leases->size(); ++i) {
        auto l = leases->getObject(static_cast<unsigned>(i));
        lrows.push_back({l->getValue<std::string>("customer"), l->getValue<std::string>("holder"),
                         fmt::format("{:.1f} s", static_cast<double>(l->getValue<std::int64_t>("held_for_ms")) / 1000.0),
                         fmt::format("{:.1f} s", static_cast<double>(l->getValue<std::int64_t>("expires_in_ms")) / 1000.0)});
      }
      print_table(lrows);
    } else {
      std::cout << "no customer is being delivered right now\n";
    }
  } else if (command == "status") {
    auto o = result.extract<Object::Ptr>();
    auto t = o->getObject("totals");
    auto d = o->getObject("disk");
    const std::string node = o->optValue<std::string>("node", "");
    std::cout << o->getValue<std::string>("hostname")
              << (node.empty() || node == o->getValue<std::string>("hostname") ? "" : " (node " + node + ")")
              << ": " << t->get("customers").convert<std::string>()
              << " customers, " << t->get("messages").convert<std::string>() << " messages queued ("
              << t->get("bytes").convert<std::string>() << " bytes, oldest "
              << (t->getValue<std::uint64_t>("messages") > 0
                      ? age(std::time(nullptr) - t->getValue<std::int64_t>("oldest_age_seconds"))
                      : std::string("-"))
              << "), " << t->get("links_up").convert<std::string>() << " links up, disk "
              << (d->optValue<bool>("low", false) ? "LOW" : "ok") << " ("
              << human_bytes(d->optValue<std::uint64_t>("free_bytes", 0)) << " free, +"
              << human_bytes(d->optValue<std::uint64_t>("store_free_bytes", 0))
              << " inside the queue store, minimum "
              << human_bytes(d->optValue<std::uint64_t>("min_free_bytes", 0)) << ")\n";
    auto list = o->getArray("customers");
    std::vector<std::vector<std::string>> rows{{"CUSTOMER", "ACTIVITY", "MESSAGES", "OLDEST", "ROUTE", "DELIVERED BY"}};
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto c = list->getObject(static_cast<unsigned>(i));
      auto oldest = c->getValue<std::int64_t>("oldest_age_seconds");
      const std::string by = c->optValue<std::string>("flushing_node", "");
      rows.push_back({c->getValue<std::string>("name"), c->getValue<std::string>("activity"),
                      c->get("messages").convert<std::string>(),
                      c->getValue<std::uint64_t>("messages") > 0 ? age(std::time(nullptr) - oldest) : "-",
                      c->getValue<std::string>("route"), by.empty() ? "-" : "node " + by});
    }
    print_table(rows);
  } else if (command == "config.show") {
    auto list = result.extract<Array::Ptr>();
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto p = list->getObject(static_cast<unsigned>(i));
      std::cout << p->getValue<std::string>("name") << " = " << p->getValue<std::string>("value")
                << (p->getValue<bool>("changed") ? "" : "    # default") << "\n";
    }
  } else if (command == "doctor") {
    std::cout << result.extract<Object::Ptr>()->getValue<std::string>("text");
  } else if (result.isString()) {
    std::cout << result.convert<std::string>() << "\n";
  } else if (!result.isEmpty()) {
    auto list = result.extract<Array::Ptr>();
    for (std::size_t i = 0; i < list->size(); ++i) {
      std::cout << list->get(static_cast<unsigned>(i)).convert<std::string>() << "\n";
    }
  }
}

// One request; returns the answer's "result", or throws cli_error.
Poco::Dynamic::Var request(const std::string& socket_path, const std::string& command,
                           const Object::Ptr& args) {
  Object req;
  req.set("command", command);
  req.set("args", args);
  std::ostringstream os;
  req.stringify(os);
  std::string answer, error;
  control::control_client client(socket_path);
  if (!client.request(os.str(), answer, error)) fail(error, 3);
  Poco::JSON::Parser parser;
  auto reply = parser.parse(answer).extract<Object::Ptr>();
  if (!reply->getValue<bool>("ok")) fail(reply->getValue<std::string>("error"), 1);
  return reply->get("result");
}

// `flush NAME --wait`: start the flush, show progress until it ends, and
// exit 1 when mail is left (with the reason the daemon gave).
int flush_and_wait(const std::string& socket_path, const Object::Ptr& args, long timeout_seconds) {
  auto first = request(socket_path, "flush", args).extract<Object::Ptr>();
  const std::string name = first->getValue<std::string>("customer");
  std::cout << "flushing " << name << " over " << first->getValue<std::string>("route") << ": "
            << first->get("messages_left").convert<std::string>() << " messages queued\n";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  std::string last_line;
  Object::Ptr status = first;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // polling interval, not synchronisation
    status = request(socket_path, "flush.status", args).extract<Object::Ptr>();
    auto f = status->getObject("flush");
    std::ostringstream line;
    line << "  delivered " << f->get("messages_done").convert<std::string>() << "/"
         << f->get("messages_at_start").convert<std::string>() << " messages, "
         << human_bytes(f->getValue<std::uint64_t>("bytes_done")) << "/"
         << human_bytes(f->getValue<std::uint64_t>("bytes_at_start")) << "; left "
         << status->get("messages_left").convert<std::string>() << " messages, "
         << human_bytes(status->getValue<std::uint64_t>("bytes_left"));
    if (line.str() != last_line) {
      std::cout << line.str() << "\n" << std::flush;
      last_line = line.str();
    }
    if (!f->getValue<bool>("running")) break;
  }
  auto f = status->getObject("flush");
  auto left = status->getValue<std::uint64_t>("messages_left");
  if (f->getValue<bool>("running")) {
    std::cerr << "flushgate: still running after " << timeout_seconds << "s\n";
    return 1;
  }
  if (left > 0) {
    std::string why = f->getValue<std::string>("error");
    std::cerr << "flushgate: " << left << " messages left for " << name
              << (why.empty() ? "" : ": " + why) << "\n";
    return 1;
  }
  std::cout << "done: the queue of " << name << " is empty\n";
  return 0;
}

int send(const std::string& socket_path, const std::string& command, const Object::Ptr& args,
         bool json);

// `customer recipients NAME [list|add ADDR...|remove ADDR...|import FILE|export|forget [ADDR]]`.
// import sends the file in pieces of 10,000 addresses (each one transaction),
// so a 100,000-address file stays under the control channel's request limit.
int customer_recipients(const std::string& socket_path, const std::vector<std::string>& words, bool json) {
  const std::string usage =
      "usage: flushgate customer recipients NAME [list | add ADDRESS... | remove ADDRESS... | "
      "import FILE | export | forget [ADDRESS]]";
  if (words.size() < 3) fail(usage);
  const std::string action = words.size() > 3 ? words[3] : "list";
  auto args = [&](const std::string& what) {
    Object::Ptr a = new Object;
    a->set("name", words[2]);
    a->set("action", what);
    return a;
  };
  auto with_addresses = [&](const std::string& what, std::size_t from) {
    Object::Ptr a = args(what);
    Array::Ptr list = new Array;
    for (std::size_t i = from; i < words.size(); ++i) list->add(words[i]);
    a->set("addresses", list);
    return a;
  };
  if (action == "list") return send(socket_path, "customer.recipients", args("show"), json);
  if (action == "add" || action == "remove") {
    if (words.size() < 5) fail(usage);
    return send(socket_path, "customer.recipients", with_addresses(action, 4), json);
  }
  if (action == "forget") return send(socket_path, "customer.recipients", with_addresses("forget", 4), json);
  if (action == "export") {
    auto result = request(socket_path, "customer.recipients", args("show")).extract<Object::Ptr>();
    auto list = result->getArray("list");
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      std::cout << list->getElement<std::string>(static_cast<unsigned>(i)) << "\n";
    }
    return 0;
  }
  if (action == "import") {
    if (words.size() != 5) fail(usage);
    const auto addresses = read_recipient_file(words[4]);
    constexpr std::size_t piece = 10000;
    std::uint64_t added = 0;
    for (std::size_t at = 0; at < addresses.size(); at += piece) {
      Object::Ptr a = args("add");
      Array::Ptr list = new Array;
      for (std::size_t i = at; i < std::min(addresses.size(), at + piece); ++i) list->add(addresses[i]);
      a->set("addresses", list);
      auto result = request(socket_path, "customer.recipients", a).extract<Object::Ptr>();
      added += result->getValue<std::uint64_t>("changed");
    }
    std::cout << "customer " << words[2] << ": " << addresses.size() << " addresses read, " << added
              << " added to the list\n";
    return 0;
  }
  fail(usage);
}

int send(const std::string& socket_path, const std::string& command, const Object::Ptr& args,
         bool json) {
  Object request;
  request.set("command", command);
  request.set("args", args);
  std::ostringstream os;
  request.stringify(os);
  std::string answer, error;
  control::control_client client(socket_path);
  if (!client.request(os.str(), answer, error)) {
    std::cerr << "flushgate: " << error << "\n";
    return 3;
  }
  Poco::JSON::Parser parser;
  auto reply = parser.parse(answer).extract<Object::Ptr>();
  if (!reply->getValue<bool>("ok")) {
    std::cerr << "flushgate: " << reply->getValue<std::string>("error") << "\n";
    return 1;
  }
  if (json) {
    std::ostringstream out;
    Poco::JSON::Stringifier::stringify(reply->get("result"), out, 2);
    std::cout << out.str() << "\n";
  } else {
    print_result(command, reply->get("result"));
  }
  return 0;
}

// `store copy`: opens the store a spec names — "sqlite:DIR" (its queue.db
// must exist when it is the source), "postgresql" (the configuration's
// postgresql_conninfo) or "postgresql:CONNINFO".
std::unique_ptr<queue::store> open_store_spec(const std::string& spec, const core::config& cfg,
                                              bool must_exist) {
  if (spec.starts_with("sqlite:")) {
    const std::string dir = spec.substr(7);
    if (must_exist && !std::filesystem::exists(std::filesystem::path(dir) / "queue.db")) {
      fail("store copy: no queue.db in " + dir, 1);
    }
    auto opened = queue::sqlite_store::open(dir);
    if (!opened) fail("store copy: cannot open " + spec + ": " + opened.error().message(), 1);
    return std::move(*opened);
  }
  if (spec == "postgresql" || spec.starts_with("postgresql:")) {
    queue::postgres_options o;
    o.conninfo = spec == "postgresql" ? cfg.text("postgresql_conninfo") : spec.substr(11);
    o.node_name = cfg.text("node_name");
    const std::string shown = core::mask_conninfo_password(o.conninfo);
    auto opened = queue::postgres_store::open(std::move(o));
    if (!opened) {
      fail("store copy: cannot open postgresql (" + shown +
               "): " + opened.error().message() + " (details in the log lines above)",
           1);
    }
    return std::move(*opened);
  }
  fail("store copy: \"" + spec + "\" is neither sqlite:DIR nor postgresql[:CONNINFO]");
}

int store_copy(const std::vector<std::string>& words, const core::config& cfg) {
  std::string from, to;
  for (std::size_t i = 2; i < words.size(); ++i) {
    if (words[i] == "--from" && i + 1 < words.size()) from = words[++i];
    else if (words[i] == "--to" && i + 1 < words.size()) to = words[++i];
    else fail("usage: flushgate store copy --from SPEC --to SPEC");
  }
  if (from.empty() || to.empty()) fail("usage: flushgate store copy --from SPEC --to SPEC");
  if (from == to) fail("store copy: --from and --to name the same store");
  auto source = open_store_spec(from, cfg, true);
  auto target = open_store_spec(to, cfg, false);
  auto report = queue::copy_store(*source, *target, [](const queue::copy_report& r) {
    std::cerr << "store copy: " << r.messages_copied << " messages copied (" << human_bytes(r.bytes_copied)
              << "), " << r.messages_present << " already there\n";
  });
  std::cout << "customers: " << report.customers_added << " added, " << report.customers_present
            << " already there; links: " << report.links << "; messages: " << report.messages_copied
            << " copied (" << human_bytes(report.bytes_copied) << "), " << report.messages_present
            << " already there\n";
  if (!report.error.empty()) {
    std::cerr << "flushgate: store copy stopped: " << report.error
              << " (run it again to resume: what was copied is skipped)\n";
    return 1;
  }
  return 0;
}

int run(std::vector<std::string> args) {
  std::string config_path;
  if (const char* env = std::getenv("FLUSHGATE_CONFIG")) config_path = env;
  if (config_path.empty()) config_path = "/etc/flushgate/flushgated.cf";
  bool json = false;
  std::vector<std::string> words;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config") {
      if (i + 1 >= args.size()) fail("--config needs a file");
      config_path = args[++i];
    } else if (args[i] == "--json") {
      json = true;
    } else {
      words.push_back(args[i]);
    }
  }
  if (words.empty() || words[0] == "help" || words[0] == "--help" || words[0] == "-h") {
    std::cout << help_text;
    return words.empty() ? 2 : 0;
  }
  if (words[0] == "config" && words.size() >= 2 && words[1] == "params") {
    std::cout << core::render_parameter_table_markdown();
    return 0;
  }
  std::string error;
  auto cfg = core::config::load_file(config_path, error);
  if (!cfg) fail(error);
  if (words[0] == "config") {
    if (words.size() >= 2 && words[1] == "show") {
      bool changed = words.size() >= 3 && words[2] == "--changed";
      std::cout << core::render_config(*cfg, changed);
      return 0;
    }
    if (words.size() >= 2 && words[1] == "running") {
      return send(cfg->text("control_socket"), "config.show", new Object, json);
    }
    fail("usage: flushgate config show [--changed] | config params | config running");
  }
  if (words[0] == "store") {
    if (words.size() >= 2 && words[1] == "copy") return store_copy(words, *cfg);
    fail("usage: flushgate store copy --from SPEC --to SPEC");
  }
  const std::string socket_path = cfg->text("control_socket");
  auto need = [&](std::size_t n, const char* usage) {
    if (words.size() < n) fail(std::string("usage: flushgate ") + usage);
  };
  Object::Ptr a = new Object;
  const std::string& group = words[0];
  const std::string verb = words.size() > 1 ? words[1] : "";
  if (group == "customer") {
    if (verb == "add" || verb == "set") {
      need(3, "customer add|set NAME [options]");
      a = customer_options(words, 3);
      a->set("name", words[2]);
      return send(socket_path, "customer." + verb, a, json);
    }
    if (verb == "enable" || verb == "disable" || verb == "suspend") {
      need(3, "customer enable|disable|suspend NAME");
      a->set("name", words[2]);
      a->set("state", verb == "enable" ? "enabled" : verb == "disable" ? "disabled" : "suspended");
      return send(socket_path, "customer.set", a, json);
    }
    if (verb == "passwd") {
      need(3, "customer passwd NAME   (the password on standard input)");
      std::string password;
      if (::isatty(0)) std::cerr << "password for " << words[2] << ": " << std::flush;
      struct termios saved {};
      bool tty = ::isatty(0) && ::tcgetattr(0, &saved) == 0;
      if (tty) {
        struct termios quiet = saved;
        quiet.c_lflag &= static_cast<tcflag_t>(~ECHO);
        ::tcsetattr(0, TCSANOW, &quiet);
      }
      std::getline(std::cin, password);
      if (tty) {
        ::tcsetattr(0, TCSANOW, &saved);
        std::cerr << "\n";
      }
      if (!password.empty() && password.back() == '\r') password.pop_back();
      a->set("name", words[2]);
      a->set("password", password);
      return send(socket_path, "customer.passwd", a, json);
    }
    if (verb == "show") {
      need(3, "customer show NAME");
      a->set("name", words[2]);
      return send(socket_path, "customer.show", a, json);
    }
    if (verb == "recipients") return customer_recipients(socket_path, words, json);
    if (verb == "list") return send(socket_path, "customer.list", a, json);
    if (verb == "remove") {
      need(3, "customer remove NAME [--force]");
      a->set("name", words[2]);
      for (std::size_t i = 3; i < words.size(); ++i) {
        if (words[i] == "--force") a->set("force", true);
        else fail("unknown option " + words[i]);
      }
      return send(socket_path, "customer.remove", a, json);
    }
  } else if (group == "link") {
    if (verb == "up" || verb == "down") {
      need(3, "link up USER [--ip ADDRESS]... [--prefix PREFIX] [--session ID] [--nas NAS] | "
              "link down USER [--session ID] [--family ipv4|ipv6]");
      a->set("user", words[2]);
      for (std::size_t i = 3; i < words.size(); ++i) {
        auto value = [&]() -> std::string {
          if (i + 1 >= words.size()) fail(words[i] + " needs a value");
          return words[++i];
        };
        if (words[i] == "--ip") {
          if (!a->has("addresses")) a->set("addresses", Array::Ptr(new Array));
          a->getArray("addresses")->add(value());
        } else if (words[i] == "--prefix") a->set("prefix", value());
        else if (words[i] == "--family" && verb == "down") a->set("family", value());
        else if (words[i] == "--session") a->set("session", value());
        else if (words[i] == "--nas") a->set("nas", value());
        else fail("unknown option " + words[i]);
      }
      return send(socket_path, "link." + verb, a, json);
    }
    if (verb == "list") return send(socket_path, "link.list", a, json);
  } else if (group == "status") {
    return send(socket_path, "status", a, json);
  } else if (group == "cluster") {
    if (verb != "status" || words.size() != 2) fail("usage: flushgate cluster status [--json]");
    return send(socket_path, "cluster.status", a, json);
  } else if (group == "events") {
    for (std::size_t i = 1; i < words.size(); ++i) {
      if (words[i] == "--limit" && i + 1 < words.size()) a->set("limit", words[++i]);
      else fail("usage: flushgate events [--limit N]");
    }
    return send(socket_path, "events", a, json);
  } else if (group == "doctor") {
    if (words.size() != 2) fail("usage: flushgate doctor DOMAIN");
    a->set("domain", words[1]);
    auto report = request(socket_path, "doctor", a).extract<Object::Ptr>();
    if (json) {
      std::ostringstream out;
      report->stringify(out, 2);
      std::cout << out.str() << "\n";
    } else {
      print_result("doctor", report);
    }
    const std::string worst = report->getValue<std::string>("worst");
    return worst == "warning" || worst == "error" ? 1 : 0;
  } else if (group == "flush") {
    need(2, "flush NAME [--wait] [--timeout SECONDS]");
    a->set("name", words[1]);
    bool wait = false;
    long timeout = 3600;
    for (std::size_t i = 2; i < words.size(); ++i) {
      if (words[i] == "--wait") wait = true;
      else if (words[i] == "--timeout" && i + 1 < words.size()) timeout = std::stol(words[++i]);
      else fail("usage: flushgate flush NAME [--wait] [--timeout SECONDS]");
    }
    if (!wait) return send(socket_path, "flush", a, json);
    return flush_and_wait(socket_path, a, timeout);
  } else if (group == "queue") {
    if (verb == "list") {
      for (std::size_t i = 2; i < words.size(); ++i) {
        if (words[i] == "--customer" && i + 1 < words.size()) a->set("customer", words[++i]);
        else if (words[i] == "--limit" && i + 1 < words.size()) a->set("limit", words[++i]);
        else fail("usage: flushgate queue list [--customer NAME] [--limit N]");
      }
      return send(socket_path, "queue.list", a, json);
    }
    if (verb == "show") {
      need(3, "queue show ID");
      a->set("qid", words[2]);
      return send(socket_path, "queue.show", a, json);
    }
    if (verb == "hold" || verb == "release" || verb == "delete") {
      need(3, "queue hold|release|delete ID [ID ...]");
      Array::Ptr ids = new Array;
      for (std::size_t i = 2; i < words.size(); ++i) ids->add(words[i]);
      a->set("qids", ids);
      return send(socket_path, "queue." + verb, a, json);
    }
    if (verb == "summary") {
      for (std::size_t i = 2; i < words.size(); ++i) {
        if (words[i] == "--customer" && i + 1 < words.size()) a->set("customer", words[++i]);
        else fail("usage: flushgate queue summary [--customer NAME]");
      }
      return send(socket_path, "queue.summary", a, json);
    }
  }
  fail("unknown command \"" + group + (verb.empty() ? "" : " " + verb) + "\" (see flushgate help)");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const cli_error& e) {
    std::cerr << "flushgate: " << e.message << "\n";
    return e.status;
  } catch (const std::exception& e) {
    std::cerr << "flushgate: " << e.what() << "\n";
    return 1;
  }
}
