// postgres_instance.cpp — initdb, pg_ctl and libpq for a private server.
#include "tests/support/postgres_instance.hpp"

#include "tests/support/nsd_server.hpp"  // read_text_file
#include "tests/support/ports.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <stdexcept>

namespace flushgate::test {

namespace {

using namespace std::chrono_literals;

constexpr const char* bin_dir = "/usr/lib/postgresql/15/bin";
constexpr auto command_timeout = 60s;

std::string bin(const char* program) { return std::string(bin_dir) + "/" + program; }

// argv run as the postgres user.
command_result run_as_postgres(std::vector<std::string> argv) {
  argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  return run_command(argv, command_timeout);
}

std::string tail(const std::string& text, std::size_t max_bytes) {
  return text.size() <= max_bytes ? text : "..." + text.substr(text.size() - max_bytes);
}

}  // namespace

std::filesystem::path postgres_instance::template_dir() {
#ifdef FLUSHGATE_PG_TEMPLATE_DIR
  return FLUSHGATE_PG_TEMPLATE_DIR;
#else
  return {};
#endif
}

bool postgres_instance::available() { return unavailable_reason().empty(); }

std::string postgres_instance::unavailable_reason() {
  if (::access(bin("initdb").c_str(), X_OK) != 0) {
    return bin("initdb") + " is not installed (Debian package postgresql-15)";
  }
  if (::geteuid() != 0) return "needs root (initdb and the server run as the postgres user)";
  if (::getpwnam("postgres") == nullptr) return "no postgres user on this machine";
  return "";
}

postgres_instance::postgres_instance() : dir_("flushgate-pg"), port_(free_port()) {
  const passwd* pw = ::getpwnam("postgres");
  if (pw != nullptr && ::chown(dir_.path().c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    throw std::runtime_error("chown " + dir_.path().string() + ": " + std::strerror(errno));
  }
}

postgres_instance::~postgres_instance() { stop_quietly(); }

// ctest runs every test in a process of its own, so each would pay for an
// initdb (seconds on a busy machine). The first one keeps a pristine copy
// of its fresh cluster in the build tree; later ones copy that (cp -a keeps
// the postgres owner and the 0700 modes). A copy is made under a private
// name and renamed into place, so concurrent tests never see half of one.
void postgres_instance::initialise() {
  const std::filesystem::path cached = template_dir();
  if (!cached.empty() && std::filesystem::is_directory(cached / "global")) {
    auto r = run_command({"cp", "-a", cached.string(), data_dir().string()}, command_timeout);
    if (r.exit_code == 0) return;
    std::error_code ignored;
    std::filesystem::remove_all(data_dir(), ignored);
  }
  auto r = run_as_postgres({bin("initdb"), "--no-sync", "-D", data_dir().string(), "-A", "trust",
                            "-U", "flushgate", "-E", "SQL_ASCII", "--locale=C"});
  if (r.exit_code != 0) {
    throw std::runtime_error("initdb failed: " + r.stdout_text + r.stderr_text);
  }
  if (cached.empty()) return;
  const std::filesystem::path staging =
      cached.string() + ".tmp." + std::to_string(static_cast<long>(::getpid()));
  std::error_code ec;
  if (run_command({"cp", "-a", data_dir().string(), staging.string()}, command_timeout).exit_code ==
      0) {
    std::filesystem::rename(staging, cached, ec);  // fails harmlessly if another test won
  }
  std::filesystem::remove_all(staging, ec);
}

void postgres_instance::start() {
  if (!initialised_) {
    initialise();
    initialised_ = true;
  }
  const std::string options = "-c listen_addresses=127.0.0.1 -p " + std::to_string(port_) + " -k " +
                              dir_.path().string() + " -c fsync=on";
  auto r = run_as_postgres({bin("pg_ctl"), "-D", data_dir().string(), "-l", log_path().string(),
                            "-w", "-t", "30", "-o", options, "start"});
  if (r.exit_code != 0) {
    throw std::runtime_error("pg_ctl start failed: " + r.stdout_text + r.stderr_text + "\n" +
                             tail(log_text(), 2000));
  }
  running_ = true;
  // pg_ctl -w waited for the server; one query proves it takes connections.
  if (!wait_until([&] { return query_int("postgres", "SELECT 1").has_value(); }, 20s)) {
    throw std::runtime_error("server started but does not answer: " + tail(log_text(), 2000));
  }
}

bool postgres_instance::stop_immediate() {
  auto r = run_as_postgres(
      {bin("pg_ctl"), "-D", data_dir().string(), "-m", "immediate", "-w", "-t", "30", "stop"});
  running_ = r.exit_code != 0;
  return !running_;
}

void postgres_instance::stop_quietly() {
  if (!running_) return;
  if (stop_immediate()) return;
  // pg_ctl failed: the postmaster's PID is the first line of postmaster.pid.
  const std::string pid_text = read_text_file(data_dir() / "postmaster.pid");
  pid_t pid = 0;
  std::from_chars(pid_text.data(), pid_text.data() + pid_text.size(), pid);
  if (pid > 0) ::kill(pid, SIGKILL);
  running_ = false;
}

std::string postgres_instance::conninfo(const std::string& dbname) const {
  return "host=" + dir_.path().string() + " port=" + std::to_string(port_) +
         " user=flushgate dbname=" + dbname;
}

std::string postgres_instance::tcp_conninfo(const std::string& dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=flushgate dbname=" + dbname;
}

std::optional<std::string> postgres_instance::create_database() {
  const std::string name = "db" + std::to_string(next_database_++);
  if (!exec("postgres", "CREATE DATABASE " + name)) return std::nullopt;
  return name;
}

bool postgres_instance::exec(const std::string& dbname, const std::string& sql) const {
  PGconn* c = PQconnectdb(conninfo(dbname).c_str());
  bool ok = false;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult* r = PQexec(c, sql.c_str());
    ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
  }
  PQfinish(c);
  return ok;
}

std::optional<std::int64_t> postgres_instance::query_int(const std::string& dbname,
                                                         const std::string& sql) const {
  PGconn* c = PQconnectdb(conninfo(dbname).c_str());
  std::optional<std::int64_t> out;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult* r = PQexec(c, sql.c_str());
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
      const char* v = PQgetvalue(r, 0, 0);
      std::int64_t n = 0;
      if (std::from_chars(v, v + std::strlen(v), n).ec == std::errc{}) out = n;
    }
    PQclear(r);
  }
  PQfinish(c);
  return out;
}

std::string postgres_instance::log_text() const { return read_text_file(log_path()); }

}  // namespace flushgate::test
