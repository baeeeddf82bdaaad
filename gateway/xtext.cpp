// xtext.cpp — see xtext.hpp.
#include "gateway/xtext.hpp"

namespace flushgate::gateway {
namespace {

// RFC 3461 §4: hexchar = "+" 2(DIGIT / "A" / "B" / "C" / "D" / "E" / "F");
// only upper-case hex is allowed.
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// xchar: any ASCII from "!" (33) to "~" (126) except "+" and "=".
bool is_xchar(unsigned char c) { return c >= 33 && c <= 126 && c != '+' && c != '='; }

}  // namespace

std::optional<std::string> xtext_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '+') {
      if (text.size() - i < 3) return std::nullopt;
      const int hi = hex_value(text[i + 1]);
      const int lo = hex_value(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (is_xchar(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      return std::nullopt;
    }
  }
  return out;
}

std::string xtext_encode(std::string_view raw) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(raw.size());
  for (const char ch : raw) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_xchar(c)) {
      out.push_back(ch);
    } else {
      out.push_back('+');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0x0F]);
    }
  }
  return out;
}

}  // namespace flushgate::gateway
