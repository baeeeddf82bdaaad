// sink.cpp — flushgate_sink: an SMTP sink for the benchmarks that answers
// first and counts, with timestamps (scripts/bench/flush, scripts/bench/slowlink).
//
// Usage: flushgate_sink --listen IP:PORT [--chunking] [--hostname NAME]
//                       [--expect N] [--status FILE] [--max-seconds S]
//
// Purpose: Postfix's smtp-sink -M N exits on the N-th message before it
//   answers, so the sender retries; this sink instead replies 250 to every
//   message and only then counts it, noting the wall-clock time (CLOCK_REALTIME,
//   nanoseconds, comparable with `date +%s%N`) at which the write holding that
//   250 went to the kernel. It speaks ESMTP with PIPELINING, 8BITMIME, SIZE,
//   ENHANCEDSTATUSCODES and, with --chunking, CHUNKING (BDAT, RFC 3030).
//   Replies to a pipelined group are sent together once the input read so far
//   is used up (RFC 2920 §3.2). Port 0 picks a free port. Prints
//   "ready PORT" on stdout once listening.
//   Status (one line of key=value pairs: messages, unique_ids, duplicate_ids,
//   no_id, content_bytes, wire_bytes, connections, first_ns, last_ns) is
//   written to --status (atomically, by rename) when --expect messages have
//   been answered, about once a second while the count changes, and on exit;
//   SIGTERM/SIGINT also print it on stdout and exit 0. content_bytes is the
//   message text without dot-stuffing and without the ending ".CRLF";
//   wire_bytes is what followed DATA's 354 (with both) or the BDAT octets.
//   Message-Id headers are collected to tell duplicates (redeliveries) apart.
// Security: benchmark tool; bounded: at most 1024 connections, a command
//   line of at most 4096 octets (longer closes the connection), a 300 s idle
//   timeout per connection, --max-seconds (default 3600) for the whole run.
// Errors: bad options or a socket that cannot be bound exit 2; a poll failure
//   exits 1.
// Limitations: accepts every sender and recipient; no STARTTLS, no AUTH; DSN
//   is announced but its parameters are ignored; one message counted per
//   transaction however many recipients; a connection closed with replies
//   still unsent loses them.
// See also: RFC 2920 §3.2, RFC 3030 §2-4, scripts/bench/README.md.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace {

constexpr std::size_t max_connections = 1024;
constexpr std::size_t max_command_line = 4096;
constexpr std::int64_t idle_timeout_ns = 300'000'000'000;

struct options {
  std::string listen_ip = "127.0.0.1";
  std::uint16_t listen_port = 0;
  bool chunking = false;
  std::string hostname = "sink.test";
  std::uint64_t expect = 0;
  std::string status_file;
  std::int64_t max_seconds = 3600;
};

std::int64_t wall_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char a = s[i];
    if (a >= 'a' && a <= 'z') a = static_cast<char>(a - 'a' + 'A');
    if (a != prefix[i]) return false;
  }
  return true;
}

template <typename T>
bool parse_number(std::string_view s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

// Counters over the whole run.
struct totals {
  std::uint64_t messages = 0, unique_ids = 0, duplicate_ids = 0, no_id = 0;
  std::uint64_t content_bytes = 0, wire_bytes = 0, connections = 0;
  std::int64_t first_ns = 0, last_ns = 0;
  std::unordered_set<std::string> ids;
};

// One SMTP connection. States: commands, DATA text, BDAT octets.
struct connection {
  enum class mode { command, data, bdat };
  int fd = -1;
  std::string in;              // unparsed input from `pos`
  std::size_t pos = 0;
  std::string out;             // replies not yet written
  std::uint64_t pending = 0;   // messages answered in `out`, not yet written
  mode m = mode::command;
  bool in_transaction = false, have_rcpt = false, in_headers = true, bdat_last = false;
  bool bdat_failed = false, closing = false;
  std::uint64_t bdat_left = 0;
  std::string header_line;     // the current header, with its continuations (BDAT)
  std::string message_id;
  std::int64_t last_active = 0;
};

class sink {
 public:
  explicit sink(options o) : opt_(std::move(o)) {}
  int run();

 private:
  void accept_all();
  void handle_input(connection& c);
  void process(connection& c);
  bool command(connection& c, std::string_view line);
  void data_line(connection& c, std::string_view line);
  void bdat_octets(connection& c, std::string_view chunk);
  void end_bdat(connection& c);
  void header_text(connection& c, std::string_view line);
  void finish_message(connection& c);
  void flush_output(connection& c);
  void write_status(bool final_run);
  std::string status_line() const;

  options opt_;
  int listen_fd_ = -1;
  std::vector<std::unique_ptr<connection>> conns_;
  totals t_;
  std::uint64_t status_written_for_ = ~std::uint64_t{0};
  bool expect_reported_ = false;
};

void sink::accept_all() {
  for (;;) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (conns_.size() >= max_connections) {
      static constexpr char busy[] = "421 4.3.2 too many connections\r\n";
      (void)!write(fd, busy, sizeof busy - 1);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<connection>();
    c->fd = fd;
    c->last_active = mono_ns();
    c->out = "220 " + opt_.hostname + " ESMTP flushgate_sink\r\n";
    ++t_.connections;
    flush_output(*c);
    conns_.push_back(std::move(c));
  }
}

// Headers: remember the Message-Id (the first one), up to the empty line.
void sink::header_text(connection& c, std::string_view line) {
  if (!c.in_headers) return;
  if (line.empty()) {
    c.in_headers = false;
    return;
  }
  if (c.message_id.empty() && iequals_prefix(line, "MESSAGE-ID:")) {
    std::string_view v = line.substr(11);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    c.message_id.assign(v.empty() ? std::string_view{"<>"} : v);
  }
}

void sink::finish_message(connection& c) {
  ++t_.messages;
  if (c.message_id.empty()) {
    ++t_.no_id;
  } else if (t_.ids.insert(c.message_id).second) {
    ++t_.unique_ids;
  } else {
    ++t_.duplicate_ids;
  }
  ++c.pending;
  c.out += "250 2.0.0 Ok: queued\r\n";
  c.in_transaction = c.have_rcpt = false;
  c.in_headers = true;
  c.message_id.clear();
  c.header_line.clear();
}

void sink::data_line(connection& c, std::string_view line) {
  // `line` excludes its CRLF.
  t_.wire_bytes += line.size() + 2;
  if (line == ".") {
    c.m = connection::mode::command;
    finish_message(c);
    return;
  }
  if (!line.empty() && line.front() == '.') line.remove_prefix(1);
  t_.content_bytes += line.size() + 2;
  header_text(c, line);
}

// BDAT octets arrive in arbitrary pieces; lines are put together only while
// the headers last.
void sink::bdat_octets(connection& c, std::string_view chunk) {
  t_.wire_bytes += chunk.size();
  if (!c.bdat_failed) t_.content_bytes += chunk.size();
  while (c.in_headers && !chunk.empty()) {
    auto nl = chunk.find('\n');
    if (nl == std::string_view::npos) {
      if (c.header_line.size() < max_command_line) c.header_line.append(chunk);
      return;
    }
    c.header_line.append(chunk.substr(0, nl + 1));
    chunk.remove_prefix(nl + 1);
    std::string_view l = c.header_line;
    while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.remove_suffix(1);
    header_text(c, l);
    c.header_line.clear();
  }
}

// One command line (without CRLF). Returns false when the connection ends.
bool sink::command(connection& c, std::string_view line) {
  if (iequals_prefix(line, "EHLO")) {
    c.out += "250-" + opt_.hostname + "\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-8BITMIME\r\n" +
             "250-ENHANCEDSTATUSCODES\r\n" + (opt_.chunking ? "250-CHUNKING\r\n" : "") +
             "250 DSN\r\n";
    c.in_transaction = c.have_rcpt = false;
  } else if (iequals_prefix(line, "HELO")) {
    c.out += "250 " + opt_.hostname + "\r\n";
    c.in_transaction = c.have_rcpt = false;
  } else if (iequals_prefix(line, "MAIL FROM:")) {
    if (c.in_transaction) {
      c.out += "503 5.5.1 nested MAIL command\r\n";
    } else {
      c.in_transaction = true;
      c.out += "250 2.1.0 Ok\r\n";
    }
  } else if (iequals_prefix(line, "RCPT TO:")) {
    if (!c.in_transaction) {
      c.out += "503 5.5.1 need MAIL command\r\n";
    } else {
      c.have_rcpt = true;
      c.out += "250 2.1.5 Ok\r\n";
    }
  } else if (iequals_prefix(line, "DATA") && line.size() == 4) {
    if (!c.have_rcpt) {
      c.out += "503 5.5.1 need RCPT command\r\n";
    } else {
      c.out += "354 End data with <CR><LF>.<CR><LF>\r\n";
      c.m = connection::mode::data;
      c.in_headers = true;
    }
  } else if (opt_.chunking && iequals_prefix(line, "BDAT ")) {
    std::string_view rest = line.substr(5);
    auto sp = rest.find(' ');
    std::string_view size = rest.substr(0, sp);
    std::string_view last = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
    std::uint64_t n = 0;
    if (!parse_number(size, n) || !(last.empty() || iequals_prefix(last, "LAST"))) {
      // The octets' length is unknown: the stream cannot stay in step.
      c.out += "501 5.5.4 syntax: BDAT size [LAST]\r\n";
      c.closing = true;
      return false;
    }
    c.bdat_left = n;
    c.bdat_last = !last.empty();
    c.bdat_failed = !c.have_rcpt;  // octets are consumed either way (RFC 3030 §2)
    c.m = connection::mode::bdat;
    if (n == 0) end_bdat(c);
  } else if (iequals_prefix(line, "RSET")) {
    c.in_transaction = c.have_rcpt = false;
    c.in_headers = true;
    c.message_id.clear();
    c.out += "250 2.0.0 Ok\r\n";
  } else if (iequals_prefix(line, "NOOP")) {
    c.out += "250 2.0.0 Ok\r\n";
  } else if (iequals_prefix(line, "QUIT")) {
    c.out += "221 2.0.0 Bye\r\n";
    c.closing = true;
    return false;
  } else {
    c.out += "502 5.5.2 command not recognised\r\n";
  }
  return true;
}

// The chunk's octets are all read: answer it.
void sink::end_bdat(connection& c) {
  c.m = connection::mode::command;
  if (c.bdat_failed) {
    c.out += "503 5.5.1 no valid recipients\r\n";
  } else if (c.bdat_last) {
    finish_message(c);
  } else {
    c.out += "250 2.0.0 Ok: chunk received\r\n";
  }
}

void sink::process(connection& c) {
  while (!c.closing && c.pos < c.in.size()) {
    std::string_view rest(c.in.data() + c.pos, c.in.size() - c.pos);
    if (c.m == connection::mode::bdat) {
      std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(c.bdat_left, rest.size()));
      bdat_octets(c, rest.substr(0, take));
      c.pos += take;
      c.bdat_left -= take;
      if (c.bdat_left == 0) end_bdat(c);
      continue;
    }
    auto nl = rest.find("\r\n");
    if (nl == std::string_view::npos) {
      if (c.m == connection::mode::command && rest.size() > max_command_line) c.closing = true;
      break;
    }
    std::string_view line = rest.substr(0, nl);
    c.pos += nl + 2;
    if (c.m == connection::mode::data) {
      data_line(c, line);
    } else if (!command(c, line)) {
      break;
    }
  }
  if (c.pos > 65536 && c.pos * 2 > c.in.size()) {
    c.in.erase(0, c.pos);
    c.pos = 0;
  }
}

void sink::handle_input(connection& c) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(c.fd, buf, sizeof buf);
    if (n > 0) {
      c.in.append(buf, static_cast<std::size_t>(n));
      c.last_active = mono_ns();
      if (static_cast<std::size_t>(n) < sizeof buf) break;
      continue;
    }
    if (n == 0) {
      c.closing = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      c.closing = true;
    }
    break;
  }
  process(c);
  flush_output(c);  // the input read so far is used up: send every pending reply
}

void sink::flush_output(connection& c) {
  while (!c.out.empty()) {
    ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // POLLOUT will finish it
      if (errno == EINTR) continue;
      c.closing = true;
      c.out.clear();
      c.pending = 0;
      return;
    }
    c.out.erase(0, static_cast<std::size_t>(n));
  }
  if (c.pending > 0) {
    // The answers are with the kernel now: this is the time they count from.
    std::int64_t now = wall_ns();
    if (t_.first_ns == 0) t_.first_ns = now;
    t_.last_ns = now;
    c.pending = 0;
  }
}

std::string sink::status_line() const {
  char line[512];
  std::snprintf(line, sizeof line,
                "messages=%llu unique_ids=%llu duplicate_ids=%llu no_id=%llu content_bytes=%llu "
                "wire_bytes=%llu connections=%llu first_ns=%lld last_ns=%lld\n",
                static_cast<unsigned long long>(t_.messages),
                static_cast<unsigned long long>(t_.unique_ids),
                static_cast<unsigned long long>(t_.duplicate_ids),
                static_cast<unsigned long long>(t_.no_id),
                static_cast<unsigned long long>(t_.content_bytes),
                static_cast<unsigned long long>(t_.wire_bytes),
                static_cast<unsigned long long>(t_.connections),
                static_cast<long long>(t_.first_ns), static_cast<long long>(t_.last_ns));
  return line;
}

void sink::write_status(bool final_run) {
  if (final_run) std::fputs(status_line().c_str(), stdout);
  if (opt_.status_file.empty()) return;
  std::string tmp = opt_.status_file + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::string s = status_line();
    std::fputs(s.c_str(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), opt_.status_file.c_str());
  }
  status_written_for_ = t_.messages;
}

int sink::run() {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(opt_.listen_port);
  if (inet_pton(AF_INET, opt_.listen_ip.c_str(), &sa.sin_addr) != 1) {
    std::fprintf(stderr, "flushgate_sink: bad address %s\n", opt_.listen_ip.c_str());
    return 2;
  }
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      listen(listen_fd_, 256) != 0) {
    std::fprintf(stderr, "flushgate_sink: cannot listen on %s:%u: %s\n", opt_.listen_ip.c_str(),
                 opt_.listen_port, std::strerror(errno));
    return 2;
  }
  socklen_t len = sizeof sa;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

  std::printf("ready %u\n", ntohs(sa.sin_port));
  std::fflush(stdout);
  write_status(false);

  const std::int64_t deadline = mono_ns() + opt_.max_seconds * 1'000'000'000;
  std::int64_t next_status = mono_ns() + 1'000'000'000;
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({sfd, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& c : conns_) {
      short ev = POLLIN;
      if (!c->out.empty()) ev |= POLLOUT;
      fds.push_back({c->fd, ev, 0});
    }
    int r = poll(fds.data(), fds.size(), 200);
    if (r < 0 && errno != EINTR) {
      std::perror("flushgate_sink: poll");
      return 1;
    }
    if (fds[0].revents & POLLIN) break;
    if (fds[1].revents & POLLIN) accept_all();
    const std::int64_t now = mono_ns();
    for (std::size_t i = 0; i + 2 < fds.size() && i < conns_.size(); ++i) {
      connection& c = *conns_[i];
      if (fds[i + 2].revents & (POLLIN | POLLHUP | POLLERR)) handle_input(c);
      if (fds[i + 2].revents & POLLOUT) flush_output(c);
      if (now - c.last_active > idle_timeout_ns) c.closing = true;
    }
    // Close finished connections once their last replies are out.
    std::erase_if(conns_, [this](const std::unique_ptr<connection>& c) {
      if (c->closing) {
        flush_output(*c);
        close(c->fd);
        return true;
      }
      return false;
    });
    if (opt_.expect > 0 && !expect_reported_ && t_.messages >= opt_.expect) {
      expect_reported_ = true;
      write_status(false);
    }
    if (now >= next_status) {
      if (status_written_for_ != t_.messages) write_status(false);
      next_status = now + 1'000'000'000;
    }
    if (now >= deadline) {
      std::fprintf(stderr, "flushgate_sink: --max-seconds %lld reached\n",
                   static_cast<long long>(opt_.max_seconds));
      break;
    }
  }
  for (auto& c : conns_) close(c->fd);
  write_status(true);
  return 0;
}

[[noreturn]] void usage_error(const char* why) {
  std::fprintf(stderr,
               "flushgate_sink: %s\nusage: flushgate_sink --listen IP:PORT [--chunking] "
               "[--hostname NAME] [--expect N] [--status FILE] [--max-seconds S]\n",
               why);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) usage_error("an option lacks its value");
      return argv[++i];
    };
    if (a == "--listen") {
      std::string_view v = value();
      auto colon = v.rfind(':');
      if (colon == std::string_view::npos || !parse_number(v.substr(colon + 1), o.listen_port))
        usage_error("--listen takes IP:PORT");
      o.listen_ip.assign(v.substr(0, colon));
    } else if (a == "--chunking") {
      o.chunking = true;
    } else if (a == "--hostname") {
      o.hostname.assign(value());
    } else if (a == "--expect") {
      if (!parse_number(value(), o.expect)) usage_error("--expect takes a number");
    } else if (a == "--status") {
      o.status_file.assign(value());
    } else if (a == "--max-seconds") {
      if (!parse_number(value(), o.max_seconds) || o.max_seconds <= 0)
        usage_error("--max-seconds takes a positive number");
    } else {
      usage_error("unknown option");
    }
  }
  return sink(std::move(o)).run();
}
