// status_page.hpp — the operator's status page: one self-contained HTML
// document rendered on the server from the daemon's status snapshot.
//
// Purpose: control/http_api serves `GET /` with render_status_page() of the
// `status` command's snapshot. The page shows the host, uptime, totals and
// disk headroom; the customers with trouble first (held with old mail, no
// route, failing, disabled or suspended), each with a state badge, a flush
// progress bar, queue messages, bytes and oldest age; the age histogram;
// the live links; the last events, newest first. It reloads itself every
// `refresh_seconds` (<meta http-equiv="refresh">) and has a small inline
// script that counts the seconds since the snapshot was taken. All CSS is
// inline and the charts are CSS bars: the page fetches nothing, from
// anywhere (its Content-Security-Policy allows no source but itself inline,
// and the favicon is a data: URL).
// Security: every text from the snapshot — customer names, domains, routes,
// errors, link users, NAS names, event texts — comes from operators, RADIUS
// or remote peers and is HTML-escaped before it is written, in text and in
// attribute values alike. Values that choose a CSS class (activity, link
// kind, event kind) are mapped through fixed tables, never copied. The
// inline script's SHA-256 is the only script the page's CSP allows, so even
// markup that slipped through escaping could not run a script. Lists are
// capped (customers 500, links 200, events 100) so a huge snapshot cannot
// make a huge page.
// Errors: none. Any field of the snapshot may be missing, null or of the
// wrong type; what is there is rendered, what is not is left out or shown
// as "—". render_status_page() never throws (a snapshot it cannot read at
// all gives a page that says so).
// See also: control/http_api.hpp (serves it), control/commands.cpp
// (`status`), README "Status page", HTML Living Standard §13.1 (escaping),
// CSP Level 3 (hash sources).
#pragma once

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace flushgate::control {

// The whole page (text/html; charset=utf-8) for `snapshot`; a null pointer gives an empty page.
std::string render_status_page(const Poco::JSON::Object::Ptr& snapshot);

// The page's inline stylesheet (the operator console uses it too).
std::string_view status_page_css() noexcept;

// `text` with & < > " ' replaced by character references: safe in element text and quoted attributes.
std::string html_escape(std::string_view text);

// Bytes in 1024-based human units: "0 B", "999 B", "1.2 KiB", "34 KiB", "117 MiB".
std::string format_bytes(std::uint64_t bytes);

// An age in the two largest units: "42s", "4m05s", "3h12m", "2d04h"; negative ages count as 0.
std::string format_age(std::int64_t seconds);

}  // namespace flushgate::control
