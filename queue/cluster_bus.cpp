// cluster_bus.cpp — see cluster_bus.hpp.
#include "queue/cluster_bus.hpp"

#include "core/log.hpp"

#include <boost/asio/post.hpp>

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace flushgate::queue {

namespace {

constexpr const char* channel_listen = "LISTEN flushgate";
constexpr const char* send_one = "SELECT pg_notify('flushgate', $1)";
constexpr std::size_t max_payload = 1000;
// With no traffic for this long the connection is probed (SELECT 1), so a
// server that went away without closing the socket is noticed.
constexpr auto probe_after = std::chrono::seconds(10);

constexpr std::array kind_names = {
    std::pair{cluster_signal::kind::mail, "mail"},
    std::pair{cluster_signal::kind::link, "link"},
    std::pair{cluster_signal::kind::customer, "customer"},
    std::pair{cluster_signal::kind::flush, "flush"},
    std::pair{cluster_signal::kind::lease_free, "lease_free"},
};

bool ok_result(PGresult* r) {
  const auto st = PQresultStatus(r);
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

std::string one_line(const char* text) {
  std::string s = text != nullptr ? text : "";
  for (char& c : s) {
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// The server's notices (a shutdown warning) go to the debug log, not stderr.
void log_notice(void*, const char* message) { core::log_debug("cluster bus: server says: {}", one_line(message)); }

}  // namespace

const char* to_string(cluster_signal::kind k) noexcept {
  for (const auto& [kind, name] : kind_names) {
    if (kind == k) return name;
  }
  return "?";
}

std::string encode_signal(const cluster_signal& s) {
  std::string text = s.text;
  std::replace(text.begin(), text.end(), '\t', ' ');
  std::string out = s.node + '\t' + s.to + '\t' + to_string(s.what) + '\t' +
                    std::to_string(s.customer_id) + '\t';
  out += text.substr(0, max_payload > out.size() ? max_payload - out.size() : 0);
  return out;
}

std::optional<cluster_signal> decode_signal(std::string_view payload) {
  if (payload.size() > max_payload) return std::nullopt;
  std::array<std::string_view, 5> fields;
  for (std::size_t i = 0; i < 4; ++i) {
    const auto tab = payload.find('\t');
    if (tab == std::string_view::npos) return std::nullopt;
    fields[i] = payload.substr(0, tab);
    payload.remove_prefix(tab + 1);
  }
  fields[4] = payload;
  cluster_signal s;
  s.node = std::string(fields[0]);
  if (s.node.empty()) return std::nullopt;
  s.to = std::string(fields[1]);
  bool known = false;
  for (const auto& [kind, name] : kind_names) {
    if (fields[2] == name) {
      s.what = kind;
      known = true;
    }
  }
  if (!known) return std::nullopt;
  const auto* end = fields[3].data() + fields[3].size();
  auto [p, ec] = std::from_chars(fields[3].data(), end, s.customer_id);
  if (ec != std::errc{} || p != end || s.customer_id <= 0) return std::nullopt;
  s.text = std::string(fields[4]);
  return s;
}

cluster_bus::cluster_bus(boost::asio::any_io_executor ex, cluster_bus_options options,
                         signal_handler on_signal, listening_handler on_listening)
    : ex_(std::move(ex)),
      options_(std::move(options)),
      on_signal_(std::move(on_signal)),
      on_listening_(std::move(on_listening)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error(std::string("cluster bus: eventfd: ") + std::strerror(errno));
}

cluster_bus::~cluster_bus() {
  stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void cluster_bus::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { thread_main(); });
}

void cluster_bus::stop() {
  stopping_ = true;
  wake();
  if (thread_.joinable()) thread_.join();
}

void cluster_bus::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void cluster_bus::publish(cluster_signal s) {
  s.node = options_.node_name;
  std::string payload = encode_signal(s);
  {
    std::lock_guard lock(mutex_);
    // The same signal still waiting says nothing new (a burst of mail for
    // one customer becomes one signal).
    if (std::find(pending_.begin(), pending_.end(), payload) != pending_.end()) return;
    if (pending_.size() >= options_.max_pending || !counters_.listening) {
      ++counters_.dropped;
      return;
    }
    pending_.push_back(std::move(payload));
  }
  wake();
}

cluster_bus::counters cluster_bus::stats() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

// One connection's life per pass of the outer loop: connect, LISTEN, tell
// the owner to reconcile, then serve until the connection breaks or stop().
void cluster_bus::thread_main() {
  auto backoff = options_.min_retry;
  bool lost_logged = false;
  bool ever_connected = false;
  while (!stopping_) {
    // A connect_timeout unless the conninfo names one (it comes later, so
    // it wins): stop() waits for this thread, and an unreachable server
    // must not hold a shutdown for the kernel's minutes of SYN retries.
    const char* conn_keywords[] = {"connect_timeout", "dbname", nullptr};
    const char* conn_values[] = {"10", options_.conninfo.c_str(), nullptr};
    PGconn* conn = PQconnectdbParams(conn_keywords, conn_values, 1);
    bool up = conn != nullptr && PQstatus(conn) == CONNECTION_OK;
    if (up) {
      PQsetNoticeProcessor(conn, log_notice, nullptr);
      PGresult* r = PQexec(conn, channel_listen);
      up = ok_result(r);
      PQclear(r);
    }
    if (!up) {
      if (!lost_logged) {
        core::log_warning("cluster bus: cannot listen ({}); retrying with backoff up to {} ms",
                          one_line(conn != nullptr ? PQerrorMessage(conn) : "out of memory"),
                          options_.max_retry.count());
        lost_logged = true;
      }
      PQfinish(conn);
      // Waits out the backoff, waking early on stop().
      pollfd pf{wake_fd_, POLLIN, 0};
      ::poll(&pf, 1, static_cast<int>(backoff.count()));
      std::uint64_t drained = 0;
      [[maybe_unused]] auto n = ::read(wake_fd_, &drained, sizeof drained);
      backoff = std::min(backoff * 2, options_.max_retry);
      continue;
    }
    if (lost_logged || ever_connected) {
      core::log_info("cluster bus: listening again");
      std::lock_guard lock(mutex_);
      ++counters_.reconnects;
    }
    lost_logged = false;
    ever_connected = true;
    backoff = options_.min_retry;
    {
      std::lock_guard lock(mutex_);
      counters_.listening = true;
    }
    if (on_listening_) boost::asio::post(ex_, on_listening_);

    // Hands every notification libpq has read to the owner's executor.
    auto drain = [&] {
      while (PGnotify* n = PQnotifies(conn)) {
        auto s = decode_signal(n->extra != nullptr ? n->extra : "");
        PQfreemem(n);
        std::lock_guard lock(mutex_);
        if (!s) {
          ++counters_.dropped;
          continue;
        }
        if (s->node == options_.node_name) continue;
        if (!s->to.empty() && s->to != options_.node_name) continue;
        ++counters_.received;
        if (on_signal_) boost::asio::post(ex_, [this, sig = std::move(*s)] { on_signal_(sig); });
      }
    };
    auto last_traffic = std::chrono::steady_clock::now();
    bool broken = false;
    while (!stopping_ && !broken) {
      std::array<pollfd, 2> fds{pollfd{PQsocket(conn), POLLIN, 0}, pollfd{wake_fd_, POLLIN, 0}};
      const int ready = ::poll(fds.data(), fds.size(), 1000);
      if (ready < 0 && errno != EINTR) break;
      if (fds[1].revents != 0) {
        std::uint64_t drained = 0;
        [[maybe_unused]] auto n = ::read(wake_fd_, &drained, sizeof drained);
      }
      if (fds[0].revents != 0) {
        if (PQconsumeInput(conn) == 0) {
          broken = true;
          break;
        }
        last_traffic = std::chrono::steady_clock::now();
        drain();
      }
      std::deque<std::string> batch;
      {
        std::lock_guard lock(mutex_);
        batch.swap(pending_);
      }
      for (auto& payload : batch) {
        const char* values[] = {payload.c_str()};
        PGresult* r = PQexecParams(conn, send_one, 1, nullptr, values, nullptr, nullptr, 0);
        const bool sent = ok_result(r);
        PQclear(r);
        std::lock_guard lock(mutex_);
        ++(sent ? counters_.sent : counters_.dropped);
        if (!sent) broken = true;
      }
      if (!batch.empty()) last_traffic = std::chrono::steady_clock::now();
      if (!broken && std::chrono::steady_clock::now() - last_traffic > probe_after) {
        PGresult* r = PQexec(conn, "SELECT 1");
        broken = !ok_result(r);
        PQclear(r);
        last_traffic = std::chrono::steady_clock::now();
      }
      drain();
    }
    {
      std::lock_guard lock(mutex_);
      counters_.listening = false;
      counters_.dropped += pending_.size();
      pending_.clear();
    }
    if (broken && !stopping_) {
      core::log_warning("cluster bus: connection lost ({}); reconnecting",
                        one_line(PQerrorMessage(conn)));
      lost_logged = true;
    }
    PQfinish(conn);
  }
}

}  // namespace flushgate::queue
