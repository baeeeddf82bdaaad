// console_session_test.cpp — the console's sessions and the checks every
// POST passes: ids, expiry, the bound on live sessions, cookies, origins.
#include "control/console_session.hpp"

#include <gtest/gtest.h>

#include <set>

namespace {

using namespace flushgate::control;
using namespace std::chrono_literals;

TEST(ConsoleSessions, OpenGivesDistinctRandomIdsAndTokens) {
  console_sessions sessions;
  const auto t = std::chrono::steady_clock::now();
  std::set<std::string> seen;
  for (int i = 0; i < 20; ++i) {
    const auto s = sessions.open("127.0.0.1:1", t);
    EXPECT_EQ(s.id.size(), 64u) << "got an id of " << s.id.size() << " characters, want 64";
    EXPECT_EQ(s.csrf.size(), 64u) << "got a CSRF token of " << s.csrf.size() << " characters, want 64";
    EXPECT_NE(s.id, s.csrf) << "got the id as the CSRF token, want two secrets";
    EXPECT_TRUE(seen.insert(s.id).second) << "got id " << s.id << " twice, want each new";
    EXPECT_TRUE(seen.insert(s.csrf).second) << "got token " << s.csrf << " twice, want each new";
  }
  EXPECT_EQ(sessions.open("a", t).log_name().size(), 10u) << "got a log name longer than s: + 8 characters";
}

TEST(ConsoleSessions, FindsALiveSessionAndNothingElse) {
  console_sessions sessions;
  const auto t = std::chrono::steady_clock::now();
  const auto s = sessions.open("127.0.0.1:1", t);
  auto found = sessions.find(s.id, t + 1s);
  ASSERT_TRUE(found.has_value()) << "got no session for its own id, want it";
  EXPECT_EQ(found->csrf, s.csrf) << "got token " << found->csrf << ", want " << s.csrf;
  std::string wrong = s.id;
  wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
  EXPECT_FALSE(sessions.find(wrong, t)) << "got a session for a changed id, want none";
  EXPECT_FALSE(sessions.find("", t)) << "got a session for an empty id, want none";
  EXPECT_FALSE(sessions.find(s.id.substr(0, 63), t)) << "got a session for a cut id, want none";
  EXPECT_FALSE(sessions.find(std::string(64, 'Z'), t)) << "got a session for a non-hex id, want none";
}

TEST(ConsoleSessions, EndAfterIdleTimeAndAfterLifetime) {
  console_sessions sessions({.idle = 60s, .lifetime = 300s, .max_sessions = 8});
  const auto t = std::chrono::steady_clock::now();
  const auto idle = sessions.open("a", t);
  EXPECT_TRUE(sessions.find(idle.id, t + 59s)) << "got a session ended before its idle time, want it live";
  EXPECT_FALSE(sessions.find(idle.id, t + 59s + 60s)) << "got a session live after 60 s idle, want it ended";
  // Used every 50 s, it still ends at its lifetime.
  const auto busy = sessions.open("b", t);
  for (int i = 1; i <= 5; ++i) {
    EXPECT_TRUE(sessions.find(busy.id, t + i * 50s)) << "got a busy session ended at " << i * 50 << " s";
  }
  EXPECT_FALSE(sessions.find(busy.id, t + 300s)) << "got a session live at its lifetime, want it ended";
}

TEST(ConsoleSessions, ANewLoginPushesOutTheLeastRecentlyUsedWhenFull) {
  console_sessions sessions({.idle = 3600s, .lifetime = 7200s, .max_sessions = 3});
  const auto t = std::chrono::steady_clock::now();
  const auto a = sessions.open("a", t);
  const auto b = sessions.open("b", t + 1s);
  const auto c = sessions.open("c", t + 2s);
  ASSERT_TRUE(sessions.find(a.id, t + 3s)) << "got no session a";  // a is now the most recent
  const auto d = sessions.open("d", t + 4s);
  EXPECT_EQ(sessions.size(), 3u) << "got " << sessions.size() << " sessions, want the bound 3";
  EXPECT_FALSE(sessions.find(b.id, t + 5s)) << "got b still live, want it pushed out (least recently used)";
  EXPECT_TRUE(sessions.find(a.id, t + 5s)) << "got a pushed out, want it kept";
  EXPECT_TRUE(sessions.find(c.id, t + 5s)) << "got c pushed out, want it kept";
  EXPECT_TRUE(sessions.find(d.id, t + 5s)) << "got no new session d, want it";
}

TEST(ConsoleSessions, CloseEndsTheSession) {
  console_sessions sessions;
  const auto s = sessions.open("a");
  sessions.close(s.id);
  EXPECT_FALSE(sessions.find(s.id)) << "got a session after close(), want none";
}

TEST(ConsoleSecrets, SameSecretComparesWholeValues) {
  EXPECT_TRUE(same_secret("abc", "abc"));
  EXPECT_FALSE(same_secret("abc", "abd"));
  EXPECT_FALSE(same_secret("abc", "ab")) << "got a prefix accepted, want it refused";
  EXPECT_FALSE(same_secret("", "abc")) << "got an empty token accepted, want it refused";
  EXPECT_FALSE(same_secret("abcd", "abc")) << "got a longer token accepted, want it refused";
}

TEST(ConsoleCookies, ReadsOneCookieOfMany) {
  EXPECT_EQ(cookie_value("fg_console=abc", "fg_console"), "abc");
  EXPECT_EQ(cookie_value("a=1; fg_console=xyz; b=2", "fg_console"), "xyz");
  EXPECT_EQ(cookie_value("a=1;fg_console=xyz", "fg_console"), "xyz");
  EXPECT_EQ(cookie_value("xfg_console=1; a=2", "fg_console"), "") << "got a cookie by a name's suffix";
  EXPECT_EQ(cookie_value("", "fg_console"), "");
  EXPECT_EQ(cookie_value("fg_console", "fg_console"), "") << "got a value for a pair without '='";
}

TEST(ConsoleCookies, SessionCookieIsHttpOnlyStrictAndBounded) {
  const auto c = session_cookie("fg_console", "abc", 3600s);
  for (const char* want : {"fg_console=abc", "Max-Age=3600", "Path=/", "HttpOnly", "SameSite=Strict"}) {
    EXPECT_NE(c.find(want), std::string::npos) << "got cookie \"" << c << "\", want " << want << " in it";
  }
}

TEST(ConsoleOrigin, AcceptsOnlyThisServersOrigin) {
  const std::string host = "127.0.0.1:8025";
  EXPECT_TRUE(same_origin_post("http://127.0.0.1:8025", "", host));
  EXPECT_TRUE(same_origin_post("https://127.0.0.1:8025", "", host)) << "got a TLS proxy's origin refused";
  EXPECT_TRUE(same_origin_post("", "http://127.0.0.1:8025/console/customer?name=a", host));
  EXPECT_FALSE(same_origin_post("http://127.0.0.1:9999", "", host)) << "got another port's page accepted";
  EXPECT_FALSE(same_origin_post("http://evil.test", "http://127.0.0.1:8025/console/", host))
      << "got a foreign Origin accepted because the Referer looked right";
  EXPECT_FALSE(same_origin_post("null", "", host)) << "got Origin: null accepted";
  EXPECT_FALSE(same_origin_post("", "", host)) << "got a POST with neither Origin nor Referer accepted";
  EXPECT_FALSE(same_origin_post("http://127.0.0.1:8025.evil.test", "", host)) << "got a look-alike accepted";
  EXPECT_FALSE(same_origin_post("", "http://127.0.0.1:80250/", host)) << "got a look-alike Referer accepted";
  EXPECT_FALSE(same_origin_post("http://127.0.0.1:8025", "", "")) << "got a POST without Host accepted";
  EXPECT_FALSE(same_origin_post("ftp://127.0.0.1:8025", "", host));
}

TEST(OncePer, CallsInTheQuietTimeDoNotMoveItOn) {
  std::atomic<std::int64_t> last{0};
  EXPECT_TRUE(once_per(last, 100, 10));
  EXPECT_FALSE(once_per(last, 105, 10));
  EXPECT_FALSE(once_per(last, 109, 10)) << "got the quiet time restarted by a call in it";
  EXPECT_TRUE(once_per(last, 110, 10)) << "got a steady caller silenced, want it logged every 10 s";
}

}  // namespace
