// config.cpp — see config.hpp. The table itself is in config_table.cpp.
#include "core/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "core/units.hpp"

namespace flushgate::core {
namespace {

constexpr std::size_t max_file_size = 1024 * 1024;
constexpr std::size_t max_expansion_depth = 16;
constexpr std::size_t max_expanded_size = 64 * 1024;
// References followed to expand one value: without it, values whose
// $-references fan out (40 a level, 4 levels of empty values) stay short but
// take minutes to expand (found by config_parser_fuzz).
constexpr std::size_t max_expansion_references = 4096;

bool is_blank(char c) { return c == ' ' || c == '\t'; }

bool is_param_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// Items separated by commas and/or blanks; empty items are dropped, so
// "a, b" and "a,b" and "a b" all mean the same two items (Postfix lists).
std::vector<std::string_view> split_list(std::string_view value) {
  std::vector<std::string_view> items;
  std::size_t pos = 0;
  while (pos < value.size()) {
    const std::size_t end = value.find_first_of(", \t", pos);
    const std::size_t stop = end == std::string_view::npos ? value.size() : end;
    if (stop > pos) items.push_back(value.substr(pos, stop - pos));
    pos = stop + 1;
  }
  return items;
}

std::optional<std::int64_t> parse_count(std::string_view text) {
  std::int64_t value = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(first, last, value);
  if (text.empty() || ec != std::errc{} || end != last) return std::nullopt;
  return value;
}

// The bounds of p, in the words of its kind ("1s", "64k", "100").
std::string format_bound(const param& p, std::int64_t bound) {
  switch (p.kind) {
    case param_kind::duration:
      return format_duration(std::chrono::seconds{bound});
    case param_kind::size:
      return format_size(static_cast<std::uint64_t>(std::max<std::int64_t>(bound, 0)));
    default:
      return std::to_string(bound);
  }
}

bool check_bounds(const param& p, std::string_view value, bool below, bool above,
                  std::string& why) {
  if (below) {
    why = std::string(value) + " is below the minimum " + format_bound(p, p.min);
    return false;
  }
  if (above) {
    why = std::string(value) + " is above the maximum " + format_bound(p, p.max);
    return false;
  }
  return true;
}

// gethostname(2), once; "localhost" when the system has none.
const std::string& system_host_name() {
  static const std::string name = [] {
    char buffer[256] = {};
    if (::gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0')
      return std::string("localhost");
    return std::string(buffer);
  }();
  return name;
}

std::size_t index_of(const param* p) {
  return static_cast<std::size_t>(p - parameter_table().data());
}

// Walks the $-references of `value`: calls on_text for literal text and
// on_name for each referenced name. Returns false with a reason on bad syntax.
// "$$" is a literal '$' (as in Postfix).
template <typename OnText, typename OnName>
bool scan_references(std::string_view value, std::string& why, OnText on_text, OnName on_name) {
  std::size_t i = 0;
  while (i < value.size()) {
    const std::size_t dollar = value.find('$', i);
    if (dollar == std::string_view::npos) {
      if (!on_text(value.substr(i))) return false;
      break;
    }
    if (dollar > i && !on_text(value.substr(i, dollar - i))) return false;
    if (dollar + 1 >= value.size()) {
      why = "a lone \"$\" at the end of the value (write $$ for a dollar sign)";
      return false;
    }
    std::string_view name;
    if (value[dollar + 1] == '$') {
      if (!on_text("$")) return false;
      i = dollar + 2;
      continue;
    }
    if (value[dollar + 1] == '{') {
      const std::size_t close = value.find('}', dollar + 2);
      if (close == std::string_view::npos) {
        why = "unterminated \"${\" in the value";
        return false;
      }
      name = value.substr(dollar + 2, close - dollar - 2);
      i = close + 1;
    } else {
      std::size_t end = dollar + 1;
      while (end < value.size() && is_param_name_char(value[end])) ++end;
      name = value.substr(dollar + 1, end - dollar - 1);
      i = end;
    }
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_param_name_char)) {
      why = "bad $-reference after \"" + std::string(value.substr(0, dollar)) +
            "\" (write $name or ${name}, or $$ for a dollar sign)";
      return false;
    }
    if (!on_name(name)) return false;
  }
  return true;
}

}  // namespace

// --- values ---------------------------------------------------------------------

std::string_view to_string(param_kind kind) noexcept {
  switch (kind) {
    case param_kind::string:
      return "string";
    case param_kind::path:
      return "path";
    case param_kind::listen_list:
      return "address list";
    case param_kind::duration:
      return "duration";
    case param_kind::size:
      return "size";
    case param_kind::count:
      return "count";
    case param_kind::boolean:
      return "flag";
    case param_kind::choice:
      return "choice";
  }
  return "string";
}

const param* find_param(std::string_view name) {
  const auto& table = parameter_table();
  const auto it =
      std::find_if(table.begin(), table.end(), [name](const param& p) { return p.name == name; });
  return it == table.end() ? nullptr : &*it;
}

bool check_value(const param& p, std::string_view value, std::string& why) {
  if (value.empty()) {
    // Only a parameter whose default is empty has a meaning for "".
    if (!p.default_value.empty() && !p.may_be_empty) {
      why = "empty value (the default is " + quoted(p.default_value) + ")";
      return false;
    }
    return true;
  }
  switch (p.kind) {
    case param_kind::string:
      break;
    case param_kind::path:
      // The daemon may chdir and drop privileges: relative paths would move.
      if (value.front() != '/') {
        why = "bad path " + quoted(value) + " (an absolute path)";
        return false;
      }
      break;
    case param_kind::listen_list:
      for (std::string_view item : split_list(value)) {
        if (!parse_host_port(item)) {
          why = "bad address " + quoted(item) +
                " (host:port or [ipv6]:port with a port from 1 to 65535)";
          return false;
        }
      }
      break;
    case param_kind::duration: {
      const auto d = parse_duration(value);
      if (!d) {
        why = "bad duration " + quoted(value) + " (a number with s, m, h, d or w)";
        return false;
      }
      if (!check_bounds(p, value, d->count() < p.min, d->count() > p.max, why)) return false;
      break;
    }
    case param_kind::size: {
      const auto s = parse_size(value);
      if (!s) {
        why = "bad size " + quoted(value) + " (a number with B, k, M, G or T; 1024-based)";
        return false;
      }
      const bool below = p.min > 0 && *s < static_cast<std::uint64_t>(p.min);
      const bool above = p.max < 0 || *s > static_cast<std::uint64_t>(p.max);
      if (!check_bounds(p, value, below, above, why)) return false;
      break;
    }
    case param_kind::count: {
      const auto n = parse_count(value);
      if (!n) {
        why = "bad number " + quoted(value) + " (a whole number)";
        return false;
      }
      if (!check_bounds(p, value, *n<p.min, *n> p.max, why)) return false;
      break;
    }
    case param_kind::boolean:
      if (!parse_flag(value)) {
        why = "bad flag " + quoted(value) + " (yes or no)";
        return false;
      }
      break;
    case param_kind::choice: {
      std::string list;
      bool found = false;
      std::size_t pos = 0;
      while (pos <= p.choices.size()) {
        const std::size_t bar = std::min(p.choices.find('|', pos), p.choices.size());
        const std::string_view choice = p.choices.substr(pos, bar - pos);
        found = found || choice == value;
        list += (list.empty() ? "" : ", ") + std::string(choice);
        pos = bar + 1;
      }
      if (!found) {
        why = "bad value " + quoted(value) + " (one of " + list + ")";
        return false;
      }
      break;
    }
  }
  return p.check == nullptr || p.check(value, why);
}

// --- $-expansion ----------------------------------------------------------------

struct config::expander {
  const config& c;
  std::vector<std::size_t> stack;  // parameters being expanded, outermost first
  std::size_t first_line = 0;      // line of the first file-set parameter met
  std::size_t references = 0;      // $-references followed so far
  std::string why;

  // Appends the expansion of parameter `index` to `out`.
  bool expand(std::size_t index, std::string& out) {
    const auto& table = parameter_table();
    if (const auto it = std::find(stack.begin(), stack.end(), index); it != stack.end()) {
      why = "$-expansion loop: ";
      for (auto at = it; at != stack.end(); ++at) why += std::string(table[*at].name) + " -> ";
      why += table[index].name;
      return false;
    }
    if (stack.size() >= max_expansion_depth) {
      why = "$-expansion nested deeper than " + std::to_string(max_expansion_depth) + " levels";
      return false;
    }
    const entry& e = c.entries_[index];
    if (first_line == 0) first_line = e.line;
    stack.push_back(index);
    const std::size_t start = out.size();
    const bool ok = scan_references(
        e.value, why,
        [&](std::string_view text) {
          out += text;
          return check_size(out);
        },
        [&](std::string_view name) {
          if (++references > max_expansion_references) {
            why = "more than " + std::to_string(max_expansion_references) + " $-references to expand";
            return false;
          }
          const param* p = find_param(name);
          if (p == nullptr) {
            why = "undefined parameter " + quoted(name) + " in $-expansion";
            return false;
          }
          return expand(index_of(p), out) && check_size(out);
        });
    if (!ok) return false;
    // Postfix's idiom: an empty myhostname means the system's name.
    if (out.size() == start && table[index].name == "myhostname") out += system_host_name();
    stack.pop_back();
    return true;
  }

  bool check_size(const std::string& out) {
    if (out.size() <= max_expanded_size) return true;
    why =
        "value longer than " + std::to_string(max_expanded_size / 1024) + " KiB after $-expansion";
    return false;
  }
};

// --- config -----------------------------------------------------------------------

config::config() {
  for (const param& p : parameter_table()) entries_.push_back({std::string(p.default_value), 0});
}

bool config::check_raw(const param& p, std::string_view value, std::string& why) {
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) {
      why = "control character in the value";
      return false;
    }
  }
  bool has_reference = false;
  const bool syntax_ok = scan_references(
      value, why, [](std::string_view) { return true; },
      [&](std::string_view name) {
        has_reference = true;
        if (find_param(name) != nullptr) return true;
        why = "undefined parameter " + quoted(name) + " in $-expansion";
        return false;
      });
  if (!syntax_ok) return false;
  // With references the value is checked once the whole file is read
  // (check_all): "$x" may name a parameter set further down.
  if (has_reference || value.find('$') != std::string_view::npos) return true;
  return check_value(p, value, why);
}

bool config::check_all(std::string& why, std::size_t& line) const {
  // Report the problem nearest the top of the file, so that fixing errors
  // one by one walks down the file.
  bool ok = true;
  const auto& table = parameter_table();
  for (std::size_t i = 0; i < table.size(); ++i) {
    expander ex{*this};
    std::string value;
    std::string reason;
    if (!ex.expand(i, value)) {
      reason = ex.why;
    } else if (!check_value(table[i], value, reason)) {
      if (value != entries_[i].value) reason += " after expanding " + quoted(entries_[i].value);
    } else {
      continue;
    }
    const std::size_t at = entries_[i].line != 0 ? entries_[i].line : ex.first_line;
    if (ok || (at != 0 && (line == 0 || at < line))) {
      why = std::string(table[i].name) + ": " + reason;
      line = at;
    }
    ok = false;
  }
  return ok;
}

std::optional<config> config::parse(std::string_view text, std::string_view file_name,
                                    std::string& error) {
  const std::string where(file_name);
  if (text.size() > max_file_size) {
    error = where + ": larger than " + std::to_string(max_file_size / 1024 / 1024) + " MiB";
    return std::nullopt;
  }
  config c;
  auto fail = [&](std::size_t line, const std::string& why) {
    error = where + ":" + std::to_string(line) + ": " + why;
    return std::nullopt;
  };

  // One logical line: "name = value" plus its continuation lines.
  const param* pending = nullptr;
  std::string value;
  std::size_t pending_line = 0;
  auto store_pending = [&](std::string& why) {
    if (pending == nullptr) return true;
    if (!check_raw(*pending, value, why)) {
      why = std::string(pending->name) + ": " + why;
      return false;
    }
    c.entries_[index_of(pending)] = {value, pending_line};  // a later line wins
    pending = nullptr;
    return true;
  };

  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t newline = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, newline - pos);
    pos = newline + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    // Blank and comment lines are skipped and do not end a logical line.
    const std::string_view content = trim(line);
    if (content.empty() || content.front() == '#') continue;

    if (is_blank(line.front())) {
      if (pending == nullptr)
        return fail(line_no, "continuation line without a parameter before it");
      if (!value.empty()) value += ' ';
      value += content;
      continue;
    }

    std::string why;
    if (!store_pending(why)) return fail(pending_line, why);

    const std::size_t equals = content.find('=');
    if (equals == std::string_view::npos) {
      return fail(line_no, "expected \"name = value\", got " + quoted(content));
    }
    const std::string_view name = trim(content.substr(0, equals));
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_param_name_char)) {
      return fail(line_no, "bad parameter name " + quoted(name));
    }
    pending = find_param(name);
    if (pending == nullptr) return fail(line_no, "unknown parameter " + quoted(name));
    value = std::string(trim(content.substr(equals + 1)));
    pending_line = line_no;
  }
  std::string why;
  if (!store_pending(why)) return fail(pending_line, why);

  std::size_t line = 0;
  if (!c.check_all(why, line)) {
    if (line == 0) {
      error = where + ": " + why;
      return std::nullopt;
    }
    return fail(line, why);
  }
  return c;
}

std::optional<config> config::load_file(const std::string& path, std::string& error) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    error = path + ": cannot read: " + std::strerror(errno);
    return std::nullopt;
  }
  // Read one byte past the limit so that parse() can tell an oversized file.
  std::string text(max_file_size + 1, '\0');
  const std::size_t got = std::fread(text.data(), 1, text.size(), file);
  const bool failed = std::ferror(file) != 0;
  const int saved_errno = errno;
  std::fclose(file);
  if (failed) {
    error = path + ": cannot read: " + std::strerror(saved_errno);
    return std::nullopt;
  }
  text.resize(got);
  return parse(text, path, error);
}

bool config::set(std::string_view key, std::string_view value, std::string& error) {
  const param* p = find_param(key);
  if (p == nullptr) {
    error = "unknown parameter " + quoted(key);
    return false;
  }
  std::string why;
  if (!check_raw(*p, value, why)) {
    error = std::string(p->name) + ": " + why;
    return false;
  }
  entry& e = entries_[index_of(p)];
  entry old = std::move(e);
  e = {std::string(value), 0};
  // The new value itself first, so that the message names what was set;
  // then every other parameter, whose expansion may have changed with it.
  expander ex{*this};
  std::string expanded;
  if (!ex.expand(index_of(p), expanded)) {
    error = std::string(p->name) + ": " + ex.why;
  } else if (!check_value(*p, expanded, why)) {
    error = std::string(p->name) + ": " + why + " after expanding " + quoted(value);
  } else if (std::size_t line = 0; check_all(error, line)) {
    return true;
  }
  e = std::move(old);
  return false;
}

const config::entry& config::entry_of(std::string_view key, const param*& p) const {
  p = find_param(key);
  if (p == nullptr) throw std::logic_error("config: no parameter named " + quoted(key));
  return entries_[index_of(p)];
}

namespace {
void require_kind(const param& p, param_kind kind) {
  if (p.kind != kind) {
    throw std::logic_error("config: " + std::string(p.name) + " is a " +
                           std::string(to_string(p.kind)) + ", not a " +
                           std::string(to_string(kind)));
  }
}

[[noreturn]] void broken_value(const param& p, const std::string& value) {
  // check_all() ran on every change, so this is a bug in this file.
  throw std::logic_error("config: " + std::string(p.name) + " holds unchecked value " +
                         quoted(value));
}
}  // namespace

const std::string& config::raw(std::string_view key) const {
  const param* p = nullptr;
  return entry_of(key, p).value;
}

std::string config::text(std::string_view key) const {
  const param* p = nullptr;
  entry_of(key, p);
  expander ex{*this};
  std::string out;
  if (!ex.expand(index_of(p), out)) {
    throw std::logic_error("config: " + std::string(p->name) + ": " + ex.why);
  }
  return out;
}

std::chrono::seconds config::duration(std::string_view key) const {
  const param* p = nullptr;
  entry_of(key, p);
  require_kind(*p, param_kind::duration);
  const std::string value = text(key);
  const auto d = parse_duration(value);
  if (!d) broken_value(*p, value);
  return *d;
}

std::uint64_t config::size(std::string_view key) const {
  const param* p = nullptr;
  entry_of(key, p);
  require_kind(*p, param_kind::size);
  const std::string value = text(key);
  const auto s = parse_size(value);
  if (!s) broken_value(*p, value);
  return *s;
}

std::int64_t config::count(std::string_view key) const {
  const param* p = nullptr;
  entry_of(key, p);
  require_kind(*p, param_kind::count);
  const std::string value = text(key);
  const auto n = parse_count(value);
  if (!n) broken_value(*p, value);
  return *n;
}

bool config::flag(std::string_view key) const {
  const param* p = nullptr;
  entry_of(key, p);
  require_kind(*p, param_kind::boolean);
  const std::string value = text(key);
  const auto f = parse_flag(value);
  if (!f) broken_value(*p, value);
  return *f;
}

std::vector<std::string> config::list(std::string_view key) const {
  const param* p = nullptr;
  entry_of(key, p);
  if (p->kind != param_kind::listen_list && p->kind != param_kind::string) {
    throw std::logic_error("config: " + std::string(p->name) + " is a " +
                           std::string(to_string(p->kind)) + ", not a list");
  }
  const std::string value = text(key);
  std::vector<std::string> items;
  for (std::string_view item : split_list(value)) items.emplace_back(item);
  return items;
}

std::vector<std::chrono::seconds> config::durations(std::string_view key) const {
  const param* p = nullptr;
  entry_of(key, p);
  if (p->check != &check_duration_list) {
    throw std::logic_error("config: " + std::string(p->name) + " is not a list of durations");
  }
  const std::string value = text(key);
  std::vector<std::chrono::seconds> out;
  for (std::string_view item : split_list(value)) {
    const auto d = parse_duration(item);
    if (!d) broken_value(*p, value);
    out.push_back(*d);
  }
  return out;
}

bool config::is_default(std::string_view key) const {
  const param* p = nullptr;
  // entry_of sets p: call it first (the operands of == are unsequenced;
  // clang read p while it was still null — found by config_parser_fuzz).
  const entry& e = entry_of(key, p);
  return e.value == p->default_value;
}

// --- rendering ----------------------------------------------------------------------

namespace {
// A Markdown table cell: '|' would end the cell, even inside `code`.
std::string escape_cell(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

// "Range: 512 to 65536." / "At least 1s." / "One of: none, may." — from the validator.
std::string describe_limits(const param& p) {
  constexpr std::int64_t no_max = INT64_MAX;
  if (p.kind == param_kind::choice) {
    std::string list;
    for (std::size_t pos = 0; pos <= p.choices.size();) {
      const std::size_t bar = std::min(p.choices.find('|', pos), p.choices.size());
      list += (list.empty() ? "`" : ", `") + std::string(p.choices.substr(pos, bar - pos)) + "`";
      pos = bar + 1;
    }
    return "One of " + list + ".";
  }
  if (p.kind != param_kind::duration && p.kind != param_kind::size && p.kind != param_kind::count) {
    return {};
  }
  if (p.min > 0 && p.max != no_max) {
    return "Range " + format_bound(p, p.min) + " to " + format_bound(p, p.max) + ".";
  }
  if (p.min > 0) return "At least " + format_bound(p, p.min) + ".";
  if (p.max != no_max) return "At most " + format_bound(p, p.max) + ".";
  return {};
}
}  // namespace

std::string render_parameter_table_markdown() {
  std::string out = "| Parameter | Default | Meaning |\n|---|---|---|\n";
  for (const param& p : parameter_table()) {
    const std::string shown = p.default_value.empty() ? "\"\"" : std::string(p.default_value);
    std::string meaning(p.doc);
    if (const std::string limits = describe_limits(p); !limits.empty()) meaning += " " + limits;
    out += "| `" + std::string(p.name) + "` | `" + escape_cell(shown) + "` | " +
           escape_cell(meaning) + " |\n";
  }
  return out;
}

namespace {
// Text for roff: backslashes doubled as \e, `code` set in bold, and a line
// never starting with '.' or '\'' (roff would read it as a request).
std::string to_roff(std::string_view text) {
  std::string out;
  bool in_code = false;
  for (char c : text) {
    if (c == '\\') {
      out += "\\e";
    } else if (c == '`') {
      out += in_code ? "\\fR" : "\\fB";
      in_code = !in_code;
    } else if (c == '-') {
      out += "\\-";  // a real minus: keys and values are typed as written
    } else {
      if ((c == '.' || c == '\'') && (out.empty() || out.back() == '\n')) out += "\\&";
      out += c;
    }
  }
  if (in_code) out += "\\fR";
  return out;
}
}  // namespace

// The page's fixed prose says how the file is read (config.hpp's contract);
// the parameters come from the table, one tagged paragraph each.
std::string render_parameter_man_page(std::string_view version) {
  std::string out;
  out += ".\\\" flushgated.cf.5 \\- generated by `flushgated --params-man` from core/config_table.cpp.\n";
  out += ".\\\" Do not edit: change the table and regenerate.\n";
  out += ".TH FLUSHGATED.CF 5 \"\" \"flushgate " + std::string(version) + "\" \"File Formats\"\n";
  out += R"(.SH NAME
flushgated.cf \- configuration file of the flushgate mail gateway
.SH SYNOPSIS
.B /etc/flushgate/flushgated.cf
.SH DESCRIPTION
.BR flushgated (8)
reads its parameters from this file at start\-up; the
.BR flushgate (1)
command reads it to find the control socket.
The syntax is that of Postfix's main.cf:
.IP \(bu 2
one parameter a line, written \fIname\fR = \fIvalue\fR;
.IP \(bu 2
a line whose first non\-blank character is \fB#\fR is a comment
(a \fB#\fR inside a value is part of the value);
.IP \(bu 2
a line starting with blanks continues the value of the line before;
.IP \(bu 2
\fB$\fR\fIname\fR or \fB${\fR\fIname\fR\fB}\fR stands for the value of another
parameter (also one set further down), \fB$$\fR for a dollar sign;
.IP \(bu 2
a parameter given twice takes the later value.
.PP
Every value is checked by its kind and bounds when the file is read: an
unknown name or a bad value stops the daemon with \fIFILE\fR:\fILINE\fR
and the reason.
Durations take a unit (\fBs\fR, \fBm\fR, \fBh\fR, \fBd\fR, \fBw\fR),
sizes one of \fBk\fR, \fBM\fR, \fBG\fR.
Check a file with
.B flushgated \-\-config
.I FILE
.BR \-\-check ;
.B flushgate config show \-\-changed
prints what a file changes.
The daemon does not re\-read the file: restart it after a change.
.SH PARAMETERS
)";
  for (const param& p : parameter_table()) {
    const std::string shown = p.default_value.empty() ? "\"\"" : std::string(p.default_value);
    std::string meaning(p.doc);
    if (const std::string limits = describe_limits(p); !limits.empty()) meaning += " " + limits;
    out += ".TP\n\\fB" + to_roff(p.name) + "\\fR (" + to_roff(to_string(p.kind)) + ", default \\fB" +
           to_roff(shown) + "\\fR)\n" + to_roff(meaning) + "\n";
  }
  out += R"(.SH FILES
.TP
.I /etc/flushgate/flushgated.cf
the file the packaged service reads
.TP
.I /usr/share/doc/flushgate/examples/
an annotated production example, pppd and FreeRADIUS examples
.SH SEE ALSO
.BR flushgated (8),
.BR flushgate (1),
.BR postconf (5)
)";
  return out;
}

std::string shown_value(const config& c, const param& p) {
  std::string value = c.text(p.name);
  return p.shown != nullptr ? p.shown(value) : value;
}

namespace {

constexpr std::string_view masked = "********";

// URI form: postgresql://user:secret@host/db?password=secret&...
std::string mask_uri_password(std::string_view uri) {
  std::string out(uri);
  const auto scheme_end = out.find("://");
  const auto authority = scheme_end + 3;
  const auto authority_end = out.find_first_of("/?", authority);
  const auto at = out.rfind('@', authority_end == std::string::npos ? out.size() : authority_end);
  if (at != std::string::npos && at >= authority) {
    const auto colon = out.find(':', authority);
    if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, masked);
  }
  const auto query = out.find('?');
  // Bounded: each pass moves past one parameter.
  for (auto pos = query; pos != std::string::npos && pos < out.size();) {
    const auto start = pos + 1;
    auto end = out.find('&', start);
    if (end == std::string::npos) end = out.size();
    if (out.compare(start, 9, "password=") == 0 && end > start + 9) {
      out.replace(start + 9, end - start - 9, masked);
      end = start + 9 + masked.size();
    }
    pos = end < out.size() ? end : std::string::npos;
  }
  return out;
}

}  // namespace

// Keyword form: key = value pairs separated by blanks, a value either bare
// or in single quotes with backslash escapes (libpq-connect §34.1.1).
std::string mask_conninfo_password(std::string_view conninfo) {
  if (conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://")) {
    return mask_uri_password(conninfo);
  }
  std::string out;
  std::size_t i = 0;
  const std::size_t n = conninfo.size();
  while (i < n) {
    // Copy blanks, then read a keyword.
    while (i < n && (conninfo[i] == ' ' || conninfo[i] == '\t')) out += conninfo[i++];
    const std::size_t key_start = i;
    while (i < n && conninfo[i] != '=' && conninfo[i] != ' ' && conninfo[i] != '\t') ++i;
    const std::string_view key = conninfo.substr(key_start, i - key_start);
    out += key;
    while (i < n && (conninfo[i] == ' ' || conninfo[i] == '\t')) out += conninfo[i++];
    if (i >= n || conninfo[i] != '=') continue;
    out += conninfo[i++];
    while (i < n && (conninfo[i] == ' ' || conninfo[i] == '\t')) out += conninfo[i++];
    const std::size_t value_start = i;
    if (i < n && conninfo[i] == '\'') {
      ++i;
      while (i < n && conninfo[i] != '\'') i += conninfo[i] == '\\' ? 2 : 1;
      i = std::min(i + 1, n);
    } else {
      while (i < n && conninfo[i] != ' ' && conninfo[i] != '\t') i += conninfo[i] == '\\' ? 2 : 1;
      i = std::min(i, n);
    }
    if (key == "password") {
      out += masked;
    } else {
      out += conninfo.substr(value_start, i - value_start);
    }
  }
  return out;
}

std::string render_config(const config& c, bool only_changed) {
  std::string out;
  for (const param& p : parameter_table()) {
    if (only_changed && c.is_default(p.name)) continue;
    const std::string value = shown_value(c, p);
    out += std::string(p.name) + (value.empty() ? " =\n" : " = " + value + "\n");
  }
  return out;
}

}  // namespace flushgate::core
