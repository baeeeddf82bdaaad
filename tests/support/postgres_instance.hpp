// postgres_instance.hpp — a private PostgreSQL 15 server for tests.
//
// Purpose: the database of postgres_store's tests and of the daemon's
// integration test on PostgreSQL. The cluster lives in its own temp dir
// (initdb as the `postgres` user: the server refuses root), listens on a
// unix socket in that directory and on a free 127.0.0.1 port, and is
// stopped (pg_ctl, else SIGKILL to the postmaster's PID) by the destructor.
// initdb runs with --no-sync (set-up speed), once per build tree: later
// instances copy the pristine cluster it made (template_dir()); the server
// keeps fsync = on,
// so commits are as durable as in production. The cluster is SQL_ASCII with
// the C locale, as the README recommends for the queue database.
// stop_immediate() is PostgreSQL's own kill -9 (pg_ctl -m immediate), and
// start() brings the same cluster back on the same port: the connection-loss
// tests use the pair.
// Security: trust authentication for the local user `flushgate`; listens on
// loopback and a socket in a 0700 directory only.
// Errors: start() throws std::runtime_error with the server log's tail (a
// start-up failure). Queries return nullopt/false on any error.
// See also: shared/TESTBED.md (PostgreSQL), queue/postgres_store.hpp.
#pragma once

#include "tests/support/temp_dir.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace flushgate::test {

class postgres_instance {
 public:
  // True when initdb is installed and we are root (runuser to postgres).
  static bool available();
  // Why available() is false, for GTEST_SKIP.
  static std::string unavailable_reason();

  postgres_instance();
  ~postgres_instance();  // stops the server
  postgres_instance(const postgres_instance&) = delete;
  postgres_instance& operator=(const postgres_instance&) = delete;

  // initdb on the first call, then starts the server and waits until it answers.
  void start();
  // pg_ctl stop -m immediate: the server dies as in a crash; true when it is down.
  bool stop_immediate();

  std::uint16_t port() const noexcept { return port_; }
  const std::filesystem::path& socket_dir() const noexcept { return dir_.path(); }
  // A libpq keyword conninfo for database `dbname` over the unix socket.
  std::string conninfo(const std::string& dbname) const;
  // The same over TCP to 127.0.0.1:port.
  std::string tcp_conninfo(const std::string& dbname) const;

  // CREATE DATABASE with a fresh name (db1, db2, ...); the name, or nullopt.
  std::optional<std::string> create_database();
  // Runs sql in dbname; true on success.
  bool exec(const std::string& dbname, const std::string& sql) const;
  // The first column of the first row of sql as an integer, or nullopt.
  std::optional<std::int64_t> query_int(const std::string& dbname, const std::string& sql) const;
  // The server log so far.
  std::string log_text() const;
  // Where a pristine cluster is kept for later instances (in the build tree); empty: none.
  static std::filesystem::path template_dir();

 private:
  std::filesystem::path data_dir() const { return dir_.path() / "data"; }
  std::filesystem::path log_path() const { return dir_.path() / "server.log"; }
  void stop_quietly();
  // A fresh cluster in data_dir(): a copy of template_dir(), or initdb (then kept there).
  void initialise();

  temp_dir dir_;
  std::uint16_t port_ = 0;
  bool initialised_ = false;
  bool running_ = false;
  int next_database_ = 1;
};

}  // namespace flushgate::test
