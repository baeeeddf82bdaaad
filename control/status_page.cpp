// status_page.cpp — renders the status snapshot as one self-contained page.
//
// Steps: read the snapshot into plain views (every reader swallows missing,
// null and mistyped fields), order the customers so trouble comes first,
// then write the page top to bottom: head (CSP, refresh, CSS), header line,
// tiles, customers, age histogram, links, events, the counter script.
#include "control/status_page.hpp"

#include <Poco/Base64Encoder.h>
#include <Poco/DigestEngine.h>
#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/SHA2Engine.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace flushgate::control {

namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

// Caps on what one page shows (the header comment's promise).
constexpr std::size_t max_customers = 500;
constexpr std::size_t max_links = 200;
constexpr std::size_t max_events = 100;
constexpr std::size_t max_domains_shown = 3;
constexpr std::size_t max_text = 300;  // characters of one free text (error, event) shown

constexpr std::int64_t default_refresh = 10;
constexpr std::int64_t min_refresh = 2;
constexpr std::int64_t max_refresh = 3600;

// Ages that colour a cell: an hour is worth a look; four hours is when
// senders get their delay DSN (the default delay_warning).
constexpr std::int64_t age_warn = 3600;
constexpr std::int64_t age_bad = 4 * 3600;

// ---- readers: never throw, nullopt for missing, null or unusable ----------

// Every number read is clamped to ±2^52 (4.5 PB, 140 million years), so
// that differences and sums of a few of them cannot overflow.
constexpr std::int64_t max_number = std::int64_t{1} << 52;

std::optional<std::int64_t> to_int(const Var& v) {
  try {
    if (v.isEmpty() || v.isBoolean()) return std::nullopt;
    if (v.isInteger()) {
      if (!v.isSigned()) {
        return static_cast<std::int64_t>(
            std::min<Poco::UInt64>(v.convert<Poco::UInt64>(), static_cast<Poco::UInt64>(max_number)));
      }
      return std::clamp<std::int64_t>(v.convert<Poco::Int64>(), -max_number, max_number);
    }
    if (v.isNumeric() || v.isString()) {
      const double d = v.convert<double>();
      if (!std::isfinite(d)) return std::nullopt;
      constexpr auto lim = static_cast<double>(max_number);
      return static_cast<std::int64_t>(std::clamp(d, -lim, lim));
    }
  } catch (...) {  // a conversion Poco refuses: treat as absent
  }
  return std::nullopt;
}

// a + b, held at ±max_number (totals summed over many customers).
std::int64_t add_clamped(std::int64_t a, std::int64_t b) {
  return std::clamp<std::int64_t>(a + b, -max_number, max_number);
}

std::optional<std::string> to_text(const Var& v) {
  try {
    if (v.isEmpty()) return std::nullopt;
    if (v.isString()) return v.extract<std::string>();
    if (v.isNumeric() || v.isBoolean()) return v.convert<std::string>();
  } catch (...) {  // objects, arrays and odd types are not text
  }
  return std::nullopt;
}

Var field(const Object::Ptr& o, const std::string& key) {
  if (o.isNull()) return {};
  try {
    return o->get(key);
  } catch (...) {
    return {};
  }
}

std::optional<std::int64_t> int_of(const Object::Ptr& o, const std::string& key) {
  return to_int(field(o, key));
}

std::string text_of(const Object::Ptr& o, const std::string& key) {
  return to_text(field(o, key)).value_or(std::string{});
}

bool flag_of(const Object::Ptr& o, const std::string& key) {
  const Var v = field(o, key);
  try {
    if (v.isBoolean()) return v.extract<bool>();
    if (v.isString()) return v.extract<std::string>() == "true";
    if (v.isNumeric()) return v.convert<double>() != 0.0;
  } catch (...) {
  }
  return false;
}

Object::Ptr object_of(const Object::Ptr& o, const std::string& key) {
  if (o.isNull()) return {};
  try {
    return o->getObject(key);
  } catch (...) {
    return {};
  }
}

// The objects of array `key`, skipping elements that are not objects.
std::vector<Object::Ptr> objects_of(const Object::Ptr& o, const std::string& key) {
  std::vector<Object::Ptr> out;
  if (o.isNull()) return out;
  try {
    Array::Ptr arr = o->getArray(key);
    if (arr.isNull()) return out;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      Object::Ptr item = arr->getObject(static_cast<unsigned>(i));
      if (!item.isNull()) out.push_back(item);
    }
  } catch (...) {
  }
  return out;
}

std::vector<std::string> texts_of(const Object::Ptr& o, const std::string& key) {
  std::vector<std::string> out;
  if (o.isNull()) return out;
  try {
    Array::Ptr arr = o->getArray(key);
    if (arr.isNull()) return out;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      if (auto t = to_text(arr->get(static_cast<unsigned>(i)))) out.push_back(*t);
    }
  } catch (...) {
  }
  return out;
}

// ---- small formatting helpers ----------------------------------------------

// Counts: plain below 10000, then grouped by a narrow no-break space (U+202F).
std::string format_count(std::int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  if (digits.size() > 4) {
    std::string grouped;
    const std::size_t lead = digits.size() % 3;
    for (std::size_t i = 0; i < digits.size(); ++i) {
      if (i != 0 && i >= lead && (i - lead) % 3 == 0) grouped += "\xE2\x80\xAF";
      grouped += digits[i];
    }
    digits = std::move(grouped);
  }
  return n < 0 ? "-" + digits : digits;
}

std::uint64_t non_negative(std::int64_t v) { return v < 0 ? 0 : static_cast<std::uint64_t>(v); }

// Cuts free text to max_text characters (on a UTF-8 boundary) with an ellipsis.
std::string clipped(std::string text) {
  if (text.size() <= max_text) return text;
  std::size_t cut = max_text;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
  return text + "\xE2\x80\xA6";
}

std::string utc(std::int64_t t, const char* format) {
  const auto tt = static_cast<std::time_t>(t);
  std::tm tm{};
  if (gmtime_r(&tt, &tm) == nullptr) return "?";
  char buf[64];
  const std::size_t n = std::strftime(buf, sizeof buf, format, &tm);
  return std::string(buf, n);
}

std::string iso_time(std::int64_t t) { return utc(t, "%Y-%m-%d %H:%M:%S UTC"); }

// "06:21:03" on the snapshot's day, "11-21 06:21" on another.
std::string short_time(std::int64_t t, std::int64_t now) {
  if (utc(t, "%Y%m%d") == utc(now, "%Y%m%d")) return utc(t, "%H:%M:%S");
  return utc(t, "%m-%d %H:%M");
}

// Appends escaped text.
void put(std::string& out, std::string_view text) { out += html_escape(text); }

// ---- the views -------------------------------------------------------------

struct flush_view {
  std::int64_t messages_done = 0;
  std::int64_t messages_total = 0;
  std::int64_t bytes_done = 0;
  std::int64_t bytes_total = 0;
};

struct customer_view {
  std::string name;
  std::string state;
  std::string mode;
  std::string recipient_check;
  std::string activity;
  std::string route;
  std::string last_error;
  std::vector<std::string> domains;
  std::optional<std::int64_t> messages;
  std::optional<std::int64_t> bytes;
  std::optional<std::int64_t> oldest;
  std::optional<std::int64_t> next_attempt;  // seconds; absent or negative: none planned
  std::optional<flush_view> flush;
  int rank = 0;
};

// Lower is more urgent: held mail first (the oldest on top), then mail
// that fails to go, then no route, switched-off customers, work in
// progress, and the quiet ones last.
int trouble_rank(const customer_view& c) {
  const bool queued = c.messages.value_or(0) > 0;
  if (c.activity == "held" && queued) return 0;
  if (!c.last_error.empty() && queued) return 1;
  if (c.activity == "held") return 2;
  if (c.activity == "suspended") return 3;
  if (c.activity == "disabled") return 4;
  if (c.activity == "flushing") return 5;
  if (c.activity == "link_up") return 6;
  if (c.activity == "relaying") return 7;
  if (c.activity == "idle") return 8;
  return 9;
}

customer_view read_customer(const Object::Ptr& o) {
  customer_view c;
  c.name = text_of(o, "name");
  c.state = text_of(o, "state");
  c.mode = text_of(o, "mode");
  c.recipient_check = text_of(o, "recipient_check");
  c.activity = text_of(o, "activity");
  if (c.activity.empty() && (c.state == "disabled" || c.state == "suspended")) c.activity = c.state;
  c.route = text_of(o, "route");
  c.last_error = text_of(o, "last_error");
  c.domains = texts_of(o, "domains");
  c.messages = int_of(o, "messages");
  c.bytes = int_of(o, "bytes");
  c.oldest = int_of(o, "oldest_age_seconds");
  c.next_attempt = int_of(o, "next_attempt_in");
  if (Object::Ptr f = object_of(o, "flush"); !f.isNull()) {
    flush_view fv;
    fv.messages_done = int_of(f, "messages_done").value_or(0);
    fv.messages_total = int_of(f, "messages_total").value_or(0);
    fv.bytes_done = int_of(f, "bytes_done").value_or(0);
    fv.bytes_total = int_of(f, "bytes_total").value_or(0);
    c.flush = fv;
  }
  c.rank = trouble_rank(c);
  return c;
}

std::vector<customer_view> ordered_customers(const Object::Ptr& snapshot) {
  std::vector<customer_view> out;
  for (const auto& o : objects_of(snapshot, "customers")) out.push_back(read_customer(o));
  std::stable_sort(out.begin(), out.end(), [](const customer_view& a, const customer_view& b) {
    if (a.rank != b.rank) return a.rank < b.rank;
    const auto ao = a.oldest.value_or(-1), bo = b.oldest.value_or(-1);
    if (ao != bo) return ao > bo;
    const auto am = a.messages.value_or(0), bm = b.messages.value_or(0);
    if (am != bm) return am > bm;
    return a.name < b.name;
  });
  return out;
}

// ---- fixed tables for anything that picks a CSS class ----------------------

struct badge_style {
  std::string_view key;
  std::string_view label;
  std::string_view css;  // colour class
};

constexpr badge_style activity_badges[] = {
    {"relaying", "relaying", "c-green"}, {"held", "held", "c-amber"},
    {"flushing", "flushing", "c-blue"},  {"link_up", "link up", "c-teal"},
    {"idle", "idle", "c-grey"},          {"disabled", "disabled", "c-grey"},
    {"suspended", "suspended", "c-red"},
};

constexpr badge_style event_badges[] = {
    {"link_up", "link up", "c-green"},         {"link_down", "link down", "c-amber"},
    {"flush_started", "flush started", "c-blue"}, {"flush_done", "flush done", "c-blue"},
    {"flush_failed", "flush failed", "c-red"}, {"refused", "refused", "c-red"},
    {"dsn_queued", "DSN queued", "c-violet"},  {"customer_changed", "customer changed", "c-grey"},
    {"route_changed", "route changed", "c-teal"}, {"nas_restart", "NAS restart", "c-amber"},
    {"link_refused", "link refused", "c-red"},
};

template <std::size_t N>
const badge_style* find_badge(const badge_style (&table)[N], std::string_view key) {
  for (const auto& b : table)
    if (b.key == key) return &b;
  return nullptr;
}

// A badge: known keys get their label and colour, others their escaped text in grey.
template <std::size_t N>
void put_badge(std::string& out, const badge_style (&table)[N], std::string_view key) {
  const badge_style* b = find_badge(table, key);
  out += "<span class=\"badge ";
  out += b != nullptr ? b->css : "c-grey";
  out += "\">";
  if (b != nullptr) {
    out += b->label;
  } else {
    std::string label(key);
    std::replace(label.begin(), label.end(), '_', ' ');
    put(out, label);
  }
  out += "</span>";
}

const char* age_class(std::int64_t age) {
  if (age >= age_bad) return "age-bad";
  if (age >= age_warn) return "age-warn";
  return "";
}

// ---- page parts -------------------------------------------------------------

// The only script on the page: counts seconds since the page loaded and
// until the next reload. Its hash goes into the CSP, so it must stay byte
// for byte what is written.
constexpr std::string_view counter_script =
    "(function(){var e=document.getElementById(\"fg-age\");if(!e)return;"
    "var t0=Date.now(),r=parseInt(e.getAttribute(\"data-refresh\"),10)||0;"
    "function f(){var n=Math.floor((Date.now()-t0)/1000);"
    "e.textContent=\"updated \"+n+\" s ago\"+(r>0?\" \\u00b7 next in \"+Math.max(0,r-n)+\" s\":\"\");}"
    "f();setInterval(f,1000);})();";

std::string script_hash() {
  Poco::SHA2Engine engine(Poco::SHA2Engine::SHA_256);
  engine.update(counter_script.data(), static_cast<unsigned>(counter_script.size()));
  const Poco::DigestEngine::Digest& digest = engine.digest();
  std::ostringstream b64;
  Poco::Base64Encoder encoder(b64);
  encoder.rdbuf()->setLineLength(0);
  encoder.write(reinterpret_cast<const char*>(digest.data()), static_cast<std::streamsize>(digest.size()));
  encoder.close();
  return b64.str();
}

const std::string& content_security_policy() {
  static const std::string policy =
      "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-" +
      script_hash() + "'; base-uri 'none'; form-action 'none'";
  return policy;
}

constexpr std::string_view page_css = R"css(
:root{--bg:#eef1f5;--panel:#fff;--ink:#17202e;--muted:#5f6b7a;--faint:#8a95a5;--line:#e3e7ed;--head:#0f1a2b;--headink:#eef3fa;
--headmuted:#9fb0c6;--hover:#f6f8fb;--track:#e8ecf1;
--green:#12804a;--green-bg:#e1f4e9;--amber:#9a5800;--amber-bg:#fff0d2;--red:#b42318;--red-bg:#fde6e3;--blue:#1d5fd1;
--blue-bg:#e3ebfd;--teal:#0a7a74;--teal-bg:#d9f2ee;--grey:#5f6b7a;--grey-bg:#eceff3;--violet:#6a3fcf;--violet-bg:#eee7fd;
color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0b1017;--panel:#141b25;--ink:#e4e9f1;--muted:#94a1b3;--faint:#6c7a8d;
--line:#243041;--head:#060a10;--hover:#19222e;--track:#223041;
--green:#4ade80;--green-bg:rgba(74,222,128,.14);--amber:#fbbf24;--amber-bg:rgba(251,191,36,.15);--red:#f87171;
--red-bg:rgba(248,113,113,.16);--blue:#7aa7ff;--blue-bg:rgba(122,167,255,.16);--teal:#2dd4bf;--teal-bg:rgba(45,212,191,.14);
--grey:#9aa6b6;--grey-bg:rgba(154,166,182,.14);--violet:#b69cff;--violet-bg:rgba(182,156,255,.16)}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif}
.top{display:flex;align-items:center;gap:10px 22px;flex-wrap:wrap;padding:12px 24px;background:var(--head);color:var(--headink)}
.brand{display:flex;align-items:center;gap:8px;font-weight:700;letter-spacing:.02em;font-size:15px}
.logo{width:22px;height:22px;border-radius:6px;background:linear-gradient(135deg,#3b82f6,#14b8a6);display:inline-block;position:relative}
.logo::after{content:"";position:absolute;left:5px;right:5px;top:10px;height:2px;background:#fff;border-radius:1px;
box-shadow:0 -5px 0 #fff,0 5px 0 rgba(255,255,255,.6)}
.host{border-left:1px solid #2a3a52;padding-left:18px;min-width:0}
.host h1{margin:0;font-size:18px;font-weight:600;overflow-wrap:break-word}
.host .meta,.stamp{color:var(--headmuted);font-size:12.5px}
.stamp{margin-left:auto;text-align:right}
.stamp b{color:var(--headink);font-weight:600}
.stamp a.console{color:var(--headink)}
main{max-width:1600px;margin:0 auto;padding:16px 24px 4px}
.tiles{display:grid;grid-template-columns:repeat(5,minmax(0,1fr));gap:12px;margin-bottom:16px}
.tile{background:var(--panel);border:1px solid var(--line);border-top:3px solid var(--blue);border-radius:10px;padding:8px 14px 9px}
.tile .k{font-size:11.5px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);font-weight:600}
.tile .v{font-size:26px;font-weight:650;line-height:1.25;font-variant-numeric:tabular-nums;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tile .s{font-size:12.5px;color:var(--muted);white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tile.ok{border-top-color:var(--green)}
.tile.warn{border-top-color:var(--amber)}.tile.warn .v{color:var(--amber)}
.tile.bad{border-color:var(--red);border-top-color:var(--red);background:var(--red-bg)}.tile.bad .v,.tile.bad .s{color:var(--red)}
.layout{display:grid;grid-template-columns:minmax(0,1fr) 340px;gap:0 16px;align-items:start}
.primary,.side{min-width:0}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:12px 16px;margin-bottom:16px;min-width:0}
.panel h2{margin:0 0 6px;font-size:15px;font-weight:650;display:flex;align-items:baseline;gap:8px}
.panel h2 .n{font-size:12.5px;font-weight:500;color:var(--muted)}
.scroll{overflow-x:auto}
table{width:100%;border-collapse:collapse}
th{font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);font-weight:600;text-align:left;
padding:6px 8px;border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:7px 8px;border-bottom:1px solid var(--line);vertical-align:top}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover{background:var(--hover)}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
.muted{color:var(--muted)}.small{font-size:12px}
.nowrap{white-space:nowrap}
.name{font-weight:600;overflow-wrap:break-word}
.doms{font-size:12px;color:var(--muted);overflow-wrap:break-word}
tr.t-bad td:first-child{box-shadow:inset 3px 0 var(--red)}
tr.t-warn td:first-child{box-shadow:inset 3px 0 var(--amber)}
tr.t-off td{color:var(--muted)}
.badge{display:inline-block;padding:1px 9px 1px 8px;border-radius:999px;font-size:12px;font-weight:600;line-height:18px;
white-space:nowrap;color:var(--c);background:var(--cb)}
.badge::before{content:"";display:inline-block;width:6px;height:6px;border-radius:50%;background:currentColor;margin-right:6px;vertical-align:1px}
.badge+.badge{margin-left:4px}
.tag{display:inline-block;margin-left:5px;padding:0 7px;border:1px solid var(--line);border-radius:999px;font-size:11px;
line-height:17px;color:var(--muted);white-space:nowrap;font-weight:500}
.tag.warn{color:var(--amber);border-color:var(--amber)}
.c-green{--c:var(--green);--cb:var(--green-bg)}.c-amber{--c:var(--amber);--cb:var(--amber-bg)}.c-red{--c:var(--red);--cb:var(--red-bg)}
.c-blue{--c:var(--blue);--cb:var(--blue-bg)}.c-teal{--c:var(--teal);--cb:var(--teal-bg)}.c-grey{--c:var(--grey);--cb:var(--grey-bg)}
.c-violet{--c:var(--violet);--cb:var(--violet-bg)}
.route{overflow-wrap:break-word}
.cust-table .name,.cust-table td.c-state{white-space:nowrap}
.qn{font-weight:600}.qb{font-size:12px;color:var(--muted)}
.err{color:var(--red);font-size:12.5px;margin-top:2px;overflow-wrap:break-word}
.age-warn{color:var(--amber);font-weight:650}.age-bad{color:var(--red);font-weight:700}
.prog{margin-top:6px;width:170px;max-width:100%}
.bar{height:6px;border-radius:3px;background:var(--track);overflow:hidden}
.bar>span{display:block;height:100%;background:var(--blue);border-radius:3px;min-width:2px}
.prog .t{font-size:11.5px;color:var(--muted);margin-top:2px;white-space:nowrap}
.hist{display:grid;grid-template-columns:auto minmax(40px,1fr) auto;gap:7px 10px;align-items:center;margin-top:4px}
.hist .l{font-size:12.5px;white-space:nowrap;color:var(--muted)}
.hist .bar{height:16px;border-radius:4px}
.hist .bar>span{border-radius:4px}
.hist .v{font-size:12.5px;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.hist .v small{color:var(--muted);font-size:11.5px;display:inline-block;min-width:4.6em}
.hist .bar.h-ok>span{background:var(--teal)}.hist .bar.h-warn>span{background:#e0a030}.hist .bar.h-bad>span{background:var(--red)}
.hist .zero{color:var(--faint)}
.links{list-style:none;margin:0;padding:0}
.links li{padding:7px 0;border-bottom:1px solid var(--line)}
.links li:last-child{border-bottom:0}
.lk-top{display:flex;align-items:baseline;gap:2px;flex-wrap:wrap}
.lk-top .up{margin-left:auto;font-size:12.5px;color:var(--green);font-weight:600;white-space:nowrap;font-variant-numeric:tabular-nums}
.k-dsl{color:var(--blue);border-color:var(--blue-bg);background:var(--blue-bg)}
.k-dial{color:var(--violet);border-color:var(--violet-bg);background:var(--violet-bg)}
.lk-sub{margin-top:1px;overflow-wrap:break-word}.lk-sub .arrow{color:var(--faint)}
.lk-meta{font-size:12px;color:var(--muted);overflow-wrap:break-word}
.empty{color:var(--muted);padding:6px 0 4px;margin:0}
.more{color:var(--muted);font-size:12.5px;padding-top:6px;margin:0}
.e-time{width:1%}.e-kind{width:1%;white-space:nowrap}.e-cust{width:1%;white-space:nowrap}
.e-text{overflow-wrap:break-word}
.ago{display:block;font-size:11.5px;color:var(--muted)}
footer{max-width:1600px;margin:0 auto;padding:0 24px 20px;color:var(--muted);font-size:12px}
@media (max-width:1180px){
.tiles{grid-template-columns:repeat(3,minmax(0,1fr))}
.layout{display:flex;flex-direction:column}.primary,.side{display:contents}
#customers{order:1}#ages{order:2}#links{order:3}#events{order:4}.layout>*>.panel{width:100%}
}
@media (max-width:700px){
.top{padding:10px 14px;gap:6px 14px}.host{border-left:0;padding-left:0;width:100%}.stamp{margin-left:0;text-align:left}
main{padding:12px}footer{padding:0 12px 16px}
.tiles{grid-template-columns:repeat(2,minmax(0,1fr));gap:8px}.tile:last-child:nth-child(odd){grid-column:span 2}.tile .v{font-size:21px}.tile .s{white-space:normal}
.panel{padding:10px 12px}
table.cards thead{display:none}
table.cards,table.cards tbody{display:block;width:100%}
table.cards td{border:0;padding:0;text-align:left;box-shadow:none!important}
table.cust-table tr{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:4px 8px;
grid-template-areas:"name name" "state state" "queue old" "route route";
padding:9px 0 9px 10px;border-bottom:1px solid var(--line)}
table.cards tbody tr:last-child{border-bottom:0}
.c-name{grid-area:name}.c-state{grid-area:state}.c-queue{grid-area:queue}.c-old{grid-area:old}.c-route{grid-area:route}
.c-queue .qb{display:inline;margin-left:6px}
.c-queue::before,.c-old::before{content:attr(data-label);display:block;font-size:10.5px;text-transform:uppercase;
letter-spacing:.05em;color:var(--muted);font-weight:600}
table.cust-table td.num{text-align:left}
table.cust-table tr.t-bad{box-shadow:inset 3px 0 var(--red)}table.cust-table tr.t-warn{box-shadow:inset 3px 0 var(--amber)}
table.ev-table tr{display:grid;grid-template-columns:auto minmax(0,1fr) auto;gap:2px 8px;
grid-template-areas:"kind cust time" "text text text";padding:8px 0;border-bottom:1px solid var(--line)}
.e-time{grid-area:time;width:auto;text-align:right}.e-kind{grid-area:kind;width:auto}.e-cust{grid-area:cust;width:auto;white-space:normal}
.e-text{grid-area:text}
.e-time .ago{display:inline;margin-left:4px}
.cust-table .name,.cust-table td.c-state{white-space:normal}
}
)css";

struct page_context {
  Object::Ptr snapshot;
  std::int64_t now = 0;
  std::int64_t refresh = default_refresh;
  std::string host;
  std::string version;
};

void put_head(std::string& out, const page_context& ctx) {
  out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  out += "<meta http-equiv=\"Content-Security-Policy\" content=\"";
  put(out, content_security_policy());
  out += "\">\n<meta name=\"referrer\" content=\"no-referrer\">\n";
  if (ctx.refresh > 0) out += fmt::format("<meta http-equiv=\"refresh\" content=\"{}\">\n", ctx.refresh);
  out += "<title>";
  if (!ctx.host.empty()) {
    put(out, ctx.host);
    out += " \xC2\xB7 ";
  }
  out += "flushgate status</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>";
  out += page_css;
  out += "</style>\n</head>\n";
}

void put_header(std::string& out, const page_context& ctx) {
  out += "<header class=\"top\">\n<div class=\"brand\"><span class=\"logo\"></span>flushgate</div>\n";
  out += "<div class=\"host\"><h1 id=\"host\">";
  put(out, ctx.host.empty() ? std::string_view("status") : std::string_view(ctx.host));
  out += "</h1><div class=\"meta\">";
  std::vector<std::string> meta;
  if (!ctx.version.empty()) meta.push_back("v" + html_escape(ctx.version));
  if (auto up = int_of(ctx.snapshot, "uptime_seconds")) meta.push_back("up " + format_age(*up));
  for (std::size_t i = 0; i < meta.size(); ++i) {
    if (i != 0) out += " \xC2\xB7 ";
    out += meta[i];
  }
  out += "</div></div>\n<div class=\"stamp\">";
  if (int_of(ctx.snapshot, "generated")) {
    out += "snapshot <b>" + utc(ctx.now, "%H:%M:%S") + "</b> UTC<br>";
  }
  // The script replaces this text once a second ("updated N s ago").
  out += fmt::format("<span id=\"fg-age\" data-refresh=\"{}\">updated just now", ctx.refresh);
  if (ctx.refresh > 0) out += fmt::format(" \xC2\xB7 reloads every {} s", ctx.refresh);
  // Acting (flush, suspend, ...) happens in the console, behind its own login.
  out += "</span><br><a class=\"console\" href=\"/console/\">operator console</a></div>\n</header>\n";
}

void put_tile(std::string& out, std::string_view css, std::string_view id, std::string_view key,
              const std::string& value_html, const std::string& sub_html) {
  out += "<div class=\"tile";
  if (!css.empty()) {
    out += ' ';
    out += css;
  }
  out += "\" id=\"";
  out += id;
  out += "\"><div class=\"k\">";
  out += key;
  out += "</div><div class=\"v\">";
  out += value_html;
  out += "</div><div class=\"s\">";
  out += sub_html.empty() ? std::string("&nbsp;") : sub_html;
  out += "</div></div>\n";
}

void put_tiles(std::string& out, const page_context& ctx, const std::vector<customer_view>& customers,
               const std::vector<Object::Ptr>& links) {
  const Object::Ptr totals = object_of(ctx.snapshot, "totals");
  out += "<section class=\"tiles\">\n";

  // Customers, with how many need a look.
  {
    auto count = int_of(totals, "customers");
    if (!count && !customers.empty()) count = static_cast<std::int64_t>(customers.size());
    int held = 0, flushing = 0, off = 0;
    for (const auto& c : customers) {
      if (c.activity == "held") ++held;
      if (c.activity == "flushing") ++flushing;
      if (c.activity == "disabled" || c.activity == "suspended") ++off;
    }
    std::vector<std::string> parts;
    if (held) parts.push_back(fmt::format("{} held", held));
    if (flushing) parts.push_back(fmt::format("{} flushing", flushing));
    if (off) parts.push_back(fmt::format("{} off", off));
    std::string sub;
    for (std::size_t i = 0; i < parts.size(); ++i) sub += (i ? " \xC2\xB7 " : "") + parts[i];
    if (sub.empty() && !customers.empty()) sub = "all quiet";
    put_tile(out, held ? "warn" : "", "t-customers", "Customers", count ? format_count(*count) : "\xE2\x80\x94", sub);
  }

  // Queue: messages and bytes.
  auto messages = int_of(totals, "messages");
  auto bytes = int_of(totals, "bytes");
  if (totals.isNull() && !customers.empty()) {
    std::int64_t m = 0, b = 0;
    for (const auto& c : customers) {
      m = add_clamped(m, c.messages.value_or(0));
      b = add_clamped(b, c.bytes.value_or(0));
    }
    messages = m;
    bytes = b;
  }
  put_tile(out, "", "t-messages", "Queued messages", messages ? format_count(*messages) : "\xE2\x80\x94",
           bytes ? format_bytes(non_negative(*bytes)) : std::string{});

  // Oldest message: 0 s old is an age when something is queued, and "none"
  // when nothing is (the snapshot says 0 for both).
  {
    auto oldest = int_of(totals, "oldest_age_seconds");
    if (!oldest && totals.isNull()) {
      for (const auto& c : customers)
        if (c.oldest && c.messages.value_or(0) > 0 && (!oldest || *c.oldest > *oldest)) oldest = c.oldest;
    }
    const bool queued = messages ? *messages > 0 : oldest && *oldest > 0;
    if (oldest && queued) {
      const std::int64_t age = std::max<std::int64_t>(0, *oldest);
      put_tile(out, age >= age_bad ? "bad" : age >= age_warn ? "warn" : "ok", "t-oldest", "Oldest message",
               format_age(age), age >= age_bad ? "past the delay warning" : "in the queue");
    } else if (messages && *messages == 0) {
      put_tile(out, "ok", "t-oldest", "Oldest message", "\xE2\x80\x94", "nothing queued");
    } else {
      put_tile(out, "", "t-oldest", "Oldest message", "\xE2\x80\x94", {});
    }
  }

  // Links up, split by kind.
  {
    auto up = int_of(totals, "links_up");
    if (!up && !links.empty()) up = static_cast<std::int64_t>(links.size());
    int dsl = 0, dialup = 0;
    for (const auto& l : links) {
      const std::string kind = text_of(l, "kind");
      if (kind == "dsl") ++dsl;
      if (kind == "dialup") ++dialup;
    }
    std::string sub;
    if (dsl || dialup) sub = fmt::format("{} DSL \xC2\xB7 {} dial-up", dsl, dialup);
    put_tile(out, up && *up > 0 ? "ok" : "", "t-links", "Links up", up ? format_count(*up) : "\xE2\x80\x94",
             sub);
  }

  // Disk headroom: red when the daemon says low (or free is below the minimum).
  {
    const Object::Ptr disk = object_of(ctx.snapshot, "disk");
    auto free_bytes = int_of(disk, "free_bytes");
    auto min_free = int_of(disk, "min_free_bytes");
    bool low = flag_of(disk, "low") || (free_bytes && min_free && *free_bytes < *min_free);
    std::string_view css = low ? "bad" : "";
    if (!low && free_bytes && min_free && *free_bytes < 2 * *min_free) css = "warn";
    if (!low && free_bytes && css.empty()) css = "ok";
    std::string sub;
    if (low) sub = "LOW \xE2\x80\x94 new mail is refused (452)";
    else if (min_free) sub = "minimum " + format_bytes(non_negative(*min_free));
    // The room the guard counts besides the file system: free pages inside
    // the queue store, which new mail reuses (and which go back in steps).
    if (auto inside = int_of(disk, "store_free_bytes"); inside && *inside > 0) {
      sub += " \xC2\xB7 +" + format_bytes(non_negative(*inside)) + " free inside the queue store";
    }
    put_tile(out, css, "t-disk", "Disk free",
             free_bytes ? format_bytes(non_negative(*free_bytes)) : "\xE2\x80\x94", sub);
  }
  out += "</section>\n";
}

void put_flush_progress(std::string& out, const flush_view& f) {
  double fraction = 0;
  if (f.messages_total > 0) fraction = static_cast<double>(f.messages_done) / static_cast<double>(f.messages_total);
  else if (f.bytes_total > 0) fraction = static_cast<double>(f.bytes_done) / static_cast<double>(f.bytes_total);
  fraction = std::clamp(fraction, 0.0, 1.0);
  out += "<div class=\"prog\"";
  if (f.bytes_total > 0) {
    out += " title=\"" + format_bytes(non_negative(f.bytes_done)) + " of " + format_bytes(non_negative(f.bytes_total)) +
           " sent\"";
  }
  out += fmt::format("><div class=\"bar\"><span style=\"width:{:.0f}%\"></span></div><div class=\"t\">", fraction * 100);
  if (f.messages_total > 0)
    out += fmt::format("{} / {} messages \xC2\xB7 ", format_count(f.messages_done), format_count(f.messages_total));
  else if (f.bytes_total > 0)
    out += format_bytes(non_negative(f.bytes_done)) + " of " + format_bytes(non_negative(f.bytes_total)) + " \xC2\xB7 ";
  out += fmt::format("{:.0f}%</div></div>", std::floor(fraction * 100));
}

void put_customers(std::string& out, const std::vector<customer_view>& customers) {
  out += "<section class=\"panel\" id=\"customers\">\n<h2>Customers";
  if (!customers.empty()) out += fmt::format(" <span class=\"n\">{} \xC2\xB7 trouble first</span>", customers.size());
  out += "</h2>\n";
  if (customers.empty()) {
    out += "<p class=\"empty\">No customers in this snapshot.</p>\n</section>\n";
    return;
  }
  out += "<div class=\"scroll\"><table class=\"cards cust-table\">\n<thead><tr><th>Customer</th><th>State</th>"
         "<th class=\"num\">Queued</th><th class=\"num\">Oldest</th>"
         "<th>Route</th></tr></thead>\n<tbody>\n";
  const std::size_t shown = std::min(customers.size(), max_customers);
  for (std::size_t i = 0; i < shown; ++i) {
    const customer_view& c = customers[i];
    const char* row = c.rank <= 1 ? "t-bad" : c.rank == 2 ? "t-warn" : c.rank <= 4 ? "t-off" : "";
    out += "<tr class=\"cust ";
    out += row;
    out += "\" data-customer=\"";
    put(out, c.name);
    out += "\">";

    // Customer: name and domains.
    out += "<td class=\"c-name\" data-label=\"Customer\"><div><div class=\"name\">";
    put(out, c.name.empty() ? std::string_view("(unnamed)") : std::string_view(c.name));
    out += "</div>";
    if (!c.domains.empty()) {
      out += "<div class=\"doms\">";
      for (std::size_t d = 0; d < c.domains.size() && d < max_domains_shown; ++d) {
        if (d != 0) out += ", ";
        put(out, c.domains[d]);
      }
      if (c.domains.size() > max_domains_shown)
        out += fmt::format(" +{}", c.domains.size() - max_domains_shown);
      out += "</div>";
    }
    out += "</div></td>";

    // State: activity badge, the customer's state when it says more, mode, flush progress.
    out += "<td class=\"c-state\" data-label=\"State\"><div>";
    if (!c.activity.empty()) put_badge(out, activity_badges, c.activity);
    else out += "<span class=\"muted\">\xE2\x80\x94</span>";
    if ((c.state == "disabled" || c.state == "suspended") && c.state != c.activity)
      put_badge(out, activity_badges, c.state);
    if (!c.mode.empty()) {
      out += "<span class=\"tag\">";
      put(out, c.mode);
      out += "</span>";
    }
    // Every local part taken: the spam back door a backup MX must not be.
    if (c.recipient_check == "any") {
      out += "<span class=\"tag warn\" title=\"recipient check any: every address of its domains is taken, "
             "also those its server will refuse (flushgate customer set NAME --recipient-check verify)\">"
             "any recipient</span>";
    }
    if (c.flush && (c.activity == "flushing" || c.flush->messages_total > 0 || c.flush->bytes_total > 0))
      put_flush_progress(out, *c.flush);
    out += "</div></td>";

    // Queue numbers.
    // Queued: messages with their size under them. Zeros are grey: the eye
    // should land on the numbers that are not.
    out += "<td class=\"num c-queue\" data-label=\"Queued\">";
    if (!c.messages) out += "<span class=\"muted\">\xE2\x80\x94</span>";
    else if (*c.messages == 0) out += "<span class=\"muted\">0</span>";
    else out += "<span class=\"qn\">" + format_count(*c.messages) + "</span>";
    if (c.bytes && *c.bytes > 0) out += "<div class=\"qb\">" + format_bytes(non_negative(*c.bytes)) + "</div>";
    out += "</td><td class=\"num c-old\" data-label=\"Oldest\">";
    if (c.oldest && c.messages.value_or(0) > 0) {
      out += fmt::format("<span class=\"{}\">{}</span>", age_class(*c.oldest), format_age(*c.oldest));
    } else {
      out += "<span class=\"muted\">\xE2\x80\x94</span>";
    }
    out += "</td>";

    // Route and the last error.
    out += "<td class=\"c-route\" data-label=\"Route\"><div class=\"route\">";
    // The router says "hold" and "odmr" for routes that are no address.
    if (c.route == "hold" || (c.route.empty() && c.activity == "held")) {
      out += "<span class=\"muted\">no route \xE2\x80\x94 holding</span>";
    } else if (c.route == "odmr") {
      out += "<span class=\"muted\">next ATRN session</span>";
    } else if (!c.route.empty()) {
      out += "<span class=\"mono\">";
      put(out, clipped(c.route));
      out += "</span>";
    } else {
      out += "<span class=\"muted\">\xE2\x80\x94</span>";
    }
    // A planned retry matters where there is somewhere to retry to.
    const bool has_route = !c.route.empty() && c.route != "hold" && c.route != "odmr";
    if (has_route && c.next_attempt && *c.next_attempt > 0 && c.messages.value_or(0) > 0 &&
        c.activity != "flushing")
      out += "<div class=\"muted small\">next attempt in " + format_age(*c.next_attempt) + "</div>";
    if (!c.last_error.empty()) {
      out += "<div class=\"err\">\xE2\x9A\xA0 ";
      put(out, clipped(c.last_error));
      out += "</div>";
    }
    out += "</div></td></tr>\n";
  }
  out += "</tbody></table></div>\n";
  if (customers.size() > shown)
    out += fmt::format("<p class=\"more\">{} more customers not shown (the quietest).</p>\n",
                       customers.size() - shown);
  out += "</section>\n";
}

void put_histogram(std::string& out, const page_context& ctx) {
  const auto buckets = objects_of(ctx.snapshot, "age_histogram");
  std::int64_t total = 0, largest = 0;
  for (const auto& b : buckets) {
    const auto m = std::max<std::int64_t>(0, int_of(b, "messages").value_or(0));
    total = add_clamped(total, m);
    largest = std::max(largest, m);
  }
  out += "<section class=\"panel\" id=\"ages\">\n<h2>Queue by age";
  if (!buckets.empty()) out += fmt::format(" <span class=\"n\">{} messages</span>", format_count(total));
  out += "</h2>\n";
  if (buckets.empty()) {
    out += "<p class=\"empty\">No age histogram in this snapshot.</p>\n</section>\n";
    return;
  }
  out += "<div class=\"hist\">\n";
  for (const auto& b : buckets) {
    const auto messages = std::max<std::int64_t>(0, int_of(b, "messages").value_or(0));
    const auto bytes = int_of(b, "bytes");
    const auto upper = int_of(b, "upper_seconds").value_or(-1);
    const char* tone = upper > 0 && upper <= age_warn ? "h-ok" : upper > 0 && upper <= 24 * 3600 ? "h-warn" : "h-bad";
    const double pct = largest > 0 ? 100.0 * static_cast<double>(messages) / static_cast<double>(largest) : 0.0;
    out += "<div class=\"l\">";
    put(out, text_of(b, "label"));
    out += fmt::format("</div><div class=\"bar {}\">", tone);
    if (messages > 0) out += fmt::format("<span style=\"width:{:.1f}%\"></span>", pct);
    out += "</div><div class=\"v";
    if (messages == 0) out += " zero";
    out += "\">" + format_count(messages);
    if (bytes && messages > 0) out += " <small>" + format_bytes(non_negative(*bytes)) + "</small>";
    out += "</div>\n";
  }
  out += "</div>\n</section>\n";
}

void put_links(std::string& out, const page_context& ctx, std::vector<Object::Ptr> links) {
  // The newest link first: that is the one that just changed a route.
  std::stable_sort(links.begin(), links.end(), [](const Object::Ptr& a, const Object::Ptr& b) {
    return int_of(a, "since").value_or(0) > int_of(b, "since").value_or(0);
  });
  out += "<section class=\"panel\" id=\"links\">\n<h2>Live links";
  if (!links.empty()) out += fmt::format(" <span class=\"n\">{}</span>", links.size());
  out += "</h2>\n";
  if (links.empty()) {
    out += "<p class=\"empty\">No link is up.</p>\n</section>\n";
    return;
  }
  out += "<ul class=\"links\">\n";
  const std::size_t shown = std::min(links.size(), max_links);
  for (std::size_t i = 0; i < shown; ++i) {
    const Object::Ptr& l = links[i];
    const std::string kind = text_of(l, "kind");
    out += "<li class=\"link\"><div class=\"lk-top\"><span class=\"name\">";
    put(out, text_of(l, "customer"));
    out += "</span>";
    if (kind == "dsl") out += "<span class=\"tag k-dsl\">DSL</span>";
    else if (kind == "dialup") out += "<span class=\"tag k-dial\">dial-up</span>";
    else if (!kind.empty()) {
      out += "<span class=\"tag\">";
      put(out, kind);
      out += "</span>";
    }
    if (auto since = int_of(l, "since"); since && *since > 0) {
      out += "<span class=\"up\" title=\"since " + iso_time(*since) + "\">up " + format_age(ctx.now - *since) +
             "</span>";
    }
    out += "</div><div class=\"lk-sub mono\">";
    put(out, text_of(l, "user"));
    // Both families: the IPv4 address, the server's IPv6 address on the line, the LAN prefix.
    std::vector<std::string> addresses;
    for (const char* key : {"address", "ipv6_server"}) {
      if (std::string v = text_of(l, key); !v.empty()) addresses.push_back(v);
    }
    if (std::string v = text_of(l, "ipv6_address"); !v.empty() && v != text_of(l, "ipv6_server")) {
      addresses.push_back("line " + v);
    }
    if (std::string v = text_of(l, "ipv6_prefix"); !v.empty()) addresses.push_back("prefix " + v);
    for (std::size_t a = 0; a < addresses.size(); ++a) {
      out += a == 0 ? " <span class=\"arrow\">\xE2\x86\x92</span> " : " \xC2\xB7 ";
      put(out, addresses[a]);
    }
    out += "</div>";
    std::vector<std::string> meta;
    for (const char* key : {"nas", "session", "source"}) {
      if (std::string v = text_of(l, key); !v.empty()) meta.push_back(html_escape(v));
    }
    if (!meta.empty()) {
      out += "<div class=\"lk-meta\">";
      for (std::size_t m = 0; m < meta.size(); ++m) out += (m ? " \xC2\xB7 " : "") + meta[m];
      out += "</div>";
    }
    out += "</li>\n";
  }
  out += "</ul>\n";
  if (links.size() > shown) out += fmt::format("<p class=\"more\">{} more links not shown.</p>\n", links.size() - shown);
  out += "</section>\n";
}

void put_events(std::string& out, const page_context& ctx) {
  auto events = objects_of(ctx.snapshot, "events");
  // Newest first, whatever order the snapshot has them in.
  std::vector<std::pair<std::int64_t, Object::Ptr>> timed;
  timed.reserve(events.size());
  for (auto& e : events) timed.emplace_back(int_of(e, "time").value_or(0), e);
  std::stable_sort(timed.begin(), timed.end(), [](const auto& a, const auto& b) { return a.first > b.first; });

  out += "<section class=\"panel\" id=\"events\">\n<h2>Last events";
  if (!timed.empty()) out += " <span class=\"n\">newest first</span>";
  out += "</h2>\n";
  if (timed.empty()) {
    out += "<p class=\"empty\">No events yet.</p>\n</section>\n";
    return;
  }
  out += "<div class=\"scroll\"><table class=\"cards ev-table\">\n<thead><tr><th>Time (UTC)</th><th>Event</th>"
         "<th>Customer</th><th>What happened</th></tr></thead>\n<tbody>\n";
  const std::size_t shown = std::min(timed.size(), max_events);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& [when, e] = timed[i];
    out += "<tr class=\"event\"><td data-label=\"Time\" class=\"e-time nowrap\"><div>";
    if (when > 0) {
      out += "<span title=\"" + iso_time(when) + "\">" + short_time(when, ctx.now) + "</span>";
      out += "<span class=\"ago\">" + format_age(ctx.now - when) + " ago</span>";
    } else {
      out += "<span class=\"muted\">\xE2\x80\x94</span>";
    }
    out += "</div></td><td data-label=\"Event\" class=\"e-kind\">";
    const std::string kind = text_of(e, "kind");
    if (!kind.empty()) put_badge(out, event_badges, kind);
    out += "</td><td data-label=\"Customer\" class=\"e-cust name\">";
    put(out, text_of(e, "customer"));
    out += "</td><td data-label=\"What\" class=\"e-text\">";
    put(out, clipped(text_of(e, "text")));
    out += "</td></tr>\n";
  }
  out += "</tbody></table></div>\n";
  if (timed.size() > shown) out += fmt::format("<p class=\"more\">{} older events not shown.</p>\n", timed.size() - shown);
  out += "</section>\n";
}

// The cluster box (store = postgresql only): every node, whether it beats,
// and which node delivers which customer now.
void put_cluster(std::string& out, const page_context& ctx) {
  if (!ctx.snapshot || !ctx.snapshot->has("cluster")) return;
  Object::Ptr cluster = ctx.snapshot->getObject("cluster");
  if (!cluster) return;
  const auto nodes = objects_of(cluster, "nodes");
  const auto leases = objects_of(cluster, "leases");
  out += "<section class=\"panel\" id=\"cluster\">\n<h2>Cluster";
  out += fmt::format(" <span class=\"n\">{} nodes</span>", nodes.size());
  out += "</h2>\n<ul class=\"links\">\n";
  for (const auto& n : nodes) {
    const bool alive = n->has("alive") && n->getValue<bool>("alive");
    const bool self = n->has("self") && n->getValue<bool>("self");
    out += "<li class=\"link node\"><div class=\"lk-top\"><span class=\"name\">";
    put(out, text_of(n, "name"));
    out += "</span>";
    out += alive ? "<span class=\"tag k-dsl\">alive</span>" : "<span class=\"tag k-dial\">silent</span>";
    if (self) out += "<span class=\"tag\">this node</span>";
    out += "</div><div class=\"lk-meta\">";
    put(out, text_of(n, "version"));
    out += fmt::format(" \xC2\xB7 heartbeat {:.1f} s ago \xC2\xB7 {} leases",
                       static_cast<double>(int_of(n, "heartbeat_age_ms").value_or(0)) / 1000.0,
                       int_of(n, "leases").value_or(0));
    out += "</div></li>\n";
  }
  out += "</ul>\n";
  if (leases.empty()) {
    out += "<p class=\"empty\">No customer is being delivered right now.</p>\n";
  } else {
    out += "<ul class=\"links\">\n";
    for (const auto& l : leases) {
      out += "<li class=\"link lease\"><div class=\"lk-top\"><span class=\"name\">";
      put(out, text_of(l, "customer"));
      out += "</span></div><div class=\"lk-sub mono\">delivered by ";
      put(out, text_of(l, "holder"));
      out += "</div></li>\n";
    }
    out += "</ul>\n";
  }
  out += "</section>\n";
}

std::string render(const Object::Ptr& snapshot) {
  page_context ctx;
  ctx.snapshot = snapshot;
  ctx.now = int_of(snapshot, "generated").value_or(static_cast<std::int64_t>(std::time(nullptr)));
  if (auto r = int_of(snapshot, "refresh_seconds")) ctx.refresh = *r <= 0 ? 0 : std::clamp(*r, min_refresh, max_refresh);
  ctx.host = text_of(snapshot, "hostname");
  ctx.version = text_of(snapshot, "version");

  const auto customers = ordered_customers(snapshot);
  const auto links = objects_of(snapshot, "links");

  std::string out;
  out.reserve(24 * 1024 + customers.size() * 700 + links.size() * 400);
  put_head(out, ctx);
  out += "<body>\n";
  put_header(out, ctx);
  out += "<main>\n";
  put_tiles(out, ctx, customers, links);
  // Wide screens: customers and events on the left, the histogram and the
  // links beside them; narrow ones: one column, customers first.
  out += "<div class=\"layout\">\n<div class=\"primary\">\n";
  put_customers(out, customers);
  put_events(out, ctx);
  out += "</div>\n<aside class=\"side\">\n";
  put_cluster(out, ctx);
  put_histogram(out, ctx);
  put_links(out, ctx, links);
  out += "</aside>\n</div>\n</main>\n<footer>flushgate";
  if (!ctx.version.empty()) {
    out += ' ';
    put(out, ctx.version);
  }
  out += " \xC2\xB7 rendered from the daemon's status snapshot";
  if (int_of(snapshot, "generated")) out += " of " + iso_time(ctx.now);
  out += "</footer>\n<script>";
  out += counter_script;
  out += "</script>\n</body>\n</html>\n";
  return out;
}

// What the operator sees when even reading the snapshot failed.
constexpr std::string_view fallback_page =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta http-equiv=\"refresh\" content=\"10\"><title>flushgate status</title></head>"
    "<body><h1>flushgate</h1><p>The status snapshot could not be shown. The page reloads in 10 s.</p>"
    "</body></html>\n";

}  // namespace

std::string_view status_page_css() noexcept { return page_css; }

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (const char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      case '\0': out += "\xEF\xBF\xBD"; break;  // NUL is a parse error in HTML: show U+FFFD
      default: out += ch;
    }
  }
  return out;
}

std::string format_bytes(std::uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(units)) {
    value /= 1024.0;
    ++unit;
  }
  // One decimal while it tells something (below 10), whole numbers above.
  if (value < 9.95) return fmt::format("{:.1f} {}", value, units[unit]);
  return fmt::format("{:.0f} {}", value, units[unit]);
}

std::string format_age(std::int64_t seconds) {
  const std::int64_t s = std::max<std::int64_t>(0, seconds);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{:02}h", s / 86400, (s % 86400) / 3600);
}

std::string render_status_page(const Poco::JSON::Object::Ptr& snapshot) {
  try {
    return render(snapshot);
  } catch (...) {  // a bug or bad_alloc: the operator still gets a page
    return std::string(fallback_page);
  }
}

}  // namespace flushgate::control
