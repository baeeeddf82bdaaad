// console_pages.hpp — the operator console's HTML: pure functions from the
// control commands' JSON results to whole pages.
//
// Purpose: control/console.cpp decides what to show; these render it. Each
// page is one self-contained document with the status page's inline CSS
// (status_page_css()) and a little of its own, and no script.
// Security: every text from a command result (customer names, domains,
// routes, senders, recipients, replies from remote servers) is
// HTML-escaped, in text and attribute values alike; every form carries the
// session's CSRF token as a hidden field. Lists are capped (customers 500,
// messages 200, recipients 200).
// Errors: none; a missing or mistyped field is shown as "—".
// See also: console.hpp, status_page.hpp.
#pragma once

#include "control/console.hpp"

#include <Poco/JSON/Object.h>

#include <string>
#include <string_view>

namespace flushgate::control {

// What every page of a session knows.
struct console_view {
  std::string csrf;   // the session's token, written into every form
  std::string note;   // a plain-text notice shown on top ("" for none)
  std::string error;  // a plain-text error shown on top ("" for none)
};

// A destructive action waiting for the operator's "yes".
struct console_confirmation {
  std::string question;  // plain text: "Delete message Q of customer C?"
  form_fields fields;    // posted again with confirm=yes
  std::string cancel;    // where "Cancel" leads (a /console/ path)
};

std::string render_console_login(std::string_view error);
std::string render_console_overview(const console_view& view, const Poco::JSON::Object::Ptr& status);
std::string render_console_customer(const console_view& view, const Poco::JSON::Object::Ptr& customer,
                                    const Poco::JSON::Object::Ptr& queue, const Poco::JSON::Object::Ptr& flush);
std::string render_console_message(const console_view& view, const Poco::JSON::Object::Ptr& message);
std::string render_console_customer_form(const console_view& view, bool is_new, const form_fields& fields);
std::string render_console_confirm(const console_view& view, const console_confirmation& confirmation);
// Flush progress; reloads itself every `refresh` seconds while `running`.
std::string render_console_flush(const console_view& view, const Poco::JSON::Object::Ptr& flush_status,
                                 bool running, int refresh);
// A short page for a refusal or a failure: title and plain text.
std::string render_console_notice(std::string_view title, std::string_view text);

// The percent-encoding of a query value: all but A-Z a-z 0-9 - _ . ~ (RFC 3986).
std::string query_value(std::string_view text);
// The strings of `o`'s array `key` joined with ", " ("" when there is none).
std::string joined_list(const Poco::JSON::Object::Ptr& o, const std::string& key);

}  // namespace flushgate::control
