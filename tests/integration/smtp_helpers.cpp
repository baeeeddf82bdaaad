// smtp_helpers.cpp — see smtp_helpers.hpp.
#include "tests/integration/smtp_helpers.hpp"

#include <Poco/Base64Decoder.h>
#include <Poco/Base64Encoder.h>
#include <Poco/DigestEngine.h>
#include <Poco/HMACEngine.h>
#include <Poco/MD5Engine.h>

#include <sstream>

namespace flushgate::test {

probe_result rcpt_reply(const std::string& host, std::uint16_t port, const std::string& to) {
  smtp_probe probe;
  if (auto ec = probe.connect(host, port)) return ec;
  if (auto greeting = probe.read_reply(); !greeting || greeting->code != 220) return greeting;
  if (auto ehlo = probe.command("EHLO client.test"); !ehlo || ehlo->code != 250) return ehlo;
  if (auto mail = probe.command("MAIL FROM:<a@sender.test>"); !mail || mail->code != 250) return mail;
  auto r = probe.command("RCPT TO:<" + to + ">");
  probe.command("QUIT");
  return r;
}

std::string describe(const probe_result& r) {
  if (!r) return "error: " + r.error().message();
  std::string out = std::to_string(r->code);
  for (std::size_t i = 0; i < r->lines.size(); ++i) {
    out += i == 0 ? " " : " | ";
    out += r->lines[i];
  }
  return out;
}

::testing::AssertionResult reply_is(const probe_result& r, int code, std::string_view enhanced) {
  const std::string want =
      std::to_string(code) + (enhanced.empty() ? "" : " " + std::string(enhanced) + " ...");
  if (!r) return ::testing::AssertionFailure() << "got " << describe(r) << ", want " << want;
  const bool enhanced_ok =
      enhanced.empty() || (!r->lines.empty() && r->lines.front().starts_with(enhanced));
  if (r->code != code || !enhanced_ok) {
    return ::testing::AssertionFailure() << "got " << describe(r) << ", want " << want;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult open_session(smtp_probe& probe, std::uint16_t port,
                                        std::string_view ehlo) {
  if (auto ec = probe.connect("127.0.0.1", port)) {
    return ::testing::AssertionFailure()
           << "connect to 127.0.0.1:" << port << ": got " << ec.message() << ", want success";
  }
  auto greeting = probe.read_reply();
  if (auto check = reply_is(greeting, 220); !check) {
    return ::testing::AssertionFailure() << "greeting: " << check.message();
  }
  if (ehlo.empty()) return ::testing::AssertionSuccess();
  auto hello = probe.command("EHLO " + std::string(ehlo));
  if (auto check = reply_is(hello, 250); !check) {
    return ::testing::AssertionFailure() << "EHLO: " << check.message();
  }
  return ::testing::AssertionSuccess();
}

std::string dot_stuffed(std::string_view content) {
  std::string out;
  out.reserve(content.size() + content.size() / 64 + 8);
  bool line_start = true;
  for (char c : content) {
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = c == '\n';
  }
  if (!out.ends_with("\r\n")) out += "\r\n";
  out += ".\r\n";
  return out;
}

transaction_result send_message(smtp_probe& probe, std::string_view from,
                                const std::vector<std::string>& to, std::string_view content,
                                std::string_view mail_params) {
  transaction_result result;
  std::string mail = "MAIL FROM:<" + std::string(from) + ">";
  if (!mail_params.empty()) mail += " " + std::string(mail_params);
  result.stopped_at = stage::mail;
  result.reply = probe.command(mail);
  if (!result.reply || result.reply->code != 250) return result;
  result.stopped_at = stage::rcpt;
  for (const auto& rcpt : to) {
    result.reply = probe.command("RCPT TO:<" + rcpt + ">");
    if (!result.reply || result.reply->code != 250) return result;
  }
  result.stopped_at = stage::data;
  result.reply = probe.command("DATA");
  if (!result.reply || result.reply->code != 354) return result;
  result.stopped_at = stage::content;
  if (auto ec = probe.send_raw(dot_stuffed(content))) {
    result.reply = ec;
    return result;
  }
  result.content_sent = true;
  result.stopped_at = stage::done;
  result.reply = probe.read_reply();
  return result;
}

std::vector<std::string> queue_ids(const probe_reply& reply) {
  std::vector<std::string> ids;
  if (reply.code != 250 || reply.lines.empty()) return ids;
  const std::string& line = reply.lines.front();
  const std::string marker = "queued as ";
  auto at = line.find(marker);
  if (at == std::string::npos) return ids;
  std::istringstream words(line.substr(at + marker.size()));
  std::string id;
  while (words >> id) ids.push_back(id);
  return ids;
}

std::pair<std::string, std::string> split_received(std::string_view content) {
  if (!content.starts_with("Received:")) return {"", std::string(content)};
  std::size_t end = 0;
  // The first line, then every folded line (starting with SP or HTAB).
  do {
    auto eol = content.find("\r\n", end);
    if (eol == std::string_view::npos) return {std::string(content), ""};
    end = eol + 2;
  } while (end < content.size() && (content[end] == ' ' || content[end] == '\t'));
  return {std::string(content.substr(0, end)), std::string(content.substr(end))};
}

std::string make_message(const std::vector<std::string>& headers, std::string_view body) {
  std::string out;
  for (const auto& h : headers) out += h + "\r\n";
  out += "\r\n";
  out += body;
  if (!out.ends_with("\r\n")) out += "\r\n";
  return out;
}

std::string base64(std::string_view data) {
  std::ostringstream out;
  Poco::Base64Encoder encoder(out);
  encoder.rdbuf()->setLineLength(0);
  encoder.write(data.data(), static_cast<std::streamsize>(data.size()));
  encoder.close();
  return out.str();
}

std::string unbase64(const std::string& text) {
  std::istringstream in(text);
  Poco::Base64Decoder decoder(in);
  std::string out;
  char c = 0;
  while (decoder.get(c)) out += c;
  return out;
}

// RFC 2195: base64("user" SP lowercase-hex HMAC-MD5(secret, challenge)).
std::string cram_md5_response(const std::string& user, const std::string& secret,
                              const std::string& challenge) {
  Poco::HMACEngine<Poco::MD5Engine> hmac(secret);
  hmac.update(challenge);
  return base64(user + " " + Poco::DigestEngine::digestToHex(hmac.digest()));
}

}  // namespace flushgate::test
