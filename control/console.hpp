// console.hpp — the operator console: the status page's actions for
// operators holding the admin token, as plain HTML forms under /console/.
//
// Purpose: log in with the admin token, then per customer enable, disable,
// suspend, flush now (a progress page that reloads itself), add and change
// (a form); per message hold, release and delete; a customer's queue and one
// message's envelope, recipients and last replies. Every action runs the
// same control command (commands.hpp) as the CLI and the HTTP API, so the
// same validation applies and its error is shown on the page.
//   GET  /console/login            the login form      POST /console/login   (token)
//   POST /console/logout
//   GET  /console/                 customers, with their state and queue
//   GET  /console/customer?name=N  one customer, its queue and its actions
//   GET  /console/message?qid=Q    one message
//   GET  /console/new, /console/edit?name=N   the customer form; POST /console/save
//   GET  /console/flush?name=N     flush progress (reloads while it runs)
//   POST /console/action           action=enable|disable|suspend|flush|hold|release|delete
// Security: everything but the login form needs a live session
// (console_session.hpp). Every POST must carry the session's CSRF token and
// an Origin (or Referer) of this server; the cookie is SameSite=Strict.
// disable, suspend and delete first answer with a confirmation page; only
// its own POST (confirm=yes) acts. Every action is logged with the session
// (its id's first 8 characters) and the remote address. The pages fetch
// nothing: the CSP allows no source at all but inline styles, no script,
// forms only to this server, no framing. Input is bounded: the target
// 2 KiB, the body 64 KiB, at most 40 fields, each field 16 KiB; every text
// shown is HTML-escaped.
// Errors: handle() never throws: a failed command is shown on the page
// (4xx/5xx status), a refused request gets 403 and a short page.
// See also: console_session.hpp, console_pages.hpp, commands.hpp, README
// "Operator console".
#pragma once

#include "control/commands.hpp"
#include "control/console_session.hpp"

#include <Poco/JSON/Object.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flushgate::control {

// One HTTP request as the console sees it.
struct console_request {
  std::string method;
  std::string target;   // path and query, percent-encoded
  std::string body;     // application/x-www-form-urlencoded for POSTs
  std::string cookie;   // the Cookie header
  std::string origin;   // the Origin header
  std::string referer;  // the Referer header
  std::string host;     // the Host header
  std::string remote;   // the peer's address, for the log
};

struct console_response {
  int status = 200;
  std::string content_type = "text/html; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;  // besides the security headers
  std::string body;
};

// Runs one control command (on the io thread) and waits for its result.
using command_runner = std::function<command_result(const std::string& name, Poco::JSON::Object::Ptr args)>;

// Form fields by name (the last one of a repeated name wins).
using form_fields = std::map<std::string, std::string>;

inline constexpr std::size_t console_max_body = 64 * 1024;
inline constexpr std::size_t console_max_target = 2048;
inline constexpr std::size_t console_max_fields = 40;
inline constexpr std::size_t console_max_field = 16 * 1024;

// The Content-Security-Policy every console answer carries.
std::string_view console_content_security_policy();

// True when `target` is the console's (its path is /console or below).
bool is_console_target(std::string_view target);

// Parses an application/x-www-form-urlencoded body (or query); false with a
// reason when it breaks a bound above or is not valid percent-encoding.
bool parse_form(std::string_view text, form_fields& out, std::string& why);

// The customer form's fields for a customer as `customer.show` gives it.
form_fields customer_form_fields(const Poco::JSON::Object::Ptr& customer);

// The customer form's fields as `customer.add`/`customer.set` arguments.
// Only the form's own shape is checked here (link lines are "USER KIND
// [NETS]"); what the values mean is for the command to judge.
bool customer_args_of(const form_fields& form, Poco::JSON::Object::Ptr& args, std::string& why);

class console {
 public:
  console(std::string admin_token, console_session_limits limits = {});

  // Answers one request under /console/.
  console_response handle(const console_request& request, const command_runner& run);

  // True when the Cookie header carries a live session (the status page,
  // GET / only, lets such a browser in without asking for the token).
  bool signed_in(std::string_view cookie_header);

  console_sessions& sessions() noexcept { return sessions_; }

 private:
  struct call;  // one request in progress, defined in console.cpp
  console_response login(const console_request& request);
  console_response logout(const call& c);
  console_response get_page(const call& c, const command_runner& run);
  console_response post_action(const call& c, const command_runner& run);
  console_response post_customer(const call& c, const command_runner& run);

  std::string admin_token_;
  console_sessions sessions_;
  std::atomic<std::int64_t> last_login_warning_{0};  // wrong tokens are logged once in 10 s
};

}  // namespace flushgate::control
