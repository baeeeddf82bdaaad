// fetchmail_peer.cpp — see fetchmail_peer.hpp.
#include "tests/integration/fetchmail_peer.hpp"

#include "tests/integration/delivery_peers.hpp"  // read_file

#include <fstream>

namespace flushgate::test {

std::string fetchmail_rc_text(const fetchmail_odmr_poll& p) {
  std::string rc = "set no bouncemail\nset no syslog\n";
  // Quoted: fetchmail's rc grammar takes "::1" only as a string.
  rc += "poll \"" + p.host + "\" protocol ODMR port " + std::to_string(p.port) + " timeout 30";
  // esmtpname/esmtppassword are server options: they go before "user".
  if (p.esmtp_auth) rc += " esmtpname \"" + p.user + "\" esmtppassword \"" + p.password + "\"";
  rc += "\n    user \"" + p.user + "\" password \"" + p.password + "\"\n";
  if (p.ssl) rc += "    ssl no sslcertck\n";
  rc += "    fetchdomains " + p.domains + "\n";
  rc += "    smtphost \"" + p.smtphost + "\"\n";
  return rc;
}

fetchmail_run::fetchmail_run(const std::filesystem::path& home, const std::string& rc) : home_(home) {
  std::filesystem::create_directories(home_);
  const auto rc_path = home_ / "rc";
  {
    std::ofstream out(rc_path, std::ios::trunc);
    out << rc;
  }
  // fetchmail refuses an rc file that others can read.
  std::filesystem::permissions(
      rc_path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  spawn_options options;
  options.env = {"FETCHMAILHOME=" + home_.string()};
  options.stdout_path = home_ / "transcript";
  options.stderr_path = home_ / "transcript";
  // As root fetchmail keeps its lock in /var/run whatever FETCHMAILHOME
  // says; a pidfile of its own lets two of them run at once.
  process_.emplace(std::vector<std::string>{"fetchmail", "-f", rc_path.string(), "--pidfile",
                                            (home_ / "fetchmail.pid").string(), "--nodetach",
                                            "--nosyslog", "-v"},
                   options);
}

fetchmail_result fetchmail_run::wait(std::chrono::milliseconds timeout) {
  fetchmail_result r;
  if (auto status = process_->wait_for_exit(timeout)) {
    r.exit_code = *status;
  } else {
    r.timed_out = true;
    r.exit_code = process_->kill();
  }
  r.output = read_file(home_ / "transcript");
  return r;
}

std::string describe(const fetchmail_result& r) {
  return "fetchmail exit " + std::to_string(r.exit_code) +
         (r.timed_out ? " (killed at the deadline)" : "") + "; its transcript:\n" + r.output;
}

}  // namespace flushgate::test
