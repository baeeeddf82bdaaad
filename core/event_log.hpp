// event_log.hpp — the last things that happened, for the operator's eyes.
//
// Purpose: a bounded, in-memory list of recent events (a link came up, a
// flush ended, a customer was changed, a DSN was queued) that the status
// page and `GET /api/v1/events` show, newest first. The log file remains the
// record; this is the "what just happened" view. In a cluster the daemon
// also hands every event to a sink (set_sink) that keeps it in the shared
// store, where it outlives a restart and the nodes see each other's
// (queue::store::record_event); this list is the fallback when the store
// cannot be read.
// Security: texts may carry peer-supplied names (RADIUS user names); they
// are stored as given and escaped by whoever renders them.
// Errors: none; the oldest event is dropped when the list is full.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace flushgate::core {

struct recent_event {
  std::int64_t time = 0;  // unix seconds
  std::string kind;       // link_up, link_down, link_refused, flush_done, flush_failed, customer_changed, dsn_queued
  std::string customer;   // "" when none
  std::string text;       // one line, plain words
  std::string node;       // the node it happened on ("" : this one)
};

class event_log {
 public:
  explicit event_log(std::size_t capacity = 200) : capacity_(capacity) {}
  // Appends an event stamped now; safe from any thread.
  void record(std::string kind, std::string customer, std::string text);
  // Appends an event as given (tests, replays).
  void record(recent_event e);
  // Up to `limit` events, newest first.
  std::vector<recent_event> latest(std::size_t limit) const;
  // Called with every event recorded from now on, outside the list's lock,
  // on the recording thread; nullptr: none.
  void set_sink(std::function<void(const recent_event&)> sink);

 private:
  std::function<void(const recent_event&)> sink_;  // guarded by mutex_ (copied out to call)
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<recent_event> events_;
};

// The process-wide list.
event_log& recent_events();

}  // namespace flushgate::core
