// client_forwarding.cpp — see client_forwarding.hpp.
#include "gateway/flush/client_forwarding.hpp"

#include "gateway/xtext.hpp"

#include <algorithm>
#include <cctype>
#include <utility>

namespace flushgate::gateway {

std::optional<client_forwarding> parse_client_forwarding(std::string_view text) {
  if (text.empty() || text == "xforward") return client_forwarding::xforward;
  if (text == "xclient") return client_forwarding::xclient;
  if (text == "none") return client_forwarding::none;
  return std::nullopt;
}

const char* to_string(client_forwarding f) noexcept {
  switch (f) {
    case client_forwarding::xforward: return "xforward";
    case client_forwarding::xclient: return "xclient";
    case client_forwarding::none: return "none";
  }
  return "xforward";
}

std::vector<std::string> parse_offered_attributes(std::string_view args) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < args.size()) {
    while (i < args.size() && args[i] == ' ') ++i;
    const std::size_t start = i;
    while (i < args.size() && args[i] != ' ') ++i;
    if (i == start) break;
    std::string name(args.substr(start, i - start));
    for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
  }
  return out;
}

namespace {

// XFORWARD_README: ADDR of an IPv6 client carries the "IPv6:" prefix.
std::string address_value(const std::string& address) {
  if (address.find(':') != std::string::npos) return "IPv6:" + address;
  return address;
}

}  // namespace

std::vector<std::string> client_forwarding_commands(std::string_view verb,
                                                    const queue::client_origin& origin,
                                                    const std::vector<std::string>& offered,
                                                    std::size_t max_line) {
  // XFORWARD knows only [UNAVAILABLE]: Postfix 3.7 answers "501 5.5.4 Bad
  // NAME syntax" to NAME=[TEMPUNAVAIL], which only XCLIENT takes.
  const bool xforward = verb == "XFORWARD";
  const std::string client_name =
      xforward && origin.name == "[TEMPUNAVAIL]" ? std::string("[UNAVAILABLE]") : origin.name;
  // XCLIENT leaves HELO to the EHLO that must follow it (the server takes
  // that name over XCLIENT's): what is left always fits one line, so one
  // XCLIENT, answered by one 220, sets the whole identity. A second line
  // would meet a session that is no longer ours to change.
  const std::pair<const char*, std::string> known[] = {
      {"NAME", client_name},
      {"ADDR", origin.address.empty() ? std::string() : address_value(origin.address)},
      {"PORT", origin.port == 0 ? std::string() : std::to_string(origin.port)},
      {"PROTO", origin.proto},
      {"HELO", xforward ? origin.helo : std::string()},
  };
  std::vector<std::string> lines;
  std::string line;
  auto close_line = [&] {
    if (line.empty()) return;
    line += "\r\n";
    lines.push_back(std::move(line));
    line.clear();
  };
  for (const auto& [name, value] : known) {
    if (value.empty()) continue;
    if (std::find(offered.begin(), offered.end(), name) == offered.end()) continue;
    const std::string attribute = std::string(name) + "=" + xtext_encode(value);
    // verb SP attribute CRLF must fit alone, or the attribute is left out.
    if (verb.size() + 1 + attribute.size() + 2 > max_line) continue;
    if (!line.empty() && line.size() + 1 + attribute.size() + 2 > max_line) close_line();
    if (line.empty()) line = verb;
    line += ' ';
    line += attribute;
  }
  close_line();
  return lines;
}

}  // namespace flushgate::gateway
