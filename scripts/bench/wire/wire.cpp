// wire.cpp — flushgate_wire: a user-space dial-up line between two network
// namespaces, for the slow-link benchmarks (scripts/bench/netns-line runs it).
//
// Usage: flushgate_wire --ns-a NAME --ns-b NAME [--dev wire0] [--rate 56000]
//                       [--delay-ms 75] [--queue-bytes 16384]
//                       [--overhead-bytes 0] [--mtu 1500]
//
// Purpose: netem is not in the test kernel, so the kernel can limit rate (tbf)
//   but cannot add delay. This program creates a TUN device named --dev in each
//   of two named network namespaces (`ip netns add`) and forwards IP packets
//   between them the way a modem line does, each direction on its own:
//     - a drop-tail FIFO: an arriving packet is dropped when the bytes waiting
//       for the serialiser would exceed --queue-bytes;
//     - a serialiser at --rate bit/s: a packet of n bytes occupies the line for
//       (n + overhead) * 8 / rate seconds, packets back to back;
//     - a fixed propagation delay of --delay-ms after the last bit is sent.
//   Start and delivery times follow a virtual schedule on CLOCK_MONOTONIC, so a
//   late wake-up delays one delivery by the lateness but never slows the rate.
//   Prints "ready" on stdout once both devices exist (addresses and link state
//   are the caller's job). SIGUSR1 prints the counters; SIGTERM/SIGINT print
//   them and exit 0.
// Security: runs as root (setns, TUN). Forwards the packets the two kernels
//   hand it unchanged and parses none of them. Memory is bounded: per
//   direction, --queue-bytes waiting plus what is in flight on the line
//   (rate * delay / 8 bytes plus one packet).
// Errors: a bad option, a missing namespace or a refused TUN device prints a
//   message and exits 2; a TUN read or poll failure at run time exits 1. A
//   failed write to a TUN device counts as a drop.
// Limitations: one rate for both directions (V.90 was 53.3k down, 33.6k up);
//   no bit errors, no link compression (V.42bis), no jitter. The queue counts
//   packets waiting for the serialiser, not the one being sent. Timer
//   resolution is the kernel's (tens of µs, well under the 143 µs one byte
//   takes at 56 kbit/s).
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();
constexpr int max_reads_per_wakeup = 64;  // keeps one busy side from starving the other

struct options {
  std::string ns_a, ns_b, dev = "wire0";
  std::int64_t rate_bps = 56000, delay_ms = 75, queue_bytes = 16384, overhead_bytes = 0,
               mtu = 1500;
};

// Owns one file descriptor; closes it on destruction.
class unique_fd {
 public:
  explicit unique_fd(int fd = -1) : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~unique_fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Parses "--name value" pairs into opts; throws std::invalid_argument on anything else.
options parse_options(int argc, char** argv) {
  options opts;
  auto number = [](std::string_view name, std::string_view text, std::int64_t lo,
                   std::int64_t hi) {
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || v < lo || v > hi)
      throw std::invalid_argument(std::string(name) + " wants an integer in [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) +
                                  "], got '" + std::string(text) + "'");
    return v;
  };
  for (int i = 1; i < argc; i += 2) {
    std::string_view name = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(std::string(name) + " needs a value");
    std::string_view value = argv[i + 1];
    if (name == "--ns-a") opts.ns_a = value;
    else if (name == "--ns-b") opts.ns_b = value;
    else if (name == "--dev") opts.dev = value;
    else if (name == "--rate") opts.rate_bps = number(name, value, 1, 10'000'000'000);
    else if (name == "--delay-ms") opts.delay_ms = number(name, value, 0, 60'000);
    else if (name == "--queue-bytes") opts.queue_bytes = number(name, value, 0, 1 << 26);
    else if (name == "--overhead-bytes") opts.overhead_bytes = number(name, value, 0, 1024);
    else if (name == "--mtu") opts.mtu = number(name, value, 68, 65535);
    else throw std::invalid_argument("unknown option " + std::string(name));
  }
  // Names become paths under /run/netns and interface names: no '/', no "..".
  auto plain_name = [](const std::string& s, std::size_t max) {
    return !s.empty() && s.size() <= max && s.find('/') == std::string::npos && s[0] != '.';
  };
  if (!plain_name(opts.ns_a, 64) || !plain_name(opts.ns_b, 64) || opts.ns_a == opts.ns_b)
    throw std::invalid_argument("--ns-a and --ns-b want two different namespace names");
  if (!plain_name(opts.dev, IFNAMSIZ - 1))
    throw std::invalid_argument("--dev wants an interface name of at most 15 characters");
  if (opts.queue_bytes < opts.mtu)
    throw std::invalid_argument("--queue-bytes must hold one full packet (>= --mtu)");
  return opts;
}

// Creates TUN device `dev` inside namespace /run/netns/`ns` with the given MTU
// and returns its non-blocking fd; the thread's own namespace is restored.
// A TUN device belongs to the namespace of the thread that opened /dev/net/tun.
unique_fd open_tun_in(const std::string& ns, const std::string& dev, std::int64_t mtu) {
  unique_fd home(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  if (home.get() < 0) fail("open /proc/self/ns/net");
  unique_fd target(::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
  if (target.get() < 0) fail("open /run/netns/" + ns);
  if (::setns(target.get(), CLONE_NEWNET) < 0) fail("setns " + ns);

  unique_fd tun(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  int err = tun.get() < 0 ? errno : 0;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, dev.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (!err && ::ioctl(tun.get(), TUNSETIFF, &ifr) < 0) err = errno;
  if (!err) {
    unique_fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifr.ifr_mtu = static_cast<int>(mtu);
    if (sock.get() < 0 || ::ioctl(sock.get(), SIOCSIFMTU, &ifr) < 0) err = errno;
  }
  if (::setns(home.get(), CLONE_NEWNET) < 0) fail("setns back to the wire's own namespace");
  errno = err;
  if (err) fail("TUN device " + dev + " in " + ns);
  return tun;
}

struct packet {
  std::vector<std::uint8_t> bytes;
  std::int64_t due_ns;  // while waiting: arrival time; on the line: delivery time
};

// One direction of the line: queue, serialiser, propagation delay, counters.
class direction {
 public:
  direction(std::string name, int in_fd, int out_fd, const options& opts)
      : name_(std::move(name)), in_fd_(in_fd), out_fd_(out_fd), opts_(opts) {}

  int in_fd() const { return in_fd_; }

  // Reads what the sending side's kernel has queued (at most a batch) into the FIFO.
  // Returns false on a read error other than "nothing more to read".
  bool read_packets(std::int64_t now) {
    static std::array<std::uint8_t, 65536> buf;  // one thread: one buffer serves both sides
    for (int i = 0; i < max_reads_per_wakeup; ++i) {
      ssize_t n = ::read(in_fd_, buf.data(), buf.size());
      if (n < 0) return errno == EAGAIN || errno == EINTR;
      if (n == 0) continue;
      advance(now);  // the queue must be current before the drop-tail decision
      ++packets_in_;
      bytes_in_ += n;
      if (waiting_bytes_ + n > opts_.queue_bytes) {
        ++dropped_queue_;
        continue;
      }
      waiting_.push_back({{buf.begin(), buf.begin() + n}, now});
      waiting_bytes_ += n;
      peak_waiting_bytes_ = std::max(peak_waiting_bytes_, waiting_bytes_);
    }
    return true;
  }

  // Moves packets whose turn has come onto the line, and hands the far side
  // every packet whose last bit has arrived by `now`.
  void advance(std::int64_t now) {
    while (!waiting_.empty()) {
      packet& p = waiting_.front();
      std::int64_t start = std::max(line_free_ns_, p.due_ns);
      if (start > now) break;
      auto size = static_cast<std::int64_t>(p.bytes.size());
      line_free_ns_ = start + (size + opts_.overhead_bytes) * 8 * 1'000'000'000 / opts_.rate_bps;
      p.due_ns = line_free_ns_ + opts_.delay_ms * 1'000'000;
      waiting_bytes_ -= size;
      on_line_.push_back(std::move(p));
      waiting_.pop_front();
    }
    // Delivery times ascend: the serialiser is FIFO and the delay fixed.
    while (!on_line_.empty() && on_line_.front().due_ns <= now) {
      const auto& bytes = on_line_.front().bytes;
      if (::write(out_fd_, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())) {
        ++packets_out_;
        bytes_out_ += static_cast<std::int64_t>(bytes.size());
      } else {
        ++dropped_write_;
      }
      on_line_.pop_front();
    }
  }

  // The next time advance() has work to do, or `never`.
  std::int64_t next_due() const {
    std::int64_t due = on_line_.empty() ? never : on_line_.front().due_ns;
    if (!waiting_.empty()) due = std::min(due, std::max(line_free_ns_, waiting_.front().due_ns));
    return due;
  }

  // Prints one line of counters for this direction on stdout.
  void print_counters() const {
    std::printf(
        "%s: in %lld pkts %lld B, out %lld pkts %lld B, dropped %lld (queue full %lld, "
        "write %lld), queued now %zu, peak queue %lld B\n",
        name_.c_str(), static_cast<long long>(packets_in_), static_cast<long long>(bytes_in_),
        static_cast<long long>(packets_out_), static_cast<long long>(bytes_out_),
        static_cast<long long>(dropped_queue_ + dropped_write_),
        static_cast<long long>(dropped_queue_), static_cast<long long>(dropped_write_),
        waiting_.size() + on_line_.size(), static_cast<long long>(peak_waiting_bytes_));
  }

 private:
  std::string name_;
  int in_fd_, out_fd_;
  const options& opts_;
  std::deque<packet> waiting_;   // drop-tail FIFO, due_ns = arrival
  std::deque<packet> on_line_;   // being sent or propagating, due_ns = delivery
  std::int64_t waiting_bytes_ = 0;
  std::int64_t line_free_ns_ = 0;  // when the serialiser finishes its last packet
  std::int64_t packets_in_ = 0, bytes_in_ = 0, packets_out_ = 0, bytes_out_ = 0;
  std::int64_t dropped_queue_ = 0, dropped_write_ = 0, peak_waiting_bytes_ = 0;
};

// Forwards until SIGTERM/SIGINT (returns 0) or a TUN failure (returns 1).
int run(const options& opts) {
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGUSR1}) sigaddset(&signals, s);
  if (::sigprocmask(SIG_BLOCK, &signals, nullptr) < 0) fail("sigprocmask");
  unique_fd sig(::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC));
  if (sig.get() < 0) fail("signalfd");

  unique_fd tun_a = open_tun_in(opts.ns_a, opts.dev, opts.mtu);
  unique_fd tun_b = open_tun_in(opts.ns_b, opts.dev, opts.mtu);
  std::array<direction, 2> dirs{
      direction(opts.ns_a + "->" + opts.ns_b, tun_a.get(), tun_b.get(), opts),
      direction(opts.ns_b + "->" + opts.ns_a, tun_b.get(), tun_a.get(), opts)};
  auto print_all = [&] {
    for (const auto& d : dirs) d.print_counters();
    std::fflush(stdout);
  };
  std::printf("ready\n");
  std::fflush(stdout);

  for (;;) {
    std::int64_t due = std::min(dirs[0].next_due(), dirs[1].next_due());
    timespec wait{};
    if (due != never) {
      std::int64_t left = std::max<std::int64_t>(0, due - now_ns());
      wait = {static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
    }
    std::array<pollfd, 3> fds{{{dirs[0].in_fd(), POLLIN, 0},
                               {dirs[1].in_fd(), POLLIN, 0},
                               {sig.get(), POLLIN, 0}}};
    if (::ppoll(fds.data(), fds.size(), due == never ? nullptr : &wait, nullptr) < 0) {
      if (errno == EINTR) continue;
      std::perror("flushgate_wire: ppoll");
      return 1;
    }
    std::int64_t now = now_ns();
    if (fds[2].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(sig.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        print_all();
        if (info.ssi_signo != SIGUSR1) return 0;
      }
    }
    for (std::size_t i = 0; i < dirs.size(); ++i) {
      if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
        std::fprintf(stderr, "flushgate_wire: TUN device in %s went away\n",
                     i == 0 ? opts.ns_a.c_str() : opts.ns_b.c_str());
        print_all();
        return 1;
      }
      if ((fds[i].revents & POLLIN) && !dirs[i].read_packets(now)) {
        std::perror("flushgate_wire: read from TUN device");
        print_all();
        return 1;
      }
      dirs[i].advance(now);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_options(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flushgate_wire: %s\n", e.what());
    return 2;
  }
}
