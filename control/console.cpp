// console.cpp — see console.hpp. handle() checks the request (bounds,
// session, origin, CSRF token), then a GET renders a page from one or more
// commands' results and a POST runs one command and answers with a
// redirect (303, so a reload never repeats the action) or the page again
// with the command's error.
#include "control/console.hpp"

#include "control/console_pages.hpp"
#include "control/http_api.hpp"
#include "core/log.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/URI.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <sstream>

namespace flushgate::control {

using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

constexpr const char* cookie_name = "fg_console";
constexpr int flush_refresh_seconds = 2;

// What the console shows after a successful action: fixed texts only, so a
// crafted ?note= can never put words on the page.
struct note_text {
  std::string_view key;
  std::string_view text;
};
constexpr note_text notes[] = {
    {"enabled", "Customer enabled: its mail is accepted again."},
    {"disabled", "Customer disabled: its mail is now refused like any unknown domain's."},
    {"suspended", "Customer suspended: new mail gets 450, queued mail still goes out."},
    {"held", "Message held: it stays queued until released."},
    {"released", "Message released: it goes out with the customer's next delivery."},
    {"deleted", "Message deleted from the queue."},
    {"added", "Customer added."},
    {"saved", "Customer changed."},
};

std::string note_for(const form_fields& query) {
  auto it = query.find("note");
  if (it == query.end()) return {};
  for (const auto& n : notes) {
    if (n.key == it->second) return std::string(n.text);
  }
  return {};
}

std::string field(const form_fields& f, const std::string& key) {
  auto it = f.find(key);
  return it == f.end() ? std::string() : it->second;
}

std::string trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

std::vector<std::string> words(std::string_view text, std::string_view separators) {
  std::vector<std::string> out;
  std::string word;
  for (char c : text) {
    if (separators.find(c) != std::string_view::npos) {
      if (!word.empty()) out.push_back(std::move(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) out.push_back(std::move(word));
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// One form component, '+' as space and %XX undone; false on a broken escape.
bool form_decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hex_digit(in[i + 1]), lo = hex_digit(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += in[i];
    }
  }
  return true;
}

console_response redirect(std::string location) {
  console_response r;
  r.status = 303;
  r.headers.emplace_back("Location", std::move(location));
  return r;
}

console_response page(int status, std::string body) {
  console_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

console_response refusal(int status, std::string_view why) {
  return page(status, render_console_notice("Refused", why));
}

// "key=value" for a redirect's query, the value percent-encoded.
std::string query_of(std::string_view key, std::string_view value) {
  return std::string(key) + "=" + query_value(value);
}

Object::Ptr object_result(const command_result& r) {
  try {
    return r.ok ? r.result.extract<Object::Ptr>() : Object::Ptr();
  } catch (const std::exception&) {  // Poco::Exception is one
    return {};
  }
}

// What each button of the console does: the control command it runs (the
// same as the CLI's), the state it sets, the notice after it, and whether
// it asks first.
struct action_rule {
  std::string_view action;
  bool on_message;          // takes qid=; otherwise name= (a customer)
  std::string_view command;
  std::string_view state;   // customer.set's state, "" for none
  std::string_view note;    // key into `notes`
  bool confirm;             // destructive: a confirmation page first
};
constexpr action_rule actions[] = {
    {"enable", false, "customer.set", "enabled", "enabled", false},
    {"disable", false, "customer.set", "disabled", "disabled", true},
    {"suspend", false, "customer.set", "suspended", "suspended", true},
    {"flush", false, "flush", "", "", false},
    {"hold", true, "queue.hold", "", "held", false},
    {"release", true, "queue.release", "", "released", false},
    {"delete", true, "queue.delete", "", "deleted", true},
};

const action_rule* find_action(std::string_view action) {
  for (const auto& a : actions) {
    if (a.action == action) return &a;
  }
  return nullptr;
}

// The question asked before a destructive action, in the words of its effect.
console_confirmation confirmation_for(const action_rule& rule, const std::string& name, const std::string& qid,
                                      const std::string& owner) {
  console_confirmation q;
  if (rule.on_message) {
    q.question = "Delete message " + qid + (owner.empty() ? "" : " of customer " + owner) +
                 " from the queue? Its sender gets no notice and it cannot be brought back.";
    q.cancel = "/console/message?" + query_of("qid", qid);
    return q;
  }
  q.cancel = "/console/customer?" + query_of("name", name);
  if (rule.action == "disable") {
    q.question = "Disable customer " + name +
                 "? Its mail is then refused (550) like any unknown domain's; queued mail stays queued.";
  } else {
    q.question = "Suspend customer " + name +
                 "? New mail for it then gets 450 (senders retry); queued mail still goes out.";
  }
  return q;
}

}  // namespace

std::string_view console_content_security_policy() {
  return "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
         "frame-ancestors 'none'; base-uri 'none'";
}

bool is_console_target(std::string_view target) {
  return target == "/console" || target.substr(0, 9) == "/console/" || target.substr(0, 9) == "/console?";
}

bool parse_form(std::string_view text, form_fields& out, std::string& why) {
  out.clear();
  if (text.size() > console_max_body) {
    why = "the form is larger than 64 KiB";
    return false;
  }
  std::size_t count = 0;
  while (!text.empty()) {
    const auto amp = text.find('&');
    const std::string_view pair = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view{} : text.substr(amp + 1);
    if (pair.empty()) continue;
    if (++count > console_max_fields) {
      why = "the form has more than 40 fields";
      return false;
    }
    const auto eq = pair.find('=');
    std::string key, value;
    if (!form_decode(pair.substr(0, eq), key) ||
        !form_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), value)) {
      why = "the form is not valid percent-encoding";
      return false;
    }
    if (key.size() > 64 || value.size() > console_max_field) {
      why = "a form field is longer than 16 KiB";
      return false;
    }
    out[key] = std::move(value);
  }
  return true;
}

form_fields customer_form_fields(const Object::Ptr& c) {
  form_fields f;
  if (!c) return f;
  auto text = [&c](const char* key) {
    try {
      return c->has(key) && !c->get(key).isEmpty() ? c->get(key).convert<std::string>() : std::string();
    } catch (const std::exception&) {
      return std::string();
    }
  };
  f["name"] = text("name");
  f["domains"] = joined_list(c, "domains");
  f["subdomains"] = text("subdomains") == "true" ? "yes" : "no";
  for (const char* key : {"mode", "route", "link_port", "max_size", "quota", "tls", "recipient_check",
                          "unknown_recipients"}) {
    f[key] = text(key);
  }
  // Durations are kept in seconds; written back with their unit they parse again.
  for (const char* key : {"queue_lifetime", "delay_warning"}) f[key] = text(key) + "s";
  std::string links;
  if (auto list = c->getArray("links")) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      Object::Ptr l = list->getObject(static_cast<unsigned>(i));
      if (!l) continue;
      links += l->optValue<std::string>("user", "") + " " + l->optValue<std::string>("kind", "dsl");
      if (const auto net = l->optValue<std::string>("net", ""); !net.empty()) links += " " + net;
      links += "\n";
    }
  }
  f["links"] = links;
  return f;
}

bool customer_args_of(const form_fields& form, Object::Ptr& args, std::string& why) {
  args = new Object;
  args->set("name", trimmed(field(form, "name")));
  if (form.count("domains") != 0) {
    Array::Ptr domains = new Array;
    for (const auto& d : words(field(form, "domains"), ", \t\r\n")) domains->add(d);
    args->set("domains", domains);
  }
  if (const auto sub = trimmed(field(form, "subdomains")); !sub.empty()) {
    if (sub != "yes" && sub != "no") {
      why = "subdomains: yes or no";
      return false;
    }
    args->set("subdomains", sub == "yes");
  }
  // Empty means "leave it" (the default for a new customer) for these...
  for (const char* key : {"mode", "link_port", "max_size", "quota", "queue_lifetime", "delay_warning",
                          "recipient_check", "unknown_recipients"}) {
    if (const auto v = trimmed(field(form, key)); !v.empty()) args->set(key, v);
  }
  // ...and "none"/"the default" for these, so they can be cleared.
  for (const char* key : {"route", "tls"}) {
    if (form.count(key) != 0) args->set(key, trimmed(field(form, key)));
  }
  if (form.count("links") != 0) {
    Array::Ptr links = new Array;
    int line_number = 0;
    for (const auto& line : words(field(form, "links"), "\r\n")) {
      ++line_number;
      const auto parts = words(line, " \t");
      if (parts.empty()) continue;
      if (parts.size() < 2 || parts.size() > 3) {
        why = "link users, line " + std::to_string(line_number) + ": write USER dsl|dialup [NETS]";
        return false;
      }
      Object::Ptr l = new Object;
      l->set("user", parts[0]);
      l->set("kind", parts[1]);
      if (parts.size() == 3) l->set("net", parts[2]);
      links->add(l);
    }
    args->set("links", links);
  }
  return true;
}

// ------------------------------------------------------------ requests

struct console::call {
  const console_request& request;
  std::string path;
  form_fields query;
  form_fields form;
  console_session session;

  // Who did it, for the log: the session and the address.
  std::string who() const { return session.log_name() + " from " + request.remote; }
  console_view view(std::string error = {}) const { return {session.csrf, note_for(query), std::move(error)}; }
};

console::console(std::string admin_token, console_session_limits limits)
    : admin_token_(std::move(admin_token)), sessions_(limits) {}

console_response console::handle(const console_request& request, const command_runner& run) {
  console_response r = [&]() -> console_response {
    if (request.target.size() > console_max_target) return refusal(414, "The address is too long.");
    call c{request, {}, {}, {}, {}};
    try {
      Poco::URI uri(request.target);
      c.path = uri.getPath();
      std::string why;
      if (!parse_form(uri.getRawQuery(), c.query, why)) return refusal(400, why);
    } catch (const Poco::Exception&) {
      return refusal(400, "The address is not a valid URI.");
    }
    if (c.path == "/console") return redirect("/console/");
    if (c.path == "/console/login") {
      if (request.method == "GET") return page(200, render_console_login({}));
      if (request.method == "POST") return login(request);
      return refusal(405, "The login page takes GET or POST.");
    }
    auto session = sessions_.find(cookie_value(request.cookie, cookie_name));
    if (request.method == "GET") {
      if (!session) return redirect("/console/login");
      c.session = *session;
      return get_page(c, run);
    }
    if (request.method != "POST") return refusal(405, "The console takes GET and POST.");
    if (!session) return refusal(403, "You are not logged in (or your session has ended): log in again.");
    c.session = *session;
    // A POST acts: it must come from one of our own pages, in this session.
    if (!same_origin_post(request.origin, request.referer, request.host)) {
      core::log_warning("console: POST {} by {} refused: foreign origin \"{}\" (referer \"{}\")", c.path, c.who(),
                        request.origin.substr(0, 200), request.referer.substr(0, 200));
      return refusal(403, "This request did not come from a page of this console.");
    }
    std::string why;
    if (!parse_form(request.body, c.form, why)) return refusal(400, why);
    if (!same_secret(field(c.form, "csrf"), c.session.csrf)) {
      core::log_warning("console: POST {} by {} refused: missing or wrong CSRF token", c.path, c.who());
      return refusal(403, "The form's security token is missing or out of date: reload the page and try again.");
    }
    if (c.path == "/console/logout") return logout(c);
    if (c.path == "/console/action") return post_action(c, run);
    if (c.path == "/console/save") return post_customer(c, run);
    return refusal(404, "No such console action.");
  }();
  r.headers.emplace_back("Content-Security-Policy", std::string(console_content_security_policy()));
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Referrer-Policy", "same-origin");
  return r;
}

bool console::signed_in(std::string_view cookie_header) {
  return sessions_.find(cookie_value(cookie_header, cookie_name)).has_value();
}

console_response console::login(const console_request& request) {
  // Login CSRF: a foreign page must not log the browser into a session it chose.
  if (!same_origin_post(request.origin, request.referer, request.host)) {
    core::log_warning("console: login from {} refused: foreign origin \"{}\"", request.remote,
                      request.origin.substr(0, 200));
    return refusal(403, "This request did not come from a page of this console.");
  }
  form_fields form;
  std::string why;
  if (!parse_form(request.body, form, why)) return refusal(400, why);
  if (admin_token_.empty() || !same_secret(trimmed(field(form, "token")), admin_token_)) {
    // Logged at most once in 10 s: a guesser must not flood the log.
    if (once_per(last_login_warning_, static_cast<std::int64_t>(std::time(nullptr)), 10)) {
      core::log_warning("console: login from {} refused: wrong token", request.remote);
    }
    return page(401, render_console_login("That is not the admin token."));
  }
  const console_session s = sessions_.open(request.remote);
  core::log_info("console: {} logged in from {}", s.log_name(), request.remote);
  console_response r = redirect("/console/");
  r.headers.emplace_back("Set-Cookie", session_cookie(cookie_name, s.id, sessions_.limits().lifetime));
  return r;
}

console_response console::logout(const call& c) {
  sessions_.close(c.session.id);
  core::log_info("console: {} logged out", c.who());
  console_response r = redirect("/console/login");
  r.headers.emplace_back("Set-Cookie", session_cookie(cookie_name, "", std::chrono::seconds(0)));
  return r;
}

console_response console::get_page(const call& c, const command_runner& run) {
  const std::string name = field(c.query, "name");
  auto failed = [](const command_result& r) {
    return page(r.ok ? 503 : http_status_of(r.status), render_console_notice("Not available", r.error));
  };
  if (c.path == "/console/") {
    const command_result status = run("status", new Object);
    if (!status.ok) return failed(status);
    return page(200, render_console_overview(c.view(), object_result(status)));
  }
  if (c.path == "/console/customer") {
    Object::Ptr args = new Object;
    args->set("name", name);
    const command_result customer = run("customer.show", args);
    if (!customer.ok) return failed(customer);
    const command_result flush = run("flush.status", args);
    Object::Ptr queue_args = new Object;
    queue_args->set("customer", name);
    queue_args->set("limit", 200);
    const command_result queue = run("queue.list", queue_args);
    if (!queue.ok) return failed(queue);
    return page(200, render_console_customer(c.view(), object_result(customer), object_result(queue),
                                             object_result(flush)));
  }
  if (c.path == "/console/message") {
    Object::Ptr args = new Object;
    args->set("qid", field(c.query, "qid"));
    const command_result message = run("queue.show", args);
    if (!message.ok) return failed(message);
    return page(200, render_console_message(c.view(), object_result(message)));
  }
  if (c.path == "/console/new") return page(200, render_console_customer_form(c.view(), true, {}));
  if (c.path == "/console/edit") {
    Object::Ptr args = new Object;
    args->set("name", name);
    const command_result customer = run("customer.show", args);
    if (!customer.ok) return failed(customer);
    return page(200, render_console_customer_form(c.view(), false, customer_form_fields(object_result(customer))));
  }
  if (c.path == "/console/flush") {
    Object::Ptr args = new Object;
    args->set("name", name);
    const command_result status = run("flush.status", args);
    if (!status.ok) return failed(status);
    const Object::Ptr o = object_result(status);
    bool running = false;
    try {
      running = o && o->getObject("flush") && o->getObject("flush")->optValue<bool>("running", false);
    } catch (const std::exception&) {
    }
    return page(200, render_console_flush(c.view(), o, running, flush_refresh_seconds));
  }
  return refusal(404, "No such console page.");
}

console_response console::post_action(const call& c, const command_runner& run) {
  const action_rule* rule = find_action(field(c.form, "action"));
  if (rule == nullptr) return refusal(400, "No such action.");
  const std::string name = field(c.form, "name");
  const std::string qid = field(c.form, "qid");
  if ((rule->on_message ? qid : name).empty()) {
    return refusal(400, rule->on_message ? "Which message?" : "Which customer?");
  }

  // The message's customer: for the question, and for where to go after a delete.
  std::string owner;
  if (rule->on_message) {
    Object::Ptr args = new Object;
    args->set("qid", qid);
    if (Object::Ptr m = object_result(run("queue.show", args))) owner = m->optValue<std::string>("customer", "");
  }
  if (rule->confirm && field(c.form, "confirm") != "yes") {
    console_confirmation q = confirmation_for(*rule, name, qid, owner);
    q.fields = c.form;
    return page(200, render_console_confirm(c.view(), q));
  }

  Object::Ptr args = new Object;
  if (rule->on_message) {
    Array::Ptr qids = new Array;
    qids->add(qid);
    args->set("qids", qids);
  } else {
    args->set("name", name);
    if (!rule->state.empty()) args->set("state", std::string(rule->state));
  }
  const command_result result = run(std::string(rule->command), args);
  const std::string action(rule->action);
  const std::string object = rule->on_message ? "message " + qid : "customer " + name;
  if (!result.ok) {
    core::log_warning("console: {}: {} {} failed: {}", c.who(), action, object, result.error);
    return page(http_status_of(result.status), render_console_notice("The " + action + " failed", result.error));
  }
  core::log_info("console: {}: {} {}", c.who(), action, object);
  const std::string note = "&note=" + std::string(rule->note);
  if (action == "flush") return redirect("/console/flush?" + query_of("name", name));
  if (action == "delete") {
    return redirect(owner.empty() ? "/console/?note=deleted" : "/console/customer?" + query_of("name", owner) + note);
  }
  if (rule->on_message) return redirect("/console/message?" + query_of("qid", qid) + note);
  return redirect("/console/customer?" + query_of("name", name) + note);
}

console_response console::post_customer(const call& c, const command_runner& run) {
  const bool is_new = field(c.form, "is_new") == "yes";
  form_fields shown = c.form;
  shown.erase("csrf");
  Object::Ptr args;
  std::string why;
  if (!customer_args_of(c.form, args, why)) {
    return page(400, render_console_customer_form(c.view(why), is_new, shown));
  }
  const std::string name = args->getValue<std::string>("name");
  const command_result result = run(is_new ? "customer.add" : "customer.set", args);
  if (!result.ok) {
    core::log_warning("console: {}: {} customer {} refused: {}", c.who(), is_new ? "add" : "change", name,
                      result.error);
    return page(http_status_of(result.status), render_console_customer_form(c.view(result.error), is_new, shown));
  }
  core::log_info("console: {}: {} customer {}", c.who(), is_new ? "added" : "changed", name);
  return redirect("/console/customer?" + query_of("name", name) + "&note=" + (is_new ? "added" : "saved"));
}

}  // namespace flushgate::control
