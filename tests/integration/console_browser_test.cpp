// console_browser_test.cpp — the operator console in a real browser against
// the real daemon: headless Chromium driven by Selenium
// (tests/integration/console_browser.py, one step per run) logs in with the
// admin token and acts; between the steps this test checks what the
// actions did, from outside the console: the CLI's view of the customer,
// an SMTP session's answer, the queue, the mail at a real Postfix.
//
// Covers issue 16, "Operator console": log in; a forged cross-site POST
// (another origin's page, a foreign Origin with the real token, a wrong
// token) is refused and changes nothing; suspend after confirming, then
// SMTP answers 450; delete a message after confirming; flush now and the
// mail arrives at Postfix; add a customer through the form, the CLI's
// validation error shown on it first, then change it through the form. Screenshots go to the build dir.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"
#include "tests/support/chromium.hpp"
#include "tests/support/ports.hpp"
#include "tests/support/postfix_instance.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

constexpr const char* admin_token = "console-browser-test-0123456789abcdef0123456789";
constexpr const char* python = "/usr/bin/python3";

// "" when Selenium can drive Chromium here; otherwise why not.
std::string selenium_missing_reason() {
  if (auto why = chromium_missing_reason(); !why.empty()) return why;
  if (!program_available("/usr/bin/chromedriver")) return "needs /usr/bin/chromedriver (chromium-driver)";
  if (!std::filesystem::exists("/usr/lib/python3/dist-packages/selenium")) return "needs python3-selenium";
  return {};
}

class ConsoleBrowser : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = selenium_missing_reason(); !why.empty()) GTEST_SKIP() << why;
    if (!postfix_instance::available()) GTEST_SKIP() << "needs root and Postfix";
    postfix_.emplace(postfix_instance::final_destination(
        {"acme.test"}, "127.0.0.1:" + std::to_string(free_port_on("127.0.0.1"))));
    postfix_->start();
    admin_port_ = free_port();
    daemon_.emplace(daemon_fixture::settings{{"retry_schedule", "10m"}});
    token_file_ = daemon_->dir() / "admin.token";
    {
      std::ofstream out(token_file_, std::ios::trunc);
      out << admin_token << "\n";
    }
    ::chmod(token_file_.c_str(), 0600);
    daemon_->set_setting("admin_listen", "127.0.0.1:" + std::to_string(admin_port_));
    daemon_->set_setting("admin_token_file", token_file_.string());
    daemon_->start();
    ASSERT_TRUE(wait_for_tcp("127.0.0.1", admin_port_, 10s)) << "got no admin listener, want one";
    auto added = daemon_->add_customer(
        "acme", "acme.test", {"--mode", "hold", "--route", "127.0.0.1:" + std::to_string(postfix_->port())});
    ASSERT_EQ(added.exit_code, 0) << "customer add acme: got exit " << added.exit_code << " (" << added.err << ")";
  }

  // Runs one step of the browser script; its exit code (0: every check held) and output.
  command_result step(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {python, FLUSHGATE_SOURCE_DIR "/tests/integration/console_browser.py",
                                     "--url", "http://127.0.0.1:" + std::to_string(admin_port_),
                                     "--token-file", token_file_.string(), "--shots", FLUSHGATE_BINARY_DIR};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, 120s);
  }

  // One field of `customer show --json`, as text.
  std::string field_of(const std::string& customer, const std::string& key) {
    auto r = daemon_->cli({"--json", "customer", "show", customer});
    if (r.exit_code != 0) return "(no customer: " + r.err + ")";
    try {
      Poco::JSON::Parser parser;
      return parser.parse(r.out).extract<Poco::JSON::Object::Ptr>()->get(key).convert<std::string>();
    } catch (const std::exception&) {
      return "(unreadable: " + r.out + ")";
    }
  }
  std::string state_of(const std::string& customer) { return field_of(customer, "state"); }

  std::optional<postfix_instance> postfix_;
  std::optional<daemon_fixture> daemon_;
  std::filesystem::path token_file_;
  std::uint16_t admin_port_ = 0;
};

#define EXPECT_STEP_OK(result, name)                                                              \
  EXPECT_EQ((result).exit_code, 0) << "step " << name << ": got exit " << (result).exit_code       \
                                   << ", want 0\n" << (result).stdout_text << (result).stderr_text \
                                   << "\ndaemon log:\n" << daemon_->log_text()

TEST_F(ConsoleBrowser, OperatorSuspendsDeletesAndFlushesThroughTheConsole) {
  std::vector<std::string> qids;
  for (int i = 0; i < 3; ++i) {
    auto s = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                    test_message("console " + std::to_string(i), "bob@acme.test", "held for the console\r\n"));
    ASSERT_TRUE(s.error.empty()) << "submit: got " << s.error << ", want it queued";
    qids.push_back(s.qid);
  }

  // A forged POST, from another origin and with forged or stolen parts, changes nothing.
  auto forged = step({"--step", "forged", "--foreign-port", std::to_string(free_port())});
  EXPECT_STEP_OK(forged, "forged");
  EXPECT_EQ(state_of("acme"), "enabled") << "got acme's state changed by forged POSTs, want enabled";
  EXPECT_TRUE(wait_log_line(*daemon_, {"console:", "refused", "foreign origin"}, 5s))
      << "got no log line for the refused POST, want one";

  // Suspend, confirmed: new mail now gets 450.
  auto suspend = step({"--step", "suspend"});
  EXPECT_STEP_OK(suspend, "suspend");
  EXPECT_EQ(state_of("acme"), "suspended") << "got acme's state after the console's suspend, want suspended";
  auto refused = submit(daemon_->port(), "alice@sender.test", {{"bob@acme.test", ""}},
                        test_message("while suspended", "bob@acme.test", "x\r\n"));
  EXPECT_NE(refused.error.find("450"), std::string::npos)
      << "got \"" << refused.error << "\" for mail to a suspended customer, want a 450 at RCPT";
  EXPECT_TRUE(wait_log_line(*daemon_, {"console: s:", "from 127.0.0.1", "suspend customer acme"}, 5s))
      << "got no log line naming the session and the suspend, want one";

  // Delete one message, confirmed (after a cancel).
  auto deleted = step({"--step", "delete", "--qid", qids[0]});
  EXPECT_STEP_OK(deleted, "delete");
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 2, 5s)) << "got " << queued_for(*daemon_, "acme").value_or(99)
                                                    << " messages queued after the delete, want 2";

  // Flush now: the two left arrive at the customer's Postfix.
  auto flushed = step({"--step", "flush", "--expect-delivered", "2"});
  EXPECT_STEP_OK(flushed, "flush");
  EXPECT_TRUE(wait_until([&] { return postfix_->message_files().size() == 2; }, 30s))
      << "got " << postfix_->message_files().size() << " messages at Postfix, want 2";
  EXPECT_TRUE(wait_queued(*daemon_, "acme", 0, 5s)) << "got mail still queued after the flush, want none";

  // Add a customer through the form: the CLI's validation speaks first.
  auto added = step({"--step", "add"});
  EXPECT_STEP_OK(added, "add");
  EXPECT_EQ(state_of("beta"), "enabled") << "got no customer beta after the form, want it added";
  EXPECT_EQ(field_of("beta", "quota"), "10485760") << "got beta's quota after the change form, want 10M";
}

}  // namespace
