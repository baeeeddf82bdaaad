// http_api_test.cpp — the HTTP API, /metrics and the DNS doctor against the
// real daemon: a real HTTP client (Poco) on loopback, SMTP through
// smtp_probe, raw sockets for malformed requests, nsd for the doctor.
#include "tests/integration/admin_api.hpp"
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/nsd_server.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/smtp_probe.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/StreamSocket.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;
using Poco::JSON::Object;

class HttpApi : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = free_port();
    daemon_ = std::make_unique<daemon_fixture>(daemon_fixture::settings{
        {"admin_listen", "127.0.0.1:" + std::to_string(port_)},
        {"admin_timeout", "3s"},
    });
    daemon_->start();
    token_ = admin_token(*daemon_);
    ASSERT_EQ(token_.size(), 64u) << "got token \"" << token_ << "\", want 64 hex digits";
  }

  http_answer call(const std::string& method, const std::string& target, const std::string& body = "",
                   const std::string& authorization = "default") {
    return http_call(port_, method, target, body,
                     authorization == "default" ? "Bearer " + token_ : authorization, 10s);
  }

  // Sends raw bytes and returns what came back before the server closed (bounded).
  std::string raw_exchange(const std::string& bytes) {
    Poco::Net::StreamSocket s;
    s.connect(Poco::Net::SocketAddress("127.0.0.1", port_), Poco::Timespan(5, 0));
    s.setReceiveTimeout(Poco::Timespan(5, 0));
    s.sendBytes(bytes.data(), static_cast<int>(bytes.size()));
    s.shutdownSend();
    std::string out;
    char buf[4096];
    for (int i = 0; i < 64; ++i) {
      int n = 0;
      try {
        n = s.receiveBytes(buf, sizeof buf);
      } catch (const Poco::Exception&) {
        break;
      }
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }

  int smtp_rcpt(const std::string& rcpt) {
    smtp_probe probe;
    if (probe.connect(daemon_->host(), daemon_->port())) return -1;
    probe.read_reply();
    probe.command("EHLO client.test");
    probe.command("MAIL FROM:<a@sender.test>");
    auto r = probe.command("RCPT TO:<" + rcpt + ">");
    probe.command("QUIT");
    return r ? r->code : -1;
  }

  std::string send_mail(const std::string& rcpt) {
    smtp_probe probe;
    if (probe.connect(daemon_->host(), daemon_->port())) return "";
    probe.read_reply();
    probe.command("EHLO client.test");
    auto sent = send_message(probe, "a@sender.test", {rcpt}, make_message({"Subject: api"}, "hello\r\n"));
    probe.command("QUIT");
    if (!sent.reply) return "";
    auto ids = queue_ids(*sent.reply);
    return ids.empty() ? "" : ids.front();
  }

  std::uint16_t port_ = 0;
  std::string token_;
  std::unique_ptr<daemon_fixture> daemon_;
};

TEST_F(HttpApi, EveryRequestNeedsTheToken) {
  for (const char* target : {"/", "/metrics", "/api/v1/customers"}) {
    auto none = call("GET", target, "", "");
    EXPECT_EQ(none.status, 401) << target << ": " << none.body;
    EXPECT_NE(none.www_authenticate.find("Basic"), std::string::npos)
        << target << ": got WWW-Authenticate \"" << none.www_authenticate << "\", want a Basic challenge";
    auto wrong = call("GET", target, "", "Bearer " + std::string(64, '0'));
    EXPECT_EQ(wrong.status, 401) << target;
  }
  // A browser sends the token as the Basic password, under any user name.
  auto basic = call("GET", "/api/v1/customers", "", "Basic " + base64("operator:" + token_));
  EXPECT_EQ(basic.status, 200) << basic.body;
}

TEST_F(HttpApi, CustomerLifecycleChangesWhatSmtpAccepts) {
  auto added = call("POST", "/api/v1/customers", R"({"name":"acme","domains":["acme.test"],"mode":"hold"})");
  ASSERT_EQ(added.status, 200) << added.body;
  auto again = call("POST", "/api/v1/customers", R"({"name":"acme","domains":["acme2.test"]})");
  EXPECT_EQ(again.status, 409) << again.body;
  ASSERT_TRUE(again.json());
  EXPECT_EQ(again.json()->getValue<std::string>("code"), "conflict");

  EXPECT_EQ(smtp_rcpt("bob@acme.test"), 250);
  auto suspended = call("POST", "/api/v1/customers/acme/suspend");
  ASSERT_EQ(suspended.status, 200) << suspended.body;
  EXPECT_EQ(suspended.json()->getObject("result")->getValue<std::string>("state"), "suspended");
  EXPECT_EQ(smtp_rcpt("bob@acme.test"), 450) << "a suspended customer's mail waits at the sender";
  ASSERT_EQ(call("POST", "/api/v1/customers/acme/disable").status, 200);
  EXPECT_EQ(smtp_rcpt("bob@acme.test"), 550);
  ASSERT_EQ(call("POST", "/api/v1/customers/acme/enable").status, 200);

  const std::string qid = send_mail("bob@acme.test");
  ASSERT_FALSE(qid.empty()) << daemon_->log_text();
  auto listed = call("GET", "/api/v1/queue?customer=acme");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_NE(listed.body.find(qid), std::string::npos) << "got " << listed.body << ", want " << qid;
  EXPECT_EQ(call("POST", "/api/v1/queue/" + qid + "/hold").status, 200);
  auto shown = call("GET", "/api/v1/queue/" + qid);
  ASSERT_EQ(shown.status, 200) << shown.body;
  EXPECT_TRUE(shown.json()->getObject("result")->getValue<bool>("held"));
  EXPECT_EQ(call("POST", "/api/v1/queue/" + qid + "/release").status, 200);

  // A hold customer without a link has nowhere to flush to: 409, mail stays.
  auto flush = call("POST", "/api/v1/customers/acme/flush");
  EXPECT_EQ(flush.status, 409) << flush.body;

  auto removing = call("DELETE", "/api/v1/customers/acme");
  EXPECT_EQ(removing.status, 409) << "got " << removing.status << ", want 409 while mail is queued";
  EXPECT_EQ(call("DELETE", "/api/v1/queue/" + qid).status, 200);
  EXPECT_EQ(call("GET", "/api/v1/queue/" + qid).status, 404);
  EXPECT_EQ(call("DELETE", "/api/v1/customers/acme").status, 200);
  EXPECT_EQ(call("GET", "/api/v1/customers/acme").status, 404);
  EXPECT_EQ(smtp_rcpt("bob@acme.test"), 550);

  auto events = call("GET", "/api/v1/events?limit=20");
  ASSERT_EQ(events.status, 200);
  EXPECT_NE(events.body.find("customer acme removed"), std::string::npos) << events.body;
}

TEST_F(HttpApi, LinksComeAndGo) {
  ASSERT_EQ(call("POST", "/api/v1/customers",
                 R"({"name":"dsl","domains":["dsl.test"],"mode":"hold","links":[{"user":"dsl-line","kind":"dsl"}]})")
                .status,
            200);
  auto up = call("POST", "/api/v1/links", R"({"user":"dsl-line","address":"127.0.0.9","session":"S1"})");
  ASSERT_EQ(up.status, 200) << up.body;
  auto list = call("GET", "/api/v1/links");
  EXPECT_NE(list.body.find("127.0.0.9"), std::string::npos) << list.body;
  auto unknown = call("POST", "/api/v1/links", R"({"user":"nobody","address":"127.0.0.9"})");
  EXPECT_EQ(unknown.status, 400) << unknown.body;
  EXPECT_EQ(call("DELETE", "/api/v1/links/dsl-line?session=S1").status, 200);
  list = call("GET", "/api/v1/links");
  EXPECT_EQ(list.body.find("127.0.0.9"), std::string::npos) << list.body;
}

TEST_F(HttpApi, MetricsCountWhatHappened) {
  ASSERT_EQ(daemon_->add_customer("acme", "acme.test", {"--mode", "hold"}).exit_code, 0);
  ASSERT_FALSE(send_mail("bob@acme.test").empty());
  EXPECT_EQ(smtp_rcpt("bob@elsewhere.test"), 550);
  auto m = call("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.content_type.rfind("text/plain; version=0.0.4", 0), 0u) << "got " << m.content_type;
  for (const char* want : {"flushgate_messages_accepted_total 1\n",
                           "flushgate_smtp_refusals_total{reason=\"relay_denied\"} 1\n",
                           "flushgate_queue_messages{customer=\"acme\"} 1\n",
                           "# TYPE flushgate_disk_free_bytes gauge\n",
                           "# TYPE flushgate_store_free_bytes gauge\n",
                           "# TYPE flushgate_store_file_bytes gauge\n",
                           "flushgate_links_up{kind=\"dsl\"} 0\n"}) {
    EXPECT_NE(m.body.find(want), std::string::npos) << "got\n" << m.body << "want a line " << want;
  }
  auto page = call("GET", "/");
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.content_type.rfind("text/html", 0), 0u) << page.content_type;
  EXPECT_NE(page.body.find("acme"), std::string::npos);
  auto config = call("GET", "/api/v1/config");
  EXPECT_NE(config.body.find("\"name\":\"admin_timeout\""), std::string::npos) << config.body.substr(0, 300);
}

TEST_F(HttpApi, MalformedRequestsGet4xxAndTheServerStaysUp) {
  auto bad_json = call("POST", "/api/v1/customers", "{\"name\": ");
  EXPECT_EQ(bad_json.status, 400);
  ASSERT_TRUE(bad_json.json()) << "got a non-JSON error body: " << bad_json.body;
  EXPECT_EQ(bad_json.json()->getValue<std::string>("code"), "bad_request");
  EXPECT_EQ(call("POST", "/api/v1/customers", std::string(100000, '[')).status, 400);
  // A body announced as over 8 MiB is refused before it is read.
  {
    Poco::Net::HTTPClientSession session("127.0.0.1", port_);
    session.setTimeout(Poco::Timespan(10, 0));
    Poco::Net::HTTPRequest req("POST", "/api/v1/customers", Poco::Net::HTTPMessage::HTTP_1_1);
    req.set("Authorization", "Bearer " + token_);
    req.setContentLength(9 << 20);
    session.sendRequest(req) << "{\"a\":\"";
    Poco::Net::HTTPResponse resp;
    session.receiveResponse(resp);
    EXPECT_EQ(resp.getStatus(), 413);
  }
  EXPECT_EQ(call("GET", "/api/v1/nothing").status, 404);
  EXPECT_EQ(call("DELETE", "/api/v1/links").status, 405);
  EXPECT_EQ(call("PATCH", "/api/v1/customers/nobody", "{\"mode\":\"hold\"}").status, 404);
  EXPECT_EQ(call("PATCH", "/api/v1/customers/nobody", "{\"mode\":42}").status, 404);

  // Not HTTP at all, an overlong request line, a header flood: Poco answers
  // 400 (or closes); nothing of it reaches a command.
  for (const std::string& junk :
       {std::string("HELO there\r\n\r\n"), "GET /" + std::string(20000, 'a') + " HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\n" + std::string(200, 'X') + ": y\r\n\r\n",
        std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)}) {
    std::string answer = raw_exchange(junk);
    EXPECT_TRUE(answer.empty() || answer.rfind("HTTP/1.", 0) == 0) << "got " << answer.substr(0, 80);
    EXPECT_EQ(answer.find("200 OK"), std::string::npos) << "got " << answer.substr(0, 200);
  }
  auto after = call("GET", "/api/v1/customers");
  EXPECT_EQ(after.status, 200) << "the API stopped answering after malformed requests: " << after.body;
  EXPECT_TRUE(daemon_->running());
}

TEST_F(HttpApi, ServesWhileStalledClientsHoldConnections) {
  // Connections that never finish their request are cut at admin_timeout;
  // meanwhile the others are served by the remaining threads.
  std::vector<std::unique_ptr<Poco::Net::StreamSocket>> stalled;
  for (int i = 0; i < 3; ++i) {
    auto s = std::make_unique<Poco::Net::StreamSocket>();
    s->connect(Poco::Net::SocketAddress("127.0.0.1", port_));
    s->sendBytes("GET /api/v1/customers HTTP/1.1\r\nHost: x\r\n", 41);
    stalled.push_back(std::move(s));
  }
  auto a = call("GET", "/api/v1/status");
  EXPECT_EQ(a.status, 200) << a.body;
  // Each stalled connection is closed by the server within the timeout (3 s) plus slack.
  for (auto& s : stalled) {
    s->setReceiveTimeout(Poco::Timespan(10, 0));
    char buf[512];
    int n = -1;
    try {
      n = s->receiveBytes(buf, sizeof buf);
      while (n > 0) n = s->receiveBytes(buf, sizeof buf);
    } catch (const Poco::TimeoutException&) {
      n = -2;
    } catch (const Poco::Exception&) {
      n = 0;
    }
    EXPECT_NE(n, -2) << "a stalled connection was still open after 10 s, want it cut at admin_timeout (3 s)";
  }
}

TEST(HttpApiDoctor, FlushgateDoctorExplainsAgainstRealDns) {
  if (!nsd_server::available()) GTEST_SKIP() << "nsd is not installed: the doctor is tested against a real nsd";
  nsd_server nsd(std::vector<nsd_zone>{
      {"doctor.test", read_text_file(FLUSHGATE_SOURCE_DIR "/tests/data/dns/doctor/doctor.test.zone")}});
  daemon_fixture daemon({{"dns_servers", nsd.address()}, {"smtp_self_names", "gw.doctor.test"}});
  daemon.start();
  auto missing = daemon.cli({"doctor", "gwonly.doctor.test"});
  EXPECT_EQ(missing.exit_code, 1) << missing.out << missing.err;
  EXPECT_NE(missing.out.find("gateway-mx-no-customer"), std::string::npos) << missing.out;

  std::ofstream(daemon.dir() / "rcpts") << "postmaster@healthy.doctor.test\n";
  ASSERT_EQ(daemon
                .add_customer("healthy", "healthy.doctor.test",
                              {"--route", "mail.healthy.doctor.test", "--recipients", (daemon.dir() / "rcpts").string()})
                .exit_code,
            0);
  auto healthy = daemon.cli({"doctor", "healthy.doctor.test"});
  EXPECT_EQ(healthy.exit_code, 0) << healthy.out << healthy.err;
  EXPECT_NE(healthy.out.find("this gateway"), std::string::npos) << healthy.out;
  auto json = daemon.cli({"--json", "doctor", "cname.doctor.test"});
  EXPECT_NE(json.out.find("\"code\": \"mx-is-cname\""), std::string::npos) << json.out;
}

TEST(HttpApiDoctor, SmtpSelfAddressesFromTheConfigReachTheDoctor) {
  if (!nsd_server::available()) GTEST_SKIP() << "nsd is not installed: the doctor is tested against a real nsd";
  nsd_server nsd(std::vector<nsd_zone>{
      {"doctor.test", read_text_file(FLUSHGATE_SOURCE_DIR "/tests/data/dns/doctor/doctor.test.zone")}});
  // The gateway behind NAT: natgw(6).doctor.test is in no smtp_self_names,
  // only its public addresses give it away.
  daemon_fixture daemon({{"dns_servers", nsd.address()},
                         {"smtp_self_names", "gw.doctor.test"},
                         {"smtp_self_addresses", "127.0.1.0/24, 2001:db8:25::/48"}});
  daemon.start();
  for (const char* domain : {"gwbynat.doctor.test", "gwbynat6.doctor.test"}) {
    auto r = daemon.cli({"doctor", domain});
    EXPECT_EQ(r.exit_code, 1) << "got exit " << r.exit_code << " for " << domain << ", want 1: " << r.out << r.err;
    EXPECT_NE(r.out.find("gateway-mx-no-customer"), std::string::npos)
        << "got \"" << r.out << "\", want the NATed gateway recognised as this gateway";
  }
}

}  // namespace
