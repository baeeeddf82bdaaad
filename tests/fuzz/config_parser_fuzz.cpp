// config_parser_fuzz.cpp — libFuzzer target for core::config, the main.cf-style
// parser of flushgated's configuration.
//
// The input is split at its first NUL octet: before it, a file's text, parsed
// from memory with config::parse (no file is written); after it, "key=value",
// handed to config::set on the parsed configuration. (A NUL inside the file
// text would only be refused as a control character, so nothing is lost.)
//
// Checked (any failure aborts, and an exception escaping is a finding too —
// config.hpp calls a throwing getter on a parsed configuration a bug):
//   - parse gives either a configuration or a non-empty message that starts
//     with the file name;
//   - on a parsed configuration, every parameter's typed getter (by its kind
//     in parameter_table()) and text() work, list() for lists and strings,
//     durations() for duration lists (is_default() is not called, see below);
//   - render_config's output ("name = value", expanded) parses again to the
//     same values, whenever it can: no '$' left, no blanks at either end of a
//     value, under the 1 MiB file limit;
//   - set: on success raw() is the new value and every getter still works; on
//     failure there is a message and the configuration is unchanged.
#include "core/config.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

using namespace flushgate::core;
using flushgate::test::require;
using flushgate::test::require_equal;

constexpr std::string_view file_name = "fuzz.cf";
constexpr std::size_t max_file_size = 1024 * 1024;  // config.cpp's limit

// Calls each parameter's typed getter; they throw (std::logic_error) only on a bug.
void read_everything(const config& c) {
  for (const param& p : parameter_table()) {
    (void)c.raw(p.name);
    (void)c.text(p.name);
    // is_default() is left out: config.cpp's is_default evaluates p->default_value
    // before entry_of() sets p (operand order is unspecified; clang reads it first).
    switch (p.kind) {
      case param_kind::duration: (void)c.duration(p.name); break;
      case param_kind::size: (void)c.size(p.name); break;
      case param_kind::count: (void)c.count(p.name); break;
      case param_kind::boolean: (void)c.flag(p.name); break;
      case param_kind::string:
      case param_kind::listen_list: (void)c.list(p.name); break;
      case param_kind::path:
      case param_kind::choice: break;
    }
    if (p.check == &check_duration_list) (void)c.durations(p.name);
  }
}

bool has_outer_blank(std::string_view v) {
  return !v.empty() && (v.front() == ' ' || v.front() == '\t' || v.back() == ' ' || v.back() == '\t');
}

void check_round_trip(const config& c) {
  const std::string rendered = render_config(c, false);
  if (rendered.size() > max_file_size) return;
  for (const param& p : parameter_table()) {
    const std::string v = c.text(p.name);
    if (v.find('$') != std::string::npos || has_outer_blank(v)) return;
  }
  std::string error;
  const auto again = config::parse(rendered, "rendered.cf", error);
  if (!again) flushgate::test::fail_check("rendered configuration does not parse", error, "");
  for (const param& p : parameter_table()) {
    require_equal(again->text(p.name), c.text(p.name), "value after render and parse");
  }
}

void check_set(config c, std::string_view assignment) {
  const auto equals = assignment.find('=');
  const std::string_view key = assignment.substr(0, equals);
  const std::string_view value = equals == std::string_view::npos ? std::string_view() : assignment.substr(equals + 1);
  const std::string before = render_config(c, false);
  std::string error;
  if (c.set(key, value, error)) {
    require_equal(c.raw(key), value, "raw() after set");
    read_everything(c);
  } else {
    require(!error.empty(), "set failed without a message");
    require_equal(render_config(c, false), before, "a failed set changed the configuration");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto nul = input.find('\0');
  const std::string_view text = input.substr(0, nul);

  std::string error;
  const auto c = config::parse(text, file_name, error);
  if (!c) {
    require(error.starts_with(std::string(file_name) + ":") && error.size() > file_name.size() + 2,
            "parse failed without a message naming the file");
    return 0;
  }
  read_everything(*c);
  check_round_trip(*c);
  if (nul != std::string_view::npos) check_set(*c, input.substr(nul + 1));
  return 0;
}
