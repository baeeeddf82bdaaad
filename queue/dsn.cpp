// dsn.cpp — RFC 3464 delivery status notifications. See dsn.hpp.
#include "queue/dsn.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>

namespace flushgate::queue {
namespace {

// RFC 5322 §2.1.1: a line is at most 998 octets before its CRLF.
constexpr std::size_t max_line = 998;

// Peer text in a header or in the delivery-status part: one line of
// printable US-ASCII, cut to `max` octets. Anything else becomes '?', so no
// CR/LF (header injection) and no 8-bit octets in the 7bit parts.
std::string clean_line(std::string_view s, std::size_t max) {
  std::string out;
  out.reserve(std::min(s.size(), max));
  for (const char c : s) {
    if (out.size() >= max) break;
    const auto u = static_cast<unsigned char>(c);
    if (u == '\t') out.push_back(' ');
    else if (u < 0x20 || u > 0x7e) out.push_back('?');
    else out.push_back(c);
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// xtext (RFC 3461 §4): "+XX" stands for the octet XX. A '+' not followed by
// two hex digits is kept as it is (the SMTP server should have said 501).
std::string decode_xtext(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+' && i + 2 < s.size()) {
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// One to three digits without a leading zero (RFC 3464 §2.3.4).
bool status_number(std::string_view s) {
  if (s.empty() || s.size() > 3) return false;
  if (s.size() > 1 && s.front() == '0') return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// status-code = DIGIT "." 1*3DIGIT "." 1*3DIGIT, class 2, 4 or 5 (RFC 3463 §2).
bool valid_status(std::string_view s) {
  if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
  s.remove_prefix(2);
  const auto dot = s.find('.');
  if (dot == std::string_view::npos) return false;
  return status_number(s.substr(0, dot)) && status_number(s.substr(dot + 1));
}

// RFC 3461 §6.3g: 4.0.0 / 5.0.0 when nothing more specific is known.
std::string status_of(const dsn_recipient& r) {
  if (valid_status(r.status)) return r.status;
  switch (r.action) {
    case dsn_action::failed: return "5.0.0";
    case dsn_action::delayed: return "4.0.0";
    case dsn_action::delivered:
    case dsn_action::relayed: return "2.0.0";
  }
  return "5.0.0";
}

// RFC 5322 §3.3 date-time in UTC with a numeric zone, e.g.
// "Wed, 22 Nov 2023 06:00:00 +0000". Clamped to years 1970-9999.
std::string format_date(std::int64_t unix_seconds) {
  using namespace std::chrono;
  constexpr std::int64_t last = 253402300799;  // 9999-12-31T23:59:59Z
  const sys_seconds tp{seconds{std::clamp<std::int64_t>(unix_seconds, 0, last)}};
  const auto day = floor<days>(tp);
  const year_month_day ymd{day};
  const weekday wd{day};
  const hh_mm_ss hms{tp - day};
  static constexpr std::array<const char*, 7> wday_names{
      "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::array<const char*, 12> month_names{
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
                     wday_names[wd.c_encoding()], static_cast<unsigned>(ymd.day()),
                     month_names[static_cast<unsigned>(ymd.month()) - 1],
                     static_cast<int>(ymd.year()), hms.hours().count(),
                     hms.minutes().count(), hms.seconds().count());
}

// Calls fn(line) for each line of `text` without its terminator; CRLF, a
// bare LF and a bare CR each end a line. fn returns false to stop. Returns
// whether the text ended with a terminator (or was empty).
template <typename Fn>
bool for_each_line(std::string_view text, Fn&& fn) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto end = text.find_first_of("\r\n", pos);
    if (end == std::string_view::npos) {
      fn(text.substr(pos));
      return false;
    }
    if (!fn(text.substr(pos, end - pos))) return true;
    pos = end + ((text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n') ? 2 : 1);
  }
  return true;
}

// The original with CRLF line ends (RFC 5321 §2.3.8: no bare CR or LF), or
// nullopt when a line is longer than 998 octets and so cannot be carried in
// message/rfc822 (which allows no transfer encoding, RFC 2046 §5.2.1).
std::optional<std::string> normalized_content(std::string_view content) {
  std::string out;
  out.reserve(content.size() + content.size() / 32 + 2);
  bool fits = true;
  for_each_line(content, [&](std::string_view line) {
    if (line.size() > max_line) {
      fits = false;
      return false;
    }
    out.append(line);
    out.append("\r\n");
    return true;
  });
  if (!fits) return std::nullopt;
  return out;
}

// "Name:" or obsolete "Name :" — field-name is printable ASCII but ':'
// (RFC 5322 §3.6.8, §4.5.3).
bool is_field_line(std::string_view line) {
  std::size_t i = 0;
  while (i < line.size()) {
    const auto u = static_cast<unsigned char>(line[i]);
    if (u == ':' || u < 33 || u > 126) break;
    ++i;
  }
  if (i == 0) return false;
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  return i < line.size() && line[i] == ':';
}

// The header section of the original (RFC 6522 text/rfc822-headers): lines
// up to the blank line, or up to the first line that is neither a field nor
// a continuation. Whole lines only, at most `cap` octets, each line cut to
// 998 octets.
std::string header_section(std::string_view content, std::size_t cap) {
  std::string out;
  bool first = true;
  for_each_line(content, [&](std::string_view line) {
    const bool continuation = !first && !line.empty() && (line[0] == ' ' || line[0] == '\t');
    if (!continuation && !is_field_line(line)) return false;
    first = false;
    line = line.substr(0, max_line);
    if (out.size() + line.size() + 2 > cap) return false;
    out.append(line);
    out.append("\r\n");
    return true;
  });
  return out;
}

std::uint32_t fnv1a(std::uint32_t h, std::string_view s) {
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619u;
  }
  return h;
}

// Keeps characters that are safe in a Message-ID, a boundary and a host
// part: letters, digits, '-' and '.'; others become '-'.
std::string token_chars(std::string_view s, std::size_t max) {
  std::string out;
  for (const char c : s.substr(0, std::min(s.size(), max))) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.';
    out.push_back(ok ? c : '-');
  }
  return out;
}

// RFC 5322 atext for the From: local part; anything else falls back.
std::string local_part_of(std::string_view s) {
  static constexpr std::string_view specials = "!#$%&'*+-/=?^_`{|}~.";
  const bool ok = !s.empty() && s.size() <= 64 &&
                  std::all_of(s.begin(), s.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           (c >= '0' && c <= '9') || specials.find(c) != std::string_view::npos;
                  });
  return ok ? std::string(s) : std::string("postmaster");
}

// Appends one header field; the value was cleaned by the caller, and the
// whole line is cut to 998 octets.
void add_field(std::string& out, std::string_view name, std::string_view value) {
  std::string line = fmt::format("{}: {}", name, value);
  if (line.size() > max_line) line.resize(max_line);
  out.append(line);
  out.append("\r\n");
}

// The reply split into its lines, cleaned, empty lines dropped.
std::vector<std::string> reply_lines(std::string_view diagnostic, std::size_t max) {
  std::vector<std::string> out;
  for_each_line(diagnostic, [&](std::string_view line) {
    std::string cleaned = clean_line(line, max);
    if (!trim(cleaned).empty()) out.push_back(std::move(cleaned));
    return true;
  });
  return out;
}

// RFC 3464 §2.3.6: "smtp" only for a real SMTP reply (three digits first);
// anything else (a connect error, a DNS failure) is our own text.
const char* diagnostic_type(std::string_view first_line) {
  const bool smtp = first_line.size() >= 3 && first_line[0] >= '2' && first_line[0] <= '5' &&
                    first_line[1] >= '0' && first_line[1] <= '9' && first_line[2] >= '0' &&
                    first_line[2] <= '9' &&
                    (first_line.size() == 3 || first_line[3] == ' ' || first_line[3] == '-');
  return smtp ? "smtp" : "X-flushgate";
}

// "rfc822; bob@example.com" from ORCPT "rfc822;bob@example.com" (RFC 3461
// §6.3d: the address-type as given, the address xtext-decoded), or "" when
// the value is malformed.
std::string original_recipient(std::string_view orcpt) {
  const auto semi = orcpt.find(';');
  if (semi == std::string_view::npos || semi == 0 || semi + 1 >= orcpt.size()) return {};
  const std::string type = clean_line(trim(orcpt.substr(0, semi)), 64);
  if (type.empty() || type.find(' ') != std::string::npos) return {};
  return type + "; " + clean_line(decode_xtext(orcpt.substr(semi + 1)), 900);
}

// Part 2: the message/delivery-status body (RFC 3464 §2.1-2.3).
std::string delivery_status(const dsn_input& in, const std::vector<const dsn_recipient*>& rcpts) {
  std::string out;
  // Per-message fields, in the order of the RFC 3464 §2.2 grammar.
  if (!in.envid.empty())  // RFC 3461 §6.3a: exactly when ENVID was given, decoded
    add_field(out, "Original-Envelope-ID", clean_line(decode_xtext(in.envid), 900));
  const std::string host = clean_line(in.reporting_mta.empty() ? "localhost" : in.reporting_mta, 255);
  // RFC 3461 §6.3b: "dns" only for a real FQDN.
  const char* host_type = host.find('.') != std::string::npos ? "dns" : "x-local-hostname";
  add_field(out, "Reporting-MTA", fmt::format("{}; {}", host_type, host));
  if (in.arrival != 0) add_field(out, "Arrival-Date", format_date(in.arrival));
  if (!in.queue_id.empty()) add_field(out, "X-Flushgate-Queue-ID", clean_line(in.queue_id, 64));

  for (const dsn_recipient* r : rcpts) {
    out.append("\r\n");  // each per-recipient block is preceded by a blank line
    if (!r->orcpt.empty()) {
      const std::string orig = original_recipient(r->orcpt);
      if (!orig.empty()) add_field(out, "Original-Recipient", orig);
    }
    add_field(out, "Final-Recipient", "rfc822; " + clean_line(r->final_recipient, 900));
    add_field(out, "Action", to_string(r->action));
    add_field(out, "Status", status_of(*r));
    if (!r->remote_mta.empty())
      add_field(out, "Remote-MTA", "dns; " + clean_line(r->remote_mta, 255));
    const auto lines = reply_lines(r->diagnostic, max_line - 1);
    if (!lines.empty()) {
      // RFC 3461 §9.2: continuation lines of a multi-line reply start with a space.
      add_field(out, "Diagnostic-Code", fmt::format("{}; {}", diagnostic_type(lines[0]), lines[0]));
      for (std::size_t i = 1; i < lines.size(); ++i) {
        out.append(" ");
        out.append(lines[i]);
        out.append("\r\n");
      }
    }
    if (r->last_attempt != 0) add_field(out, "Last-Attempt-Date", format_date(r->last_attempt));
    // RFC 3464 §2.3.9: MUST NOT appear in other than "delayed" DSNs.
    if (r->action == dsn_action::delayed && r->will_retry_until != 0)
      add_field(out, "Will-Retry-Until", format_date(r->will_retry_until));
  }
  return out;
}

void add_recipient_lines(std::string& out, const dsn_recipient& r) {
  const std::string addr = clean_line(r.final_recipient, 900);
  switch (r.action) {
    case dsn_action::failed:
      out += fmt::format("<{}>: delivery failed, status {}\r\n", addr, status_of(r));
      break;
    case dsn_action::delayed:
      out += fmt::format("<{}>: not delivered yet, status {}\r\n", addr, status_of(r));
      if (r.will_retry_until != 0)
        out += fmt::format("    still trying until {}\r\n", format_date(r.will_retry_until));
      break;
    case dsn_action::delivered:
      out += fmt::format("<{}>: delivered, status {}\r\n", addr, status_of(r));
      break;
    case dsn_action::relayed:
      out += fmt::format("<{}>: relayed, status {}\r\n", addr, status_of(r));
      break;
  }
  const auto lines = reply_lines(r.diagnostic, max_line - 4);
  if (lines.empty()) return;
  // "said" only for a reply the next hop really gave (see diagnostic_type).
  if (!r.remote_mta.empty() && std::string_view(diagnostic_type(lines[0])) == "smtp")
    out += fmt::format("    {} said:\r\n", clean_line(r.remote_mta, 255));
  else if (!r.remote_mta.empty())
    out += fmt::format("    while talking to {}:\r\n", clean_line(r.remote_mta, 255));
  else
    out += "    reason:\r\n";
  for (const auto& line : lines) out += "    " + line + "\r\n";
}

// Part 1: the explanation for a human, grouped by action.
std::string human_text(const dsn_input& in, const std::vector<const dsn_recipient*>& rcpts,
                       const char* returned) {
  const std::string host = clean_line(in.reporting_mta.empty() ? "localhost" : in.reporting_mta, 255);
  std::string out = fmt::format("This is the mail delivery system at {}.\r\n", host);
  if (!in.queue_id.empty() || in.arrival != 0) {
    out += "\r\n";
    if (!in.queue_id.empty()) out += fmt::format("Queue ID: {}\r\n", clean_line(in.queue_id, 64));
    if (in.arrival != 0) out += fmt::format("Arrived:  {}\r\n", format_date(in.arrival));
  }
  struct section {
    dsn_action action;
    const char* intro;
  };
  static constexpr std::array<section, 4> sections{{
      {dsn_action::failed,
       "Your message could not be delivered to the recipients below.\r\n"
       "The mail system has given up on them and will not try again.\r\n"},
      {dsn_action::delayed,
       "Your message has not been delivered yet to the recipients below.\r\n"
       "The mail system keeps trying; you need not send it again.\r\n"},
      {dsn_action::delivered, "Your message was delivered to the recipients below.\r\n"},
      {dsn_action::relayed,
       "Your message was passed on for the recipients below to a mail system\r\n"
       "that does not report delivery; no further notice will follow.\r\n"},
  }};
  for (const auto& s : sections) {
    bool any = false;
    for (const dsn_recipient* r : rcpts) {
      if (r->action != s.action) continue;
      if (!any) {
        out += "\r\n";
        out += s.intro;
        any = true;
      }
      out += "\r\n";
      add_recipient_lines(out, *r);
    }
  }
  if (returned != nullptr) out += fmt::format("\r\n{}\r\n", returned);
  return out;
}

// Does "--boundary" occur anywhere in the parts? (RFC 2046 §5.1.1: the
// boundary must not appear inside the encapsulated material.)
bool occurs_in(const std::string& dash_boundary, const std::vector<std::string_view>& parts) {
  return std::any_of(parts.begin(), parts.end(), [&](std::string_view p) {
    return p.find(dash_boundary) != std::string_view::npos;
  });
}

}  // namespace

const char* to_string(dsn_action a) noexcept {
  switch (a) {
    case dsn_action::failed: return "failed";
    case dsn_action::delayed: return "delayed";
    case dsn_action::delivered: return "delivered";
    case dsn_action::relayed: return "relayed";
  }
  return "failed";
}

bool wants_notice(std::string_view notify, dsn_action action) {
  // RFC 3461 §4.1: NOTIFY=NEVER | SUCCESS,FAILURE,DELAY in any case. Without
  // NOTIFY we report failures and delays (the FAILURE,DELAY default).
  bool never = false, success = false, failure = false, delay = false;
  const bool given = !trim(notify).empty();
  std::string_view rest = notify;
  for (int guard = 0; guard < 64 && !rest.empty(); ++guard) {
    const auto comma = rest.find(',');
    const std::string word = upper(trim(rest.substr(0, comma)));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (word == "NEVER") never = true;
    else if (word == "SUCCESS") success = true;
    else if (word == "FAILURE") failure = true;
    else if (word == "DELAY") delay = true;
  }
  if (never) return false;
  switch (action) {
    case dsn_action::failed: return !given || failure;  // §5.2.6
    case dsn_action::delayed: return !given || delay;   // §5.2.5
    case dsn_action::delivered:
    case dsn_action::relayed: return success;           // §5.2.2-5.2.4
  }
  return false;
}

bool needs_8bitmime(std::string_view message) noexcept {
  return std::any_of(message.begin(), message.end(),
                     [](char c) { return static_cast<unsigned char>(c) > 0x7f; });
}

std::optional<std::string> build_dsn(const dsn_input& in) {
  // RFC 5321 §4.5.5, RFC 3461 §5.2: never a notice to the null sender, which
  // also means never a notice about a notice.
  const std::string_view sender = trim(in.original_sender);
  if (sender.empty() || sender == "<>") return std::nullopt;

  std::vector<const dsn_recipient*> rcpts;
  bool any_failed = false, any_delayed = false;
  for (const auto& r : in.recipients) {
    if (!wants_notice(r.notify, r.action)) continue;
    rcpts.push_back(&r);
    any_failed = any_failed || r.action == dsn_action::failed;
    any_delayed = any_delayed || r.action == dsn_action::delayed;
  }
  if (rcpts.empty()) return std::nullopt;

  // Part 3: RET=FULL returns the message on failure (RFC 3461 §4.3, §6.2)
  // unless it is too large; everything else gets the header section only.
  std::string returned;
  const char* returned_type = nullptr;
  const char* returned_note = nullptr;
  if (any_failed && upper(trim(in.ret)) == "FULL" && in.original_content.size() <= in.max_returned) {
    auto full = normalized_content(in.original_content);
    if (full && full->size() <= in.max_returned) {
      returned = std::move(*full);
      returned_type = "message/rfc822";
      returned_note = "Your message is attached below.";
    }
  }
  if (returned_type == nullptr) {
    returned = header_section(in.original_content, in.max_returned);
    if (!returned.empty()) {
      returned_type = "text/rfc822-headers";
      returned_note = any_failed && upper(trim(in.ret)) == "FULL"
                          ? "Your message cannot be returned in full;\r\n"
                            "its headers are attached below."
                          : "The headers of your message are attached below.";
    }
  }
  const bool eight_bit = needs_8bitmime(returned);

  const std::string text = human_text(in, rcpts, returned_note);
  const std::string status = delivery_status(in, rcpts);

  // Deterministic Message-ID and boundary: queue id, clock, and a hash of
  // what is reported (two notices for one message in one second differ).
  std::uint32_t h = fnv1a(2166136261u, in.queue_id);
  h = fnv1a(h, std::to_string(in.now));
  for (const dsn_recipient* r : rcpts) {
    h = fnv1a(h, r->final_recipient);
    h = fnv1a(h, to_string(r->action));
    h = fnv1a(h, r->status);
  }
  const std::string qid = token_chars(in.queue_id.empty() ? "noqueue" : in.queue_id, 20);
  const std::string id_host = token_chars(in.reporting_mta.empty() ? "localhost" : in.reporting_mta, 255);
  const std::string base = fmt::format("=_dsn_{}_{}_{:08x}", qid, in.now, h);
  std::string boundary = base;
  const std::vector<std::string_view> parts{text, status, returned};
  // Each failed candidate occurs at a different place in the parts, so this
  // ends after at most (their total size + 1) rounds.
  for (std::size_t n = 1; occurs_in("--" + boundary, parts); ++n)
    boundary = fmt::format("{}_{}", base, n);

  std::string out;
  out.reserve(text.size() + status.size() + returned.size() + 2048);
  add_field(out, "From", fmt::format("Mail Delivery System <{}@{}>", local_part_of(in.postmaster), id_host));
  add_field(out, "To", fmt::format("<{}>", clean_line(sender, 900)));
  add_field(out, "Subject", any_failed    ? "Undelivered Mail Returned to Sender"
                            : any_delayed ? "Delayed Mail (still being retried)"
                                          : "Successful Mail Delivery Report");
  add_field(out, "Date", format_date(in.now));
  add_field(out, "Message-ID", fmt::format("<{}.{}.{:08x}@{}>", in.now, qid, h, id_host));
  add_field(out, "MIME-Version", "1.0");
  add_field(out, "Auto-Submitted", "auto-replied");  // RFC 3834 §5
  out += fmt::format(
      "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{}\"\r\n",
      boundary);
  add_field(out, "Content-Transfer-Encoding", eight_bit ? "8bit" : "7bit");
  out += "\r\nThis is a MIME-encapsulated message.\r\n";

  out += fmt::format("\r\n--{}\r\n", boundary);
  out += "Content-Type: text/plain; charset=us-ascii\r\n";
  out += "Content-Description: Notification\r\n\r\n";
  out += text;

  out += fmt::format("\r\n--{}\r\n", boundary);
  out += "Content-Type: message/delivery-status\r\n";
  out += "Content-Description: Delivery report\r\n\r\n";
  out += status;

  if (returned_type != nullptr) {
    out += fmt::format("\r\n--{}\r\n", boundary);
    out += fmt::format("Content-Type: {}\r\n", returned_type);
    out += returned_type[0] == 'm' ? "Content-Description: Undelivered Message\r\n"
                                   : "Content-Description: Message Headers\r\n";
    if (eight_bit) out += "Content-Transfer-Encoding: 8bit\r\n";
    out += "\r\n";
    out += returned;
  }
  out += fmt::format("\r\n--{}--\r\n", boundary);
  return out;
}

}  // namespace flushgate::queue
