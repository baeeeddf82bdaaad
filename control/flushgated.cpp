// flushgated — the flushgate daemon.
//
//   flushgated --config FILE     run in the foreground (the way a supervisor wants it)
//   flushgated --config FILE --check   validate the configuration (and load the
//                                      TLS key pair and radius_clients_file) and exit
//   flushgated --params          print the parameter table (Markdown) and exit
//   flushgated --params-man      print the flushgated.cf(5) man page (roff) and exit
//
// Start-up order: read and validate the configuration (refuse to start on any
// error, naming file and line); bind every listener (SMTP and ODMR bound, not
// yet listening); drop privileges to run_user when started as root; open the
// store; load customers; create the control socket; only then let SMTP and
// ODMR listen, so a client that reached port 25 can also reach `flushgate`;
// tell the service manager READY=1 (service_notify.hpp); serve.
// SIGTERM/SIGINT: STOPPING=1, graceful shutdown (smtp_server::shutdown), then exit 0.
// SIGHUP: reopen the log file (no reload, so no RELOADING=1).
#include "control/cluster_sync.hpp"
#include "control/commands.hpp"
#include "control/control_server.hpp"
#include "control/http_api.hpp"
#include "core/event_log.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/units.hpp"
#include "core/ip_network.hpp"
#include "core/unix_address.hpp"
#include "gateway/customer_directory.hpp"
#include "gateway/flush/delivery.hpp"
#include "gateway/dns/mx_resolver.hpp"
#include "gateway/inbound/odmr_server.hpp"
#include "gateway/flush/router.hpp"
#include "gateway/flush/lease_keeper.hpp"
#include "gateway/flush/scheduler.hpp"
#include "gateway/inbound/smtp_server.hpp"
#include "control/link_events.hpp"
#include "control/recipient_checks.hpp"
#include "gateway/flush/recipient_probe.hpp"
#include "control/nas_clients.hpp"
#include "control/service_notify.hpp"
#include "linkmon/hooks.hpp"
#include "linkmon/pcap_sniffer.hpp"
#include "linkmon/radius_listener.hpp"
#include "queue/disk_guard.hpp"
#include "queue/postgres_store.hpp"
#include "queue/space_watch.hpp"
#include "queue/sqlite_store.hpp"
#include "queue/store_worker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>

namespace asio = boost::asio;
using namespace flushgate;
using namespace std::chrono_literals;

namespace {

int usage() {
  std::cerr << "usage: flushgated --config FILE [--check]\n"
               "       flushgated --params\n"
               "       flushgated --params-man\n";
  return 2;
}

std::string system_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// The queue backend the configuration names (store = sqlite | postgresql).
boost::system::result<std::unique_ptr<queue::store>> open_store(const core::config& cfg,
                                                                const std::string& data_dir) {
  if (cfg.text("store") == "postgresql") {
    queue::postgres_options o;
    o.conninfo = cfg.text("postgresql_conninfo");
    o.node_name = cfg.text("node_name");
    auto opened = queue::postgres_store::open(std::move(o));
    if (!opened) return opened.error();
    return std::unique_ptr<queue::store>(std::move(*opened));
  }
  auto opened = queue::sqlite_store::open(data_dir);
  if (!opened) return opened.error();
  return std::unique_ptr<queue::store>(std::move(*opened));
}

// Which store, for --check and logs; the conninfo's password is masked.
std::string describe_store(const core::config& cfg) {
  if (cfg.text("store") == "postgresql") {
    const std::string conninfo = core::mask_conninfo_password(cfg.text("postgresql_conninfo"));
    return "postgresql (" + (conninfo.empty() ? std::string("libpq defaults") : conninfo) +
           "), node " + cfg.text("node_name");
  }
  return "sqlite in " + cfg.text("data_dir") + "/queue.db";
}

// Creates data_dir (mode 0750) and hands it to the run user; its group is
// control_group when one is set, so that the admin group can reach the
// control socket and the admin token inside it (the files themselves stay
// the run user's: umask 027 and their own modes keep the queue private).
bool prepare_data_dir(const std::string& dir, const passwd* run_as, const group* admins,
                      std::string& error) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    error = "data_dir " + dir + ": " + ec.message();
    return false;
  }
  ::chmod(dir.c_str(), 0750);
  const gid_t dir_group = admins != nullptr ? admins->gr_gid : run_as != nullptr ? run_as->pw_gid : static_cast<gid_t>(-1);
  if (run_as != nullptr && ::chown(dir.c_str(), run_as->pw_uid, dir_group) != 0) {
    error = "data_dir " + dir + ": cannot give it to " + run_as->pw_name + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

// Keeps one supplementary group, control_group, so that the daemon can give
// the control socket to it; every other group of root is dropped.
bool drop_privileges(const passwd* run_as, const group* admins, std::string& error) {
  const gid_t keep = admins != nullptr ? admins->gr_gid : 0;
  if (::setgroups(admins != nullptr ? 1 : 0, admins != nullptr ? &keep : nullptr) != 0 ||
      ::setgid(run_as->pw_gid) != 0 ||
      ::setuid(run_as->pw_uid) != 0) {
    error = std::string("cannot drop privileges to ") + run_as->pw_name + ": " + std::strerror(errno);
    return false;
  }
  if (::setuid(0) == 0) {
    error = "privileges were not dropped (setuid(0) still works)";
    return false;
  }
  return true;
}

std::unique_ptr<asio::ssl::context> make_tls_context(const core::config& cfg, std::string& error) {
  std::string cert = cfg.text("smtpd_tls_cert_file");
  std::string key = cfg.text("smtpd_tls_key_file");
  if (cert.empty() && key.empty()) return nullptr;
  if (cert.empty() || key.empty()) {
    error = "smtpd_tls_cert_file and smtpd_tls_key_file must be set together";
    return nullptr;
  }
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert, ec);
  if (ec) {
    error = "smtpd_tls_cert_file " + cert + ": " + ec.message();
    return nullptr;
  }
  // A renewed certificate with the old key (or the reverse) is found here,
  // not at the first STARTTLS: OpenSSL compares the key with the certificate
  // as it loads the key.
  ctx->use_private_key_file(key, asio::ssl::context::pem, ec);
  const bool mismatch = ec && ec.category() == asio::error::get_ssl_category() &&
                        ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH;
  if (ec && !mismatch) {
    error = "smtpd_tls_key_file " + key + ": " + ec.message();
    return nullptr;
  }
  if (mismatch || ::SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    error = "smtpd_tls_key_file " + key + ": does not match the certificate in smtpd_tls_cert_file " + cert;
    return nullptr;
  }
  return ctx;
}

// The client side of STARTTLS toward next hops (smtp_tls, smtp_tls_ca_file).
std::unique_ptr<asio::ssl::context> make_client_tls_context(const core::config& cfg,
                                                            std::string& error) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  std::string ca = cfg.text("smtp_tls_ca_file");
  if (auto ec = gateway::prepare_client_tls_context(*ctx, ca)) {
    error = "smtp_tls_ca_file " + (ca.empty() ? std::string("(system store)") : ca) + ": " + ec.message();
    return nullptr;
  }
  return ctx;
}

// --check beyond the syntax: what the daemon would load at start and could
// fail on — the TLS key pair (exists, parses, matches), radius_clients_file,
// and whether control_socket fits a socket address. False with the first
// problem, naming the parameter and the file.
bool check_files(const core::config& cfg, std::string& error) {
  make_tls_context(cfg, error);
  if (!error.empty()) return false;
  if (!make_client_tls_context(cfg, error)) return false;
  if (const std::string clients = cfg.text("radius_clients_file"); !clients.empty()) {
    linkmon::nas_table table;
    if (!control::load_nas_clients(clients, table, error)) {
      error = "radius_clients_file: " + error;
      return false;
    }
  }
  const std::string socket = cfg.text("control_socket");
  if (const std::string why = core::unix_address::check_length(socket); !why.empty()) {
    error = "control_socket " + socket + ": " + why;
    return false;
  }
  return true;
}

// Fire-and-forget writes to the store from the network thread (their
// values are parameters, so they live in the coroutine frame).
asio::awaitable<void> store_retry(queue::store_worker& store, queue::retry_record r) {
  auto ec = co_await store.run([&r](queue::store& s) { return s.save_retry(r); });
  if (ec && ec != queue::errc::not_found) {
    core::log_warning("customer {}: retry state not shared: {}", r.customer_id, ec.message());
  }
}

asio::awaitable<void> store_event(queue::store_worker& store, queue::event_record e) {
  // A full disk must not stop anything for an event: it stays in memory.
  co_await store.run([&e](queue::store& s) { return s.record_event(e); });
}

// The system customer that owns the gateway's own notices (DSNs).
std::int64_t ensure_notices_customer(queue::store& store, gateway::customer_directory& customers) {
  if (const auto* e = customers.find_by_name(queue::notices_customer)) return e->info.id;
  queue::customer c;
  c.name = queue::notices_customer;
  c.mode = queue::delivery_mode::relay;
  c.route = "mx";
  if (auto ec = store.add_customer(c)) {
    throw std::runtime_error(std::string("cannot create the notices queue: ") + ec.message());
  }
  customers.upsert(c);
  return c.id;
}

int run_daemon(core::config& cfg) {
  if (cfg.text("myhostname").empty()) {
    std::string error;
    cfg.set("myhostname", system_hostname(), error);
  }
  const std::string hostname = cfg.text("myhostname");
  core::log_level level = core::log_level::info;
  core::parse_log_level(cfg.text("log_level"), level);
  core::set_log_level(level);
  if (!core::set_log_target(cfg.text("log_target"), "flushgated")) {
    std::cerr << "flushgated: log_target " << cfg.text("log_target") << ": cannot open\n";
    return 1;
  }

  std::string error;
  const passwd* run_as = nullptr;
  const std::string run_user = cfg.text("run_user");
  if (!run_user.empty() && ::geteuid() == 0) {
    run_as = ::getpwnam(run_user.c_str());
    if (run_as == nullptr) {
      core::log_error("run_user: no user named \"{}\"", run_user);
      return 1;
    }
  }
  const group* admins = nullptr;
  if (const std::string name = cfg.text("control_group"); !name.empty()) {
    admins = ::getgrnam(name.c_str());
    if (admins == nullptr) {
      core::log_error("control_group: no group named \"{}\"", name);
      return 1;
    }
  }
  const std::string data_dir = cfg.text("data_dir");
  if (!prepare_data_dir(data_dir, run_as, admins, error)) {
    core::log_error("{}", error);
    return 1;
  }
  auto tls = make_tls_context(cfg, error);
  if (!error.empty()) {
    core::log_error("{}", error);
    return 1;
  }

  asio::io_context io;
  // Bind first (port 25 needs root), then drop privileges, then open the
  // store as the user that will write it from now on.
  auto acceptors = gateway::bind_listeners(io, cfg.list("smtpd_listen"), error);
  if (acceptors.empty()) {
    core::log_error("{}", error);
    return 1;
  }
  gateway::acceptor_list odmr_acceptors, odmrs_acceptors;
  for (auto [key, list] : {std::pair{"odmr_listen", &odmr_acceptors}, std::pair{"odmrs_listen", &odmrs_acceptors}}) {
    auto addresses = cfg.list(key);
    if (addresses.empty()) continue;
    *list = gateway::bind_listeners(io, addresses, error);
    if (list->empty()) {
      core::log_error("{}: {}", key, error);
      return 1;
    }
  }
  if (!odmrs_acceptors.empty() && !tls) {
    core::log_error("odmrs_listen needs smtpd_tls_cert_file and smtpd_tls_key_file");
    return 1;
  }

  // Link monitor sources bind (RADIUS on 1813) and open captures while still
  // privileged; their events go to apply_link_event, whose context exists by
  // the time io.run() delivers the first packet.
  control::daemon_context* link_context = nullptr;
  linkmon::link_event_handler on_link_event =
      [&link_context](const linkmon::link_event& e) -> asio::awaitable<bool> {
    if (link_context == nullptr) co_return false;
    auto r = co_await control::apply_link_event(*link_context, e);
    // Refusals are final and answered; only a failure to record asks the
    // NAS to send the event again.
    co_return r.ok || !r.temporary;
  };
  std::unique_ptr<linkmon::radius_listener> radius;
  std::vector<std::unique_ptr<linkmon::pcap_sniffer>> sniffers;
  const auto radius_addresses = cfg.list("radius_listen");
  const bool want_pcap = !cfg.text("pcap_interface").empty() || !cfg.text("pcap_file").empty();
  if (!radius_addresses.empty() || want_pcap) {
    linkmon::nas_table clients;
    if (cfg.text("radius_clients_file").empty()) {
      core::log_error("radius_listen and the pcap sniffer need radius_clients_file (the NASes and their secrets)");
      return 1;
    }
    if (!control::load_nas_clients(cfg.text("radius_clients_file"), clients, error)) {
      core::log_error("{}", error);
      return 1;
    }
    try {
      if (!radius_addresses.empty()) {
        linkmon::radius_listener_options ro;
        for (const auto& a : radius_addresses) {
          auto hp = core::parse_host_port(a);
          ro.addresses.emplace_back(asio::ip::make_address(hp->first), hp->second);
        }
        ro.clients = clients;
        radius = std::make_unique<linkmon::radius_listener>(io.get_executor(), ro, on_link_event);
        radius->open();
      }
      for (const auto& [key, is_file] : {std::pair{"pcap_interface", false}, std::pair{"pcap_file", true}}) {
        if (cfg.text(key).empty()) continue;
        linkmon::pcap_sniffer_options po;
        (is_file ? po.file : po.interface) = cfg.text(key);
        po.filter = cfg.text("pcap_filter");
        po.require_response = cfg.flag("pcap_require_response");
        po.clients = clients;
        sniffers.push_back(std::make_unique<linkmon::pcap_sniffer>(io.get_executor(), po, on_link_event));
        sniffers.back()->open();
      }
    } catch (const std::exception& e) {
      core::log_error("link monitor: {}", e.what());
      return 1;
    }
  }
  // The HTTP API binds and reads (or creates) its token while privileged:
  // the token file belongs to root and the admin group.
  control::http_api_settings admin;
  admin.listen = cfg.list("admin_listen");
  admin.timeout = cfg.duration("admin_timeout");
  if (!admin.listen.empty() &&
      !control::load_admin_token(cfg.text("admin_token_file"), cfg.text("control_group"), admin.token, error)) {
    core::log_error("{}", error);
    return 1;
  }
  control::http_api http(io, admin);
  if (!http.listen(error)) {
    core::log_error("{}", error);
    return 1;
  }
  if (run_as != nullptr && !drop_privileges(run_as, admins, error)) {
    core::log_error("{}", error);
    return 1;
  }
  auto opened = open_store(cfg, data_dir);
  if (!opened) {
    core::log_error("store ({}): {}", describe_store(cfg), opened.error().message());
    return 1;
  }
  std::unique_ptr<queue::store> store = std::move(*opened);
  auto customers_loaded = store->list_customers();
  auto stats_loaded = store->queue_summary();
  if (!customers_loaded || !stats_loaded) {
    core::log_error("store in {}: cannot load customers", data_dir);
    return 1;
  }
  gateway::customer_directory customers;
  customers.replace_all(*customers_loaded, *stats_loaded);
  customers.set_recipient_delimiter(cfg.text("recipient_delimiter"));
  // learn/verify: what the customers' servers told about their addresses.
  auto known_loaded = store->list_known_recipients(0);
  if (!known_loaded) {
    core::log_error("store in {}: cannot load known recipients: {}", data_dir, known_loaded.error().message());
    return 1;
  }
  gateway::recipient_book known(static_cast<std::size_t>(cfg.count("recipient_known_max")));
  known.replace_all(*known_loaded);
  std::uint64_t queued = 0;
  for (const auto& s : *stats_loaded) queued += s.messages;
  const std::int64_t notices_id = ensure_notices_customer(*store, customers);
  auto links_loaded = store->list_links();
  if (!links_loaded) {
    core::log_error("store in {}: cannot load links: {}", data_dir, links_loaded.error().message());
    return 1;
  }
  gateway::router router;
  router.set_links(*links_loaded);
  queue::store_worker worker(std::move(store), static_cast<std::size_t>(cfg.count("queue_commit_batch")));

  queue::disk_guard disk(data_dir, cfg.size("queue_min_free"));
  disk.refresh();

  // Delivery: MX resolution, the SMTP client's settings, the agent and the scheduler.
  gateway::mx_options mx_opts;
  mx_opts.servers = cfg.list("dns_servers");
  mx_opts.self_names = cfg.list("smtp_self_names");
  for (const auto& text : cfg.list("smtp_self_addresses")) {
    if (auto net = core::parse_ip_network(text)) mx_opts.self_networks.push_back(*net);  // checked by the table
  }
  for (const auto& ep : acceptors) {
    boost::system::error_code ec;
    auto a = ep->local_endpoint(ec).address();
    if (!ec && !a.is_unspecified()) mx_opts.self_addresses.push_back(a);
  }
  gateway::mx_resolver mx(io.get_executor(), mx_opts);
  auto client_tls = make_client_tls_context(cfg, error);
  if (!client_tls) {
    core::log_error("{}", error);
    return 1;
  }
  gateway::delivery_settings ds;
  ds.hostname = hostname;
  ds.client.helo_name = hostname;
  ds.client.greeting_timeout = cfg.duration("smtp_helo_timeout");
  ds.client.helo_timeout = cfg.duration("smtp_helo_timeout");
  ds.client.mail_timeout = cfg.duration("smtp_mail_timeout");
  ds.client.rcpt_timeout = cfg.duration("smtp_rcpt_timeout");
  ds.client.data_init_timeout = cfg.duration("smtp_data_init_timeout");
  ds.client.data_block_timeout = cfg.duration("smtp_data_block_timeout");
  ds.client.data_done_timeout = cfg.duration("smtp_data_done_timeout");
  ds.client.tls = gateway::parse_tls_policy(cfg.text("smtp_tls"));
  ds.client.tls_context = client_tls.get();
  ds.connect_timeout = cfg.duration("smtp_connect_timeout");
  ds.queue_lifetime = cfg.duration("queue_lifetime");
  ds.delay_warning = cfg.duration("delay_warning_time");
  ds.bounce_relay = cfg.text("bounce_relay");
  ds.connections_per_customer = static_cast<std::size_t>(cfg.count("smtp_connections_per_customer"));
  ds.dialup_connections = static_cast<std::size_t>(cfg.count("smtp_dialup_connections"));
  gateway::delivery_agent agent(io, ds, customers, worker, mx, notices_id, &router);
  gateway::scheduler::settings ss;
  ss.retry_schedule = cfg.durations("retry_schedule");
  ss.max_runs = static_cast<std::size_t>(cfg.count("delivery_max_runs"));
  ss.sweep_interval = cfg.duration("queue_sweep_interval");
  // One delivering node per customer (ARCHITECTURE.md invariant 9): every
  // run holds the customer's delivery lease. On SQLite (one node) taking it
  // always succeeds, and a store failure (a full disk) does not keep a run
  // from freeing the disk.
  gateway::lease_keeper leases(
      worker, gateway::lease_settings{.node = cfg.text("node_name"),
                                      .lease_time = cfg.duration("cluster_lease_time"),
                                      .required = cfg.text("store") == "postgresql"});
  gateway::scheduler sched(
      io, customers, router, ss,
      leases.wrap([&agent](std::int64_t id, gateway::route r, gateway::flush_progress& p,
                           gateway::run_control& c) { return agent.run(id, std::move(r), p, c); }),
      [&agent]() { return agent.sweep(); });
  agent.on_notice_queued([&sched](std::int64_t id) { sched.mail_queued(id); });

  // Operator hooks: link events fire them in link_events.cpp; flushes here.
  linkmon::hook_settings hs;
  hs.dir = cfg.text("hooks_dir");
  hs.timeout = cfg.duration("hooks_timeout");
  hs.max_output = static_cast<std::size_t>(cfg.size("hooks_max_output"));
  hs.max_running = static_cast<std::size_t>(cfg.count("hooks_max_running"));
  linkmon::hook_runner hooks(io, hs);
  sched.on_done([&hooks, &customers](std::int64_t id, const gateway::flush_progress& p) {
    const auto* c = customers.find_by_id(id);
    if (c == nullptr || c->info.name == queue::notices_customer) return;
    linkmon::hook_context h;
    h.event = p.error.empty() ? linkmon::hook_event::flush_done : linkmon::hook_event::flush_failed;
    h.customer = c->info.name;
    h.user = p.link_user;
    h.ip = p.link_address;
    h.session = p.link_session;
    h.domains = c->info.domains;
    h.route = p.route;
    h.detail = fmt::format("delivered={} bounced={} deferred={} messages_done={} bytes_done={}{}{}",
                           p.recipients_delivered, p.recipients_failed, p.recipients_deferred,
                           p.messages_done, p.bytes_done, p.error.empty() ? "" : " error=", p.error);
    hooks.fire(h);
    core::recent_events().record(
        p.error.empty() ? "flush_done" : "flush_failed", c->info.name,
        fmt::format("flush ({}) over {}: {} delivered, {} bounced, {} deferred{}{}", p.trigger, p.route,
                    p.recipients_delivered, p.recipients_failed, p.recipients_deferred,
                    p.error.empty() ? "" : ": ", p.error));
  });

  control::recipient_checks::settings rc_settings;
  rc_settings.good_lifetime = cfg.duration("recipient_good_lifetime");
  rc_settings.bad_lifetime = cfg.duration("recipient_bad_lifetime");
  control::recipient_checks checks(io, worker, customers, router, sched, known, rc_settings);
  gateway::probe_settings probe_opts;
  probe_opts.timeout = cfg.duration("recipient_probe_timeout");
  probe_opts.per_minute = static_cast<std::size_t>(cfg.count("recipient_probes_per_minute"));
  probe_opts.client = ds.client;
  gateway::recipient_prober prober(io, mx, probe_opts);
  checks.set_probe([&prober](std::int64_t id, gateway::route r,
                             std::string address) -> asio::awaitable<gateway::known_state> {
    const auto result = co_await prober.probe(id, r, address);
    core::log_info("recipient check: callout for <{}> over {}: {} ({})", address, r.describe(),
                   gateway::to_string(result.verdict), result.reply);
    switch (result.verdict) {
      case gateway::probe_verdict::good: co_return gateway::known_state::good;
      case gateway::probe_verdict::bad: co_return gateway::known_state::bad;
      case gateway::probe_verdict::unknown: break;
    }
    co_return gateway::known_state::unknown;
  });
  agent.on_recipient_answer([&checks](std::int64_t id, const std::string& address, bool good) {
    checks.delivery_answer(id, address, good);
  });
  asio::co_spawn(io, checks.run(), asio::detached);

  gateway::intake_services intake{customers, worker, disk, tls.get(), {}};
  intake.queued = [&sched](std::int64_t id) { sched.mail_queued(id); };
  intake.routes = &router;
  intake.flushes = &sched;
  intake.known = &known;
  intake.reverse_name = [&mx](asio::ip::address client) { return mx.reverse_name(client); };
  intake.server_reachable = [&checks](std::int64_t id) { return checks.server_reachable(id); };
  intake.verify_recipient = [&checks](std::int64_t id, std::string address) {
    return checks.verify(id, std::move(address));
  };
  control::daemon_context context{worker, customers, router, sched, &hooks};
  context.config = &cfg;
  context.disk = &disk;
  context.dns = &mx_opts;
  context.radius = radius.get();
  for (auto& sniffer : sniffers) context.sniffers.push_back(sniffer.get());
  context.hostname = hostname;
  context.node = cfg.text("node_name");
  context.started = static_cast<std::int64_t>(std::time(nullptr));
  context.known = &known;
  link_context = &context;

  // A cluster: the nodes tell each other what changed and reconcile with
  // the shared store (cluster_sync.hpp); retry state and the recent events
  // are shared. (One node on SQLite keeps its events in memory: a write
  // per event there would compete with intake for a full disk's last room.)
  std::unique_ptr<control::cluster_sync> cluster;
  if (cfg.text("store") == "postgresql") {
    core::recent_events().set_sink([&io, &worker, node = context.node](const core::recent_event& e) {
      asio::co_spawn(io, store_event(worker, queue::event_record{.time = e.time, .node = node, .kind = e.kind,
                                                                 .customer = e.customer, .text = e.text}),
                     asio::detached);
    });
    control::cluster_settings cs;
    cs.node = context.node;
    cs.started = context.started;
    cs.interval = cfg.duration("cluster_sync_interval");
    cs.bus.conninfo = cfg.text("postgresql_conninfo");
    cluster = std::make_unique<control::cluster_sync>(io, context, std::move(cs));
    context.cluster = cluster.get();
    context.announce = [c = cluster.get()](queue::cluster_signal s) { c->announce(std::move(s)); };
    // What made a run here found the lease elsewhere: the holder — and only
    // the holder — hears it (new mail waits for the holder's retry state; a
    // forced trigger flushes). Sent to every node, it would bounce between
    // the nodes that do not hold the lease for as long as the holder runs.
    sched.on_held_elsewhere([&context](std::int64_t id, const std::string& trigger, bool forced,
                                       const std::string& holder) {
      context.announce({.what = forced ? queue::cluster_signal::kind::flush : queue::cluster_signal::kind::mail,
                        .customer_id = id,
                        .text = trigger,
                        .to = holder});
    });
    leases.on_released([&context](std::int64_t id) {
      context.announce({.what = queue::cluster_signal::kind::lease_free, .customer_id = id});
    });
    sched.on_retry([&io, &worker, node = context.node](std::int64_t id, int failures,
                                                       std::chrono::system_clock::time_point next) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next.time_since_epoch()).count();
      asio::co_spawn(io, store_retry(worker, queue::retry_record{.customer_id = id, .failures = failures,
                                                                 .next_try = ms, .node = node}),
                     asio::detached);
    });
  }
  control::control_server control(io, context, cfg.text("control_socket"), cfg.text("control_group"));
  if (!control.listen(error)) {
    core::log_error("{}", error);
    return 1;
  }

  // The control socket exists before the SMTP and ODMR ports accept, so a
  // client that reached the SMTP port can also reach `flushgate`.
  for (auto [key, list] : {std::pair{"smtpd_listen", &acceptors}, std::pair{"odmr_listen", &odmr_acceptors},
                           std::pair{"odmrs_listen", &odmrs_acceptors}}) {
    if (!gateway::start_listening(*list, key, error)) {
      core::log_error("{}", error);
      return 1;
    }
  }
  gateway::smtp_server smtpd(io, gateway::smtpd_settings::from_config(cfg, hostname), intake,
                             std::move(acceptors));
  gateway::odmr_server odmrd(io, gateway::odmr_settings::from_config(cfg, hostname),
                             gateway::odmr_services{customers, worker, sched, agent, tls.get(), &leases},
                             std::move(odmr_acceptors), std::move(odmrs_acceptors));
  smtpd.start();
  odmrd.start();
  control.start();
  http.start(context);
  sched.start();
  if (cluster) cluster->start();
  if (radius) asio::co_spawn(io, radius->run(), asio::detached);
  for (auto& sniffer : sniffers) asio::co_spawn(io, sniffer->run(), asio::detached);
  core::log_info("flushgated started: myhostname={}, store {}, {} customers, {} messages queued{}",
                 hostname, describe_store(cfg), customers.size(), queued, tls ? ", STARTTLS offered" : "");
  control::service_notifier service(io);

  // Disk headroom (and the room inside the store) is re-read once a second,
  // not per command; freed store pages go back to the file system in steps.
  queue::space_watch space(worker, disk);
  asio::co_spawn(io, space.run(), asio::detached);

  // SIGHUP: reopen the log file (logrotate's postrotate sends it).
  asio::signal_set hup(io, SIGHUP);
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    for (;;) {
      auto [ec, sig] = co_await hup.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      if (core::reopen_log_target()) {
        core::log_info("flushgated: signal {}: log reopened", sig);
      } else {
        core::log_warning("log_target {}: cannot reopen: still writing to the old file", cfg.text("log_target"));
      }
    }
  }, asio::detached);

  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    core::log_info("flushgated: signal {}: shutting down", sig);
    service.stopping();
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      if (radius) radius->stop();
      for (auto& sniffer : sniffers) sniffer->stop();
      http.stop();
      if (cluster) cluster->stop();
      co_await smtpd.shutdown();
      odmrd.stop();
      sched.stop();
      checks.stop();
      prober.close_all();
      co_await checks.write_pending();
      if (!co_await hooks.drain(std::chrono::seconds(10))) {
        hooks.stop();
        co_await hooks.drain(std::chrono::seconds(2));
      }
      control.stop();
      space.stop();
      hup.cancel();
      service.stop_watchdog();
      io.stop();
    }, asio::detached);
  });
  ::signal(SIGPIPE, SIG_IGN);

  // Every listener listens (the kernel queues connections until io.run())
  // and every signal has its handler: a SIGTERM or SIGHUP right after
  // READY=1 (systemctl stop, logrotate) must not meet the default action,
  // which ends the process without a graceful shutdown.
  service.ready(fmt::format("serving: {} customers, {} messages queued", customers.size(), queued));
  service.start_watchdog();
  io.run();
  core::recent_events().set_sink(nullptr);
  core::log_info("flushgated stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The queue holds mail and customer logins: nothing the daemon creates is
  // for other users (the control socket sets its own 0660).
  ::umask(027);
  std::optional<std::string> config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg == "--check") {
      check_only = true;
    } else if (arg == "--params") {
      std::cout << core::render_parameter_table_markdown();
      return 0;
    } else if (arg == "--params-man") {
      std::cout << core::render_parameter_man_page(FLUSHGATE_VERSION);
      return 0;
    } else {
      return usage();
    }
  }
  if (!config_path) return usage();
  std::string error;
  auto cfg = core::config::load_file(*config_path, error);
  if (!cfg) {
    std::cerr << "flushgated: " << error << "\n";
    return 2;
  }
  if (check_only) {
    if (!check_files(*cfg, error)) {
      std::cerr << "flushgated: " << *config_path << ": " << error << "\n";
      return 2;
    }
    std::cout << "flushgated: " << *config_path << ": ok, store " << describe_store(*cfg) << "\n";
    return 0;
  }
  try {
    return run_daemon(*cfg);
  } catch (const std::exception& e) {
    core::log_error("flushgated: fatal: {}", e.what());
    return 1;
  }
}
