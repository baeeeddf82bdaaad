// console_pages.cpp — see console_pages.hpp. A page is head + header +
// main; the parts below are small writers appending to one string.
#include "control/console_pages.hpp"

#include "control/status_page.hpp"

#include <Poco/JSON/Array.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <ctime>

namespace flushgate::control {

using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

constexpr std::size_t max_customers = 500;
constexpr std::size_t max_messages = 200;
constexpr std::size_t max_recipients = 200;

// What the console adds to the status page's stylesheet: forms and buttons.
constexpr std::string_view console_css = R"css(
.top a{color:var(--headink)}.top nav{margin-left:auto;display:flex;gap:14px;align-items:center}
a{color:var(--blue)}
form.inline{display:inline}
button,.btn{font:inherit;font-size:13px;padding:4px 12px;border-radius:6px;border:1px solid var(--line);
background:var(--panel);color:var(--ink);cursor:pointer;text-decoration:none;display:inline-block}
button.warn{border-color:var(--amber);color:var(--amber)}button.bad{border-color:var(--red);color:var(--red)}
button.go{border-color:var(--blue);background:var(--blue);color:#fff}
.actions{display:flex;gap:8px;flex-wrap:wrap;margin:8px 0}
.note{background:var(--green-bg);color:var(--green);border-radius:8px;padding:8px 14px;margin-bottom:14px}
.error{background:var(--red-bg);color:var(--red);border-radius:8px;padding:8px 14px;margin-bottom:14px;overflow-wrap:break-word}
dl.kv{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:4px 18px;margin:4px 0}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;overflow-wrap:break-word}
.form label{display:block;margin:10px 0 3px;font-weight:600}
.form input[type=text],.form input[type=password],.form select,.form textarea{font:inherit;width:100%;max-width:520px;
padding:5px 8px;border:1px solid var(--line);border-radius:6px;background:var(--panel);color:var(--ink)}
.form .hint{font-size:12px;color:var(--muted)}
.narrow{max-width:640px}
)css";

void put(std::string& out, std::string_view text) { out += html_escape(text); }

std::string text_of(const Object::Ptr& o, const std::string& key) {
  if (!o || !o->has(key)) return {};
  try {
    const auto v = o->get(key);
    return v.isEmpty() ? std::string() : v.convert<std::string>();
  } catch (const std::exception&) {  // Poco::Exception is one
    return {};
  }
}

std::int64_t int_of(const Object::Ptr& o, const std::string& key) {
  try {
    return o && o->has(key) ? o->get(key).convert<std::int64_t>() : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

bool flag_of(const Object::Ptr& o, const std::string& key) {
  try {
    return o && o->has(key) && o->get(key).convert<bool>();
  } catch (const std::exception&) {
    return false;
  }
}

Array::Ptr array_of(const Object::Ptr& o, const std::string& key) {
  try {
    return o && o->has(key) ? o->getArray(key) : Array::Ptr();
  } catch (const std::exception&) {
    return {};
  }
}

Object::Ptr object_of(const Object::Ptr& o, const std::string& key) {
  try {
    return o && o->has(key) ? o->getObject(key) : Object::Ptr();
  } catch (const std::exception&) {
    return {};
  }
}

Object::Ptr object_at(const Array::Ptr& a, std::size_t i) {
  try {
    return a->getObject(static_cast<unsigned>(i));
  } catch (const std::exception&) {
    return {};
  }
}

std::string dash_if_empty(std::string text) { return text.empty() ? std::string("\xE2\x80\x94") : text; }

std::string utc_time(std::int64_t t) {
  if (t <= 0) return "\xE2\x80\x94";
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// A customer state's badge; the class comes from this table, never from the text.
void put_state(std::string& out, std::string_view state) {
  const char* css = state == "enabled" ? "c-green" : state == "suspended" ? "c-red" : "c-grey";
  out += fmt::format("<span class=\"badge {}\" data-state=\"", css);
  put(out, state);
  out += "\">";
  put(out, dash_if_empty(std::string(state)));
  out += "</span>";
}

void put_head(std::string& out, std::string_view title, int refresh = 0) {
  out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  if (refresh > 0) out += fmt::format("<meta http-equiv=\"refresh\" content=\"{}\">\n", refresh);
  out += "<title>";
  put(out, title);
  out += " \xC2\xB7 flushgate console</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>";
  out += status_page_css();
  out += console_css;
  out += "</style>\n</head>\n<body>\n";
}

void put_hidden(std::string& out, std::string_view name, std::string_view value) {
  out += "<input type=\"hidden\" name=\"";
  put(out, name);
  out += "\" value=\"";
  put(out, value);
  out += "\">";
}

// The header: brand, and for a session the way home and out.
void put_header(std::string& out, const console_view* view) {
  out += "<header class=\"top\">\n<div class=\"brand\"><span class=\"logo\"></span>flushgate console</div>\n";
  if (view != nullptr) {
    out += "<nav><a href=\"/console/\">Customers</a><a href=\"/console/new\">Add customer</a>"
           "<a href=\"/\">Status page</a>"
           "<form class=\"inline\" method=\"post\" action=\"/console/logout\">";
    put_hidden(out, "csrf", view->csrf);
    out += "<button type=\"submit\" id=\"logout\">Log out</button></form></nav>\n";
  }
  out += "</header>\n<main>\n";
  if (view != nullptr && !view->note.empty()) {
    out += "<div class=\"note\" id=\"note\">";
    put(out, view->note);
    out += "</div>\n";
  }
  if (view != nullptr && !view->error.empty()) {
    out += "<div class=\"error\" id=\"error\">";
    put(out, view->error);
    out += "</div>\n";
  }
}

void put_tail(std::string& out) { out += "</main>\n</body>\n</html>\n"; }

// One button that posts an action: a form of its own, with the CSRF token.
void put_action(std::string& out, const console_view& view, std::string_view action, std::string_view label,
                std::string_view key, std::string_view value, std::string_view css) {
  out += "<form class=\"inline\" method=\"post\" action=\"/console/action\">";
  put_hidden(out, "csrf", view.csrf);
  put_hidden(out, "action", action);
  put_hidden(out, key, value);
  out += fmt::format("<button type=\"submit\" class=\"{}\" data-action=\"{}\"", css, action);
  if (key == "qid") {
    out += " data-qid=\"";
    put(out, value);
    out += "\"";
  }
  out += ">";
  out += label;
  out += "</button></form>";
}

// Hold for a message that goes out, Release for a held one.
void put_hold_or_release(std::string& out, const console_view& view, const Object::Ptr& m, const std::string& qid) {
  if (flag_of(m, "held")) {
    put_action(out, view, "release", "Release", "qid", qid, "");
  } else {
    put_action(out, view, "hold", "Hold", "qid", qid, "");
  }
}

void put_kv(std::string& out, std::string_view key, const std::string& value, std::string_view id = {}) {
  out += "<dt>";
  out += key;
  out += "</dt><dd";
  if (!id.empty()) out += fmt::format(" id=\"{}\"", id);
  out += ">";
  put(out, dash_if_empty(value));
  out += "</dd>";
}

}  // namespace

std::string render_console_login(std::string_view error) {
  std::string out;
  put_head(out, "log in");
  put_header(out, nullptr);
  out += "<section class=\"panel narrow form\"><h2>Log in</h2>\n";
  if (!error.empty()) {
    out += "<div class=\"error\" id=\"error\">";
    put(out, error);
    out += "</div>\n";
  }
  out += "<form method=\"post\" action=\"/console/login\">"
         "<label for=\"token\">Admin token</label>"
         "<input type=\"password\" id=\"token\" name=\"token\" maxlength=\"512\" autocomplete=\"current-password\" "
         "required autofocus>"
         "<p class=\"hint\">The token in the daemon's admin_token_file.</p>"
         "<button type=\"submit\" class=\"go\" id=\"login\">Log in</button></form>\n</section>\n";
  put_tail(out);
  return out;
}

std::string render_console_overview(const console_view& view, const Object::Ptr& status) {
  std::string out;
  put_head(out, "customers");
  put_header(out, &view);
  out += "<section class=\"panel\"><h2>Customers</h2>\n<div class=\"scroll\"><table id=\"customers\">"
         "<thead><tr><th>Customer</th><th>State</th><th>Activity</th><th>Route</th><th class=\"num\">Queued</th>"
         "<th class=\"num\">Size</th><th>Actions</th></tr></thead><tbody>\n";
  const auto customers = array_of(status, "customers");
  const std::size_t n = customers ? std::min(customers->size(), max_customers) : 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Object::Ptr c = object_at(customers, i);
    const std::string name = text_of(c, "name");
    if (name.empty()) continue;
    out += "<tr data-customer=\"";
    put(out, name);
    out += "\"><td class=\"name\"><a href=\"/console/customer?name=" + query_value(name) + "\">";
    put(out, name);
    out += "</a></td><td>";
    put_state(out, text_of(c, "state"));
    out += "</td><td>";
    put(out, dash_if_empty(text_of(c, "activity")));
    out += "</td><td class=\"route mono\">";
    put(out, dash_if_empty(text_of(c, "route")));
    out += fmt::format("</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>", int_of(c, "messages"),
                       format_bytes(static_cast<std::uint64_t>(std::max<std::int64_t>(0, int_of(c, "bytes")))));
    put_action(out, view, "flush", "Flush now", "name", name, "");
    out += "</td></tr>\n";
  }
  if (n == 0) out += "<tr><td colspan=\"7\" class=\"muted\">No customers yet.</td></tr>\n";
  out += "</tbody></table></div></section>\n";
  put_tail(out);
  return out;
}

std::string render_console_customer(const console_view& view, const Object::Ptr& customer,
                                    const Object::Ptr& queue, const Object::Ptr& flush) {
  const std::string name = text_of(customer, "name");
  const std::string state = text_of(customer, "state");
  std::string out;
  put_head(out, name);
  put_header(out, &view);
  out += "<section class=\"panel\"><h2>Customer <span id=\"customer-name\">";
  put(out, name);
  out += "</span> ";
  put_state(out, state);
  out += "</h2>\n<div class=\"actions\">";
  if (state != "enabled") put_action(out, view, "enable", "Enable", "name", name, "");
  if (state != "suspended") put_action(out, view, "suspend", "Suspend", "name", name, "warn");
  if (state != "disabled") put_action(out, view, "disable", "Disable", "name", name, "bad");
  put_action(out, view, "flush", "Flush now", "name", name, "go");
  out += "<a class=\"btn\" id=\"edit\" href=\"/console/edit?name=" + query_value(name) + "\">Change</a></div>\n";
  out += "<dl class=\"kv\">";
  put_kv(out, "Domains", joined_list(customer, "domains"));
  put_kv(out, "Mode", text_of(customer, "mode"));
  put_kv(out, "Primary route", text_of(customer, "route"));
  put_kv(out, "Route now", text_of(flush, "route"), "route-now");
  put_kv(out, "Link port", text_of(customer, "link_port"));
  std::string links;
  if (auto list = array_of(customer, "links")) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      const Object::Ptr l = object_at(list, i);
      links += (i ? ", " : "") + text_of(l, "user") + " (" + text_of(l, "kind") + ")";
    }
  }
  put_kv(out, "Links", links);
  out += "</dl></section>\n";

  // The queue, oldest first as the store lists it.
  out += fmt::format("<section class=\"panel\"><h2>Queue <span class=\"n\">{} of {} shown</span></h2>\n",
                     int_of(queue, "shown"), int_of(queue, "total"));
  out += "<div class=\"scroll\"><table id=\"queue\"><thead><tr><th>Queue id</th><th>Arrived</th><th>Sender</th>"
         "<th class=\"num\">Rcpts</th><th class=\"num\">Size</th><th>Held</th><th>Actions</th></tr></thead><tbody>\n";
  const auto messages = array_of(queue, "messages");
  const std::size_t n = messages ? std::min(messages->size(), max_messages) : 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Object::Ptr m = object_at(messages, i);
    const std::string qid = text_of(m, "qid");
    out += "<tr data-qid=\"";
    put(out, qid);
    out += "\"><td class=\"mono\"><a href=\"/console/message?qid=" + query_value(qid) + "\">";
    put(out, qid);
    out += "</a></td><td class=\"nowrap\">" + utc_time(int_of(m, "arrival")) + "</td><td class=\"mono\">";
    put(out, text_of(m, "sender").empty() ? "<>" : text_of(m, "sender"));
    out += fmt::format("</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>",
                       int_of(m, "recipient_count"),
                       format_bytes(static_cast<std::uint64_t>(std::max<std::int64_t>(0, int_of(m, "size")))),
                       flag_of(m, "held") ? "held" : "");
    put_hold_or_release(out, view, m, qid);
    out += " ";
    put_action(out, view, "delete", "Delete", "qid", qid, "bad");
    out += "</td></tr>\n";
  }
  if (n == 0) out += "<tr><td colspan=\"7\" class=\"muted\">Nothing queued.</td></tr>\n";
  out += "</tbody></table></div></section>\n";
  put_tail(out);
  return out;
}

std::string render_console_message(const console_view& view, const Object::Ptr& m) {
  const std::string qid = text_of(m, "qid");
  const std::string customer = text_of(m, "customer");
  std::string out;
  put_head(out, qid);
  put_header(out, &view);
  out += "<section class=\"panel\"><h2>Message <span class=\"mono\" id=\"qid\">";
  put(out, qid);
  out += "</span></h2>\n<div class=\"actions\">";
  put_hold_or_release(out, view, m, qid);
  put_action(out, view, "delete", "Delete", "qid", qid, "bad");
  out += "<a class=\"btn\" href=\"/console/customer?name=" + query_value(customer) + "\">Back to ";
  put(out, customer);
  out += "</a></div>\n<dl class=\"kv\">";
  put_kv(out, "Customer", customer);
  put_kv(out, "Sender", text_of(m, "sender").empty() ? "<>" : text_of(m, "sender"), "sender");
  out += "<dt>Arrived</dt><dd>" + utc_time(int_of(m, "arrival")) + "</dd>";
  out += "<dt>Size</dt><dd>" +
         format_bytes(static_cast<std::uint64_t>(std::max<std::int64_t>(0, int_of(m, "size")))) + "</dd>";
  put_kv(out, "Held", flag_of(m, "held") ? "yes" : "no");
  put_kv(out, "Client", text_of(m, "client"));
  put_kv(out, "Envelope id", text_of(m, "envid"));
  put_kv(out, "RET", text_of(m, "ret"));
  put_kv(out, "Body", text_of(m, "body_type"));
  out += "</dl></section>\n<section class=\"panel\"><h2>Recipients</h2>\n<div class=\"scroll\"><table id=\"recipients\">"
         "<thead><tr><th>Recipient</th><th class=\"num\">Attempts</th><th>Next attempt</th><th>Last reply</th>"
         "</tr></thead><tbody>\n";
  const auto rcpts = array_of(m, "recipients");
  const std::size_t n = rcpts ? std::min(rcpts->size(), max_recipients) : 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Object::Ptr r = object_at(rcpts, i);
    out += "<tr><td class=\"mono\">";
    put(out, text_of(r, "address"));
    out += fmt::format("</td><td class=\"num\">{}</td><td class=\"nowrap\">{}</td><td class=\"mono\">",
                       int_of(r, "attempts"), utc_time(int_of(r, "next_attempt")));
    put(out, dash_if_empty(text_of(r, "last_reply")));
    out += "</td></tr>\n";
  }
  out += "</tbody></table></div></section>\n";
  put_tail(out);
  return out;
}

namespace {

struct form_field {
  const char* name;
  const char* label;
  const char* hint;
  bool textarea = false;
};

// The customer form: the CLI's `customer add` options, one field each.
constexpr form_field customer_form[] = {
    {"domains", "Domains", "Comma- or space-separated, e.g. acme.test, acme-gmbh.test"},
    {"subdomains", "Subdomains", "yes: mail for any subdomain of the domains is the customer's too"},
    {"mode", "Delivery mode", "relay, hold or odmr"},
    {"route", "Primary route", "HOST, HOST:PORT, mx, or empty for none"},
    {"link_port", "Link port", "The port the customer's server listens on when reached over a link"},
    {"links", "Link users", "One a line: USER dsl|dialup [NETS], e.g. acme-dsl dsl", true},
    {"max_size", "Maximum message size", "Bytes or with a unit (10M); 0: the global limit"},
    {"quota", "Quota", "Bytes or with a unit (2G); 0: none"},
    {"queue_lifetime", "Queue lifetime", "A duration: 5d, 120h"},
    {"delay_warning", "Delay warning", "A duration: 4h, 90m"},
    {"tls", "TLS", "none, may, encrypt, verify, or empty for the smtp_tls default"},
    {"recipient_check", "Recipient check", "any, list, learn or verify"},
    {"unknown_recipients", "Unknown recipients", "tempfail, accept or reject"},
};

}  // namespace

std::string render_console_customer_form(const console_view& view, bool is_new, const form_fields& fields) {
  auto value = [&fields](const char* key) {
    auto it = fields.find(key);
    return it == fields.end() ? std::string() : it->second;
  };
  std::string out;
  put_head(out, is_new ? "add customer" : "change " + value("name"));
  put_header(out, &view);
  out += "<section class=\"panel narrow form\"><h2>";
  out += is_new ? "Add a customer" : "Change customer ";
  if (!is_new) put(out, value("name"));
  out += "</h2>\n<form method=\"post\" action=\"/console/save\" id=\"customer-form\">";
  put_hidden(out, "csrf", view.csrf);
  put_hidden(out, "is_new", is_new ? "yes" : "no");
  if (is_new) {
    out += "<label for=\"f-name\">Name</label><input type=\"text\" id=\"f-name\" name=\"name\" maxlength=\"63\" "
           "required value=\"";
    put(out, value("name"));
    out += "\"><div class=\"hint\">1-63 lower-case letters, digits, '.', '_' or '-'</div>";
  } else {
    put_hidden(out, "name", value("name"));
  }
  for (const auto& f : customer_form) {
    out += fmt::format("<label for=\"f-{0}\">{1}</label>", f.name, f.label);
    if (f.textarea) {
      out += fmt::format("<textarea id=\"f-{0}\" name=\"{0}\" rows=\"3\" maxlength=\"8000\">", f.name);
      put(out, value(f.name));
      out += "</textarea>";
    } else {
      out += fmt::format("<input type=\"text\" id=\"f-{0}\" name=\"{0}\" maxlength=\"1000\" value=\"", f.name);
      put(out, value(f.name));
      out += "\">";
    }
    out += fmt::format("<div class=\"hint\">{}</div>", f.hint);
  }
  out += "<div class=\"actions\"><button type=\"submit\" class=\"go\" id=\"save\">";
  out += is_new ? "Add customer" : "Save changes";
  out += "</button><a class=\"btn\" href=\"";
  out += is_new ? "/console/" : "/console/customer?name=" + query_value(value("name"));
  out += "\">Cancel</a></div></form>\n</section>\n";
  put_tail(out);
  return out;
}

std::string render_console_confirm(const console_view& view, const console_confirmation& confirmation) {
  std::string out;
  put_head(out, "confirm");
  put_header(out, &view);
  out += "<section class=\"panel narrow\"><h2>Please confirm</h2>\n<p id=\"question\">";
  put(out, confirmation.question);
  out += "</p>\n<form method=\"post\" action=\"/console/action\" class=\"actions\">";
  put_hidden(out, "csrf", view.csrf);
  for (const auto& [k, v] : confirmation.fields) {
    if (k != "csrf" && k != "confirm") put_hidden(out, k, v);
  }
  put_hidden(out, "confirm", "yes");
  out += "<button type=\"submit\" class=\"bad\" id=\"confirm\">Yes, do it</button><a class=\"btn\" id=\"cancel\" href=\"";
  put(out, confirmation.cancel);
  out += "\">Cancel</a></form>\n</section>\n";
  put_tail(out);
  return out;
}

std::string render_console_flush(const console_view& view, const Object::Ptr& status, bool running, int refresh) {
  const std::string name = text_of(status, "customer");
  const Object::Ptr f = object_of(status, "flush");
  std::string out;
  put_head(out, "flush " + name, running ? refresh : 0);
  put_header(out, &view);
  out += "<section class=\"panel narrow\"><h2>Flush of ";
  put(out, name);
  out += running ? " <span class=\"badge c-blue\" id=\"flush-state\">running</span>"
                 : " <span class=\"badge c-green\" id=\"flush-state\">not running</span>";
  out += "</h2>\n";
  const std::int64_t total = int_of(f, "messages_at_start"), done = int_of(f, "messages_done");
  if (total > 0) {
    const auto percent = std::clamp<std::int64_t>(done * 100 / total, 0, 100);
    out += fmt::format("<div class=\"prog\" style=\"width:100%\"><div class=\"bar\"><span style=\"width:{}%\"></span>"
                       "</div><div class=\"t\">{} of {} messages</div></div>\n",
                       percent, done, total);
  }
  out += "<dl class=\"kv\">";
  put_kv(out, "Route", text_of(status, "route"));
  put_kv(out, "Messages left", std::to_string(int_of(status, "messages_left")), "messages-left");
  put_kv(out, "Delivered recipients", std::to_string(int_of(f, "recipients_delivered")), "delivered");
  put_kv(out, "Deferred recipients", std::to_string(int_of(f, "recipients_deferred")));
  put_kv(out, "Failed recipients", std::to_string(int_of(f, "recipients_failed")));
  put_kv(out, "Started", utc_time(int_of(f, "started")));
  put_kv(out, "Finished", utc_time(int_of(f, "finished")));
  put_kv(out, "Last error", text_of(f, "error"), "flush-error");
  out += "</dl>\n";
  if (running) out += fmt::format("<p class=\"muted small\">This page reloads every {} s while the flush runs.</p>", refresh);
  out += "<div class=\"actions\"><a class=\"btn\" href=\"/console/flush?name=" + query_value(name) +
         "\">Reload</a><a class=\"btn\" href=\"/console/customer?name=" + query_value(name) + "\">Back to ";
  put(out, name);
  out += "</a></div></section>\n";
  put_tail(out);
  return out;
}

std::string render_console_notice(std::string_view title, std::string_view text) {
  std::string out;
  put_head(out, title);
  put_header(out, nullptr);
  out += "<section class=\"panel narrow\"><h2 id=\"notice-title\">";
  put(out, title);
  out += "</h2><p id=\"notice\">";
  put(out, text);
  out += "</p><p><a href=\"/console/\">Back to the console</a></p></section>\n";
  put_tail(out);
  return out;
}

std::string query_value(std::string_view text) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string joined_list(const Object::Ptr& o, const std::string& key) {
  std::string out;
  if (auto list = array_of(o, key)) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      out += (i ? ", " : "") + list->getElement<std::string>(static_cast<unsigned>(i));
    }
  }
  return out;
}

}  // namespace flushgate::control
