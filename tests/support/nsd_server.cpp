// nsd_server.cpp — config + zones into a temp dir, nsd -d in its own process
// group, readiness by a real DNS query, stop by signal with a bounded wait.
#include "tests/support/nsd_server.hpp"

#include "tests/support/ports.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace flushgate::test {

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int start_attempts = 4;  // fresh ports when nsd cannot bind one

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

// A minimal RFC 1035 §4.1 query: header, one question, no EDNS.
std::vector<unsigned char> build_query(std::uint16_t id, const std::string& name,
                                       std::uint16_t type) {
  std::vector<unsigned char> q = {static_cast<unsigned char>(id >> 8),
                                  static_cast<unsigned char>(id & 0xFF),
                                  0x00, 0x00,  // flags: standard query, no recursion
                                  0x00, 0x01,  // QDCOUNT
                                  0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  std::istringstream labels(name);
  std::string label;
  while (std::getline(labels, label, '.')) {
    if (label.empty()) continue;
    q.push_back(static_cast<unsigned char>(label.size()));
    q.insert(q.end(), label.begin(), label.end());
  }
  q.push_back(0);
  q.push_back(static_cast<unsigned char>(type >> 8));
  q.push_back(static_cast<unsigned char>(type & 0xFF));
  q.push_back(0x00);
  q.push_back(0x01);  // class IN
  return q;
}

}  // namespace

bool dns_answers(std::uint16_t port, const std::string& name, std::chrono::milliseconds timeout) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(port);
  std::random_device rd;
  const auto id = static_cast<std::uint16_t>(rd());
  const auto query = build_query(id, name, 6 /* SOA */);
  bool answered = false;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0 &&
      ::send(fd, query.data(), query.size(), 0) == static_cast<ssize_t>(query.size())) {
    const auto deadline = steady::now() + timeout;
    while (!answered) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now());
      if (left.count() <= 0) break;
      pollfd ready{fd, POLLIN, 0};
      if (::poll(&ready, 1, static_cast<int>(left.count())) != 1) break;
      unsigned char reply[512];
      const ssize_t n = ::recv(fd, reply, sizeof reply, 0);
      if (n < 0) break;  // e.g. ECONNREFUSED: nothing listens yet
      answered = n >= 12 && reply[0] == (id >> 8) && reply[1] == (id & 0xFF) && (reply[2] & 0x80);
    }
  }
  ::close(fd);
  return answered;
}

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool nsd_server::available() { return ::access(nsd_path, X_OK) == 0; }

nsd_server::nsd_server(std::vector<nsd_zone> zones, std::chrono::milliseconds deadline)
    : dir_("flushgate-nsd"), zones_(std::move(zones)) {
  if (zones_.empty()) throw std::invalid_argument("nsd_server: no zones");
  const auto until = steady::now() + deadline;
  for (int i = 0; i < start_attempts && steady::now() < until; ++i) {
    // The port was free a moment ago; if nsd loses the race it exits and we
    // try another one.
    if (start_on(free_udp_port(), until)) return;
  }
  const std::string log = log_text();
  stop();
  throw std::runtime_error("nsd did not start answering on 127.0.0.1; its log:\n" + log);
}

nsd_server::~nsd_server() { stop(); }

std::string nsd_server::address() const { return "127.0.0.1:" + std::to_string(port_); }

std::string nsd_server::log_text() const {
  try {
    return read_text_file(dir_.path() / "nsd.log");
  } catch (const std::exception&) {
    return {};
  }
}

bool nsd_server::start_on(std::uint16_t port, steady::time_point until) {
  stop();
  const auto& dir = dir_.path();
  std::ostringstream conf;
  conf << "server:\n"
       << "  ip-address: 127.0.0.1@" << port << "\n"
       << "  do-ip6: no\n"
       << "  username: \"\"\n"
       << "  chroot: \"\"\n"
       << "  database: \"\"\n"
       << "  zonesdir: \"" << dir.string() << "\"\n"
       << "  zonelistfile: \"" << (dir / "zone.list").string() << "\"\n"
       << "  xfrdfile: \"" << (dir / "xfrd.state").string() << "\"\n"
       << "  xfrdir: \"" << dir.string() << "\"\n"
       << "  pidfile: \"" << (dir / "nsd.pid").string() << "\"\n"
       << "  logfile: \"" << (dir / "nsd.log").string() << "\"\n"
       << "  server-count: 1\n"
       << "  verbosity: 1\n"
       << "  hide-version: yes\n"
       // Response rate limiting (on in Debian's nsd, 200 qps) drops or
       // truncates answers to a test that asks fast; tests want every answer.
       << "  rrl-ratelimit: 0\n"
       << "  rrl-whitelist-ratelimit: 0\n"
       << "remote-control:\n"
       << "  control-enable: no\n";
  for (const auto& z : zones_) {
    const std::string file = z.name + ".zone";
    write_file(dir / file, z.text);
    conf << "zone:\n  name: \"" << z.name << "\"\n  zonefile: \"" << file << "\"\n";
  }
  write_file(dir / "nsd.conf", conf.str());

  spawn_options options;
  options.working_dir = dir;
  options.stdout_path = dir / "nsd.stdout";
  options.stderr_path = dir / "nsd.stderr";
  nsd_.emplace(std::vector<std::string>{nsd_path, "-d", "-c", (dir / "nsd.conf").string()},
               options);
  port_ = port;

  // Poll with a deadline: a real query for the first zone's SOA.
  while (steady::now() < until) {
    if (!nsd_->running()) return false;  // e.g. the port was taken meanwhile
    if (dns_answers(port_, zones_.front().name, 100ms)) return true;
    std::this_thread::sleep_for(20ms);  // pacing between probes, not synchronisation
  }
  return false;
}

void nsd_server::stop() {
  if (!nsd_) return;
  if (nsd_->running()) {
    // The group is nsd and the xfrd/server children it forked; its id is our
    // unreaped child's PID, so it cannot belong to anyone else yet.
    ::kill(-nsd_->pid(), SIGTERM);
    if (!nsd_->wait_for_exit(5s)) nsd_->kill();
  }
  nsd_.reset();  // reaps, and SIGKILLs the group if anything is left
}

}  // namespace flushgate::test
