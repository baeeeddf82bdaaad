// config_table.cpp — the one table of flushgated's parameters.
//
// Each parameter is defined here once; the README table and `flushgate config
// show` are rendered from it (config.hpp). Rules for a new row: the name is a
// noun with its module first (smtpd_, smtp_, queue_, control_, log_), the
// default carries its unit ("300s", "10M"), the doc is one line, and bounds
// come from the RFC where one sets them. Keep rows grouped by module in the
// order the README shows them.
#include "core/config.hpp"
#include "core/ip_network.hpp"
#include "core/units.hpp"

namespace flushgate::core {
namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

// myhostname: a domain name as it goes into the banner, EHLO and Received:.
// '_' is tolerated because some systems' host names carry it.
bool check_host_name(std::string_view value, std::string& why) {
  for (char c : value) {
    if (!is_name_char(c)) {
      why = "bad host name \"" + std::string(value) + "\" (letters, digits, '-' and '.')";
      return false;
    }
  }
  return true;
}

// run_user / control_group: a user or group name for getpwnam(3)/getgrnam(3).
bool check_account_name(std::string_view value, std::string& why) {
  for (char c : value) {
    if (!is_name_char(c)) {
      why = "bad user or group name \"" + std::string(value) + "\"";
      return false;
    }
  }
  return true;
}

// log_target: "stderr", "syslog" or an absolute file path (the daemon may
// chdir, so a relative path would move).
bool check_log_target(std::string_view value, std::string& why) {
  if (value == "stderr" || value == "syslog" || value.front() == '/') return true;
  why = "bad log target \"" + std::string(value) + "\" (stderr, syslog or an absolute path)";
  return false;
}

// Calls `fn` on each item of a comma- or space-separated list (empty items
// skipped) until it returns false; false when it did.
template <typename Fn>
bool each_list_item(std::string_view value, Fn fn) {
  std::size_t pos = 0;
  while (pos < value.size()) {
    const std::size_t end = value.find_first_of(", \t", pos);
    const std::string_view item =
        value.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    pos = end == std::string_view::npos ? value.size() : end + 1;
    if (!item.empty() && !fn(item)) return false;
  }
  return true;
}

// smtp_self_addresses: addresses or CIDR networks, IPv4 or IPv6; may be empty.
bool check_network_list(std::string_view value, std::string& why) {
  return each_list_item(value, [&](std::string_view item) {
    if (parse_ip_network(item)) return true;
    why = "bad network \"" + std::string(item) + "\" in list (an IPv4 or IPv6 address, optionally /PREFIX)";
    return false;
  });
}

}  // namespace

bool check_duration_list(std::string_view value, std::string& why) {
  std::size_t items = 0;
  const bool good = each_list_item(value, [&](std::string_view item) {
    const auto d = parse_duration(item);
    if (!d || d->count() <= 0) {
      why = "bad duration \"" + std::string(item) +
            "\" in list (a number greater than 0 with s, m, h, d or w)";
      return false;
    }
    ++items;
    return true;
  });
  if (!good) return false;
  if (items == 0) {
    why = "empty list of durations";
    return false;
  }
  return true;
}

const std::vector<param>& parameter_table() {
  using k = param_kind;
  static const std::vector<param> table{
      // --- general -------------------------------------------------------------
      {.name = "myhostname",
       .kind = k::string,
       .default_value = "",
       .doc = "This host's name in the banner, EHLO and Received: headers; \"\" = the system's "
              "host name.",
       .check = check_host_name},
      {.name = "data_dir",
       .kind = k::path,
       .default_value = "/var/lib/flushgate",
       .doc = "Directory holding the queue database, the spool and the control socket."},
      {.name = "run_user",
       .kind = k::string,
       .default_value = "",
       .doc = "User the daemon runs as after binding its ports when started as root; \"\" = do not "
              "drop privileges.",
       .check = check_account_name},
      {.name = "log_target",
       .kind = k::string,
       .default_value = "stderr",
       .doc = "Where log lines go: stderr, syslog or an absolute file path.",
       .check = check_log_target},
      {.name = "log_level",
       .kind = k::choice,
       .default_value = "info",
       .doc = "Least severe level that is logged.",
       .choices = "debug|info|warning|error"},
      {.name = "control_socket",
       .kind = k::path,
       .default_value = "$data_dir/control.sock",
       .doc = "Unix socket the flushgate command talks to."},
      {.name = "control_group",
       .kind = k::string,
       .default_value = "",
       .doc = "Group whose members may use the control socket; \"\" = only root and the daemon's "
              "user.",
       .check = check_account_name},
      {.name = "admin_listen",
       .kind = k::listen_list,
       .default_value = "127.0.0.1:8025",
       .doc = "Where the HTTP API, /metrics and the status page listen; \"\" = off. Keep it on "
              "loopback (or behind a reverse proxy with TLS): the token travels in clear.",
       .may_be_empty = true},
      {.name = "admin_token_file",
       .kind = k::path,
       .default_value = "$data_dir/admin.token",
       .doc = "The HTTP API's token (one line); created with a random token, mode 0640 and group "
              "control_group when missing. Refused when other users can read it."},
      {.name = "admin_timeout",
       .kind = k::duration,
       .default_value = "10s",
       .doc = "Limit for reading one HTTP request and for the command it runs.",
       .min = 1,
       .max = 600},

      // --- SMTP server (smtpd) ---------------------------------------------------
      {.name = "smtpd_listen",
       .kind = k::listen_list,
       .default_value = "0.0.0.0:25",
       .doc =
           "Addresses the SMTP server listens on: host:port or [ipv6]:port, separated by commas."},
      {.name = "smtpd_banner",
       .kind = k::string,
       .default_value = "$myhostname ESMTP flushgate",
       .doc = "Text after \"220 \" in the greeting; RFC 5321 wants this host's name first."},
      {.name = "smtpd_timeout",
       .kind = k::duration,
       .default_value = "300s",
       .doc = "How long to wait for the client's next command (RFC 5321 4.5.3.2.7 suggests 5m).",
       .min = 1},
      {.name = "smtpd_data_timeout",
       .kind = k::duration,
       .default_value = "180s",
       .doc = "How long to wait for each chunk of message text during DATA.",
       .min = 1},
      {.name = "smtpd_session_timeout",
       .kind = k::duration,
       .default_value = "3600s",
       .doc = "Longest time one SMTP session may last, whatever the client does.",
       .min = 1},
      {.name = "smtpd_min_data_rate",
       .kind = k::count,
       .default_value = "1024",
       .doc = "Bytes/s a client must average during DATA; slower DATA is cut off; 0 disables."},
      {.name = "smtpd_reverse_lookup_timeout",
       .kind = k::duration,
       .default_value = "5s",
       .doc = "How long after connect a message waits at most for the client's reverse name "
              "(forwarded with XFORWARD); it is looked up while the session goes on. 0 = no "
              "lookup.",
       .min = 0},
      {.name = "smtpd_command_line_limit",
       .kind = k::count,
       .default_value = "512",
       .doc = "Longest command line in bytes with CRLF (RFC 5321 4.5.3.1.4).",
       .min = 512,
       .max = 65536},
      {.name = "smtpd_text_line_limit",
       .kind = k::count,
       .default_value = "1000",
       .doc = "Longest message text line in bytes with CRLF (RFC 5321 4.5.3.1.6).",
       .min = 1000,
       .max = 1000000},
      {.name = "message_size_limit",
       .kind = k::size,
       .default_value = "10M",
       .doc = "Largest message accepted, announced with the SIZE extension (RFC 1870).",
       .min = 64 * 1024},
      {.name = "smtpd_recipient_limit",
       .kind = k::count,
       .default_value = "1000",
       .doc = "Most recipients accepted per message (RFC 5321 4.5.3.1.8).",
       .min = 100},
      {.name = "smtpd_max_connections",
       .kind = k::count,
       .default_value = "500",
       .doc = "Most SMTP sessions at once; further clients get 421.",
       .min = 1},
      {.name = "smtpd_max_connections_per_client",
       .kind = k::count,
       .default_value = "20",
       .doc = "Most SMTP sessions at once from one client address.",
       .min = 1},
      {.name = "smtpd_error_limit",
       .kind = k::count,
       .default_value = "20",
       .doc = "Error replies (5xx) after which a session is closed with 421.",
       .min = 1},
      {.name = "smtpd_shutdown_grace",
       .kind = k::duration,
       .default_value = "30s",
       .doc = "How long sessions may finish on shutdown before they are cut off."},
      {.name = "max_hops",
       .kind = k::count,
       .default_value = "100",
       .doc = "Received: headers a message may carry before it is refused with 554 5.4.6 (a loop).",
       .min = 10},
      {.name = "smtpd_tls_cert_file",
       .kind = k::path,
       .default_value = "",
       .doc = "PEM certificate chain for STARTTLS; \"\" = no STARTTLS."},
      {.name = "smtpd_tls_key_file",
       .kind = k::path,
       .default_value = "",
       .doc = "PEM private key for smtpd_tls_cert_file; \"\" = no STARTTLS."},

      // --- ETRN and ODMR --------------------------------------------------------
      {.name = "odmr_listen",
       .kind = k::listen_list,
       .default_value = "",
       .doc = "Addresses of the ODMR port (RFC 2645; 366 in production), with STARTTLS; \"\" = off."},
      {.name = "odmrs_listen",
       .kind = k::listen_list,
       .default_value = "",
       .doc = "Addresses of an ODMR port with TLS from the first byte (fetchmail's `ssl`); "
              "needs smtpd_tls_cert_file; \"\" = off."},
      {.name = "odmr_max_connections",
       .kind = k::count,
       .default_value = "100",
       .doc = "ODMR connections at the same time, at most.",
       .min = 1},
      {.name = "etrn_min_interval",
       .kind = k::duration,
       .default_value = "30s",
       .doc = "An ETRN for a customer within this time of the last one starts no new flush "
              "(it is still answered).",
       .min = 0},
      {.name = "etrn_report_empty",
       .kind = k::boolean,
       .default_value = "no",
       .doc = "Answer ETRN for an empty queue with 251 (RFC 1985) instead of 250; fetchmail "
              "stops asking for further domains after a 251."},
      // --- recipient checks (customer add/set --recipient-check) ----------------
      {.name = "recipient_delimiter",
       .kind = k::string,
       .default_value = "+",
       .doc = "Subaddress delimiter: \"user+tag@d\" matches \"user@d\" on a recipient list and among "
              "known addresses; \"\" = none."},
      {.name = "recipient_known_max",
       .kind = k::count,
       .default_value = "50000",
       .doc = "Known addresses kept per customer (learn/verify); beyond it the oldest known-bad, "
              "then the oldest known-good are forgotten.",
       .min = 100},
      {.name = "recipient_good_lifetime",
       .kind = k::duration,
       .default_value = "90d",
       .doc = "A known-good address is forgotten this long after the customer's server last took it.",
       .min = 60},
      {.name = "recipient_bad_lifetime",
       .kind = k::duration,
       .default_value = "1d",
       .doc = "A known-bad address is forgotten this long after the customer's server last refused it.",
       .min = 60},
      {.name = "recipient_probe_timeout",
       .kind = k::duration,
       .default_value = "10s",
       .doc = "A callout (verify) gets this long, connection included; after it the RCPT is "
              "answered as for an address not known.",
       .min = 1,
       .max = 600},
      {.name = "recipient_probes_per_minute",
       .kind = k::count,
       .default_value = "60",
       .doc = "Callouts per customer per minute at most; more are answered as not known.",
       .min = 1},
      // --- link monitor (RADIUS accounting, pcap) -------------------------------
      {.name = "radius_listen",
       .kind = k::listen_list,
       .default_value = "",
       .doc = "UDP addresses for RADIUS accounting from the NASes (1813 in production), e.g. "
              "`0.0.0.0:1813, [::]:1813` (an IPv6 address listens IPv6-only); \"\" = off."},
      {.name = "radius_clients_file",
       .kind = k::path,
       .default_value = "",
       .doc = "NAS clients, one per line: SOURCE-ADDRESS[/PREFIX] SHARED-SECRET [NAME]; "
              "needed by radius_listen and the pcap sniffer. Keep it mode 0600."},
      {.name = "pcap_interface",
       .kind = k::string,
       .default_value = "",
       .doc = "Sniff RADIUS accounting sent to another server on this interface (libpcap); \"\" = off."},
      {.name = "pcap_file",
       .kind = k::path,
       .default_value = "",
       .doc = "Replay RADIUS accounting from this capture file once at start (tests, recovery)."},
      {.name = "pcap_filter",
       .kind = k::string,
       .default_value = "udp port 1813 or udp port 1646",
       .doc = "BPF filter for the sniffer (both directions: requests and responses)."},
      {.name = "pcap_require_response",
       .kind = k::boolean,
       .default_value = "yes",
       .doc = "Act on a sniffed request only after the RADIUS server's valid response was seen."},

      // --- hooks ---------------------------------------------------------------
      {.name = "hooks_dir",
       .kind = k::path,
       .default_value = "",
       .doc = "Directory of operator hooks: executables in <event>.d/ and any.d/ run on "
              "link-up, link-down, route-changed, flush-done, flush-failed; \"\" = off."},
      {.name = "hooks_timeout",
       .kind = k::duration,
       .default_value = "30s",
       .doc = "A hook still running after this is stopped (SIGTERM, then SIGKILL).",
       .min = 1},
      {.name = "hooks_max_output",
       .kind = k::size,
       .default_value = "4k",
       .doc = "Output of one hook run that goes into the log; the rest is discarded.",
       .min = 0},
      {.name = "hooks_max_running",
       .kind = k::count,
       .default_value = "8",
       .doc = "Hook processes at the same time, at most; more wait their turn.",
       .min = 1},

      // --- queue ---------------------------------------------------------------
      {.name = "store",
       .kind = k::choice,
       .default_value = "sqlite",
       .doc = "Where the queue lives: sqlite (a file in data_dir, one node) or postgresql "
              "(postgresql_conninfo, shared by several nodes).",
       .choices = "sqlite|postgresql"},
      {.name = "postgresql_conninfo",
       .kind = k::string,
       .default_value = "",
       .doc = "libpq connection string or URI of the queue database (store = postgresql); "
              "keep the password in a passfile, not here (it is masked when shown).",
       .shown = mask_conninfo_password},
      {.name = "node_name",
       .kind = k::string,
       .default_value = "$myhostname",
       .doc = "This node's name in a shared queue database (its queue ids carry its number); "
              "unique per node.",
       .check = check_host_name},
      {.name = "cluster_lease_time",
       .kind = k::duration,
       .default_value = "15s",
       .doc = "How long a node's delivery lease on a customer lasts unless renewed (every third "
              "of it); after a node dies, another delivers its customers once this has passed.",
       .min = 3},
      {.name = "cluster_sync_interval",
       .kind = k::duration,
       .default_value = "5s",
       .doc = "How often a node of a cluster reconciles its view (customers, links, retry state, "
              "queued mail) with the shared store and records its heartbeat; signals between "
              "nodes make most changes arrive at once, this catches what a lost one missed.",
       .min = 1},
      {.name = "queue_min_free",
       .kind = k::size,
       .default_value = "100M",
       .doc = "Free disk space under data_dir below which new mail gets 452 4.3.1."},
      {.name = "queue_commit_batch",
       .kind = k::count,
       .default_value = "256",
       .doc = "Most messages made durable in one group commit.",
       .min = 1},
      {.name = "queue_lifetime",
       .kind = k::duration,
       .default_value = "5d",
       .doc = "How long undeliverable mail is retried before it is bounced."},
      {.name = "delay_warning_time",
       .kind = k::duration,
       .default_value = "4h",
       .doc = "Delay after which the sender gets a delay notice; 0 disables."},

      // --- delivery (SMTP client) -----------------------------------------------
      {.name = "smtp_connect_timeout",
       .kind = k::duration,
       .default_value = "30s",
       .doc = "How long to wait for a TCP connection to the next hop.",
       .min = 1},
      {.name = "smtp_helo_timeout",
       .kind = k::duration,
       .default_value = "300s",
       .doc = "How long to wait for the greeting and the reply to EHLO/HELO.",
       .min = 1},
      {.name = "smtp_mail_timeout",
       .kind = k::duration,
       .default_value = "300s",
       .doc = "How long to wait for the reply to MAIL FROM (RFC 5321 4.5.3.2.2).",
       .min = 1},
      {.name = "smtp_rcpt_timeout",
       .kind = k::duration,
       .default_value = "300s",
       .doc = "How long to wait for the reply to RCPT TO (RFC 5321 4.5.3.2.3).",
       .min = 1},
      {.name = "smtp_data_init_timeout",
       .kind = k::duration,
       .default_value = "120s",
       .doc = "How long to wait for the 354 reply to DATA (RFC 5321 4.5.3.2.4).",
       .min = 1},
      {.name = "smtp_data_block_timeout",
       .kind = k::duration,
       .default_value = "180s",
       .doc = "How long each write of message text may take (RFC 5321 4.5.3.2.5).",
       .min = 1},
      {.name = "smtp_data_done_timeout",
       .kind = k::duration,
       .default_value = "600s",
       .doc = "How long to wait for the reply after the final dot (RFC 5321 4.5.3.2.6).",
       .min = 1},
      {.name = "smtp_tls",
       .kind = k::choice,
       .default_value = "may",
       .doc = "STARTTLS toward the next hop: may = when offered, encrypt = always, verify = "
              "always, with a valid certificate.",
       .choices = "none|may|encrypt|verify"},
      {.name = "smtp_tls_ca_file",
       .kind = k::path,
       .default_value = "",
       .doc = "PEM CA certificates for smtp_tls = verify; \"\" = the system's store."},
      {.name = "dns_servers",
       .kind = k::listen_list,
       .default_value = "",
       .doc = "DNS servers as host:port (e.g. 127.0.0.1:5353); \"\" = those of /etc/resolv.conf."},
      {.name = "bounce_relay",
       .kind = k::string,
       .default_value = "",
       .doc = "Host that delivery status notifications go through; \"\" = the sender's MX."},
      {.name = "retry_schedule",
       .kind = k::string,
       .default_value = "5m,10m,30m,1h,2h,3h",
       .doc = "Waits between delivery attempts, in order; the last one repeats.",
       .check = check_duration_list},
      {.name = "smtp_connections_per_customer",
       .kind = k::count,
       .default_value = "1",
       .doc = "Connections one customer's delivery uses at once over a DSL link, a host route or MX.",
       .min = 1,
       .max = 20},
      {.name = "smtp_dialup_connections",
       .kind = k::count,
       .default_value = "1",
       .doc = "Connections at once over a dial-up link (one connection with pipelining fills a thin line best).",
       .min = 1,
       .max = 20},
      {.name = "queue_sweep_interval",
       .kind = k::duration,
       .default_value = "60s",
       .doc = "How often the queue is checked for mail due a delay notice or past queue_lifetime.",
       .min = 1},
      {.name = "delivery_max_runs",
       .kind = k::count,
       .default_value = "20",
       .doc = "Customers whose queues are delivered at the same time, at most (one connection each).",
       .min = 1,
       .max = 10000},
      {.name = "smtp_self_names",
       .kind = k::string,
       .default_value = "$myhostname",
       .doc = "Names (comma or space separated) under which this gateway appears in MX lists; "
              "MX hosts at or below its preference are never tried (no mail loops)."},
      {.name = "smtp_self_addresses",
       .kind = k::string,
       .default_value = "",
       .doc = "Networks (CIDR, IPv4 or IPv6, comma or space separated) holding this gateway's public "
              "addresses, e.g. behind NAT or when listening on 0.0.0.0; an MX host with an address in "
              "them is this gateway. Bound listener addresses count anyway.",
       .check = check_network_list},
  };
  return table;
}

}  // namespace flushgate::core
