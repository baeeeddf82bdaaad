// dns_doctor.hpp — explains in plain words what is wrong with a domain's mail DNS.
//
// Purpose: behind `flushgate doctor DOMAIN`. Asks the gateway's own resolver
// (the `dns_servers` of mx_options, the same view the MX resolver has) for
// the domain's MX records, its own A/AAAA and every MX host's A/AAAA, then
// compares what it found with what the gateway knows of the domain's
// customer. The gateway is recognised as mx_options says (names, bound
// addresses, smtp_self_addresses networks). Each finding has a level, a
// stable code and a text for an ISP
// operator that names the record and says the fix. Checked:
//   mx-is-cname, mx-is-ip-address, mx-bad-name, mx-host-no-address,
//   mx-host-lookup-failed, no-mx-no-address, implicit-mx, null-mx,
//   null-mx-customer, null-mx-mixed, domain-not-found, domain-invalid,
//   gateway-mx-no-customer, gateway-mx-customer-disabled, customer-suspended,
//   gateway-preferred-over-customer, route-mx-loops,
//   backup-mx-no-recipient-list, gateway-not-in-mx, and ok/note summaries
//   (mx-hosts-ok, gateway-backup-mx, gateway-only-mx, gateway-primary-mx,
//   not-a-customer, customer-disabled, mx-too-many); dns-lookup-failed and
//   resolver-config when the check could not be completed.
//
// Design: its own short-lived c-ares channel per call, driven by Asio on a
// strand of the given executor (sockets are watched for readiness, never
// read by Asio), queried in two rounds: MX+A+AAAA of the domain, then
// A+AAAA of every MX host in parallel. Nothing blocks the calling thread.
//
// Security: every answer is untrusted. At most `max_mx_records` MX hosts
// (the best ones) and `max_addresses_per_host` addresses per host are used;
// each round is cut off after timeout × tries × servers, so a call takes at
// most twice that; every loop is bounded in count. Queries go only to the
// configured servers (/etc/hosts is never read). Names from answers appear
// in the texts as c-ares expanded them (non-printable octets escaped).
//
// Errors: none as values: a DNS failure or timeout becomes a finding
// (dns-lookup-failed, mx-host-lookup-failed), a bad resolver configuration
// the finding resolver-config. Exceptions only for bugs.
//
// Limitations: no DNSSEC, no SPF/DKIM/DMARC, no reachability test of port
// 25; a CNAME is recognised only when the server returns it in the answer.
//
// See also: RFC 5321 §5.1, RFC 2181 §10.3, RFC 7505, RFC 1035 §3.3.9,
// gateway/dns/mx_resolver.hpp (mx_options), ARCHITECTURE.md invariant 3.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/dns/mx_resolver.hpp"
#include "queue/store.hpp"

namespace flushgate::gateway {

// What the gateway knows of the domain's customer, copied before any co_await.
struct doctor_customer {
  std::string name;
  queue::customer_state state = queue::customer_state::enabled;
  queue::delivery_mode mode = queue::delivery_mode::relay;
  std::string route;  // as queue::customer::route: "host[:port]", "mx", "" (none)
  bool has_recipient_list = false;  // any recipient check but "any": a list, learn or verify
};

enum class doctor_level { ok, note, warning, error };

struct doctor_finding {
  doctor_level level = doctor_level::ok;
  std::string code;  // stable id, e.g. "mx-is-cname"
  std::string text;  // plain words for an operator, with the fix
};

struct doctor_report {
  std::string domain;                    // lower case, no trailing dot
  std::vector<std::string> mx_lines;     // "10 mail.example.net. (192.0.2.7)", best first
  std::vector<doctor_finding> findings;  // errors first, then warnings, notes, ok
};

// The fields of `c` the doctor reads.
doctor_customer make_doctor_customer(const queue::customer& c);

// Queries DNS through `dns` and diagnoses `domain` against `customer` (nullopt: no customer owns
// it).
boost::asio::awaitable<doctor_report> diagnose_domain(boost::asio::any_io_executor ex,
                                                      mx_options dns, std::string domain,
                                                      std::optional<doctor_customer> customer);

// "ok", "note", "warning", "error".
std::string_view to_string(doctor_level level) noexcept;

// The most severe level in `report` (ok when it has no findings).
doctor_level worst_level(const doctor_report& report) noexcept;

// The report as lines of text, as `flushgate doctor` prints it.
std::string format_report(const doctor_report& report);

}  // namespace flushgate::gateway
