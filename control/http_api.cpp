// http_api.cpp — see http_api.hpp. Three parts: the pure request router
// (route_request), the token (authorized, load_admin_token), and the Poco
// server whose handler runs each request's command on the io thread.
#include "control/http_api.hpp"

#include "control/console.hpp"
#include "control/console_session.hpp"
#include "control/status_page.hpp"
#include "control/status_report.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"

#include <Poco/Base64Decoder.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/ThreadPool.h>
#include <Poco/URI.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace flushgate::control {

namespace asio = boost::asio;
using Poco::JSON::Object;

namespace {

api_route fail(int status, std::string why) {
  api_route r;
  r.k = api_route::kind::error;
  r.http_status = status;
  r.error = std::move(why);
  return r;
}

api_route command(std::string name, Object::Ptr args) {
  api_route r;
  r.k = api_route::kind::command;
  r.command = std::move(name);
  r.args = args ? args : Object::Ptr(new Object);
  return r;
}

// Nesting depth of a JSON text, counted outside strings: the parser is
// recursive, so a body of a million '[' must not reach it.
std::size_t json_depth(const std::string& text) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

// The body as a JSON object ("" is an empty object); false with a reason.
bool parse_body(const std::string& body, Object::Ptr& out, std::string& why) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) {
    out = new Object;
    return true;
  }
  if (json_depth(body) > 16) {
    why = "the JSON body is nested too deeply";
    return false;
  }
  try {
    Poco::JSON::Parser parser;
    auto value = parser.parse(body);
    out = value.extract<Object::Ptr>();
    if (!out) throw Poco::BadCastException();
    return true;
  } catch (const Poco::BadCastException&) {
    why = "the body must be a JSON object";
  } catch (const Poco::Exception& e) {
    why = "the body is not valid JSON: " + e.displayText();
  } catch (const std::exception& e) {
    why = std::string("the body is not valid JSON: ") + e.what();
  }
  return false;
}

}  // namespace

api_route route_request(std::string_view method, std::string_view target, const std::string& body) {
  std::vector<std::string> seg;
  Poco::URI::QueryParameters query;
  try {
    Poco::URI uri{std::string(target)};
    uri.getPathSegments(seg);
    query = uri.getQueryParameters();
  } catch (const Poco::Exception&) {
    return fail(400, "the request target is not a valid URI");
  }
  auto param = [&query](const char* key) -> std::string {
    for (const auto& [k, v] : query) {
      if (k == key) return v;
    }
    return {};
  };
  const std::string m(method);
  const bool get = m == "GET", post = m == "POST", del = m == "DELETE";
  const bool patch = m == "PATCH", put = m == "PUT";
  if (!get && !post && !del && !patch && !put) return fail(405, "method " + m + " is not supported");

  if (seg.empty()) {
    if (get) {
      api_route r;
      r.k = api_route::kind::status_page;
      return r;
    }
    return fail(405, "/ takes GET");
  }
  if (seg.size() == 1 && seg[0] == "metrics") {
    if (get) {
      api_route r;
      r.k = api_route::kind::metrics;
      return r;
    }
    return fail(405, "/metrics takes GET");
  }
  if (seg.size() < 3 || seg[0] != "api" || seg[1] != "v1") return fail(404, "no such resource");

  // Everything below takes its arguments from the JSON body (POST, PATCH,
  // PUT) or the path and query (GET, DELETE).
  Object::Ptr args;
  std::string why;
  if ((post || patch || put) && !parse_body(body, args, why)) return fail(400, why);
  if (!args) args = new Object;
  const std::string& resource = seg[2];
  const std::size_t n = seg.size();

  if (resource == "command" && n == 3 && post) {
    // The control socket's request format, for scripts that already speak it.
    std::string name = args->optValue<std::string>("command", "");
    Object::Ptr inner = args->has("args") && !args->get("args").isEmpty() ? args->getObject("args") : nullptr;
    if (name.empty()) return fail(400, "a \"command\" is needed");
    return command(name, inner);
  }
  if (resource == "status" && n == 3 && get) return command("status", args);
  if (resource == "config" && n == 3 && get) return command("config.show", args);
  if (resource == "cluster" && n == 3 && get) return command("cluster.status", args);
  if (resource == "events" && n == 3 && get) {
    if (!param("limit").empty()) args->set("limit", param("limit"));
    return command("events", args);
  }
  if (resource == "doctor" && n == 4 && get) {
    args->set("domain", seg[3]);
    return command("doctor", args);
  }
  if (resource == "customers") {
    if (n == 3 && get) return command("customer.list", args);
    if (n == 3 && post) return command("customer.add", args);
    if (n < 4) return fail(405, "/api/v1/customers takes GET or POST");
    args->set("name", seg[3]);
    if (n == 4) {
      if (get) return command("customer.show", args);
      if (patch) return command("customer.set", args);
      if (del) {
        args->set("force", param("force") == "true" || param("force") == "1");
        return command("customer.remove", args);
      }
      return fail(405, "a customer takes GET, PATCH or DELETE");
    }
    if (n == 5) {
      const std::string& action = seg[4];
      if (post && (action == "enable" || action == "disable" || action == "suspend")) {
        args->set("state", action == "enable" ? "enabled" : action == "disable" ? "disabled" : "suspended");
        return command("customer.set", args);
      }
      if (put && action == "password") return command("customer.passwd", args);
      if (action == "recipients") {
        // The list, managed by the customer's provisioning: GET shows it (and
        // the known addresses), PUT replaces it whole ({"addresses":[...]}),
        // POST adds, DELETE ?address=A removes one.
        if (get) args->set("action", "show");
        else if (put) args->set("action", "replace");
        else if (post) args->set("action", "add");
        else if (del && !param("address").empty()) {
          args->set("action", "remove");
          Poco::JSON::Array::Ptr one = new Poco::JSON::Array;
          one->add(param("address"));
          args->set("addresses", one);
        } else {
          return fail(405, "recipients take GET, PUT, POST or DELETE ?address=");
        }
        return command("customer.recipients", args);
      }
      if (action == "flush") {
        if (post) return command("flush", args);
        if (get) return command("flush.status", args);
      }
    }
    return fail(404, "no such customer resource");
  }
  if (resource == "queue") {
    if (n == 3 && get) {
      if (!param("customer").empty()) args->set("customer", param("customer"));
      if (!param("limit").empty()) args->set("limit", param("limit"));
      return command("queue.list", args);
    }
    if (n == 4 && seg[3] == "summary" && get) {
      if (!param("customer").empty()) args->set("customer", param("customer"));
      return command("queue.summary", args);
    }
    if (n == 4 && get) {
      args->set("qid", seg[3]);
      return command("queue.show", args);
    }
    Poco::JSON::Array::Ptr qids = new Poco::JSON::Array;
    if (n >= 4) qids->add(seg[3]);
    args->set("qids", qids);
    if (n == 4 && del) return command("queue.delete", args);
    if (n == 5 && post && seg[4] == "hold") return command("queue.hold", args);
    if (n == 5 && post && seg[4] == "release") return command("queue.release", args);
    return fail(404, "no such queue resource");
  }
  if (resource == "links") {
    if (n == 3 && get) return command("link.list", args);
    if (n == 3 && post) return command("link.up", args);
    if (n == 4 && del) {
      args->set("user", seg[3]);
      if (!param("session").empty()) args->set("session", param("session"));
      if (!param("family").empty()) args->set("family", param("family"));
      return command("link.down", args);
    }
    return fail(405, "links take GET, POST or DELETE /api/v1/links/USER");
  }
  return fail(404, "no such resource");
}

int http_status_of(command_status s) noexcept {
  switch (s) {
    case command_status::ok: return 200;
    case command_status::bad_request: return 400;
    case command_status::not_found: return 404;
    case command_status::conflict: return 409;
    case command_status::unavailable: return 503;
  }
  return 400;
}

bool authorized(std::string_view authorization, std::string_view token) {
  if (token.empty()) return false;
  std::string presented;
  auto starts = [&authorization](std::string_view scheme) {
    if (authorization.size() < scheme.size()) return false;
    for (std::size_t i = 0; i < scheme.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(authorization[i])) != scheme[i]) return false;
    }
    return true;
  };
  if (starts("bearer ")) {
    presented = std::string(authorization.substr(7));
  } else if (starts("basic ") && authorization.size() < 4096) {
    std::istringstream in{std::string(authorization.substr(6))};
    Poco::Base64Decoder decoder(in);
    std::string decoded;
    try {
      std::getline(decoder, decoded, '\0');
    } catch (const Poco::Exception&) {
      return false;
    }
    auto colon = decoded.find(':');
    if (colon == std::string::npos) return false;
    presented = decoded.substr(colon + 1);
  } else {
    return false;
  }
  while (!presented.empty() && (presented.back() == ' ' || presented.back() == '\t')) presented.pop_back();
  return same_secret(presented, token);
}

bool load_admin_token(const std::string& path, const std::string& group, std::string& token,
                      std::string& error) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      error = "admin_token_file " + path + ": " + std::strerror(errno);
      return false;
    }
    std::string fresh;
    try {
      fresh = random_token();
    } catch (const std::exception&) {
      error = "admin_token_file: no random bytes for a new token";
      return false;
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
      error = "admin_token_file " + path + ": cannot create: " + std::strerror(errno);
      return false;
    }
    const std::string line = fresh + "\n";
    const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                         ::fsync(fd) == 0;
    if (!group.empty()) {
      if (const struct group* g = ::getgrnam(group.c_str())) {
        if (::fchown(fd, static_cast<uid_t>(-1), g->gr_gid) != 0) {
          core::log_warning("admin_token_file {}: cannot give it to group {}: {}", path, group,
                            std::strerror(errno));
        }
      }
    }
    ::close(fd);
    if (!written) {
      error = "admin_token_file " + path + ": cannot write the new token";
      return false;
    }
    core::log_info("admin_token_file {}: created a new token (mode 0640)", path);
    if (::stat(path.c_str(), &st) != 0) {
      error = "admin_token_file " + path + ": " + std::strerror(errno);
      return false;
    }
  }
  if ((st.st_mode & S_IRWXO) != 0) {
    error = "admin_token_file " + path + " is readable or writable by other users (chmod o-rwx it)";
    return false;
  }
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    error = "admin_token_file " + path + ": cannot read it";
    return false;
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.size() < 16) {
    error = "admin_token_file " + path + ": the token must be at least 16 characters";
    return false;
  }
  token = line;
  return true;
}

// ------------------------------------------------------------ the server

struct http_api::impl {
  asio::io_context& io;
  daemon_context* ctx = nullptr;  // set by start()
  http_api_settings settings;
  std::vector<std::unique_ptr<Poco::Net::ServerSocket>> sockets;
  std::unique_ptr<Poco::ThreadPool> pool;
  std::vector<std::unique_ptr<Poco::Net::HTTPServer>> servers;
  std::atomic<std::int64_t> last_auth_warning{0};

  std::atomic<bool> stopping{false};
  std::unique_ptr<console> console_ui;  // the operator console under /console/

  // Runs a coroutine on the io thread and waits for it, bounded by the
  // timeout — and by stop(), which may itself be running on the io thread.
  template <typename T, typename F>
  bool on_io(F&& make, T& out) {
    auto future = asio::co_spawn(io, std::forward<F>(make), asio::use_future);
    const auto deadline = std::chrono::steady_clock::now() + settings.timeout;
    while (future.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
      if (stopping.load() || std::chrono::steady_clock::now() >= deadline) return false;
    }
    out = future.get();
    return true;
  }

  void count(int status) {
    core::metrics()
        .counter_for("flushgate_admin_requests_total", "HTTP API requests, by status code.",
                     {{"status", std::to_string(status)}})
        .add();
  }

  void send(Poco::Net::HTTPServerResponse& resp, int status, const std::string& type,
            const std::string& body) {
    count(status);
    resp.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(status));
    resp.setContentType(type);
    resp.set("Cache-Control", "no-store");
    resp.set("X-Content-Type-Options", "nosniff");
    resp.setContentLength(static_cast<std::streamsize>(body.size()));
    resp.send() << body;
  }

  void send_error(Poco::Net::HTTPServerResponse& resp, int status, const std::string& why,
                  command_status code) {
    send(resp, status, "application/json", to_json_line(command_result::failure(why, code)));
  }

  // The body of a request that has one, bounded: Content-Length first,
  // then what actually arrives. False when it is longer than `limit`.
  static bool read_body(Poco::Net::HTTPServerRequest& req, std::size_t limit, std::string& body) {
    if (req.hasContentLength() && req.getContentLength64() > static_cast<Poco::Int64>(limit)) return false;
    if (req.getMethod() == "GET" || req.getMethod() == "DELETE") return true;
    std::istream& in = req.stream();
    char buf[8192];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      body.append(buf, static_cast<std::size_t>(in.gcount()));
      if (body.size() > limit) return false;
    }
    return true;
  }

  // The operator console (console.hpp): its own login and sessions instead
  // of the Authorization header, its commands on the io thread like ours.
  void serve_console(Poco::Net::HTTPServerRequest& req, Poco::Net::HTTPServerResponse& resp) {
    console_request in;
    in.method = req.getMethod();
    in.target = req.getURI();
    in.cookie = req.get("Cookie", "");
    in.origin = req.get("Origin", "");
    in.referer = req.get("Referer", "");
    in.host = req.get("Host", "");
    in.remote = req.clientAddress().toString();
    if (!read_body(req, console_max_body, in.body)) {
      send(resp, 413, "text/plain; charset=utf-8", "the form is larger than 64 KiB\n");
      return;
    }
    daemon_context* c = ctx;
    auto run = [this, c](const std::string& name, Object::Ptr args) {
      command_result result;
      auto make = [c, name, args]() -> asio::awaitable<command_result> {
        command_result r = co_await run_command(*c, name, args);
        co_return r;
      };
      if (!on_io(make, result)) {
        return command_result::failure("the daemon did not answer in time", command_status::unavailable);
      }
      return result;
    };
    const console_response out = console_ui->handle(in, run);
    for (const auto& [name, value] : out.headers) {
      if (name == "Set-Cookie") {
        resp.add(name, value);
      } else {
        resp.set(name, value);
      }
    }
    send(resp, out.status, out.content_type, out.body);
  }

  void handle(Poco::Net::HTTPServerRequest& req, Poco::Net::HTTPServerResponse& resp) {
    if (is_console_target(req.getURI())) {
      serve_console(req, resp);
      return;
    }
    const std::string authorization = req.get("Authorization", "");
    // A browser logged in to the console may read the status page: a GET
    // that changes nothing. Everything else still needs the token.
    const bool console_reader = req.getMethod() == "GET" && req.getURI() == "/" &&
                                console_ui->signed_in(req.get("Cookie", ""));
    if (!console_reader && !authorized(authorization, settings.token)) {
      // Log at most one refusal in 10 s: a scanner must not flood the log.
      if (once_per(last_auth_warning, static_cast<std::int64_t>(std::time(nullptr)), 10)) {
        core::log_warning("admin: {} {} from {} refused: {} token", req.getMethod(), req.getURI(),
                          req.clientAddress().host().toString(), authorization.empty() ? "no" : "wrong");
      }
      resp.set("WWW-Authenticate", "Basic realm=\"flushgate\", charset=\"UTF-8\"");
      send_error(resp, 401, "a valid token is needed (Authorization: Bearer TOKEN)",
                 command_status::bad_request);
      return;
    }

    std::string body;
    if (!read_body(req, settings.max_body, body)) {
      send_error(resp, 413, "the body is larger than 1 MiB", command_status::bad_request);
      return;
    }

    api_route route = route_request(req.getMethod(), req.getURI(), body);
    switch (route.k) {
      case api_route::kind::error:
        send_error(resp, route.http_status, route.error,
                   route.http_status == 404 ? command_status::not_found : command_status::bad_request);
        return;
      case api_route::kind::metrics: {
        std::string text;
        daemon_context* c = ctx;
        auto make = [c]() -> asio::awaitable<std::string> {
          command_result status = co_await collect_status(*c, static_cast<std::int64_t>(std::time(nullptr)));
          Object::Ptr snapshot = status.ok ? status.result.extract<Object::Ptr>() : Object::Ptr();
          co_return render_metrics(*c, snapshot);
        };
        if (!on_io(make, text)) {
          send_error(resp, 503, "the daemon did not answer in time", command_status::unavailable);
          return;
        }
        send(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text);
        return;
      }
      case api_route::kind::status_page:
        route.command = "status";
        route.args = new Object;
        break;
      case api_route::kind::command:
        break;
    }

    command_result result;
    daemon_context* c = ctx;
    std::string name = route.command;
    Object::Ptr args = route.args;
    auto make = [c, name, args]() -> asio::awaitable<command_result> {
      command_result r = co_await run_command(*c, name, args);
      co_return r;
    };
    if (!on_io(make, result)) {
      send_error(resp, 503, "the daemon did not answer in time", command_status::unavailable);
      return;
    }
    if (route.k == api_route::kind::status_page) {
      if (!result.ok) {
        send(resp, 503, "text/plain; charset=utf-8", "status unavailable: " + result.error + "\n");
        return;
      }
      send(resp, 200, "text/html; charset=utf-8", render_status_page(result.result.extract<Object::Ptr>()));
      return;
    }
    send(resp, result.ok ? 200 : http_status_of(result.status), "application/json", to_json_line(result));
  }
};

namespace {

class api_handler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit api_handler(http_api::impl& api) : api_(api) {}
  void handleRequest(Poco::Net::HTTPServerRequest& req, Poco::Net::HTTPServerResponse& resp) override {
    try {
      api_.handle(req, resp);
    } catch (const Poco::Net::NetException& e) {
      // The client went away or sent something Poco refused mid-request.
      core::log_debug("admin: request from {} ended: {}", req.clientAddress().toString(), e.displayText());
    } catch (const std::exception& e) {
      core::log_error("admin: request {} {} failed: {}", req.getMethod(), req.getURI(), e.what());
      if (!resp.sent()) {
        try {
          api_.send_error(resp, 500, "internal error", command_status::unavailable);
        } catch (...) {
        }
      }
    }
  }

 private:
  http_api::impl& api_;
};

class api_handler_factory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit api_handler_factory(http_api::impl& api) : api_(api) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
    return new api_handler(api_);
  }

 private:
  http_api::impl& api_;
};

}  // namespace

http_api::http_api(asio::io_context& io, http_api_settings settings)
    : impl_(new impl{io, nullptr, std::move(settings), {}, {}, {}, {}, {}, {}}) {
  impl_->console_ui = std::make_unique<console>(impl_->settings.token);
}

http_api::~http_api() { stop(); }

bool http_api::listen(std::string& error) {
  for (const auto& address : impl_->settings.listen) {
    try {
      auto socket = std::make_unique<Poco::Net::ServerSocket>();
      socket->bind(Poco::Net::SocketAddress(address), true);
      socket->listen(static_cast<int>(impl_->settings.max_queued));
      impl_->sockets.push_back(std::move(socket));
    } catch (const Poco::Exception& e) {
      error = "admin_listen " + address + ": " + e.displayText();
      return false;
    }
  }
  return true;
}

std::vector<std::uint16_t> http_api::ports() const {
  std::vector<std::uint16_t> out;
  for (const auto& s : impl_->sockets) out.push_back(s->address().port());
  return out;
}

void http_api::start(daemon_context& ctx) {
  impl_->ctx = &ctx;
  if (impl_->sockets.empty()) return;
  const int threads = static_cast<int>(impl_->settings.max_threads);
  impl_->pool = std::make_unique<Poco::ThreadPool>(1, threads * static_cast<int>(impl_->sockets.size()) + 1);
  for (const auto& socket : impl_->sockets) {
    Poco::Net::HTTPServerParams::Ptr params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(threads);
    params->setMaxQueued(static_cast<int>(impl_->settings.max_queued));
    params->setTimeout(Poco::Timespan(static_cast<long>(impl_->settings.timeout.count()), 0));
    params->setKeepAlive(true);
    params->setMaxKeepAliveRequests(100);
    params->setKeepAliveTimeout(Poco::Timespan(static_cast<long>(impl_->settings.timeout.count()), 0));
    params->setServerName("flushgate");
    auto server = std::make_unique<Poco::Net::HTTPServer>(new api_handler_factory(*impl_), *impl_->pool,
                                                          *socket, params);
    server->start();
    impl_->servers.push_back(std::move(server));
  }
  for (auto port : ports()) core::log_info("admin: HTTP API on port {}", port);
}

void http_api::stop() {
  impl_->stopping = true;
  for (auto& s : impl_->servers) s->stopAll(true);
  impl_->servers.clear();
  if (impl_->pool) impl_->pool->joinAll();
}

}  // namespace flushgate::control
