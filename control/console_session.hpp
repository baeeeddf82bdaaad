// console_session.hpp — the operator console's logins: server-side
// sessions, their CSRF tokens, and the checks every console POST passes.
//
// Purpose: an operator proves once, with the admin token, that they may act
// (control/console.cpp's login form); the console then knows the browser by
// a random session id in a cookie. Each session carries its own CSRF token,
// written into every form the console renders and compared on every POST.
// Security: ids and CSRF tokens are 32 random bytes from OpenSSL (64 hex
// characters), compared in constant time; a session ends after `idle`
// without use or `lifetime` after login, whichever comes first; at most
// `max_sessions` live at once (a new login pushes out the least recently
// used). The cookie is HttpOnly, SameSite=Strict, Path=/. A POST must come
// from a page of this server: its Origin (or, without one, its Referer)
// must name the Host the request was sent to; a request with neither is
// refused too. Only the first 8 characters of an id ever reach the log.
// Errors: none thrown; lookups give std::nullopt, checks give false.
// Limitations: sessions live in memory: a restart of the daemon logs
// everyone out, and each node of a cluster has its own sessions.
// See also: RFC 6265bis (SameSite), OWASP CSRF prevention (synchroniser
// token, origin verification), RFC 6454 (origins).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace flushgate::control {

struct console_session {
  std::string id;      // the cookie value
  std::string csrf;    // the token every form of this session carries
  std::string remote;  // the address that logged in, for the log
  std::chrono::steady_clock::time_point created;
  std::chrono::steady_clock::time_point last_used;

  // What the log shows of the session: "s:" and the first 8 characters of the id.
  std::string log_name() const;
};

struct console_session_limits {
  std::chrono::seconds idle{30 * 60};       // logged out after this long without a request
  std::chrono::seconds lifetime{8 * 3600};  // and this long after logging in, whatever happens
  std::size_t max_sessions = 32;            // live at once
};

// The live sessions; safe to use from several threads.
class console_sessions {
 public:
  using clock = std::chrono::steady_clock;
  explicit console_sessions(console_session_limits limits = {}) : limits_(limits) {}

  // A new session for `remote`; the least recently used one goes when full.
  console_session open(const std::string& remote, clock::time_point now = clock::now());
  // The session with this id, if it is live (and marks it used); expired ones are dropped.
  std::optional<console_session> find(std::string_view id, clock::time_point now = clock::now());
  // Ends the session with this id (nothing if there is none).
  void close(std::string_view id);
  // Sessions live now (expired ones not yet swept may count).
  std::size_t size() const;
  const console_session_limits& limits() const noexcept { return limits_; }

 private:
  bool expired(const console_session& s, clock::time_point now) const;

  console_session_limits limits_;
  mutable std::mutex mutex_;
  std::map<std::string, console_session, std::less<>> sessions_;
};

// 32 random bytes as 64 lower-case hex characters (OpenSSL RAND_bytes); throws only if it has none.
std::string random_token();

// True when `a` and `b` are equal; the time taken depends only on their lengths.
bool same_secret(std::string_view a, std::string_view b);

// True at most once per `seconds` (unix time `now`; `last` is the time it
// was last true): for a log line a peer can trigger at will. Later calls in
// the quiet time do not move it on, so a steady guesser is logged every
// `seconds`, not once ever.
bool once_per(std::atomic<std::int64_t>& last, std::int64_t now, std::int64_t seconds);

// The value of cookie `name` in a Cookie header ("" when absent).
std::string cookie_value(std::string_view cookie_header, std::string_view name);

// The Set-Cookie value that stores `id` for `max_age` (HttpOnly, SameSite=Strict, Path=/).
std::string session_cookie(std::string_view name, std::string_view id, std::chrono::seconds max_age);

// True when a POST with these Origin and Referer headers comes from a page
// of the server the browser addressed as `host` (the Host header): the
// origin's host[:port] must be `host` exactly (scheme http or https — a
// TLS proxy may sit in front). "null", a foreign origin or neither header: false.
bool same_origin_post(std::string_view origin, std::string_view referer, std::string_view host);

}  // namespace flushgate::control
