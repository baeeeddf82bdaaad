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

  std::string text() const {
    std::ostringstream out;
    out << "Acct-Status-Type = " << status << "\n";
    if (!user.empty()) out << "User-Name = \"" << user << "\"\n";
    out << "Acct-Session-Id = \"" << session << "\"\n";
    if (!framed_ip.empty()) out << "Framed-IP-Address = " << framed_ip << "\n";
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
                       row->optValue<std::string>("source", "")});
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
    for (const auto& x : *l) out += x.user + "@" + x.address + "/" + x.session + " ";
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
  {
    // A throwaway daemon answers the Start (unknown users are answered and
    // ignored); tshark records request and response on lo and prints a line
    // per frame (-P -l), which tells when its capture is live.
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
    send_answered({"Start", "acme-dial", "P1", "127.0.0.2"});
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

  const std::uint16_t link_port = free_port_on("127.0.0.2");
  auto server =
      postfix_instance::final_destination({"acme.test"}, "127.0.0.2:" + std::to_string(link_port));
  server.start();
  // The replaying daemon needs its customer before it reads the file: add it
  // on a first start, then restart with pcap_file.
  daemon_.emplace(daemon_fixture::settings{
      {"retry_schedule", "1s"}, {"radius_clients_file", (work_.path() / "clients").string()}});
  daemon_->start();
  add_customer("acme", "acme-dial", link_port);
  const std::string qid = queue_one("acme", "replayed");
  expect_held("acme", qid);
  ASSERT_EQ(daemon_->stop(), 0);
  daemon_->set_setting("pcap_file", capture.string());
  daemon_->set_setting("pcap_filter", "udp port " + std::to_string(radius_port_));
  daemon_->set_setting("pcap_require_response", "yes");
  daemon_->restart();

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

}  // namespace
