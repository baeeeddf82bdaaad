// smtp_command.cpp — see smtp_command.hpp.
#include "gateway/inbound/smtp_command.hpp"

#include "gateway/xtext.hpp"

#include <array>
#include <limits>
#include <utility>

namespace flushgate::gateway {
namespace {

constexpr std::size_t max_envid = 100;  // RFC 3461 §4.4
constexpr std::size_t max_orcpt = 500;  // RFC 3461 §4.2
constexpr std::size_t max_size_digits = 20;

char to_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_upper(c);
  return out;
}

bool iequals(std::string_view a, std::string_view upper_b) {
  if (a.size() != upper_b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (to_upper(a[i]) != upper_b[i]) return false;
  }
  return true;
}

bool istarts_with(std::string_view s, std::string_view upper_prefix) {
  return s.size() >= upper_prefix.size() && iequals(s.substr(0, upper_prefix.size()), upper_prefix);
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

constexpr std::array<std::pair<std::string_view, verb>, 16> verbs{{
    {"HELO", verb::helo}, {"EHLO", verb::ehlo}, {"MAIL", verb::mail}, {"RCPT", verb::rcpt},
    {"DATA", verb::data}, {"BDAT", verb::bdat}, {"RSET", verb::rset}, {"NOOP", verb::noop},
    {"QUIT", verb::quit}, {"VRFY", verb::vrfy}, {"EXPN", verb::expn}, {"HELP", verb::help},
    {"STARTTLS", verb::starttls}, {"AUTH", verb::auth}, {"ETRN", verb::etrn}, {"ATRN", verb::atrn},
}};

parse_result fail(param_error e, std::string detail) { return {e, std::move(detail)}; }

// Extracts the path "<...>" at the start of `arg` (after at most one SP, a
// common client bug we tolerate), returning the rest (the parameters).
// A '>' inside a quoted local part does not end the path.
parse_result split_path(std::string_view arg, std::string& path, std::string_view& rest) {
  if (!arg.empty() && arg.front() == ' ') arg.remove_prefix(1);
  if (arg.empty() || arg.front() != '<') return fail(param_error::syntax, "Syntax: path must be in angle brackets");
  bool quoted = false;
  std::size_t end = std::string_view::npos;
  for (std::size_t i = 1; i < arg.size(); ++i) {
    const char c = arg[i];
    if (quoted && c == '\\') {
      ++i;  // quoted-pair: skip the escaped octet
    } else if (c == '"') {
      quoted = !quoted;
    } else if (!quoted && c == '>') {
      end = i;
      break;
    }
  }
  if (end == std::string_view::npos) return fail(param_error::syntax, "Syntax: path must be in angle brackets");
  path.assign(arg.substr(1, end - 1));
  rest = arg.substr(end + 1);
  if (!rest.empty() && rest.front() != ' ') return fail(param_error::syntax, "Syntax: SP required after the path");
  return {};
}

// Splits the next "KEYWORD[=VALUE]" off `rest` (space separated). Checks the
// RFC 5321 §4.1.2 grammar: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT /
// "-"), esmtp-value = 1*(%d33-60 / %d62-126). Returns false at the end.
bool next_param(std::string_view& rest, std::string_view& key, std::optional<std::string_view>& value,
                parse_result& result) {
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  if (rest.empty()) return false;
  const auto sp = rest.find(' ');
  const auto token = rest.substr(0, sp);
  rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp);
  const auto eq = token.find('=');
  key = token.substr(0, eq);
  value.reset();
  if (eq != std::string_view::npos) value = token.substr(eq + 1);
  bool ok = !key.empty() && is_alnum(key.front());
  for (const char c : key) ok = ok && (is_alnum(c) || c == '-');
  if (value) {
    ok = ok && !value->empty();
    for (const char c : *value) ok = ok && c >= 33 && c <= 126 && c != '=';
  }
  if (!ok) result = fail(param_error::syntax, "Syntax: bad ESMTP parameter");
  return true;
}

bool is_xtext(std::string_view v) { return xtext_decode(v).has_value(); }

// addr-type is an RFC 822 atom.
bool is_atom(std::string_view v) {
  if (v.empty()) return false;
  for (const char c : v) {
    if (c <= 32 || c >= 127) return false;
    switch (c) {
      case '(': case ')': case '<': case '>': case '@': case ',': case ';': case ':':
      case '\\': case '"': case '.': case '[': case ']':
        return false;
      default:
        break;
    }
  }
  return true;
}

bool parse_size(std::string_view v, std::uint64_t& out) {
  if (v.empty() || v.size() > max_size_digits) return false;
  std::uint64_t n = 0;
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  for (const char c : v) {
    if (c < '0' || c > '9') return false;
    const auto d = static_cast<std::uint64_t>(c - '0');
    n = (n > (max - d) / 10) ? max : n * 10 + d;  // saturate: "too big" either way
  }
  out = n;
  return true;
}

// NOTIFY = "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ), RFC 3461 §4.1.
bool parse_notify(std::string_view v, std::string& out) {
  out = upper(v);
  if (out == "NEVER") return true;
  bool seen[3] = {false, false, false};
  std::string_view rest = out;
  while (true) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    int index = -1;
    if (item == "SUCCESS") index = 0;
    if (item == "FAILURE") index = 1;
    if (item == "DELAY") index = 2;
    if (index < 0 || seen[index]) return false;
    seen[index] = true;
    if (comma == std::string_view::npos) return true;
    rest = rest.substr(comma + 1);
  }
}

}  // namespace

command parse_command(std::string_view line) {
  if (line.size() >= 2 && line.substr(line.size() - 2) == "\r\n") line.remove_suffix(2);
  command cmd;
  const auto sp = line.find(' ');
  cmd.name = upper(line.substr(0, sp));
  if (sp != std::string_view::npos) cmd.arg.assign(line.substr(sp + 1));
  for (const auto& [text, v] : verbs) {
    if (cmd.name == text) {
      cmd.v = v;
      break;
    }
  }
  // RFC 5321 §4.1.1.2-3: "MAIL FROM:" and "RCPT TO:" — the keyword is part of
  // the command, not of the argument.
  const std::string_view keyword = cmd.v == verb::mail ? "FROM:" : cmd.v == verb::rcpt ? "TO:" : "";
  if (!keyword.empty()) {
    if (istarts_with(cmd.arg, keyword)) {
      cmd.arg.erase(0, keyword.size());
    } else {
      cmd.arg.clear();
      cmd.missing_keyword = true;
    }
  }
  return cmd;
}

parse_result parse_mail_args(std::string_view arg, mail_args& out) {
  out = {};
  std::string_view rest;
  if (auto r = split_path(arg, out.path, rest); r.error != param_error::ok) return r;
  bool have_body = false, have_ret = false, have_envid = false, have_auth = false;
  std::string_view key;
  std::optional<std::string_view> value;
  parse_result result;
  while (next_param(rest, key, value, result)) {
    if (result.error != param_error::ok) return result;
    const std::string k = upper(key);
    bool* seen = nullptr;
    if (k == "SIZE") {
      if (out.size) return fail(param_error::duplicate, "Duplicate SIZE parameter");
      std::uint64_t n = 0;
      if (!value || !parse_size(*value, n)) return fail(param_error::bad_value, "Bad SIZE value");
      out.size = n;
      continue;
    }
    if (k == "BODY") seen = &have_body;
    else if (k == "RET") seen = &have_ret;
    else if (k == "ENVID") seen = &have_envid;
    else if (k == "AUTH") seen = &have_auth;
    else return fail(param_error::unknown_param, "Unsupported MAIL parameter");
    if (*seen) return fail(param_error::duplicate, "Duplicate " + k + " parameter");
    *seen = true;
    if (!value) return fail(param_error::bad_value, k + " requires a value");
    const std::string v = upper(*value);
    if (k == "BODY") {
      // RFC 6152 §2; BINARYMIME (RFC 3030) needs CHUNKING, which we do not offer.
      if (v != "7BIT" && v != "8BITMIME") return fail(param_error::bad_value, "Unsupported BODY type");
      out.body = v;
    } else if (k == "RET") {
      if (v != "FULL" && v != "HDRS") return fail(param_error::bad_value, "Bad RET value");
      out.ret = v;
    } else if (k == "ENVID") {
      if (value->size() > max_envid || !is_xtext(*value)) return fail(param_error::bad_value, "Bad ENVID value");
      out.envid.assign(*value);
    } else {
      // RFC 4954 §5: AUTH=<> or AUTH=xtext(mailbox).
      if (!is_xtext(*value)) return fail(param_error::bad_value, "Bad AUTH value");
      out.auth.assign(*value);
    }
  }
  return {};
}

parse_result parse_rcpt_args(std::string_view arg, rcpt_args& out) {
  out = {};
  std::string_view rest;
  if (auto r = split_path(arg, out.path, rest); r.error != param_error::ok) return r;
  if (out.path.empty()) return fail(param_error::syntax, "Syntax: empty recipient path");
  bool have_notify = false, have_orcpt = false;
  std::string_view key;
  std::optional<std::string_view> value;
  parse_result result;
  while (next_param(rest, key, value, result)) {
    if (result.error != param_error::ok) return result;
    const std::string k = upper(key);
    if (k == "NOTIFY") {
      if (have_notify) return fail(param_error::duplicate, "Duplicate NOTIFY parameter");
      have_notify = true;
      if (!value || !parse_notify(*value, out.notify)) return fail(param_error::bad_value, "Bad NOTIFY value");
    } else if (k == "ORCPT") {
      if (have_orcpt) return fail(param_error::duplicate, "Duplicate ORCPT parameter");
      have_orcpt = true;
      // RFC 3461 §4.2: ORCPT=addr-type ";" xtext, at most 500 characters.
      const auto semi = value ? value->find(';') : std::string_view::npos;
      if (semi == std::string_view::npos || value->size() > max_orcpt || !is_atom(value->substr(0, semi)) ||
          semi + 1 == value->size() || !is_xtext(value->substr(semi + 1))) {
        return fail(param_error::bad_value, "Bad ORCPT value");
      }
      out.orcpt.assign(*value);
    } else {
      return fail(param_error::unknown_param, "Unsupported RCPT parameter");
    }
  }
  return {};
}

}  // namespace flushgate::gateway
