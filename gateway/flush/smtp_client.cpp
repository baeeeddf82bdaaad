// smtp_client.cpp — see smtp_client.hpp.
//
// Shape: every command goes through one small machine. Commands are queued
// into out_ together with the reply each one expects (expected_); write_out()
// sends what is queued, read_next() reads exactly one reply and gives it to
// the command at the front of expected_ — replies are matched by counting,
// never by their code (RFC 2920 §3.1). The pipelined driver queues as much as
// the window allows before reading; the lock-step driver queues one command,
// writes it and reads its reply before deciding on the next.
#include "gateway/flush/smtp_client.hpp"

#include "core/log.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <utility>

namespace flushgate::gateway {

tls_policy parse_tls_policy(std::string_view text) {
  if (text == "none") return tls_policy::none;
  if (text == "encrypt") return tls_policy::encrypt;
  if (text == "verify") return tls_policy::verify;
  return tls_policy::may;
}


namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::seconds;

namespace {

// RFC 5321 §4.5.3.1.5 allows 512 octets; some peers send longer lines, which
// cost us nothing to accept up to this bound.
constexpr std::size_t max_reply_line_octets = 4096;
constexpr std::size_t max_reply_lines = 256;
constexpr std::size_t write_block = 32 * 1024;  // one data block (RFC 5321 §4.5.3.2.5)
constexpr std::size_t read_chunk = 4096;
// Window estimate of one command line when a message is not yet queued.
constexpr std::size_t command_estimate = 64;

// Boost 1.81 keeps error_category's destructor non-virtual; categories are
// never deleted through a base pointer, so -Wnon-virtual-dtor is a false alarm.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class client_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "flushgate.smtp_client"; }
  std::string message(int ev) const override {
    switch (static_cast<client_errc>(ev)) {
      case client_errc::ok: return "ok";
      case client_errc::connection_lost: return "connection lost";
      case client_errc::timed_out: return "timed out waiting for the peer";
      case client_errc::bad_reply: return "malformed reply from the peer";
      case client_errc::greeting_refused: return "greeting refused";
      case client_errc::helo_refused: return "EHLO/HELO refused";
      case client_errc::tls_unavailable: return "TLS required but not available";
      case client_errc::tls_failed: return "TLS handshake failed";
      case client_errc::tls_not_verified: return "TLS certificate not verified";
      case client_errc::not_open: return "SMTP session not open";
      case client_errc::sender_refused: return "MAIL FROM:<> refused";
    }
    return "unknown smtp_client error";
  }
};
#pragma GCC diagnostic pop

// The verify callback prepare_client_tls_context() installs. It never fails a
// handshake (the policy is decided after it, in smtp_client::start_tls); it
// only adds the check OpenSSL leaves out by default: does the leaf
// certificate name the host we asked for in SNI? A mismatch is recorded as
// the verification result, which smtp_stream::tls_peer_verified() reports.
int record_verification(int preverify_ok, X509_STORE_CTX* store) {
  if (preverify_ok == 1 && X509_STORE_CTX_get_error_depth(store) == 0) {
    auto* ssl = static_cast<SSL*>(
        X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    const char* name = ssl != nullptr ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : nullptr;
    X509* cert = X509_STORE_CTX_get_current_cert(store);
    if (name == nullptr || cert == nullptr || X509_check_host(cert, name, 0, 0, nullptr) != 1) {
      X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
    }
  }
  return 1;
}

bool context_prepared(asio::ssl::context& context) {
  return SSL_CTX_get_verify_callback(context.native_handle()) == &record_verification;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) ==
                  std::toupper(static_cast<unsigned char>(y));
         });
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Takes an RFC 3463 code ("5.1.1 ") off the front of `text` when its class
// matches the reply code (RFC 2034 §4); true when one was there.
bool take_enhanced(std::string_view& text, int code, std::string& enhanced) {
  if (text.size() < 5 || text[0] != static_cast<char>('0' + code / 100) || text[1] != '.') {
    return false;
  }
  std::size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    const std::size_t start = i;
    while (i < text.size() && is_digit(text[i]) && i - start < 3) ++i;
    if (i == start) return false;
    if (part == 0) {
      if (i >= text.size() || text[i] != '.') return false;
      ++i;
    }
  }
  if (i < text.size() && text[i] != ' ') return false;
  enhanced.assign(text.substr(0, i));
  text.remove_prefix(i < text.size() ? i + 1 : i);
  return true;
}

// An envelope address we can put between < and > without changing the
// command line: no control octets, no angle brackets.
bool safe_path(std::string_view address) {
  return std::none_of(address.begin(), address.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f || c == '<' || c == '>';
  });
}

// A parameter value (RET, ENVID, NOTIFY, ORCPT): printable ASCII, no space,
// no '=' (xtext encodes it).
bool safe_param(std::string_view value) {
  return !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f && c != '=';
  });
}

peer_reply local_reply(int code, std::string enhanced, std::string text) {
  peer_reply r;
  r.code = code;
  r.enhanced = std::move(enhanced);
  r.text = std::move(text);
  return r;
}

std::string describe(const smtp_stream::tcp::endpoint& ep) {
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace

const boost::system::error_category& client_category() noexcept {
  static const client_category_impl category;
  return category;
}

error_code make_error_code(client_errc e) noexcept {
  return {static_cast<int>(e), client_category()};
}

std::string peer_reply::line() const {
  std::string out = std::to_string(code);
  if (!enhanced.empty()) {
    out += ' ';
    out += enhanced;
  }
  const std::string_view first = std::string_view(text).substr(0, text.find('\n'));
  if (!first.empty()) {
    out += ' ';
    out += first;
  }
  return out;
}

encoded_content encode_content(std::string_view content, bool dot_stuff) {
  encoded_content out;
  out.wire.reserve(content.size() + content.size() / 32 + 2);
  std::uint64_t stuffed = 0;
  std::size_t i = 0;
  // Each turn of the loop starts at the beginning of a line.
  while (i < content.size()) {
    if (dot_stuff && content[i] == '.') {  // RFC 5321 §4.5.2
      out.wire += '.';
      ++stuffed;
    }
    const std::size_t end = content.find_first_of("\r\n", i);
    if (end == std::string_view::npos) {
      // No line end at the very end: RFC 5321 §4.1.1.4 wants CRLF before ".".
      out.wire.append(content.substr(i));
      out.wire += "\r\n";
      break;
    }
    out.wire.append(content.substr(i, end - i));
    out.wire += "\r\n";
    if (content[end] == '\r' && end + 1 < content.size() && content[end + 1] == '\n') {
      i = end + 2;
    } else {
      // A bare CR or LF (RFC 5321 §2.3.8: never sent; PROTOCOLS.md §6).
      ++out.stray_line_ends;
      i = end + 1;
    }
  }
  out.eight_bit = std::any_of(content.begin(), content.end(),
                              [](char c) { return static_cast<unsigned char>(c) > 0x7f; });
  out.size = out.wire.size() - stuffed;
  return out;
}

error_code prepare_client_tls_context(asio::ssl::context& context, const std::string& ca_file) {
  error_code ec;
  if (ca_file.empty()) {
    context.set_default_verify_paths(ec);
  } else {
    context.load_verify_file(ca_file, ec);
  }
  if (ec) return ec;
  SSL_CTX_set_verify(context.native_handle(), SSL_VERIFY_NONE, &record_verification);
  return {};
}

// One message of a batch on its way through the session.
struct smtp_client::flight {
  const outgoing_message* message = nullptr;
  message_result result;
  std::string body;               // ready to write: DATA: stuffed + ".\r\n"; BDAT: as is
  std::uint64_t size = 0;         // SIZE= value
  bool eight_bit = false;
  std::vector<char> valid;        // recipient goes on the wire
  std::vector<char> accepted;     // recipient got 2xx to RCPT
  std::vector<std::string> forward_lines;  // XFORWARD commands before its MAIL
  std::size_t valid_count = 0;
  std::size_t accepted_count = 0;
  std::size_t window_bytes = 0;   // counted in inflight_bytes_ while unfinished
  bool prepared = false;
  bool started = false;           // something of it was queued
  bool mail_ok = false;
  bool delivered = false;         // the final reply was 2xx
  bool finished = false;
};

smtp_client::smtp_client(smtp_stream& stream, client_settings settings)
    : stream_(stream), settings_(std::move(settings)) {
  if (settings_.helo_name.empty()) settings_.helo_name = "localhost";
}

boost::system::error_code smtp_client::fail_open(client_errc e, std::string reason, bool in_step) {
  last_error_ = std::move(reason);
  core::log_info("SMTP session with {}: {}", describe(stream_.remote_endpoint()), last_error_);
  if (in_step) {
    state_ = state::refused;  // quit() may still say QUIT
  } else {
    state_ = state::lost;
    stream_.close();
  }
  return make_error_code(e);
}

void smtp_client::lose(const error_code& ec, std::string_view what) {
  if (state_ == state::lost || state_ == state::closed) return;
  if (ec.category() != client_category() || last_error_.empty()) {
    last_error_ = fmt::format("{}: {}", what, ec.message());
  } else {
    last_error_ = fmt::format("{}: {}", what, last_error_);
  }
  core::log_info("SMTP session with {} lost: {}", describe(stream_.remote_endpoint()), last_error_);
  state_ = state::lost;
  stream_.close();
  expected_.clear();
  out_.clear();
  in_.clear();
}

asio::awaitable<boost::system::result<peer_reply>> smtp_client::read_reply(seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  peer_reply reply;
  std::size_t lines = 0;
  std::array<char, read_chunk> buffer{};
  for (;;) {
    const std::size_t eol = in_.find('\n');
    if (eol == std::string::npos) {
      if (in_.size() > max_reply_line_octets) {
        last_error_ = "reply line too long";
        co_return make_error_code(client_errc::bad_reply);
      }
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        last_error_ = fmt::format("no reply within {}s", timeout.count());
        co_return make_error_code(client_errc::timed_out);
      }
      auto [ec, n] = co_await stream_.read_some(asio::buffer(buffer), left);
      if (ec) {
        if (ec == asio::error::timed_out) {
          last_error_ = fmt::format("no reply within {}s", timeout.count());
          co_return make_error_code(client_errc::timed_out);
        }
        last_error_ = ec.message();
        co_return make_error_code(client_errc::connection_lost);
      }
      in_.append(buffer.data(), n);
      continue;
    }
    // RFC 5321 §4.2: "ddd-text" continues, "ddd text" or "ddd" ends. A bare
    // LF is taken as the line end too: being lenient here cannot confuse us.
    std::string_view line(in_.data(), eol);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool well_formed = eol < max_reply_line_octets && line.size() >= 3 &&
                             is_digit(line[0]) && is_digit(line[1]) && is_digit(line[2]) &&
                             (line.size() == 3 || line[3] == ' ' || line[3] == '-');
    const int code = well_formed ? (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0') : 0;
    if (!well_formed || code < 200 || code > 599) {
      last_error_ = "malformed reply line";
      co_return make_error_code(client_errc::bad_reply);
    }
    const bool last = line.size() == 3 || line[3] == ' ';
    std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view();
    if (lines == 0) reply.code = code;
    std::string enhanced;
    take_enhanced(text, reply.code, enhanced);
    if (lines == 0) {
      reply.enhanced = std::move(enhanced);
    } else {
      reply.text += '\n';
    }
    reply.text.append(text);
    in_.erase(0, eol + 1);
    if (++lines > max_reply_lines) {
      last_error_ = "reply has too many lines";
      co_return make_error_code(client_errc::bad_reply);
    }
    if (last) co_return reply;
  }
}

void smtp_client::queue_line(std::string line) { out_ += line; }

void smtp_client::expect(step what, std::size_t flight_index, std::size_t rcpt, seconds timeout) {
  expected_.push_back({what, flight_index, rcpt, timeout});
}

asio::awaitable<bool> smtp_client::write_out(seconds command_timeout) {
  std::string data;
  data.swap(out_);
  const bool content = out_has_content_;
  out_has_content_ = false;
  // RFC 5321 §4.5.3.2: each block of content has its own timeout.
  const auto timeout = content ? settings_.data_block_timeout : command_timeout;
  const std::string_view all(data);
  std::size_t pos = 0;
  while (pos < all.size()) {
    std::size_t end = 0;
    if (settings_.one_line_per_write) {
      // FETCHMAIL.md §d5: a relay that reads one line per wake-up stalls on a
      // TLS record holding more than one line, so each line is its own write.
      const std::size_t eol = all.find("\r\n", pos);
      end = eol == std::string_view::npos ? all.size() : eol + 2;
    } else {
      end = std::min(all.size(), pos + write_block);
    }
    const error_code ec = co_await stream_.write_all(all.substr(pos, end - pos), timeout);
    if (ec) {
      last_error_.clear();
      lose(ec, content ? "writing message content" : "writing commands");
      co_return false;
    }
    pos = end;
  }
  co_return true;
}

asio::awaitable<boost::system::result<session_info>> smtp_client::open() {
  if (state_ != state::fresh) {
    last_error_ = "open() called twice";
    co_return make_error_code(client_errc::not_open);
  }
  const bool need_tls = settings_.tls == tls_policy::encrypt || settings_.tls == tls_policy::verify;
  if (need_tls && !stream_.tls_active()) {
    if (settings_.tls_context == nullptr) {
      co_return fail_open(client_errc::tls_unavailable, "TLS required but no TLS context configured",
                          false);
    }
    if (settings_.tls == tls_policy::verify &&
        (settings_.tls_server_name.empty() || !context_prepared(*settings_.tls_context))) {
      co_return fail_open(client_errc::tls_unavailable,
                          "TLS verify needs a server name and a context from "
                          "prepare_client_tls_context()",
                          false);
    }
  }
  if (!settings_.one_line_per_write) {
    // We write whole command groups at once; Nagle would only hold the next
    // group back until the previous one is acknowledged.
    error_code ignored;
    stream_.socket().set_option(smtp_stream::tcp::no_delay(true), ignored);
  }
  info_ = {};

  auto greeting = co_await read_reply(settings_.greeting_timeout);
  if (!greeting) {
    const error_code ec = greeting.error();
    lose(ec, "waiting for the greeting");
    co_return ec;
  }
  if (greeting->code != 220) {
    co_return fail_open(client_errc::greeting_refused, "greeting: " + greeting->line(), true);
  }
  info_.peer_greeting = greeting->text;
  if (const error_code ec = co_await say_hello()) co_return ec;

  if (stream_.tls_active()) {
    // Implicit TLS (e.g. an ODMR turnaround on a TLS port): no STARTTLS.
    info_.tls_active = true;
    info_.tls_verified = stream_.tls_peer_verified();
    info_.tls_description = stream_.tls_description();
    if (settings_.tls == tls_policy::verify && !info_.tls_verified) {
      co_return fail_open(client_errc::tls_not_verified, "TLS peer not verified", true);
    }
  } else if (settings_.tls != tls_policy::none && info_.starttls &&
             settings_.tls_context != nullptr) {
    if (const error_code ec = co_await start_tls()) co_return ec;
  } else if (need_tls) {
    co_return fail_open(client_errc::tls_unavailable, "TLS required but the peer offers no STARTTLS",
                        true);
  }
  state_ = state::ready;
  co_return info_;
}

asio::awaitable<error_code> smtp_client::say_hello(std::string_view name) {
  const std::string ehlo_name(name.empty() ? std::string_view(settings_.helo_name) : name);
  queue_line(fmt::format("EHLO {}\r\n", ehlo_name));
  if (!co_await write_out(settings_.helo_timeout)) co_return client_errc::connection_lost;
  auto ehlo = co_await read_reply(settings_.helo_timeout);
  if (!ehlo) {
    const error_code ec = ehlo.error();
    lose(ec, "waiting for the EHLO reply");
    co_return ec;
  }
  if (ehlo->positive()) {
    info_.esmtp = true;
    std::string_view text(ehlo->text);
    bool first = true;
    while (!text.empty() || first) {
      const std::size_t nl = text.find('\n');
      std::string_view line = text.substr(0, nl);
      text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
      if (first) {  // the peer's name and greeting, not a keyword
        first = false;
        continue;
      }
      const std::size_t sp = line.find(' ');
      const std::string_view keyword = line.substr(0, sp);
      const std::string_view args = sp == std::string_view::npos ? "" : line.substr(sp + 1);
      if (iequals(keyword, "PIPELINING")) info_.pipelining = true;
      else if (iequals(keyword, "8BITMIME")) info_.eightbitmime = true;
      else if (iequals(keyword, "DSN")) info_.dsn = true;
      else if (iequals(keyword, "CHUNKING")) info_.chunking = true;
      else if (iequals(keyword, "STARTTLS")) info_.starttls = true;
      else if (iequals(keyword, "ENHANCEDSTATUSCODES")) info_.enhanced_status_codes = true;
      else if (iequals(keyword, "XFORWARD")) info_.xforward = parse_offered_attributes(args);
      else if (iequals(keyword, "XCLIENT")) info_.xclient = parse_offered_attributes(args);
      else if (iequals(keyword, "SIZE")) {
        // RFC 1870 §3: "SIZE [n]", 0 or absent means no fixed limit.
        info_.size_offered = true;
        std::uint64_t n = 0;
        const auto [ptr, ec] = std::from_chars(args.data(), args.data() + args.size(), n);
        info_.max_size = (ec == std::errc() && ptr == args.data() + args.size()) ? n : 0;
      }
    }
    co_return error_code();
  }
  if (ehlo->code < 500) {
    co_return fail_open(client_errc::helo_refused, "EHLO refused: " + ehlo->line(), true);
  }
  // RFC 5321 §3.2: a server that does not know EHLO answers 5xx; fall back.
  queue_line(fmt::format("HELO {}\r\n", ehlo_name));
  if (!co_await write_out(settings_.helo_timeout)) co_return client_errc::connection_lost;
  auto helo = co_await read_reply(settings_.helo_timeout);
  if (!helo) {
    const error_code ec = helo.error();
    lose(ec, "waiting for the HELO reply");
    co_return ec;
  }
  if (!helo->positive()) {
    co_return fail_open(client_errc::helo_refused, "EHLO/HELO refused: " + helo->line(), true);
  }
  co_return error_code();
}

asio::awaitable<error_code> smtp_client::start_tls() {
  queue_line("STARTTLS\r\n");
  if (!co_await write_out(settings_.starttls_timeout)) co_return client_errc::connection_lost;
  auto reply = co_await read_reply(settings_.starttls_timeout);
  if (!reply) {
    const error_code ec = reply.error();
    lose(ec, "waiting for the STARTTLS reply");
    co_return ec;
  }
  if (reply->code != 220) {
    if (settings_.tls == tls_policy::may) {
      core::log_info("SMTP session with {}: STARTTLS refused ({}), going on without TLS",
                     describe(stream_.remote_endpoint()), reply->line());
      co_return error_code();
    }
    co_return fail_open(client_errc::tls_unavailable, "STARTTLS refused: " + reply->line(), true);
  }
  // CVE-2011-0411, client side: anything that came with the 220 was sent
  // before the handshake and must never be read as a reply under TLS.
  if (!in_.empty()) {
    core::log_warning("SMTP session with {}: discarding {} octets received with the 220 to STARTTLS",
                      describe(stream_.remote_endpoint()), in_.size());
    in_.clear();
  }
  if (const error_code ec = co_await stream_.start_tls_client(
          *settings_.tls_context, settings_.tls_server_name, settings_.starttls_timeout)) {
    co_return fail_open(client_errc::tls_failed, "TLS handshake: " + ec.message(), false);
  }
  // RFC 3207 §4.2: forget what the peer said before TLS, ask again.
  std::string greeting = std::move(info_.peer_greeting);
  info_ = {};
  info_.peer_greeting = std::move(greeting);
  info_.tls_active = true;
  info_.tls_verified = stream_.tls_peer_verified();
  info_.tls_description = stream_.tls_description();
  if (settings_.tls == tls_policy::verify && !info_.tls_verified) {
    co_return fail_open(client_errc::tls_not_verified,
                        "TLS certificate of " + settings_.tls_server_name + " not verified", true);
  }
  core::log_debug("SMTP session with {}: TLS {} ({})", describe(stream_.remote_endpoint()),
                  info_.tls_description, info_.tls_verified ? "verified" : "not verified");
  co_return co_await say_hello();
}

// Decides what can be decided without the peer; false when the message is
// finished here (not_sent_8bit, too_big, no usable address).
bool smtp_client::prepare(flight& f, bool chunking) {
  f.prepared = true;
  const outgoing_message& m = *f.message;
  auto refuse_all = [&f](message_status status, const peer_reply& reply) {
    f.result.status = status;
    for (auto& r : f.result.recipients) r.reply = reply;
    f.finished = true;
    return false;
  };
  if (!safe_path(m.sender)) {
    return refuse_all(message_status::rejected,
                      local_reply(501, "5.1.7", "bad sender address syntax (not sent)"));
  }
  f.valid_count = 0;
  for (std::size_t i = 0; i < m.recipients.size(); ++i) {
    const std::string& address = m.recipients[i].address;
    if (address.empty() || !safe_path(address)) {
      f.valid[i] = 0;
      f.result.recipients[i].reply =
          local_reply(501, "5.1.3", "bad recipient address syntax (not sent)");
    } else {
      ++f.valid_count;
    }
  }
  if (f.valid_count == 0) {
    f.result.status = message_status::rejected;
    f.finished = true;
    return false;
  }
  static const std::string no_content;
  encoded_content enc = encode_content(m.content != nullptr ? *m.content : no_content, !chunking);
  if (enc.stray_line_ends > 0) {
    // Intake refuses these; if one got here anyway it must not go out bare.
    core::log_warning("{}: {} bare CR/LF in the content sent as CRLF", m.qid, enc.stray_line_ends);
  }
  if (enc.eight_bit && !info_.eightbitmime) {
    // RFC 6152 §3: never send 8-bit octets to a peer without 8BITMIME. We do
    // not convert to 7-bit MIME; the caller bounces with 5.6.3.
    return refuse_all(message_status::not_sent_8bit,
                      local_reply(554, "5.6.3",
                                  "message has 8-bit content and the peer does not offer "
                                  "8BITMIME (not sent)"));
  }
  if (info_.size_offered && info_.max_size > 0 && enc.size > info_.max_size) {
    // RFC 1870 §6: the peer would refuse it with 552.
    return refuse_all(message_status::too_big,
                      local_reply(552, "5.3.4",
                                  fmt::format("message size {} exceeds the peer's limit {} (not sent)",
                                              enc.size, info_.max_size)));
  }
  f.size = enc.size;
  f.eight_bit = enc.eight_bit;
  if (settings_.forward_client == client_forwarding::xforward && !info_.xforward.empty()) {
    f.forward_lines = client_forwarding_commands("XFORWARD", m.origin, info_.xforward);
  }
  f.body = std::move(enc.wire);
  if (!chunking) f.body += ".\r\n";
  return true;
}

void smtp_client::queue_envelope(flight& f, std::size_t index, bool rset_first, bool chunking) {
  const outgoing_message& m = *f.message;
  const std::size_t before = out_.size();
  if (rset_first) {
    queue_line("RSET\r\n");
    expect(step::rset, index, 0, settings_.mail_timeout);
  }
  // XFORWARD belongs to the next transaction only, and RSET would clear it:
  // after any RSET, right before MAIL, in the same group (Postfix pipelines
  // it the same way).
  for (const std::string& line : f.forward_lines) {
    queue_line(line);
    expect(step::xforward, index, 0, settings_.mail_timeout);
  }
  std::string mail = fmt::format("MAIL FROM:<{}>", m.sender);
  if (info_.size_offered) mail += fmt::format(" SIZE={}", f.size);
  if (info_.eightbitmime) {
    if (f.eight_bit || iequals(m.body_type, "8BITMIME")) mail += " BODY=8BITMIME";
    else if (iequals(m.body_type, "7BIT")) mail += " BODY=7BIT";
  }
  // RFC 3461 §5.2: passed on unchanged to a DSN peer, left out otherwise.
  if (info_.dsn) {
    if (safe_param(m.ret)) mail += " RET=" + m.ret;
    if (safe_param(m.envid)) mail += " ENVID=" + m.envid;
  }
  mail += "\r\n";
  queue_line(std::move(mail));
  expect(step::mail, index, 0, settings_.mail_timeout);
  for (std::size_t i = 0; i < m.recipients.size(); ++i) {
    if (!f.valid[i]) continue;
    const outgoing_recipient& r = m.recipients[i];
    std::string rcpt = fmt::format("RCPT TO:<{}>", r.address);
    if (info_.dsn) {
      if (safe_param(r.notify)) rcpt += " NOTIFY=" + r.notify;
      if (safe_param(r.orcpt)) rcpt += " ORCPT=" + r.orcpt;
    }
    rcpt += "\r\n";
    queue_line(std::move(rcpt));
    expect(step::rcpt, index, i, settings_.rcpt_timeout);
  }
  if (chunking) {
    // RFC 3030: exactly the octets announced, no stuffing, no final dot.
    queue_line(fmt::format("BDAT {} LAST\r\n", f.body.size()));
    if (!f.body.empty()) out_has_content_ = true;
    out_ += f.body;
    std::string().swap(f.body);
    expect(step::bdat, index, 0, settings_.data_done_timeout);
  } else {
    queue_line("DATA\r\n");
    expect(step::data, index, 0, settings_.data_init_timeout);
  }
  if (rset_first) needs_rset_ = false;
  f.started = true;
  f.window_bytes = out_.size() - before + f.body.size();
  inflight_bytes_ += f.window_bytes;
}

asio::awaitable<bool> smtp_client::read_next(std::vector<flight>& flights, expected_reply& done) {
  done = expected_.front();
  auto reply = co_await read_reply(done.timeout);
  if (!reply) {
    static constexpr const char* names[] = {"RSET", "MAIL", "RCPT", "DATA", "end of data",
                                            "end of data", "BDAT", "XFORWARD"};
    lose(reply.error(), fmt::format("waiting for the {} reply", names[static_cast<int>(done.what)]));
    co_return false;
  }
  expected_.pop_front();
  apply(flights[done.flight], done, *reply);
  co_return true;
}

void smtp_client::apply(flight& f, const expected_reply& e, const peer_reply& r) {
  auto to_accepted = [&f](const peer_reply& reply) {
    for (std::size_t i = 0; i < f.accepted.size(); ++i) {
      if (f.accepted[i]) f.result.recipients[i].reply = reply;
    }
  };
  switch (e.what) {
    case step::xforward:
      // The MAIL behind it is already on its way: the transaction goes on
      // without the original client — as it would to a peer without
      // XFORWARD — rather than leave a half-sent group behind.
      if (!r.positive()) {
        if (f.result.forward_reply.code == 0) f.result.forward_reply = r;
        f.result.client_forwarded = false;
        core::log_warning("{}: XFORWARD answered {}; sent without the original client",
                          f.message->qid, r.line());
      } else if (f.result.forward_reply.code == 0) {
        f.result.client_forwarded = true;
      }
      break;
    case step::rset:
      if (r.positive()) {
        needs_rset_ = false;
      } else {
        core::log_warning("{}: RSET answered {}", f.message->qid, r.line());
      }
      break;
    case step::mail:
      f.result.mail_reply = r;
      f.mail_ok = r.positive();
      break;
    case step::rcpt:
      f.result.recipients[e.rcpt].reply = r;
      if (f.mail_ok && r.positive()) {
        f.accepted[e.rcpt] = 1;
        ++f.accepted_count;
      }
      break;
    case step::data:
      if (r.code != 354) {
        // Refused DATA: the transaction may still be open at the peer.
        f.result.data_reply = r;
        to_accepted(r);
        needs_rset_ = f.mail_ok;
        finish(f);
      }
      break;
    case step::dot:
    case step::lone_dot:
      // The final dot ends the transaction whatever the reply (RFC 5321 §4.1.1.4).
      f.result.data_reply = r;
      if (e.what == step::dot) {
        to_accepted(r);
        f.delivered = r.positive();
      }
      needs_rset_ = false;
      finish(f);
      break;
    case step::bdat:
      f.result.data_reply = r;
      to_accepted(r);
      f.delivered = f.accepted_count > 0 && r.positive();
      // RFC 3030 §4.2: after a failed BDAT the client sends RSET.
      needs_rset_ = f.mail_ok && !r.positive();
      finish(f);
      break;
  }
}

void smtp_client::finish(flight& f) {
  if (f.finished) return;
  f.finished = true;
  if (f.started) inflight_bytes_ -= std::min(inflight_bytes_, f.window_bytes);
  message_result& res = f.result;
  if (!f.mail_ok) {
    // Pipelined RCPTs after a refused MAIL got 503s; the MAIL reply is the verdict.
    for (std::size_t i = 0; i < res.recipients.size(); ++i) {
      if (f.valid[i]) res.recipients[i].reply = res.mail_reply;
    }
    res.status = message_status::rejected;
  } else {
    res.status = f.delivered ? message_status::sent : message_status::rejected;
  }
  core::log_debug("{}: {} ({} of {} recipients accepted){}", f.message->qid,
                  res.status == message_status::sent ? "sent" : "not sent", f.accepted_count,
                  res.recipients.size(),
                  res.data_reply.code != 0 ? ", " + res.data_reply.line() : std::string());
}

asio::awaitable<bool> smtp_client::command(std::vector<flight>& flights, std::string line,
                                           step what, std::size_t index, std::size_t rcpt,
                                           seconds timeout) {
  queue_line(std::move(line));
  expect(what, index, rcpt, timeout);
  if (!co_await write_out(timeout)) co_return false;
  expected_reply done{};
  co_return co_await read_next(flights, done);
}

asio::awaitable<void> smtp_client::run_lockstep(std::vector<flight>& flights) {
  for (std::size_t k = 0; k < flights.size() && state_ == state::ready; ++k) {
    flight& f = flights[k];
    if (!prepare(f, false)) continue;
    f.started = true;
    if (needs_rset_ &&
        !co_await command(flights, "RSET\r\n", step::rset, k, 0, settings_.mail_timeout)) {
      break;
    }
    // Queue the envelope the pipelined way, then send it one line at a time.
    queue_envelope(f, k, false, false);
    std::string envelope;
    envelope.swap(out_);
    std::deque<expected_reply> replies;
    replies.swap(expected_);
    std::size_t pos = 0;
    for (const expected_reply& e : replies) {
      if (e.what == step::rcpt && (!f.mail_ok || f.finished)) break;
      if (e.what == step::data && f.accepted_count == 0) break;
      const std::size_t eol = envelope.find("\r\n", pos) + 2;
      const bool ok =
          co_await command(flights, envelope.substr(pos, eol - pos), e.what, k, e.rcpt, e.timeout);
      pos = eol;
      if (!ok) break;
    }
    if (state_ != state::ready) break;
    if (f.finished) continue;  // DATA refused
    if (!f.mail_ok) {
      needs_rset_ = false;
      finish(f);
      continue;
    }
    if (f.accepted_count == 0) {
      // Every RCPT refused: no DATA (RFC 5321 §3.3); the transaction is open.
      needs_rset_ = true;
      finish(f);
      continue;
    }
    // 354 received: the content and the final dot.
    out_ = std::move(f.body);
    out_has_content_ = true;
    expect(step::dot, k, 0, settings_.data_done_timeout);
    if (!co_await write_out(settings_.data_block_timeout)) break;
    expected_reply done{};
    if (!co_await read_next(flights, done)) break;
  }
}

asio::awaitable<void> smtp_client::run_pipelined(std::vector<flight>& flights, bool chunking) {
  std::size_t next = 0;
  bool awaiting_354 = false;  // DATA mode: a DATA is out and its content not yet queued
  auto count_unfinished = [&flights, &next] {
    std::size_t n = 0;
    for (std::size_t i = 0; i < next; ++i) n += flights[i].started && !flights[i].finished;
    return n;
  };
  while (state_ == state::ready) {
    // 1. Queue what the window allows.
    while (next < flights.size()) {
      flight& f = flights[next];
      if (!f.prepared && !prepare(f, chunking)) {
        ++next;
        continue;
      }
      if (awaiting_354) break;  // DATA must be last in a group (RFC 2920 §3.1)
      const std::size_t replies = f.valid_count + 3 + f.forward_lines.size();
      const std::size_t bytes = f.body.size() + command_estimate * replies;
      if (!expected_.empty() && (inflight_bytes_ + bytes > settings_.pipeline_window ||
                                 expected_.size() + replies > settings_.max_pipelined_replies)) {
        break;
      }
      // With CHUNKING an earlier message may end in a failed BDAT that leaves
      // its transaction open; RSET first keeps the next MAIL from being nested.
      queue_envelope(f, next, needs_rset_ || (chunking && count_unfinished() > 0), chunking);
      awaiting_354 = !chunking;
      ++next;
    }
    // 2. Send it.
    if (!out_.empty() && !co_await write_out(settings_.mail_timeout)) break;
    if (expected_.empty()) {
      if (next >= flights.size()) break;
      continue;
    }
    // 3. Read one reply and react to it.
    expected_reply done{};
    if (!co_await read_next(flights, done)) break;
    flight& f = flights[done.flight];
    if (done.what == step::data) {
      awaiting_354 = false;
      if (!f.finished) {
        // 354. RFC 2920 §3.1: with no recipient accepted, a lone "." ends it.
        if (f.accepted_count > 0) {
          out_ += f.body;
          out_has_content_ = true;
          std::string().swap(f.body);
          expect(step::dot, done.flight, 0, settings_.data_done_timeout);
        } else {
          queue_line(".\r\n");
          expect(step::lone_dot, done.flight, 0, settings_.data_done_timeout);
        }
      }
    }
  }
}

// The messages through the pipelined or the lock-step driver, whichever the
// peer allows.
asio::awaitable<void> smtp_client::run_transactions(std::vector<flight>& flights) {
  const bool pipelined = info_.pipelining && !settings_.one_line_per_write;
  const bool chunking = pipelined && info_.chunking && settings_.use_chunking;
  inflight_bytes_ = 0;
  if (pipelined) {
    co_await run_pipelined(flights, chunking);
  } else {
    co_await run_lockstep(flights);
  }
}

// XCLIENT changes who the peer thinks we are for the rest of the session,
// and it answers with a new greeting: so one message at a time, each after
// its own XCLIENT and a fresh EHLO (XCLIENT_README), and never pipelined
// across it. A message whose client is unknown is not sent under the
// identity an earlier XCLIENT set: the batch ends there, and the rest stays
// queued (code 0) for a fresh session.
asio::awaitable<void> smtp_client::run_with_xclient(std::vector<flight>& flights) {
  for (std::size_t k = 0; k < flights.size() && state_ == state::ready; ++k) {
    flight& f = flights[k];
    if (identity_locked()) break;
    const auto lines = client_forwarding_commands("XCLIENT", f.message->origin, info_.xclient);
    if (lines.empty() && identity_changed_) {
      identity_spent_ = true;  // it goes under our own identity, in a new session
      break;
    }
    if (!lines.empty()) {
      const xclient_outcome o = co_await send_xclient(f, lines);
      if (o == xclient_outcome::broken) break;
      // Refused after an earlier XCLIENT: the session is someone else's now.
      if (o == xclient_outcome::refused && identity_changed_) {
        identity_spent_ = true;
        break;
      }
    }
    // This message alone through the usual drivers (the identity is per session).
    std::vector<flight> one;
    one.push_back(std::move(f));
    co_await run_transactions(one);
    f = std::move(one.front());
  }
}

// XCLIENT lines in lock step (each one answers 220 as a new greeting), then
// EHLO again. A refusal is logged (the caller decides whether the message
// may still go: only under our own identity); broken when the session broke.
asio::awaitable<smtp_client::xclient_outcome> smtp_client::send_xclient(
    flight& f, const std::vector<std::string>& lines) {
  if (needs_rset_) {
    // XCLIENT is refused inside a transaction.
    queue_line("RSET\r\n");
    if (!co_await write_out(settings_.mail_timeout)) co_return xclient_outcome::broken;
    auto reply = co_await read_reply(settings_.mail_timeout);
    if (!reply) {
      lose(reply.error(), "waiting for the RSET reply");
      co_return xclient_outcome::broken;
    }
    needs_rset_ = !reply->positive();
  }
  bool greeted = false;
  for (const std::string& line : lines) {
    queue_line(line);
    if (!co_await write_out(settings_.mail_timeout)) co_return xclient_outcome::broken;
    auto reply = co_await read_reply(settings_.helo_timeout);
    if (!reply) {
      lose(reply.error(), "waiting for the XCLIENT reply");
      co_return xclient_outcome::broken;
    }
    if (reply->code == 220) {
      greeted = true;
      identity_changed_ = true;
      continue;
    }
    if (f.result.forward_reply.code == 0) f.result.forward_reply = *reply;
    core::log_warning("{}: XCLIENT answered {}; sent without the original client", f.message->qid,
                      reply->line());
    if (reply->code == 421) {
      last_error_ = reply->line();
      lose(client_errc::connection_lost, "waiting for the XCLIENT reply");
      co_return xclient_outcome::broken;
    }
  }
  f.result.client_forwarded = greeted && f.result.forward_reply.code == 0;
  const xclient_outcome outcome =
      f.result.forward_reply.code == 0 ? xclient_outcome::accepted : xclient_outcome::refused;
  if (!greeted) co_return outcome;
  // A new greeting: forget the peer's extensions and say EHLO again (TLS stays).
  session_info fresh;
  fresh.tls_active = info_.tls_active;
  fresh.tls_verified = info_.tls_verified;
  fresh.tls_description = info_.tls_description;
  fresh.peer_greeting = info_.peer_greeting;
  info_ = std::move(fresh);
  // The server takes the name of this EHLO as the client's HELO, over
  // XCLIENT's: say the original one when it can stand on a command line.
  const std::string& original = f.message->origin.helo;
  const bool plain = !original.empty() && original.size() <= 255 &&
                     std::all_of(original.begin(), original.end(), [](char c) {
                       return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
                     });
  if (const error_code ec = co_await say_hello(plain ? std::string_view(original) : std::string_view())) {
    if (state_ == state::refused) state_ = state::lost;  // no transaction without a greeting
    co_return xclient_outcome::broken;
  }
  co_return outcome;
}

asio::awaitable<std::vector<message_result>> smtp_client::send_batch(
    std::span<const outgoing_message> messages) {
  std::vector<flight> flights(messages.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    flight& f = flights[i];
    f.message = &messages[i];
    f.valid.assign(messages[i].recipients.size(), 1);
    f.accepted.assign(messages[i].recipients.size(), 0);
    f.result.recipients.reserve(messages[i].recipients.size());
    for (const auto& r : messages[i].recipients) f.result.recipients.push_back({r.id, {}});
  }
  if (state_ == state::ready) {
    if (settings_.forward_client == client_forwarding::xclient && !info_.xclient.empty()) {
      co_await run_with_xclient(flights);
    } else {
      co_await run_transactions(flights);
    }
  }
  // Whatever has no verdict now lost its connection (or never had one):
  // recipients without a final answer keep code 0 — not delivered.
  const std::string why = last_error_.empty() ? std::string("session not open") : last_error_;
  std::vector<message_result> results;
  results.reserve(flights.size());
  for (flight& f : flights) {
    if (!f.finished) {
      f.result.status = message_status::connection_lost;
      const bool mail_refused = f.result.mail_reply.code != 0 && !f.mail_ok;
      for (std::size_t i = 0; i < f.result.recipients.size(); ++i) {
        if (!f.valid[i]) continue;
        peer_reply& reply = f.result.recipients[i].reply;
        if (mail_refused) {
          reply = f.result.mail_reply;
        } else if (f.accepted[i] || reply.code == 0) {
          reply = local_reply(0, "", "not delivered: " + why);
        }
      }
    }
    results.push_back(std::move(f.result));
  }
  co_return results;
}

asio::awaitable<message_result> smtp_client::send(const outgoing_message& m) {
  auto results = co_await send_batch(std::span<const outgoing_message>(&m, 1));
  co_return std::move(results.front());
}

asio::awaitable<boost::system::result<peer_reply>> smtp_client::probe_recipient(
    std::string_view address) {
  if (state_ != state::ready) {
    last_error_ = "SMTP session not open";
    co_return make_error_code(client_errc::not_open);
  }
  if (address.empty() || !safe_path(address)) {
    co_return local_reply(501, "5.1.3", "bad recipient address syntax (not sent)");
  }
  struct probe_command {
    std::string line;
    const char* name;
    seconds timeout;
  };
  std::vector<probe_command> commands;
  // An earlier transaction may still be open (e.g. every RCPT refused).
  if (needs_rset_) commands.push_back({"RSET\r\n", "RSET", settings_.mail_timeout});
  const std::size_t mail = commands.size();
  commands.push_back({"MAIL FROM:<>\r\n", "MAIL", settings_.mail_timeout});
  commands.push_back({fmt::format("RCPT TO:<{}>\r\n", address), "RCPT", settings_.rcpt_timeout});
  commands.push_back({"RSET\r\n", "RSET", settings_.mail_timeout});
  const bool pipelined = info_.pipelining && !settings_.one_line_per_write;
  if (pipelined) {
    for (const auto& c : commands) queue_line(c.line);
    if (!co_await write_out(settings_.mail_timeout)) {
      co_return make_error_code(client_errc::connection_lost);
    }
  }
  std::vector<peer_reply> replies;
  for (const auto& c : commands) {
    if (!pipelined) {
      // RFC 5321 §3.3: no RCPT after a refused MAIL; nothing open to RSET either.
      if (replies.size() > mail && !replies[mail].positive()) break;
      queue_line(c.line);
      if (!co_await write_out(c.timeout)) {
        co_return make_error_code(client_errc::connection_lost);
      }
    }
    auto reply = co_await read_reply(c.timeout);
    if (!reply) {
      const error_code ec = reply.error();
      lose(ec, fmt::format("waiting for the {} reply", c.name));
      co_return ec;
    }
    if (reply->code == 421) {
      // RFC 5321 §3.8: the server is closing the channel.
      last_error_ = reply->line();
      lose(client_errc::connection_lost, fmt::format("waiting for the {} reply", c.name));
      co_return make_error_code(client_errc::connection_lost);
    }
    replies.push_back(std::move(*reply));
  }
  if (mail > 0 && !replies.front().positive()) {
    core::log_warning("SMTP session with {}: RSET answered {}", describe(stream_.remote_endpoint()),
                      replies.front().line());
  }
  if (!replies[mail].positive()) {
    needs_rset_ = false;
    last_error_ = "MAIL FROM:<> refused: " + replies[mail].line();
    co_return make_error_code(client_errc::sender_refused);
  }
  // The final RSET ends the transaction; if refused, the next one starts with another.
  needs_rset_ = !replies.back().positive();
  co_return std::move(replies[mail + 1]);
}

asio::awaitable<void> smtp_client::quit() {
  try {
    if (state_ == state::ready || state_ == state::refused) {
      out_.clear();
      expected_.clear();
      queue_line("QUIT\r\n");
      if (co_await write_out(settings_.quit_timeout)) {
        auto reply = co_await read_reply(settings_.quit_timeout);
        if (reply && reply->code != 221) {
          core::log_debug("SMTP session with {}: QUIT answered {}",
                          describe(stream_.remote_endpoint()), reply->line());
        }
      }
    }
  } catch (const std::exception& e) {
    core::log_warning("SMTP QUIT failed: {}", e.what());
  }
  state_ = state::closed;
  stream_.close();
}

}  // namespace flushgate::gateway
