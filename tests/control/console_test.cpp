// console_test.cpp — the operator console's request handling without
// sockets: a fake command runner records what the console asks for, so
// the tests see exactly which requests reach a command and which are
// refused (no session, foreign origin, missing or wrong CSRF token, no
// confirmation), plus the form parser's bounds and the customer form.
#include "control/console.hpp"
#include "control/console_pages.hpp"

#include <Poco/JSON/Array.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using namespace flushgate::control;
using Poco::JSON::Object;

constexpr const char* token = "console-test-token-0123456789abcdef";
constexpr const char* host = "127.0.0.1:8025";
constexpr const char* origin = "http://127.0.0.1:8025";

std::string header(const console_response& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return {};
}

class ConsoleHandler : public ::testing::Test {
 protected:
  // Every command "succeeds" with an empty object; calls are recorded.
  command_result run(const std::string& name, Object::Ptr args) {
    calls_.push_back(name);
    last_args_ = args;
    Object::Ptr out = new Object;
    if (name == "queue.show") out->set("customer", "acme");
    return command_result::success(out);
  }
  command_runner runner() {
    return [this](const std::string& n, Object::Ptr a) { return run(n, std::move(a)); };
  }

  console_response request(const std::string& method, const std::string& target, const std::string& body,
                           const std::string& cookie, const std::string& from = origin) {
    console_request r{method, target, body, cookie, from, "", host, "127.0.0.1:40000"};
    return console_.handle(r, runner());
  }

  // Logs in; the cookie header to send from now on.
  std::string log_in() {
    auto r = request("POST", "/console/login", std::string("token=") + token, "");
    EXPECT_EQ(r.status, 303) << "login: got " << r.status << ", want 303";
    const std::string set = header(r, "Set-Cookie");
    return set.substr(0, set.find(';'));
  }

  // The CSRF token of the session: read from a page's form.
  std::string csrf_of(const std::string& cookie) {
    auto r = request("GET", "/console/new", "", cookie);
    const std::string marker = "name=\"csrf\" value=\"";
    const auto at = r.body.find(marker);
    if (at == std::string::npos) return {};
    return r.body.substr(at + marker.size(), 64);
  }

  console console_{token};
  std::vector<std::string> calls_;
  Object::Ptr last_args_;
};

TEST_F(ConsoleHandler, PagesNeedALoginAndEveryAnswerCarriesTheCsp) {
  auto r = request("GET", "/console/", "", "");
  EXPECT_EQ(r.status, 303) << "got " << r.status << " without a session, want a redirect to the login";
  EXPECT_EQ(header(r, "Location"), "/console/login");
  EXPECT_NE(header(r, "Content-Security-Policy").find("default-src 'none'"), std::string::npos);
  EXPECT_NE(header(r, "Content-Security-Policy").find("form-action 'self'"), std::string::npos);
  EXPECT_EQ(header(r, "X-Frame-Options"), "DENY");
  EXPECT_TRUE(calls_.empty()) << "got a command run without a session, want none";
}

TEST_F(ConsoleHandler, WrongTokenGivesNoSession) {
  auto r = request("POST", "/console/login", "token=not-the-token", "");
  EXPECT_EQ(r.status, 401) << "got " << r.status << " for a wrong token, want 401";
  EXPECT_EQ(header(r, "Set-Cookie"), "") << "got a cookie for a wrong token, want none";
  EXPECT_EQ(console_.sessions().size(), 0u);
}

TEST_F(ConsoleHandler, LoginFromAForeignPageIsRefused) {
  auto r = request("POST", "/console/login", std::string("token=") + token, "", "http://evil.test");
  EXPECT_EQ(r.status, 403) << "got " << r.status << " for a login posted from another origin, want 403";
  EXPECT_EQ(console_.sessions().size(), 0u);
}

TEST_F(ConsoleHandler, LoginSetsAStrictHttpOnlyCookie) {
  auto r = request("POST", "/console/login", std::string("token=") + token, "");
  const std::string set = header(r, "Set-Cookie");
  EXPECT_NE(set.find("HttpOnly"), std::string::npos) << "got cookie " << set;
  EXPECT_NE(set.find("SameSite=Strict"), std::string::npos) << "got cookie " << set;
  EXPECT_NE(set.find("Path=/"), std::string::npos) << "got cookie " << set;
}

TEST_F(ConsoleHandler, PostWithoutTheCsrfTokenIsRefused) {
  const auto cookie = log_in();
  calls_.clear();
  auto r = request("POST", "/console/action", "action=enable&name=acme", cookie);
  EXPECT_EQ(r.status, 403) << "got " << r.status << " without a CSRF token, want 403";
  r = request("POST", "/console/action", "action=enable&name=acme&csrf=" + std::string(64, 'a'), cookie);
  EXPECT_EQ(r.status, 403) << "got " << r.status << " with a wrong CSRF token, want 403";
  EXPECT_TRUE(calls_.empty()) << "got command " << (calls_.empty() ? "" : calls_.front()) << " run, want none";
}

TEST_F(ConsoleHandler, PostFromAForeignOriginIsRefusedEvenWithTheToken) {
  const auto cookie = log_in();
  const auto csrf = csrf_of(cookie);
  ASSERT_EQ(csrf.size(), 64u) << "got no CSRF token in the form";
  calls_.clear();
  auto r = request("POST", "/console/action", "action=enable&name=acme&csrf=" + csrf, cookie, "http://127.0.0.1:9");
  EXPECT_EQ(r.status, 403) << "got " << r.status << " from another origin, want 403";
  r = request("POST", "/console/action", "action=enable&name=acme&csrf=" + csrf, cookie, "");
  EXPECT_EQ(r.status, 403) << "got " << r.status << " with neither Origin nor Referer, want 403";
  EXPECT_TRUE(calls_.empty()) << "got a command run for a foreign POST, want none";
}

TEST_F(ConsoleHandler, PostWithTheTokenFromOurPageRunsTheCommand) {
  const auto cookie = log_in();
  const auto csrf = csrf_of(cookie);
  calls_.clear();
  auto r = request("POST", "/console/action", "action=enable&name=acme&csrf=" + csrf, cookie);
  EXPECT_EQ(r.status, 303) << "got " << r.status << ", want 303 after the action; body:\n" << r.body;
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0], "customer.set");
  EXPECT_EQ(last_args_->optValue<std::string>("state", ""), "enabled");
  EXPECT_EQ(header(r, "Location"), "/console/customer?name=acme&note=enabled");
}

TEST_F(ConsoleHandler, DestructiveActionsAskFirst) {
  const auto cookie = log_in();
  const auto csrf = csrf_of(cookie);
  for (const std::string body : {"action=suspend&name=acme", "action=disable&name=acme", "action=delete&qid=ABC"}) {
    calls_.clear();
    auto r = request("POST", "/console/action", body + "&csrf=" + csrf, cookie);
    EXPECT_EQ(r.status, 200) << body << ": got " << r.status << ", want the confirmation page";
    EXPECT_NE(r.body.find("name=\"confirm\" value=\"yes\""), std::string::npos) << body << ": got no confirm form";
    for (const auto& c : calls_) {
      EXPECT_TRUE(c == "queue.show") << body << ": got " << c << " run before the confirmation, want none";
    }
  }
  calls_.clear();
  auto r = request("POST", "/console/action", "action=delete&qid=ABC&confirm=yes&csrf=" + csrf, cookie);
  EXPECT_EQ(r.status, 303) << "got " << r.status << " after confirming, want 303";
  ASSERT_FALSE(calls_.empty());
  EXPECT_EQ(calls_.back(), "queue.delete");
  EXPECT_EQ(header(r, "Location"), "/console/customer?name=acme&note=deleted");
}

TEST_F(ConsoleHandler, LogoutEndsTheSession) {
  const auto cookie = log_in();
  const auto csrf = csrf_of(cookie);
  auto r = request("POST", "/console/logout", "csrf=" + csrf, cookie);
  EXPECT_EQ(r.status, 303);
  r = request("GET", "/console/", "", cookie);
  EXPECT_EQ(header(r, "Location"), "/console/login") << "got a page after logging out, want the login";
}

TEST_F(ConsoleHandler, SignedInOnlyWithALiveSessionCookie) {
  EXPECT_FALSE(console_.signed_in("")) << "got signed in without a cookie";
  EXPECT_FALSE(console_.signed_in("fg_console=" + std::string(64, 'a'))) << "got signed in with a made-up id";
  const auto cookie = log_in();
  EXPECT_TRUE(console_.signed_in("other=1; " + cookie)) << "got not signed in with the session's cookie";
}

TEST_F(ConsoleHandler, ACommandsErrorIsShownOnTheCustomerForm) {
  const auto cookie = log_in();
  const auto csrf = csrf_of(cookie);
  console_request req{"POST", "/console/save", "is_new=yes&name=Bad!&domains=x&csrf=" + csrf, cookie, origin, "",
                      host, "127.0.0.1:1"};
  auto r = console_.handle(req, [](const std::string&, Object::Ptr) {
    return command_result::failure("customer name \"Bad!\": use 1-63 lower-case letters");
  });
  EXPECT_EQ(r.status, 400) << "got " << r.status << ", want 400";
  EXPECT_NE(r.body.find("customer name &quot;Bad!&quot;: use 1-63"), std::string::npos)
      << "got no error on the form, want the command's own text (escaped)";
  EXPECT_NE(r.body.find("value=\"Bad!\""), std::string::npos) << "got the form without what was typed";
}

TEST_F(ConsoleHandler, AFailedActionShowsTheCommandsReasonAndChangesNothing) {
  const auto cookie = log_in();
  const auto csrf = csrf_of(cookie);
  console_request req{"POST", "/console/action", "action=flush&name=acme&csrf=" + csrf, cookie, origin, "",
                      host, "127.0.0.1:1"};
  auto r = console_.handle(req, [](const std::string&, Object::Ptr) {
    return command_result::failure("customer acme has no route now", command_status::conflict);
  });
  EXPECT_EQ(r.status, 409) << "got " << r.status << " for a refused flush, want the command's 409";
  EXPECT_NE(r.body.find("customer acme has no route now"), std::string::npos) << "got no reason on the page";
  EXPECT_EQ(header(r, "Location"), "") << "got a redirect after a failure, want the reason shown";
}

TEST_F(ConsoleHandler, TheConfirmationPostsTheSameActionOnceMore) {
  const auto cookie = log_in();
  const auto csrf = csrf_of(cookie);
  auto r = request("POST", "/console/action", "action=suspend&name=acme&csrf=" + csrf, cookie);
  for (const std::string& want : std::vector<std::string>{"name=\"action\" value=\"suspend\"", "name=\"name\" value=\"acme\"",
                                 "name=\"csrf\" value=\"" + csrf + "\"", "href=\"/console/customer?name=acme\""}) {
    EXPECT_NE(r.body.find(want), std::string::npos) << "got a confirmation page without " << want;
  }
  EXPECT_EQ(r.body.find("name=\"csrf\"", r.body.find("name=\"csrf\"", r.body.find("<main")) + 1),
            std::string::npos)
      << "got the CSRF token twice in the confirmation form, want once";
}

TEST(ConsolePages, PeerSuppliedTextIsEscaped) {
  Object::Ptr m = new Object;
  m->set("qid", "Q<1>");
  m->set("customer", "acme\"><script>");
  m->set("sender", "<img src=x onerror=alert(1)>@evil.test");
  Poco::JSON::Array::Ptr rcpts = new Poco::JSON::Array;
  Object::Ptr r = new Object;
  r->set("address", "bob@acme.test");
  r->set("last_reply", "451 <script>alert(2)</script>");
  rcpts->add(r);
  m->set("recipients", rcpts);
  const std::string html = render_console_message({"t", "", ""}, m);
  EXPECT_EQ(html.find("<script"), std::string::npos) << "got a script element from peer text";
  EXPECT_EQ(html.find("<img"), std::string::npos) << "got an img element from peer text";
  EXPECT_NE(html.find("451 &lt;script&gt;alert(2)&lt;/script&gt;"), std::string::npos)
      << "got the last reply not shown as text";
  EXPECT_NE(html.find("/console/customer?name=acme%22%3E%3Cscript%3E"), std::string::npos)
      << "got the customer's link not percent-encoded";
}

TEST(ConsoleForm, ACustomerShownInTheFormComesBackUnchanged) {
  Object::Ptr c = new Object;
  c->set("name", "acme");
  Poco::JSON::Array::Ptr domains = new Poco::JSON::Array;
  domains->add("acme.test");
  domains->add("acme-gmbh.test");
  c->set("domains", domains);
  c->set("subdomains", true);
  c->set("queue_lifetime", 432000);
  Poco::JSON::Array::Ptr links = new Poco::JSON::Array;
  Object::Ptr l = new Object;
  l->set("user", "acme-dial");
  l->set("kind", "dialup");
  l->set("net", "192.0.2.0/24");
  links->add(l);
  c->set("links", links);
  const form_fields f = customer_form_fields(c);
  EXPECT_EQ(f.at("domains"), "acme.test, acme-gmbh.test");
  EXPECT_EQ(f.at("subdomains"), "yes");
  EXPECT_EQ(f.at("queue_lifetime"), "432000s") << "got a duration without its unit, want seconds with s";
  Object::Ptr args;
  std::string why;
  ASSERT_TRUE(customer_args_of(f, args, why)) << why;
  EXPECT_EQ(args->getArray("domains")->size(), 2u);
  EXPECT_TRUE(args->getValue<bool>("subdomains"));
  EXPECT_EQ(args->getArray("links")->getObject(0)->getValue<std::string>("net"), "192.0.2.0/24");
}

TEST(ConsoleForm, ParsesAndBoundsUrlEncodedBodies) {
  form_fields f;
  std::string why;
  ASSERT_TRUE(parse_form("a=1&b=x+y%21&c=&d", f, why)) << why;
  EXPECT_EQ(f["a"], "1");
  EXPECT_EQ(f["b"], "x y!");
  EXPECT_EQ(f["c"], "");
  EXPECT_EQ(f.count("d"), 1u);
  EXPECT_FALSE(parse_form("a=%zz", f, why)) << "got a broken escape accepted";
  EXPECT_FALSE(parse_form("a=%4", f, why)) << "got a cut escape accepted";
  std::string many;
  for (int i = 0; i < 41; ++i) many += "k" + std::to_string(i) + "=v&";
  EXPECT_FALSE(parse_form(many, f, why)) << "got 41 fields accepted, want at most 40";
  EXPECT_FALSE(parse_form("a=" + std::string(16 * 1024 + 1, 'x'), f, why)) << "got a 16 KiB + 1 field accepted";
  EXPECT_FALSE(parse_form(std::string(64 * 1024 + 1, 'x'), f, why)) << "got a body over 64 KiB accepted";
}

TEST(ConsoleForm, CustomerFieldsBecomeCommandArguments) {
  Poco::JSON::Object::Ptr args;
  std::string why;
  form_fields f{{"name", " acme "}, {"domains", "acme.test, acme-gmbh.test"}, {"mode", "hold"}, {"route", ""},
                {"links", "acme-dsl dsl\nacme-dial dialup 192.0.2.0/24\n"}, {"max_size", ""}, {"subdomains", "no"}};
  ASSERT_TRUE(customer_args_of(f, args, why)) << why;
  EXPECT_EQ(args->getValue<std::string>("name"), "acme");
  EXPECT_EQ(args->getArray("domains")->size(), 2u);
  EXPECT_EQ(args->getValue<std::string>("mode"), "hold");
  EXPECT_TRUE(args->has("route")) << "got no route, want \"\" (none) passed on";
  EXPECT_FALSE(args->has("max_size")) << "got an empty max_size passed on, want it left alone";
  EXPECT_FALSE(args->getValue<bool>("subdomains"));
  auto links = args->getArray("links");
  ASSERT_EQ(links->size(), 2u);
  EXPECT_EQ(links->getObject(1)->getValue<std::string>("kind"), "dialup");
  EXPECT_EQ(links->getObject(1)->getValue<std::string>("net"), "192.0.2.0/24");
  f["links"] = "just-a-user";
  EXPECT_FALSE(customer_args_of(f, args, why)) << "got a link line without a kind accepted";
  f["links"] = "";
  f["subdomains"] = "maybe";
  EXPECT_FALSE(customer_args_of(f, args, why)) << "got subdomains=maybe accepted";
}

}  // namespace
