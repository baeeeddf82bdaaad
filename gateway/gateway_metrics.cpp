// gateway_metrics.cpp — see gateway_metrics.hpp.
#include "gateway/gateway_metrics.hpp"

#include "core/metrics.hpp"

#include <string>

namespace flushgate::gateway {

std::string_view smtp_refusal_reason(int code, std::string_view enhanced) {
  if (enhanced == "5.7.1") return "relay_denied";
  if (enhanced == "5.1.1") return "unknown_recipient";
  if (enhanced == "4.7.1") return "suspended";
  if (enhanced == "4.3.1") return "disk_full";
  if (enhanced == "5.2.2" || enhanced == "4.2.2") return "over_quota";
  if (enhanced == "5.3.4") return "too_large";
  if (enhanced == "4.5.3") return "too_many_recipients";
  if (enhanced == "5.4.6") return "mail_loop";
  if (enhanced == "5.6.0") return "bare_cr_lf";
  if (enhanced == "5.6.7") return "non_ascii";
  if (enhanced == "4.4.2") return "timeout";
  if (enhanced == "4.3.2") return "unavailable";
  if (enhanced.starts_with("4.7.") || enhanced.starts_with("5.7.")) return "policy";
  if (enhanced == "4.3.0" || code == 451) return "local_error";
  if (enhanced.starts_with("5.5.") || enhanced.starts_with("5.1.") || code == 500 || code == 501 ||
      code == 503 || code == 555) {
    return "syntax";
  }
  return "other";
}

void count_smtp_connection(std::string_view result) {
  core::metrics()
      .counter_for("flushgate_smtp_connections_total", "SMTP connections, by what became of them.",
                   {{"result", std::string(result)}})
      .add();
}

void count_smtp_refusal(int code, std::string_view enhanced) {
  core::metrics()
      .counter_for("flushgate_smtp_refusals_total",
                   "SMTP replies that refused something (4xx/5xx), by reason.",
                   {{"reason", std::string(smtp_refusal_reason(code, enhanced))}})
      .add();
}

void count_message_accepted(std::uint64_t bytes) {
  static auto& messages = core::metrics().counter_for(
      "flushgate_messages_accepted_total", "Messages acknowledged with 250 after the commit.");
  static auto& octets = core::metrics().counter_for(
      "flushgate_message_bytes_accepted_total", "Bytes of the messages acknowledged with 250.");
  messages.add();
  octets.add(bytes);
}

void count_delivery(std::string_view outcome, std::uint64_t recipients) {
  core::metrics()
      .counter_for("flushgate_deliveries_total",
                   "Recipients whose delivery attempt was recorded, by outcome.",
                   {{"outcome", std::string(outcome)}})
      .add(recipients);
}

void count_link_connection(std::string_view family, std::string_view which) {
  core::metrics()
      .counter_for("flushgate_link_connections_total",
                   "Connections to customers' servers over their links, by address family and "
                   "whether the route's first address answered or its fallback.",
                   {{"family", std::string(family)}, {"address", std::string(which)}})
      .add();
}

void count_recipient_probe(std::string_view result) {
  core::metrics()
      .counter_for("flushgate_recipient_probes_total",
                   "Recipient verification callouts to customers' servers, by verdict.",
                   {{"result", std::string(result)}})
      .add();
}

void count_dsn_queued(std::string_view kind, std::uint64_t notices) {
  core::metrics()
      .counter_for("flushgate_dsns_queued_total",
                   "Delivery status notifications queued for senders, by kind.",
                   {{"kind", std::string(kind)}})
      .add(notices);
}

void observe_flush(std::string_view result, double seconds) {
  static auto& duration = core::metrics().histogram_for(
      "flushgate_flush_duration_seconds", "Delivery runs that tried mail, by duration.",
      {0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600});
  duration.observe(seconds);
  core::metrics()
      .counter_for("flushgate_flushes_total", "Delivery runs that tried mail, by how they ended.",
                   {{"result", std::string(result)}})
      .add();
}

}  // namespace flushgate::gateway
