// delivery_peers.cpp — see delivery_peers.hpp.
#include "tests/integration/delivery_peers.hpp"

#include "tests/integration/smtp_helpers.hpp"
#include "tests/support/smtp_probe.hpp"
#include "tests/support/wait.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace flushgate::test {

namespace {

using namespace std::chrono_literals;

// Binds a TCP socket to host:port (0: the kernel picks; host a numeric IPv4
// or IPv6 address); the port bound, or 0 when the bind failed. SO_REUSEADDR,
// as servers use it: connections in TIME_WAIT do not make a port look taken,
// a bound socket does.
std::uint16_t try_bind(const std::string& host, std::uint16_t port) {
  sockaddr_storage address{};
  socklen_t length = 0;
  int family = AF_INET;
  if (auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
      ::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof *v4;
  } else if (auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
             ::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof *v6;
    family = AF_INET6;
  } else {
    throw std::invalid_argument("not an IP address: " + host);
  }
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  std::uint16_t bound = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    bound = family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port)
                              : ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
  }
  ::close(fd);
  return bound;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

Poco::Dynamic::Var parse_json(const std::string& text) {
  Poco::JSON::Parser parser;
  return parser.parse(text);
}

}  // namespace

std::uint16_t free_port_on(const std::string& host) {
  const std::uint16_t port = try_bind(host, 0);
  if (port == 0) throw std::system_error(errno, std::generic_category(), "bind " + host + ":0");
  return port;
}

bool tcp_port_free(const std::string& host, std::uint16_t port) {
  return try_bind(host, port) == port;
}

// ------------------------------------------------------------ smtp_sink

bool smtp_sink::available() {
  return ::access(sink_path, X_OK) == 0;
}

smtp_sink::smtp_sink(std::string host, std::uint16_t port, std::vector<std::string> flags)
    : dir_("flushgate-sink"), host_(std::move(host)), port_(port), flags_(std::move(flags)) {
  // As root the sink runs as nobody (-u): it must reach and write the dumps.
  std::filesystem::permissions(dir_.path(), std::filesystem::perms::owner_all |
                                                std::filesystem::perms::group_read |
                                                std::filesystem::perms::group_exec |
                                                std::filesystem::perms::others_read |
                                                std::filesystem::perms::others_exec);
  std::filesystem::create_directory(dir_.path() / "dumps");
  std::filesystem::permissions(dir_.path() / "dumps", std::filesystem::perms::all);
}

smtp_sink::~smtp_sink() {
  stop();
}

void smtp_sink::start() {
  std::vector<std::string> argv{sink_path};
  if (::geteuid() == 0) argv.insert(argv.end(), {"-u", "nobody"});
  // One file per transaction: the strftime template plus a random suffix.
  argv.insert(argv.end(), {"-d", (dir_.path() / "dumps" / "%H%M%S.").string()});
  argv.insert(argv.end(), flags_.begin(), flags_.end());
  argv.push_back(address());
  argv.push_back("64");
  spawn_options options;
  options.stdout_path = dir_.path() / "sink.log";
  options.stderr_path = dir_.path() / "sink.log";
  sink_.reset();
  sink_.emplace(argv, options);
  // A connection proves it listens (smtp-sink counts it as a session, not a message).
  const bool up = wait_for_tcp(host_, port_, 10s);
  if (!up || !sink_->running()) {
    throw std::runtime_error("smtp-sink on " + address() + " did not start; its output:\n" +
                             log_text());
  }
}

void smtp_sink::stop() {
  if (sink_ && sink_->running()) sink_->kill();
}

bool smtp_sink::running() {
  return sink_ && sink_->running();
}

std::vector<std::string> smtp_sink::dumps() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir_.path() / "dumps", ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_regular_file(type_ec)) out.push_back(read_file(it->path()));
  }
  return out;
}

std::string smtp_sink::message_of(std::string_view dump) {
  // The sink's headers come first and end with its three-line Received:.
  auto at = dump.find("\nReceived: ");
  if (at == std::string_view::npos) return {};
  std::string rest = split_first_field(dump.substr(at + 1)).second;
  if (rest.ends_with("\n")) rest.pop_back();
  return rest;
}

std::string smtp_sink::log_text() const {
  return read_file(dir_.path() / "sink.log");
}

// ------------------------------------------------------------ text

std::string to_lf(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
    out += text[i];
  }
  return out;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> field_values(std::string_view text, std::string_view name) {
  const std::string lf = to_lf(text);
  std::vector<std::string> out;
  std::istringstream lines(lf);
  std::string line;
  bool in_field = false;
  while (std::getline(lines, line)) {
    if (in_field && !line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      auto first = line.find_first_not_of(" \t");
      out.back() += " " + line.substr(first == std::string::npos ? line.size() : first);
      continue;
    }
    in_field = false;
    auto colon = line.find(':');
    if (colon == std::string::npos || !iequals(std::string_view(line).substr(0, colon), name)) {
      continue;
    }
    auto value = line.find_first_not_of(" \t", colon + 1);
    out.push_back(value == std::string::npos ? std::string() : line.substr(value));
    in_field = true;
  }
  return out;
}

maildir_message split_maildir(std::string_view file_text) {
  maildir_message m;
  const std::string text = to_lf(file_text);
  std::size_t at = 0;
  auto line_end = [&](std::size_t from) {
    auto eol = text.find('\n', from);
    return eol == std::string::npos ? text.size() : eol + 1;
  };
  // Return-Path, X-Original-To, Delivered-To: one line each, in that order.
  for (const char* name : {"Return-Path:", "X-Original-To:", "Delivered-To:"}) {
    if (text.compare(at, std::string_view(name).size(), name) != 0) continue;
    const std::size_t end = line_end(at);
    if (std::string_view(name) == "Return-Path:") {
      m.return_path = text.substr(at + 13, end - at - 13);
      while (!m.return_path.empty() && (m.return_path.back() == '\n' || m.return_path.back() == ' ')) {
        m.return_path.pop_back();
      }
    }
    at = end;
  }
  // Postfix's own Received: and its folded lines.
  if (text.compare(at, 9, "Received:") == 0) {
    at = line_end(at);
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t')) at = line_end(at);
  }
  m.postfix_top = text.substr(0, at);
  m.rest = text.substr(at);
  return m;
}

std::pair<std::string, std::string> split_first_field(std::string_view lf_text) {
  std::size_t end = 0;
  do {
    auto eol = lf_text.find('\n', end);
    if (eol == std::string_view::npos) return {std::string(lf_text), ""};
    end = eol + 1;
  } while (end < lf_text.size() && (lf_text[end] == ' ' || lf_text[end] == '\t'));
  return {std::string(lf_text.substr(0, end)), std::string(lf_text.substr(end))};
}

std::string test_message(const std::string& subject, const std::string& to, std::string_view body,
                         const std::vector<std::string>& extra_headers) {
  std::vector<std::string> headers{
      "Date: Sun, 22 Nov 2026 06:00:00 +0000",
      "From: Alice <alice@sender.test>",
      "To: <" + to + ">",
      "Subject: " + subject,
      "Message-ID: <" + subject + "@sender.test>",
  };
  headers.insert(headers.end(), extra_headers.begin(), extra_headers.end());
  return make_message(headers, body);
}

// ------------------------------------------------------------ submission

submission submit(std::uint16_t port, const std::string& from, const std::vector<rcpt_spec>& to,
                  const std::string& content, const std::string& mail_params) {
  submission out;
  smtp_probe probe(20s);
  if (auto opened = open_session(probe, port); !opened) {
    out.error = opened.message();
    return out;
  }
  std::string mail = "MAIL FROM:<" + from + ">";
  if (!mail_params.empty()) mail += " " + mail_params;
  if (auto r = probe.command(mail); !reply_is(r, 250)) {
    out.error = "MAIL: " + std::string(reply_is(r, 250).message());
    return out;
  }
  for (const auto& rcpt : to) {
    std::string line = "RCPT TO:<" + rcpt.address + ">";
    if (!rcpt.params.empty()) line += " " + rcpt.params;
    if (auto r = probe.command(line); !reply_is(r, 250)) {
      out.error = "RCPT " + rcpt.address + ": " + std::string(reply_is(r, 250).message());
      return out;
    }
  }
  if (auto r = probe.command("DATA"); !reply_is(r, 354)) {
    out.error = "DATA: " + std::string(reply_is(r, 354).message());
    return out;
  }
  if (auto ec = probe.send_raw(dot_stuffed(content))) {
    out.error = "content: " + ec.message();
    return out;
  }
  auto done = probe.read_reply();
  if (!reply_is(done, 250)) {
    out.error = "final dot: " + std::string(reply_is(done, 250).message());
    return out;
  }
  auto ids = queue_ids(*done);
  if (ids.size() != 1) {
    out.error = "final dot: got \"" + describe(done) + "\", want one queue id";
    return out;
  }
  out.qid = ids.front();
  (void)probe.command("QUIT");
  return out;
}

// ------------------------------------------------------------ the queue via the CLI

std::optional<std::uint64_t> queued_for(const daemon_fixture& daemon, const std::string& customer) {
  auto r = daemon.cli({"--json", "queue", "summary"});
  if (r.exit_code != 0) return std::nullopt;
  try {
    auto rows = parse_json(r.out).extract<Poco::JSON::Array::Ptr>();
    for (std::size_t i = 0; i < rows->size(); ++i) {
      auto row = rows->getObject(static_cast<unsigned>(i));
      if (row->getValue<std::string>("customer") == customer) {
        return row->getValue<std::uint64_t>("messages");
      }
    }
    return 0;
  } catch (const std::exception&) {  // Poco::Exception is one
    return std::nullopt;
  }
}

std::vector<std::string> queue_ids_of(const daemon_fixture& daemon, const std::string& customer) {
  std::vector<std::string> out;
  auto r = daemon.cli({"--json", "queue", "list", "--customer", customer});
  if (r.exit_code != 0) return out;
  try {
    auto rows = parse_json(r.out).extract<Poco::JSON::Object::Ptr>()->getArray("messages");
    for (std::size_t i = 0; i < rows->size(); ++i) {
      out.push_back(rows->getObject(static_cast<unsigned>(i))->getValue<std::string>("qid"));
    }
  } catch (const std::exception&) {  // Poco::Exception is one
    out.clear();
  }
  return out;
}

bool wait_queued(const daemon_fixture& daemon, const std::string& customer, std::uint64_t count,
                 std::chrono::milliseconds timeout) {
  return wait_until([&] { return queued_for(daemon, customer) == count; }, timeout, 100ms);
}

std::vector<std::string> log_lines(const daemon_fixture& daemon,
                                   const std::vector<std::string>& needles) {
  std::vector<std::string> out;
  std::istringstream lines(daemon.log_text());
  std::string line;
  while (std::getline(lines, line)) {
    if (std::all_of(needles.begin(), needles.end(),
                    [&](const std::string& n) { return line.find(n) != std::string::npos; })) {
      out.push_back(line);
    }
  }
  return out;
}

bool wait_log_line(const daemon_fixture& daemon, const std::vector<std::string>& needles,
                   std::chrono::milliseconds timeout) {
  return wait_until([&] { return !log_lines(daemon, needles).empty(); }, timeout, 50ms);
}

std::vector<queued_recipient> recipients_of(const daemon_fixture& daemon, const std::string& qid) {
  std::vector<queued_recipient> out;
  auto shown = daemon.show_message(qid);
  if (!shown) return out;
  try {
    auto list = shown->getArray("recipients");
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      auto r = list->getObject(static_cast<unsigned>(i));
      out.push_back({r->getValue<std::string>("address"), r->getValue<std::uint64_t>("attempts"),
                     r->getValue<std::string>("last_reply")});
    }
  } catch (const std::exception&) {  // Poco::Exception is one
    out.clear();
  }
  return out;
}

certificate_files make_self_signed(const std::filesystem::path& dir, const std::string& name) {
  certificate_files files{dir / (name + ".crt"), dir / (name + ".key")};
  auto made = run_command({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                           "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=" + name,
                           "-addext", "subjectAltName=DNS:" + name, "-keyout",
                           files.key.string(), "-out", files.cert.string(), "-days", "2"},
                          60s);
  if (made.exit_code != 0) {
    throw std::runtime_error("openssl req for " + name + ": exit " +
                             std::to_string(made.exit_code) + ": " + made.stderr_text);
  }
  return files;
}

daemon_fixture::settings quick_retry_settings(const smtp_sink& bounces, daemon_fixture::settings extra) {
  daemon_fixture::settings s{{"retry_schedule", "1s"},
                             {"queue_sweep_interval", "1s"},
                             {"bounce_relay", bounces.address()}};
  for (auto& [k, v] : extra) s[k] = v;
  return s;
}

}  // namespace flushgate::test
