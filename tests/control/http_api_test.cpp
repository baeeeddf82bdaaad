// http_api_test.cpp — tests control/http_api.cpp without sockets: request
// routing, the token check, the token file, status codes.
#include "control/http_api.hpp"

#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>

namespace flushgate::control {
namespace {

struct route_case {
  const char* method;
  const char* target;
  const char* body;
  const char* want_command;  // "" when an error is wanted
  int want_status;           // for errors
};

TEST(HttpApiRoute, MapsRequestsOntoCommands) {
  // Named: a temporary's c_str() in the table would dangle (ASan saw it).
  const std::string deep_body(40, '[');
  const route_case cases[] = {
      {"GET", "/api/v1/customers", "", "customer.list", 0},
      {"POST", "/api/v1/customers", R"({"name":"acme","domains":["acme.test"]})", "customer.add", 0},
      {"GET", "/api/v1/customers/acme", "", "customer.show", 0},
      {"PATCH", "/api/v1/customers/acme", R"({"mode":"hold"})", "customer.set", 0},
      {"DELETE", "/api/v1/customers/acme?force=true", "", "customer.remove", 0},
      {"POST", "/api/v1/customers/acme/suspend", "", "customer.set", 0},
      {"PUT", "/api/v1/customers/acme/password", R"({"password":"s3cret-pw"})", "customer.passwd", 0},
      {"POST", "/api/v1/customers/acme/flush", "", "flush", 0},
      {"GET", "/api/v1/customers/acme/flush", "", "flush.status", 0},
      {"GET", "/api/v1/queue?customer=acme&limit=5", "", "queue.list", 0},
      {"GET", "/api/v1/queue/summary", "", "queue.summary", 0},
      {"GET", "/api/v1/queue/ABCDEF123456", "", "queue.show", 0},
      {"POST", "/api/v1/queue/ABCDEF123456/hold", "", "queue.hold", 0},
      {"POST", "/api/v1/queue/ABCDEF123456/release", "", "queue.release", 0},
      {"DELETE", "/api/v1/queue/ABCDEF123456", "", "queue.delete", 0},
      {"GET", "/api/v1/links", "", "link.list", 0},
      {"POST", "/api/v1/links", R"({"user":"u","address":"192.0.2.1"})", "link.up", 0},
      {"DELETE", "/api/v1/links/u?session=S1", "", "link.down", 0},
      {"GET", "/api/v1/config", "", "config.show", 0},
      {"GET", "/api/v1/events?limit=3", "", "events", 0},
      {"GET", "/api/v1/cluster", "", "cluster.status", 0},
      {"GET", "/api/v1/status", "", "status", 0},
      {"GET", "/api/v1/doctor/acme.test", "", "doctor", 0},
      {"POST", "/api/v1/command", R"({"command":"queue.summary","args":{}})", "queue.summary", 0},
      {"GET", "/api/v2/customers", "", "", 404},
      {"GET", "/nothing", "", "", 404},
      {"TRACE", "/", "", "", 405},
      {"POST", "/", "", "", 405},
      {"PUT", "/api/v1/links", "{}", "", 405},
      {"POST", "/api/v1/customers", "{not json", "", 400},
      {"POST", "/api/v1/customers", "[1,2]", "", 400},
      {"POST", "/api/v1/customers", deep_body.c_str(), "", 400},
      {"POST", "/api/v1/command", "{}", "", 400},
      {"GET", "/api/v1/customers/acme/unknown", "", "", 404},
  };
  for (const auto& c : cases) {
    api_route r = route_request(c.method, c.target, c.body);
    const std::string where = std::string(c.method) + " " + c.target;
    if (*c.want_command != '\0') {
      ASSERT_EQ(r.k, api_route::kind::command) << where << ": got error " << r.http_status << " " << r.error;
      EXPECT_EQ(r.command, c.want_command) << where;
      EXPECT_TRUE(r.args) << where << ": got no args object, want one";
    } else {
      EXPECT_EQ(r.k, api_route::kind::error) << where << ": got command " << r.command;
      EXPECT_EQ(r.http_status, c.want_status) << where << ": " << r.error;
    }
  }
}

TEST(HttpApiRoute, PathAndQueryBecomeArguments) {
  auto r = route_request("DELETE", "/api/v1/customers/acme?force=true", "");
  EXPECT_EQ(r.args->getValue<std::string>("name"), "acme");
  EXPECT_TRUE(r.args->getValue<bool>("force"));
  r = route_request("POST", "/api/v1/customers/acme/disable", "");
  EXPECT_EQ(r.args->getValue<std::string>("state"), "disabled");
  r = route_request("POST", "/api/v1/queue/Q1/hold", "");
  EXPECT_EQ(r.args->getArray("qids")->getElement<std::string>(0), "Q1");
  // Percent-encoding is decoded before the name reaches the command.
  r = route_request("GET", "/api/v1/customers/a%2Eb", "");
  EXPECT_EQ(r.args->getValue<std::string>("name"), "a.b");
  // The path wins over a body that names another customer.
  r = route_request("PATCH", "/api/v1/customers/acme", R"({"name":"other","mode":"hold"})");
  EXPECT_EQ(r.args->getValue<std::string>("name"), "acme");
}

TEST(HttpApiRoute, PagesAreNotCommands) {
  EXPECT_EQ(route_request("GET", "/", "").k, api_route::kind::status_page);
  EXPECT_EQ(route_request("GET", "/metrics", "").k, api_route::kind::metrics);
}

TEST(HttpApiToken, BearerAndBasicCarryTheToken) {
  const std::string token = "0123456789abcdef0123456789abcdef";
  EXPECT_TRUE(authorized("Bearer " + token, token));
  EXPECT_TRUE(authorized("bearer " + token, token));
  // "op:<token>" in base64.
  EXPECT_TRUE(authorized("Basic b3A6MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", token));
  EXPECT_FALSE(authorized("", token));
  EXPECT_FALSE(authorized("Bearer ", token));
  EXPECT_FALSE(authorized("Bearer " + token.substr(1), token));
  EXPECT_FALSE(authorized("Bearer " + token + "x", token));
  EXPECT_FALSE(authorized("Basic !!!", token));
  EXPECT_FALSE(authorized("Basic b3A=", token));  // "op", no colon
  EXPECT_FALSE(authorized(token, token));          // no scheme
  EXPECT_FALSE(authorized("Bearer x", ""));        // no token configured: nothing passes
}

TEST(HttpApiToken, FileIsCreatedPrivateAndReadBack) {
  test::temp_dir dir("http-token");
  const std::string path = (dir.path() / "admin.token").string();
  std::string token, again, error;
  ASSERT_TRUE(load_admin_token(path, "", token, error)) << error;
  EXPECT_EQ(token.size(), 64u) << "got " << token;
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u) << "got mode " << std::oct << (st.st_mode & 0777);
  ASSERT_TRUE(load_admin_token(path, "", again, error)) << error;
  EXPECT_EQ(again, token) << "got a new token on the second start, want the same";
}

TEST(HttpApiToken, FileOthersCanReadIsRefused) {
  test::temp_dir dir("http-token");
  const std::string path = (dir.path() / "admin.token").string();
  std::ofstream(path) << "0123456789abcdef0123\n";
  ::chmod(path.c_str(), 0644);
  std::string token, error;
  EXPECT_FALSE(load_admin_token(path, "", token, error));
  EXPECT_NE(error.find("other users"), std::string::npos) << "got " << error;
  ::chmod(path.c_str(), 0600);
  EXPECT_TRUE(load_admin_token(path, "", token, error)) << error;
  std::ofstream(path) << "short\n";
  EXPECT_FALSE(load_admin_token(path, "", token, error)) << "got a 5-character token accepted";
}

TEST(HttpApiStatus, CommandFailuresMapToHttpCodes) {
  EXPECT_EQ(http_status_of(command_status::bad_request), 400);
  EXPECT_EQ(http_status_of(command_status::not_found), 404);
  EXPECT_EQ(http_status_of(command_status::conflict), 409);
  EXPECT_EQ(http_status_of(command_status::unavailable), 503);
}

}  // namespace
}  // namespace flushgate::control
