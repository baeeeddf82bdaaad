// status_page_test.cpp — the operator's status page as a browser shows it:
// the real flushgated with customers in different states, held mail sent
// over SMTP, links brought up with `flushgate link up`, and its admin HTTP
// listener; headless Chromium loads http://operator:TOKEN@127.0.0.1:PORT/,
// the test reads the DOM and keeps screenshots for a human to look at.
//
// Covers issue 6 ("Status page"): the customers with their state badges
// and queue counts, trouble first; live links; the last events; escaped
// peer-supplied text; the page refers to nothing outside itself.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/support/chromium.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

constexpr const char* admin_token = "status-page-test-0123456789abcdef0123456789abcdef";
constexpr const char* hostile_user = "<script>alert(1)</script>";

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

class StatusPageLive : public ::testing::Test {
 protected:
  void SetUp() override {
    FLUSHGATE_SKIP_WITHOUT_CHROMIUM();
    admin_port_ = free_port();
    daemon_.emplace(daemon_fixture::settings{{"retry_schedule", "10m"}});
    // The token file exists before the daemon starts, private to us (the
    // daemon refuses one that others can read).
    const auto token_file = daemon_->dir() / "admin.token";
    {
      std::ofstream out(token_file, std::ios::trunc);
      out << admin_token << "\n";
    }
    ::chmod(token_file.c_str(), 0600);
    daemon_->set_setting("admin_listen", "127.0.0.1:" + std::to_string(admin_port_));
    daemon_->set_setting("admin_token_file", token_file.string());
    daemon_->start();
    ASSERT_TRUE(wait_for_tcp("127.0.0.1", admin_port_, 10s))
        << "got no admin listener on 127.0.0.1:" << admin_port_ << ", want one; log:\n"
        << daemon_->log_text();
  }

  void add(const std::string& name, const std::string& domain, const std::vector<std::string>& extra) {
    auto r = daemon_->add_customer(name, domain, extra);
    ASSERT_EQ(r.exit_code, 0) << "customer add " << name << ": got exit " << r.exit_code << " (" << r.err
                              << "), want 0";
  }

  void queue_for(const std::string& rcpt, int count) {
    for (int i = 0; i < count; ++i) {
      auto s = submit(daemon_->port(), "alice@sender.test", {{rcpt, ""}},
                      test_message("status page " + std::to_string(i), rcpt, "held for the page\r\n"));
      ASSERT_TRUE(s.error.empty()) << "submit to " << rcpt << ": " << s.error;
    }
  }

  void cli_ok(const std::vector<std::string>& args) {
    auto r = daemon_->cli(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    ASSERT_EQ(r.exit_code, 0) << joined << ": got exit " << r.exit_code << " (" << r.err << "), want 0";
  }

  // `flushgate --json status`, or null.
  Poco::JSON::Object::Ptr snapshot() const {
    auto r = daemon_->cli({"--json", "status"});
    if (r.exit_code != 0) return {};
    try {
      Poco::JSON::Parser parser;
      return parser.parse(r.out).extract<Poco::JSON::Object::Ptr>();
    } catch (const std::exception&) {  // Poco::Exception is one
      return {};
    }
  }

  // The customer `name` of the snapshot, or null.
  Poco::JSON::Object::Ptr customer_in(const Poco::JSON::Object::Ptr& s, const std::string& name) const {
    if (!s) return {};
    auto list = s->getArray("customers");
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      auto c = list->getObject(static_cast<unsigned>(i));
      if (c && c->optValue<std::string>("name", "") == name) return c;
    }
    return {};
  }

  std::string page_url() const {
    return "http://operator:" + std::string(admin_token) + "@127.0.0.1:" + std::to_string(admin_port_) + "/";
  }

  std::uint16_t admin_port_ = 0;
  std::optional<daemon_fixture> daemon_;
};

TEST_F(StatusPageLive, ShowsCustomersLinksAndEventsOfTheRunningDaemon) {
  // Customers in the states the page tells apart.
  const std::uint16_t acme_port = free_port_on("127.0.0.5");  // nothing listens: the flush fails
  add("acme", "acme.test", {"--dsl-user", "acme-dsl", "--link-port", std::to_string(acme_port)});
  add("huber", "huber-brot.test", {"--mode", "hold"});
  add("roth", "roth-dental.test", {"--mode", "hold"});
  add("oldco", "oldco.test", {});
  add("meyer", "meyer-recht.test", {"--dsl-user", "meyer-dsl", "--link-port", std::to_string(acme_port)});
  add("koch", "weingut-koch.test", {"--route", "127.0.0.1:" + std::to_string(free_port())});
  add("fischer", "fischer-it.test", {"--mode", "odmr"});

  // Held mail, sent over SMTP.
  queue_for("bob@acme.test", 2);
  queue_for("anna@huber-brot.test", 3);
  queue_for("info@roth-dental.test", 1);
  cli_ok({"customer", "suspend", "roth"});
  cli_ok({"customer", "disable", "oldco"});
  if (HasFatalFailure()) return;

  // Links: acme's comes up and its flush fails; meyer's comes up with
  // nothing queued; a forged user name is refused and lands in the events.
  cli_ok({"link", "up", "acme-dsl", "--ip", "127.0.0.5", "--session", "S1", "--nas", "bras-1"});
  cli_ok({"link", "up", "meyer-dsl", "--ip", "127.0.0.6", "--session", "S2", "--nas", "bras-2"});
  auto forged = daemon_->cli({"link", "up", hostile_user, "--ip", "127.0.0.9"});
  EXPECT_NE(forged.exit_code, 0) << "got a link up for an unknown user accepted, want it refused";

  ASSERT_TRUE(wait_until(
      [&] {
        auto c = customer_in(snapshot(), "acme");
        return c && !c->optValue<std::string>("last_error", "").empty();
      },
      20s, 100ms))
      << "got no failed flush for acme in `status`, want one; log:\n"
      << daemon_->log_text();

  const std::filesystem::path out_dir = FLUSHGATE_BINARY_DIR;
  const auto wide_png = out_dir / "status_page.png";
  browser_request wide;
  wide.url = page_url();
  wide.screenshot = wide_png;
  const auto got = run_chromium(wide);
  ASSERT_FALSE(got.timed_out) << "got a browser that did not finish, want it done; log:\n" << got.log;
  ASSERT_EQ(got.exit_code, 0) << "got chromium exit " << got.exit_code << ", want 0; log:\n" << got.log;
  EXPECT_TRUE(got.screenshot_written) << "got no PNG at " << wide_png;
  std::cout << "status page screenshot (1280x800): " << wide_png.string() << "\n";
  const std::string& dom = got.dom;
  ASSERT_NE(dom.find("id=\"customers\""), std::string::npos)
      << "got no status page from " << wide.url << ", want one; DOM:\n"
      << dom << "\nlog:\n"
      << daemon_->log_text();

  // Every customer, in trouble-first order.
  const std::vector<std::string> order = {"huber", "acme", "roth", "oldco", "meyer", "koch", "fischer"};
  std::vector<std::pair<std::size_t, std::string>> seen;
  for (const auto& name : order) {
    const auto at = dom.find("data-customer=\"" + name + "\"");
    EXPECT_NE(at, std::string::npos) << "got no row for " << name << ", want one";
    if (at != std::string::npos) seen.emplace_back(at, name);
  }
  std::sort(seen.begin(), seen.end());
  std::string got_order, want_order;
  for (const auto& [at, name] : seen) got_order += name + " ";
  for (const auto& name : order) want_order += name + " ";
  EXPECT_EQ(got_order, want_order) << "got rows " << got_order << ", want " << want_order;

  // Badges, counts, links, events.
  for (const char* want : {">held<", ">suspended<", ">disabled<", ">link up<", ">relaying<", ">idle<",
                           "<span class=\"qn\">3</span>", "<span class=\"qn\">2</span>",
                           "<span class=\"qn\">1</span>", "acme-dsl", "127.0.0.5", "meyer-dsl",
                           "bras-1", "gw.test", ">link refused<", "Connection refused"}) {
    EXPECT_NE(dom.find(want), std::string::npos) << "got a page without \"" << want << "\", want it there";
  }
  EXPECT_NE(dom.find("id=\"t-messages\"><div class=\"k\">Queued messages</div><div class=\"v\">6<"),
            std::string::npos)
      << "got no total of 6 queued messages in the tiles, want it";
  // The counter script ran: the page's CSP lets exactly it through.
  EXPECT_NE(dom.find("updated 0 s ago"), std::string::npos) << "got no counter from the page's script";
  // The forged user name is text, never markup.
  EXPECT_EQ(count_of(dom, "<script"), 1u) << "got " << count_of(dom, "<script") << " scripts, want 1";
  EXPECT_NE(dom.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos)
      << "got no escaped forged user name in the events, want it shown as text";
  // Nothing fetched from elsewhere.
  EXPECT_EQ(dom.find("http://"), std::string::npos) << "got an http:// reference in the page, want none";
  EXPECT_EQ(dom.find("https://"), std::string::npos) << "got an https:// reference in the page, want none";

  // All of it at once (the events are below the fold at 800 px).
  const auto full_png = out_dir / "status_page_full.png";
  browser_request full = wide;
  full.height = 1600;
  full.dump_dom = false;
  full.screenshot = full_png;
  const auto whole = run_chromium(full);
  EXPECT_TRUE(whole.screenshot_written) << "got no PNG at " << full_png;
  std::cout << "status page screenshot (1280x1600): " << full_png.string() << "\n";

  // The same page on a phone.
  const auto narrow_png = out_dir / "status_page_narrow.png";
  browser_request narrow = wide;
  narrow.width = 390;
  narrow.height = 1200;
  narrow.dump_dom = false;
  narrow.screenshot = narrow_png;
  const auto small = run_chromium(narrow);
  EXPECT_EQ(small.exit_code, 0) << "got chromium exit " << small.exit_code << " at 390 px, want 0";
  EXPECT_TRUE(small.screenshot_written) << "got no PNG at " << narrow_png;
  std::cout << "status page screenshot (390 px wide): " << narrow_png.string() << "\n";
}

TEST_F(StatusPageLive, RefusesThePageWithoutTheToken) {
  browser_request request;
  request.url = "http://operator:wrong-token@127.0.0.1:" + std::to_string(admin_port_) + "/";
  request.timeout = 30s;
  const auto got = run_chromium(request);
  ASSERT_FALSE(got.timed_out) << got.log;
  EXPECT_EQ(got.dom.find("id=\"customers\""), std::string::npos)
      << "got the status page with a wrong token, want it refused";
}

}  // namespace
