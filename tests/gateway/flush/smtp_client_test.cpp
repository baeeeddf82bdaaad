// smtp_client_test.cpp — gateway/flush/smtp_client over real loopback sockets.
//
// A scripted fake server (a blocking thread) plays a fixed dialogue and
// records every octet it received, so each test can compare the exact wire
// text; with TLS it also records what each TLS record carried. The last
// tests drive the real Postfix smtp-sink (with its fault flags) and skip
// when it is not installed.
#include "gateway/flush/smtp_client.hpp"

#include "tests/support/ports.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace flushgate::gateway {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// The fake server.

struct act {
  enum class kind { say, lines, bdat, until, tls, hang_up } what;
  std::string text;
  std::size_t n = 0;
};
act say(std::string text) { return {act::kind::say, std::move(text), 0}; }
act lines(std::size_t n) { return {act::kind::lines, {}, n}; }
// Reads BDAT commands and their octets until `messages` BDAT ... LAST were seen.
act bdat(std::size_t messages) { return {act::kind::bdat, {}, messages}; }
act until(std::string marker) { return {act::kind::until, std::move(marker), 0}; }
act start_tls() { return {act::kind::tls, {}, 0}; }
act hang_up() { return {act::kind::hang_up, {}, 0}; }

// QUIT and its 221, the usual end of a script.
std::vector<act> with_quit(std::vector<act> script) {
  script.push_back(lines(1));
  script.push_back(say("221 2.0.0 bye\r\n"));
  return script;
}

std::string ehlo_reply(const std::vector<std::string>& keywords) {
  std::string out = "250";
  out += keywords.empty() ? " " : "-";
  out += "mx.test\r\n";
  for (std::size_t i = 0; i < keywords.size(); ++i) {
    out += (i + 1 == keywords.size() ? "250 " : "250-") + keywords[i] + "\r\n";
  }
  return out;
}

class fake_server {
 public:
  explicit fake_server(std::vector<act> script, asio::ssl::context* tls = nullptr,
                       bool implicit_tls = false)
      : script_(std::move(script)),
        tls_context_(tls),
        implicit_tls_(implicit_tls),
        acceptor_(io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0)),
        done_future_(done_.get_future()) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { run(); });
  }
  ~fake_server() {
    if (done_future_.wait_for(0s) != std::future_status::ready) force_stop();
    thread_.join();
  }
  fake_server(const fake_server&) = delete;
  fake_server& operator=(const fake_server&) = delete;

  std::uint16_t port() const { return port_; }
  // Waits until the script ran and the client closed; false on timeout.
  bool wait(std::chrono::seconds limit = 20s) {
    if (done_future_.wait_for(limit) == std::future_status::ready) return true;
    force_stop();
    return false;
  }
  // Valid after wait(): every octet received (decrypted under TLS).
  const std::string& received() const { return received_; }
  // Valid after wait(): what each read returned under TLS — one TLS record each.
  const std::vector<std::string>& records() const { return records_; }
  // Valid after wait(): why the script stopped early, "" when it did not.
  const std::string& failure() const { return failure_; }

 private:
  void force_stop() {
    const int fd = socket_fd_.load();
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
  }

  void run() {
    try {
      tcp::socket socket(io_);
      acceptor_.accept(socket);
      socket_ = &socket;
      socket_fd_ = socket.native_handle();
      if (implicit_tls_) begin_tls();
      bool open = true;
      for (const act& a : script_) {
        switch (a.what) {
          case act::kind::say:
            if (tls_) {
              asio::write(*tls_, asio::buffer(a.text));
            } else {
              asio::write(socket, asio::buffer(a.text));
            }
            break;
          case act::kind::lines:
            for (std::size_t i = 0; i < a.n; ++i) take_line();
            break;
          case act::kind::bdat:
            for (std::size_t seen = 0; seen < a.n;) {
              const std::string line = take_line();
              if (line.rfind("BDAT ", 0) != 0) continue;
              take(std::stoul(line.substr(5)));
              if (line.find(" LAST") != std::string::npos) ++seen;
            }
            break;
          case act::kind::until:
            take_until(a.text);
            break;
          case act::kind::tls:
            pending_.clear();  // never act on plaintext sent before the handshake
            begin_tls();
            break;
          case act::kind::hang_up:
            socket_fd_ = -1;
            socket.close();
            open = false;
            break;
        }
        if (!open) break;
      }
      // Record the rest until the client closes.
      for (int i = 0; open && i < 100000 && read_more(); ++i) {
      }
      socket_fd_ = -1;
    } catch (const std::exception& e) {
      socket_fd_ = -1;
      failure_ = e.what();
    }
    done_.set_value();
  }

  void begin_tls() {
    if (tls_context_ == nullptr) throw std::runtime_error("no TLS context for the fake server");
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(*socket_, *tls_context_);
    tls_->handshake(asio::ssl::stream_base::server);
  }

  bool read_more() {
    error_code ec;
    std::size_t n = 0;
    if (tls_) {
      n = tls_->read_some(asio::buffer(buffer_), ec);
    } else {
      n = socket_->read_some(asio::buffer(buffer_), ec);
    }
    if (ec) return false;
    received_.append(buffer_.data(), n);
    pending_.append(buffer_.data(), n);
    if (tls_) records_.emplace_back(buffer_.data(), n);
    return true;
  }

  std::string take_until(const std::string& marker) {
    std::size_t at = 0;
    while ((at = pending_.find(marker)) == std::string::npos) {
      if (!read_more()) throw std::runtime_error("client closed before \"" + marker + "\"");
    }
    std::string out = pending_.substr(0, at + marker.size());
    pending_.erase(0, at + marker.size());
    return out;
  }
  std::string take_line() { return take_until("\r\n"); }
  void take(std::size_t n) {
    while (pending_.size() < n) {
      if (!read_more()) throw std::runtime_error("client closed inside a BDAT chunk");
    }
    pending_.erase(0, n);
  }

  std::vector<act> script_;
  asio::ssl::context* tls_context_;
  bool implicit_tls_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  tcp::socket* socket_ = nullptr;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls_;
  std::atomic<int> socket_fd_{-1};
  std::array<char, 65536> buffer_{};
  std::string pending_;
  std::string received_;
  std::vector<std::string> records_;
  std::string failure_;
  std::promise<void> done_;
  std::future<void> done_future_;
  std::thread thread_;
};

// ---------------------------------------------------------------------------
// The client side.

// Connects to 127.0.0.1:port and runs body(stream) to its end. Every step
// timeout in plain_settings() is 10s, so a session that takes 9s or more
// waited for one: the script and the client disagree.
void run_with_stream(std::uint16_t port,
                     const std::function<asio::awaitable<void>(smtp_stream&)>& body) {
  const auto started = std::chrono::steady_clock::now();
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::address_v4::loopback(), port));
  smtp_stream stream(std::move(socket));
  bool finished = false;
  std::exception_ptr error;
  asio::co_spawn(io, body(stream), [&](std::exception_ptr e) {
    error = e;
    finished = true;
  });
  io.run_for(60s);
  stream.close();
  ASSERT_TRUE(finished) << "got a client still running after 60s, want it finished";
  if (error) std::rethrow_exception(error);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 9s)
      << "got a session that waited for a 10s step timeout, want none";
}

client_settings plain_settings() {
  client_settings s;
  s.helo_name = "client.test";
  s.tls = tls_policy::none;
  s.greeting_timeout = s.helo_timeout = s.starttls_timeout = s.mail_timeout = s.rcpt_timeout =
      s.data_init_timeout = s.data_block_timeout = s.data_done_timeout = s.quit_timeout = 10s;
  return s;
}

outgoing_message make_message(const std::string& content, const std::vector<std::string>& rcpts,
                              std::string qid = "Q1") {
  outgoing_message m;
  m.qid = std::move(qid);
  m.sender = "a@x.test";
  std::int64_t id = 1;
  for (const auto& r : rcpts) m.recipients.push_back({id++, r, "", ""});
  m.content = &content;
  return m;
}

// The outcome of open() + sends + quit() against one server.
struct session_outcome {
  error_code open_error;
  session_info info;
  std::vector<message_result> results;
  bool identity_locked = false;  // the client's word after the last message
};

session_outcome run_session(std::uint16_t port, const client_settings& settings,
                            const std::vector<outgoing_message>& messages, bool batch = false) {
  session_outcome out;
  run_with_stream(port, [&](smtp_stream& stream) -> asio::awaitable<void> {
    smtp_client client(stream, settings);
    auto opened = co_await client.open();
    if (!opened) {
      out.open_error = opened.error();
    } else {
      out.info = *opened;
      if (batch) {
        out.results = co_await client.send_batch(messages);
      } else {
        for (const auto& m : messages) out.results.push_back(co_await client.send(m));
      }
      out.identity_locked = client.identity_locked();
    }
    co_await client.quit();
  });
  return out;
}

const char* status_name(message_status s) {
  switch (s) {
    case message_status::sent: return "sent";
    case message_status::rejected: return "rejected";
    case message_status::connection_lost: return "connection_lost";
    case message_status::not_sent_8bit: return "not_sent_8bit";
    case message_status::too_big: return "too_big";
  }
  return "?";
}

// True when every CR is followed by LF and every LF follows a CR.
bool only_crlf(const std::string& s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 >= s.size() || s[i + 1] != '\n')) return false;
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Pure parts.

TEST(EncodeContent, DotStuffsNormalisesAndEndsWithCrlf) {
  struct row {
    std::string in;
    bool stuff;
    std::string want;
    std::uint64_t size;
    std::size_t stray;
  };
  const std::vector<row> rows = {
      {"a\r\nb\r\n", true, "a\r\nb\r\n", 6, 0},
      {".a\r\n..\r\n.\r\nx.y\r\n", true, "..a\r\n...\r\n..\r\nx.y\r\n", 16, 0},
      {".a\r\n", false, ".a\r\n", 4, 0},
      {"a\nb\rc\r\n", true, "a\r\nb\r\nc\r\n", 9, 2},
      {"a\r\r\n.b", true, "a\r\n\r\n..b\r\n", 9, 1},
      {"no end", true, "no end\r\n", 8, 0},
      {"", true, "", 0, 0},
      {"\n.\n", true, "\r\n..\r\n", 5, 2},
  };
  for (const auto& r : rows) {
    const encoded_content got = encode_content(r.in, r.stuff);
    EXPECT_EQ(got.wire, r.want) << "input " << testing::PrintToString(r.in);
    EXPECT_EQ(got.size, r.size) << "input " << testing::PrintToString(r.in);
    EXPECT_EQ(got.stray_line_ends, r.stray) << "input " << testing::PrintToString(r.in);
    EXPECT_TRUE(only_crlf(got.wire)) << "got a bare CR/LF in " << testing::PrintToString(got.wire);
  }
  EXPECT_FALSE(encode_content("plain\r\n", true).eight_bit);
  EXPECT_TRUE(encode_content("caf\xc3\xa9\r\n", true).eight_bit);
}

TEST(PeerReply, LineShowsCodeEnhancedAndFirstLine) {
  peer_reply r;
  r.code = 550;
  r.enhanced = "5.1.1";
  r.text = "no such user\nsecond";
  EXPECT_EQ(r.line(), "550 5.1.1 no such user");
  r.enhanced.clear();
  r.text.clear();
  EXPECT_EQ(r.line(), "550");
}

// ---------------------------------------------------------------------------
// Against the fake server.

TEST(SmtpClient, ReadsMultiLineGreetingAndEhloKeywords) {
  fake_server server(with_quit({
      say("220-mx.test ESMTP\r\n220-second line\r\n220 third\r\n"),
      lines(1),
      say(ehlo_reply({"PIPELINING", "SIZE 1000000", "8BITMIME", "DSN", "CHUNKING",
                      "ENHANCEDSTATUSCODES", "STARTTLS", ""})),
  }));
  const auto out = run_session(server.port(), plain_settings(), {});
  ASSERT_TRUE(server.wait());
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_EQ(out.info.peer_greeting, "mx.test ESMTP\nsecond line\nthird");
  EXPECT_TRUE(out.info.esmtp);
  EXPECT_TRUE(out.info.pipelining);
  EXPECT_TRUE(out.info.size_offered);
  EXPECT_EQ(out.info.max_size, 1000000u);
  EXPECT_TRUE(out.info.eightbitmime);
  EXPECT_TRUE(out.info.dsn);
  EXPECT_TRUE(out.info.chunking);
  EXPECT_TRUE(out.info.enhanced_status_codes);
  EXPECT_TRUE(out.info.starttls);
  EXPECT_FALSE(out.info.tls_active);
  EXPECT_EQ(server.received(), "EHLO client.test\r\nQUIT\r\n");
}

TEST(SmtpClient, EhloRefusedFallsBackToHelo) {
  const std::string content = "Subject: t\r\n\r\nhi\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say("502 5.5.1 EHLO not implemented\r\n"),
      lines(1), say("250 mx.test\r\n"),
      lines(1), say("250 ok\r\n"),
      lines(1), say("250 ok\r\n"),
      lines(1), say("354 go\r\n"),
      until("\r\n.\r\n"), say("250 queued\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(), {make_message(content, {"b@y.test"})});
  ASSERT_TRUE(server.wait());
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_FALSE(out.info.esmtp);
  ASSERT_EQ(out.results.size(), 1u);
  EXPECT_EQ(out.results[0].status, message_status::sent)
      << "got " << status_name(out.results[0].status) << ", want sent";
  EXPECT_EQ(out.results[0].recipients[0].reply.line(), "250 queued");
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nHELO client.test\r\nMAIL FROM:<a@x.test>\r\n"
            "RCPT TO:<b@y.test>\r\nDATA\r\nSubject: t\r\n\r\nhi\r\n.\r\nQUIT\r\n");
}

TEST(SmtpClient, RefusedGreetingEndsWithQuit) {
  fake_server server(with_quit({say("554 5.3.2 not now\r\n")}));
  const auto out = run_session(server.port(), plain_settings(), {});
  ASSERT_TRUE(server.wait());
  EXPECT_EQ(out.open_error, client_errc::greeting_refused) << "got " << out.open_error.message();
  EXPECT_EQ(server.received(), "QUIT\r\n");
}

TEST(SmtpClient, PipelinedGroupMatchesRepliesByCount) {
  const std::string content = "Subject: t\r\n\r\nbody\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "ENHANCEDSTATUSCODES"})),
      // MAIL, three RCPTs and DATA arrive before any reply goes out.
      lines(5),
      say("250-2.1.0 sender\r\n250 2.1.0 ok\r\n"
          "250 2.1.5 first ok\r\n"
          "550-5.1.1 no such\r\n550 5.1.1 user here\r\n"
          "250 2.1.5 third ok\r\n"
          "354 go ahead\r\n"),
      until("\r\n.\r\n"), say("250 2.0.0 queued as X\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(),
                               {make_message(content, {"b1@y.test", "b2@y.test", "b3@y.test"})});
  ASSERT_TRUE(server.wait());
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  ASSERT_EQ(out.results.size(), 1u);
  const message_result& r = out.results[0];
  EXPECT_EQ(r.status, message_status::sent) << "got " << status_name(r.status) << ", want sent";
  EXPECT_EQ(r.mail_reply.code, 250);
  EXPECT_EQ(r.mail_reply.enhanced, "2.1.0");
  EXPECT_EQ(r.mail_reply.text, "sender\nok");
  ASSERT_EQ(r.recipients.size(), 3u);
  EXPECT_EQ(r.recipients[0].id, 1);
  EXPECT_EQ(r.recipients[0].reply.line(), "250 2.0.0 queued as X");
  EXPECT_EQ(r.recipients[1].reply.code, 550);
  EXPECT_EQ(r.recipients[1].reply.enhanced, "5.1.1");
  EXPECT_EQ(r.recipients[1].reply.text, "no such\nuser here");
  EXPECT_EQ(r.recipients[2].reply.line(), "250 2.0.0 queued as X");
  EXPECT_EQ(r.data_reply.line(), "250 2.0.0 queued as X");
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b1@y.test>\r\n"
            "RCPT TO:<b2@y.test>\r\nRCPT TO:<b3@y.test>\r\nDATA\r\n"
            "Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n");
}

// The original client of a message (client_forwarding.hpp).
queue::client_origin spammer_origin() {
  return {.address = "127.0.0.9", .name = "[UNAVAILABLE]", .helo = "spammer.example",
          .proto = "ESMTP", .port = 40001};
}

TEST(SmtpClient, XforwardRidesInTheMailGroupWithOfferedAttributesOnly) {
  const std::string content = "Subject: t\r\n\r\nbody\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "XFORWARD NAME ADDR PROTO HELO"})),
      // XFORWARD, MAIL, RCPT and DATA arrive before any reply goes out.
      lines(4), say("250 2.0.0 Ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
      until("\r\n.\r\n"), say("250 2.0.0 queued\r\n"),
  }));
  auto m = make_message(content, {"b@y.test"});
  m.origin = spammer_origin();
  const auto out = run_session(server.port(), plain_settings(), {m});
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  const std::vector<std::string> offered = {"NAME", "ADDR", "PROTO", "HELO"};
  EXPECT_EQ(out.info.xforward, offered);
  const message_result& r = out.results.at(0);
  EXPECT_EQ(r.status, message_status::sent) << "got " << status_name(r.status) << ", want sent";
  EXPECT_TRUE(r.client_forwarded);
  EXPECT_EQ(r.forward_reply.code, 0);
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\n"
            "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.9 PROTO=ESMTP HELO=spammer.example\r\n"
            "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
            "Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n");
}

TEST(SmtpClient, RefusedXforwardLosesNoMail) {
  // Each message gets its own XFORWARD; a refused one is logged and the
  // message goes on without it.
  const std::string content = "Subject: t\r\n\r\nbody\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "CHUNKING", "XFORWARD ADDR HELO"})),
      bdat(2),
      say("550 5.7.0 Error: insufficient XFORWARD authorization\r\n250 ok\r\n250 ok\r\n"
          "250 first queued\r\n"
          "250 reset\r\n250 2.0.0 Ok\r\n250 ok\r\n250 ok\r\n250 second queued\r\n"),
  }));
  auto first = make_message(content, {"b@y.test"}, "Q1");
  first.origin = spammer_origin();
  auto second = make_message(content, {"c@y.test"}, "Q2");
  second.origin = {.address = "192.0.2.7", .helo = "friend.example"};
  const auto out = run_session(server.port(), plain_settings(), {first, second}, true);
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_EQ(out.results.size(), 2u);
  EXPECT_EQ(out.results[0].status, message_status::sent)
      << "got " << status_name(out.results[0].status) << ", want sent despite the refusal";
  EXPECT_EQ(out.results[0].forward_reply.code, 550);
  EXPECT_FALSE(out.results[0].client_forwarded);
  EXPECT_EQ(out.results[1].status, message_status::sent);
  EXPECT_TRUE(out.results[1].client_forwarded);
  const std::string& wire = server.received();
  EXPECT_NE(wire.find("XFORWARD ADDR=127.0.0.9 HELO=spammer.example\r\nMAIL FROM:<a@x.test>"),
            std::string::npos) << wire;
  // After the RSET that guards a written-ahead message: RSET would clear it.
  EXPECT_NE(wire.find("RSET\r\nXFORWARD ADDR=192.0.2.7 HELO=friend.example\r\nMAIL FROM:<a@x.test>"),
            std::string::npos) << wire;
}

TEST(SmtpClient, NoXforwardUnlessOfferedAndWanted) {
  const std::string content = "Subject: t\r\n\r\nbody\r\n";
  struct variant {
    const char* name;
    std::vector<std::string> keywords;
    client_forwarding setting;
  };
  for (const variant& v : {variant{"not offered", {"PIPELINING"}, client_forwarding::xforward},
                           variant{"customer says none", {"PIPELINING", "XFORWARD ADDR HELO"},
                                   client_forwarding::none},
                           variant{"xclient wanted, only XFORWARD offered",
                                   {"PIPELINING", "XFORWARD ADDR HELO"}, client_forwarding::xclient}}) {
    fake_server server(with_quit({
        say("220 mx.test\r\n"),
        lines(1), say(ehlo_reply(v.keywords)),
        lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
        until("\r\n.\r\n"), say("250 queued\r\n"),
    }));
    auto m = make_message(content, {"b@y.test"});
    m.origin = spammer_origin();
    client_settings settings = plain_settings();
    settings.forward_client = v.setting;
    const auto out = run_session(server.port(), settings, {m});
    ASSERT_TRUE(server.wait()) << v.name << ": " << server.failure();
    EXPECT_EQ(out.results.at(0).status, message_status::sent) << v.name;
    EXPECT_FALSE(out.results.at(0).client_forwarded) << v.name;
    EXPECT_EQ(server.received(),
              "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
              "Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        << v.name;
  }
}

// A server that offers XCLIENT, takes one (a new 220), then one message.
std::vector<act> one_message_under_xclient() {
  return {
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "XCLIENT NAME ADDR PROTO HELO"})),
      lines(1), say("220 mx.test ESMTP again\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "XCLIENT NAME ADDR PROTO HELO"})),
      lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
      until("\r\n.\r\n"), say("250 queued\r\n"),
  };
}

TEST(SmtpClient, XclientGetsANewGreetingAndEhloBeforeEachMessage) {
  const std::string content = "Subject: t\r\n\r\nbody\r\n";
  fake_server server(with_quit(one_message_under_xclient()));
  auto m = make_message(content, {"b@y.test"});
  m.origin = spammer_origin();
  client_settings settings = plain_settings();
  settings.forward_client = client_forwarding::xclient;
  const auto out = run_session(server.port(), settings, {m});
  ASSERT_TRUE(server.wait()) << server.failure();
  EXPECT_EQ(out.results.at(0).status, message_status::sent);
  EXPECT_TRUE(out.results.at(0).client_forwarded);
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\n"
            "XCLIENT NAME=[UNAVAILABLE] ADDR=127.0.0.9 PROTO=ESMTP\r\n"
            "EHLO spammer.example\r\n"
            "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
            "Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n");
}

TEST(SmtpClient, XclientBatchStopsBeforeAMessageWithoutAKnownClient) {
  // Mail queued before the client was kept (or a DSN) must not go under the
  // identity an XCLIENT gave the session: the batch ends, and the session
  // says so (identity_locked) so that delivery opens a fresh one for it.
  const std::string content = "Subject: t\r\n\r\nbody\r\n";
  fake_server server(with_quit(one_message_under_xclient()));
  auto first = make_message(content, {"b@y.test"});
  first.origin = spammer_origin();
  auto second = make_message(content, {"c@y.test"});  // no client known
  client_settings settings = plain_settings();
  settings.forward_client = client_forwarding::xclient;
  const auto out = run_session(server.port(), settings, {first, second}, true);
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_EQ(out.results.size(), 2u);
  EXPECT_EQ(out.results.at(0).status, message_status::sent);
  EXPECT_EQ(out.results.at(1).recipients.at(0).reply.code, 0)
      << "got the second message tried under the spammer's identity, want it left for a new session";
  EXPECT_TRUE(out.identity_locked) << "got the session still offered for other clients, want it spent";
  EXPECT_EQ(server.received().find("c@y.test"), std::string::npos) << server.received();
}

TEST(SmtpClient, AllRecipientsRefusedBut354SendsLoneDot) {
  const std::string content = "Subject: t\r\n\r\nsecret body\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING"})),
      lines(4), say("250 ok\r\n550 no\r\n551 not here\r\n354 go\r\n"),
      lines(1), say("554 no valid recipients\r\n"),
  }));
  const auto out =
      run_session(server.port(), plain_settings(), {make_message(content, {"b1@y.test", "b2@y.test"})});
  ASSERT_TRUE(server.wait());
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  const message_result& r = out.results.at(0);
  EXPECT_EQ(r.status, message_status::rejected) << "got " << status_name(r.status) << ", want rejected";
  EXPECT_EQ(r.recipients[0].reply.line(), "550 no");
  EXPECT_EQ(r.recipients[1].reply.line(), "551 not here");
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b1@y.test>\r\n"
            "RCPT TO:<b2@y.test>\r\nDATA\r\n.\r\nQUIT\r\n");
}

TEST(SmtpClient, DotStuffingRoundTrips) {
  const std::string content = ".hidden\r\n..two\r\n.\r\nmiddle.\r\n. \r\n...\r\nend\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING"})),
      lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
      until("\r\n.\r\n"), say("250 queued\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(), {make_message(content, {"b@y.test"})});
  ASSERT_TRUE(server.wait());
  ASSERT_EQ(out.results.size(), 1u);
  EXPECT_EQ(out.results[0].status, message_status::sent);
  const std::string& wire = server.received();
  const std::string head = "DATA\r\n";
  const std::size_t start = wire.find(head) + head.size();
  const std::size_t end = wire.find("\r\n.\r\n", start);
  ASSERT_NE(end, std::string::npos) << "got no end of data in " << wire;
  const std::string stuffed = wire.substr(start, end + 2 - start);
  EXPECT_EQ(stuffed, "..hidden\r\n...two\r\n..\r\nmiddle.\r\n.. \r\n....\r\nend\r\n");
  // What a server makes of it (RFC 5321 §4.5.2: drop one leading dot).
  std::string unstuffed;
  for (std::size_t pos = 0; pos < stuffed.size();) {
    const std::size_t eol = stuffed.find("\r\n", pos) + 2;
    std::string line = stuffed.substr(pos, eol - pos);
    if (line[0] == '.') line.erase(0, 1);
    unstuffed += line;
    pos = eol;
  }
  EXPECT_EQ(unstuffed, content);
}

TEST(SmtpClient, NeverSendsBareCrOrLf) {
  const std::string content = "Subject: x\n\nline\rmore\r\r\n.dot\nlast";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING"})),
      lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
      until("\r\n.\r\n"), say("250 queued\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(), {make_message(content, {"b@y.test"})});
  ASSERT_TRUE(server.wait());
  EXPECT_EQ(out.results.at(0).status, message_status::sent);
  EXPECT_TRUE(only_crlf(server.received()))
      << "got a bare CR or LF in " << testing::PrintToString(server.received());
  EXPECT_NE(server.received().find(
                "DATA\r\nSubject: x\r\n\r\nline\r\nmore\r\n\r\n..dot\r\nlast\r\n.\r\nQUIT\r\n"),
            std::string::npos)
      << "got " << testing::PrintToString(server.received());
}

TEST(SmtpClient, EightBitContentIsNotSentToPeerWithout8BitMime) {
  const std::string refused = "Subject: a\r\n\r\nascii\r\n";
  const std::string eight_bit = "Subject: b\r\n\r\ncaf\xc3\xa9\r\n";
  const std::string plain = "Subject: c\r\n\r\nascii\r\n";
  // Lock-step peer (no PIPELINING): the first message's only RCPT is refused,
  // which leaves a transaction open; the 8-bit one must not go out at all —
  // not even the RSET; the third starts with RSET.
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"ENHANCEDSTATUSCODES"})),
      lines(1), say("250 ok\r\n"),
      lines(1), say("550 5.1.1 no\r\n"),
      lines(1), say("250 reset\r\n"),
      lines(1), say("250 ok\r\n"),
      lines(1), say("250 ok\r\n"),
      lines(1), say("354 go\r\n"),
      until("\r\n.\r\n"), say("250 queued\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(),
                               {make_message(refused, {"b@y.test"}, "Q1"),
                                make_message(eight_bit, {"c@y.test"}, "Q2"),
                                make_message(plain, {"d@y.test"}, "Q3")},
                               true);
  ASSERT_TRUE(server.wait());
  ASSERT_EQ(out.results.size(), 3u);
  EXPECT_EQ(out.results[0].status, message_status::rejected);
  EXPECT_EQ(out.results[1].status, message_status::not_sent_8bit)
      << "got " << status_name(out.results[1].status) << ", want not_sent_8bit";
  EXPECT_EQ(out.results[1].recipients[0].reply.enhanced, "5.6.3");
  EXPECT_EQ(out.results[1].mail_reply.code, 0);
  EXPECT_EQ(out.results[2].status, message_status::sent);
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
            "RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<d@y.test>\r\nDATA\r\n"
            "Subject: c\r\n\r\nascii\r\n.\r\nQUIT\r\n");
}

TEST(SmtpClient, EightBitContentGetsBody8BitMimeWhenOffered) {
  const std::string content = "Subject: b\r\n\r\ncaf\xc3\xa9\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "8BITMIME"})),
      lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
      until("\r\n.\r\n"), say("250 queued\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(), {make_message(content, {"b@y.test"})});
  ASSERT_TRUE(server.wait());
  EXPECT_EQ(out.results.at(0).status, message_status::sent);
  EXPECT_EQ(server.received().rfind("EHLO client.test\r\nMAIL FROM:<a@x.test> BODY=8BITMIME\r\n", 0),
            0u)
      << "got " << server.received();
}

TEST(SmtpClient, SizeIsAnnouncedAndTheLimitRespected) {
  const std::string big(200, 'x');
  const std::string small = "Subject: s\r\n\r\nsmall\r\n";  // 21 octets
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "SIZE 100"})),
      // The small one: the peer still refuses it at MAIL (e.g. a quota).
      lines(4),
      say("552 5.3.4 quota exceeded\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"
          "503 5.5.1 need RCPT\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(),
                               {make_message(big, {"b@y.test"}, "Q1"),
                                make_message(small, {"b@y.test", "c@y.test"}, "Q2")},
                               true);
  ASSERT_TRUE(server.wait());
  ASSERT_EQ(out.results.size(), 2u);
  EXPECT_EQ(out.results[0].status, message_status::too_big)
      << "got " << status_name(out.results[0].status) << ", want too_big";
  EXPECT_EQ(out.results[0].recipients[0].reply.enhanced, "5.3.4");
  EXPECT_EQ(out.results[1].status, message_status::rejected);
  EXPECT_EQ(out.results[1].recipients[0].reply.line(), "552 5.3.4 quota exceeded");
  EXPECT_EQ(out.results[1].recipients[1].reply.line(), "552 5.3.4 quota exceeded");
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nMAIL FROM:<a@x.test> SIZE=21\r\nRCPT TO:<b@y.test>\r\n"
            "RCPT TO:<c@y.test>\r\nDATA\r\nQUIT\r\n");
}

TEST(SmtpClient, DsnParametersPassOnlyToDsnPeers) {
  const std::string content = "Subject: d\r\n\r\nx\r\n";
  outgoing_message m = make_message(content, {"b@y.test"});
  m.ret = "HDRS";
  m.envid = "q+2B1";
  m.recipients[0].notify = "SUCCESS,FAILURE";
  m.recipients[0].orcpt = "rfc822;b@y.test";
  for (const bool dsn : {true, false}) {
    fake_server server(with_quit({
        say("220 mx.test\r\n"),
        lines(1), say(ehlo_reply(dsn ? std::vector<std::string>{"PIPELINING", "DSN"}
                                     : std::vector<std::string>{"PIPELINING"})),
        lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
        until("\r\n.\r\n"), say("250 queued\r\n"),
    }));
    const auto out = run_session(server.port(), plain_settings(), {m});
    ASSERT_TRUE(server.wait());
    EXPECT_EQ(out.results.at(0).status, message_status::sent);
    const std::string want =
        dsn ? "MAIL FROM:<a@x.test> RET=HDRS ENVID=q+2B1\r\n"
              "RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test\r\nDATA\r\n"
            : "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";
    EXPECT_NE(server.received().find("EHLO client.test\r\n" + want), std::string::npos)
        << (dsn ? "DSN peer" : "peer without DSN") << ": got " << server.received();
  }
}

TEST(SmtpClient, ConnectionDroppedAfterSecondRcptReply) {
  const std::string content = "Subject: t\r\n\r\nx\r\n";
  fake_server server({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING"})),
      lines(5), say("250 ok\r\n250 2.1.5 ok\r\n550 5.1.1 nope\r\n"),
      hang_up(),
  });
  session_outcome out;
  bool usable_after = true;
  run_with_stream(server.port(), [&](smtp_stream& stream) -> asio::awaitable<void> {
    smtp_client client(stream, plain_settings());
    auto opened = co_await client.open();
    if (!opened) co_return;
    // (Messages built outside the co_await: GCC 12 cannot keep a braced list
    // of string literals alive across a suspension point.)
    const outgoing_message first = make_message(content, {"b1@y.test", "b2@y.test", "b3@y.test"});
    const outgoing_message second = make_message(content, {"b4@y.test"});
    out.results.push_back(co_await client.send(first));
    usable_after = client.usable();
    out.results.push_back(co_await client.send(second));
    co_await client.quit();
  });
  ASSERT_TRUE(server.wait());
  ASSERT_EQ(out.results.size(), 2u);
  const message_result& r = out.results[0];
  EXPECT_EQ(r.status, message_status::connection_lost)
      << "got " << status_name(r.status) << ", want connection_lost";
  EXPECT_EQ(r.mail_reply.code, 250);
  EXPECT_EQ(r.recipients[0].reply.code, 0) << "accepted but never delivered: keep it queued";
  EXPECT_EQ(r.recipients[1].reply.line(), "550 5.1.1 nope");
  EXPECT_EQ(r.recipients[2].reply.code, 0);
  EXPECT_FALSE(usable_after);
  EXPECT_EQ(out.results[1].status, message_status::connection_lost);
  EXPECT_EQ(out.results[1].recipients[0].reply.code, 0);
}

TEST(SmtpClient, SilentServerTimesOut) {
  fake_server server({lines(1)});  // never greets
  client_settings settings = plain_settings();
  settings.greeting_timeout = 1s;
  error_code open_error;
  const auto started = std::chrono::steady_clock::now();
  run_with_stream(server.port(), [&](smtp_stream& stream) -> asio::awaitable<void> {
    smtp_client client(stream, settings);
    auto opened = co_await client.open();
    if (!opened) open_error = opened.error();
    co_await client.quit();
  });
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(open_error, client_errc::timed_out) << "got " << open_error.message() << ", want timed out";
  EXPECT_GE(elapsed, 900ms);
  EXPECT_LT(elapsed, 10s) << "got a timeout much later than the configured 1s";
  server.wait();
}

TEST(SmtpClient, SilenceAfterTheDotLosesTheMessage) {
  const std::string content = "Subject: t\r\n\r\nx\r\n";
  fake_server server({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING"})),
      lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
      until("\r\n.\r\n"),
      lines(1),  // no reply: wait for a line that never comes
  });
  client_settings settings = plain_settings();
  settings.data_done_timeout = 1s;
  const auto started = std::chrono::steady_clock::now();
  const auto out = run_session(server.port(), settings, {make_message(content, {"b@y.test"})});
  const auto elapsed = std::chrono::steady_clock::now() - started;
  server.wait();
  ASSERT_EQ(out.results.size(), 1u);
  EXPECT_EQ(out.results[0].status, message_status::connection_lost)
      << "got " << status_name(out.results[0].status) << ", want connection_lost";
  EXPECT_EQ(out.results[0].recipients[0].reply.code, 0);
  EXPECT_LT(elapsed, 10s);
}

TEST(SmtpClient, ChunkingBatchWritesAheadOfReplies) {
  const std::string c1 = "Subject: 1\r\n\r\none\r\n";
  const std::string c2 = ".Subject: 2\r\n\r\n.two\r\n";
  const std::string c3 = "Subject: 3\r\n\r\nthree\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "CHUNKING", "SIZE"})),
      // All three messages arrive before a single reply goes out.
      bdat(3),
      say("250 ok\r\n250 ok\r\n250 2.0.0 queued 1\r\n"
          "250 reset\r\n250 ok\r\n450 4.2.0 busy\r\n250 ok\r\n250 2.0.0 queued 2\r\n"
          "250 reset\r\n250 ok\r\n250 ok\r\n554 5.6.0 rejected content\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(),
                               {make_message(c1, {"b@y.test"}, "Q1"),
                                make_message(c2, {"b@y.test", "c@y.test"}, "Q2"),
                                make_message(c3, {"b@y.test"}, "Q3")},
                               true);
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_EQ(out.results.size(), 3u);
  EXPECT_EQ(out.results[0].status, message_status::sent);
  EXPECT_EQ(out.results[1].status, message_status::sent);
  EXPECT_EQ(out.results[1].recipients[0].reply.line(), "450 4.2.0 busy");
  EXPECT_EQ(out.results[1].recipients[1].reply.line(), "250 2.0.0 queued 2");
  EXPECT_EQ(out.results[2].status, message_status::rejected);
  EXPECT_EQ(out.results[2].recipients[0].reply.line(), "554 5.6.0 rejected content");
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\n"
            "MAIL FROM:<a@x.test> SIZE=19\r\nRCPT TO:<b@y.test>\r\nBDAT 19 LAST\r\n" + c1 +
            "RSET\r\nMAIL FROM:<a@x.test> SIZE=21\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n"
            "BDAT 21 LAST\r\n" + c2 +
            "RSET\r\nMAIL FROM:<a@x.test> SIZE=21\r\nRCPT TO:<b@y.test>\r\nBDAT 21 LAST\r\n" + c3 +
            "QUIT\r\n");
}

TEST(SmtpClient, ChunkingWindowOfOneWaitsForEachMessage) {
  const std::string c1 = "Subject: 1\r\n\r\none\r\n";
  const std::string c2 = "Subject: 2\r\n\r\ntwo\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "CHUNKING"})),
      bdat(1), say("250 ok\r\n250 ok\r\n250 queued 1\r\n"),
      bdat(1), say("250 ok\r\n250 ok\r\n250 queued 2\r\n"),
  }));
  client_settings settings = plain_settings();
  settings.pipeline_window = 1;
  const auto out = run_session(
      server.port(), settings,
      {make_message(c1, {"b@y.test"}, "Q1"), make_message(c2, {"b@y.test"}, "Q2")}, true);
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_EQ(out.results.size(), 2u);
  EXPECT_EQ(out.results[0].status, message_status::sent);
  EXPECT_EQ(out.results[1].status, message_status::sent);
  // The second message was written only after the first one's replies, so
  // it needs no RSET.
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 19 LAST\r\n" +
                c1 + "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 19 LAST\r\n" + c2 +
                "QUIT\r\n");
}

TEST(SmtpClient, DataBatchSendsNextEnvelopeWithTheContent) {
  const std::string c1 = "Subject: 1\r\n\r\none\r\n";
  const std::string c2 = "Subject: 2\r\n\r\ntwo\r\n";
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING"})),
      lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
      // Content (3 lines), ".", and the next MAIL, RCPT, DATA in one go.
      lines(7), say("250 queued 1\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
      until("\r\n.\r\n"), say("250 queued 2\r\n"),
  }));
  const auto out = run_session(
      server.port(), plain_settings(),
      {make_message(c1, {"b@y.test"}, "Q1"), make_message(c2, {"b@y.test"}, "Q2")}, true);
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_EQ(out.results.size(), 2u);
  EXPECT_EQ(out.results[0].recipients[0].reply.line(), "250 queued 1");
  EXPECT_EQ(out.results[1].recipients[0].reply.line(), "250 queued 2");
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" + c1 +
                ".\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" + c2 +
                ".\r\nQUIT\r\n");
}

TEST(SmtpClient, ConnectionLostMidBatchKeepsLaterMessagesQueued) {
  const std::string c1 = "Subject: 1\r\n\r\none\r\n";
  const std::string c2 = "Subject: 2\r\n\r\ntwo\r\n";
  const std::string c3 = "Subject: 3\r\n\r\nthree\r\n";
  fake_server server({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "CHUNKING"})),
      bdat(3),
      say("250 ok\r\n250 ok\r\n250 queued 1\r\n250 reset\r\n250 ok\r\n250 ok\r\n"),
      hang_up(),
  });
  const auto out = run_session(server.port(), plain_settings(),
                               {make_message(c1, {"b@y.test"}, "Q1"),
                                make_message(c2, {"b@y.test", "c@y.test"}, "Q2"),
                                make_message(c3, {"b@y.test"}, "Q3")},
                               true);
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_EQ(out.results.size(), 3u);
  EXPECT_EQ(out.results[0].status, message_status::sent);
  EXPECT_EQ(out.results[1].status, message_status::connection_lost);
  EXPECT_EQ(out.results[1].recipients[0].reply.code, 0);
  EXPECT_EQ(out.results[1].recipients[1].reply.code, 0);
  EXPECT_EQ(out.results[2].status, message_status::connection_lost);
  EXPECT_EQ(out.results[2].recipients[0].reply.code, 0);
}

TEST(SmtpClient, RefusesUnsafeAddressesLocally) {
  const std::string content = "Subject: t\r\n\r\nx\r\n";
  outgoing_message m = make_message(content, {"b@y.test", "evil@y.test>\r\nRCPT TO:<x@z.test"});
  m.recipients[0].notify = "NEVER\r\nRSET";  // dropped, never sent
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "DSN"})),
      lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
      until("\r\n.\r\n"), say("250 queued\r\n"),
  }));
  const auto out = run_session(server.port(), plain_settings(), {m});
  ASSERT_TRUE(server.wait());
  const message_result& r = out.results.at(0);
  EXPECT_EQ(r.status, message_status::sent);
  EXPECT_EQ(r.recipients[0].reply.line(), "250 queued");
  EXPECT_EQ(r.recipients[1].reply.code, 501);
  EXPECT_NE(server.received().find("EHLO client.test\r\nMAIL FROM:<a@x.test>\r\n"
                                   "RCPT TO:<b@y.test>\r\nDATA\r\nSubject: t\r\n"),
            std::string::npos)
      << "got " << server.received();
  EXPECT_EQ(server.received().find("evil"), std::string::npos) << "got " << server.received();
  EXPECT_EQ(server.received().find("NEVER"), std::string::npos) << "got " << server.received();
}

// Recipient verification: probe_recipient() over a session that stays open.
struct probe_run {
  error_code open_error;
  std::vector<boost::system::result<peer_reply>> replies;
  bool usable_after = false;
  std::string last_error;
};

probe_run run_probes(std::uint16_t port, client_settings settings,
                     std::vector<std::string> addresses) {
  probe_run out;
  run_with_stream(port, [&](smtp_stream& stream) -> asio::awaitable<void> {
    smtp_client client(stream, settings);
    auto opened = co_await client.open();
    if (!opened) {
      out.open_error = opened.error();
      co_return;
    }
    for (const auto& a : addresses) out.replies.push_back(co_await client.probe_recipient(a));
    out.usable_after = client.usable();
    out.last_error = client.last_error();
    co_await client.quit();
  });
  return out;
}

TEST(SmtpClient, ProbeRecipientPipelinesMailRcptRsetAndStaysUsable) {
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "ENHANCEDSTATUSCODES"})),
      lines(3), say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"),
      lines(3), say("250 2.1.0 Ok\r\n550 5.1.1 <c@y.test>: User unknown\r\n250 2.0.0 Ok\r\n"),
  }));
  const auto out = run_probes(server.port(), plain_settings(), {"a@y.test", "c@y.test"});
  ASSERT_TRUE(server.wait());
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  ASSERT_EQ(out.replies.size(), 2u);
  ASSERT_TRUE(out.replies[0]) << "got " << out.replies[0].error().message();
  EXPECT_EQ(out.replies[0]->line(), "250 2.1.5 Ok");
  ASSERT_TRUE(out.replies[1]) << "got " << out.replies[1].error().message();
  EXPECT_EQ(out.replies[1]->line(), "550 5.1.1 <c@y.test>: User unknown");
  EXPECT_TRUE(out.usable_after) << "got an unusable client after two probes, want it ready";
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@y.test>\r\nRSET\r\n"
            "MAIL FROM:<>\r\nRCPT TO:<c@y.test>\r\nRSET\r\nQUIT\r\n");
}

TEST(SmtpClient, ProbeRecipientLockStepSendsNoRcptAfterRefusedMail) {
  fake_server server(with_quit({
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({})),
      lines(1), say("250 ok\r\n"), lines(1), say("451 try later\r\n"), lines(1), say("250 ok\r\n"),
      lines(1), say("550 no null senders\r\n"),
  }));
  const auto out = run_probes(server.port(), plain_settings(), {"a@y.test", "b@y.test"});
  ASSERT_TRUE(server.wait());
  ASSERT_EQ(out.replies.size(), 2u);
  ASSERT_TRUE(out.replies[0]) << "got " << out.replies[0].error().message();
  EXPECT_EQ(out.replies[0]->line(), "451 try later");
  ASSERT_FALSE(out.replies[1]) << "got reply " << out.replies[1]->line() << ", want sender_refused";
  EXPECT_EQ(out.replies[1].error(), client_errc::sender_refused);
  EXPECT_EQ(out.last_error, "MAIL FROM:<> refused: 550 no null senders");
  EXPECT_TRUE(out.usable_after) << "got an unusable client after a refused MAIL, want it ready";
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@y.test>\r\nRSET\r\n"
            "MAIL FROM:<>\r\nQUIT\r\n");
}

TEST(SmtpClient, ProbeRecipientRefusesUnsafeAddressLocally) {
  fake_server server(with_quit({say("220 mx.test\r\n"), lines(1), say(ehlo_reply({"PIPELINING"}))}));
  const auto out = run_probes(server.port(), plain_settings(), {"x@y.test>\r\nDATA", ""});
  ASSERT_TRUE(server.wait());
  ASSERT_EQ(out.replies.size(), 2u);
  for (const auto& reply : out.replies) {
    ASSERT_TRUE(reply) << "got " << reply.error().message() << ", want a local 501";
    EXPECT_EQ(reply->line(), "501 5.1.3 bad recipient address syntax (not sent)");
  }
  EXPECT_EQ(server.received(), "EHLO client.test\r\nQUIT\r\n");
}

// ---------------------------------------------------------------------------
// TLS: certificates made with the openssl command once per test program.

struct tls_files {
  test::temp_dir dir{"smtp-client-tls"};
  std::filesystem::path cert, key, other_cert, other_key;
  std::string error;
};

const tls_files& certificates() {
  static const tls_files files = [] {
    tls_files f;
    auto make = [&f](const std::string& name, std::filesystem::path& cert,
                     std::filesystem::path& key) {
      cert = f.dir.path() / (name + ".crt");
      key = f.dir.path() / (name + ".key");
      const auto r = test::run_command(
          {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", key.string(), "-out", cert.string(), "-days", "2", "-subj",
           "/CN=mx.test", "-addext", "subjectAltName=DNS:mx.test"},
          30s);
      if (r.exit_code != 0) f.error += name + ": " + r.stderr_text;
    };
    try {
      make("good", f.cert, f.key);
      make("other", f.other_cert, f.other_key);
    } catch (const std::exception& e) {
      f.error = e.what();
    }
    return f;
  }();
  return files;
}

class SmtpClientTls : public testing::Test {
 protected:
  void SetUp() override {
    const tls_files& f = certificates();
    if (!f.error.empty()) GTEST_SKIP() << "cannot make test certificates: " << f.error;
    server_ctx_.use_certificate_chain_file(f.cert.string());
    server_ctx_.use_private_key_file(f.key.string(), asio::ssl::context::pem);
    ASSERT_FALSE(prepare_client_tls_context(good_ca_, f.cert.string()));
    ASSERT_FALSE(prepare_client_tls_context(wrong_ca_, f.other_cert.string()));
  }
  client_settings tls_settings(tls_policy policy, asio::ssl::context& ctx,
                               std::string name = "mx.test") {
    client_settings s = plain_settings();
    s.tls = policy;
    s.tls_context = &ctx;
    s.tls_server_name = std::move(name);
    return s;
  }

  asio::ssl::context server_ctx_{asio::ssl::context::tls_server};
  asio::ssl::context good_ca_{asio::ssl::context::tls_client};
  asio::ssl::context wrong_ca_{asio::ssl::context::tls_client};
};

std::vector<act> starttls_script(std::vector<act> after_tls) {
  std::vector<act> script = {
      say("220 mx.test\r\n"),
      lines(1), say(ehlo_reply({"PIPELINING", "STARTTLS"})),
      lines(1), say("220 2.0.0 go ahead\r\n"),
      start_tls(),
  };
  script.insert(script.end(), after_tls.begin(), after_tls.end());
  return script;
}

TEST_F(SmtpClientTls, MayUpgradesAndAsksEhloAgain) {
  const std::string content = "Subject: t\r\n\r\nx\r\n";
  fake_server server(starttls_script(with_quit({
                         lines(1), say(ehlo_reply({"PIPELINING", "DSN"})),
                         lines(3), say("250 ok\r\n250 ok\r\n354 go\r\n"),
                         until("\r\n.\r\n"), say("250 queued\r\n"),
                     })),
                     &server_ctx_);
  // `may` goes on with a certificate it cannot verify.
  const auto out = run_session(server.port(), tls_settings(tls_policy::may, wrong_ca_),
                               {make_message(content, {"b@y.test"})});
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_TRUE(out.info.tls_active);
  EXPECT_FALSE(out.info.tls_verified);
  EXPECT_FALSE(out.info.starttls) << "the pre-TLS EHLO answer must be forgotten";
  EXPECT_TRUE(out.info.dsn);
  EXPECT_EQ(out.results.at(0).status, message_status::sent);
  EXPECT_EQ(server.received(),
            "EHLO client.test\r\nSTARTTLS\r\nEHLO client.test\r\nMAIL FROM:<a@x.test>\r\n"
            "RCPT TO:<b@y.test>\r\nDATA\r\n" + content + ".\r\nQUIT\r\n");
}

TEST_F(SmtpClientTls, MayGoesOnInPlaintextWhenStartTlsRefused) {
  fake_server server(with_quit({
                         say("220 mx.test\r\n"),
                         lines(1), say(ehlo_reply({"STARTTLS"})),
                         lines(1), say("454 4.7.0 TLS not available\r\n"),
                     }),
                     &server_ctx_);
  const auto out = run_session(server.port(), tls_settings(tls_policy::may, good_ca_), {});
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_FALSE(out.info.tls_active);
  EXPECT_EQ(server.received(), "EHLO client.test\r\nSTARTTLS\r\nQUIT\r\n");
}

TEST_F(SmtpClientTls, EncryptWithoutStartTlsOfferedSendsNoMail) {
  const std::string content = "Subject: t\r\n\r\nsecret\r\n";
  fake_server server(with_quit({
                         say("220 mx.test\r\n"),
                         lines(1), say(ehlo_reply({"PIPELINING"})),
                     }),
                     &server_ctx_);
  error_code open_error;
  message_result after;
  run_with_stream(server.port(), [&](smtp_stream& stream) -> asio::awaitable<void> {
    smtp_client client(stream, tls_settings(tls_policy::encrypt, good_ca_));
    auto opened = co_await client.open();
    if (!opened) open_error = opened.error();
    const outgoing_message m = make_message(content, {"b@y.test"});
    after = co_await client.send(m);
    co_await client.quit();
  });
  ASSERT_TRUE(server.wait()) << server.failure();
  EXPECT_EQ(open_error, client_errc::tls_unavailable) << "got " << open_error.message();
  EXPECT_EQ(after.status, message_status::connection_lost);
  EXPECT_EQ(after.recipients.at(0).reply.code, 0);
  EXPECT_EQ(server.received(), "EHLO client.test\r\nQUIT\r\n");
}

TEST_F(SmtpClientTls, VerifyWithTheRightCaSucceeds) {
  fake_server server(
      starttls_script(with_quit({lines(1), say(ehlo_reply({"PIPELINING"}))})), &server_ctx_);
  const auto out = run_session(server.port(), tls_settings(tls_policy::verify, good_ca_), {});
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_TRUE(out.info.tls_active);
  EXPECT_TRUE(out.info.tls_verified);
  EXPECT_FALSE(out.info.tls_description.empty());
}

TEST_F(SmtpClientTls, VerifyWithAWrongCaFails) {
  fake_server server(starttls_script(with_quit({})), &server_ctx_);
  const auto out = run_session(server.port(), tls_settings(tls_policy::verify, wrong_ca_), {});
  ASSERT_TRUE(server.wait()) << server.failure();
  EXPECT_EQ(out.open_error, client_errc::tls_not_verified) << "got " << out.open_error.message();
  EXPECT_EQ(server.received(), "EHLO client.test\r\nSTARTTLS\r\nQUIT\r\n");
}

TEST_F(SmtpClientTls, VerifyWithAWrongNameFails) {
  fake_server server(starttls_script(with_quit({})), &server_ctx_);
  const auto out =
      run_session(server.port(), tls_settings(tls_policy::verify, good_ca_, "other.test"), {});
  ASSERT_TRUE(server.wait()) << server.failure();
  EXPECT_EQ(out.open_error, client_errc::tls_not_verified) << "got " << out.open_error.message();
}

TEST_F(SmtpClientTls, ReplyInjectedBeforeTheHandshakeIsDiscarded) {
  // CVE-2011-0411, client side: "250 fake" arrives in plaintext with the 220.
  fake_server server(with_quit({
                         say("220 mx.test\r\n"),
                         lines(1), say(ehlo_reply({"STARTTLS"})),
                         lines(1), say("220 go\r\n250 fake\r\n"),
                         start_tls(),
                         lines(1), say(ehlo_reply({"PIPELINING", "DSN"})),
                     }),
                     &server_ctx_);
  const auto out = run_session(server.port(), tls_settings(tls_policy::encrypt, good_ca_), {});
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_TRUE(out.info.dsn) << "got the injected line as the EHLO reply, want the one under TLS";
  EXPECT_TRUE(out.info.pipelining);
  EXPECT_EQ(server.received(), "EHLO client.test\r\nSTARTTLS\r\nEHLO client.test\r\nQUIT\r\n");
}

// Runs a session over implicit TLS (as after an ODMR turnaround on a TLS port).
session_outcome run_implicit_tls(std::uint16_t port, asio::ssl::context& client_ctx,
                                 const client_settings& settings,
                                 const std::vector<outgoing_message>& messages) {
  session_outcome out;
  run_with_stream(port, [&](smtp_stream& stream) -> asio::awaitable<void> {
    if (auto ec = co_await stream.start_tls_client(client_ctx, "mx.test", 10s)) {
      out.open_error = ec;
      co_return;
    }
    smtp_client client(stream, settings);
    auto opened = co_await client.open();
    if (!opened) {
      out.open_error = opened.error();
    } else {
      out.info = *opened;
      for (const auto& m : messages) out.results.push_back(co_await client.send(m));
    }
    co_await client.quit();
  });
  return out;
}

TEST_F(SmtpClientTls, OneLinePerWritePutsEachLineInItsOwnRecord) {
  const std::string content = "Subject: t\r\n\r\nline one\r\n.line two\r\n";
  fake_server server(with_quit({
                         say("220 sink.customer.test\r\n"),
                         lines(1), say(ehlo_reply({"PIPELINING", "CHUNKING"})),
                         lines(1), say("250 ok\r\n"),
                         lines(1), say("250 ok\r\n"),
                         lines(1), say("250 ok\r\n"),
                         lines(1), say("354 go\r\n"),
                         until("\r\n.\r\n"), say("250 queued\r\n"),
                     }),
                     &server_ctx_, true);
  client_settings settings = tls_settings(tls_policy::may, good_ca_);
  settings.one_line_per_write = true;
  const auto out = run_implicit_tls(server.port(), good_ca_, settings,
                                    {make_message(content, {"b1@y.test", "b2@y.test"})});
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_TRUE(out.info.tls_active);
  ASSERT_EQ(out.results.size(), 1u);
  EXPECT_EQ(out.results[0].status, message_status::sent);
  const std::vector<std::string> want = {
      "EHLO client.test\r\n", "MAIL FROM:<a@x.test>\r\n", "RCPT TO:<b1@y.test>\r\n",
      "RCPT TO:<b2@y.test>\r\n", "DATA\r\n", "Subject: t\r\n", "\r\n", "line one\r\n",
      "..line two\r\n", ".\r\n", "QUIT\r\n"};
  EXPECT_EQ(server.records(), want);
}

TEST_F(SmtpClientTls, PipelinedGroupGoesInOneRecord) {
  const std::string content = "Subject: t\r\n\r\nx\r\n";
  fake_server server(with_quit({
                         say("220 mx.test\r\n"),
                         lines(1), say(ehlo_reply({"PIPELINING"})),
                         lines(4), say("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
                         until("\r\n.\r\n"), say("250 queued\r\n"),
                     }),
                     &server_ctx_, true);
  const auto out = run_implicit_tls(server.port(), good_ca_, tls_settings(tls_policy::may, good_ca_),
                                    {make_message(content, {"b1@y.test", "b2@y.test"})});
  ASSERT_TRUE(server.wait()) << server.failure();
  ASSERT_EQ(out.results.size(), 1u);
  EXPECT_EQ(out.results[0].status, message_status::sent);
  ASSERT_GE(server.records().size(), 2u);
  EXPECT_EQ(server.records()[1],
            "MAIL FROM:<a@x.test>\r\nRCPT TO:<b1@y.test>\r\nRCPT TO:<b2@y.test>\r\nDATA\r\n");
}

// ---------------------------------------------------------------------------
// Against the real Postfix smtp-sink.

constexpr const char* smtp_sink_path = "/usr/sbin/smtp-sink";

class smtp_sink {
 public:
  explicit smtp_sink(const std::vector<std::string>& flags) : port_(test::free_port()) {
    std::vector<std::string> argv = {smtp_sink_path, "-u", "nobody", "-c"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back("127.0.0.1:" + std::to_string(port_));
    argv.push_back("256");
    process_.emplace(argv);
    ready_ = test::wait_for_tcp("127.0.0.1", port_, 10s);
  }
  std::uint16_t port() const { return port_; }
  bool ready() const { return ready_; }

 private:
  std::uint16_t port_;
  std::optional<test::process> process_;
  bool ready_ = false;
};

class SmtpClientSink : public testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(smtp_sink_path)) GTEST_SKIP() << smtp_sink_path << " not installed";
  }
  // `count` messages of two recipients each, content kept in contents_.
  std::vector<outgoing_message> messages(std::size_t count) {
    contents_.clear();
    contents_.reserve(count);
    std::vector<outgoing_message> out;
    for (std::size_t i = 0; i < count; ++i) {
      contents_.push_back("Subject: message " + std::to_string(i) +
                          "\r\n\r\n.leading dot\r\nbody line\r\n");
      out.push_back(make_message(contents_.back(), {"b@customer.test", "c@customer.test"},
                                 "Q" + std::to_string(i)));
    }
    return out;
  }
  std::vector<std::string> contents_;
};

TEST_F(SmtpClientSink, BatchOfHundredAllAccepted) {
  smtp_sink sink({});
  ASSERT_TRUE(sink.ready()) << "got no smtp-sink on port " << sink.port();
  const auto batch = messages(100);
  const auto out = run_session(sink.port(), plain_settings(), batch, true);
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_TRUE(out.info.pipelining);
  ASSERT_EQ(out.results.size(), 100u);
  for (std::size_t i = 0; i < out.results.size(); ++i) {
    EXPECT_EQ(out.results[i].status, message_status::sent)
        << "message " << i << ": got " << status_name(out.results[i].status) << ", want sent";
    for (const auto& r : out.results[i].recipients) {
      EXPECT_EQ(r.reply.code, 250) << "message " << i << ": got " << r.reply.line();
    }
  }
}

TEST_F(SmtpClientSink, SoftRejectedRecipientsGet4xx) {
  smtp_sink sink({"-r", "rcpt"});
  ASSERT_TRUE(sink.ready());
  const auto out = run_session(sink.port(), plain_settings(), messages(3), true);
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  ASSERT_EQ(out.results.size(), 3u);
  for (const auto& m : out.results) {
    EXPECT_EQ(m.status, message_status::rejected) << "got " << status_name(m.status);
    for (const auto& r : m.recipients) EXPECT_EQ(r.reply.code / 100, 4) << "got " << r.reply.line();
  }
}

TEST_F(SmtpClientSink, HardRejectedRecipientsGet5xx) {
  smtp_sink sink({"-f", "rcpt"});
  ASSERT_TRUE(sink.ready());
  const auto out = run_session(sink.port(), plain_settings(), messages(3), true);
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  ASSERT_EQ(out.results.size(), 3u);
  for (const auto& m : out.results) {
    EXPECT_EQ(m.status, message_status::rejected) << "got " << status_name(m.status);
    for (const auto& r : m.recipients) EXPECT_EQ(r.reply.code / 100, 5) << "got " << r.reply.line();
  }
}

TEST_F(SmtpClientSink, Reply421ToDataKeepsTheRestQueued) {
  smtp_sink sink({"-Q", "data"});
  ASSERT_TRUE(sink.ready());
  const auto out = run_session(sink.port(), plain_settings(), messages(3), true);
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  ASSERT_EQ(out.results.size(), 3u);
  EXPECT_EQ(out.results[0].status, message_status::rejected);
  for (const auto& r : out.results[0].recipients) {
    EXPECT_EQ(r.reply.code, 421) << "got " << r.reply.line();
  }
  for (std::size_t i = 1; i < 3; ++i) {
    EXPECT_EQ(out.results[i].status, message_status::connection_lost)
        << "message " << i << ": got " << status_name(out.results[i].status);
    for (const auto& r : out.results[i].recipients) EXPECT_EQ(r.reply.code, 0);
  }
}

TEST_F(SmtpClientSink, DisconnectAfterRcptLeavesCodeZero) {
  smtp_sink sink({"-q", "rcpt"});
  ASSERT_TRUE(sink.ready());
  const auto out = run_session(sink.port(), plain_settings(), messages(2), true);
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  ASSERT_EQ(out.results.size(), 2u);
  for (const auto& m : out.results) {
    EXPECT_EQ(m.status, message_status::connection_lost) << "got " << status_name(m.status);
    for (const auto& r : m.recipients) EXPECT_EQ(r.reply.code, 0) << "got " << r.reply.line();
  }
}

// ---------------------------------------------------------------------------
// Against a real Postfix smtpd (PIPELINING + CHUNKING), delivering to Maildir.

TEST(SmtpClientPostfix, ChunkingBatchLandsInTheMaildir) {
  if (!test::postfix_instance::available()) {
    GTEST_SKIP() << "postfix not installed or not root: no private Postfix instance";
  }
  auto postfix = test::postfix_instance::final_destination(
      {"customer.test"}, "127.0.0.1:" + std::to_string(test::free_port()));
  postfix.start();
  constexpr std::size_t count = 20;
  std::vector<std::string> contents;
  contents.reserve(count);
  std::vector<outgoing_message> batch;
  for (std::size_t i = 0; i < count; ++i) {
    contents.push_back("From: a@x.test\r\nTo: u@customer.test\r\nSubject: batch " +
                       std::to_string(i) + "\r\n\r\n.leading dot\r\n\r\ncaf\xc3\xa9\r\n");
    batch.push_back(make_message(contents.back(), {"u@customer.test"}, "Q" + std::to_string(i)));
  }
  const auto out = run_session(postfix.port(), plain_settings(), batch, true);
  ASSERT_FALSE(out.open_error) << "got " << out.open_error.message() << ", want success";
  EXPECT_TRUE(out.info.chunking);
  EXPECT_TRUE(out.info.pipelining);
  ASSERT_EQ(out.results.size(), count);
  for (std::size_t i = 0; i < count; ++i) {
    EXPECT_EQ(out.results[i].status, message_status::sent)
        << "message " << i << ": got " << status_name(out.results[i].status) << " ("
        << out.results[i].data_reply.line() << "), want sent";
  }
  EXPECT_TRUE(test::wait_until([&] { return postfix.message_files().size() == count; }, 30s))
      << "got " << postfix.message_files().size() << " files, want " << count << "\n"
      << postfix.log_text();
  const auto files = postfix.message_files();
  ASSERT_FALSE(files.empty());
  std::ifstream in(files.front());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\n.leading dot\n"), std::string::npos) << "got message:\n" << text;
  EXPECT_NE(text.find("caf\xc3\xa9"), std::string::npos) << "got message:\n" << text;
}

}  // namespace
}  // namespace flushgate::gateway
