// dns_doctor.cpp — gather a domain's mail DNS over c-ares, then judge it.
//
// Two halves: dns_channel (a c-ares channel driven from one coroutine on a
// strand) collects facts into domain_facts; analyse() turns facts plus the
// customer into findings and never touches the network.
#include "gateway/dns/dns_doctor.hpp"
#include "gateway/dns/dns_answer.hpp"

#include <ares.h>
#include <arpa/inet.h>
#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "core/log.hpp"

namespace flushgate::gateway {

namespace asio = boost::asio;
using asio::ip::address;
using std::chrono::steady_clock;

namespace {

constexpr std::size_t dns_header_size = 12;  // RFC 1035 §4.1.1
// A round waits for one event (a socket or c-ares's next timeout); the
// deadline ends it in time, this in count.
constexpr int max_rounds_per_batch = 10000;
constexpr int max_cname_answers = 64;  // answer records looked at per message

// ---------------------------------------------------------------------------
// Lookups



// c-ares's status in an operator's words (c-ares 1.18 reports REFUSED and
// SERVFAIL from every server as ECONNREFUSED).
std::string describe_status(const dns_answer& a) {
  switch (a.status) {
    case ARES_ETIMEOUT: return "no answer in time";
    case ARES_ECONNREFUSED:
      return "no name server gave an answer: refused, server failure or unreachable";
    case ARES_ESERVFAIL: return "the name server reported a failure (SERVFAIL)";
    case ARES_EREFUSED: return "the name server refused the query (REFUSED)";
    case ARES_EBADRESP: return "malformed answer";
    case ARES_ENOTFOUND: return "name not found, without an NXDOMAIN answer";
    default: return ares_strerror(a.status);
  }
}


bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// An expanded name from `msg` at `p`; advances `p` past it. False on a bad name.
bool read_name(const std::vector<unsigned char>& msg, std::size_t& p, std::string& out) {
  char* s = nullptr;
  long len = 0;
  if (p >= msg.size() || ares_expand_name(msg.data() + p, msg.data(), static_cast<int>(msg.size()),
                                          &s, &len) != ARES_SUCCESS) {
    return false;
  }
  out = s;
  ares_free_string(s);
  p += static_cast<std::size_t>(len);
  return true;
}

std::size_t read_u16(const std::vector<unsigned char>& msg, std::size_t p) {
  return (static_cast<std::size_t>(msg[p]) << 8) | msg[p + 1];
}

// The target of a CNAME owned by `owner` in the answer section of `msg`
// (RFC 1035 §4.1), "" when there is none or the message is malformed.
std::string find_cname(const std::vector<unsigned char>& msg, const std::string& owner) {
  if (msg.size() < dns_header_size) return "";
  const std::size_t questions = read_u16(msg, 4);
  const std::size_t answers = read_u16(msg, 6);
  std::size_t p = dns_header_size;
  std::string name;
  for (std::size_t i = 0; i < questions && i < 4; ++i) {
    if (!read_name(msg, p, name) || p + 4 > msg.size()) return "";
    p += 4;  // QTYPE, QCLASS
  }
  for (std::size_t i = 0; i < answers && i < max_cname_answers; ++i) {
    if (!read_name(msg, p, name) || p + 10 > msg.size()) return "";
    const std::size_t type = read_u16(msg, p);
    const std::size_t klass = read_u16(msg, p + 2);
    const std::size_t rdlength = read_u16(msg, p + 8);
    p += 10;  // TYPE, CLASS, TTL, RDLENGTH
    if (p + rdlength > msg.size()) return "";
    if (type == dns_type_cname && klass == dns_class_in && same_name(name, owner)) {
      std::size_t q = p;
      std::string target;
      if (!read_name(msg, q, target)) return "";
      return target;
    }
    p += rdlength;
  }
  return "";
}

lookup_status parse_addresses(const dns_answer& a, int type, std::size_t cap,
                              std::vector<address>& out) {
  const lookup_status st = classify(a);
  if (st != lookup_status::found) return st;
  int count = static_cast<int>(cap);
  int rc = ARES_SUCCESS;
  const auto* data = a.message.data();
  const int size = static_cast<int>(a.message.size());
  if (type == dns_type_a) {
    std::vector<ares_addrttl> ttls(cap);
    rc = ares_parse_a_reply(data, size, nullptr, ttls.data(), &count);
    for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
      out.emplace_back(
          asio::ip::address_v4(ntohl(ttls[static_cast<std::size_t>(i)].ipaddr.s_addr)));
    }
  } else {
    std::vector<ares_addr6ttl> ttls(cap);
    rc = ares_parse_aaaa_reply(data, size, nullptr, ttls.data(), &count);
    for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
      asio::ip::address_v6::bytes_type bytes;
      std::memcpy(bytes.data(), ttls[static_cast<std::size_t>(i)].ip6addr._S6_un._S6_u8,
                  bytes.size());
      out.emplace_back(asio::ip::address_v6(bytes));
    }
  }
  if (rc == ARES_ENODATA) return lookup_status::nodata;
  if (rc != ARES_SUCCESS) return lookup_status::temporary;
  return count > 0 ? lookup_status::found : lookup_status::nodata;
}

// A and AAAA answers of one name folded together.
struct address_lookup {
  lookup_status status = lookup_status::nodata;
  std::vector<address> addresses;
  std::string cname;    // first CNAME target of the name, "" if none
  std::string failure;  // c-ares's word for a temporary failure
};

address_lookup fold_addresses(const dns_answer& a4, const dns_answer& a6, const std::string& name,
                              std::size_t cap) {
  address_lookup r;
  const lookup_status s4 = parse_addresses(a4, dns_type_a, cap, r.addresses);
  const lookup_status s6 = parse_addresses(a6, dns_type_aaaa, cap, r.addresses);
  r.status = combine(s4, s6);
  if (!r.addresses.empty()) r.status = lookup_status::found;
  if (r.addresses.size() > cap) r.addresses.resize(cap);
  r.cname = find_cname(a4.message, name);
  if (r.cname.empty()) r.cname = find_cname(a6.message, name);
  if (s4 == lookup_status::temporary)
    r.failure = describe_status(a4);
  else if (s6 == lookup_status::temporary)
    r.failure = describe_status(a6);
  return r;
}

// ---------------------------------------------------------------------------
// dns_channel: one c-ares channel, used by one coroutine running on strand_.
// c-ares reports its sockets through sock_state_cb; each round lends them to
// Asio only to wait for readiness (released again before c-ares runs, so a
// socket c-ares closes is never touched), then poll(…, 0) says which are
// ready and ares_process_fd does the I/O.

class dns_channel {
 public:
  // Opens a channel on `opts.servers`; nullptr and `error` set when it cannot.
  static std::unique_ptr<dns_channel> open(asio::strand<asio::any_io_executor> strand,
                                           const mx_options& opts, std::string& error);
  ~dns_channel();
  dns_channel(const dns_channel&) = delete;
  dns_channel& operator=(const dns_channel&) = delete;

  // Answers to `questions` (in order), all asked at once; must run on strand_.
  asio::awaitable<std::vector<dns_answer>> ask(std::vector<dns_question> questions);

 private:
  struct batch {
    std::vector<dns_answer> answers;
    std::size_t pending = 0;
    bool done = false;
  };
  struct query_context {
    std::shared_ptr<batch> owner;
    std::size_t index;
  };
  struct interest {
    bool read = false;
    bool write = false;
  };

  explicit dns_channel(asio::strand<asio::any_io_executor> strand) : strand_(std::move(strand)) {}
  static void on_answer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable);
  asio::awaitable<void> wait_for_sockets(steady_clock::time_point until);
  void process_ready();

  asio::strand<asio::any_io_executor> strand_;
  ares_channel channel_ = nullptr;
  std::map<ares_socket_t, interest> sockets_;
  std::chrono::milliseconds batch_limit_{0};
};

// A socket lent to Asio for one wait; never closed by it.
class borrowed_socket {
 public:
  borrowed_socket(const asio::strand<asio::any_io_executor>& strand, int fd) : descriptor_(strand) {
    boost::system::error_code ec;
    descriptor_.assign(fd, ec);
    if (ec) core::log_warning("doctor: cannot watch resolver socket {}: {}", fd, ec.message());
    ok_ = !ec;
  }
  ~borrowed_socket() {
    if (ok_) descriptor_.release();  // deregisters and aborts the wait; c-ares owns the fd
  }
  borrowed_socket(const borrowed_socket&) = delete;
  borrowed_socket& operator=(const borrowed_socket&) = delete;

  // Cancels `wake` once the socket is ready for `what`.
  void wake_on(asio::posix::descriptor_base::wait_type what,
               const std::shared_ptr<asio::steady_timer>& wake) {
    if (!ok_) return;
    descriptor_.async_wait(what, [wake](boost::system::error_code ec) {
      if (!ec) wake->cancel();
    });
  }

 private:
  asio::posix::stream_descriptor descriptor_;
  bool ok_ = false;
};

std::unique_ptr<dns_channel> dns_channel::open(asio::strand<asio::any_io_executor> strand,
                                               const mx_options& opts, std::string& error) {
  if (opts.timeout.count() < 1 || opts.timeout.count() > std::numeric_limits<int>::max() ||
      opts.tries < 1 || opts.tries > 10) {
    error = "the resolver timeout must be at least 1 ms and tries 1..10";
    return nullptr;
  }
  // ares_library_init is not thread-safe; once per process is enough (it
  // only counts on this platform, so mx_resolver's own call does not clash).
  static std::once_flag library_once;
  static int library_status = ARES_SUCCESS;
  std::call_once(library_once, [] { library_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (library_status != ARES_SUCCESS) {
    error = std::string("c-ares init: ") + ares_strerror(library_status);
    return nullptr;
  }

  std::unique_ptr<dns_channel> ch(new dns_channel(std::move(strand)));
  ares_options o{};
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  o.timeout = static_cast<int>(opts.timeout.count());  // milliseconds with ARES_OPT_TIMEOUTMS
  o.tries = opts.tries;
  o.sock_state_cb = &dns_channel::on_sock_state;
  o.sock_state_cb_data = ch.get();
  char lookups[] = "b";  // DNS only, never /etc/hosts
  o.lookups = lookups;
  const int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB |
                   ARES_OPT_LOOKUPS;
  if (const int rc = ares_init_options(&ch->channel_, &o, mask); rc != ARES_SUCCESS) {
    ch->channel_ = nullptr;
    error = std::string("c-ares channel: ") + ares_strerror(rc);
    return nullptr;
  }
  if (!opts.servers.empty()) {
    std::string csv;
    for (const auto& s : opts.servers) csv += (csv.empty() ? "" : ",") + s;
    if (const int rc = ares_set_servers_ports_csv(ch->channel_, csv.c_str()); rc != ARES_SUCCESS) {
      error = "bad dns_servers \"" + csv + "\": " + ares_strerror(rc);
      return nullptr;
    }
  }
  // Every server gets `tries` tries of `timeout`; c-ares's doubled later
  // timeouts are not waited for.
  long servers = 0;
  ares_addr_port_node* list = nullptr;
  if (ares_get_servers_ports(ch->channel_, &list) == ARES_SUCCESS) {
    for (auto* n = list; n != nullptr && servers < 64; n = n->next) ++servers;
    ares_free_data(list);
  }
  ch->batch_limit_ = opts.timeout * opts.tries * std::max(1L, servers);
  return ch;
}

dns_channel::~dns_channel() {
  // Completes pending queries with ARES_EDESTRUCTION (their batches are
  // done) and reports every socket closed through on_sock_state.
  if (channel_ != nullptr) ares_destroy(channel_);
}

void dns_channel::on_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf,
                            int alen) {
  // c-ares calls this exactly once per query, also from ares_destroy.
  std::unique_ptr<query_context> ctx(static_cast<query_context*>(arg));
  batch& b = *ctx->owner;
  if (b.done) return;  // the deadline came first
  dns_answer& a = b.answers[ctx->index];
  a.status = status;
  if (abuf != nullptr && alen > 0) a.message.assign(abuf, abuf + alen);
  --b.pending;
}

void dns_channel::on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  auto* self = static_cast<dns_channel*>(data);
  if (readable == 0 && writable == 0) {
    self->sockets_.erase(fd);  // c-ares is about to close it
  } else {
    self->sockets_[fd] = interest{readable != 0, writable != 0};
  }
}

asio::awaitable<std::vector<dns_answer>> dns_channel::ask(std::vector<dns_question> questions) {
  auto b = std::make_shared<batch>();
  b->answers.resize(questions.size());
  b->pending = questions.size();
  for (std::size_t i = 0; i < questions.size(); ++i) {
    // Freed by on_answer (which may run inside ares_query already).
    auto* ctx = new query_context{b, i};
    ares_query(channel_, questions[i].name.c_str(), dns_class_in, questions[i].type,
               &dns_channel::on_answer, ctx);
  }
  const auto deadline = steady_clock::now() + batch_limit_;
  for (int round = 0; b->pending > 0 && round < max_rounds_per_batch; ++round) {
    const auto now = steady_clock::now();
    if (now >= deadline) break;
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now);
    timeval max_wait{static_cast<time_t>(left.count() / 1000000),
                     static_cast<suseconds_t>(left.count() % 1000000)};
    timeval buf{};
    const timeval* next = ares_timeout(channel_, &max_wait, &buf);
    const auto until = next == nullptr ? deadline
                                       : now + std::chrono::seconds(next->tv_sec) +
                                             std::chrono::microseconds(next->tv_usec);
    co_await wait_for_sockets(until);
    process_ready();
  }
  b->done = true;  // late answers are dropped; ares_destroy ends them
  co_return std::move(b->answers);
}

asio::awaitable<void> dns_channel::wait_for_sockets(steady_clock::time_point until) {
  auto wake = std::make_shared<asio::steady_timer>(strand_, until);
  std::vector<std::unique_ptr<borrowed_socket>> lent;
  lent.reserve(sockets_.size());
  for (const auto& [fd, want] : sockets_) {
    auto& s = lent.emplace_back(std::make_unique<borrowed_socket>(strand_, fd));
    using wait_type = asio::posix::descriptor_base::wait_type;
    if (want.read) s->wake_on(wait_type::wait_read, wake);
    if (want.write) s->wake_on(wait_type::wait_write, wake);
  }
  auto wait = wake->async_wait(asio::as_tuple(asio::use_awaitable));
  co_await std::move(wait);
  // `lent` gives the sockets back here, before c-ares may close them.
}

void dns_channel::process_ready() {
  std::vector<pollfd> fds;
  fds.reserve(sockets_.size());
  for (const auto& [fd, want] : sockets_) {
    const short events = static_cast<short>((want.read ? POLLIN : 0) | (want.write ? POLLOUT : 0));
    fds.push_back(pollfd{fd, events, 0});
  }
  // Which sockets are ready now; never waits (the wait was Asio's).
  if (!fds.empty() && ::poll(fds.data(), fds.size(), 0) > 0) {
    for (const auto& p : fds) {
      const bool readable = (p.revents & (POLLIN | POLLERR | POLLHUP)) != 0 && (p.events & POLLIN);
      const bool writable =
          (p.revents & (POLLOUT | POLLERR | POLLHUP)) != 0 && (p.events & POLLOUT);
      if (!readable && !writable) continue;
      // A socket closed by an earlier call is unknown to c-ares: a no-op.
      ares_process_fd(channel_, readable ? p.fd : ARES_SOCKET_BAD,
                      writable ? p.fd : ARES_SOCKET_BAD);
    }
  }
  ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // retransmissions, timeouts
}

// ---------------------------------------------------------------------------
// Facts

enum class host_kind {
  host,            // a proper host name
  ip_literal,      // "192.0.2.1." — an address where a name belongs
  ip_with_origin,  // "192.0.2.1.example.net." — an address with the zone appended
  bad_name,        // not a letter-digit-hyphen host name
};

struct mx_host {
  std::string name;  // lower case, no trailing dot
  int preference = 0;
  host_kind kind = host_kind::host;
  address_lookup lookup;
  bool is_self = false;
};

struct domain_facts {
  std::string domain;
  std::string mx_failure;  // set when the MX lookup failed temporarily
  lookup_status mx_status = lookup_status::nodata;
  bool null_mx = false;
  std::size_t mx_dropped = 0;  // hosts beyond max_mx_records
  std::vector<mx_host> hosts;  // by preference, then name; empty without MX
  address_lookup own;          // the domain's own A/AAAA
  bool own_is_self = false;    // ... and they include the gateway
};

bool is_self_name(const std::string& name, const mx_options& opts) {
  return std::any_of(opts.self_names.begin(), opts.self_names.end(), [&](std::string n) {
    if (!n.empty() && n.back() == '.') n.pop_back();
    return same_name(n, name);
  });
}

// The dotted-quad address the first four labels of `name` spell, if they do.
std::optional<std::string> leading_ipv4(const std::string& name) {
  std::size_t p = 0;
  for (int i = 0; i < 4; ++i) {
    p = name.find('.', p);
    if (p == std::string::npos) {
      if (i == 3)
        p = name.size();
      else
        return std::nullopt;
    }
    ++p;
  }
  std::string quad = name.substr(0, p - 1);
  boost::system::error_code ec;
  asio::ip::make_address_v4(quad, ec);
  if (ec) return std::nullopt;
  return quad;
}

host_kind classify_host(std::string& name) {
  std::string raw = name;
  if (!raw.empty() && raw.back() == '.') raw.pop_back();
  boost::system::error_code ec;
  asio::ip::make_address(raw, ec);
  if (!ec) {
    name = raw;
    return host_kind::ip_literal;
  }
  if (!normalise_host_name(name)) {
    name = raw;
    return host_kind::bad_name;
  }
  const auto quad = leading_ipv4(name);
  if (quad && *quad != name) return host_kind::ip_with_origin;
  return host_kind::host;
}

// Step 1: MX, A and AAAA of the domain; step 2: A and AAAA of every MX
// host that is a host name.
asio::awaitable<domain_facts> gather(dns_channel& ch, const mx_options& opts, std::string domain) {
  domain_facts f;
  f.domain = domain;
  std::vector<dns_question> first;
  first.push_back({domain, dns_type_mx});
  first.push_back({domain, dns_type_a});
  first.push_back({domain, dns_type_aaaa});
  const auto answers = co_await ch.ask(std::move(first));
  f.own = fold_addresses(answers[1], answers[2], domain, opts.max_addresses_per_host);
  f.own_is_self = opts.holds_self_address(f.own.addresses);
  f.mx_status = classify(answers[0]);
  if (f.mx_status == lookup_status::temporary) f.mx_failure = describe_status(answers[0]);
  if (f.mx_status != lookup_status::found) co_return f;

  ares_mx_reply* records = nullptr;
  const int rc = ares_parse_mx_reply(answers[0].message.data(),
                                     static_cast<int>(answers[0].message.size()), &records);
  if (rc == ARES_ENODATA) {
    f.mx_status = lookup_status::nodata;  // e.g. only a CNAME to a name without MX
    co_return f;
  }
  if (rc != ARES_SUCCESS) {
    f.mx_status = lookup_status::temporary;
    f.mx_failure = std::string("bad MX answer: ") + ares_strerror(rc);
    co_return f;
  }
  // The message (at most 64 KiB) bounds the list.
  for (auto* r = records; r != nullptr; r = r->next) {
    std::string host = r->host != nullptr ? r->host : "";
    if (host.empty() || host == ".") {
      f.null_mx = true;  // RFC 7505 "MX 0 ."
      continue;
    }
    mx_host h;
    h.kind = classify_host(host);
    h.name = std::move(host);
    h.preference = r->priority;
    f.hosts.push_back(std::move(h));
  }
  ares_free_data(records);
  std::sort(f.hosts.begin(), f.hosts.end(), [](const mx_host& a, const mx_host& b) {
    return a.preference != b.preference ? a.preference < b.preference : a.name < b.name;
  });
  const auto dup =
      std::unique(f.hosts.begin(), f.hosts.end(), [](const mx_host& a, const mx_host& b) {
        return a.name == b.name && a.preference == b.preference;
      });
  f.hosts.erase(dup, f.hosts.end());
  if (f.hosts.size() > opts.max_mx_records) {
    f.mx_dropped = f.hosts.size() - opts.max_mx_records;
    f.hosts.resize(opts.max_mx_records);
  }

  std::vector<dns_question> second;
  std::vector<std::size_t> asked;  // index into hosts per question pair
  for (std::size_t i = 0; i < f.hosts.size(); ++i) {
    const auto k = f.hosts[i].kind;
    if (k != host_kind::host && k != host_kind::ip_with_origin) continue;
    second.push_back({f.hosts[i].name, dns_type_a});
    second.push_back({f.hosts[i].name, dns_type_aaaa});
    asked.push_back(i);
  }
  if (!second.empty()) {
    const auto host_answers = co_await ch.ask(std::move(second));
    for (std::size_t j = 0; j < asked.size(); ++j) {
      mx_host& h = f.hosts[asked[j]];
      h.lookup = fold_addresses(host_answers[2 * j], host_answers[2 * j + 1], h.name,
                                opts.max_addresses_per_host);
      // A real host that merely starts with four numbers is fine.
      if (h.kind == host_kind::ip_with_origin && !h.lookup.addresses.empty())
        h.kind = host_kind::host;
    }
  }
  for (auto& h : f.hosts) {
    if (h.kind == host_kind::host) {
      h.is_self = is_self_name(h.name, opts) || opts.holds_self_address(h.lookup.addresses);
    }
  }
  co_return f;
}

// ---------------------------------------------------------------------------
// Judgement

std::string join_addresses(const std::vector<address>& addrs) {
  std::string s;
  for (const auto& a : addrs) s += (s.empty() ? "" : ", ") + a.to_string();
  return s;
}

std::string describe_mx_line(const mx_host& h) {
  std::string what;
  switch (h.kind) {
    case host_kind::ip_literal: what = "an IP address, not a host name"; break;
    case host_kind::bad_name: what = "not a valid host name"; break;
    case host_kind::ip_with_origin:
    case host_kind::host:
      if (!h.lookup.cname.empty()) what = "CNAME to " + h.lookup.cname + ".; ";
      if (!h.lookup.addresses.empty()) {
        what += join_addresses(h.lookup.addresses);
      } else if (h.lookup.status == lookup_status::temporary) {
        what += "lookup failed: " + h.lookup.failure;
      } else if (h.lookup.status == lookup_status::nxdomain) {
        what += "does not exist";
      } else {
        what += "no address";
      }
      if (h.is_self) what += "; this gateway";
      break;
  }
  return fmt::format("{} {}. ({})", h.preference, h.name, what);
}

class judge {
 public:
  judge(const domain_facts& f, const mx_options& opts, const std::optional<doctor_customer>& c)
      : f_(f), opts_(opts), c_(c) {}

  std::vector<doctor_finding> run();

 private:
  void add(doctor_level level, std::string code, std::string text) {
    out_.push_back({level, std::move(code), std::move(text)});
  }
  bool check_domain();
  void check_hosts();
  void check_gateway();
  std::string gateway_name() const;

  const domain_facts& f_;
  const mx_options& opts_;
  const std::optional<doctor_customer>& c_;
  std::vector<doctor_finding> out_;
};

// The gateway's first own name, for texts and zone lines; a placeholder
// when none is configured (an address must never be suggested as an MX).
std::string judge::gateway_name() const {
  if (!opts_.self_names.empty()) {
    std::string n = opts_.self_names.front();
    if (normalise_host_name(n)) return n;
  }
  return "GATEWAY-HOST-NAME";
}

// Whether the domain has anything to look at; adds the domain-level findings.
bool judge::check_domain() {
  const std::string& d = f_.domain;
  if (f_.mx_status == lookup_status::temporary) {
    add(doctor_level::warning, "dns-lookup-failed",
        fmt::format("The check could not be completed: the MX lookup for {} failed ({}). "
                    "This is a DNS problem, not a verdict on the domain: try again later; if it "
                    "persists, check the domain's name servers (dig +trace {} MX) and the "
                    "gateway's dns_servers setting.",
                    d, f_.mx_failure, d));
    return false;
  }
  if (f_.mx_status == lookup_status::nxdomain) {
    add(doctor_level::error, "domain-not-found",
        fmt::format("{} does not exist in DNS (NXDOMAIN): senders bounce all mail for it at once. "
                    "Fix: check the spelling, and that the domain is registered and delegated to "
                    "name servers that serve it.",
                    d));
    return false;
  }
  if (f_.null_mx && f_.hosts.empty()) {
    if (c_) {
      add(doctor_level::error, "null-mx-customer",
          fmt::format("{} publishes a null MX (\"MX 0 .\", RFC 7505): it declares that it accepts "
                      "no mail, so senders bounce everything at once and customer {} will receive "
                      "nothing. Fix: replace the null MX with the customer's MX records, e.g. "
                      "\"{}. IN MX 10 mail.{}.\" and \"{}. IN MX 20 {}.\".",
                      d, c_->name, d, d, d, gateway_name()));
    } else {
      add(doctor_level::note, "null-mx",
          fmt::format("{} publishes a null MX (\"MX 0 .\", RFC 7505): it accepts no mail, and "
                      "senders bounce mail for it at once. Nothing to fix if that is intended.",
                      d));
    }
    return false;
  }
  if (f_.null_mx) {
    add(doctor_level::warning, "null-mx-mixed",
        fmt::format("{} has a null MX (\"MX 0 .\") besides other MX records. RFC 7505 §3 allows a "
                    "null MX only as the single MX record, and senders treat the mix differently "
                    "(some bounce). Fix: delete the \"0 .\" record if the domain receives mail, "
                    "or all the other MX records if it does not.",
                    d));
  }
  if (f_.mx_status == lookup_status::nodata) {
    if (!f_.own.addresses.empty()) {
      add(doctor_level::note, "implicit-mx",
          fmt::format("{} has no MX record, so senders deliver to the domain's own address ({}), "
                      "the implicit MX of RFC 5321 §5.1{}. If mail should go to a mail server, "
                      "add an MX record, e.g. \"{}. IN MX 10 mail.{}.\".",
                      d, join_addresses(f_.own.addresses),
                      f_.own_is_self ? ", which is this gateway" : "", d, d));
      return true;
    }
    if (f_.own.status == lookup_status::temporary) {
      add(doctor_level::warning, "dns-lookup-failed",
          fmt::format("The check could not be completed: {} has no MX record, and the lookup of "
                      "its own A/AAAA records failed ({}). Try again later.",
                      d, f_.own.failure));
      return false;
    }
    add(doctor_level::error, "no-mx-no-address",
        fmt::format("{} has neither MX nor A/AAAA records: no mail can arrive, senders bounce it. "
                    "Fix: add MX records, e.g. \"{}. IN MX 10 mail.{}.\" (and an A record for "
                    "that host).",
                    d, d, d));
    return false;
  }
  return true;
}

void judge::check_hosts() {
  const std::string& d = f_.domain;
  bool all_good = !f_.hosts.empty();
  for (const auto& h : f_.hosts) {
    const std::string record = fmt::format("\"{}. IN MX {} {}.\"", d, h.preference, h.name);
    switch (h.kind) {
      case host_kind::ip_literal:
        all_good = false;
        add(doctor_level::error, "mx-is-ip-address",
            fmt::format("The MX record {} names an IP address instead of a host. Senders look "
                        "\"{}\" up as a host name, find nothing and cannot deliver there. Fix: "
                        "give the server a name with an address record (e.g. \"mail.{}. IN A {}\") "
                        "and point the MX at that name.",
                        record, h.name, d, h.name));
        continue;
      case host_kind::ip_with_origin:
        all_good = false;
        add(doctor_level::error, "mx-is-ip-address",
            fmt::format("The MX record {} looks like the IP address {} with the zone name "
                        "appended (the zone file wrote an address, without a trailing dot, where "
                        "a host name belongs); the name has no address, so senders cannot "
                        "deliver there. Fix: point the MX at a host name with an A record for {}.",
                        record, leading_ipv4(h.name).value_or(""),
                        leading_ipv4(h.name).value_or("")));
        continue;
      case host_kind::bad_name:
        all_good = false;
        add(doctor_level::error, "mx-bad-name",
            fmt::format("The MX record {} does not name a valid host (only letters, digits, "
                        "hyphens and dots are allowed); senders and this gateway ignore it. Fix: "
                        "point the MX at a proper host name.",
                        record));
        continue;
      case host_kind::host: break;
    }
    if (h.lookup.addresses.empty()) {
      all_good = false;
      if (h.lookup.status == lookup_status::temporary) {
        add(doctor_level::warning, "mx-host-lookup-failed",
            fmt::format("Could not check MX host {} (record {}): its address lookup failed ({}). "
                        "Try again later; if it persists, check the name servers of {}.",
                        h.name, record, h.lookup.failure, h.name));
      } else {
        const std::string why =
            !h.lookup.cname.empty()
                ? "is an alias for " + h.lookup.cname + ", which has no A or AAAA record"
            : h.lookup.status == lookup_status::nxdomain ? "does not exist"
                                                         : "has no A or AAAA record";
        add(doctor_level::error, "mx-host-no-address",
            fmt::format("MX host {} (record {}) {}: senders cannot connect to it{}. Fix: add "
                        "\"{}. IN A ADDRESS\" for the mail server, or correct the MX record.",
                        h.name, record, why,
                        f_.hosts.size() > 1 ? " and lose time before trying the next MX"
                                            : ", so no mail can arrive",
                        h.name));
      }
    }
    if (!h.lookup.cname.empty()) {
      all_good = false;
      add(doctor_level::warning, "mx-is-cname",
          fmt::format("MX host {} (record {}) is an alias (CNAME for {}). An MX must name a host "
                      "with its own A/AAAA records (RFC 2181 §10.3, RFC 5321 §5.1): many senders "
                      "follow the alias, some refuse or misroute the mail. Fix: point the MX at "
                      "{}. directly.",
                      h.name, record, h.lookup.cname, h.lookup.cname));
    }
  }
  if (f_.mx_dropped > 0) {
    add(doctor_level::note, "mx-too-many",
        fmt::format("{} has {} more MX hosts than the {} checked (the best ones); senders rarely "
                    "try that many.",
                    d, f_.mx_dropped, opts_.max_mx_records));
  }
  if (all_good) {
    add(doctor_level::ok, "mx-hosts-ok",
        f_.hosts.size() == 1
            ? fmt::format("The MX host of {} has an address and is no alias.", d)
            : fmt::format("All {} MX hosts of {} have addresses, and none is an alias.",
                          f_.hosts.size(), d));
  }
}

void judge::check_gateway() {
  const std::string& d = f_.domain;
  // Where the gateway stands: as a named MX host, or as the implicit MX.
  std::optional<int> gw_pref;
  std::string gw_host;
  for (const auto& h : f_.hosts) {
    if (h.is_self && (!gw_pref || h.preference < *gw_pref)) {
      gw_pref = h.preference;
      gw_host = h.name;
    }
  }
  if (f_.hosts.empty() && f_.mx_status == lookup_status::nodata && f_.own_is_self) {
    gw_pref = 0;
    gw_host = d + " (implicit MX)";
  }
  // The other MX hosts: the customer's own servers, in the usual set-up.
  std::optional<int> best_other;       // any other MX host
  std::optional<int> best_other_live;  // ... that has an address
  std::string best_other_name;
  for (const auto& h : f_.hosts) {
    if (h.is_self || h.kind != host_kind::host) continue;
    if (!best_other) {
      best_other = h.preference;
      best_other_name = h.name;
    }
    if (!h.lookup.addresses.empty() && !best_other_live) best_other_live = h.preference;
  }

  if (!c_) {
    if (gw_pref) {
      add(doctor_level::error, "gateway-mx-no-customer",
          fmt::format("This gateway is an MX for {} ({}, preference {}), but no customer owns {}: "
                      "the gateway refuses every message for it with 550 5.7.1 (it is no open "
                      "relay), so senders that reach the gateway bounce the mail. Fix: add the "
                      "customer (flushgate customer add NAME --domain {} ...), or remove the "
                      "gateway's MX record from the zone of {}.",
                      d, gw_host, *gw_pref, d, d, d));
    } else {
      add(doctor_level::note, "not-a-customer",
          fmt::format("No customer of this gateway owns {}, and its MX records do not name the "
                      "gateway: the gateway has no part in its mail.",
                      d));
    }
    return;
  }

  const doctor_customer& c = *c_;
  const char* mode = queue::to_string(c.mode);
  if (!gw_pref) {
    if (c.state == queue::customer_state::disabled) {
      add(doctor_level::note, "customer-disabled",
          fmt::format("Customer {} (owner of {}) is disabled; the gateway would refuse its mail, "
                      "and the MX records do not name the gateway anyway.",
                      c.name, d));
      return;
    }
    // hold and odmr keep mail at the gateway: it has to arrive there first.
    const bool needs_gateway = c.mode != queue::delivery_mode::relay;
    const std::string targets = best_other ? best_other_name : std::string("the listed hosts");
    const std::string self = gateway_name();
    const std::string text =
        needs_gateway ? fmt::format(
                            "The MX records of {} do not name this gateway ({}): senders deliver "
                            "only to {}, so customer {} (mode {}) gets only the mail the ISP "
                            "routes to the gateway by other means. Fix: make the gateway the MX, "
                            "e.g. \"{}. IN MX 10 {}.\". If the gateway is listed under another "
                            "name, add that name to smtp_self_names.",
                            d, self, targets, c.name, mode, d, self)
                      : fmt::format(
                            "The MX records of {} do not name this gateway ({}): senders deliver "
                            "only to {} and never fall back to the gateway while the customer's "
                            "server is unreachable (unless the ISP routes the mail to the gateway "
                            "by other means). Fix, if fallback is wanted: add \"{}. IN MX {} {}.\" "
                            "(a higher number than the customer's server). If the gateway is "
                            "listed under another name, add that name to smtp_self_names.",
                            d, self, targets, d, best_other ? *best_other + 10 : 20, self);
    add(needs_gateway ? doctor_level::warning : doctor_level::note, "gateway-not-in-mx", text);
    return;
  }

  switch (c.state) {
    case queue::customer_state::disabled:
      add(doctor_level::error, "gateway-mx-customer-disabled",
          fmt::format("This gateway is an MX for {} ({}, preference {}), but customer {} is "
                      "disabled: the gateway refuses every message for {} with 550 5.7.1, so "
                      "senders that reach it bounce the mail. Fix: flushgate customer enable {} "
                      "(or remove the gateway's MX record).",
                      d, gw_host, *gw_pref, c.name, d, c.name));
      return;
    case queue::customer_state::suspended:
      add(doctor_level::warning, "customer-suspended",
          fmt::format("Customer {} is suspended: the gateway answers 450 4.7.1 to new mail for "
                      "{}; senders retry for days and then bounce. Fix once settled: flushgate "
                      "customer enable {}.",
                      c.name, d, c.name));
      break;
    case queue::customer_state::enabled: break;
  }

  if (!best_other) {
    if (c.mode == queue::delivery_mode::relay) {
      add(doctor_level::note, "gateway-only-mx",
          fmt::format(
              "This gateway is the only MX of {}: all its mail passes through the gateway, "
              "which forwards it to the customer's route ({}).",
              d, c.route.empty() ? std::string("none set: held until a link is up") : c.route));
    } else {
      add(doctor_level::ok, "gateway-only-mx",
          fmt::format("This gateway is the only MX of {}: all mail is held here for customer {} "
                      "(mode {}), as intended.",
                      d, c.name, mode));
    }
  } else if (*gw_pref <= *best_other) {
    if (c.mode == queue::delivery_mode::odmr) {
      add(doctor_level::ok, "gateway-primary-mx",
          fmt::format("This gateway is the preferred MX of {} (preference {}): customer {} "
                      "fetches its mail with ATRN (mode odmr), as intended.",
                      d, *gw_pref, c.name));
    } else {
      add(doctor_level::warning, "gateway-preferred-over-customer",
          fmt::format("This gateway ({}, preference {}) is {} the customer's own server {} "
                      "(preference {}): senders hand {} of {}'s mail to the gateway, which "
                      "then holds or passes it on (mode {}): a detour and a delay even while the "
                      "customer's server is up. The usual set-up "
                      "is the customer's server first and the gateway as backup: give the gateway "
                      "the higher number, e.g. \"{}. IN MX {} {}.\" and \"{}. IN MX {} {}.\".",
                      gw_host, *gw_pref,
                      *gw_pref == *best_other ? "as preferred as" : "more preferred than",
                      best_other_name, *best_other, *gw_pref == *best_other ? "about half" : "all",
                      d, mode, d, 10, best_other_name, d, 20, gw_host));
    }
  } else {
    add(doctor_level::ok, "gateway-backup-mx",
        fmt::format("This gateway is a backup MX of {} (preference {}) behind the customer's "
                    "server {} (preference {}): the usual set-up.",
                    d, *gw_pref, best_other_name, *best_other));
  }

  // RFC 5321 §5.1: the gateway uses only MX hosts strictly better than itself.
  if (c.mode != queue::delivery_mode::odmr && c.route == "mx" &&
      !(best_other_live && *best_other_live < *gw_pref)) {
    add(doctor_level::error, "route-mx-loops",
        fmt::format("Customer {}'s route is \"mx\", but no MX host of {} with an address is more "
                    "preferred than this gateway: while no link of the customer is up, delivery "
                    "finds only the gateway itself and returns the mail as undeliverable "
                    "(5.4.6). Fix: flushgate customer set {} --route HOST[:PORT] (the customer's "
                    "server), or list the customer's server before the gateway in the MX records.",
                    c.name, d, c.name));
  }

  if (!c.has_recipient_list) {
    add(doctor_level::warning, "backup-mx-no-recipient-list",
        fmt::format("Customer {} has recipient check \"any\", so the gateway, as an MX of {}, "
                    "accepts mail for every local part, also addresses the customer's server will "
                    "refuse. That mail must then be bounced to its (mostly forged) senders: a backup "
                    "MX that takes every address is a spam back door. Fix: flushgate customer set {} "
                    "--recipient-check verify (or learn, or --recipients FILE for a list).",
                    c.name, d, c.name));
  }
}

std::vector<doctor_finding> judge::run() {
  if (check_domain()) {
    check_hosts();
    check_gateway();
  } else if (c_ && c_->state == queue::customer_state::disabled) {
    add(doctor_level::note, "customer-disabled",
        fmt::format("Customer {} (owner of {}) is disabled: the gateway refuses its mail.",
                    c_->name, f_.domain));
  }
  std::stable_sort(out_.begin(), out_.end(), [](const doctor_finding& a, const doctor_finding& b) {
    return static_cast<int>(a.level) > static_cast<int>(b.level);
  });
  return std::move(out_);
}

asio::awaitable<doctor_report> run_diagnosis(asio::strand<asio::any_io_executor> strand,
                                             mx_options dns, std::string domain,
                                             std::optional<doctor_customer> customer) {
  doctor_report report;
  report.domain = domain;
  std::string name = domain;
  if (!normalise_host_name(name)) {
    report.findings.push_back(
        {doctor_level::error, "domain-invalid",
         fmt::format("\"{}\" is not a valid domain name (letters, digits, hyphens and dots, at "
                     "most 253 characters, no empty label); nothing was looked up.",
                     domain)});
    co_return report;
  }
  report.domain = name;
  std::string error;
  auto channel = dns_channel::open(strand, dns, error);
  if (!channel) {
    report.findings.push_back(
        {doctor_level::error, "resolver-config",
         fmt::format("The check could not be started: the gateway's resolver settings are "
                     "unusable ({}). Fix the dns_servers setting.",
                     error)});
    co_return report;
  }
  auto facts = co_await gather(*channel, dns, name);
  channel.reset();
  for (const auto& h : facts.hosts) report.mx_lines.push_back(describe_mx_line(h));
  if (facts.null_mx) report.mx_lines.insert(report.mx_lines.begin(), "0 . (null MX: no mail)");
  judge j(facts, dns, customer);
  report.findings = j.run();
  co_return report;
}

}  // namespace

doctor_customer make_doctor_customer(const queue::customer& c) {
  // Any recipient check but "any" (the default without a list) stops the back door.
  const bool checked = c.recipient_check.empty() ? c.recipients.has_value() : c.recipient_check != "any";
  return {c.name, c.state, c.mode, c.route, checked};
}

asio::awaitable<doctor_report> diagnose_domain(asio::any_io_executor ex, mx_options dns,
                                               std::string domain,
                                               std::optional<doctor_customer> customer) {
  // Everything that touches the channel runs on one strand, also when `ex`
  // belongs to a thread pool.
  auto strand = asio::make_strand(std::move(ex));
  auto task = run_diagnosis(strand, std::move(dns), std::move(domain), std::move(customer));
  auto done = asio::co_spawn(strand, std::move(task), asio::use_awaitable);
  co_return co_await std::move(done);
}

std::string_view to_string(doctor_level level) noexcept {
  switch (level) {
    case doctor_level::ok: return "ok";
    case doctor_level::note: return "note";
    case doctor_level::warning: return "warning";
    case doctor_level::error: return "error";
  }
  return "?";
}

doctor_level worst_level(const doctor_report& report) noexcept {
  doctor_level worst = doctor_level::ok;
  for (const auto& f : report.findings) {
    if (static_cast<int>(f.level) > static_cast<int>(worst)) worst = f.level;
  }
  return worst;
}

std::string format_report(const doctor_report& report) {
  std::string out = fmt::format("{}\n", report.domain);
  if (!report.mx_lines.empty()) {
    out += "  MX records:\n";
    for (const auto& line : report.mx_lines) out += fmt::format("    {}\n", line);
  }
  for (const auto& f : report.findings) {
    out += fmt::format("  {:<8}{} [{}]\n", to_string(f.level), f.text, f.code);
  }
  return out;
}

}  // namespace flushgate::gateway
