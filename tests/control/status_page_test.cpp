// status_page_test.cpp — the status page renderer: escaping of untrusted
// text, snapshots with missing, null and mistyped fields, the order of the
// customers, human units, the refresh, and that the page fetches nothing.
#include "control/status_page.hpp"
#include "tests/support/chromium.hpp"

#include <Poco/Base64Encoder.h>
#include <Poco/JSON/Parser.h>
#include <Poco/SHA2Engine.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using flushgate::control::format_age;
using flushgate::control::format_bytes;
using flushgate::control::html_escape;
using flushgate::control::render_status_page;

Poco::JSON::Object::Ptr parse(const std::string& json) {
  Poco::JSON::Parser parser;
  return parser.parse(json).extract<Poco::JSON::Object::Ptr>();
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// A full snapshot as the daemon's `status` command produces it.
const char* full_snapshot = R"json({
  "generated": 1795000000, "hostname": "gw1.isp.test", "version": "0.1.0",
  "uptime_seconds": 3600, "refresh_seconds": 10,
  "disk": {"free_bytes": 123456789, "min_free_bytes": 100000000, "low": false},
  "totals": {"customers": 2, "messages": 15, "bytes": 1234567, "oldest_age_seconds": 7200, "links_up": 1},
  "customers": [
    {"name": "acme", "state": "enabled", "mode": "relay", "activity": "flushing",
     "route": "link 127.0.0.5:25 (dsl acme-dsl)", "messages": 12, "bytes": 34567,
     "oldest_age_seconds": 5400, "domains": ["acme.test"],
     "flush": {"messages_done": 3, "messages_total": 12, "bytes_done": 100, "bytes_total": 400}},
    {"name": "beta", "state": "enabled", "mode": "hold", "activity": "held", "route": "",
     "messages": 3, "bytes": 3000, "oldest_age_seconds": 7200, "domains": ["beta.test"],
     "last_error": "connect to 127.0.0.6:25: Connection refused"}
  ],
  "age_histogram": [
    {"label": "< 5 min", "upper_seconds": 300, "messages": 10, "bytes": 1000},
    {"label": "> 5 d", "upper_seconds": -1, "messages": 0, "bytes": 0}
  ],
  "links": [{"customer": "acme", "user": "acme-dsl", "kind": "dsl", "address": "127.0.0.5",
             "nas": "bras-1", "session": "S1", "since": 1794990000, "source": "radius"}],
  "events": [
    {"time": 1794999000, "kind": "link_up", "customer": "acme", "text": "link up acme-dsl 127.0.0.5"},
    {"time": 1794999500, "kind": "flush_failed", "customer": "beta", "text": "second event"}
  ]
})json";

TEST(HtmlEscape, ReplacesMarkupCharactersAndBothQuotes) {
  EXPECT_EQ(html_escape("<a href=\"x\" title='y'>&amp;</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;");
  EXPECT_EQ(html_escape("plain text, ümlaut"), "plain text, ümlaut");
  EXPECT_EQ(html_escape(""), "");
}

TEST(FormatBytes, UsesHumanUnitsBasedOn1024) {
  const std::vector<std::pair<std::uint64_t, std::string>> cases = {
      {0, "0 B"},          {999, "999 B"},           {1023, "1023 B"},
      {1024, "1.0 KiB"},   {1229, "1.2 KiB"},        {34567, "34 KiB"},
      {1234567, "1.2 MiB"}, {123456789, "118 MiB"}, {5ull << 30, "5.0 GiB"},
      {3ull << 40, "3.0 TiB"}};
  for (const auto& [bytes, want] : cases)
    EXPECT_EQ(format_bytes(bytes), want) << "format_bytes(" << bytes << "): got " << format_bytes(bytes)
                                         << ", want " << want;
}

TEST(FormatAge, ShowsTheTwoLargestUnits) {
  const std::vector<std::pair<std::int64_t, std::string>> cases = {
      {-5, "0s"},         {0, "0s"},          {42, "42s"},         {65, "1m05s"},
      {3599, "59m59s"},   {3600, "1h00m"},    {11520, "3h12m"},    {86399, "23h59m"},
      {86400, "1d00h"},   {187200, "2d04h"},  {432000, "5d00h"}};
  for (const auto& [seconds, want] : cases)
    EXPECT_EQ(format_age(seconds), want) << "format_age(" << seconds << "): got " << format_age(seconds)
                                         << ", want " << want;
}

TEST(StatusPage, ShowsEverythingAFullSnapshotHas) {
  const std::string page = render_status_page(parse(full_snapshot));
  for (const char* want : {"gw1.isp.test", "v0.1.0", "up 1h00m", "acme", "beta", "acme.test",
                           "flushing", "held", "link 127.0.0.5:25 (dsl acme-dsl)", "34 KiB",
                           "1h30m", "2h00m", "Connection refused", "&lt; 5 min", "&gt; 5 d",
                           "acme-dsl", "bras-1", "2h46m", "link up acme-dsl 127.0.0.5",
                           "118 MiB", "1.2 MiB", "3 / 12 messages \xC2\xB7 25%", "width:25%",
                           "100 B of 400 B sent"}) {
    EXPECT_NE(page.find(want), std::string::npos) << "got a page without \"" << want << "\", want it there";
  }
  EXPECT_NE(page.find("<meta http-equiv=\"refresh\" content=\"10\">"), std::string::npos)
      << "got no refresh meta for refresh_seconds 10, want one";
  EXPECT_EQ(page.rfind("</html>\n"), page.size() - 8) << "got a page that does not end in </html>";
}

// A cluster's snapshot has a "cluster" object: the page shows every node,
// a silent one marked, and who delivers which customer.
TEST(StatusPage, ShowsTheClusterBoxOnlyForACluster) {
  auto snapshot = parse(R"json({"generated": 1700000000, "hostname": "gw1",
    "cluster": {"node": "gw-a", "nodes": [
        {"name": "gw-a", "version": "0.1.0", "heartbeat_age_ms": 1200, "alive": true, "self": true, "leases": 1},
        {"name": "gw-<b>", "version": "0.1.0", "heartbeat_age_ms": 60000, "alive": false, "self": false, "leases": 0}],
      "leases": [{"customer": "acme", "holder": "gw-a", "fence": 3, "expires_in_ms": 9000, "held_for_ms": 100}]}})json");
  const std::string page = render_status_page(snapshot);
  EXPECT_NE(page.find("id=\"cluster\""), std::string::npos) << "no cluster box";
  EXPECT_NE(page.find("2 nodes"), std::string::npos);
  EXPECT_NE(page.find("this node"), std::string::npos);
  EXPECT_NE(page.find("silent"), std::string::npos) << "the silent node is not marked";
  EXPECT_NE(page.find("gw-&lt;b&gt;"), std::string::npos) << "a node name is not escaped";
  EXPECT_EQ(page.find("gw-<b>"), std::string::npos);
  EXPECT_NE(page.find("delivered by gw-a"), std::string::npos);
  EXPECT_EQ(render_status_page(parse(R"json({"generated": 1700000000})json")).find("id=\"cluster\""),
            std::string::npos)
      << "a single node's page has a cluster box";
}

TEST(StatusPage, EscapesHostileTextEverywhere) {
  const std::string hostile = "<script>alert(\"x\")</script>";
  auto snapshot = parse(R"json({"hostname": "<b>host</b>",
    "customers": [{"name": "<script>alert(\"x\")</script>", "activity": "<img src=x onerror=alert(1)>",
                   "mode": "\"><svg onload=alert(1)>", "route": "<i>route</i>",
                   "domains": ["<d>.test"], "last_error": "'><script>e</script>", "messages": 1}],
    "links": [{"customer": "<c>", "user": "<script>u</script>", "kind": "<k>", "address": "<a>",
               "nas": "<n>", "session": "<s>", "source": "<src>"}],
    "events": [{"time": 1, "kind": "<script>k</script>", "customer": "O'Brien & \"Co\"",
                "text": "<script>alert(1)</script>"}],
    "age_histogram": [{"label": "<script>l</script>", "messages": 1}]})json");
  const std::string page = render_status_page(snapshot);
  EXPECT_EQ(count_of(page, "<script"), 1u) << "got " << count_of(page, "<script")
                                           << " script elements, want only the page's own";
  for (const char* raw : {"<img", "<svg", "<i>", "<d>", "<b>host", "<c>", "<k>", "<a>", "<n>", "<s>",
                          "<src>", "O'Brien", "\"Co\""}) {
    EXPECT_EQ(page.find(raw), std::string::npos) << "got raw \"" << raw << "\" in the page, want it escaped";
  }
  EXPECT_NE(page.find(html_escape(hostile)), std::string::npos)
      << "got no escaped customer name, want it shown as text";
  EXPECT_NE(page.find("data-customer=\"" + html_escape(hostile) + "\""), std::string::npos)
      << "got the name unescaped in the data-customer attribute, want it escaped";
  EXPECT_NE(page.find("O&#39;Brien &amp; &quot;Co&quot;"), std::string::npos);
}

TEST(StatusPage, RendersEmptyAndNullSnapshots) {
  for (const auto& snapshot : {Poco::JSON::Object::Ptr(), Poco::JSON::Object::Ptr(new Poco::JSON::Object)}) {
    const std::string page = render_status_page(snapshot);
    EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u) << "got a page that does not start with the doctype";
    EXPECT_NE(page.find("No customers in this snapshot."), std::string::npos);
    EXPECT_NE(page.find("No link is up."), std::string::npos);
    EXPECT_NE(page.find("No events yet."), std::string::npos);
    EXPECT_NE(page.find("</html>"), std::string::npos);
    EXPECT_NE(page.find("content=\"10\""), std::string::npos) << "got no default refresh, want 10 s";
  }
}

TEST(StatusPage, RendersWhatIsThereWhenFieldsAreMissingNullOrMistyped) {
  auto snapshot = parse(R"json({"generated": "soon", "hostname": 42, "uptime_seconds": null,
    "refresh_seconds": "abc", "disk": [1, 2], "totals": "many",
    "customers": [7, null, "x", {"name": 5, "messages": "abc", "bytes": -4, "oldest_age_seconds": 1e300,
                   "flush": "yes", "domains": "acme.test", "activity": null},
                  {"name": "only-a-name"}, {}],
    "age_histogram": {"label": "not an array"}, "links": [null, {"since": "x"}],
    "events": [{"time": null}, {"kind": 3, "text": ["a"]}, 12]})json");
  std::string page;
  ASSERT_NO_THROW(page = render_status_page(snapshot));
  EXPECT_NE(page.find("only-a-name"), std::string::npos) << "got no customer with just a name, want it shown";
  EXPECT_NE(page.find("data-customer=\"5\""), std::string::npos) << "got no customer named 5, want it shown";
  EXPECT_EQ(count_of(page, "<tr class=\"cust"), 3u) << "got " << count_of(page, "<tr class=\"cust")
                                                    << " customer rows, want 3 (the objects)";
  EXPECT_EQ(count_of(page, "<tr class=\"event\""), 2u);
  EXPECT_NE(page.find("</html>"), std::string::npos);
}

TEST(StatusPage, RendersExtremeNumbers) {
  auto snapshot = parse(R"json({"generated": 1e300, "uptime_seconds": -9223372036854775808,
    "disk": {"free_bytes": 18446744073709551615, "min_free_bytes": 9223372036854775807},
    "totals": {"messages": -5, "oldest_age_seconds": 9223372036854775807},
    "customers": [{"name": "big", "messages": 9223372036854775807, "bytes": 18446744073709551615,
                   "oldest_age_seconds": -9223372036854775808,
                   "flush": {"messages_done": 9223372036854775807, "messages_total": 1}}],
    "age_histogram": [{"label": "a", "messages": 9223372036854775807}, {"label": "b", "messages": 1}],
    "links": [{"customer": "big", "since": -9223372036854775808}],
    "events": [{"time": 9223372036854775807, "text": "late"}, {"time": -1, "text": "early"}]})json");
  std::string page;
  ASSERT_NO_THROW(page = render_status_page(snapshot));
  EXPECT_NE(page.find("data-customer=\"big\""), std::string::npos);
  EXPECT_NE(page.find("width:100%"), std::string::npos) << "got no full progress bar for done > total";
  EXPECT_NE(page.find("</html>"), std::string::npos);
}

TEST(StatusPage, PutsTroubleOnTop) {
  auto snapshot = parse(R"json({"customers": [
    {"name": "quiet", "activity": "idle", "messages": 0},
    {"name": "busy", "activity": "relaying", "messages": 2, "oldest_age_seconds": 30},
    {"name": "up", "activity": "link_up", "messages": 0},
    {"name": "flush", "activity": "flushing", "messages": 5, "oldest_age_seconds": 9000},
    {"name": "off", "state": "disabled", "activity": "disabled", "messages": 0},
    {"name": "susp", "state": "suspended", "activity": "suspended", "messages": 1, "oldest_age_seconds": 60},
    {"name": "nolink", "activity": "held", "messages": 0},
    {"name": "failing", "activity": "relaying", "messages": 1, "oldest_age_seconds": 100,
     "last_error": "451 try later"},
    {"name": "held-new", "activity": "held", "messages": 4, "oldest_age_seconds": 600},
    {"name": "held-old", "activity": "held", "messages": 1, "oldest_age_seconds": 7200}]})json");
  const std::string page = render_status_page(snapshot);
  const std::vector<std::string> want = {"held-old", "held-new", "failing", "nolink", "susp",
                                         "off",      "flush",    "up",      "busy",   "quiet"};
  std::vector<std::pair<std::size_t, std::string>> got;
  for (const auto& name : want) {
    const auto at = page.find("data-customer=\"" + name + "\"");
    ASSERT_NE(at, std::string::npos) << "got no row for " << name;
    got.emplace_back(at, name);
  }
  std::sort(got.begin(), got.end());
  std::string got_order, want_order;
  for (std::size_t i = 0; i < want.size(); ++i) {
    got_order += got[i].second + " ";
    want_order += want[i] + " ";
  }
  EXPECT_EQ(got_order, want_order) << "got order " << got_order << ", want " << want_order;
  EXPECT_NE(page.find("class=\"cust t-bad\" data-customer=\"held-old\""), std::string::npos)
      << "got held mail without the red marker, want it marked";
}

TEST(StatusPage, ListsEventsNewestFirst) {
  const std::string page = render_status_page(parse(full_snapshot));
  const auto second = page.find("second event");
  const auto first = page.find("link up acme-dsl 127.0.0.5");
  ASSERT_NE(second, std::string::npos);
  ASSERT_NE(first, std::string::npos);
  EXPECT_LT(second, first) << "got the older event first, want newest first";
}

TEST(StatusPage, CapsLongLists) {
  Poco::JSON::Array::Ptr events = new Poco::JSON::Array;
  for (int i = 0; i < 1000; ++i) {
    Poco::JSON::Object::Ptr e = new Poco::JSON::Object;
    e->set("time", i);
    e->set("kind", "refused");
    e->set("text", "event " + std::to_string(i));
    events->add(e);
  }
  Poco::JSON::Object::Ptr snapshot = new Poco::JSON::Object;
  snapshot->set("events", events);
  snapshot->set("generated", 1000);
  const std::string page = render_status_page(snapshot);
  EXPECT_EQ(count_of(page, "<tr class=\"event\""), 100u);
  EXPECT_NE(page.find("event 999<"), std::string::npos) << "got no newest event, want it first";
  EXPECT_EQ(page.find("event 899<"), std::string::npos) << "got the 101st newest event, want it cut";
  EXPECT_NE(page.find("900 older events not shown"), std::string::npos);
}

TEST(StatusPage, RefreshFollowsTheSnapshot) {
  EXPECT_NE(render_status_page(parse(R"({"refresh_seconds": 30})")).find("http-equiv=\"refresh\" content=\"30\""),
            std::string::npos);
  EXPECT_NE(render_status_page(parse(R"({"refresh_seconds": 1})")).find("http-equiv=\"refresh\" content=\"2\""),
            std::string::npos)
      << "got no clamped refresh, want 2 s at least";
  EXPECT_EQ(render_status_page(parse(R"({"refresh_seconds": 0})")).find("http-equiv=\"refresh\""),
            std::string::npos)
      << "got a refresh for refresh_seconds 0, want none";
}

TEST(StatusPage, MarksLowDiskRed) {
  auto low = render_status_page(parse(R"({"disk": {"free_bytes": 1000, "min_free_bytes": 5000, "low": true}})"));
  EXPECT_NE(low.find("<div class=\"tile bad\" id=\"t-disk\">"), std::string::npos) << "got no red disk tile";
  auto fine = render_status_page(parse(R"({"disk": {"free_bytes": 50000, "min_free_bytes": 5000, "low": false}})"));
  EXPECT_NE(fine.find("<div class=\"tile ok\" id=\"t-disk\">"), std::string::npos) << "got no green disk tile";
  auto below = render_status_page(parse(R"({"disk": {"free_bytes": 1000, "min_free_bytes": 5000}})"));
  EXPECT_NE(below.find("<div class=\"tile bad\" id=\"t-disk\">"), std::string::npos)
      << "got no red tile with free below the minimum and no low flag, want red";
}

TEST(StatusPage, FetchesNothingFromAnywhere) {
  const std::string page = render_status_page(parse(full_snapshot));
  for (const char* bad : {"http://", "https://", "//", "src=", "@import", "url(", "<link rel=\"stylesheet\""}) {
    EXPECT_EQ(page.find(bad), std::string::npos) << "got \"" << bad << "\" in the page, want no external reference";
  }
  EXPECT_NE(page.find(html_escape("default-src 'none'")), std::string::npos) << "got no CSP that forbids fetching";
  EXPECT_NE(page.find("<link rel=\"icon\" href=\"data:,\">"), std::string::npos)
      << "got no inline favicon, want one so the browser asks for no /favicon.ico";
}

TEST(StatusPage, CspAllowsExactlyTheInlineScript) {
  const std::string page = render_status_page(parse(full_snapshot));
  const auto open = page.find("<script>");
  const auto close = page.find("</script>");
  ASSERT_NE(open, std::string::npos);
  ASSERT_NE(close, std::string::npos);
  const std::string script = page.substr(open + 8, close - open - 8);
  Poco::SHA2Engine engine(Poco::SHA2Engine::SHA_256);
  engine.update(script);
  const auto& digest = engine.digest();
  std::ostringstream b64;
  Poco::Base64Encoder encoder(b64);
  encoder.rdbuf()->setLineLength(0);
  encoder.write(reinterpret_cast<const char*>(digest.data()), static_cast<std::streamsize>(digest.size()));
  encoder.close();
  const std::string want = "script-src 'sha256-" + b64.str() + "'";
  EXPECT_NE(page.find(html_escape(want)), std::string::npos) << "got a CSP without " << want << ", want the script's hash";
}

// A day in the life of a gateway: customers in every state, a flush under
// way, links from RADIUS and a dial-up script, and a peer-supplied user
// name that tries to be markup.
const char* sample_snapshot = R"json({
  "generated": 1795000000, "hostname": "gw1.isp.test", "version": "0.1.0",
  "uptime_seconds": 273600, "refresh_seconds": 10,
  "disk": {"free_bytes": 8512000000, "min_free_bytes": 1073741824, "low": false},
  "totals": {"customers": 8, "messages": 1187, "bytes": 96554321, "oldest_age_seconds": 19620, "links_up": 3},
  "customers": [
    {"name": "acme", "state": "enabled", "mode": "relay", "activity": "flushing",
     "route": "link acme-dsl 10.20.0.5:25", "messages": 412, "bytes": 40120000, "oldest_age_seconds": 5400,
     "domains": ["acme.test", "acme-gmbh.test"], "next_attempt_in": -1,
     "flush": {"messages_done": 103, "messages_total": 412, "bytes_done": 9800000, "bytes_total": 40120000}},
    {"name": "baeckerei-huber", "state": "enabled", "mode": "hold", "activity": "held", "route": "hold",
     "messages": 37, "bytes": 2210000, "oldest_age_seconds": 19620, "domains": ["huber-brot.test"],
     "next_attempt_in": -1},
    {"name": "kanzlei-meyer", "state": "enabled", "mode": "relay", "activity": "held",
     "route": "host mail.meyer.test:25", "messages": 9, "bytes": 480000, "oldest_age_seconds": 2700,
     "domains": ["meyer-recht.test"], "next_attempt_in": 245,
     "last_error": "connect to 198.51.100.20:25: Connection timed out"},
    {"name": "<script>alert(\"pwned\")</script>", "state": "enabled", "mode": "relay", "activity": "relaying",
     "route": "mx", "messages": 0, "bytes": 0, "oldest_age_seconds": 0, "domains": ["x.test"]},
    {"name": "zahnarzt-roth", "state": "suspended", "mode": "relay", "activity": "suspended",
     "route": "host 192.0.2.44:25", "messages": 3, "bytes": 91000, "oldest_age_seconds": 600,
     "domains": ["roth-dental.test"]},
    {"name": "oldco", "state": "disabled", "mode": "hold", "activity": "disabled", "route": "hold",
     "messages": 0, "bytes": 0, "oldest_age_seconds": 0, "domains": ["oldco.test"]},
    {"name": "fischer-it", "state": "enabled", "mode": "odmr", "activity": "link_up", "route": "odmr",
     "messages": 0, "bytes": 0, "oldest_age_seconds": 0, "domains": ["fischer-it.test"]},
    {"name": "weingut-koch", "state": "enabled", "mode": "relay", "activity": "relaying",
     "route": "link koch-dial 10.99.1.17:25", "messages": 0, "bytes": 0, "oldest_age_seconds": 0,
     "domains": ["weingut-koch.test", "koch-wein.test", "koch.test", "vino.test"]}
  ],
  "age_histogram": [
    {"label": "< 5 min", "upper_seconds": 300, "messages": 611, "bytes": 50200000},
    {"label": "5 min - 1 h", "upper_seconds": 3600, "messages": 402, "bytes": 36000000},
    {"label": "1 - 4 h", "upper_seconds": 14400, "messages": 137, "bytes": 8100000},
    {"label": "4 h - 1 d", "upper_seconds": 86400, "messages": 37, "bytes": 2210000},
    {"label": "1 - 2 d", "upper_seconds": 172800, "messages": 0, "bytes": 0},
    {"label": "2 - 5 d", "upper_seconds": 432000, "messages": 0, "bytes": 0},
    {"label": "> 5 d", "upper_seconds": -1, "messages": 0, "bytes": 0}
  ],
  "links": [
    {"customer": "acme", "user": "acme-dsl", "kind": "dsl", "address": "10.20.0.5", "nas": "bras-1",
     "session": "4F2A0017", "since": 1794999100, "source": "radius"},
    {"customer": "weingut-koch", "user": "koch-dial", "kind": "dialup", "address": "10.99.1.17",
     "nas": "ppp-gw", "session": "ppp0", "since": 1794998000, "source": "control"},
    {"customer": "fischer-it", "user": "fischer-dsl", "kind": "dsl", "address": "10.20.3.9", "nas": "bras-2",
     "session": "77AC01", "since": 1794740000, "source": "pcap"}
  ],
  "events": [
    {"time": 1794999100, "kind": "link_up", "customer": "acme", "text": "link up acme-dsl 10.20.0.5 (bras-1)"},
    {"time": 1794999105, "kind": "flush_started", "customer": "acme", "text": "flush started (link up), 412 messages"},
    {"time": 1794999700, "kind": "flush_failed", "customer": "kanzlei-meyer",
     "text": "connect to 198.51.100.20:25: Connection timed out"},
    {"time": 1794999950, "kind": "link_refused", "customer": "",
     "text": "link up <img src=x onerror=alert(1)> 10.0.0.1 refused: unknown user"},
    {"time": 1794998000, "kind": "link_up", "customer": "weingut-koch", "text": "link up koch-dial 10.99.1.17"},
    {"time": 1794990000, "kind": "customer_changed", "customer": "zahnarzt-roth", "text": "suspended by root"},
    {"time": 1794985000, "kind": "dsn_queued", "customer": "baeckerei-huber",
     "text": "delay DSN to <alice@sender.test> for CR6QFDBZ5H00"}
  ]
})json";

TEST(StatusPageInBrowser, ShowsTheSampleSnapshotAndRunsOnlyItsOwnScript) {
  FLUSHGATE_SKIP_WITHOUT_CHROMIUM();
  const std::filesystem::path out_dir = FLUSHGATE_BINARY_DIR;
  const auto html = out_dir / "status_page_sample.html";
  {
    std::ofstream file(html, std::ios::binary | std::ios::trunc);
    file << render_status_page(parse(sample_snapshot));
    ASSERT_TRUE(file.good()) << "could not write " << html;
  }
  const auto wide_png = out_dir / "status_page_sample.png";
  const auto narrow_png = out_dir / "status_page_sample_narrow.png";

  flushgate::test::browser_request wide;
  wide.url = "file://" + html.string();
  wide.screenshot = wide_png;
  const auto got = flushgate::test::run_chromium(wide);
  ASSERT_FALSE(got.timed_out) << "got a browser that did not finish, want it done; log:\n" << got.log;
  ASSERT_EQ(got.exit_code, 0) << "got chromium exit " << got.exit_code << ", want 0; log:\n" << got.log;
  EXPECT_TRUE(got.screenshot_written) << "got no PNG at " << wide_png;
  std::cout << "status page screenshot (1280x800): " << wide_png.string() << "\n";

  const std::string& dom = got.dom;
  for (const char* want : {"gw1.isp.test", "acme", "baeckerei-huber", "kanzlei-meyer", "zahnarzt-roth",
                           "oldco", "fischer-it", "weingut-koch", ">flushing<", ">held<", ">relaying<",
                           ">suspended<", ">disabled<", ">link up<", "103 / 412 messages", "1187",
                           "5h27m", "acme-dsl", "koch-dial", "Connection timed out"}) {
    EXPECT_NE(dom.find(want), std::string::npos) << "got a DOM without \"" << want << "\", want it there";
  }
  // The counter script ran, so the CSP let exactly it through.
  EXPECT_NE(dom.find("updated 0 s ago"), std::string::npos)
      << "got no \"updated 0 s ago\" from the counter script, want it (CSP hash wrong?)";
  // Hostile names are text, not elements.
  EXPECT_NE(dom.find("&lt;script&gt;alert(\"pwned\")&lt;/script&gt;"), std::string::npos)
      << "got no escaped hostile customer name as text, want it shown";
  EXPECT_NE(dom.find("&lt;img src=x onerror=alert(1)&gt;"), std::string::npos);
  EXPECT_EQ(dom.find("<img"), std::string::npos) << "got an injected <img> element, want text";
  EXPECT_EQ(count_of(dom, "<script"), 1u) << "got " << count_of(dom, "<script") << " scripts, want 1";

  flushgate::test::browser_request narrow = wide;
  narrow.width = 390;
  narrow.height = 1400;
  narrow.dump_dom = false;
  narrow.screenshot = narrow_png;
  const auto small = flushgate::test::run_chromium(narrow);
  EXPECT_EQ(small.exit_code, 0) << "got chromium exit " << small.exit_code << " at 390 px, want 0";
  EXPECT_TRUE(small.screenshot_written) << "got no PNG at " << narrow_png;
  std::cout << "status page screenshot (390 px wide): " << narrow_png.string() << "\n";
}

}  // namespace
