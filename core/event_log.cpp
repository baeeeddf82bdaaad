// event_log.cpp — see event_log.hpp.
#include "core/event_log.hpp"

#include <ctime>

namespace flushgate::core {

void event_log::record(std::string kind, std::string customer, std::string text) {
  record(recent_event{static_cast<std::int64_t>(std::time(nullptr)), std::move(kind),
                      std::move(customer), std::move(text), {}});
}

void event_log::record(recent_event e) {
  std::function<void(const recent_event&)> sink;
  {
    std::lock_guard lock(mutex_);
    events_.push_back(e);
    while (events_.size() > capacity_) events_.pop_front();
    sink = sink_;
  }
  if (sink) sink(e);
}

void event_log::set_sink(std::function<void(const recent_event&)> sink) {
  std::lock_guard lock(mutex_);
  sink_ = std::move(sink);
}

std::vector<recent_event> event_log::latest(std::size_t limit) const {
  std::lock_guard lock(mutex_);
  std::vector<recent_event> out;
  for (auto it = events_.rbegin(); it != events_.rend() && out.size() < limit; ++it) {
    out.push_back(*it);
  }
  return out;
}

event_log& recent_events() {
  static event_log log;
  return log;
}

}  // namespace flushgate::core
