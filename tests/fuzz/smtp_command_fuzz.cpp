// smtp_command_fuzz.cpp — libFuzzer target for what the SMTP and ODMR
// sessions do with a command line from the network.
//
// The input is a dialogue: lines ended by CRLF, as gateway::line_reader hands
// them out (a bare CR or LF stays inside a line). Like smtp_session.cpp and
// odmr_server.cpp, each line goes through parse_command, then by verb:
//   MAIL/RCPT  parse_mail_args / parse_rcpt_args, the path through parse_mailbox;
//   ETRN       the node ("@dom", "#queue" or a domain) through is_valid_domain;
//   ATRN       each domain of the comma list through is_valid_domain;
//   AUTH       a sasl_exchange, which takes the following lines until done;
//   STARTTLS   "TLS" is on from here (AUTH PLAIN and LOGIN need it).
// As in the sessions, a command line over 512 octets (CRLF included) is not
// parsed, nor an AUTH line over 12288; a line holding a bare CR or LF only
// goes through parse_command (the sessions refuse it before). The arguments
// of MAIL, RCPT and AUTH and the AUTH lines also go through the xtext and
// base64 codecs.
//
// Credentials: "alice" (password "fuzz-pass") and "carol" (a 70-octet
// password, longer than the HMAC block); any other user has none. In a
// CRAM-MD5 exchange the response line "!USER" is replaced by the right answer
// for USER, computed with OpenSSL's HMAC over the challenge (the fuzzer
// cannot guess a random challenge): it must succeed exactly for alice and carol.
// The first two lines are also used as password and message to check the
// stored key schedule against OpenSSL's HMAC-MD5.
//
// Checked (any failure aborts):
//   - parse_command: the upper-cased line is name [SP keyword arg]; the name
//     is upper-case and matches the verb; a trailing CRLF changes nothing;
//   - MAIL/RCPT: detail is empty exactly on ok, else printable ASCII; parsed
//     values obey their grammar and limits (BODY, RET, ENVID <= 100 and xtext,
//     AUTH= xtext, NOTIFY, ORCPT <= 500 with addr-type;xtext); the arguments
//     written back canonically parse to the same values;
//   - parse_mailbox: untouched on a plain error; a lower-case domain, a valid
//     one for ok; "local@domain" parses again to the same verdict and mailbox;
//   - is_valid_domain: a true answer means an LDH name with a dot that also
//     passes parse_mailbox;
//   - sasl_exchange: codes from the known set, 334 exactly while not done,
//     success only with 235 and for a user who has a credential, one-line
//     texts, a base64 challenge "<...@fuzz.test>", 503 after the end;
//   - xtext and base64: decoding accepts exactly the grammar (RFC 3461 §4;
//     strict RFC 4648 as sasl.hpp says); decode(encode(x)) == x; a decoded
//     value re-encodes to something that decodes to it again.
#include "gateway/inbound/address.hpp"
#include "gateway/inbound/sasl.hpp"
#include "gateway/inbound/smtp_command.hpp"
#include "gateway/xtext.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace flushgate::gateway;
using flushgate::test::require;
using flushgate::test::require_equal;

constexpr std::string_view hostname = "fuzz.test";
constexpr std::size_t command_line_limit = 512;  // smtpd_command_line_limit's default, CRLF included
constexpr std::size_t auth_line_limit = 12288;   // smtp_session.cpp, odmr_server.cpp
const std::string carol_password(70, 'c');

// The password behind each known user; nullopt for everyone else.
std::optional<std::string> password_of(std::string_view user) {
  if (user == "alice") return std::string("fuzz-pass");
  if (user == "carol") return carol_password;
  return std::nullopt;
}

// What the sessions' credential lookup returns: the stored form, or "".
std::string stored_credential(std::string_view user) {
  static const std::string alice = make_credential("fuzz-pass");
  static const std::string carol = make_credential(carol_password);
  if (user == "alice") return alice;
  if (user == "carol") return carol;
  if (user == "bob") return "hmac-md5:not-a-key-schedule";  // a damaged store row
  return {};
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_printable(std::string_view s) {
  for (const char c : s) {
    if (c < 32 || c > 126) return false;
  }
  return true;
}

std::string hex_of(const unsigned char* p, std::size_t n, bool upper_case) {
  const char* digits = upper_case ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

// HMAC-MD5(password, message) in hex, from OpenSSL: the reference for sasl.cpp's key schedule.
std::string reference_hmac_hex(std::string_view password, std::string_view message, bool upper_case = false) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  static const unsigned char none = 0;  // OpenSSL wants a key pointer even for an empty key
  const void* key = password.empty() ? static_cast<const void*>(&none) : password.data();
  const auto* text = message.empty() ? &none : reinterpret_cast<const unsigned char*>(message.data());
  const auto* done =
      HMAC(EVP_md5(), key, static_cast<int>(password.size()), text, message.size(), digest.data(), &size);
  require(done != nullptr && size == 16, "OpenSSL HMAC-MD5 failed");
  return hex_of(digest.data(), size, upper_case);
}

// --- codecs --------------------------------------------------------------------------

// RFC 3461 §4: xtext = *( xchar / hexchar ), xchar = %d33-126 but '+' and '=',
// hexchar = '+' and two upper-case hex digits.
bool is_xtext_reference(std::string_view s) {
  auto is_hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '+') {
      if (i + 2 >= s.size() || !is_hex(s[i + 1]) || !is_hex(s[i + 2])) return false;
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      return false;
    }
  }
  return true;
}

// RFC 4648 §4 as sasl.hpp states it: groups of four alphabet characters, '='
// only as the last one or two characters.
bool is_base64_reference(std::string_view s) {
  if (s.size() % 4 != 0) return false;
  std::size_t pads = s.ends_with("==") ? 2 : s.ends_with("=") ? 1 : 0;
  for (std::size_t i = 0; i + pads < s.size(); ++i) {
    const char c = s[i];
    const bool alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                          c == '/';
    if (!alphabet) return false;
  }
  return true;
}

void check_codecs(std::string_view s) {
  require(xtext_decode(s).has_value() == is_xtext_reference(s), "xtext_decode accepts exactly RFC 3461 xtext");
  require(base64_decode(s).has_value() == is_base64_reference(s), "base64_decode accepts exactly strict base64");
  require(xtext_decode(xtext_encode(s)) == s, "xtext_decode(xtext_encode(x)) != x");
  if (const auto d = xtext_decode(s)) {
    require(d->size() <= s.size(), "xtext decoded longer than its text");
    require(xtext_decode(xtext_encode(*d)) == *d, "xtext: re-encoded value decodes differently");
  }
  require(base64_decode(base64_encode(s)) == s, "base64_decode(base64_encode(x)) != x");
  if (const auto d = base64_decode(s)) {
    const std::size_t pads = s.ends_with("==") ? 2 : s.ends_with("=") ? 1 : 0;
    require(d->size() == s.size() / 4 * 3 - pads, "base64 decoded size");
    require(base64_decode(base64_encode(*d)) == *d, "base64: re-encoded value decodes differently");
  }
}

// --- addresses -----------------------------------------------------------------------

void check_mailbox(std::string_view path) {
  mailbox m{"untouched-local", "untouched.domain"};
  const address_error e = parse_mailbox(path, m);
  if (e == address_error::syntax || e == address_error::too_long || e == address_error::non_ascii) {
    require(m.local == "untouched-local" && m.domain == "untouched.domain", "parse_mailbox wrote a refused mailbox");
    return;
  }
  require_equal(m.domain, normalize_domain(m.domain), "mailbox domain not lower-case");
  require(!m.local.empty() && m.local.size() <= 64 && m.domain.size() <= 255, "mailbox part sizes");
  if (e == address_error::ok) require(is_valid_domain(m.domain), "ok mailbox with an invalid domain");
  if (e == address_error::address_literal) {
    require(m.domain.front() == '[' && m.domain.back() == ']', "address literal without brackets");
  }
  const std::string written = to_string(m);
  require(written.size() <= path.size(), "mailbox longer than its path");
  mailbox again;
  const address_error e2 = parse_mailbox(written, again);
  require(e2 == e, "mailbox written back parses to another verdict");
  require_equal(again.local, m.local, "mailbox written back: local part");
  require_equal(again.domain, m.domain, "mailbox written back: domain");
}

void check_domain(std::string_view d) {
  if (!is_valid_domain(d)) return;
  require(d.size() <= 255 && d.find('.') != std::string_view::npos && d.front() != '.' && d.back() != '.' &&
              d.find("..") == std::string_view::npos,
          "is_valid_domain accepted a bad name");
  for (const char c : d) {
    const bool ldh = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                     c == '.';
    require(ldh, "is_valid_domain accepted a non-LDH octet");
  }
  require(is_valid_domain(normalize_domain(d)), "valid domain invalid once lower-cased");
  const std::string path = "postmaster@" + std::string(d);
  if (path.size() <= 254) {
    mailbox m;
    require(parse_mailbox(path, m) == address_error::ok, "valid domain refused in a mailbox");
    require_equal(m.domain, normalize_domain(d), "mailbox domain");
  }
}

// --- MAIL / RCPT -----------------------------------------------------------------------

void check_detail(const parse_result& r) {
  require(r.detail.empty() == (r.error == param_error::ok), "detail empty exactly on ok");
  require(is_printable(r.detail), "detail not printable ASCII");
}

void check_mail(std::string_view arg) {
  mail_args m;
  const parse_result r = parse_mail_args(arg, m);
  check_detail(r);
  if (r.error != param_error::ok) return;
  require(m.body.empty() || m.body == "7BIT" || m.body == "8BITMIME", "BODY value");
  require(m.ret.empty() || m.ret == "FULL" || m.ret == "HDRS", "RET value");
  require(m.envid.size() <= 100 && xtext_decode(m.envid).has_value(), "ENVID value");
  require(xtext_decode(m.auth).has_value(), "AUTH= value");
  if (!m.path.empty()) check_mailbox(m.path);

  // Written back canonically, the arguments parse to the same values.
  std::string again = "<" + m.path + ">";
  if (m.size) again += " SIZE=" + std::to_string(*m.size);
  if (!m.body.empty()) again += " BODY=" + m.body;
  if (!m.ret.empty()) again += " RET=" + m.ret;
  if (!m.envid.empty()) again += " ENVID=" + m.envid;
  if (!m.auth.empty()) again += " AUTH=" + m.auth;
  mail_args m2;
  const parse_result r2 = parse_mail_args(again, m2);
  require(r2.error == param_error::ok, "canonical MAIL arguments refused");
  require_equal(m2.path, m.path, "MAIL path written back");
  require(m2.size == m.size, "SIZE written back");
  require(m2.body == m.body && m2.ret == m.ret && m2.envid == m.envid && m2.auth == m.auth,
          "MAIL parameters written back");
}

bool is_notify(std::string_view v) {
  if (v == "NEVER") return true;
  if (v.empty()) return false;
  for (std::string_view rest = v;;) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    if (item != "SUCCESS" && item != "FAILURE" && item != "DELAY") return false;
    if (comma == std::string_view::npos) return true;
    rest.remove_prefix(comma + 1);
  }
}

void check_rcpt(std::string_view arg) {
  rcpt_args a;
  const parse_result r = parse_rcpt_args(arg, a);
  check_detail(r);
  if (r.error != param_error::ok) return;
  require(!a.path.empty(), "empty RCPT path accepted");
  require(a.notify.empty() || is_notify(a.notify), "NOTIFY value");
  if (!a.orcpt.empty()) {
    const auto semi = a.orcpt.find(';');
    require(a.orcpt.size() <= 500 && semi != std::string::npos && semi > 0 &&
                xtext_decode(std::string_view(a.orcpt).substr(semi + 1)).has_value(),
            "ORCPT value");
  }
  check_mailbox(a.path);

  std::string again = "<" + a.path + ">";
  if (!a.notify.empty()) again += " NOTIFY=" + a.notify;
  if (!a.orcpt.empty()) again += " ORCPT=" + a.orcpt;
  rcpt_args a2;
  const parse_result r2 = parse_rcpt_args(again, a2);
  require(r2.error == param_error::ok, "canonical RCPT arguments refused");
  require_equal(a2.path, a.path, "RCPT path written back");
  require(a2.notify == a.notify && a2.orcpt == a.orcpt, "RCPT parameters written back");
}

// --- ETRN / ATRN (the session code, smtp_session.cpp do_etrn, odmr_server.cpp do_atrn) --

void check_etrn(std::string_view arg) {
  if (arg.empty()) return;
  std::string node(arg);
  if (node[0] == '@' || node[0] == '#') node.erase(0, 1);
  check_domain(lower(node));
}

void check_atrn(std::string_view arg) {
  for (std::string_view rest = arg;;) {
    const auto comma = rest.find(',');
    check_domain(lower(rest.substr(0, comma)));
    if (comma == std::string_view::npos) return;
    rest.remove_prefix(comma + 1);
  }
}

// --- AUTH --------------------------------------------------------------------------------

void check_step(const sasl_exchange::step& s) {
  switch (s.code) {
    case 235: case 334: case 501: case 503: case 504: case 535:
      break;
    default:
      flushgate::test::fail_check("unexpected AUTH reply code", std::to_string(s.code), "235/334/501/503/504/535");
  }
  require((s.code == 334) == !s.done, "334 exactly while the exchange goes on");
  require(s.success == (s.code == 235), "success exactly with 235");
  require(is_printable(s.text) && is_printable(s.enhanced), "AUTH reply text not one printable line");
  if (s.code == 334) {
    require(s.enhanced.empty(), "334 with an enhanced code");
    require(base64_decode(s.text).has_value(), "334 text is not base64");
  } else {
    require(!s.enhanced.empty() && s.enhanced[0] == static_cast<char>('0' + s.code / 100), "enhanced code class");
  }
  if (s.success) require(password_of(s.user).has_value(), "AUTH succeeded for a user without a credential");
}

// One AUTH command and its continuation lines, as the sessions run it.
class auth_run {
 public:
  auth_run(std::string_view arg, bool tls) : exchange_(stored_credential, std::string(hostname), tls) {
    const auto space = arg.find(' ');
    cram_ = upper(arg.substr(0, space)) == "CRAM-MD5";
    finish(exchange_.start(arg));
    if (!done_ && cram_) {
      const auto decoded = base64_decode(last_.text);
      require(decoded.has_value(), "CRAM-MD5 challenge not base64");
      challenge_ = *decoded;
      require(challenge_.starts_with('<') && challenge_.ends_with("@" + std::string(hostname) + ">"),
              "CRAM-MD5 challenge not <...@hostname>");
    }
  }

  bool done() const { return done_; }

  // The client's next line.
  void respond(std::string_view line) {
    if (cram_ && line.starts_with('!')) {
      const std::string user(line.substr(1));
      const std::string password = password_of(user).value_or(user);
      const std::string answer = base64_encode(user + " " + reference_hmac_hex(password, challenge_));
      finish(exchange_.respond(answer));
      require(last_.success == password_of(user).has_value(), "right CRAM-MD5 answer: success iff the user exists");
      return;
    }
    finish(exchange_.respond(line));
  }

 private:
  void finish(const sasl_exchange::step& s) {
    check_step(s);
    last_ = s;
    done_ = s.done;
    if (done_) {
      const auto after = exchange_.respond("*");
      require(after.code == 503 && after.done && !after.success, "respond() after the end must say 503");
    }
  }

  sasl_exchange exchange_;
  sasl_exchange::step last_;
  bool cram_ = false;
  bool done_ = false;
  std::string challenge_;
};

void check_key_schedule(std::string_view password, std::string_view message) {
  const std::string stored = make_credential(password);
  require(is_credential(stored), "make_credential output is not a credential");
  require(verify_password(stored, password), "verify_password refuses its own password");
  require(!verify_password(stored, std::string(password) + "x"), "verify_password accepts another password");
  const std::string digest = reference_hmac_hex(password, message);
  require(verify_cram_md5(stored, message, digest), "verify_cram_md5 refuses OpenSSL's HMAC-MD5");
  require(verify_cram_md5(stored, message, reference_hmac_hex(password, message, true)),
          "verify_cram_md5 refuses upper-case hex");
  std::string wrong = digest;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  require(!verify_cram_md5(stored, message, wrong), "verify_cram_md5 accepts a wrong digest");
}

// --- the dialogue ------------------------------------------------------------------------

void check_command(std::string_view line) {
  const command c = parse_command(line);
  require_equal(c.name, upper(c.name), "verb name not upper-case");
  require(c.name.find(' ') == std::string::npos, "verb name holds a space");
  static constexpr std::array<std::pair<std::string_view, verb>, 16> verbs{{
      {"HELO", verb::helo}, {"EHLO", verb::ehlo}, {"MAIL", verb::mail}, {"RCPT", verb::rcpt},
      {"DATA", verb::data}, {"BDAT", verb::bdat}, {"RSET", verb::rset}, {"NOOP", verb::noop},
      {"QUIT", verb::quit}, {"VRFY", verb::vrfy}, {"EXPN", verb::expn}, {"HELP", verb::help},
      {"STARTTLS", verb::starttls}, {"AUTH", verb::auth}, {"ETRN", verb::etrn}, {"ATRN", verb::atrn},
  }};
  verb want = verb::unknown;
  for (const auto& [text, v] : verbs) {
    if (c.name == text) want = v;
  }
  require(c.v == want, "verb does not match its name");

  std::string_view stripped = line;
  if (stripped.ends_with("\r\n")) stripped.remove_suffix(2);
  if (c.missing_keyword) {
    require(c.arg.empty() && (c.v == verb::mail || c.v == verb::rcpt), "missing_keyword on another verb");
  } else {
    std::string rebuilt = c.name;
    if (stripped.find(' ') != std::string_view::npos) {
      rebuilt += ' ';
      if (c.v == verb::mail) rebuilt += "FROM:";
      if (c.v == verb::rcpt) rebuilt += "TO:";
      rebuilt += upper(c.arg);
    }
    require_equal(rebuilt, upper(stripped), "command does not rebuild its line");
  }

  const command with_crlf = parse_command(std::string(line) + "\r\n");
  require(with_crlf.v == c.v && with_crlf.name == c.name && with_crlf.arg == c.arg &&
              with_crlf.missing_keyword == c.missing_keyword,
          "a trailing CRLF changes the command");
}

// Lines as gateway::line_reader gives them: split at CRLF only; a last line
// without CRLF counts too (the fuzzer's input ends anywhere).
std::vector<std::string_view> split_lines(std::string_view in) {
  std::vector<std::string_view> lines;
  while (!in.empty()) {
    const auto end = in.find("\r\n");
    lines.push_back(in.substr(0, end));
    if (end == std::string_view::npos) break;
    in.remove_prefix(end + 2);
  }
  return lines;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto lines = split_lines(input);

  check_key_schedule(lines.empty() ? std::string_view() : lines[0].substr(0, 200),
                     lines.size() < 2 ? std::string_view() : lines[1]);

  bool tls = false;
  std::optional<auth_run> auth;
  for (const std::string_view line : lines) {
    if (auth && !auth->done()) {
      // The sessions hand AUTH continuation lines over as they are, up to 12288
      // octets with the CRLF (RFC 4954 §4); a longer one ends the exchange.
      if (line.size() + 2 > auth_line_limit) {
        auth.reset();
        continue;
      }
      check_codecs(line);
      auth->respond(line);
      continue;
    }
    if (line.size() + 2 > command_line_limit) continue;  // the sessions say 500 and never parse it
    check_command(line);
    if (line.find_first_of("\r\n") != std::string_view::npos) continue;  // refused by the sessions: 500
    const command c = parse_command(line);
    switch (c.v) {
      case verb::mail:
        check_codecs(c.arg);
        check_mail(c.arg);
        break;
      case verb::rcpt:
        check_codecs(c.arg);
        check_rcpt(c.arg);
        break;
      case verb::etrn:
        check_etrn(c.arg);
        break;
      case verb::atrn:
        if (!c.arg.empty()) check_atrn(c.arg);
        break;
      case verb::auth:
        check_codecs(c.arg);
        if (!c.arg.empty()) auth.emplace(c.arg, tls);  // without an argument the session says 501 itself
        break;
      case verb::starttls:
        tls = true;
        break;
      case verb::helo:
      case verb::ehlo:
        check_domain(c.arg);
        break;
      default:
        break;
    }
  }
  return 0;
}
