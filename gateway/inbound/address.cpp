// address.cpp — see address.hpp.
#include "gateway/inbound/address.hpp"

#include <arpa/inet.h>

#include <cstddef>

namespace flushgate::gateway {
namespace {

// RFC 5321 §4.5.3.1.1-3.
constexpr std::size_t max_local = 64;
constexpr std::size_t max_domain = 255;
constexpr std::size_t max_path_inside = 256 - 2;  // the 256 include '<' and '>'

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_let_dig(char c) { return is_alpha(c) || is_digit(c); }

// atext, RFC 5322 §3.2.3 (used by RFC 5321 Atom).
bool is_atext(char c) {
  if (is_let_dig(c)) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '/': case '=': case '?': case '^': case '_':
    case '`': case '{': case '|': case '}': case '~':
      return true;
    default:
      return false;
  }
}

// qtextSMTP = %d32-33 / %d35-91 / %d93-126.
bool is_qtext(char c) { return c >= 32 && c <= 126 && c != '"' && c != '\\'; }

// Ldh-str as used by a Standardized-tag: let-dig, with '-' only inside.
bool is_ldh_str(std::string_view s) {
  if (s.empty() || !is_let_dig(s.front()) || !is_let_dig(s.back())) return false;
  for (const char c : s) {
    if (!is_let_dig(c) && c != '-') return false;
  }
  return true;
}

// IPv4-address-literal = Snum 3("." Snum), Snum = 1*3DIGIT in 0..255.
bool is_ipv4_literal(std::string_view s) {
  int parts = 0;
  std::size_t i = 0;
  while (true) {
    std::size_t digits = 0;
    int value = 0;
    while (i < s.size() && is_digit(s[i]) && digits < 4) {
      value = value * 10 + (s[i] - '0');
      ++digits;
      ++i;
    }
    if (digits == 0 || digits > 3 || value > 255) return false;
    ++parts;
    if (i == s.size()) return parts == 4;
    if (s[i] != '.' || parts == 4) return false;
    ++i;
  }
}

bool iequals_prefix(std::string_view s, std::string_view lower_prefix) {
  if (s.size() < lower_prefix.size()) return false;
  for (std::size_t i = 0; i < lower_prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower_prefix[i]) return false;
  }
  return true;
}

// address-literal = "[" ( IPv4 / "IPv6:" IPv6 / Standardized-tag ":" 1*dcontent ) "]"
// (RFC 5321 §4.1.3). `s` is the text between the brackets.
bool is_address_literal_body(std::string_view s) {
  if (is_ipv4_literal(s)) return true;
  if (iequals_prefix(s, "ipv6:")) {
    const std::string text(s.substr(5));
    in6_addr addr{};
    return !text.empty() && inet_pton(AF_INET6, text.c_str(), &addr) == 1;
  }
  const auto colon = s.find(':');
  if (colon == std::string_view::npos || !is_ldh_str(s.substr(0, colon))) return false;
  const auto content = s.substr(colon + 1);
  if (content.empty()) return false;
  for (const char c : content) {
    // dcontent = %d33-90 / %d94-126 (no '[', '\', ']').
    if (!((c >= 33 && c <= 90) || (c >= 94 && c <= 126))) return false;
  }
  return true;
}

}  // namespace

bool is_valid_domain(std::string_view d) {
  if (d.empty() || d.size() > max_domain) return false;
  std::size_t labels = 0;
  std::size_t start = 0;
  while (true) {
    const auto dot = d.find('.', start);
    const auto label = d.substr(start, dot == std::string_view::npos ? d.size() - start : dot - start);
    if (label.empty() || label.size() > 63 || !is_ldh_str(label)) return false;
    ++labels;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return labels >= 2;
}

std::string normalize_domain(std::string_view d) {
  std::string out(d);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string to_string(const mailbox& m) { return m.local + "@" + m.domain; }

address_error parse_mailbox(std::string_view path, mailbox& out) {
  // 1. Cheap global checks first: length, then SMTPUTF8-only octets.
  if (path.size() > max_path_inside) return address_error::too_long;
  for (const char c : path) {
    if (static_cast<unsigned char>(c) > 0x7F) return address_error::non_ascii;
  }

  // 2. Source route A-d-l = At-domain *( "," At-domain ) ":" — checked, then
  //    dropped (RFC 5321 §4.1.2: "MUST accept ... SHOULD ignore the route").
  std::size_t pos = 0;
  if (!path.empty() && path[0] == '@') {
    while (true) {
      if (pos >= path.size() || path[pos] != '@') return address_error::syntax;
      const auto end = path.find_first_of(",:", pos + 1);
      if (end == std::string_view::npos) return address_error::syntax;
      if (!is_valid_domain(path.substr(pos + 1, end - pos - 1))) return address_error::syntax;
      pos = end + 1;
      if (path[end] == ':') break;
    }
  }

  // 3. Local-part = Dot-string / Quoted-string.
  const std::size_t local_start = pos;
  bool routing = false;
  if (pos < path.size() && path[pos] == '"') {
    ++pos;
    while (true) {
      if (pos >= path.size()) return address_error::syntax;
      const char c = path[pos];
      if (c == '"') {
        ++pos;
        break;
      }
      char quoted = c;
      if (c == '\\') {
        // quoted-pairSMTP = %d92 %d32-126
        if (pos + 1 >= path.size() || path[pos + 1] < 32 || path[pos + 1] > 126) {
          return address_error::syntax;
        }
        quoted = path[pos + 1];
        pos += 2;
      } else if (is_qtext(c)) {
        ++pos;
      } else {
        return address_error::syntax;
      }
      if (quoted == '@' || quoted == '%' || quoted == '!') routing = true;
    }
  } else {
    // Dot-string = Atom *("." Atom): no empty atom, so no leading, trailing or
    // doubled dot.
    bool atom_empty = true;
    while (pos < path.size() && path[pos] != '@') {
      const char c = path[pos];
      if (c == '.') {
        if (atom_empty) return address_error::syntax;
        atom_empty = true;
      } else if (is_atext(c)) {
        atom_empty = false;
        if (c == '%' || c == '!') routing = true;
      } else {
        return address_error::syntax;
      }
      ++pos;
    }
    if (atom_empty) return address_error::syntax;
  }
  const auto local = path.substr(local_start, pos - local_start);

  // 4. "@" Domain / address-literal.
  if (pos >= path.size() || path[pos] != '@') return address_error::syntax;
  const auto domain = path.substr(pos + 1);
  if (local.size() > max_local || domain.size() > max_domain) return address_error::too_long;
  bool literal = false;
  if (!domain.empty() && domain.front() == '[') {
    if (domain.size() < 3 || domain.back() != ']' ||
        !is_address_literal_body(domain.substr(1, domain.size() - 2))) {
      return address_error::syntax;
    }
    literal = true;
  } else if (!is_valid_domain(domain)) {
    return address_error::syntax;
  }

  out.local = std::string(local);
  out.domain = normalize_domain(domain);
  if (routing) return address_error::routing_chars;
  if (literal) return address_error::address_literal;
  return address_error::ok;
}

}  // namespace flushgate::gateway
