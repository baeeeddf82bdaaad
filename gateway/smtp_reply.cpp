// smtp_reply.cpp — see smtp_reply.hpp.
#include "gateway/smtp_reply.hpp"

#include <vector>

namespace flushgate::gateway {
namespace {

// Cleans one line of reply text: CR dropped, other controls and DEL → '?'.
// (LF never reaches here: it separates the lines.)
std::string clean_line(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (const char c : line) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\r') continue;
    out.push_back((u < 32 && c != '\t') || u == 127 ? '?' : c);
  }
  return out;
}

// Splits `line` into pieces of at most `budget` octets, preferring to break
// after a space so words stay whole.
void wrap(std::string_view line, std::size_t budget, std::vector<std::string>& out) {
  while (line.size() > budget) {
    std::size_t cut = line.rfind(' ', budget - 1);
    cut = (cut == std::string_view::npos || cut == 0) ? budget : cut + 1;
    out.emplace_back(line.substr(0, cut));
    line.remove_prefix(cut);
  }
  out.emplace_back(line);
}

}  // namespace

std::string format_reply(int code, std::string_view enhanced, std::string_view text) {
  const std::string code_text = std::to_string(code);
  // A sane enhanced code is at most "5.999.999"; a longer one is a caller bug,
  // cut so that the text budget below stays positive.
  if (enhanced.size() > 32) enhanced = enhanced.substr(0, 32);
  const std::string clean_enhanced = clean_line(enhanced);

  // Octets per line before the text: "250-" plus "2.1.0 ".
  const std::size_t prefix = code_text.size() + 1 + (clean_enhanced.empty() ? 0 : clean_enhanced.size() + 1);
  const std::size_t budget = max_reply_line - 2 - prefix;

  // 1. Split on '\n' (a single trailing '\n' adds no empty line), clean, wrap.
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  std::vector<std::string> lines;
  while (true) {
    const auto nl = text.find('\n');
    wrap(clean_line(text.substr(0, nl)), budget, lines);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }

  // 2. "code-" on every line but the last, "code " on the last; the enhanced
  //    code repeated on each (RFC 2034 §3).
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const bool last = i + 1 == lines.size();
    const bool empty = clean_enhanced.empty() && lines[i].empty();
    out += code_text;
    if (!last) out += '-';
    else if (!empty) out += ' ';  // "250\r\n": the SP only precedes text
    out += clean_enhanced;
    if (!clean_enhanced.empty() && !lines[i].empty()) out += ' ';
    out += lines[i];
    out += "\r\n";
  }
  return out;
}

bool refuses_unknown_user(int code, std::string_view enhanced) {
  if (code < 500 || code > 599) return false;
  if (!enhanced.empty()) return enhanced.starts_with("5.1.");
  return code == 550 || code == 551 || code == 553;
}

}  // namespace flushgate::gateway
