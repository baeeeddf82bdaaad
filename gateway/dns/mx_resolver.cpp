// mx_resolver.cpp — c-ares driven by Asio; MX selection per RFC 5321 §5.1.
#include "gateway/dns/mx_resolver.hpp"
#include "gateway/dns/dns_answer.hpp"

#include "core/log.hpp"

#include <ares.h>
#include <arpa/inet.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace flushgate::gateway {

namespace asio = boost::asio;
using boost::asio::ip::address;

namespace {

// Boost 1.81 keeps error_category's destructor non-virtual; categories are
// never deleted through a base pointer, so -Wnon-virtual-dtor is a false alarm.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class mx_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "flushgate.mx"; }
  std::string message(int ev) const override {
    switch (static_cast<mx_errc>(ev)) {
      case mx_errc::ok: return "ok";
      case mx_errc::temporary: return "temporary DNS failure";
      case mx_errc::nxdomain: return "domain does not exist";
      case mx_errc::null_mx: return "domain accepts no mail (null MX)";
      case mx_errc::no_usable_hosts: return "no MX host has an address";
      case mx_errc::self_only: return "MX list points back to this gateway";
    }
    return "unknown mx error";
  }
};
#pragma GCC diagnostic pop



// One host's A and AAAA answers folded into an address list.
struct host_lookup {
  std::vector<address> addresses;
  lookup_status status = lookup_status::nodata;  // best status over both families
  bool via_cname = false;
};

lookup_status parse_a(const dns_answer& a, const std::string& name, std::size_t cap,
                      std::vector<address>& out, bool& via_cname) {
  const lookup_status st = classify(a);
  if (st != lookup_status::found) return st;
  std::vector<ares_addrttl> ttls(cap);
  int count = static_cast<int>(cap);
  hostent* host = nullptr;
  const int rc = ares_parse_a_reply(a.message.data(), static_cast<int>(a.message.size()), &host,
                                    ttls.data(), &count);
  if (host != nullptr) {
    // c-ares follows the CNAME chain inside the answer; h_name is its end.
    if (host->h_name != nullptr && strcasecmp(host->h_name, name.c_str()) != 0) via_cname = true;
    ares_free_hostent(host);
  }
  if (rc == ARES_ENODATA) return lookup_status::nodata;
  if (rc != ARES_SUCCESS) return lookup_status::temporary;
  for (int i = 0; i < count; ++i) {
    out.emplace_back(asio::ip::address_v4(ntohl(ttls[static_cast<std::size_t>(i)].ipaddr.s_addr)));
  }
  return count > 0 ? lookup_status::found : lookup_status::nodata;
}

lookup_status parse_aaaa(const dns_answer& a, const std::string& name, std::size_t cap,
                         std::vector<address>& out, bool& via_cname) {
  const lookup_status st = classify(a);
  if (st != lookup_status::found) return st;
  std::vector<ares_addr6ttl> ttls(cap);
  int count = static_cast<int>(cap);
  hostent* host = nullptr;
  const int rc = ares_parse_aaaa_reply(a.message.data(), static_cast<int>(a.message.size()),
                                       &host, ttls.data(), &count);
  if (host != nullptr) {
    if (host->h_name != nullptr && strcasecmp(host->h_name, name.c_str()) != 0) via_cname = true;
    ares_free_hostent(host);
  }
  if (rc == ARES_ENODATA) return lookup_status::nodata;
  if (rc != ARES_SUCCESS) return lookup_status::temporary;
  for (int i = 0; i < count; ++i) {
    asio::ip::address_v6::bytes_type bytes;
    std::memcpy(bytes.data(), ttls[static_cast<std::size_t>(i)].ip6addr._S6_un._S6_u8,
                bytes.size());
    out.emplace_back(asio::ip::address_v6(bytes));
  }
  return count > 0 ? lookup_status::found : lookup_status::nodata;
}


// Addresses in resolver order within each family; `prefer_ipv6` picks which
// family comes first. Capped at `cap` in total.
host_lookup collect_addresses(const dns_answer& a4, const dns_answer& a6, const std::string& name,
                              const mx_options& opts) {
  host_lookup h;
  std::vector<address> v4;
  std::vector<address> v6;
  const std::size_t cap = opts.max_addresses_per_host;
  const lookup_status s4 = parse_a(a4, name, cap, v4, h.via_cname);
  const lookup_status s6 = parse_aaaa(a6, name, cap, v6, h.via_cname);
  h.status = combine(s4, s6);
  auto& first = opts.prefer_ipv6 ? v6 : v4;
  auto& second = opts.prefer_ipv6 ? v4 : v6;
  h.addresses = std::move(first);
  h.addresses.insert(h.addresses.end(), second.begin(), second.end());
  if (h.addresses.size() > cap) h.addresses.resize(cap);
  return h;
}

// RFC 5321 §5.1: when the relay is in the list at `self_pref`, that level and
// every worse one go.
void drop_from_preference(std::vector<mx_target>& targets, int self_pref) {
  std::erase_if(targets, [&](const mx_target& t) { return t.preference >= self_pref; });
}

}  // namespace

const boost::system::error_category& mx_category() noexcept {
  static const mx_category_impl category;
  return category;
}

boost::system::error_code make_error_code(mx_errc e) noexcept {
  return {static_cast<int>(e), mx_category()};
}

// ---------------------------------------------------------------------------
// impl: the c-ares channel, the sockets it watches and its timer. Everything
// here except query() and shuffle_equal() runs on strand_.

class mx_resolver::impl : public std::enable_shared_from_this<impl> {
 public:
  impl(asio::any_io_executor ex, mx_options opts);
  ~impl();
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  void close();
  asio::awaitable<std::vector<dns_answer>> query(std::vector<dns_question> questions);
  void shuffle_equal(std::vector<mx_target>& targets);
  const mx_options& options() const { return opts_; }

 private:
  // One socket c-ares asked us to watch. The descriptor does not own the fd:
  // c-ares closes it, after telling us (readable = writable = 0).
  struct socket_watch {
    socket_watch(const asio::strand<asio::any_io_executor>& s, ares_socket_t f)
        : descriptor(s), fd(f) {}
    asio::posix::stream_descriptor descriptor;
    ares_socket_t fd;
    bool want_read = false;
    bool want_write = false;
    bool reading = false;
    bool writing = false;
    bool closed = false;
  };

  // The caller's completion handler, type-erased and move-only. (Boost
  // 1.81's any_completion_handler recurses when moved, so it is not used.)
  struct batch_completion {
    virtual ~batch_completion() = default;
    virtual void complete(std::vector<dns_answer> answers) = 0;
  };
  template <typename Function>
  struct batch_completion_for final : batch_completion {
    explicit batch_completion_for(Function f) : function(std::move(f)) {}
    void complete(std::vector<dns_answer> answers) override { function(std::move(answers)); }
    Function function;
  };

  // The questions of one query() call; finished once, by the last answer or
  // by the deadline, whichever is first.
  struct batch {
    batch(const asio::strand<asio::any_io_executor>& s, std::size_t n)
        : answers(n), deadline(s) {}
    std::vector<dns_answer> answers;
    std::size_t pending = 0;
    bool done = false;
    asio::steady_timer deadline;
    std::unique_ptr<batch_completion> handler;

    void finish() {
      if (done) return;
      done = true;
      deadline.cancel();
      const auto h = std::move(handler);
      h->complete(std::move(answers));
    }
  };

  struct query_context {
    std::shared_ptr<batch> owner;
    std::size_t index;
  };

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable);
  static void on_answer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
  void start(const std::shared_ptr<batch>& b, const std::vector<dns_question>& questions);
  void watch(ares_socket_t fd, bool readable, bool writable);
  void arm(const std::shared_ptr<socket_watch>& w);
  void update_timer();

  asio::strand<asio::any_io_executor> strand_;
  mx_options opts_;
  ares_channel channel_ = nullptr;
  asio::steady_timer timer_;
  std::unordered_map<ares_socket_t, std::shared_ptr<socket_watch>> sockets_;
  std::chrono::milliseconds batch_limit_{0};
  bool closed_ = false;
  std::mutex rng_mutex_;
  std::mt19937_64 rng_;
};

mx_resolver::impl::impl(asio::any_io_executor ex, mx_options opts)
    : strand_(asio::make_strand(std::move(ex))), opts_(std::move(opts)), timer_(strand_) {
  if (opts_.timeout.count() < 1 || opts_.timeout.count() > std::numeric_limits<int>::max()) {
    throw std::invalid_argument("mx_resolver: timeout must be 1ms or more (and fit an int)");
  }
  if (opts_.tries < 1 || opts_.tries > 10) {
    throw std::invalid_argument("mx_resolver: tries must be 1..10");
  }
  if (opts_.max_mx_records < 1 || opts_.max_addresses_per_host < 1) {
    throw std::invalid_argument("mx_resolver: record caps must be at least 1");
  }
  for (auto& n : opts_.self_names) {
    if (!n.empty() && n.back() == '.') n.pop_back();
    std::transform(n.begin(), n.end(), n.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  if (opts_.shuffle_seed != 0) {
    rng_.seed(opts_.shuffle_seed);
  } else {
    std::random_device rd;
    rng_.seed((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  }

  // ares_library_init is not thread-safe; once per process is enough.
  static std::once_flag library_once;
  static int library_status = ARES_SUCCESS;
  std::call_once(library_once, [] { library_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (library_status != ARES_SUCCESS) {
    throw std::runtime_error(std::string("c-ares init: ") + ares_strerror(library_status));
  }

  ares_options o{};
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  o.timeout = static_cast<int>(opts_.timeout.count());  // milliseconds with ARES_OPT_TIMEOUTMS
  o.tries = opts_.tries;
  o.sock_state_cb = &impl::on_sock_state;
  o.sock_state_cb_data = this;
  char lookups[] = "b";  // DNS only, never /etc/hosts (c-ares copies the string)
  o.lookups = lookups;
  const int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                   ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS;
  if (const int rc = ares_init_options(&channel_, &o, mask); rc != ARES_SUCCESS) {
    throw std::runtime_error(std::string("c-ares channel: ") + ares_strerror(rc));
  }

  if (!opts_.servers.empty()) {
    std::string csv;
    for (const auto& s : opts_.servers) {
      if (!csv.empty()) csv += ',';
      csv += s;
    }
    if (const int rc = ares_set_servers_ports_csv(channel_, csv.c_str()); rc != ARES_SUCCESS) {
      ares_destroy(channel_);
      channel_ = nullptr;
      throw std::invalid_argument("mx_resolver: bad server list \"" + csv +
                                  "\": " + ares_strerror(rc));
    }
  }

  // Our own cut-off for one batch: every server gets `tries` tries of
  // `timeout` each. c-ares doubles the timeout on later rounds; we do not
  // wait for that.
  long servers = 0;
  ares_addr_port_node* list = nullptr;
  if (ares_get_servers_ports(channel_, &list) == ARES_SUCCESS) {
    for (auto* n = list; n != nullptr; n = n->next) ++servers;
    ares_free_data(list);
  }
  batch_limit_ = opts_.timeout * opts_.tries * std::max(1L, servers);
}

mx_resolver::impl::~impl() { close(); }

void mx_resolver::impl::close() {
  if (closed_) return;
  closed_ = true;
  timer_.cancel();
  if (channel_ != nullptr) {
    // Completes every pending query with ARES_EDESTRUCTION and reports each
    // socket as unwatched (released in watch()) before closing it.
    ares_destroy(channel_);
    channel_ = nullptr;
  }
  for (auto& [fd, w] : sockets_) {
    w->closed = true;
    w->descriptor.release();
  }
  sockets_.clear();
}

void mx_resolver::impl::shuffle_equal(std::vector<mx_target>& targets) {
  // RFC 5321 §5.1: equal preferences MUST be tried in random order.
  std::lock_guard lock(rng_mutex_);
  auto first = targets.begin();
  while (first != targets.end()) {
    auto last = std::find_if(first, targets.end(),
                             [&](const mx_target& t) { return t.preference != first->preference; });
    std::shuffle(first, last, rng_);
    first = last;
  }
}

asio::awaitable<std::vector<dns_answer>> mx_resolver::impl::query(
    std::vector<dns_question> questions) {
  auto self = shared_from_this();
  auto initiate = [self](auto handler, std::vector<dns_question> qs) {
    // The result goes back through the caller's executor, never inline from
    // inside c-ares; the work guard keeps that executor alive meanwhile.
    auto work = asio::make_work_guard(asio::get_associated_executor(handler, self->strand_));
    auto b = std::make_shared<batch>(self->strand_, qs.size());
    auto complete = [h = std::move(handler), w = std::move(work)](
                        std::vector<dns_answer> answers) mutable {
      auto ex = w.get_executor();
      asio::post(ex, [h = std::move(h), a = std::move(answers)]() mutable {
        std::move(h)(std::move(a));
      });
      w.reset();
    };
    b->handler = std::make_unique<batch_completion_for<decltype(complete)>>(std::move(complete));
    asio::dispatch(self->strand_, [self, b, qs = std::move(qs)] { self->start(b, qs); });
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&,
                                          void(std::vector<dns_answer>)>(
      initiate, asio::use_awaitable, std::move(questions));
}

void mx_resolver::impl::start(const std::shared_ptr<batch>& b,
                              const std::vector<dns_question>& questions) {
  if (closed_) {
    for (auto& a : b->answers) a.status = ARES_EDESTRUCTION;
    b->finish();
    return;
  }
  if (questions.empty()) {
    b->finish();
    return;
  }
  b->pending = questions.size();
  b->deadline.expires_after(batch_limit_);
  b->deadline.async_wait([b](boost::system::error_code ec) {
    if (!ec) b->finish();  // unanswered questions keep ARES_ETIMEOUT
  });
  for (std::size_t i = 0; i < questions.size(); ++i) {
    // Freed by on_answer, which c-ares calls exactly once per query (also
    // from ares_destroy).
    auto* ctx = new query_context{b, i};
    ares_query(channel_, questions[i].name.c_str(), dns_class_in, questions[i].type,
               &impl::on_answer, ctx);
  }
  update_timer();
}

void mx_resolver::impl::on_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf,
                                  int alen) {
  std::unique_ptr<query_context> ctx(static_cast<query_context*>(arg));
  batch& b = *ctx->owner;
  if (b.done) return;  // the deadline came first
  dns_answer& a = b.answers[ctx->index];
  a.status = status;
  if (abuf != nullptr && alen > 0) a.message.assign(abuf, abuf + alen);
  if (--b.pending == 0) b.finish();
}

void mx_resolver::impl::on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<impl*>(data)->watch(fd, readable != 0, writable != 0);
}

void mx_resolver::impl::watch(ares_socket_t fd, bool readable, bool writable) {
  auto it = sockets_.find(fd);
  if (!readable && !writable) {
    // c-ares is about to close the fd: let go of it without closing it, so a
    // new socket that reuses the number is never touched by the old watch.
    if (it != sockets_.end()) {
      it->second->closed = true;
      it->second->descriptor.release();
      sockets_.erase(it);
    }
    return;
  }
  if (it == sockets_.end()) {
    auto w = std::make_shared<socket_watch>(strand_, fd);
    boost::system::error_code ec;
    w->descriptor.assign(fd, ec);
    if (ec) {
      // The query then ends at its deadline as a temporary failure.
      core::log_error("mx: cannot watch resolver socket {}: {}", fd, ec.message());
      return;
    }
    it = sockets_.emplace(fd, std::move(w)).first;
  }
  it->second->want_read = readable;
  it->second->want_write = writable;
  if (!closed_) arm(it->second);
}

void mx_resolver::impl::arm(const std::shared_ptr<socket_watch>& w) {
  using wait_type = asio::posix::descriptor_base::wait_type;
  auto on_ready = [self = shared_from_this(), w](wait_type which) {
    return [self, w, which](boost::system::error_code ec) {
      (which == wait_type::wait_read ? w->reading : w->writing) = false;
      if (w->closed || self->closed_) return;
      if (ec) {
        core::log_error("mx: resolver socket {} wait failed: {}", w->fd, ec.message());
        return;
      }
      if (which == wait_type::wait_read && w->want_read) {
        ares_process_fd(self->channel_, w->fd, ARES_SOCKET_BAD);
      } else if (which == wait_type::wait_write && w->want_write) {
        ares_process_fd(self->channel_, ARES_SOCKET_BAD, w->fd);
      }
      // ares_process_fd may have closed this socket (and even opened another
      // with the same number); only a live watch is re-armed.
      if (!w->closed) self->arm(w);
      self->update_timer();
    };
  };
  if (w->want_read && !w->reading) {
    w->reading = true;
    w->descriptor.async_wait(wait_type::wait_read, on_ready(wait_type::wait_read));
  }
  if (w->want_write && !w->writing) {
    w->writing = true;
    w->descriptor.async_wait(wait_type::wait_write, on_ready(wait_type::wait_write));
  }
}

void mx_resolver::impl::update_timer() {
  if (closed_) return;
  timeval buf{};
  const timeval* tv = ares_timeout(channel_, nullptr, &buf);
  if (tv == nullptr) {
    timer_.cancel();  // no query in flight
    return;
  }
  timer_.expires_after(std::chrono::seconds(tv->tv_sec) + std::chrono::microseconds(tv->tv_usec));
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->closed_) return;
    // No fd ready: this only retransmits or expires queries whose time is up.
    ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    self->update_timer();
  });
}

// ---------------------------------------------------------------------------
// mx_resolver

mx_resolver::mx_resolver(asio::any_io_executor ex, mx_options opts)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(opts))) {}

mx_resolver::~mx_resolver() { impl_->close(); }

asio::awaitable<boost::system::result<std::vector<mx_target>>> mx_resolver::resolve(
    std::string domain) {
  // The coroutine may outlive *this across a suspension; keep the impl.
  const auto self = impl_;
  const mx_options& opts = self->options();
  std::string name = std::move(domain);
  if (!normalise_host_name(name)) co_return mx_errc::nxdomain;

  // Step 1: MX records (RFC 5321 §5.1). The resolver follows a CNAME at the
  // domain itself.
  // (Questions are built outside the co_await: g++ 12 cannot keep an
  // initializer_list's array alive across a suspension.)
  std::vector<dns_question> mx_question;
  mx_question.push_back({name, dns_type_mx});
  const auto mx_answer = co_await self->query(std::move(mx_question));
  const dns_answer& mx = mx_answer.front();
  std::vector<mx_target> targets;
  bool implicit = false;
  switch (classify(mx)) {
    case lookup_status::nxdomain: co_return mx_errc::nxdomain;
    case lookup_status::temporary:
      core::log_info("mx: {}: MX lookup failed: {}", name, ares_strerror(mx.status));
      co_return mx_errc::temporary;
    case lookup_status::nodata: implicit = true; break;
    case lookup_status::found: {
      ares_mx_reply* records = nullptr;
      const int rc = ares_parse_mx_reply(mx.message.data(), static_cast<int>(mx.message.size()),
                                         &records);
      if (rc == ARES_ENODATA) {
        implicit = true;  // e.g. only a CNAME to a name without MX
        break;
      }
      if (rc != ARES_SUCCESS) {
        core::log_info("mx: {}: bad MX answer: {}", name, ares_strerror(rc));
        co_return mx_errc::temporary;
      }
      std::size_t total = 0;
      bool null_mx = false;
      for (auto* r = records; r != nullptr; r = r->next) {
        ++total;
        std::string host = r->host != nullptr ? r->host : "";
        if (host.empty() || host == ".") {
          // RFC 7505 §3: "MX 0 ." alone means no mail.
          null_mx = r->priority == 0;
          continue;
        }
        if (!normalise_host_name(host)) {
          core::log_warning("mx: {}: ignoring MX with bad host name {}", name, host);
          continue;
        }
        targets.push_back({std::move(host), r->priority, {}});
      }
      ares_free_data(records);
      if (null_mx && total == 1) co_return mx_errc::null_mx;
      if (null_mx) {
        core::log_warning("mx: {}: null MX among other MX records (RFC 7505 §3), ignoring it",
                          name);
      }
      if (targets.empty()) co_return mx_errc::no_usable_hosts;
      break;
    }
  }
  if (implicit) {
    // RFC 5321 §5.1: no MX → the domain itself as an MX at preference 0.
    targets.push_back({name, 0, {}});
  }

  // Step 2: best preference first, equal preferences shuffled, each host
  // once (at its best preference), at most max_mx_records of them.
  std::stable_sort(targets.begin(), targets.end(),
                   [](const mx_target& a, const mx_target& b) { return a.preference < b.preference; });
  std::unordered_set<std::string> seen;
  std::erase_if(targets, [&](const mx_target& t) { return !seen.insert(t.host).second; });
  self->shuffle_equal(targets);
  if (targets.size() > opts.max_mx_records) {
    core::log_warning("mx: {}: {} MX records, using the best {}", name, targets.size(),
                      opts.max_mx_records);
    targets.resize(opts.max_mx_records);
  }

  // Step 3: our own names (RFC 5321 §5.1): drop our level and worse ones
  // before spending queries on them.
  const auto self_by_name = std::find_if(targets.begin(), targets.end(), [&](const mx_target& t) {
    return std::find(opts.self_names.begin(), opts.self_names.end(), t.host) !=
           opts.self_names.end();
  });
  if (self_by_name != targets.end()) {
    drop_from_preference(targets, self_by_name->preference);
    if (targets.empty()) co_return mx_errc::self_only;
  }

  // Step 4: A and AAAA of every remaining host, all in one batch.
  std::vector<dns_question> questions;
  questions.reserve(targets.size() * 2);
  for (const auto& t : targets) {
    questions.push_back({t.host, dns_type_a});
    questions.push_back({t.host, dns_type_aaaa});
  }
  const auto answers = co_await self->query(std::move(questions));
  bool any_temporary = false;
  std::vector<bool> resolved(targets.size());
  for (std::size_t i = 0; i < targets.size(); ++i) {
    host_lookup h = collect_addresses(answers[2 * i], answers[2 * i + 1], targets[i].host, opts);
    if (h.via_cname && !implicit) {
      core::log_warning("mx: {}: MX host {} is a CNAME (RFC 2181 §10.3); following it", name,
                        targets[i].host);
    }
    if (h.status == lookup_status::temporary && h.addresses.empty()) any_temporary = true;
    targets[i].addresses = std::move(h.addresses);
  }

  // Step 5: our own addresses, then hosts without any address.
  const auto self_by_address =
      std::find_if(targets.begin(), targets.end(),
                   [&](const mx_target& t) { return opts.holds_self_address(t.addresses); });
  if (self_by_address != targets.end()) {
    drop_from_preference(targets, self_by_address->preference);
    if (targets.empty()) co_return mx_errc::self_only;
  }
  std::erase_if(targets, [](const mx_target& t) { return t.addresses.empty(); });
  if (targets.empty()) {
    co_return any_temporary ? mx_errc::temporary : mx_errc::no_usable_hosts;
  }
  co_return targets;
}

bool mx_options::holds_self_address(const std::vector<address>& addresses) const {
  return std::any_of(addresses.begin(), addresses.end(), [&](const address& a) {
    return std::find(self_addresses.begin(), self_addresses.end(), a) != self_addresses.end() ||
           std::any_of(self_networks.begin(), self_networks.end(),
                       [&](const core::ip_network& n) { return n.contains(a); });
  });
}

asio::awaitable<boost::system::result<std::vector<address>>> mx_resolver::resolve_host(
    std::string host) {
  const auto self = impl_;
  std::string name = std::move(host);
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  boost::system::error_code ec;
  const address literal = asio::ip::make_address(name, ec);
  if (!ec) co_return std::vector<address>{literal};
  if (!normalise_host_name(name)) co_return mx_errc::nxdomain;

  std::vector<dns_question> questions;
  questions.push_back({name, dns_type_a});
  questions.push_back({name, dns_type_aaaa});
  const auto answers = co_await self->query(std::move(questions));
  host_lookup h = collect_addresses(answers[0], answers[1], name, self->options());
  if (!h.addresses.empty()) co_return std::move(h.addresses);
  switch (h.status) {
    case lookup_status::nxdomain: co_return mx_errc::nxdomain;
    case lookup_status::temporary: co_return mx_errc::temporary;
    case lookup_status::found:
    case lookup_status::nodata: break;
  }
  co_return mx_errc::no_usable_hosts;
}

namespace {

// The PTR question for an address (RFC 1035 §3.5, RFC 3596 §2.5).
std::string reverse_query_name(const address& a) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string name;
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    for (auto i = b.size(); i-- > 0;) name += std::to_string(b[i]) + ".";
    return name + "in-addr.arpa";
  }
  const auto b = a.to_v6().to_bytes();
  for (auto i = b.size(); i-- > 0;) {
    name += hex[b[i] & 0x0f];
    name += '.';
    name += hex[b[i] >> 4];
    name += '.';
  }
  return name + "ip6.arpa";
}

}  // namespace

asio::awaitable<std::string> mx_resolver::reverse_name(address client) {
  const auto self = impl_;
  if (client.is_v6() && client.to_v6().is_v4_mapped()) {
    client = asio::ip::make_address_v4(asio::ip::v4_mapped, client.to_v6());
  }
  // Loopback names are in no public DNS: the system's resolver is not asked
  // about them (a query off the machine for every local client, and from
  // every test and benchmark). Servers named in dns_servers are asked about
  // every address (a private DNS, the tests' nsd, may hold such names).
  if (client.is_loopback() && self->options().servers.empty()) co_return std::string(unavailable_name);
  std::vector<dns_question> questions;
  questions.push_back({reverse_query_name(client), dns_type_ptr});
  const auto answers = co_await self->query(std::move(questions));
  const dns_answer& a = answers[0];
  if (a.status == ARES_ENOTFOUND || a.status == ARES_ENODATA) co_return unavailable_name;
  if (a.status != ARES_SUCCESS) co_return tempunavail_name;
  hostent* host = nullptr;
  const auto v4 = client.is_v4() ? client.to_v4().to_bytes() : asio::ip::address_v4::bytes_type{};
  const auto v6 = client.is_v6() ? client.to_v6().to_bytes() : asio::ip::address_v6::bytes_type{};
  const int rc = client.is_v4()
      ? ares_parse_ptr_reply(a.message.data(), static_cast<int>(a.message.size()), v4.data(),
                             static_cast<int>(v4.size()), AF_INET, &host)
      : ares_parse_ptr_reply(a.message.data(), static_cast<int>(a.message.size()), v6.data(),
                             static_cast<int>(v6.size()), AF_INET6, &host);
  if (rc == ARES_ENODATA || rc == ARES_ENOTFOUND) co_return unavailable_name;
  if (rc != ARES_SUCCESS || host == nullptr || host->h_name == nullptr) {
    if (host != nullptr) ares_free_hostent(host);
    co_return tempunavail_name;
  }
  std::string name = host->h_name;
  ares_free_hostent(host);
  if (!normalise_host_name(name)) co_return unavailable_name;
  // Forward confirmation: anyone can put any name in their own PTR records.
  auto forward = co_await resolve_host(name);
  if (!forward) {
    co_return forward.error() == mx_errc::temporary ? tempunavail_name : unavailable_name;
  }
  const bool confirmed = std::find(forward->begin(), forward->end(), client) != forward->end();
  co_return confirmed ? name : std::string(unavailable_name);
}

}  // namespace flushgate::gateway
