// service_notify.cpp — see service_notify.hpp.
#include "control/service_notify.hpp"

#include "core/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstring>

namespace flushgate::control {

namespace asio = boost::asio;

service_notifier::service_notifier(asio::io_context& io) : timer_(io) {}

void service_notifier::send(const std::string& state) {
  // unset_environment = 0: later notifications use the same socket.
  const int r = ::sd_notify(0, state.c_str());
  if (r < 0) core::log_warning("service manager: cannot send {}: {}", state, std::strerror(-r));
}

void service_notifier::ready(const std::string& status) { send("READY=1\nSTATUS=" + status); }

void service_notifier::stopping() { send("STOPPING=1\nSTATUS=shutting down"); }

void service_notifier::start_watchdog() {
  std::uint64_t usec = 0;
  if (::sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  // Half the watchdog time, as sd_watchdog_enabled(3) recommends.
  interval_ = std::chrono::microseconds(usec / 2);
  core::log_info("service manager: watchdog every {} ms", interval_.count() / 1000);
  asio::co_spawn(timer_.get_executor(), [this]() -> asio::awaitable<void> {
    for (;;) {
      send("WATCHDOG=1");
      timer_.expires_after(interval_);
      auto [ec] = co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
    }
  }, asio::detached);
}

void service_notifier::stop_watchdog() { timer_.cancel(); }

}  // namespace flushgate::control
