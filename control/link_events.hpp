// link_events.hpp — applying link events: the one code path for every source.
//
// Purpose: check a link event (known user, sane address, inside the user's
// allowed_net), record it durably in the store, update the router, and tell
// the scheduler, which rebinds the customer's route (queued mail included,
// backoff reset) and starts a flush when the link comes up. RADIUS answers
// the NAS only after apply_link_event returned ok (RFC 2866 §2).
// Security: an event for an unknown user, or whose address falls outside the
// user's allowed_net, changes nothing and is logged loudly (a forged Start
// must not redirect a customer's mail).
// Errors: link_event_result.ok = false with the reason.
// Callers: the control command table (`flushgate link up|down`, pppd's
// scripts), the RADIUS listener and the pcap sniffer (wired in flushgated);
// it depends only on daemon_context, never on the command table.
#pragma once

#include "control/daemon_context.hpp"
#include "linkmon/link_event.hpp"

#include <boost/asio/awaitable.hpp>

#include <string>

namespace flushgate::control {

struct link_event_result {
  bool ok = false;
  std::string error;     // why it was refused or could not be recorded
  std::string customer;  // the customer it concerned, when known
  bool changed = false;  // a link was added or removed
  // Recording failed (store trouble): a RADIUS source must not answer, so
  // that the NAS sends the event again. A refusal is final (temporary = false).
  bool temporary = false;
};

boost::asio::awaitable<link_event_result> apply_link_event(daemon_context& ctx,
                                                           const linkmon::link_event& e);

}  // namespace flushgate::control
