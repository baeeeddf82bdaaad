// console_session.cpp — see console_session.hpp.
#include "control/console_session.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <stdexcept>

namespace flushgate::control {

std::string console_session::log_name() const { return "s:" + id.substr(0, 8); }

std::string random_token() {
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("no random bytes from OpenSSL");
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * sizeof raw);
  for (unsigned char b : raw) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  // Walk the longer one whole, so a short guess costs as long as a right one.
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const char x = i < a.size() ? a[i] : '\0';
    const char y = i < b.size() ? b[i] : '\0';
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

bool once_per(std::atomic<std::int64_t>& last, std::int64_t now, std::int64_t seconds) {
  std::int64_t previous = last.load();
  while (now - previous >= seconds) {
    if (last.compare_exchange_weak(previous, now)) return true;
  }
  return false;
}

bool console_sessions::expired(const console_session& s, clock::time_point now) const {
  return now - s.last_used >= limits_.idle || now - s.created >= limits_.lifetime;
}

console_session console_sessions::open(const std::string& remote, clock::time_point now) {
  console_session s{random_token(), random_token(), remote, now, now};
  std::lock_guard lock(mutex_);
  std::erase_if(sessions_, [&](const auto& kv) { return expired(kv.second, now); });
  while (!sessions_.empty() && sessions_.size() >= limits_.max_sessions) {
    auto oldest = std::min_element(sessions_.begin(), sessions_.end(), [](const auto& a, const auto& b) {
      return a.second.last_used < b.second.last_used;
    });
    sessions_.erase(oldest);
  }
  sessions_.emplace(s.id, s);
  return s;
}

std::optional<console_session> console_sessions::find(std::string_view id, clock::time_point now) {
  // Ids are fixed-length hex: anything else cannot be one, and never
  // reaches the map (whose lookup is not constant time).
  if (id.size() != 64 || id.find_first_not_of("0123456789abcdef") != std::string_view::npos) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  if (expired(it->second, now)) {
    sessions_.erase(it);
    return std::nullopt;
  }
  it->second.last_used = now;
  return it->second;
}

void console_sessions::close(std::string_view id) {
  std::lock_guard lock(mutex_);
  if (auto it = sessions_.find(id); it != sessions_.end()) sessions_.erase(it);
}

std::size_t console_sessions::size() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

std::string cookie_value(std::string_view header, std::string_view name) {
  // "a=1; b=2": pairs separated by ';', optional spaces (RFC 6265 §4.2.1).
  while (!header.empty()) {
    const auto semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view{} : header.substr(semi + 1);
    while (!pair.empty() && (pair.front() == ' ' || pair.front() == '\t')) pair.remove_prefix(1);
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos || pair.substr(0, eq) != name) continue;
    std::string_view value = pair.substr(eq + 1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    return std::string(value);
  }
  return {};
}

std::string session_cookie(std::string_view name, std::string_view id, std::chrono::seconds max_age) {
  return std::string(name) + "=" + std::string(id) + "; Max-Age=" + std::to_string(max_age.count()) +
         "; Path=/; HttpOnly; SameSite=Strict";
}

namespace {

// "host:port" of an http(s) URL or origin, or "" when it is neither.
std::string_view authority_of(std::string_view url) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (url.substr(0, scheme.size()) == scheme) {
      url.remove_prefix(scheme.size());
      return url.substr(0, url.find_first_of("/?#"));
    }
  }
  return {};
}

}  // namespace

bool same_origin_post(std::string_view origin, std::string_view referer, std::string_view host) {
  if (host.empty()) return false;
  // Origin is what browsers send with every POST; Referer only stands in
  // when there is no Origin at all (an old browser). "null" (a sandboxed
  // frame, a file: page, a redirect across origins) is no origin of ours.
  if (!origin.empty()) {
    const std::string h(host);
    return origin == "http://" + h || origin == "https://" + h;
  }
  if (!referer.empty()) return authority_of(referer) == host;
  return false;
}

}  // namespace flushgate::control
