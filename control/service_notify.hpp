// service_notify.hpp — tells the service manager (systemd, Type=notify) where
// the daemon is in its life.
//
// Purpose: READY=1 once every listener (SMTP, ODMR, RADIUS, HTTP API and the
// control socket) listens, so that `systemctl start` returns — and a script
// that calls `flushgate` next finds the control socket; STOPPING=1 when a
// graceful shutdown begins; WATCHDOG=1 every half WATCHDOG_USEC
// (WatchdogSec=) from a timer on the network thread, so a stuck network
// thread stops the pings and the service manager restarts the daemon.
// SIGHUP only reopens the log file: it is no reload (the configuration is
// read at start only), so no RELOADING=1 is sent.
// Without NOTIFY_SOCKET (not under systemd, or another supervisor) every
// call does nothing.
// Security: sends fixed strings to the datagram socket that NOTIFY_SOCKET
// names, which only the service manager sets. Nothing is read from it.
// Errors: a failed send is logged as a warning and changes nothing else.
// See also: sd_notify(3), sd_watchdog_enabled(3), systemd.service(5).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <string>

namespace flushgate::control {

class service_notifier {
 public:
  explicit service_notifier(boost::asio::io_context& io);

  // READY=1 with a STATUS= line for `systemctl status`.
  void ready(const std::string& status);
  // STOPPING=1: a graceful shutdown has begun.
  void stopping();
  // Starts the WATCHDOG=1 pings when the service manager asked for them
  // (WATCHDOG_USEC, and WATCHDOG_PID naming this process if set).
  void start_watchdog();
  // Stops the pings (at shutdown, so io_context::run can return).
  void stop_watchdog();
  // Time between pings; zero when no watchdog was asked for.
  std::chrono::microseconds watchdog_interval() const noexcept { return interval_; }

 private:
  void send(const std::string& state);

  boost::asio::steady_timer timer_;
  std::chrono::microseconds interval_{0};
};

}  // namespace flushgate::control
