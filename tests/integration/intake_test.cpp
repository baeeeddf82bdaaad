// intake_test.cpp — mail intake end to end: the real flushgated, the real
// flushgate CLI, swaks and exact-byte probes on 127.0.0.1.
//
// Covers ARCHITECTURE.md invariant 3 (only enabled customers' domains, no
// open relay, recipient lists checked at RCPT time), the stored form of a
// message (our Received: first, content unchanged), DSN parameters kept
// (RFC 3461), one queue entry per customer, the session basics of RFC 5321
// and reply order under PIPELINING (RFC 2920 §3.2).
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/smtp_helpers.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>

namespace {

using namespace flushgate::test;
using namespace std::chrono_literals;

class Intake : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_.start();
    auto added = daemon_.add_customer("demo", "demo.test", {"--mode", "hold"});
    ASSERT_EQ(added.exit_code, 0) << "customer add demo: got exit " << added.exit_code << " ("
                                  << added.err << "), want 0";
  }

  // The total queue size, failing the test when the CLI cannot tell.
  std::uint64_t queued() {
    auto n = daemon_.queued_messages();
    EXPECT_TRUE(n.has_value()) << "queue summary --json failed; log:\n" << daemon_.log_text();
    return n.value_or(~std::uint64_t{0});
  }

  // swaks against the daemon; its whole transcript comes back in out.
  cli_result swaks(const std::vector<std::string>& args) {
    std::vector<std::string> argv{"swaks", "--server",
                                  "127.0.0.1:" + std::to_string(daemon_.port()), "--helo",
                                  "client.test", "--timeout", "20"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run_command(argv, 60s);
    return {r.exit_code, r.stdout_text + r.stderr_text, {}};
  }

  daemon_fixture daemon_;
};

TEST_F(Intake, SwaksMessageIsQueuedWithReceivedFirst) {
  if (!program_available("swaks")) GTEST_SKIP() << "swaks is not installed";
  const std::string token = "flushgate-intake-body-7f3a";
  auto sent = swaks({"--from", "alice@sender.test", "--to", "bob@demo.test", "--header",
                     "Subject: intake", "--body", "first line\n" + token + "\nlast line"});
  ASSERT_EQ(sent.exit_code, 0) << "swaks: got exit " << sent.exit_code << ", want 0\n" << sent.out;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(sent.out, match, std::regex("<-  250 2\\.0\\.0 Ok: queued as (\\S+)")))
      << "got no \"250 2.0.0 Ok: queued as\" in the swaks transcript, want one:\n" << sent.out;
  const std::string qid = match[1];

  EXPECT_EQ(queued(), 1u);
  auto shown = daemon_.show_message(qid);
  ASSERT_TRUE(shown) << "queue show " << qid << " --json failed";
  EXPECT_EQ(shown->getValue<std::string>("sender"), "alice@sender.test");

  ASSERT_EQ(daemon_.stop(), 0) << daemon_.log_text();
  auto stored = daemon_fixture::read_store(daemon_.data_dir());
  ASSERT_TRUE(stored) << "read_store: got " << stored.error().message() << ", want the queue";
  ASSERT_EQ(stored->size(), 1u);
  const auto& m = stored->front();
  EXPECT_EQ(m.info.qid, qid);
  ASSERT_EQ(m.info.recipients.size(), 1u);
  EXPECT_EQ(m.info.recipients[0].address, "bob@demo.test");
  EXPECT_EQ(m.info.size, m.content.size());
  auto [received, rest] = split_received(m.content);
  EXPECT_TRUE(received.starts_with("Received: from client.test ([127.0.0.1])\r\n"))
      << "got Received header \"" << received << "\", want it to start with our from clause";
  EXPECT_NE(received.find("by gw.test (flushgate) with ESMTP\r\n"), std::string::npos)
      << "got Received header \"" << received << "\", want \"by gw.test (flushgate) with ESMTP\"";
  EXPECT_NE(received.find("for <bob@demo.test>;"), std::string::npos) << received;
  EXPECT_NE(rest.find("Subject: intake\r\n"), std::string::npos) << rest;
  EXPECT_NE(rest.find("\r\n" + token + "\r\n"), std::string::npos)
      << "got stored content without the body line \"" << token << "\":\n" << rest;
  EXPECT_EQ(rest.find("Received:"), std::string::npos)
      << "got a second Received header, want only ours:\n" << m.content;
}

TEST_F(Intake, SwaksRelayToOtherDomainIsRefused) {
  if (!program_available("swaks")) GTEST_SKIP() << "swaks is not installed";
  auto sent = swaks({"--from", "alice@sender.test", "--to", "bob@evil.test"});
  EXPECT_NE(sent.exit_code, 0) << sent.out;
  EXPECT_NE(sent.out.find("550 5.7.1"), std::string::npos)
      << "got no \"550 5.7.1\" for a foreign domain, want one:\n" << sent.out;
  EXPECT_EQ(queued(), 0u);
}

// The open-relay tricks of old, each at RCPT time in one transaction.
TEST_F(Intake, OpenRelayProbesAreRefused) {
  struct relay_case {
    const char* rcpt;
    int code;
    const char* enhanced;
  };
  const relay_case cases[] = {
      {"user%evil.test@demo.test", 550, "5.7.1"},      // percent hack
      {"evil.test!user@demo.test", 550, "5.7.1"},      // bang path
      {"@demo.test:user@evil.test", 550, "5.7.1"},     // source route to a foreign domain
      {"\"user@evil.test\"@demo.test", 550, "5.7.1"},  // quoted '@'
      {"user@[127.0.0.1]", 550, "5.7.1"},              // address literal
      {"user@evil.test", 550, "5.7.1"},                // plain foreign domain
      {"user@sub.demo.test", 550, "5.7.1"},            // subdomains were not enabled
      {"user@demo.test.", 501, ""},                    // trailing dot: syntax
      {"user@DEMO.TEST", 250, "2.1.5"},                // domains are case-insensitive
  };
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  ASSERT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test>"), 250, "2.1.0"));
  for (const auto& c : cases) {
    EXPECT_TRUE(reply_is(probe.command(std::string("RCPT TO:<") + c.rcpt + ">"), c.code, c.enhanced))
        << "RCPT TO:<" << c.rcpt << ">";
  }
  EXPECT_TRUE(reply_is(probe.command("RSET"), 250));
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
  EXPECT_EQ(queued(), 0u);
}

TEST_F(Intake, CustomerStatesDecideAtRcpt) {
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  ASSERT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test>"), 250));

  auto disabled = daemon_.cli({"customer", "disable", "demo"});
  ASSERT_EQ(disabled.exit_code, 0) << disabled.err;
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<bob@demo.test>"), 550, "5.7.1"))
      << "disabled customer";

  auto suspended = daemon_.cli({"customer", "suspend", "demo"});
  ASSERT_EQ(suspended.exit_code, 0) << suspended.err;
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<bob@demo.test>"), 450, "4.7.1"))
      << "suspended customer";

  auto enabled = daemon_.cli({"customer", "enable", "demo"});
  ASSERT_EQ(enabled.exit_code, 0) << enabled.err;
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<bob@demo.test>"), 250, "2.1.5"))
      << "enabled again";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
}

TEST_F(Intake, RecipientListRefusesUnknownUsersAtRcpt) {
  const auto list = daemon_.dir() / "recipients.txt";
  std::ofstream(list) << "# the customer's mailboxes\nlisted@list.test\n";
  auto added = daemon_.add_customer("listco", "list.test", {"--mode", "hold", "--recipients",
                                                            list.string()});
  ASSERT_EQ(added.exit_code, 0) << added.err;

  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  ASSERT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test>"), 250));
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<listed@list.test>"), 250, "2.1.5"));
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<other@list.test>"), 550, "5.1.1"));
  ASSERT_TRUE(reply_is(probe.command("DATA"), 354));
  ASSERT_FALSE(probe.send_raw(dot_stuffed(make_message({"Subject: list"}, "hello\r\n"))));
  auto done = probe.read_reply();
  ASSERT_TRUE(reply_is(done, 250, "2.0.0"));
  auto ids = queue_ids(*done);
  ASSERT_EQ(ids.size(), 1u) << describe(done);
  auto shown = daemon_.show_message(ids[0]);
  ASSERT_TRUE(shown);
  auto rcpts = shown->getArray("recipients");
  ASSERT_TRUE(rcpts);
  ASSERT_EQ(rcpts->size(), 1u) << "got the refused recipient queued too, want only the listed one";
  EXPECT_EQ(rcpts->getObject(0)->getValue<std::string>("address"), "listed@list.test");
}

TEST_F(Intake, DsnParametersAreStored) {
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  ASSERT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test> RET=HDRS ENVID=QQ314+2B159"),
                       250));
  ASSERT_TRUE(reply_is(
      probe.command("RCPT TO:<bob@demo.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@demo.test"),
      250));
  ASSERT_TRUE(reply_is(probe.command("RCPT TO:<carol@demo.test> NOTIFY=NEVER"), 250));
  ASSERT_TRUE(reply_is(probe.command("DATA"), 354));
  ASSERT_FALSE(probe.send_raw(dot_stuffed(make_message({"Subject: dsn"}, "dsn\r\n"))));
  auto done = probe.read_reply();
  ASSERT_TRUE(reply_is(done, 250));
  auto ids = queue_ids(*done);
  ASSERT_EQ(ids.size(), 1u) << describe(done);

  auto shown = daemon_.show_message(ids[0]);
  ASSERT_TRUE(shown) << "queue show " << ids[0] << " failed";
  EXPECT_EQ(shown->getValue<std::string>("envid"), "QQ314+2B159");
  EXPECT_EQ(shown->getValue<std::string>("ret"), "HDRS");
  auto rcpts = shown->getArray("recipients");
  ASSERT_TRUE(rcpts);
  ASSERT_EQ(rcpts->size(), 2u);
  std::map<std::string, std::pair<std::string, std::string>> by_address;  // notify, orcpt
  for (unsigned i = 0; i < rcpts->size(); ++i) {
    auto r = rcpts->getObject(i);
    by_address[r->getValue<std::string>("address")] = {r->getValue<std::string>("notify"),
                                                       r->getValue<std::string>("orcpt")};
  }
  EXPECT_EQ(by_address["bob@demo.test"].first, "SUCCESS,FAILURE");
  EXPECT_EQ(by_address["bob@demo.test"].second, "rfc822;bob@demo.test");
  EXPECT_EQ(by_address["carol@demo.test"].first, "NEVER");
  EXPECT_EQ(by_address["carol@demo.test"].second, "");
}

TEST_F(Intake, TwoCustomersGetOneQueueEntryEach) {
  auto added = daemon_.add_customer("other", "other.test", {"--mode", "hold"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  auto sent = send_message(probe, "alice@sender.test", {"bob@demo.test", "wendy@other.test"},
                           make_message({"Subject: two"}, "for two customers\r\n"));
  ASSERT_EQ(sent.stopped_at, stage::done) << describe(sent.reply);
  ASSERT_TRUE(reply_is(sent.reply, 250, "2.0.0"));
  auto ids = queue_ids(*sent.reply);
  ASSERT_EQ(ids.size(), 2u) << "got " << describe(sent.reply) << ", want two queue ids";
  EXPECT_EQ(queued(), 2u);

  std::set<std::string> customers;
  for (const auto& id : ids) {
    auto shown = daemon_.show_message(id);
    ASSERT_TRUE(shown) << "queue show " << id;
    customers.insert(shown->getValue<std::string>("customer"));
    auto rcpts = shown->getArray("recipients");
    ASSERT_TRUE(rcpts);
    EXPECT_EQ(rcpts->size(), 1u) << "each entry holds only its own customer's recipient";
  }
  EXPECT_EQ(customers, (std::set<std::string>{"demo", "other"}));
}

// A cut `queue list` says so: "N of M shown" on stderr, and its JSON
// carries the total (for everyone and for one customer).
TEST_F(Intake, QueueListSaysWhenItIsCut) {
  auto added = daemon_.add_customer("other", "other.test", {"--mode", "hold"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  for (int i = 0; i < 5; ++i) {
    auto sent = send_message(probe, "alice@sender.test", {i < 4 ? "bob@demo.test" : "wendy@other.test"},
                             make_message({"Subject: list " + std::to_string(i)}, "body\r\n"));
    ASSERT_TRUE(reply_is(sent.reply, 250)) << describe(sent.reply);
  }
  auto cut = daemon_.cli({"queue", "list", "--limit", "2"});
  ASSERT_EQ(cut.exit_code, 0) << cut.err;
  EXPECT_NE(cut.err.find("2 of 5 shown (--limit N, --customer NAME)"), std::string::npos)
      << "got stderr \"" << cut.err << "\", want it to say 2 of 5 shown";
  auto whole = daemon_.cli({"queue", "list"});
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  EXPECT_EQ(whole.err, "") << "a list that is not cut says nothing more";

  auto json = daemon_.cli({"--json", "queue", "list", "--customer", "demo", "--limit", "3"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  Poco::JSON::Parser parser;
  auto page = parser.parse(json.out).extract<Poco::JSON::Object::Ptr>();
  EXPECT_EQ(page->getArray("messages")->size(), 3u);
  EXPECT_EQ(page->getValue<std::uint64_t>("shown"), 3u);
  EXPECT_EQ(page->getValue<std::uint64_t>("total"), 4u) << "demo has 4 queued: " << json.out;
  EXPECT_EQ(page->getValue<std::uint64_t>("limit"), 3u);
}

TEST_F(Intake, SessionBasics) {
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port(), ""));
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<bob@demo.test>"), 503)) << "RCPT before HELO";
  EXPECT_TRUE(reply_is(probe.command("HELO client.test"), 250));
  auto ehlo = probe.command("EHLO client.test");
  ASSERT_TRUE(reply_is(ehlo, 250));
  for (const char* keyword : {"PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"}) {
    EXPECT_TRUE(std::any_of(ehlo->lines.begin(), ehlo->lines.end(),
                            [&](const std::string& l) { return l.starts_with(keyword); }))
        << "got EHLO reply " << describe(ehlo) << ", want " << keyword;
  }
  EXPECT_FALSE(std::any_of(ehlo->lines.begin(), ehlo->lines.end(),
                           [](const std::string& l) { return l == "STARTTLS"; }))
      << "got STARTTLS offered without a certificate: " << describe(ehlo);
  EXPECT_TRUE(reply_is(probe.command("NOOP"), 250, "2.0.0"));
  EXPECT_TRUE(reply_is(probe.command("RSET"), 250, "2.0.0"));
  EXPECT_TRUE(reply_is(probe.command("VRFY bob@demo.test"), 252));
  EXPECT_TRUE(reply_is(probe.command("HELP"), 214));
  EXPECT_TRUE(reply_is(probe.command("RCPT TO:<bob@demo.test>"), 503, "5.5.1"))
      << "RCPT before MAIL";
  EXPECT_TRUE(reply_is(probe.command("DATA"), 503, "5.5.1")) << "DATA before MAIL";
  EXPECT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test> FROBNICATE=yes"), 555))
      << "unknown MAIL parameter";
  EXPECT_TRUE(reply_is(probe.command("FROB"), 500)) << "unknown command";
  // After all that the session still works.
  EXPECT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test>"), 250, "2.1.0"));
  EXPECT_TRUE(reply_is(probe.command("MAIL FROM:<alice@sender.test>"), 503)) << "nested MAIL";
  EXPECT_TRUE(reply_is(probe.command("QUIT"), 221));
  auto after = probe.read_reply();
  EXPECT_FALSE(after) << "got " << describe(after) << " after QUIT, want the connection closed";
  if (!after) {
    EXPECT_EQ(after.error(), make_error_code(probe_errc::closed));
  }
}

// RFC 2920 §3.2: one write with a whole group gets every reply, in order.
TEST_F(Intake, PipelinedGroupGetsRepliesInOrder) {
  smtp_probe probe;
  ASSERT_TRUE(open_session(probe, daemon_.port()));
  ASSERT_FALSE(probe.send_raw("MAIL FROM:<alice@sender.test>\r\n"
                              "RCPT TO:<bob@demo.test>\r\n"
                              "RCPT TO:<mallory@evil.test>\r\n"
                              "RCPT TO:<carol@demo.test>\r\n"
                              "DATA\r\n"));
  EXPECT_TRUE(reply_is(probe.read_reply(), 250, "2.1.0")) << "MAIL";
  EXPECT_TRUE(reply_is(probe.read_reply(), 250, "2.1.5")) << "RCPT bob";
  EXPECT_TRUE(reply_is(probe.read_reply(), 550, "5.7.1")) << "RCPT mallory";
  EXPECT_TRUE(reply_is(probe.read_reply(), 250, "2.1.5")) << "RCPT carol";
  ASSERT_TRUE(reply_is(probe.read_reply(), 354)) << "DATA";
  // The content, the dot, and the next group in one write (RFC 2920 §3.1).
  ASSERT_FALSE(probe.send_raw(dot_stuffed(make_message({"Subject: pipe"}, "pipelined\r\n")) +
                              "RSET\r\nNOOP\r\n"));
  auto done = probe.read_reply();
  EXPECT_TRUE(reply_is(done, 250, "2.0.0")) << "end of data";
  EXPECT_TRUE(reply_is(probe.read_reply(), 250, "2.0.0")) << "RSET";
  EXPECT_TRUE(reply_is(probe.read_reply(), 250, "2.0.0")) << "NOOP";
  ASSERT_TRUE(done);
  auto ids = queue_ids(*done);
  ASSERT_EQ(ids.size(), 1u);
  auto shown = daemon_.show_message(ids[0]);
  ASSERT_TRUE(shown);
  EXPECT_EQ(shown->getValue<std::uint64_t>("recipient_count"), 2u);
}

}  // namespace
