// config_check_test.cpp — `flushgated --check` finds what a start would trip
// over, and a control_socket deeper than a socket address holds still works.
//
// --check loads the TLS key pair (exists, parses, matches), the
// radius_clients_file, and checks control_socket's length; each failure
// names the parameter and the file. A data_dir under a long path (control
// socket path over the 107 bytes of sun_path) must not stop the daemon, and
// the CLI must reach it.
#include "tests/integration/daemon_fixture.hpp"
#include "tests/integration/delivery_peers.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace {

using namespace flushgate::test;

// A failed --check: exit 2, and stderr names every one of `words`.
void expect_refused(const cli_result& r, const std::vector<std::string>& words) {
  EXPECT_EQ(r.exit_code, 2) << "got exit " << r.exit_code << ", want 2; stdout: " << r.out << " stderr: " << r.err;
  for (const auto& w : words) {
    EXPECT_NE(r.err.find(w), std::string::npos) << "got \"" << r.err << "\", want it to name " << w;
  }
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(ConfigCheck, GoodKeyPairAndClientsFilePass) {
  daemon_fixture daemon;
  auto pair = make_self_signed(daemon.dir(), "gw");
  write_file(daemon.dir() / "clients", "127.0.0.1 s3cret nas1\n");
  daemon.set_setting("smtpd_tls_cert_file", pair.cert.string());
  daemon.set_setting("smtpd_tls_key_file", pair.key.string());
  daemon.set_setting("radius_clients_file", (daemon.dir() / "clients").string());
  auto r = daemon.check();
  EXPECT_EQ(r.exit_code, 0) << "got exit " << r.exit_code << ", want 0; stderr: " << r.err;
  EXPECT_NE(r.out.find(": ok"), std::string::npos) << "got \"" << r.out << "\", want \"...: ok\"";
}

TEST(ConfigCheck, MismatchedKeyIsRefused) {
  daemon_fixture daemon;
  auto first = make_self_signed(daemon.dir(), "first");
  auto second = make_self_signed(daemon.dir(), "second");
  daemon.set_setting("smtpd_tls_cert_file", first.cert.string());
  daemon.set_setting("smtpd_tls_key_file", second.key.string());
  expect_refused(daemon.check(), {"smtpd_tls_key_file", second.key.string(), "does not match"});
}

TEST(ConfigCheck, MissingCertificateIsRefused) {
  daemon_fixture daemon;
  auto pair = make_self_signed(daemon.dir(), "gw");
  const auto missing = daemon.dir() / "no-such.crt";
  daemon.set_setting("smtpd_tls_cert_file", missing.string());
  daemon.set_setting("smtpd_tls_key_file", pair.key.string());
  expect_refused(daemon.check(), {"smtpd_tls_cert_file", missing.string()});
}

TEST(ConfigCheck, BadRadiusClientsFileIsRefused) {
  daemon_fixture daemon;
  const auto clients = daemon.dir() / "clients";
  write_file(clients, "127.0.0.1 s3cret nas1\nnot-an-address secret\n");
  daemon.set_setting("radius_clients_file", clients.string());
  expect_refused(daemon.check(), {"radius_clients_file", clients.string()});
}

TEST(ConfigCheck, ControlSocketNameTooLongIsRefused) {
  daemon_fixture daemon;
  daemon.set_setting("control_socket", (daemon.dir() / (std::string(100, 'c') + ".sock")).string());
  expect_refused(daemon.check(), {"control_socket", "107"});
}

TEST(ControlSocket, LongDataDirStillReachesTheDaemon) {
  daemon_fixture daemon;
  // data_dir under a 150-byte path: its control.sock is far over sun_path's 107.
  std::filesystem::path deep = daemon.dir();
  while (deep.string().size() < 150) deep /= "a-rather-long-directory-name";
  daemon.set_setting("data_dir", (deep / "data").string());
  ASSERT_GT(daemon.control_socket().string().size(), 107u) << "the test's path is too short to test anything";
  auto checked = daemon.check();
  EXPECT_EQ(checked.exit_code, 0) << "got --check refusing a long data_dir: " << checked.err;
  daemon.start();  // throws with the log when the daemon does not come up
  auto added = daemon.add_customer("demo", "demo.test");
  EXPECT_EQ(added.exit_code, 0) << "got `customer add` exit " << added.exit_code << ", want 0: " << added.err;
  auto listed = daemon.cli({"customer", "list"});
  EXPECT_NE(listed.out.find("demo"), std::string::npos) << "got `customer list`: " << listed.out << listed.err;
  EXPECT_EQ(daemon.stop(), 0) << "got a bad exit after SIGTERM; log:\n" << daemon.log_text();
}

}  // namespace
