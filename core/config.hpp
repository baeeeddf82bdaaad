// config.hpp — flushgated's parameters: the one table, the main.cf-style file
// that sets them, and the typed getters the modules read them through.
//
// Purpose: every parameter is defined once, in parameter_table()
// (config_table.cpp): name, kind, default with its unit, a one-line doc and its
// validator (kind, bounds, choices). The README's parameter table
// (render_parameter_table_markdown), the flushgated.cf(5) man page
// (render_parameter_man_page) and `flushgate config show` (render_config)
// are all rendered from it. The file format is Postfix main.cf's:
//   # a comment line (only whole lines are comments; '#' inside a value is text)
//   smtpd_timeout = 300s
//   smtpd_listen = 0.0.0.0:25,
//       [::]:25                    <- a line starting with blanks continues the value
//   control_socket = $data_dir/control.sock     ($name or ${name}; $$ is a '$')
// $-expansion happens at lookup, so a value may name a parameter set further
// down. A parameter given twice: the later line wins, as in Postfix.
// An empty myhostname expands to the system's host name (gethostname(2)).
// Security: the file is the operator's (trusted, but typo-prone). Every value
// is validated by kind and bounds — after expansion, at parse time — so a bad
// file stops the daemon at start-up instead of misbehaving later. Values may
// not contain control characters (a banner cannot smuggle a CRLF onto the
// wire); files over 1 MiB are refused; expansion is bounded in depth (16) and
// in length (64 KiB) and loops are reported by name.
// Errors: parse/load_file/set return false/nullopt with a message, e.g.
//   example.cf:12: unknown parameter "smtpd_timout"
//   example.cf:3: smtpd_timeout: bad duration "5x" (a number with s, m, h, d or w)
// A getter called with a name not in the table, or of the wrong kind, is a
// bug: it throws std::logic_error naming the key.
// Limitations: no Postfix ${name?value} / ${name:value} conditionals, no $(name).
// See also: postconf(5) (file syntax, $-expansion), core/units.hpp (values).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flushgate::core {

enum class param_kind { string, path, listen_list, duration, size, count, boolean, choice };

// An extra check for a value that its kind alone cannot express (e.g. a list
// of durations); returns false with a reason such as `bad duration "x" (...)`.
using value_check = bool (*)(std::string_view value, std::string& why);

struct param {
  std::string_view name;
  param_kind kind;
  std::string_view default_value;
  std::string_view doc;
  std::int64_t min = 0;          // count; duration in seconds; size in bytes
  std::int64_t max = INT64_MAX;  // likewise
  std::string_view choices;      // "a|b|c" for choice
  value_check check = nullptr;   // applied to non-empty values after expansion
  bool may_be_empty = false;     // "" means "off" although the default is not empty
  // How the value is shown (config show, config running); nullptr: as it is.
  // Masks secrets, e.g. the password in a libpq conninfo.
  std::string (*shown)(std::string_view value) = nullptr;
};

// "string", "path", "address list", "duration", ... for messages and docs.
std::string_view to_string(param_kind kind) noexcept;

// The one table, in README order (grouped by module: general, smtpd, queue, smtp).
const std::vector<param>& parameter_table();

// The table row named `name`, or nullptr.
const param* find_param(std::string_view name);

// Validates a value (already expanded) against p's kind, bounds, choices and check.
bool check_value(const param& p, std::string_view value, std::string& why);

// A check for string parameters holding a list of durations ("5m,10m,1h").
bool check_duration_list(std::string_view value, std::string& why);

class config {
 public:
  // All parameters at their defaults.
  config();

  // Parses a whole file's text; on error returns nullopt and sets error to
  // "FILE_NAME:LINE: message" (or "FILE_NAME: message" when no line applies).
  static std::optional<config> parse(std::string_view text, std::string_view file_name,
                                     std::string& error);
  // Reads and parses `path`; errors as parse(), or "PATH: cannot read: reason".
  static std::optional<config> load_file(const std::string& path, std::string& error);

  // Sets one value; on any error (also in another value's expansion) keeps the old one.
  bool set(std::string_view key, std::string_view value, std::string& error);

  // The value as written, before $-expansion.
  const std::string& raw(std::string_view key) const;
  // The value after $-expansion.
  std::string text(std::string_view key) const;
  // Typed getters; each throws std::logic_error unless `key` is of that kind.
  std::chrono::seconds duration(std::string_view key) const;
  std::uint64_t size(std::string_view key) const;
  std::int64_t count(std::string_view key) const;
  bool flag(std::string_view key) const;
  // Items separated by commas and/or blanks (listen_list and string parameters).
  std::vector<std::string> list(std::string_view key) const;
  // Each item as a duration (parameters with check_duration_list, e.g. retry_schedule).
  std::vector<std::chrono::seconds> durations(std::string_view key) const;
  // True when the value is the default (never set, or set to the default text).
  bool is_default(std::string_view key) const;

 private:
  struct entry {
    std::string value;
    std::size_t line = 0;  // line that set it; 0 = default or set()
  };
  struct expander;  // $-expansion, defined in config.cpp

  // Checks one value as it will be stored: characters, $-syntax, and (when it
  // needs no expansion) its kind; does not look at other parameters.
  static bool check_raw(const param& p, std::string_view value, std::string& why);
  // Expands and checks every parameter; on error sets the message (without a
  // file name) and the line it belongs to (0 when none).
  bool check_all(std::string& why, std::size_t& line) const;
  const entry& entry_of(std::string_view key, const param*& p) const;

  std::vector<entry> entries_;  // parallel to parameter_table()
};

// Markdown table | Parameter | Default | Meaning | for the README, one row per parameter.
std::string render_parameter_table_markdown();

// The whole flushgated.cf(5) man page (roff): the file syntax, then one
// paragraph per parameter from the same table; `version` goes in the header.
std::string render_parameter_man_page(std::string_view version);

// The value of p in c as shown to people: expanded, secrets masked (param::shown).
std::string shown_value(const config& c, const param& p);

// A libpq conninfo (keyword string or URI) with its password replaced by
// "********": password=... (quoted or not), user:password@ in a URI and a
// password= query parameter. Everything else is kept.
std::string mask_conninfo_password(std::string_view conninfo);

// `flushgate config show`: "name = value" lines (expanded), all or only non-default ones.
std::string render_config(const config& c, bool only_changed);

}  // namespace flushgate::core
