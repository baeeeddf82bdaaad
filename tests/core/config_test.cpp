// config_test.cpp — tests core/config.cpp and core/config_table.cpp: the
// parameter table, main.cf-style parsing, $-expansion, validation, rendering.
#include "core/config.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/units.hpp"

namespace flushgate::core {
namespace {

using std::chrono::seconds;

// Parses `text` as file "t.cf"; returns the error, or "" when it parsed.
std::string parse_error(std::string_view text) {
  std::string error;
  const auto c = config::parse(text, "t.cf", error);
  if (c) return "";
  return error.empty() ? std::string("(nullopt without a message)") : error;
}

// Parses `text` as file "t.cf" and fails the test when it does not parse.
config parse_ok(std::string_view text) {
  std::string error;
  auto c = config::parse(text, "t.cf", error);
  EXPECT_TRUE(c.has_value()) << "parse(\"" << text << "\"): got error " << error
                             << ", want success";
  return c ? *c : config{};
}

std::string data_file(const std::string& name) {
  return std::string(FLUSHGATE_SOURCE_DIR) + "/tests/data/config/" + name;
}

// --- the table ----------------------------------------------------------------------

TEST(ParameterTable, EveryDefaultPassesItsOwnValidator) {
  const config defaults;
  for (const param& p : parameter_table()) {
    std::string why;
    const std::string value = defaults.text(p.name);
    EXPECT_TRUE(check_value(p, value, why))
        << p.name << " = " << value << ": got \"" << why << "\", want valid";
    config c;
    std::string error;
    EXPECT_TRUE(c.set(p.name, p.default_value, error))
        << "set(" << p.name << ", " << p.default_value << "): got \"" << error
        << "\", want success";
    EXPECT_TRUE(defaults.is_default(p.name)) << p.name << ": got not default, want default";
  }
  EXPECT_EQ(parse_error(""), "") << "an empty file must give all defaults";
}

TEST(ParameterTable, DurationAndSizeDefaultsCarryAUnit) {
  for (const param& p : parameter_table()) {
    if (p.kind != param_kind::duration && p.kind != param_kind::size) continue;
    ASSERT_FALSE(p.default_value.empty()) << p.name << ": got an empty default, want one";
    const char unit = p.default_value.back();
    if (p.kind == param_kind::duration) {
      EXPECT_NE(std::string_view("smhdw").find(unit), std::string_view::npos)
          << p.name << ": got default \"" << p.default_value
          << "\", want a unit letter (s/m/h/d/w)";
      EXPECT_TRUE(parse_duration(p.default_value).has_value())
          << p.name << ": got unparsable default \"" << p.default_value << "\", want a duration";
    } else {
      EXPECT_NE(std::string_view("BkKMGT").find(unit), std::string_view::npos)
          << p.name << ": got default \"" << p.default_value
          << "\", want a unit letter (B/k/M/G/T)";
      EXPECT_TRUE(parse_size(p.default_value).has_value())
          << p.name << ": got unparsable default \"" << p.default_value << "\", want a size";
    }
  }
}

TEST(ParameterTable, NamesAreUniqueSnakeCaseWithOneLineDocs) {
  std::set<std::string_view> seen;
  for (const param& p : parameter_table()) {
    EXPECT_TRUE(seen.insert(p.name).second) << "got " << p.name << " twice, want it once";
    EXPECT_TRUE(std::all_of(p.name.begin(), p.name.end(),
                            [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; }))
        << "got name " << p.name << ", want lowercase snake_case";
    EXPECT_FALSE(p.doc.empty()) << p.name << ": got no doc, want one line";
    EXPECT_EQ(p.doc.find('\n'), std::string_view::npos) << p.name << ": got a multi-line doc";
    EXPECT_EQ(find_param(p.name), &p) << p.name << ": find_param got another row";
    EXPECT_LE(p.min, p.max) << p.name << ": got min above max";
    EXPECT_EQ(p.kind == param_kind::choice, !p.choices.empty())
        << p.name << ": choices go with kind choice, and only there";
  }
  EXPECT_EQ(find_param("smtpd_timout"), nullptr) << "got a row for a misspelt name";
}

struct row_case {
  std::string_view name;
  param_kind kind;
  std::string_view default_value;
  std::int64_t min;
};

TEST(ParameterTable, HoldsWhatTheProductNeedsInModuleOrder) {
  using k = param_kind;
  constexpr std::int64_t any = -1;  // min not asserted
  const std::vector<row_case> want{
      {"myhostname", k::string, "", any},
      {"data_dir", k::path, "/var/lib/flushgate", any},
      {"run_user", k::string, "", any},
      {"log_target", k::string, "stderr", any},
      {"log_level", k::choice, "info", any},
      {"control_socket", k::path, "$data_dir/control.sock", any},
      {"control_group", k::string, "", any},
      {"smtpd_listen", k::listen_list, "0.0.0.0:25", any},
      {"smtpd_banner", k::string, "$myhostname ESMTP flushgate", any},
      {"smtpd_timeout", k::duration, "300s", 1},
      {"smtpd_data_timeout", k::duration, "180s", any},
      {"smtpd_session_timeout", k::duration, "3600s", any},
      {"smtpd_min_data_rate", k::count, "1024", 0},
      {"smtpd_command_line_limit", k::count, "512", 512},
      {"smtpd_text_line_limit", k::count, "1000", 1000},
      {"message_size_limit", k::size, "10M", 64 * 1024},
      {"smtpd_recipient_limit", k::count, "1000", 100},
      {"smtpd_max_connections", k::count, "500", 1},
      {"smtpd_max_connections_per_client", k::count, "20", 1},
      {"smtpd_error_limit", k::count, "20", 1},
      {"smtpd_shutdown_grace", k::duration, "30s", any},
      {"max_hops", k::count, "100", 10},
      {"smtpd_tls_cert_file", k::path, "", any},
      {"smtpd_tls_key_file", k::path, "", any},
      {"store", k::choice, "sqlite", any},
      {"postgresql_conninfo", k::string, "", any},
      {"node_name", k::string, "$myhostname", any},
      {"queue_min_free", k::size, "100M", any},
      {"queue_commit_batch", k::count, "256", 1},
      {"queue_lifetime", k::duration, "5d", any},
      {"delay_warning_time", k::duration, "4h", 0},
      {"smtp_connect_timeout", k::duration, "30s", any},
      {"smtp_helo_timeout", k::duration, "300s", any},
      {"smtp_mail_timeout", k::duration, "300s", any},
      {"smtp_rcpt_timeout", k::duration, "300s", any},
      {"smtp_data_init_timeout", k::duration, "120s", any},
      {"smtp_data_block_timeout", k::duration, "180s", any},
      {"smtp_data_done_timeout", k::duration, "600s", any},
      {"smtp_tls", k::choice, "may", any},
      {"smtp_tls_ca_file", k::path, "", any},
      {"dns_servers", k::listen_list, "", any},
      {"bounce_relay", k::string, "", any},
      {"retry_schedule", k::string, "5m,10m,30m,1h,2h,3h", any},
  };
  const auto& table = parameter_table();
  std::size_t last_index = 0;
  for (const row_case& w : want) {
    const param* p = find_param(w.name);
    ASSERT_NE(p, nullptr) << "got no row " << w.name << ", want one";
    EXPECT_EQ(p->kind, w.kind) << w.name << ": got kind " << to_string(p->kind) << ", want "
                               << to_string(w.kind);
    EXPECT_EQ(p->default_value, w.default_value)
        << w.name << ": got default " << p->default_value << ", want " << w.default_value;
    if (w.min != any) {
      EXPECT_EQ(p->min, w.min) << w.name << ": got min " << p->min << ", want " << w.min;
    }
    const auto index = static_cast<std::size_t>(p - table.data());
    EXPECT_GE(index, last_index) << w.name << ": got row " << index << ", want after row "
                                 << last_index;
    last_index = index;
  }
}

// --- file syntax --------------------------------------------------------------------

TEST(ConfigParse, SkipsCommentsAndBlankLines) {
  const config c = parse_ok(
      "# a comment\n"
      "\n"
      "   \t\n"
      "  # an indented comment is a comment, not a continuation\n"
      "smtpd_timeout = 10s\n"
      "# smtpd_timeout = 20s\n");
  EXPECT_EQ(c.duration("smtpd_timeout"), seconds{10})
      << "got " << c.raw("smtpd_timeout") << ", want 10s";
}

TEST(ConfigParse, JoinsContinuationLines) {
  const config c = parse_ok(
      "smtpd_listen = 127.0.0.1:2525,\n"
      "    [::1]:2525\n"
      "# a comment between does not end the value\n"
      "\t127.0.0.2:2526\n"
      "smtpd_banner = mx.example\n"
      "  ESMTP   ready\n");
  EXPECT_EQ(c.raw("smtpd_listen"), "127.0.0.1:2525, [::1]:2525 127.0.0.2:2526");
  const std::vector<std::string> want{"127.0.0.1:2525", "[::1]:2525", "127.0.0.2:2526"};
  EXPECT_EQ(c.list("smtpd_listen"), want);
  EXPECT_EQ(c.text("smtpd_banner"), "mx.example ESMTP   ready");
}

TEST(ConfigParse, AcceptsBlanksAroundEqualsAndCrLf) {
  for (const std::string_view text :
       {"smtpd_timeout=10s", "smtpd_timeout = 10s", "smtpd_timeout\t=\t10s  \t",
        "smtpd_timeout =10s\r\n", "smtpd_timeout= 10s\n\n"}) {
    const config c = parse_ok(text);
    EXPECT_EQ(c.raw("smtpd_timeout"), "10s") << "parse(\"" << text << "\")";
    EXPECT_EQ(c.duration("smtpd_timeout"), seconds{10}) << "parse(\"" << text << "\")";
  }
  EXPECT_EQ(parse_ok("bounce_relay =\n").raw("bounce_relay"), "");
  EXPECT_EQ(parse_ok("smtpd_banner = a = b # c\n").text("smtpd_banner"), "a = b # c")
      << "only whole lines are comments; '=' and '#' in a value are text";
}

TEST(ConfigParse, LaterLineWins) {
  const config c = parse_ok("smtpd_timeout = 10s\nsmtpd_timeout = 20s\n");
  EXPECT_EQ(c.duration("smtpd_timeout"), seconds{20});
}

struct error_case {
  std::string text;
  std::string want;
};

TEST(ConfigParse, ReportsFileAndLine) {
  const std::vector<error_case> cases{
      // syntax
      {"\n\nsmtpd_timout = 5m\n", "t.cf:3: unknown parameter \"smtpd_timout\""},
      {"smtpd_timeout 5m\n", "t.cf:1: expected \"name = value\", got \"smtpd_timeout 5m\""},
      {"  smtpd_timeout = 5m\n", "t.cf:1: continuation line without a parameter before it"},
      {"= 5m\n", "t.cf:1: bad parameter name \"\""},
      {"smtpd-timeout = 5m\n", "t.cf:1: bad parameter name \"smtpd-timeout\""},
      {"smtpd_banner = a\x01"
       "b\n",
       "t.cf:1: smtpd_banner: control character in the value"},
      // a bad value of each kind
      {"#\n\nsmtpd_timeout = 5x\n",
       "t.cf:3: smtpd_timeout: bad duration \"5x\" (a number with s, m, h, d or w)"},
      {"message_size_limit = 10X\n",
       "t.cf:1: message_size_limit: bad size \"10X\" (a number with B, k, M, G or T; 1024-based)"},
      {"smtpd_max_connections = many\n",
       "t.cf:1: smtpd_max_connections: bad number \"many\" (a whole number)"},
      {"smtpd_max_connections = 1.5\n",
       "t.cf:1: smtpd_max_connections: bad number \"1.5\" (a whole number)"},
      {"log_level = loud\n",
       "t.cf:1: log_level: bad value \"loud\" (one of debug, info, warning, error)"},
      {"log_level = INFO\n",
       "t.cf:1: log_level: bad value \"INFO\" (one of debug, info, warning, error)"},
      {"data_dir = var/lib/flushgate\n",
       "t.cf:1: data_dir: bad path \"var/lib/flushgate\" (an absolute path)"},
      {"smtpd_listen = 127.0.0.1:2525,\n  ::1:25\n",
       "t.cf:1: smtpd_listen: bad address \"::1:25\" (host:port or [ipv6]:port with a port from 1 "
       "to 65535)"},
      {"dns_servers = 127.0.0.1\n",
       "t.cf:1: dns_servers: bad address \"127.0.0.1\" (host:port or [ipv6]:port with a port from "
       "1 to 65535)"},
      {"log_target = flushgate.log\n",
       "t.cf:1: log_target: bad log target \"flushgate.log\" (stderr, syslog or an absolute path)"},
      {"run_user = mail user\n", "t.cf:1: run_user: bad user or group name \"mail user\""},
      {"myhostname = mx example\n",
       "t.cf:1: myhostname: bad host name \"mx example\" (letters, digits, '-' and '.')"},
      {"retry_schedule = 5m,\n 0s\n",
       "t.cf:1: retry_schedule: bad duration \"0s\" in list (a number greater than 0 with s, m, h, "
       "d or w)"},
      {"retry_schedule = ,\n", "t.cf:1: retry_schedule: empty list of durations"},
      {"smtpd_banner =\n",
       "t.cf:1: smtpd_banner: empty value (the default is \"$myhostname ESMTP flushgate\")"},
      {"smtpd_timeout =\n", "t.cf:1: smtpd_timeout: empty value (the default is \"300s\")"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parse_error(c.text), c.want) << "parse(\"" << c.text << "\")";
  }
}

TEST(ConfigParse, RefusesOversizedText) {
  const std::string text(1024 * 1024 + 1, '#');
  EXPECT_EQ(parse_error(text), "t.cf: larger than 1 MiB");
}

// --- $-expansion ----------------------------------------------------------------------

TEST(ConfigExpansion, ExpandsNamesAtLookupAfterTheWholeFile) {
  const config c = parse_ok(
      "myhostname = mx.example\n"
      "smtpd_banner = $myhostname ESMTP ${myhostname}x $$5 costs$$\n"
      "smtpd_timeout = $bounce_relay\n"  // set further down
      "bounce_relay = 10m\n"
      "data_dir = /srv/fg\n");
  EXPECT_EQ(c.raw("smtpd_banner"), "$myhostname ESMTP ${myhostname}x $$5 costs$$");
  EXPECT_EQ(c.text("smtpd_banner"), "mx.example ESMTP mx.examplex $5 costs$");
  EXPECT_EQ(c.duration("smtpd_timeout"), seconds{600}) << "got " << c.text("smtpd_timeout");
  EXPECT_EQ(c.text("control_socket"), "/srv/fg/control.sock")
      << "the default $data_dir/control.sock must follow data_dir";
}

TEST(ConfigExpansion, EmptyMyhostnameIsTheSystemName) {
  const config c;
  const std::string name = c.text("myhostname");
  EXPECT_FALSE(name.empty()) << "got an empty host name, want the system's";
  EXPECT_EQ(c.text("smtpd_banner"), name + " ESMTP flushgate");
  EXPECT_EQ(c.raw("myhostname"), "");
}

TEST(ConfigExpansion, FollowsLongChainsOfTypedValues) {
  // Every duration parameter refers to the next; the last one says 7m.
  std::string text;
  std::vector<std::string_view> names;
  for (const param& p : parameter_table()) {
    if (p.kind == param_kind::duration) names.push_back(p.name);
  }
  ASSERT_GE(names.size(), 10u);
  // Expansion is bounded at 16 levels: a chain of 16 values is the longest allowed.
  if (names.size() > 16) names.resize(16);
  for (std::size_t i = 0; i + 1 < names.size(); ++i) {
    text += std::string(names[i]) + " = $" + std::string(names[i + 1]) + "\n";
  }
  text += std::string(names.back()) + " = 7m\n";
  const config c = parse_ok(text);
  for (std::string_view name : names) {
    EXPECT_EQ(c.duration(name), seconds{420}) << name << ": got " << c.text(name) << ", want 7m";
  }
}

TEST(ConfigExpansion, ReportsBadReferencesWithFileAndLine) {
  // Chain: all durations, then five strings, then retry_schedule = 5m: 19 levels.
  const std::vector<std::string> tail{"bounce_relay",  "smtpd_banner", "run_user",
                                      "control_group", "myhostname",   "retry_schedule"};
  std::vector<std::string> chain;
  for (const param& p : parameter_table()) {
    if (p.kind == param_kind::duration) chain.emplace_back(p.name);
  }
  chain.insert(chain.end(), tail.begin(), tail.end());
  std::string deep;
  for (std::size_t i = 0; i + 1 < chain.size(); ++i)
    deep += chain[i] + " = $" + chain[i + 1] + "\n";
  deep += chain.back() + " = 5m\n";
  ASSERT_GT(chain.size(), 17u);

  const std::string long_dir = "/" + std::string(65530, 'd');
  const std::vector<error_case> cases{
      {"# x\nsmtpd_banner = $nosuch ESMTP\n",
       "t.cf:2: smtpd_banner: undefined parameter \"nosuch\" in $-expansion"},
      {"smtpd_banner = ${nosuch}\n",
       "t.cf:1: smtpd_banner: undefined parameter \"nosuch\" in $-expansion"},
      {"smtpd_banner = ${myhostname\n", "t.cf:1: smtpd_banner: unterminated \"${\" in the value"},
      {"smtpd_banner = costs 5$\n",
       "t.cf:1: smtpd_banner: a lone \"$\" at the end of the value (write $$ for a dollar sign)"},
      {"smtpd_banner = a $-b\n",
       "t.cf:1: smtpd_banner: bad $-reference after \"a \" (write $name or ${name}, or $$ for a "
       "dollar sign)"},
      {"smtpd_banner = ${}\n",
       "t.cf:1: smtpd_banner: bad $-reference after \"\" (write $name or ${name}, or $$ for a "
       "dollar sign)"},
      // a=$b b=$a, reported at the first line of the loop
      {"smtpd_banner = $bounce_relay\nbounce_relay = $smtpd_banner\n",
       "t.cf:1: smtpd_banner: $-expansion loop: smtpd_banner -> bounce_relay -> smtpd_banner"},
      {"bounce_relay = x\n\nbounce_relay = $bounce_relay\n",
       "t.cf:3: bounce_relay: $-expansion loop: bounce_relay -> bounce_relay"},
      // typed values are checked after expansion
      {"myhostname = mx.example\nsmtpd_timeout = $myhostname\n",
       "t.cf:2: smtpd_timeout: bad duration \"mx.example\" (a number with s, m, h, d or w) after "
       "expanding \"$myhostname\""},
      {"smtpd_recipient_limit = $smtpd_error_limit\n",
       "t.cf:1: smtpd_recipient_limit: 20 is below the minimum 100 after expanding "
       "\"$smtpd_error_limit\""},
      // a default that breaks because of a line: blamed on that line
      {"\ndata_dir = " + long_dir + "\n",
       "t.cf:2: control_socket: value longer than 64 KiB after $-expansion"},
      {deep, "t.cf:1: " + chain.front() + ": $-expansion nested deeper than 16 levels"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parse_error(c.text), c.want) << "parse(\"" << c.text.substr(0, 200) << "\")";
  }
}

// --- bounds and choices -----------------------------------------------------------------

struct bound_case {
  std::string key;
  std::string value;
  std::string want;  // "" = accepted
};

TEST(ConfigBounds, AcceptTheLimitAndRefuseOnePast) {
  const std::vector<bound_case> cases{
      {"smtpd_recipient_limit", "100", ""},
      {"smtpd_recipient_limit", "99", "t.cf:1: smtpd_recipient_limit: 99 is below the minimum 100"},
      {"smtpd_command_line_limit", "512", ""},
      {"smtpd_command_line_limit", "511",
       "t.cf:1: smtpd_command_line_limit: 511 is below the minimum 512"},
      {"smtpd_command_line_limit", "65536", ""},
      {"smtpd_command_line_limit", "65537",
       "t.cf:1: smtpd_command_line_limit: 65537 is above the maximum 65536"},
      {"smtpd_text_line_limit", "1000", ""},
      {"smtpd_text_line_limit", "999",
       "t.cf:1: smtpd_text_line_limit: 999 is below the minimum 1000"},
      {"smtpd_text_line_limit", "1000000", ""},
      {"smtpd_text_line_limit", "1000001",
       "t.cf:1: smtpd_text_line_limit: 1000001 is above the maximum 1000000"},
      {"smtpd_timeout", "1s", ""},
      {"smtpd_timeout", "1", ""},
      {"smtpd_timeout", "0s", "t.cf:1: smtpd_timeout: 0s is below the minimum 1s"},
      {"message_size_limit", "64k", ""},
      {"message_size_limit", "65536", ""},
      {"message_size_limit", "65535", "t.cf:1: message_size_limit: 65535 is below the minimum 64k"},
      {"max_hops", "10", ""},
      {"max_hops", "9", "t.cf:1: max_hops: 9 is below the minimum 10"},
      {"smtpd_min_data_rate", "0", ""},
      {"smtpd_min_data_rate", "-1", "t.cf:1: smtpd_min_data_rate: -1 is below the minimum 0"},
      {"smtpd_max_connections", "0", "t.cf:1: smtpd_max_connections: 0 is below the minimum 1"},
      {"smtpd_max_connections", "99999999999999999999",
       "t.cf:1: smtpd_max_connections: bad number \"99999999999999999999\" (a whole number)"},
      {"queue_commit_batch", "0", "t.cf:1: queue_commit_batch: 0 is below the minimum 1"},
      {"delay_warning_time", "0", ""},
      {"queue_min_free", "0", ""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parse_error(c.key + " = " + c.value + "\n"), c.want) << c.key << " = " << c.value;
  }
}

TEST(ConfigChoices, AcceptEachChoiceExactly) {
  for (const param& p : parameter_table()) {
    if (p.kind != param_kind::choice) continue;
    std::size_t pos = 0;
    while (pos <= p.choices.size()) {
      const std::size_t bar = std::min(p.choices.find('|', pos), p.choices.size());
      const std::string choice(p.choices.substr(pos, bar - pos));
      pos = bar + 1;
      const config c = parse_ok(std::string(p.name) + " = " + choice + "\n");
      EXPECT_EQ(c.text(p.name), choice);
    }
    EXPECT_NE(p.choices.find(p.default_value), std::string_view::npos)
        << p.name << ": got default " << p.default_value << ", want one of " << p.choices;
  }
}

TEST(CheckValue, KnowsFlags) {
  const param flag{
      .name = "test_flag", .kind = param_kind::boolean, .default_value = "no", .doc = "A flag."};
  for (std::string_view good : {"yes", "no", "true", "false", "on", "off", "Yes"}) {
    std::string why;
    EXPECT_TRUE(check_value(flag, good, why)) << good << ": got \"" << why << "\", want valid";
  }
  std::string why;
  EXPECT_FALSE(check_value(flag, "maybe", why)) << "maybe: got valid, want an error";
  EXPECT_EQ(why, "bad flag \"maybe\" (yes or no)");
}

// --- getters and set() ------------------------------------------------------------------

TEST(ConfigGetters, ReturnTypedValues) {
  const config c = parse_ok(
      "smtpd_listen = 127.0.0.1:2525 [::1]:2525\n"
      "message_size_limit = 20M\n"
      "smtpd_recipient_limit = 250\n"
      "queue_lifetime = 2d\n"
      "retry_schedule = 1m, 5m\n"
      "  1h\n");
  EXPECT_EQ(c.size("message_size_limit"), 20u * 1024 * 1024);
  EXPECT_EQ(c.count("smtpd_recipient_limit"), 250);
  EXPECT_EQ(c.duration("queue_lifetime"), seconds{2 * 86400});
  EXPECT_EQ(c.list("smtpd_listen"), (std::vector<std::string>{"127.0.0.1:2525", "[::1]:2525"}));
  EXPECT_EQ(c.durations("retry_schedule"),
            (std::vector<seconds>{seconds{60}, seconds{300}, seconds{3600}}));
  EXPECT_TRUE(c.list("dns_servers").empty());
  const config defaults;
  EXPECT_EQ(defaults.durations("retry_schedule").size(), 6u);
  EXPECT_EQ(defaults.size("message_size_limit"), 10u * 1024 * 1024);
  EXPECT_EQ(defaults.duration("delay_warning_time"), seconds{4 * 3600});
}

TEST(ConfigGetters, ThrowOnUnknownNamesAndWrongKinds) {
  const config c;
  const auto throws_naming = [](const auto& call, const std::string& key) {
    try {
      call();
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos)
          << "got \"" << e.what() << "\", want it to name " << key;
      return;
    }
    ADD_FAILURE() << "got no std::logic_error, want one naming " << key;
  };
  throws_naming([&] { c.duration("smtpd_timout"); }, "smtpd_timout");
  throws_naming([&] { c.text("nope"); }, "nope");
  throws_naming([&] { c.raw("nope"); }, "nope");
  throws_naming([&] { c.is_default("nope"); }, "nope");
  throws_naming([&] { c.size("smtpd_timeout"); }, "smtpd_timeout");
  throws_naming([&] { c.duration("message_size_limit"); }, "message_size_limit");
  throws_naming([&] { c.count("log_level"); }, "log_level");
  throws_naming([&] { c.flag("smtpd_listen"); }, "smtpd_listen");
  throws_naming([&] { c.list("smtpd_timeout"); }, "smtpd_timeout");
  throws_naming([&] { c.durations("smtpd_banner"); }, "smtpd_banner");
}

TEST(ConfigSet, ValidatesAndKeepsTheOldValueOnError) {
  config c;
  std::string error;
  EXPECT_TRUE(c.set("smtpd_timeout", "10m", error)) << error;
  EXPECT_EQ(c.duration("smtpd_timeout"), seconds{600});
  EXPECT_FALSE(c.is_default("smtpd_timeout"));

  EXPECT_FALSE(c.set("smtpd_timeout", "5x", error));
  EXPECT_EQ(error, "smtpd_timeout: bad duration \"5x\" (a number with s, m, h, d or w)");
  EXPECT_EQ(c.raw("smtpd_timeout"), "10m") << "a refused set() must keep the old value";

  EXPECT_FALSE(c.set("smtpd_timout", "5m", error));
  EXPECT_EQ(error, "unknown parameter \"smtpd_timout\"");

  // A value that makes another parameter's expansion loop is refused too.
  EXPECT_TRUE(c.set("bounce_relay", "$smtpd_banner", error)) << error;
  EXPECT_FALSE(c.set("smtpd_banner", "$bounce_relay", error));
  EXPECT_EQ(error, "smtpd_banner: $-expansion loop: smtpd_banner -> bounce_relay -> smtpd_banner");
  EXPECT_EQ(c.raw("smtpd_banner"), "$myhostname ESMTP flushgate");

  // ... and so is one that breaks a typed value elsewhere.
  EXPECT_TRUE(c.set("bounce_relay", "7m", error)) << error;
  EXPECT_TRUE(c.set("smtpd_data_timeout", "$bounce_relay", error)) << error;
  EXPECT_EQ(c.duration("smtpd_data_timeout"), seconds{420});
  EXPECT_FALSE(c.set("bounce_relay", "soon", error));
  EXPECT_EQ(error,
            "smtpd_data_timeout: bad duration \"soon\" (a number with s, m, h, d or w) "
            "after expanding \"$bounce_relay\"");
  EXPECT_EQ(c.raw("bounce_relay"), "7m");

  EXPECT_TRUE(c.set("smtpd_timeout", "300s", error)) << error;
  EXPECT_TRUE(c.is_default("smtpd_timeout"))
      << "set to the default text: got changed, want default";
}

// --- rendering -----------------------------------------------------------------------------

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = std::min(text.find('\n', pos), text.size());
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return lines;
}

TEST(RenderParameterTable, HasOneRowPerParameterInTableOrder) {
  const auto lines = lines_of(render_parameter_table_markdown());
  const auto& table = parameter_table();
  ASSERT_EQ(lines.size(), table.size() + 2) << "got " << lines.size() << " lines, want a header, "
                                            << "a rule and " << table.size() << " rows";
  EXPECT_EQ(lines[0], "| Parameter | Default | Meaning |");
  EXPECT_EQ(lines[1], "|---|---|---|");
  for (std::size_t i = 0; i < table.size(); ++i) {
    const std::string& row = lines[i + 2];
    const std::string want_start = "| `" + std::string(table[i].name) + "` | ";
    EXPECT_EQ(row.substr(0, want_start.size()), want_start) << "row " << i << ": got " << row;
    EXPECT_NE(row.find(std::string(table[i].doc.substr(0, 20))), std::string::npos)
        << "row " << i << ": got " << row << ", want the doc";
    // Column count: an unescaped '|' in a cell would add one.
    std::size_t bars = 0;
    for (std::size_t j = 0; j < row.size(); ++j)
      bars += row[j] == '|' && (j == 0 || row[j - 1] != '\\');
    EXPECT_EQ(bars, 4u) << "row " << i << ": got " << row;
  }
  const std::string md = render_parameter_table_markdown();
  EXPECT_NE(md.find("| `smtpd_timeout` | `300s` | "), std::string::npos);
  EXPECT_NE(md.find("At least 1s."), std::string::npos);
  EXPECT_NE(md.find("Range 512 to 65536."), std::string::npos);
  EXPECT_NE(md.find("At least 64k."), std::string::npos);
  EXPECT_NE(md.find("One of `debug`, `info`, `warning`, `error`."), std::string::npos);
  EXPECT_NE(md.find("| `smtpd_tls_cert_file` | `\"\"` | "), std::string::npos);
}

TEST(RenderParameterManPage, HasOneTaggedParagraphPerParameterInTableOrder) {
  const auto lines = lines_of(render_parameter_man_page("9.8.7"));
  ASSERT_GT(lines.size(), 3u);
  EXPECT_EQ(lines[2], ".TH FLUSHGATED.CF 5 \"\" \"flushgate 9.8.7\" \"File Formats\"");
  // Each parameter: a .TP line, then "\fBname\fR (kind, default ...)".
  std::vector<std::string> tagged;
  for (std::size_t i = 0; i + 1 < lines.size(); ++i) {
    if (lines[i] == ".TP" && lines[i + 1].starts_with("\\fB")) {
      const std::string& tag = lines[i + 1];
      tagged.push_back(tag.substr(3, tag.find("\\fR") - 3));
    }
  }
  const auto& table = parameter_table();
  ASSERT_EQ(tagged.size(), table.size()) << "got " << tagged.size() << " tagged paragraphs, want "
                                         << table.size();
  for (std::size_t i = 0; i < table.size(); ++i) {
    // Names carry '_' only, never '-', so they read the same in roff.
    EXPECT_EQ(tagged[i], table[i].name) << "paragraph " << i;
  }
  // Text lines never start with a roff control character by accident.
  for (const auto& line : lines) {
    if (line.empty() || (line[0] != '.' && line[0] != '\'')) continue;
    const bool request = line.starts_with(".\\\"") || line.starts_with(".TH ") ||
                         line.starts_with(".SH ") || line == ".TP" || line == ".PP" ||
                         line.starts_with(".IP ") || line.starts_with(".B ") ||
                         line.starts_with(".BR ") || line.starts_with(".I ");
    EXPECT_TRUE(request) << "got a text line read as a roff request: " << line;
  }
  const std::string page = render_parameter_man_page("1");
  EXPECT_NE(page.find("\\fBsmtpd_timeout\\fR (duration, default \\fB300s\\fR)\n"), std::string::npos);
  EXPECT_NE(page.find("One of \\fBdebug\\fR, \\fBinfo\\fR, \\fBwarning\\fR, \\fBerror\\fR."),
            std::string::npos);
}

TEST(RenderConfig, ShowsExpandedValuesAllOrOnlyChanged) {
  const config c = parse_ok(
      "data_dir = /srv/fg\n"
      "smtpd_timeout = 10m\n"
      "smtpd_data_timeout = 180s\n"  // the default text: not a change
      "bounce_relay =\n");
  const auto all = lines_of(render_config(c, false));
  const auto& table = parameter_table();
  ASSERT_EQ(all.size(), table.size());
  for (std::size_t i = 0; i < table.size(); ++i) {
    const std::string name(table[i].name);
    EXPECT_EQ(all[i].substr(0, name.size() + 2), name + " =") << "line " << i << ": got " << all[i];
  }
  EXPECT_NE(std::find(all.begin(), all.end(), "control_socket = /srv/fg/control.sock"), all.end());
  EXPECT_NE(std::find(all.begin(), all.end(), "bounce_relay ="), all.end());

  const std::string changed = render_config(c, true);
  EXPECT_EQ(changed, "data_dir = /srv/fg\nsmtpd_timeout = 10m\n");
  EXPECT_EQ(render_config(config{}, true), "");
}

TEST(RenderConfig, MasksThePasswordInTheConninfo) {
  const config c = parse_ok(
      "store = postgresql\n"
      "postgresql_conninfo = host=db.isp.test password='s3 cr\\'et' dbname=flushgate\n");
  const std::string shown = render_config(c, true);
  EXPECT_EQ(shown.find("s3"), std::string::npos) << "got " << shown;
  EXPECT_NE(shown.find("postgresql_conninfo = host=db.isp.test password=******** dbname=flushgate"),
            std::string::npos)
      << "got " << shown;
  EXPECT_EQ(c.text("postgresql_conninfo"), "host=db.isp.test password='s3 cr\\'et' dbname=flushgate")
      << "the daemon itself reads the real value";
}

TEST(MaskConninfoPassword, HidesEveryFormOfPassword) {
  const struct {
    std::string_view in;
    std::string_view want;
  } cases[] = {
      {"host=/run/pg dbname=q", "host=/run/pg dbname=q"},
      {"password=secret", "password=********"},
      {"user=fg password = secret port=5432", "user=fg password = ******** port=5432"},
      {"password='a b\\'c' host=x", "password=******** host=x"},
      {"passfile=/etc/flushgate/pgpass host=x", "passfile=/etc/flushgate/pgpass host=x"},
      {"postgresql://fg:secret@db:5432/q", "postgresql://fg:********@db:5432/q"},
      {"postgres://fg@db/q?password=secret&sslmode=require",
       "postgres://fg@db/q?password=********&sslmode=require"},
      {"postgresql://db/q", "postgresql://db/q"},
      {"", ""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(mask_conninfo_password(c.in), c.want) << "for " << c.in;
  }
}

// --- files -----------------------------------------------------------------------------------

TEST(ConfigLoadFile, ReadsTheExampleFile) {
  std::string error;
  const auto c = config::load_file(data_file("example.cf"), error);
  ASSERT_TRUE(c.has_value()) << "got error " << error << ", want success";
  EXPECT_EQ(c->text("smtpd_banner"), "mx1.isp.example ESMTP mx1.isp.example mail gateway");
  EXPECT_EQ(c->list("smtpd_listen"),
            (std::vector<std::string>{"192.0.2.10:25", "[2001:db8::10]:25"}));
  EXPECT_EQ(c->duration("smtpd_data_timeout"), seconds{300});
  EXPECT_EQ(c->size("message_size_limit"), 50u * 1024 * 1024);
  EXPECT_EQ(c->durations("retry_schedule").back(), seconds{4 * 3600});
  EXPECT_EQ(c->text("control_socket"), "/srv/flushgate/control.sock");
  EXPECT_EQ(c->text("smtp_tls"), "verify");
}

TEST(ConfigLoadFile, NamesFileAndLineOfATypo) {
  std::string error;
  const std::string path = data_file("typo.cf");
  EXPECT_FALSE(config::load_file(path, error).has_value());
  EXPECT_EQ(error, path + ":5: unknown parameter \"smtpd_timout\"");
}

TEST(ConfigLoadFile, ReportsAMissingFile) {
  std::string error;
  const std::string path = data_file("no-such.cf");
  EXPECT_FALSE(config::load_file(path, error).has_value());
  EXPECT_EQ(error, path + ": cannot read: No such file or directory");
}

}  // namespace
}  // namespace flushgate::core

namespace flushgate::core {
namespace {

TEST(ConfigExpansion, FanningOutReferencesAreRefusedNotExpandedForMinutes) {
  // Found by config_parser_fuzz: 40 references a level, 4 levels, every
  // value short; expanding it meant millions of references.
  std::string error;
  auto c = config::load_file(FLUSHGATE_SOURCE_DIR "/tests/data/config/expansion-fanout.cf", error);
  EXPECT_FALSE(c.has_value()) << "got the fan-out file accepted, want an error";
  EXPECT_NE(error.find("$-references to expand"), std::string::npos) << "got " << error;
}

TEST(ConfigParse, SelfAddressesTakeIpv4AndIpv6Networks) {
  const auto c = parse_ok("smtp_self_addresses = 192.0.2.0/24, 2001:db8::/32 198.51.100.7\n");
  EXPECT_EQ(c.list("smtp_self_addresses"),
            (std::vector<std::string>{"192.0.2.0/24", "2001:db8::/32", "198.51.100.7"}));
  EXPECT_TRUE(parse_ok("myhostname = gw.test\n").list("smtp_self_addresses").empty())
      << "got a default, want an empty list";
  for (const char* bad : {"192.0.2.0/33", "2001:db8::/129", "gw.example", "192.0.2.0/", "192.0.2.0/24x"}) {
    const std::string error = parse_error(std::string("smtp_self_addresses = ") + bad + "\n");
    EXPECT_NE(error.find("smtp_self_addresses"), std::string::npos)
        << "for " << bad << ": got \"" << error << "\", want an error naming smtp_self_addresses";
  }
}

}  // namespace
}  // namespace flushgate::core
