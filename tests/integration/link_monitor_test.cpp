// link_monitor_test.cpp — links learned from the network: the real flushgated
// with radius_listen, pcap_file and hooks_dir, driven by the real radclient
// (freeradius-utils), tshark, the pppd scripts, and private Postfix
// instances as the customers' servers on 127.0.0.x.
//
// Covers README.md "Links: RADIUS accounting, pcap, pppd" and "Operator
// hooks" end to end: an Accounting-Request Start brings the link up and the
// held mail goes to the framed address at the customer's link port; Stop
// holds it again; Accounting-On ends the links of that NAS only (PROTOCOLS.md
// §10 item 10); forged, unknown-source and tampered packets change nothing
// (§10 item 12); an address outside --dialup-net is refused, logged as a
// SECURITY event and still answered (refusals are final); a late Stop of an
// older session ends nothing and an Interim-Update with a new address
// rebinds (RFC 2866 §5.1, §5.5); a capture of real radclient traffic
// replayed through pcap_file does the same as the live packets (§10 item
// 13); link-up and flush-done hooks see the event, and a failing hook does
// not stop the flush; pppd's ip-up/ip-down return at once and bring the link
// up and down (§11). Counters per drop reason are checked at unit level
// (tests/linkmon); here the check is "nothing changed".
//
// IPv6 lines (router.hpp, "IPv6 lines"): a Start with Framed-IPv6-Address
// (RFC 6911) only flushes to the customer's server on [::1]; a dual-stack
// line falls back to IPv4 when its IPv6 address does not answer; the server
// address inside a Delegated-IPv6-Prefix (RFC 4818) follows --ipv6-server
// and moves with an Interim-Update; a prefix outside an IPv6 --dialup-net is
// refused, and a user pinned to IPv4 keeps only the IPv4 part; a captured
// IPv6 Start replays through pcap_file; `link up` of one session and the
// pppd scripts ip-up and ipv6-up merge into one dual-stack link. Addresses
// in 2001:db8::/32 are only looked at (routes), never contacted: the tests
// talk to 127.0.0.0/8 and ::1 only.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr const char* secret = "testing123";

// One Accounting-Request as radclient reads it: `Attr = value` lines.
struct acct_request {
  std::string status;     // Start, Stop, Interim-Update, Accounting-On
  std::string user;       // "" = no User-Name
  std::string session;    // Acct-Session-Id
  std::string framed_ip;  // "" = no Framed-IP-Address
  std::string nas_ip = "127.0.0.1";
  std::string source_ip;  // radclient binds this source address ("" = the kernel's choice)
  // IPv6 lines ("" = attribute absent): Framed-IPv6-Address (RFC 6911),
  // Framed-IPv6-Prefix and Framed-Interface-Id (RFC 3162), Delegated-IPv6-Prefix (RFC 4818).
  std::string framed_ipv6;
  std::string framed_ipv6_prefix;
  std::string interface_id;
  std::string delegated_prefix;

  std::string text() const {
    std::ostringstream out;
    out << "Acct-Status-Type = " << status << "\n";
    if (!user.empty()) out << "User-Name = \"" << user << "\"\n";
    out << "Acct-Session-Id = \"" << session << "\"\n";
    if (!framed_ip.empty()) out << "Framed-IP-Address = " << framed_ip << "\n";
    if (!framed_ipv6.empty()) out << "Framed-IPv6-Address = " << framed_ipv6 << "\n";
    if (!framed_ipv6_prefix.empty()) out << "Framed-IPv6-Prefix = " << framed_ipv6_prefix << "\n";
    if (!interface_id.empty()) out << "Framed-Interface-Id = " << interface_id << "\n";
    if (!delegated_prefix.empty()) out << "Delegated-IPv6-Prefix = " << delegated_prefix << "\n";
    out << "NAS-IP-Address = " << nas_ip << "\n";
    out << "Acct-Delay-Time = 0\n";
    if (status == "Stop") out << "Acct-Terminate-Cause = Lost-Carrier\n";
    if (!source_ip.empty()) out << "Packet-Src-IP-Address = " << source_ip << "\n";
    return out.str();
  }
};

// A live link as `link list --json` shows it.
struct live_link {
  std::string user;
  std::string address;
  std::string session;
  std::string nas;
  std::string source;
  std::string ipv6_address;  // the line's own IPv6 address
  std::string ipv6_prefix;   // the LAN's prefix, "ADDR/LEN"
  std::string ipv6_server;   // the customer server's IPv6 address on the line (--ipv6-server)
};

// A UDP socket bound to host:0 for sending hand-made datagrams and for
// catching what radclient sends.
class udp_socket {
 public:
  explicit udp_socket(const std::string& host) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "socket");
    sockaddr_in a = address_of(host, 0);
    socklen_t length = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &length) != 0) {
      const int error = errno;
      ::close(fd_);
      throw std::system_error(error, std::generic_category(), "bind " + host + ":0");
    }
    port_ = ntohs(a.sin_port);
  }
  ~udp_socket() { ::close(fd_); }
  udp_socket(const udp_socket&) = delete;
  udp_socket& operator=(const udp_socket&) = delete;

  std::uint16_t port() const noexcept { return port_; }

  // The next datagram, or nullopt when none came within `timeout`.
  std::optional<std::vector<std::uint8_t>> receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    std::vector<std::uint8_t> buffer(4096);
    const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
    if (n < 0) return std::nullopt;
    buffer.resize(static_cast<std::size_t>(n));
    return buffer;
  }

  // True when the whole datagram was handed to the kernel.
  bool send_to(const std::vector<std::uint8_t>& datagram, const std::string& host,
               std::uint16_t port) {
    sockaddr_in a = address_of(host, port);
    return ::sendto(fd_, datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&a),
                    sizeof a) == static_cast<ssize_t>(datagram.size());
  }

 private:
  static sockaddr_in address_of(const std::string& host, std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
      throw std::invalid_argument("not an IPv4 address: " + host);
    }
    return a;
  }

  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// Writes `text` to `path` with `mode`.
void write_file(const fs::path& path, const std::string& text, fs::perms mode) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
  fs::permissions(path, mode);
}

// "KEY=value" lines of `text` as a map (an `env` dump).
std::map<std::string, std::string> parse_env(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (auto eq = line.find('='); eq != std::string::npos) {
      out[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  return out;
}

// A TCP port free on every one of `hosts` (one customer link port, several
// framed addresses).
std::uint16_t free_port_on_all(const std::vector<std::string>& hosts) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    const std::uint16_t port = free_port_on(hosts.front());
    bool all = true;
    for (const auto& h : hosts) all = all && tcp_port_free(h, port);
    if (all) return port;
  }
  throw std::runtime_error("no TCP port free on every framed address");
}

// Starts the instances side by side (each takes a few seconds to come up).
void start_all(const std::vector<postfix_instance*>& instances) {
  std::vector<std::exception_ptr> failed(instances.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < instances.size(); ++i) {
    threads.emplace_back([&, i] {
      try {
        instances[i]->start();
      } catch (...) {
        failed[i] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& f : failed) {
    if (f) std::rethrow_exception(f);
  }
}

class LinkMonitor : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!program_available("radclient")) {
      GTEST_SKIP() << "radclient (freeradius-utils) is not installed";
    }
  }

  // Starts a daemon with the RADIUS listener on a free UDP port; `clients`
  // is the clients file's text, `extra` more config keys.
  void start_daemon(const std::string& clients = "127.0.0.1/32 testing123 nas-a\n",
                    daemon_fixture::settings extra = {}) {
    radius_port_ = free_udp_port();
    write_file(work_.path() / "clients", clients, fs::perms::owner_read | fs::perms::owner_write);
    extra.emplace("retry_schedule", "1s");
    extra.emplace("radius_listen", "127.0.0.1:" + std::to_string(radius_port_));
    extra.emplace("radius_clients_file", (work_.path() / "clients").string());
    daemon_.emplace(std::move(extra));
    daemon_->start();
  }

  void add_customer(const std::string& name, const std::string& user, std::uint16_t link_port,
                    std::vector<std::string> more = {}) {
    std::vector<std::string> options{"--mode", "hold", "--dialup-user", user};
    options.insert(options.end(), {"--link-port", std::to_string(link_port)});
    options.insert(options.end(), more.begin(), more.end());
    auto added = daemon_->add_customer(name, name + ".test", options);
    ASSERT_EQ(added.exit_code, 0) << "customer add " << name << ": got exit " << added.exit_code
                                  << " (" << added.err << "), want 0";
  }

  // Runs radclient with `packets` on stdin against the daemon's RADIUS port.
  command_result radclient(const std::string& packets, const std::string& with_secret = secret,
                           const std::vector<std::string>& retries = {"-r", "3", "-t", "2"}) {
    std::vector<std::string> argv{"radclient", "-x"};
    argv.insert(argv.end(), retries.begin(), retries.end());
    argv.insert(argv.end(), {"127.0.0.1:" + std::to_string(radius_port_), "acct", with_secret});
    return run_command(argv, 30s, packets);
  }

  // Sends `r` and expects radclient to accept our Accounting-Response.
  void send_answered(const acct_request& r) {
    auto sent = radclient(r.text());
    EXPECT_EQ(sent.exit_code, 0) << r.status << " for " << r.user << ": radclient got exit "
                                 << sent.exit_code << ", want 0 (a valid Accounting-Response)\n"
                                 << sent.stdout_text << sent.stderr_text << "\nlog:\n"
                                 << daemon_->log_text();
  }

  // Sends `r` and expects no answer: radclient gives up (-r 1 -t 1).
  void send_unanswered(const acct_request& r, const std::string& with_secret = secret) {
    auto sent = radclient(r.text(), with_secret, {"-r", "1", "-t", "1"});
    EXPECT_NE(sent.exit_code, 0) << r.status << " for " << r.user << " (secret " << with_secret
                                 << "): radclient got exit 0, want no answer\n"
                                 << sent.stdout_text;
    EXPECT_EQ(sent.stdout_text.find("Received Accounting-Response"), std::string::npos)
        << "got an Accounting-Response, want none:\n"
        << sent.stdout_text;
  }

  // `link list --json`; nullopt when the CLI failed.
  std::optional<std::vector<live_link>> links() const {
    auto r = daemon_->cli({"--json", "link", "list"});
    if (r.exit_code != 0) return std::nullopt;
    std::vector<live_link> out;
    try {
      Poco::JSON::Parser parser;
      auto rows = parser.parse(r.out).extract<Poco::JSON::Array::Ptr>();
      for (std::size_t i = 0; i < rows->size(); ++i) {
        auto row = rows->getObject(static_cast<unsigned>(i));
        out.push_back({row->getValue<std::string>("user"), row->getValue<std::string>("address"),
                       row->optValue<std::string>("session", ""),
                       row->optValue<std::string>("nas", ""),
                       row->optValue<std::string>("source", ""),
                       row->optValue<std::string>("ipv6_address", ""),
                       row->optValue<std::string>("ipv6_prefix", ""),
                       row->optValue<std::string>("ipv6_server", "")});
      }
    } catch (const std::exception&) {  // Poco::Exception is one
      return std::nullopt;
    }
    return out;
  }

  // "user@address/session ..." for failure messages.
  std::string describe_links() const {
    auto l = links();
    if (!l) return "(link list failed)";
    if (l->empty()) return "(none)";
    std::string out;
    for (const auto& x : *l) {
      out += x.user + "@" + (x.address.empty() ? "-" : x.address);
      if (!x.ipv6_address.empty()) out += "," + x.ipv6_address;
      if (!x.ipv6_prefix.empty()) out += ",prefix " + x.ipv6_prefix;
      if (!x.ipv6_server.empty()) out += ",server " + x.ipv6_server;
      out += "/" + x.session + " ";
    }
    return out;
  }

  // The live link of `user`, if any.
  std::optional<live_link> link_of(const std::string& user) const {
    auto l = links();
    if (!l) return std::nullopt;
    for (const auto& x : *l) {
      if (x.user == user) return x;
    }
    return std::nullopt;
  }

  // Polls until `user`'s link is live at `address` with `session` (any when "").
  bool wait_link(const std::string& user, const std::string& address,
                 const std::string& session = "", std::chrono::milliseconds timeout = 10s) const {
    return wait_until(
        [&] {
          auto l = link_of(user);
          return l && l->address == address && (session.empty() || l->session == session);
        },
        timeout, 50ms);
  }

  // Polls until `user`'s live link satisfies `match`.
  bool wait_link_where(const std::string& user, const std::function<bool(const live_link&)>& match,
                       std::chrono::milliseconds timeout = 10s) const {
    return wait_until(
        [&] {
          auto l = link_of(user);
          return l && match(*l);
        },
        timeout, 50ms);
  }

  // Polls until no link of `user` is live.
  bool wait_no_link(const std::string& user, std::chrono::milliseconds timeout = 10s) const {
    return wait_until([&] { return !link_of(user).has_value(); }, timeout, 50ms);
  }

  std::string queue_one(const std::string& customer, const std::string& subject) {
    const std::string rcpt = "bob@" + customer + ".test";
    auto s = submit(daemon_->port(), "alice@sender.test", {{rcpt, ""}},
                    test_message(subject, rcpt, "held\r\n"));
    EXPECT_TRUE(s.error.empty()) << "submitting " << subject << ": " << s.error;
    return s.qid;
  }

  static bool wait_files(const postfix_instance& postfix, std::size_t count,
                         std::chrono::milliseconds timeout = 20s) {
    return wait_until([&] { return postfix.message_files().size() >= count; }, timeout, 50ms) &&
           postfix.message_files().size() == count;
  }

  // True when one of the messages in `postfix`'s Maildir has this subject.
  static bool delivered(const postfix_instance& postfix, const std::string& subject) {
    for (const auto& f : postfix.message_files()) {
      if (read_file(f).find("Subject: " + subject + "\n") != std::string::npos) return true;
    }
    return false;
  }

  // Checks that `qid` is still queued for `customer` with no delivery attempt.
  void expect_held(const std::string& customer, const std::string& qid) {
    const auto ids = queue_ids_of(*daemon_, customer);
    EXPECT_NE(std::find(ids.begin(), ids.end(), qid), ids.end())
        << qid << ": got it gone from " << customer << "'s queue, want it held";
    const auto r = recipients_of(*daemon_, qid);
    ASSERT_EQ(r.size(), 1u) << qid << ": got " << r.size() << " recipients queued, want 1";
    EXPECT_EQ(r[0].attempts, 0u) << qid << ": got " << r[0].attempts
                                 << " delivery attempts, want 0 (held)";
  }

  // Records radclient's exchange of `r` (request and response) with a
  // throwaway daemon in `capture` (classic pcap, tshark on lo); the daemon
  // answers unknown users and ignores them. Fatal failures when not recorded.
  void capture_exchange(const acct_request& r, const fs::path& capture) {
    {
      // tshark prints a line per frame (-P -l), which tells when its capture is live.
      start_daemon();
      process tshark({"tshark", "-i", "lo", "-f", "udp port " + std::to_string(radius_port_), "-a",
                      "duration:60", "-F", "pcap", "-w", capture.string(), "-P", "-l"});
      auto frames = [&] {
        const std::string text = tshark.stdout_text();
        return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
      };
      // Probes (one junk octet each: the daemon drops them as malformed, and so
      // will the replaying sniffer) until tshark shows it sees the port.
      udp_socket prober("127.0.0.1");
      bool live = false;
      for (int probe = 0; probe < 50 && !live && tshark.running(); ++probe) {
        prober.send_to({0x00}, "127.0.0.1", radius_port_);
        live = wait_until([&] { return frames() > 0; }, 200ms, 10ms);
      }
      ASSERT_TRUE(live) << "tshark never showed a frame: " << tshark.stderr_text();
      const std::size_t before = frames();
      send_answered(r);
      EXPECT_TRUE(wait_until([&] { return frames() >= before + 2; }, 10s))
          << "got " << frames() - before << " frames of the exchange in the capture, want 2:\n"
          << tshark.stdout_text();
      tshark.signal(SIGINT);
      auto status = tshark.wait_for_exit(20s);
      ASSERT_TRUE(status.has_value()) << "tshark did not stop on SIGINT: " << tshark.stderr_text();
      ASSERT_EQ(*status, 0) << tshark.stderr_text();
      daemon_->stop();
      daemon_.reset();
    }
    ASSERT_GT(fs::file_size(capture), 24u) << "got an empty capture";
  }

  // A daemon that knows customer acme (user acme-dial at `link_port`, `more`
  // options) and holds one message `subject` for it, restarted with
  // pcap_file = `capture`: it replays the capture as it starts.
  void replay_capture(const fs::path& capture, std::uint16_t link_port, const std::string& subject,
                      const std::vector<std::string>& more = {}) {
    // The customer must exist before the file is read: add it on a first
    // start, then restart with pcap_file.
    daemon_.emplace(daemon_fixture::settings{
        {"retry_schedule", "1s"}, {"radius_clients_file", (work_.path() / "clients").string()}});
    daemon_->start();
    add_customer("acme", "acme-dial", link_port, more);
    const std::string qid = queue_one("acme", subject);
    expect_held("acme", qid);
    ASSERT_EQ(daemon_->stop(), 0);
    daemon_->set_setting("pcap_file", capture.string());
    daemon_->set_setting("pcap_filter", "udp port " + std::to_string(radius_port_));
    daemon_->set_setting("pcap_require_response", "yes");
    daemon_->restart();
  }

  temp_dir work_{"flushgate-lm"};
  std::uint16_t radius_port_ = 0;
  std::optional<daemon_fixture> daemon_;
};

// 1. Start → held mail goes to the framed address; Stop → mail is held again.
TEST_F(LinkMonitor, RadiusStartFlushesHeldMailAndStopHoldsItAgain) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  const std::uint16_t link_port = free_port_on("127.0.0.2");
  auto server =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.2:" + std::to_string(link_port));
  server.start();
  start_daemon();
  add_customer("acme", "acme-dial", link_port);
  const std::string first = queue_one("acme", "before-start");
  expect_held("acme", first);

  send_answered({"Start", "acme-dial", "S1", "127.0.0.2"});
  auto live = links();
  ASSERT_TRUE(live.has_value()) << "link list --json failed";
  ASSERT_EQ(live->size(), 1u) << "got links " << describe_links()
                              << ", want acme-dial@127.0.0.2/S1";
  EXPECT_EQ((*live)[0].user, "acme-dial");
  EXPECT_EQ((*live)[0].address, "127.0.0.2");
  EXPECT_EQ((*live)[0].session, "S1");
  EXPECT_EQ((*live)[0].source, "radius");
  EXPECT_TRUE(wait_files(server, 1))
      << "got " << server.message_files().size() << " messages at 127.0.0.2, want 1; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(delivered(server, "before-start"));
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s))
      << "got mail left queued after the flush, want none";

  send_answered({"Stop", "acme-dial", "S1", "127.0.0.2"});
  live = links();
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty()) << "got links " << describe_links() << " after Stop, want none";

  const std::string second = queue_one("acme", "after-stop");
  auto flush = daemon_->cli({"flush", "acme"});
  EXPECT_EQ(flush.exit_code, 1) << "flush with the link down: got exit " << flush.exit_code
                                << ", want 1 (no route)\n"
                                << flush.out << flush.err;
  EXPECT_FALSE(wait_until([&] { return server.message_files().size() > 1; }, 1500ms))
      << "got mail at 127.0.0.2 after Stop, want it held";
  expect_held("acme", second);
  EXPECT_EQ(queued_for(*daemon_, "acme"), 1u);
}

// 2. Accounting-On from a NAS ends that NAS's links; another NAS's link stays.
TEST_F(LinkMonitor, AccountingOnEndsOnlyTheLinksOfThatNas) {
  start_daemon("127.0.0.1/32 testing123 nas-a\n127.0.0.3/32 other-secret nas-b\n");
  // Nothing listens on the link ports: the links are only recorded.
  add_customer("acme", "acme-dial", free_port_on("127.0.0.2"));
  add_customer("beta", "beta-dial", free_port_on("127.0.0.4"));
  add_customer("gamma", "gamma-dial", free_port_on("127.0.0.5"));

  send_answered({"Start", "acme-dial", "A1", "127.0.0.2"});
  send_answered({"Start", "beta-dial", "B1", "127.0.0.4"});
  acct_request gamma{"Start", "gamma-dial", "G1", "127.0.0.5", "127.0.0.3", "127.0.0.3"};
  auto sent = radclient(gamma.text(), "other-secret");
  ASSERT_EQ(sent.exit_code, 0) << "Start from NAS B: radclient got exit " << sent.exit_code
                               << ", want 0\n"
                               << sent.stdout_text << sent.stderr_text;
  auto live = links();
  ASSERT_TRUE(live.has_value());
  ASSERT_EQ(live->size(), 3u) << "got links " << describe_links() << ", want three";
  EXPECT_EQ(link_of("gamma-dial").value_or(live_link{}).nas, "127.0.0.3");
  EXPECT_EQ(link_of("acme-dial").value_or(live_link{}).nas, "127.0.0.1");

  send_answered({"Accounting-On", "", "00000000", ""});
  live = links();
  ASSERT_TRUE(live.has_value());
  ASSERT_EQ(live->size(), 1u) << "after Accounting-On from NAS 127.0.0.1: got links "
                              << describe_links() << ", want only gamma-dial's";
  EXPECT_EQ((*live)[0].user, "gamma-dial");
  EXPECT_EQ((*live)[0].address, "127.0.0.5");
  EXPECT_FALSE(log_lines(*daemon_, {"NAS 127.0.0.1 restarted", "2 links ended"}).empty())
      << "got no log line for the NAS restart, want one; log:\n"
      << daemon_->log_text();

  // Accounting-On from NAS B ends its link too.
  acct_request on_b{"Accounting-On", "", "00000000", "", "127.0.0.3", "127.0.0.3"};
  sent = radclient(on_b.text(), "other-secret");
  EXPECT_EQ(sent.exit_code, 0) << sent.stdout_text << sent.stderr_text;
  live = links();
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty()) << "got links " << describe_links()
                             << " after both NASes restarted, want none";
}

// 3. Packets that must not be believed change nothing and get no answer.
TEST_F(LinkMonitor, ForgedUnknownSourceAndTamperedPacketsChangeNothing) {
  // The only NAS is 127.0.0.2; radclient sends from 127.0.0.1 unless told otherwise.
  start_daemon("127.0.0.2/32 testing123 nas-a\n");
  add_customer("acme", "acme-dial", free_port_on("127.0.0.2"));
  const std::string qid = queue_one("acme", "held-1");

  // Wrong shared secret, from the configured NAS address.
  send_unanswered({"Start", "acme-dial", "F1", "127.0.0.2", "127.0.0.2", "127.0.0.2"},
                  "wrong-secret");
  EXPECT_TRUE(wait_log_line(*daemon_,
                            {"radius: dropped", "from 127.0.0.2", "bad Request Authenticator"}, 5s))
      << "got no drop logged for the wrong secret; log:\n"
      << daemon_->log_text();

  // The right secret from a source that is not a NAS.
  send_unanswered({"Start", "acme-dial", "U1", "127.0.0.2", "127.0.0.2", "127.0.0.1"});
  EXPECT_TRUE(
      wait_log_line(*daemon_, {"radius: dropped", "from 127.0.0.1", "not a configured NAS"}, 5s))
      << "got no drop logged for the unknown source; log:\n"
      << daemon_->log_text();

  // A real radclient request, caught on its way and changed by an attacker
  // (Framed-IP 127.0.0.2 → 127.0.0.66), sent from the NAS's address.
  udp_socket catcher("127.0.0.1");
  acct_request genuine{"Start", "acme-dial", "T1", "127.0.0.2", "127.0.0.2", "127.0.0.2"};
  spawn_options with_input;
  with_input.stdin_text = genuine.text();
  process sender({"radclient", "-r", "1", "-t", "1", "127.0.0.1:" + std::to_string(catcher.port()),
                  "acct", secret},
                 with_input);
  auto caught = catcher.receive(10s);
  ASSERT_TRUE(caught.has_value()) << "got no datagram from radclient, want its Accounting-Request";
  sender.wait_for_exit(10s);
  const std::vector<std::uint8_t> framed{8, 6, 127, 0, 0, 2};  // Framed-IP-Address = 127.0.0.2
  auto tampered = *caught;
  auto at = std::search(tampered.begin() + 20, tampered.end(), framed.begin(), framed.end());
  ASSERT_NE(at, tampered.end()) << "got no Framed-IP-Address 127.0.0.2 in radclient's request";
  at[5] = 66;
  udp_socket nas("127.0.0.2");
  ASSERT_TRUE(nas.send_to(tampered, "127.0.0.1", radius_port_));
  EXPECT_FALSE(nas.receive(1500ms).has_value()) << "got an answer to a tampered request, want none";

  auto live = links();
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty()) << "got links " << describe_links() << ", want none";
  EXPECT_TRUE(log_lines(*daemon_, {"link up"}).empty()) << "got a link up logged, want none; log:\n"
                                                        << daemon_->log_text();
  EXPECT_TRUE(log_lines(*daemon_, {"flush started"}).empty())
      << "got a flush started, want none; log:\n"
      << daemon_->log_text();
  expect_held("acme", qid);

  // The same request untouched is believed: the checks above were not vacuous.
  ASSERT_TRUE(nas.send_to(*caught, "127.0.0.1", radius_port_));
  EXPECT_TRUE(nas.receive(5s).has_value()) << "got no answer to the genuine request, want one";
  EXPECT_TRUE(wait_link("acme-dial", "127.0.0.2", "T1"))
      << "got links " << describe_links() << ", want acme-dial@127.0.0.2/T1";
}

// 4. A framed address outside --dialup-net is refused, logged, and answered.
TEST_F(LinkMonitor, StartOutsideTheDialupNetIsRefusedLoggedAndAnswered) {
  start_daemon();
  add_customer("acme", "acme-dial", free_port_on("127.0.0.9"), {"--dialup-net", "127.0.0.0/30"});
  const std::string qid = queue_one("acme", "held-2");

  send_answered({"Start", "acme-dial", "X1", "127.0.0.9"});
  auto live = links();
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty()) << "got links " << describe_links()
                             << " for an address outside 127.0.0.0/30, want none";
  EXPECT_FALSE(log_lines(*daemon_, {"SECURITY", "acme-dial", "127.0.0.9"}).empty())
      << "got no SECURITY line in the log, want one; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(log_lines(*daemon_, {"link up:"}).empty()) << "got a link up logged, want none";
  expect_held("acme", qid);

  // Inside the range the same user comes up.
  send_answered({"Start", "acme-dial", "X2", "127.0.0.2"});
  EXPECT_TRUE(wait_link("acme-dial", "127.0.0.2", "X2")) << "got links " << describe_links();
}

// 5a. An Interim-Update with a new address moves the route: mail follows.
TEST_F(LinkMonitor, InterimUpdateWithANewAddressRebindsTheRoute) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  const std::uint16_t link_port = free_port_on_all({"127.0.0.2", "127.0.0.3"});
  auto first =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.2:" + std::to_string(link_port));
  auto second =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.3:" + std::to_string(link_port));
  start_all({&first, &second});
  start_daemon();
  add_customer("acme", "acme-dial", link_port);

  queue_one("acme", "to-first");
  send_answered({"Start", "acme-dial", "S1", "127.0.0.2"});
  ASSERT_TRUE(wait_files(first, 1))
      << "got " << first.message_files().size() << " messages at 127.0.0.2, want 1; log:\n"
      << daemon_->log_text();
  ASSERT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));

  send_answered({"Interim-Update", "acme-dial", "S1", "127.0.0.3"});
  EXPECT_TRUE(wait_link("acme-dial", "127.0.0.3", "S1"))
      << "got links " << describe_links() << ", want acme-dial@127.0.0.3/S1";
  queue_one("acme", "to-second");
  EXPECT_TRUE(wait_files(second, 1)) << "got " << second.message_files().size()
                                     << " messages at 127.0.0.3 after the rebind, want 1; log:\n"
                                     << daemon_->log_text();
  EXPECT_TRUE(delivered(second, "to-second"));
  EXPECT_EQ(first.message_files().size(), 1u) << "got mail at the old address after the rebind";
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

// 5b. A Stop for a session the link has moved past ends nothing.
TEST_F(LinkMonitor, LateStopOfAnOlderSessionEndsNothing) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  const std::uint16_t link_port = free_port_on_all({"127.0.0.2", "127.0.0.3"});
  auto first =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.2:" + std::to_string(link_port));
  auto second =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.3:" + std::to_string(link_port));
  start_all({&first, &second});
  start_daemon();
  add_customer("acme", "acme-dial", link_port);

  // S1 at .2, then the customer redials: S2 at .3 (Start), and S1's Stop comes late.
  send_answered({"Start", "acme-dial", "S1", "127.0.0.2"});
  send_answered({"Start", "acme-dial", "S2", "127.0.0.3"});
  send_answered({"Stop", "acme-dial", "S1", "127.0.0.2"});
  EXPECT_TRUE(wait_link("acme-dial", "127.0.0.3", "S2", 2s))
      << "after a late Stop of S1: got links " << describe_links()
      << ", want acme-dial@127.0.0.3/S2";
  queue_one("acme", "after-late-stop");
  EXPECT_TRUE(wait_files(second, 1))
      << "got " << second.message_files().size() << " messages at 127.0.0.3, want 1; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(first.message_files().empty()) << "got mail at S1's old address";

  // A NAS that learns of S3 only by an Interim-Update (its Start was lost):
  // S3 at .2 takes over, and S2's late Stop ends nothing either.
  send_answered({"Interim-Update", "acme-dial", "S3", "127.0.0.2"});
  send_answered({"Stop", "acme-dial", "S2", "127.0.0.3"});
  EXPECT_TRUE(wait_link("acme-dial", "127.0.0.2", "S3", 2s))
      << "after a late Stop of S2: got links " << describe_links()
      << ", want acme-dial@127.0.0.2/S3";
  queue_one("acme", "after-second-late-stop");
  EXPECT_TRUE(wait_files(first, 1))
      << "got " << first.message_files().size() << " messages at 127.0.0.2, want 1; log:\n"
      << daemon_->log_text();

  // The current session's own Stop ends the link.
  send_answered({"Stop", "acme-dial", "S3", "127.0.0.2"});
  EXPECT_TRUE(wait_no_link("acme-dial", 2s))
      << "got links " << describe_links() << " after Stop S3, want none";
}

// 6. The same story from a capture of real radclient traffic.
TEST_F(LinkMonitor, CapturedStartReplayedFromPcapFileFlushesHeldMail) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  if (!program_available("tshark")) GTEST_SKIP() << "tshark is not installed";
  const fs::path capture = work_.path() / "start.pcap";
  capture_exchange({"Start", "acme-dial", "P1", "127.0.0.2"}, capture);
  if (HasFatalFailure()) return;

  const std::uint16_t link_port = free_port_on("127.0.0.2");
  auto server =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.2:" + std::to_string(link_port));
  server.start();
  replay_capture(capture, link_port, "replayed");
  if (HasFatalFailure()) return;

  EXPECT_TRUE(wait_link("acme-dial", "127.0.0.2", "P1"))
      << "got links " << describe_links() << ", want acme-dial@127.0.0.2/P1; log:\n"
      << daemon_->log_text();
  EXPECT_EQ(link_of("acme-dial").value_or(live_link{}).source, "pcap");
  EXPECT_TRUE(wait_files(server, 1))
      << "got " << server.message_files().size() << " messages at 127.0.0.2, want 1; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(delivered(server, "replayed"));
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

// 7. Hooks: link-up and flush-done run with the event's variables; a
// failing hook does not stop the flush.
class LinkMonitorHooks : public LinkMonitor {
 protected:
  // hooks_dir with link-up.d/{05-fail,10-record} and flush-done.d/10-record;
  // each record hook dumps its environment to out/<event>.env.
  void make_hooks() {
    hooks_ = hooks_dir_.path() / "hooks";
    out_ = hooks_dir_.path() / "out";
    const auto dir_mode = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                          fs::perms::others_read | fs::perms::others_exec;
    const auto hook_mode = dir_mode;  // 0755
    for (const auto& d : {hooks_, hooks_ / "link-up.d", hooks_ / "flush-done.d", out_}) {
      fs::create_directory(d);
      fs::permissions(d, dir_mode);
    }
    // Written to a temporary name and renamed: the test never reads half a file.
    const std::string record = "#!/bin/sh\n/usr/bin/env > " + out_.string() +
                               "/$1.tmp && /bin/mv " + out_.string() + "/$1.tmp " + out_.string() +
                               "/$1.env\n";
    write_file(hooks_ / "link-up.d" / "05-fail", "#!/bin/sh\necho failing on purpose\nexit 1\n",
               hook_mode);
    write_file(hooks_ / "link-up.d" / "10-record", record, hook_mode);
    write_file(hooks_ / "flush-done.d" / "10-record", record, hook_mode);
  }

  // The environment a record hook saw for `event`; empty until it ran.
  std::map<std::string, std::string> env_of(const std::string& event,
                                            std::chrono::milliseconds timeout = 15s) {
    const fs::path file = out_ / (event + ".env");
    wait_until([&] { return fs::exists(file); }, timeout, 50ms);
    return parse_env(read_file(file));
  }

  // mkdtemp gives 0700, owned by us (root); /tmp above it is sticky.
  temp_dir hooks_dir_{"flushgate-lm-hooks"};
  fs::path hooks_;
  fs::path out_;
};

TEST_F(LinkMonitorHooks, LinkUpHooksRunAndAFailingHookDoesNotStopTheFlush) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  make_hooks();
  const std::uint16_t link_port = free_port_on("127.0.0.2");
  auto server =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.2:" + std::to_string(link_port));
  server.start();
  start_daemon("127.0.0.1/32 testing123 nas-a\n", {{"hooks_dir", hooks_.string()}});
  add_customer("acme", "acme-dial", link_port);
  queue_one("acme", "hooked");

  send_answered({"Start", "acme-dial", "H1", "127.0.0.2"});
  EXPECT_TRUE(wait_files(server, 1))
      << "got " << server.message_files().size()
      << " messages at 127.0.0.2, want 1 despite the failing hook; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));

  auto up = env_of("link-up");
  EXPECT_EQ(up["FLUSHGATE_EVENT"], "link-up");
  EXPECT_EQ(up["FLUSHGATE_CUSTOMER"], "acme");
  EXPECT_EQ(up["FLUSHGATE_USER"], "acme-dial");
  EXPECT_EQ(up["FLUSHGATE_IP"], "127.0.0.2");
  EXPECT_EQ(up["FLUSHGATE_SESSION"], "H1");
  EXPECT_EQ(up["FLUSHGATE_DOMAINS"], "acme.test");

  auto done = env_of("flush-done");
  EXPECT_EQ(done["FLUSHGATE_EVENT"], "flush-done") << "got no flush-done hook run; log:\n"
                                                   << daemon_->log_text();
  EXPECT_EQ(done["FLUSHGATE_CUSTOMER"], "acme");
  // route::describe(), e.g. "link acme-dial 127.0.0.2:PORT".
  EXPECT_NE(done["FLUSHGATE_ROUTE"].find("127.0.0.2:" + std::to_string(link_port)),
            std::string::npos)
      << "flush-done: got FLUSHGATE_ROUTE \"" << done["FLUSHGATE_ROUTE"]
      << "\", want the link's address and port";

  EXPECT_TRUE(wait_log_line(*daemon_, {"hook link-up.d/05-fail", "exit 1"}, 10s))
      << "got no log line for the failing hook, want one; log:\n"
      << daemon_->log_text();
  EXPECT_FALSE(log_lines(*daemon_, {"hook link-up.d/05-fail: failing on purpose"}).empty())
      << "got the hook's output not logged";
}

// The flush a link started is reported with that link: user, address, session.
TEST_F(LinkMonitorHooks, FlushDoneHookNamesTheLinkThatCarriedTheFlush) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  make_hooks();
  const std::uint16_t link_port = free_port_on("127.0.0.2");
  auto server =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.2:" + std::to_string(link_port));
  server.start();
  start_daemon("127.0.0.1/32 testing123 nas-a\n", {{"hooks_dir", hooks_.string()}});
  add_customer("acme", "acme-dial", link_port);
  queue_one("acme", "hooked");

  send_answered({"Start", "acme-dial", "H2", "127.0.0.2"});
  ASSERT_TRUE(wait_files(server, 1)) << "log:\n" << daemon_->log_text();
  auto done = env_of("flush-done");
  ASSERT_EQ(done["FLUSHGATE_EVENT"], "flush-done") << "got no flush-done hook run; log:\n"
                                                   << daemon_->log_text();
  EXPECT_EQ(done["FLUSHGATE_CUSTOMER"], "acme");
  EXPECT_EQ(done["FLUSHGATE_USER"], "acme-dial")
      << "flush-done: got FLUSHGATE_USER \"" << done["FLUSHGATE_USER"]
      << "\", want the link's user";
  EXPECT_EQ(done["FLUSHGATE_IP"], "127.0.0.2")
      << "flush-done: got FLUSHGATE_IP \"" << done["FLUSHGATE_IP"] << "\", want the link's address";
  EXPECT_EQ(done["FLUSHGATE_SESSION"], "H2")
      << "flush-done: got FLUSHGATE_SESSION \"" << done["FLUSHGATE_SESSION"]
      << "\", want the link's session";
}

// 8. pppd's ip-up/ip-down: empty environment, return at once, link follows.
TEST_F(LinkMonitor, PppdScriptsReturnAtOnceAndBringTheLinkUpAndDown) {
  start_daemon();
  add_customer("acme", "acme-dial", free_port_on("127.0.0.5"));
  const fs::path scripts = fs::path(FLUSHGATE_SOURCE_DIR) / "scripts" / "ppp";
  const fs::path fifo = work_.path() / "go-down";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << "mkfifo: " << std::strerror(errno);
  const fs::path up_times = work_.path() / "up.times";
  const fs::path down_times = work_.path() / "down.times";
  // One shell runs both, so $PPID (the session id's part) is the same, as
  // with one pppd; it waits on the FIFO in between. No PATH: only builtins
  // and absolute paths, like pppd's scripts.
  const std::string args = " ppp0 /dev/ttyS0 57600 10.0.0.1 127.0.0.5 acme-dial";
  const std::string script = "t0=$EPOCHREALTIME; " + (scripts / "ip-up").string() + args +
                             "; t1=$EPOCHREALTIME; echo \"$t0 $t1\" > " + up_times.string() +
                             "; read x < " + fifo.string() + "; t0=$EPOCHREALTIME; " +
                             (scripts / "ip-down").string() + args +
                             "; t1=$EPOCHREALTIME; echo \"$t0 $t1\" > " + down_times.string();
  process pppd({"/usr/bin/env", "-i", "FLUSHGATE_CLI=" + daemon_fixture::cli_path().string(),
                "FLUSHGATE_CONFIG=" + daemon_->config_path().string(), "/bin/bash", "-c", script});
  const std::string session = "ppp-" + std::to_string(pppd.pid()) + "-ppp0";

  // "t0 t1\n" once the script has returned; its run time in seconds.
  auto elapsed = [](const fs::path& file) -> std::optional<double> {
    const std::string text = read_file(file);
    if (text.empty() || text.back() != '\n') return std::nullopt;
    double t0 = 0, t1 = 0;
    std::istringstream in(text);
    if (!(in >> t0 >> t1)) return std::nullopt;
    return t1 - t0;
  };
  ASSERT_TRUE(wait_until([&] { return elapsed(up_times).has_value(); }, 10s))
      << "ip-up never returned";
  EXPECT_LT(*elapsed(up_times), 1.0)
      << "ip-up took " << *elapsed(up_times) << " s, want it to return at once";
  EXPECT_TRUE(wait_link("acme-dial", "127.0.0.5", session))
      << "got links " << describe_links() << ", want acme-dial@127.0.0.5/" << session << "; log:\n"
      << daemon_->log_text();
  EXPECT_EQ(link_of("acme-dial").value_or(live_link{}).source, "script");

  // Let the shell go on to ip-down (its read opens the FIFO; poll until it has).
  int fd = -1;
  ASSERT_TRUE(wait_until(
      [&] { return (fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)) >= 0; }, 10s))
      << "the shell never waited on the FIFO";
  ASSERT_EQ(::write(fd, "x\n", 2), 2);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return elapsed(down_times).has_value(); }, 10s))
      << "ip-down never returned";
  EXPECT_LT(*elapsed(down_times), 1.0)
      << "ip-down took " << *elapsed(down_times) << " s, want it to return at once";
  EXPECT_TRUE(wait_no_link("acme-dial"))
      << "got links " << describe_links() << " after ip-down, want none";
  EXPECT_EQ(pppd.wait_for_exit(10s), std::optional<int>(0));
}

// 9. IPv6 lines: a link carries an IPv4 address, an IPv6 address and the
// LAN's prefix (RFC 3162, RFC 4818, RFC 6911). Only 127.0.0.0/8 and ::1 are
// ever contacted: routes into 2001:db8::/32 (documentation prefix) are only
// looked at, with no mail queued for the customer.
class LinkMonitorIpv6 : public LinkMonitor {
 protected:
  // `customer show NAME --json`'s current_route ("link acme-dial [::1]:PORT", ...), or "".
  std::string current_route(const std::string& customer) const {
    auto r = daemon_->cli({"--json", "customer", "show", customer});
    if (r.exit_code != 0) return "";
    try {
      Poco::JSON::Parser parser;
      return parser.parse(r.out)
          .extract<Poco::JSON::Object::Ptr>()
          ->optValue<std::string>("current_route", "");
    } catch (const std::exception&) {  // Poco::Exception is one
      return "";
    }
  }

  // Polls until `customer`'s current route is `want`.
  bool wait_route(const std::string& customer, const std::string& want,
                  std::chrono::milliseconds timeout = 10s) const {
    return wait_until([&] { return current_route(customer) == want; }, timeout, 50ms);
  }

  // `flushgate link up|down ARGS...` must succeed.
  void link_command(const std::vector<std::string>& args) {
    auto r = daemon_->cli(args);
    EXPECT_EQ(r.exit_code, 0) << describe_command(args) << ": got exit " << r.exit_code
                              << ", want 0\n"
                              << r.out << r.err << "\nlog:\n"
                              << daemon_->log_text();
  }

  static std::string describe_command(const std::vector<std::string>& args) {
    std::string out = "flushgate";
    for (const auto& a : args) out += " " + a;
    return out;
  }

  // Starts a daemon with the RADIUS listener and the admin HTTP listener (for /metrics).
  void start_daemon_with_metrics() {
    admin_port_ = free_port();
    start_daemon("127.0.0.1/32 testing123 nas-a\n",
                 {{"admin_listen", "127.0.0.1:" + std::to_string(admin_port_)}});
  }

  // flushgate_link_connections_total{family=FAMILY,address=WHICH} per GET
  // /metrics (curl, the admin token); -1 when absent or unreadable.
  long link_connections(const std::string& family, const std::string& which) const {
    std::ifstream in(daemon_->data_dir() / "admin.token");
    std::string token;
    std::getline(in, token);
    auto r = run_command({"curl", "-s", "--max-time", "10", "-H", "Authorization: Bearer " + token,
                          "http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics"},
                         15s);
    std::istringstream lines(r.stdout_text);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("flushgate_link_connections_total{", 0) != 0) continue;
      if (line.find("family=\"" + family + "\"") == std::string::npos) continue;
      if (line.find("address=\"" + which + "\"") == std::string::npos) continue;
      try {
        return std::stol(line.substr(line.rfind(' ') + 1));
      } catch (const std::exception&) {
        return -1;
      }
    }
    return -1;
  }

  // True when the daemon logged that it connected to a customer's server.
  bool contacted_anything() const {
    return !log_lines(*daemon_, {"connected over"}).empty() ||
           !log_lines(*daemon_, {"flush started"}).empty();
  }

  // Runs one of scripts/ppp/ as pppd does: no environment but ours, PPPD_PID
  // set; `args` after the script name. Waits for the script (not for what it
  // started in the background) and returns its exit code.
  int run_ppp_script(const std::string& name, const std::string& pppd_pid,
                     const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    const fs::path scripts = fs::path(FLUSHGATE_SOURCE_DIR) / "scripts" / "ppp";
    std::vector<std::string> argv{"/usr/bin/env", "-i",
                                  "FLUSHGATE_CLI=" + daemon_fixture::cli_path().string(),
                                  "FLUSHGATE_CONFIG=" + daemon_->config_path().string(),
                                  "PPPD_PID=" + pppd_pid};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.push_back((scripts / name).string());
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, 15s).exit_code;
  }

  std::uint16_t admin_port_ = 0;
};

// 9a. An IPv6-only line: the held mail goes to the framed IPv6 address.
TEST_F(LinkMonitorIpv6, Ipv6OnlyStartFlushesHeldMailToTheFramedIpv6Address) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  const std::uint16_t link_port = free_port();
  auto server =
      postfix_instance::final_destination({"acme.test"}, "[::1]:" + std::to_string(link_port));
  server.start();
  start_daemon_with_metrics();
  add_customer("acme", "acme-dial", link_port);
  const std::string qid = queue_one("acme", "over-ipv6");
  expect_held("acme", qid);

  acct_request start{"Start", "acme-dial", "V1", ""};
  start.framed_ipv6 = "::1";
  send_answered(start);
  EXPECT_TRUE(wait_link_where("acme-dial", [](const live_link& l) {
    return l.address.empty() && l.ipv6_address == "::1" && l.session == "V1";
  })) << "got links " << describe_links() << ", want acme-dial@-,::1/V1";
  const std::string where = "[::1]:" + std::to_string(link_port);
  EXPECT_EQ(current_route("acme"), "link acme-dial " + where);
  EXPECT_TRUE(wait_files(server, 1))
      << "got " << server.message_files().size() << " messages at " << where << ", want 1; log:\n"
      << daemon_->log_text() << "\npostfix:\n"
      << server.log_text();
  EXPECT_TRUE(delivered(server, "over-ipv6"));
  EXPECT_TRUE(wait_log_line(*daemon_, {"link acme-dial: connected over IPv6 to", where}, 10s))
      << "got no \"connected over IPv6\" line for " << where << ", want one; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(log_lines(*daemon_, {"its first address did not answer"}).empty())
      << "got a fallback logged on an IPv6-only line, want none; log:\n"
      << daemon_->log_text();
  EXPECT_EQ(link_connections("ipv6", "first"), 1)
      << "flushgate_link_connections_total{family=\"ipv6\",address=\"first\"}";
  EXPECT_EQ(link_connections("ipv4", "fallback"), -1) << "want no IPv4 fallback counted";
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s))
      << "got mail left queued after the flush, want none";
}

// 9b. A dual-stack line whose IPv6 address does not answer: IPv4 carries the mail.
TEST_F(LinkMonitorIpv6, DualStackStartFallsBackToIpv4WhenIpv6DoesNotAnswer) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  // One port number, free on both; only 127.0.0.2 will listen on it.
  const std::uint16_t link_port = free_port_on_all({"127.0.0.2", "::1"});
  auto server =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.2:" + std::to_string(link_port));
  server.start();
  start_daemon_with_metrics();
  add_customer("acme", "acme-dial", link_port);
  queue_one("acme", "dual-stack");
  ASSERT_TRUE(tcp_port_free("::1", link_port))
      << "got something listening on [::1]:" << link_port << ", want nothing there";

  acct_request start{"Start", "acme-dial", "D1", "127.0.0.2"};
  start.framed_ipv6 = "::1";
  send_answered(start);
  EXPECT_TRUE(wait_link_where("acme-dial", [](const live_link& l) {
    return l.address == "127.0.0.2" && l.ipv6_address == "::1" && l.session == "D1";
  })) << "got links " << describe_links() << ", want acme-dial@127.0.0.2,::1/D1";
  const std::string v4 = "127.0.0.2]:" + std::to_string(link_port);
  const std::string v6 = "[::1]:" + std::to_string(link_port);
  EXPECT_EQ(current_route("acme"),
            "link acme-dial " + v6 + " or 127.0.0.2:" + std::to_string(link_port))
      << "want IPv6 first (the default prefer_family)";
  EXPECT_TRUE(wait_files(server, 1))
      << "got " << server.message_files().size() << " messages at 127.0.0.2, want 1; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(delivered(server, "dual-stack"));
  EXPECT_TRUE(wait_log_line(*daemon_,
                            {"link acme-dial: connected over IPv4 to", v4,
                             "(its first address did not answer)"},
                            10s))
      << "got no fallback to IPv4 logged, want one; log:\n"
      << daemon_->log_text();
  EXPECT_FALSE(log_lines(*daemon_, {"link acme-dial: connect to", v6, "over IPv6"}).empty())
      << "got no failed IPv6 attempt logged, want one; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(log_lines(*daemon_, {"connected over IPv6"}).empty());
  EXPECT_EQ(link_connections("ipv4", "fallback"), 1)
      << "flushgate_link_connections_total{family=\"ipv4\",address=\"fallback\"}";
  EXPECT_EQ(link_connections("ipv6", "first"), -1) << "want no IPv6 connection counted";
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));

  // A Stop ends the whole line, both families.
  send_answered({"Stop", "acme-dial", "D1", "127.0.0.2"});
  EXPECT_TRUE(wait_no_link("acme-dial", 2s))
      << "got links " << describe_links() << " after Stop, want none";
  EXPECT_EQ(current_route("acme"), "hold");
}

// 9c. --ipv6-server ::25 puts the server inside the delegated prefix; an
// Interim-Update with a new prefix moves the route (RFC 2866 §5.1).
TEST_F(LinkMonitorIpv6, DelegatedPrefixWithServerOffsetRoutesIntoThePrefixAndInterimRebinds) {
  start_daemon();
  // Nothing is queued for acme: 2001:db8:: is looked at, never contacted.
  add_customer("acme", "acme-dial", 2525, {"--ipv6-server", "::25"});

  acct_request start{"Start", "acme-dial", "O1", ""};
  start.delegated_prefix = "2001:db8:0:5600::/56";
  send_answered(start);
  EXPECT_TRUE(wait_link_where("acme-dial", [](const live_link& l) {
    return l.ipv6_prefix == "2001:db8:0:5600::/56" && l.ipv6_server == "2001:db8:0:5600::25" &&
           l.address.empty() && l.ipv6_address.empty();
  })) << "got links " << describe_links()
      << ", want acme-dial@-,prefix 2001:db8:0:5600::/56,server 2001:db8:0:5600::25/O1";
  EXPECT_TRUE(wait_route("acme", "link acme-dial [2001:db8:0:5600::25]:2525"))
      << "got route \"" << current_route("acme")
      << "\", want \"link acme-dial [2001:db8:0:5600::25]:2525\"";

  acct_request interim{"Interim-Update", "acme-dial", "O1", ""};
  interim.delegated_prefix = "2001:db8:0:7700::/56";
  send_answered(interim);
  EXPECT_TRUE(wait_route("acme", "link acme-dial [2001:db8:0:7700::25]:2525"))
      << "after the Interim-Update: got route \"" << current_route("acme")
      << "\", want \"link acme-dial [2001:db8:0:7700::25]:2525\"";
  auto live = links();
  ASSERT_TRUE(live.has_value());
  ASSERT_EQ(live->size(), 1u) << "got links " << describe_links() << ", want one";
  EXPECT_EQ((*live)[0].ipv6_prefix, "2001:db8:0:7700::/56");
  EXPECT_EQ((*live)[0].ipv6_server, "2001:db8:0:7700::25");
  EXPECT_EQ((*live)[0].session, "O1");
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
  EXPECT_FALSE(contacted_anything()) << "got a flush or a connection, want none; log:\n"
                                     << daemon_->log_text();
}

// 9d. Framed-IPv6-Prefix + Framed-Interface-Id make the line's address
// (RFC 3162 §2.2, §2.3); Delegated-IPv6-Prefix, when sent too, is the LAN's.
TEST_F(LinkMonitorIpv6, FramedPrefixAndInterfaceIdMakeTheLineAddress) {
  start_daemon();
  add_customer("acme", "acme-dial", 2525);

  acct_request start{"Start", "acme-dial", "I1", ""};
  start.framed_ipv6_prefix = "2001:db8:0:5600::/64";
  start.interface_id = "0000:0000:0000:0025";
  send_answered(start);
  EXPECT_TRUE(wait_link_where("acme-dial", [](const live_link& l) {
    return l.ipv6_address == "2001:db8:0:5600::25" && l.ipv6_prefix == "2001:db8:0:5600::/64";
  })) << "got links " << describe_links()
      << ", want acme-dial@-,2001:db8:0:5600::25,prefix 2001:db8:0:5600::/64/I1";
  EXPECT_EQ(current_route("acme"), "link acme-dial [2001:db8:0:5600::25]:2525");

  acct_request interim{"Interim-Update", "acme-dial", "I1", ""};
  interim.framed_ipv6_prefix = "2001:db8:0:5600::/64";
  interim.interface_id = "0000:0000:0000:0025";
  interim.delegated_prefix = "2001:db8:0:7700::/56";
  send_answered(interim);
  EXPECT_TRUE(wait_link_where("acme-dial", [](const live_link& l) {
    return l.ipv6_address == "2001:db8:0:5600::25" && l.ipv6_prefix == "2001:db8:0:7700::/56";
  })) << "got links " << describe_links()
      << ", want the delegated prefix 2001:db8:0:7700::/56 as the LAN's";
  EXPECT_EQ(queued_for(*daemon_, "acme"), 0u);
  EXPECT_FALSE(contacted_anything()) << "got a flush or a connection, want none; log:\n"
                                     << daemon_->log_text();
}

// 9e. A prefix outside the user's IPv6 --dialup-net is refused and logged.
TEST_F(LinkMonitorIpv6, DelegatedPrefixOutsideTheDialupNetIsRefusedAsASecurityEvent) {
  start_daemon();
  add_customer("acme", "acme-dial", 2525, {"--dialup-net", "2001:db8::/32"});

  acct_request forged{"Start", "acme-dial", "X1", ""};
  forged.delegated_prefix = "2001:db9::/48";
  send_answered(forged);  // refusals are final: answered all the same
  auto live = links();
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty()) << "got links " << describe_links()
                             << " for a prefix outside 2001:db8::/32, want none";
  EXPECT_TRUE(wait_log_line(*daemon_, {"SECURITY", "acme-dial", "2001:db9::/48", "REFUSED"}, 5s))
      << "got no SECURITY line naming 2001:db9::/48, want one; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(log_lines(*daemon_, {"link up:"}).empty()) << "got a link up logged, want none";

  // Inside the range the same user comes up: the refusal was about the prefix.
  acct_request inside{"Start", "acme-dial", "X2", ""};
  inside.delegated_prefix = "2001:db8:0:5600::/56";
  send_answered(inside);
  EXPECT_TRUE(wait_link_where("acme-dial", [](const live_link& l) {
    return l.ipv6_prefix == "2001:db8:0:5600::/56" && l.session == "X2";
  })) << "got links " << describe_links() << ", want acme-dial@prefix 2001:db8:0:5600::/56/X2";
  EXPECT_FALSE(contacted_anything()) << "log:\n" << daemon_->log_text();
}

// 9f. A user pinned to IPv4 ranges only: a dual-stack Start brings up the
// IPv4 part, and the unchecked IPv6 part is dropped with a SECURITY warning.
TEST_F(LinkMonitorIpv6, UserPinnedToIpv4KeepsOnlyTheIpv4PartOfADualStackStart) {
  start_daemon();
  const std::uint16_t link_port = free_port_on("127.0.0.2");
  add_customer("acme", "acme-dial", link_port, {"--dialup-net", "127.0.0.0/8"});

  acct_request start{"Start", "acme-dial", "P1", "127.0.0.2"};
  start.framed_ipv6 = "::1";
  send_answered(start);
  EXPECT_TRUE(wait_link_where("acme-dial", [](const live_link& l) {
    return l.address == "127.0.0.2" && l.session == "P1";
  })) << "got links " << describe_links() << ", want acme-dial@127.0.0.2/P1";
  const auto link = link_of("acme-dial").value_or(live_link{});
  EXPECT_EQ(link.ipv6_address, "") << "got the unchecked IPv6 address kept, want it dropped";
  EXPECT_EQ(link.ipv6_prefix, "");
  EXPECT_EQ(current_route("acme"), "link acme-dial 127.0.0.2:" + std::to_string(link_port));
  EXPECT_TRUE(wait_log_line(*daemon_,
                            {"SECURITY", "acme-dial", "IPv6 part (::1) is ignored", "127.0.0.0/8"},
                            5s))
      << "got no SECURITY warning about the ignored IPv6 part, want one; log:\n"
      << daemon_->log_text();
}

// 9g. A capture of an IPv6-only Start, replayed through pcap_file, does what
// the live packet does.
TEST_F(LinkMonitorIpv6, CapturedIpv6OnlyStartReplayedFromPcapFileFlushesOverIpv6) {
  if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
  if (!program_available("tshark")) GTEST_SKIP() << "tshark is not installed";
  const fs::path capture = work_.path() / "start6.pcap";
  acct_request start{"Start", "acme-dial", "P6", ""};
  start.framed_ipv6 = "::1";
  capture_exchange(start, capture);
  if (HasFatalFailure()) return;

  const std::uint16_t link_port = free_port();
  auto server =
      postfix_instance::final_destination({"acme.test"}, "[::1]:" + std::to_string(link_port));
  server.start();
  replay_capture(capture, link_port, "replayed-v6");
  if (HasFatalFailure()) return;

  EXPECT_TRUE(wait_link_where("acme-dial", [](const live_link& l) {
    return l.ipv6_address == "::1" && l.address.empty() && l.session == "P6";
  })) << "got links " << describe_links() << ", want acme-dial@-,::1/P6; log:\n"
      << daemon_->log_text();
  EXPECT_EQ(link_of("acme-dial").value_or(live_link{}).source, "pcap");
  EXPECT_TRUE(wait_files(server, 1))
      << "got " << server.message_files().size() << " messages at [::1], want 1; log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(delivered(server, "replayed-v6"));
  EXPECT_TRUE(wait_log_line(
      *daemon_, {"link acme-dial: connected over IPv6 to", "[::1]:" + std::to_string(link_port)},
      10s))
      << "log:\n"
      << daemon_->log_text();
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 10s));
}

// 9h. pppd reports IPv4 and IPv6 separately: `link up` of one session
// merges, and `link down --family` ends one family only.
TEST_F(LinkMonitorIpv6, LinkUpCommandsOfOneSessionMergeAndFamilyDownKeepsTheOther) {
  start_daemon();
  const std::uint16_t link_port = free_port_on("127.0.0.5");
  // Nothing queued: the IPv6 route into 2001:db8:: is never contacted.
  add_customer("acme", "acme-dial", link_port, {"--ipv6-server", "::25"});
  const std::string port = std::to_string(link_port);

  link_command({"link", "up", "acme-dial", "--ip", "127.0.0.5", "--session", "S"});
  link_command({"link", "up", "acme-dial", "--prefix", "2001:db8:0:5600::/56", "--session", "S"});
  auto live = links();
  ASSERT_TRUE(live.has_value());
  ASSERT_EQ(live->size(), 1u) << "got links " << describe_links() << ", want one";
  EXPECT_EQ((*live)[0].address, "127.0.0.5") << "got the IPv4 address lost by the merge";
  EXPECT_EQ((*live)[0].ipv6_prefix, "2001:db8:0:5600::/56");
  EXPECT_EQ((*live)[0].session, "S");
  EXPECT_EQ(current_route("acme"),
            "link acme-dial [2001:db8:0:5600::25]:" + port + " or 127.0.0.5:" + port);
  // The customer's order: IPv4 first on request.
  auto set = daemon_->cli({"customer", "set", "acme", "--prefer-family", "ipv4"});
  ASSERT_EQ(set.exit_code, 0) << set.out << set.err;
  EXPECT_EQ(current_route("acme"),
            "link acme-dial 127.0.0.5:" + port + " or [2001:db8:0:5600::25]:" + port);

  link_command({"link", "down", "acme-dial", "--session", "S", "--family", "ipv6"});
  live = links();
  ASSERT_TRUE(live.has_value());
  ASSERT_EQ(live->size(), 1u) << "after link down --family ipv6: got links " << describe_links()
                              << ", want acme-dial@127.0.0.5/S";
  EXPECT_EQ((*live)[0].address, "127.0.0.5");
  EXPECT_EQ((*live)[0].ipv6_prefix, "");
  EXPECT_EQ(current_route("acme"), "link acme-dial 127.0.0.5:" + port);

  // The IPv4 family was the last: ending it ends the link.
  link_command({"link", "down", "acme-dial", "--session", "S", "--family", "ipv4"});
  EXPECT_TRUE(wait_no_link("acme-dial", 2s))
      << "got links " << describe_links() << " after both families ended, want none";
  EXPECT_FALSE(contacted_anything()) << "log:\n" << daemon_->log_text();
}

// 9i. The pppd scripts: ip-up's IPv4 address and ipv6-up's prefix (from
// the static prefix table) make one link; ipv6-down leaves the IPv4 part.
TEST_F(LinkMonitorIpv6, PppdIpv6UpMergesWithIpUpOfTheSameSession) {
  start_daemon();
  const std::uint16_t link_port = free_port_on("127.0.0.5");
  add_customer("acme", "acme-dial", link_port, {"--ipv6-server", "::25"});
  const fs::path table = work_.path() / "ppp-ipv6-prefixes";
  write_file(table,
             "# peer prefix\nother-dial 2001:db8:0:1100::/56\nacme-dial 2001:db8:0:5600::/56\n",
             fs::perms::owner_read | fs::perms::owner_write);
  const std::string session = "ppp-4242-ppp0";
  const std::vector<std::string> prefixes{"FLUSHGATE_IPV6_PREFIXES=" + table.string()};

  ASSERT_EQ(run_ppp_script("ip-up", "4242",
                           {"ppp0", "/dev/ttyS0", "57600", "10.0.0.1", "127.0.0.5", "acme-dial"}),
            0);
  ASSERT_TRUE(wait_link("acme-dial", "127.0.0.5", session))
      << "got links " << describe_links() << ", want acme-dial@127.0.0.5/" << session
      << "; log:\n"
      << daemon_->log_text();
  ASSERT_EQ(run_ppp_script("ipv6-up", "4242",
                           {"ppp0", "/dev/ttyS0", "57600", "fe80::1", "fe80::2", "acme-dial"},
                           prefixes),
            0);
  EXPECT_TRUE(wait_link_where("acme-dial", [&](const live_link& l) {
    return l.address == "127.0.0.5" && l.ipv6_prefix == "2001:db8:0:5600::/56" &&
           l.session == session;
  })) << "got links " << describe_links() << ", want acme-dial@127.0.0.5,prefix "
      << "2001:db8:0:5600::/56/" << session << "; log:\n"
      << daemon_->log_text();
  EXPECT_EQ(links().value_or(std::vector<live_link>{}).size(), 1u);
  EXPECT_EQ(link_of("acme-dial").value_or(live_link{}).source, "script");

  ASSERT_EQ(run_ppp_script("ipv6-down", "4242",
                           {"ppp0", "/dev/ttyS0", "57600", "fe80::1", "fe80::2", "acme-dial"}),
            0);
  EXPECT_TRUE(wait_link_where("acme-dial", [&](const live_link& l) {
    return l.address == "127.0.0.5" && l.ipv6_prefix.empty() && l.session == session;
  })) << "after ipv6-down: got links " << describe_links() << ", want acme-dial@127.0.0.5/"
      << session;
  ASSERT_EQ(run_ppp_script("ip-down", "4242",
                           {"ppp0", "/dev/ttyS0", "57600", "10.0.0.1", "127.0.0.5", "acme-dial"}),
            0);
  EXPECT_TRUE(wait_no_link("acme-dial")) << "got links " << describe_links()
                                         << " after ip-down, want none";
  EXPECT_FALSE(contacted_anything()) << "log:\n" << daemon_->log_text();
}

// 9j. pppd runs ip-up and ipv6-up as IPCP and IPV6CP come up, often at the
// same moment; each hands its event to the daemon in the background. The
// two must still make one dual-stack link, whichever the daemon takes first.
TEST_F(LinkMonitorIpv6, PppdIpUpAndIpv6UpAtOnceMakeOneDualStackLink) {
  start_daemon();
  add_customer("acme", "acme-dial", free_port_on("127.0.0.5"), {"--ipv6-server", "::25"});
  const fs::path table = work_.path() / "ppp-ipv6-prefixes";
  write_file(table, "acme-dial 2001:db8:0:5600::/56\n",
             fs::perms::owner_read | fs::perms::owner_write);
  const fs::path scripts = fs::path(FLUSHGATE_SOURCE_DIR) / "scripts" / "ppp";
  // Several connections in a row, each a new pppd (PID): both scripts
  // started back to back, as pppd does when both protocols open together.
  for (int round = 0; round < 20; ++round) {
    const std::string pid = std::to_string(5000 + round);
    const std::string session = "ppp-" + pid + "-ppp0";
    const std::string script = (scripts / "ip-up").string() +
                               " ppp0 /dev/ttyS0 57600 10.0.0.1 127.0.0.5 acme-dial; " +
                               (scripts / "ipv6-up").string() +
                               " ppp0 /dev/ttyS0 57600 fe80::1 fe80::2 acme-dial";
    auto r = run_command({"/usr/bin/env", "-i",
                          "FLUSHGATE_CLI=" + daemon_fixture::cli_path().string(),
                          "FLUSHGATE_CONFIG=" + daemon_->config_path().string(),
                          "FLUSHGATE_IPV6_PREFIXES=" + table.string(), "PPPD_PID=" + pid,
                          "/bin/sh", "-c", script},
                         15s);
    ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
    const bool merged = wait_link_where("acme-dial", [&](const live_link& l) {
      return l.session == session && l.address == "127.0.0.5" &&
             l.ipv6_prefix == "2001:db8:0:5600::/56";
    });
    ASSERT_TRUE(merged) << "round " << round << ": got links " << describe_links()
                        << ", want acme-dial@127.0.0.5,prefix 2001:db8:0:5600::/56/" << session
                        << " (one of the two concurrent events lost); log:\n"
                        << daemon_->log_text();
  }
}

}  // namespace
