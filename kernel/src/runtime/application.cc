#include "trellis/kernel/app/application.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "admin/admin_gate.h"
#include "admin/admin_principals.h"
#include "admin/admin_tokens_api.h"
#include "admin/audit_sink_config.h"
#include "admin/audit_stream.h"
#include "admin/audit_windows.h"
#include "admin/plugin_admin_routes.h"
#include "auth/token_verifier.h"
#include "runtime/access_log.h"
#include "runtime/admin_plane.h"
#include "runtime/config_admin.h"
#include "runtime/data_plane.h"
#include "runtime/jobs_admin.h"
#include "runtime/plugin_control.h"
#include "runtime/plugin_manager.h"
#include "runtime/policy_admin.h"
#include "runtime/self_service.h"
#include "runtime/storage_backend.h"
#include "runtime/system_admin.h"
#include "runtime/system_grants.h"
#include "runtime/tenant_admin.h"
#include "runtime/tenant_config_admin.h"
#include "services/calls/service_registry.h"
#include "services/core/handle_table.h"
#include "services/egress/egress_service.h"
#include "services/jobs/postgres_job_store.h"
#include "services/jobs/scheduler.h"
#include "services/seal/seal_key.h"
#include "services/stream/stream_service.h"
#include "services/usage/usage_stream.h"
#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/http/server.h"
#include "trellis/kernel/lua/policy_store.h"
#include "trellis/kernel/lua/watchdog.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/tls/server_context.h"
#include "trellis/kernel/util/file.h"
#include "trellis/kernel/util/json.h"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/rate_leases.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::app {
namespace fs = std::filesystem;
using runtime::PluginManager;

constexpr size_t kEventQueue = 10'000;

struct Application::Impl {
  explicit Impl(config::Config c)
      : cfg(std::move(c)),
        events(kEventQueue),
        pool(cfg.server.blocking_threads, cfg.server.blocking_queue),
        access_log(cfg.access_log) {}

  config::Config cfg;
  std::chrono::steady_clock::time_point started_at = std::chrono::steady_clock::now();
  std::atomic<bool> ready{false};
  metrics::MetricsRegistry metrics;
  events::EventBus events;
  std::unique_ptr<tenants::TenantRegistry> tenants;
  tenants::Admission admission;
  std::unique_ptr<services::blobs::BlobStore> blobs;  // outlives kv, which counts its bytes
  std::unique_ptr<storage::KvStore> kv;
  std::unique_ptr<runtime::SelfService> self_service;
  std::unique_ptr<services::egress::EgressService> egress;
  std::unique_ptr<services::stream::StreamService> streams;  // shares egress's quota meter
  std::unique_ptr<auth::TokenVerifier> tokens;  // outlives the data plane; null: no issuers
  services::HandleTable handles;                // outlives the plugins that hold handles
  services::ServiceRegistry service_registry;
  std::unique_ptr<services::JobScheduler> jobs;  // outlives the plugins whose jobs it runs
  std::unique_ptr<runtime::JobsAdmin> jobs_admin;
  std::unique_ptr<services::usage::UsageStream> usage;  // outlives its subscribers
  std::unique_ptr<services::seal::SealKey> seal;        // null: no server.seal_key_file
  std::shared_ptr<tenants::PostgresPool> pg_pool;       // PostgreSQL only: the app role's sessions
  std::unique_ptr<lua::PolicyEngine> policy;
  std::unique_ptr<runtime::PolicyAdmin> policy_admin;
  exec::BlockingPool pool;
  runtime::AccessLog access_log;
  std::unique_ptr<runtime::SystemGrants> system_grants;  // outlives the plugins that ask it
  std::unique_ptr<PluginManager> plugins;
  std::unique_ptr<runtime::SystemAdmin> system_admin;
  std::unique_ptr<runtime::TenantConfigAdmin> tenant_config_admin;
  std::unique_ptr<runtime::ConfigAdmin> config_admin;
  std::unique_ptr<admin::AdminPrincipals> admin_principals;
  std::unique_ptr<admin::AuditStream> audit;
  std::unique_ptr<admin::AdminGate> admin_gate;
  std::unique_ptr<admin::AdminTokensApi> admin_tokens;
  std::unique_ptr<admin::PluginAdminRoutes> plugin_admin_routes;
  admin::AuditWindows data_auth_failures;
  admin::AuditWindows policy_denials;  // per (tenant, route)
  runtime::ActiveRoutes routes;
  std::unique_ptr<runtime::PluginControl> plugin_control;
  std::unique_ptr<http::Server> data;
  std::unique_ptr<http::Server> admin;
  std::shared_ptr<tls::ServerContext> data_tls;  // null: plain HTTP
  std::shared_ptr<tls::ServerContext> admin_tls;
  bool stopped = false;
};

namespace {

// Plans and tenants declared in trellis.yaml: its plans are created or updated (others, from
// the API or a state file, are kept); declared tenants are created when missing, and
// differences from the registry are reported as drift.
Result<std::vector<tenants::Drift>> applyDeclaredTenants(const config::Config& cfg,
                                                         tenants::TenantRegistry& registry) {
  if (Status s = registry.upsertPlans(cfg.plans); !s) return s;
  for (const auto& plan : registry.plans()) {
    const bool declared = std::any_of(cfg.plans.begin(), cfg.plans.end(),
                                      [&](const tenants::Plan& p) { return p.name == plan.name; });
    if (!declared && plan.name != "default") {
      spdlog::info("plan {} is not in trellis.yaml: kept (defined by a state file or the API)",
                   plan.name);
    }
  }
  std::vector<tenants::TenantRecord> declared;
  for (const auto& t : cfg.tenants) {
    tenants::TenantRecord r;
    r.id = t.id;
    r.plan = t.plan;
    r.labels = t.labels;
    r.plugins = t.plugins;
    r.grants = t.grants;
    r.overrides = t.quotas;
    r.source = "config";
    declared.push_back(std::move(r));
  }
  auto drift = registry.applyDeclared(declared);
  if (!drift) return drift.status();
  for (const auto& d : *drift)
    spdlog::warn("tenant {} drifted from trellis.yaml: {}", d.tenant, d.detail);
  for (const auto& t : cfg.tenants) {
    for (const auto& key : t.keys) {
      if (auto k = registry.importKeyHash(t.id, key.sha256_hex); !k) return k.status();
    }
  }
  return drift;
}

lua::PolicyOptions policyOptions(const config::PolicyConfig& c) {
  lua::PolicyOptions o;
  o.budget.instructions = c.instructions;
  o.budget.memory_bytes = c.memory_bytes;
  o.budget.wall_time = c.wall_time;
  for (const auto& [hook, open] : c.fail_open) {
    if (auto h = lua::hookFromName(hook)) {
      o.fail[static_cast<size_t>(*h)] = open ? lua::FailMode::kOpen : lua::FailMode::kClosed;
    }
  }
  o.decision_log = c.decision_log;
  o.decision_log_sample = c.decision_log_sample;
  return o;
}

// The Lua watchdog's reports: a metric, an audit event, and readiness, which fails while
// any Lua call holds its thread past its deadline (the log line is the watchdog's own).
void watchLua(metrics::MetricsRegistry& metrics, events::EventBus& events,
              std::atomic<bool>& ready) {
  auto& noticed = metrics
                      .counter("trellis_lua_stuck_calls_total",
                               "Lua calls still running past their deadline plus grace")
                      .labels({});
  auto& stuck = metrics
                    .gauge("trellis_lua_stuck_threads",
                           "Threads held by a Lua call past its deadline plus grace, now")
                    .labels({});
  lua::Watchdog::instance().setReporter(
      [&events, &ready, &noticed, &stuck](const lua::Watchdog::Report& r) {
        const size_t now_stuck = lua::Watchdog::instance().stuck();
        stuck.set(static_cast<double>(now_stuck));
        if (!r.released) {
          noticed.add(1);
          std::string payload = "{\"sandbox\":";
          util::appendJsonString(payload, r.label);
          payload += ",\"late_ms\":" + std::to_string(r.late.count()) + "}";
          events.publish({"", "kernel", "audit.lua_stuck", std::move(payload)});
        }
        ready = now_stuck == 0;
      });
}

// What the usage endpoints show of a tenant's egress today.
runtime::EgressUsageFn egressUsage(const services::egress::EgressService& egress) {
  return [&egress](const std::string& tenant) {
    const auto u = egress.usage(tenant);
    return runtime::EgressUsage{u.requests_today, u.bytes_today};
  };
}

// Where a control-plane document lives: data_dir/<file> on one host; PostgreSQL, named after
// the file, when hosts share it (what one host's operator changes counts on all).
std::unique_ptr<admin::SharedDocument> controlDocument(
    const config::Config& cfg, const std::shared_ptr<tenants::PostgresPool>& pool,
    const std::string& file) {
  if (!pool) return admin::SharedDocument::file(cfg.data_dir / file);
  return admin::SharedDocument::postgres(pool, std::filesystem::path(file).stem().string());
}

}  // namespace

Application::Application(config::Config config)
    : impl_(std::make_unique<Impl>(std::move(config))) {}

Application::~Application() {
  stop();
}

Status Application::start() {
  Impl& s = *impl_;
  // First: a seal key the operator named but trellisd cannot use is a reason not to start.
  if (!s.cfg.server.seal_key_file.empty()) {
    auto seal = services::seal::SealKey::loadFile(s.cfg.server.seal_key_file);
    if (!seal) return seal.status();
    s.seal = std::move(*seal);
    spdlog::info("seal: key {} from {}", s.seal->id(), s.cfg.server.seal_key_file.string());
  }
  auto storage = runtime::openStorage(s.cfg);
  if (!storage) return storage.status();
  s.tenants = std::move(storage->tenants);
  s.blobs = std::move(storage->blobs);
  s.kv = std::move(storage->kv);
  s.pg_pool = std::move(storage->pool);
  if (s.pg_pool) {
    // Several hosts share this database: rate quotas come from leased blocks.
    s.admission.shareRates(tenants::openPostgresRateLeases(s.pg_pool), [](const Status& health) {
      if (health) {
        spdlog::info("rate quotas: leasing from PostgreSQL again");
      } else {
        spdlog::error(
            "rate quotas: cannot lease from PostgreSQL ({}); each host enforces them "
            "alone until it is back",
            health.message());
      }
    });
  }
  auto drift = applyDeclaredTenants(s.cfg, *s.tenants);
  if (!drift) return drift.status();

  auto policy_store = lua::PolicyStore::open(s.cfg.data_dir / "policies");
  if (!policy_store) return policy_store.status();
  s.policy = std::make_unique<lua::PolicyEngine>(policyOptions(s.cfg.policy),
                                                 std::move(*policy_store), s.kv.get(), &s.metrics);
  if (Status st = s.policy->start(); !st) return st;
  s.policy_admin = std::make_unique<runtime::PolicyAdmin>(*s.policy, *s.tenants);

  auto token = runtime::loadOrCreateAdminToken(s.cfg.admin.token_file);
  if (!token) return token.status();

  auto principals = admin::AdminPrincipals::open(
      controlDocument(s.cfg, s.pg_pool, "admin-principals.json"), *token);
  if (!principals) return principals.status();
  s.admin_principals = std::move(*principals);
  if (s.pg_pool) {
    auto imported = s.admin_principals->importFile(s.cfg.data_dir / "admin-principals.json");
    if (!imported) return imported.status();
    if (*imported) spdlog::info("admin principals: imported {} into PostgreSQL", *imported);
  }
  // Before any plugin starts, so their failures and refusals are recorded too.
  s.audit = std::make_unique<admin::AuditStream>(
      admin::AuditStream::Options{s.cfg.audit.sink, s.cfg.audit.block}, s.service_registry,
      s.metrics);
  s.audit->attach(s.events);
  s.admin_gate = std::make_unique<admin::AdminGate>(*s.admin_principals, *s.audit, s.metrics);
  s.admin_tokens = std::make_unique<admin::AdminTokensApi>(*s.admin_principals);

  auto egress_client = services::egress::EgressClient::create({.ca_file = s.cfg.egress.ca_file});
  if (!egress_client) return egress_client.status();
  s.egress =
      std::make_unique<services::egress::EgressService>(std::move(*egress_client), s.metrics);
  if (s.pg_pool) s.egress->shareBytes(services::egress::openPostgresEgressBytes(s.pg_pool));
  auto stream_client = services::stream::StreamClient::create({.ca_file = s.cfg.egress.ca_file});
  if (!stream_client) return stream_client.status();
  s.streams = std::make_unique<services::stream::StreamService>(std::move(*stream_client),
                                                                s.egress->meter(), s.metrics);
  s.self_service = std::make_unique<runtime::SelfService>(*s.tenants, s.admission, *s.kv,
                                                          egressUsage(*s.egress));
  // Durable jobs persist beside the SQLite data, or in PostgreSQL when hosts share it:
  // there each firing is claimed by one host under a lease (services/jobs).
  services::JobScheduler::Options job_options;
  if (s.pg_pool) {
    job_options.shared = services::openPostgresJobStore(s.pg_pool, services::jobHostName());
  } else {
    auto store = services::SqliteJobStore::open(s.cfg.data_dir / "jobs.db");
    if (!store) return store.status();
    job_options.store = std::move(*store);
  }
  s.jobs = std::make_unique<services::JobScheduler>(std::move(job_options));
  s.jobs_admin = std::make_unique<runtime::JobsAdmin>(*s.jobs);
  // Each host journals the records of the requests it served, beside its data.
  auto usage =
      services::usage::UsageStream::open(s.cfg.data_dir / "usage.db", s.cfg.usage, s.metrics);
  if (!usage) return usage.status();
  s.usage = std::move(*usage);

  auto grants = runtime::SystemGrants::open(controlDocument(s.cfg, s.pg_pool, "system-grants.json"),
                                            s.cfg.plugins);
  if (!grants) return grants.status();
  s.system_grants = std::move(*grants);
  if (s.pg_pool) {
    auto imported = s.system_grants->importFile(s.cfg.data_dir / "system-grants.json");
    if (!imported) return imported.status();
    if (*imported) spdlog::info("system grants: imported {} into PostgreSQL", *imported);
  }
  s.plugins = std::make_unique<PluginManager>(runtime::HostServices{
      .kv = s.kv.get(),
      .events = &s.events,
      .metrics = &s.metrics,
      .tenants = s.tenants.get(),
      .self_service = s.self_service.get(),
      .handles = &s.handles,
      .service_registry = &s.service_registry,
      .jobs = s.jobs.get(),
      .blobs = s.blobs.get(),
      .egress = s.egress.get(),
      .streams = s.streams.get(),
      .system_grants = s.system_grants.get(),
      .usage = s.usage.get(),
      .audit = s.audit.get(),
      .seal = s.seal.get(),
  });
  s.plugins->setWorkerConfig(s.cfg.worker);
  s.plugins->startAll(s.cfg.plugin_dirs, s.cfg.plugins);
  // Once the sink runs: which sink and mode this start uses, and whether they changed.
  if (Status st = admin::recordAuditSinkConfig(
          *s.audit, *admin::SharedDocument::file(s.cfg.data_dir / "audit-sink.json"), s.cfg.audit);
      !st) {
    spdlog::warn(
        "audit: the audit sink settings of this start are not stored ({}); the next "
        "start cannot tell whether they changed",
        st.message());
  }
  // Stored jobs fire once their plugins run (an overdue one at once: at least once).
  if (Status st = s.jobs->start(s.tenants.get()); !st) return st;
  s.routes.store(std::make_shared<const runtime::RouteTable>(s.plugins->buildRouteTable()));
  // Hot activation; the drain bound is the shutdown one. Installs first ask the admin's
  // Lua on_plugin_install policy (no policy, or none with that hook: allowed).
  s.plugin_control =
      std::make_unique<runtime::PluginControl>(*s.plugins, s.routes, s.cfg.server.drain_timeout);
  s.plugin_control->setInstallPolicy(
      [policy = s.policy.get()](const runtime::InstallCheck& c) -> std::optional<std::string> {
        lua::Verdict v = policy->onPluginInstall(
            {c.id, c.version, c.publisher, c.source, c.capabilities, "", ""});
        if (v.action != lua::Verdict::Action::kDeny) return std::nullopt;
        return v.reason.empty()
                   ? "denied by the on_plugin_install policy (decision " + v.decision_id + ")"
                   : v.reason;
      });

  const auto& sc = s.cfg.server;
  // The config parser loaded these files already; this load is the one that serves.
  auto makeTls = [](const tls::ServerTlsOptions& opts, const char* name,
                    std::shared_ptr<tls::ServerContext>& out) -> Status {
    if (!opts.enabled()) return Status::ok();
    auto ctx = tls::ServerContext::create(opts, name);
    if (!ctx) return ctx.status();
    out = std::move(*ctx);
    out->watch();
    return Status::ok();
  };
  if (Status st = makeTls(sc.tls, "server", s.data_tls); !st) return st;
  if (Status st = makeTls(s.cfg.admin.tls, "admin", s.admin_tls); !st) return st;
  http::ServerOptions data_opts{.name = "data",
                                .host = sc.listen.host,
                                .port = sc.listen.port,
                                .threads = sc.threads,
                                .max_header_bytes = sc.max_header_bytes,
                                .max_body_bytes = sc.max_body_bytes,
                                .read_timeout = sc.read_timeout,
                                .idle_timeout = sc.idle_timeout,
                                .max_connections = sc.max_connections,
                                .tls = s.data_tls};
  auto data_plane =
      std::make_shared<runtime::DataPlane>(s.routes, *s.tenants, s.admission, s.pool, s.access_log,
                                           s.metrics, s.ready, s.policy.get(), s.usage.get());
  if (!s.cfg.auth.jwt_issuers.empty()) {
    auto tokens = auth::TokenVerifier::create(s.cfg.auth.jwt_issuers);
    if (!tokens) return tokens.status();
    s.tokens = std::move(*tokens);
    data_plane->acceptTokens(s.tokens.get());
    spdlog::info("data plane: accepting signed tokens from {} issuer(s)",
                 s.cfg.auth.jwt_issuers.size());
  }
  // Bad tenant keys reach the audit stream aggregated, through the bus: the event loop never
  // waits for the sink.
  data_plane->onAuthFailure(
      [&s](std::string_view credential, const http::Peer& peer, std::string_view reason) {
        const std::string key = admin::credentialFingerprint(credential);
        auto previous = s.data_auth_failures.shouldRecord(key, peer.address);
        if (!previous) return;
        std::string payload = "{\"resource\":\"data-plane\",\"key\":";
        util::appendJsonString(payload, key.empty() ? "none" : key);
        payload += ",\"source\":";
        util::appendJsonString(payload, peer.address);
        payload += ",\"reason\":";
        util::appendJsonString(payload, reason);
        payload += ",\"failures_in_previous_minute\":" + std::to_string(*previous) + "}";
        s.events.publish({"", "kernel", "audit.auth_failure", std::move(payload)});
      });
  // Policy refusals too, one record per tenant and route a minute (the decision log has
  // every one; the record names the first of its minute).
  data_plane->onPolicyDenial([&s](std::string_view tenant, std::string_view route,
                                  const lua::Verdict& v, std::string_view request_id) {
    auto previous = s.policy_denials.shouldRecord(std::string(tenant), std::string(route));
    if (!previous) return;
    std::string payload = "{\"resource\":\"data-plane\",\"tenant\":";
    util::appendJsonString(payload, tenant);
    payload += ",\"route\":";
    util::appendJsonString(payload, route);
    payload += ",\"status\":" + std::to_string(v.status) + ",\"reason\":";
    util::appendJsonString(payload, v.reason);
    payload += ",\"policy\":";
    util::appendJsonString(payload, v.scope + " v" + std::to_string(v.policy_version));
    payload += ",\"failed\":";
    payload += v.failed ? "true" : "false";
    payload += ",\"decision_id\":";
    util::appendJsonString(payload, v.decision_id);
    payload += ",\"request_id\":";
    util::appendJsonString(payload, request_id);
    payload += ",\"denials_in_previous_minute\":" + std::to_string(*previous) + "}";
    s.events.publish({"", "kernel", "audit.policy_denied", std::move(payload)});
  });
  s.data = std::make_unique<http::Server>(data_opts, std::move(data_plane));
  if (Status st = s.data->start(); !st) return st;

  runtime::AdminView view;
  view.plugins = s.plugins.get();
  view.metrics = &s.metrics;
  view.admission = &s.admission;
  view.ready = &s.ready;
  view.policies = s.policy_admin.get();
  view.tenants = [this] { return impl_->tenants->list().size(); };
  view.started_at = s.started_at;
  view.data_plane_address = [this] {
    return impl_->cfg.server.listen.host + ":" + std::to_string(impl_->data->port());
  };
  view.in_flight = [this] { return impl_->data->inFlight(); };
  view.control = s.plugin_control.get();
  view.jobs = s.jobs_admin.get();
  s.system_admin = std::make_unique<runtime::SystemAdmin>(*s.system_grants, *s.plugins);
  view.system = s.system_admin.get();
  s.tenant_config_admin = std::make_unique<runtime::TenantConfigAdmin>(*s.tenants, *s.plugins);
  view.tenant_config = s.tenant_config_admin.get();
  s.config_admin = std::make_unique<runtime::ConfigAdmin>(*s.tenants, *s.plugins, *s.policy);
  view.config = s.config_admin.get();
  view.gate = s.admin_gate.get();
  view.admin_tokens = s.admin_tokens.get();
  s.plugin_admin_routes = std::make_unique<admin::PluginAdminRoutes>(s.routes);
  view.plugin_routes = s.plugin_admin_routes.get();
  http::ServerOptions admin_opts{.name = "admin",
                                 .host = s.cfg.admin.listen.host,
                                 .port = s.cfg.admin.listen.port,
                                 .threads = 1,
                                 .tls = s.admin_tls};
  s.admin = std::make_unique<http::Server>(
      admin_opts,
      std::make_shared<runtime::AdminPlane>(
          std::move(view), std::move(*token),
          std::make_unique<runtime::TenantAdmin>(*s.tenants, s.admission, *s.kv, std::move(*drift),
                                                 egressUsage(*s.egress))));
  if (Status st = s.admin->start(); !st) return st;

  watchLua(s.metrics, s.events, s.ready);
  s.ready = true;
  spdlog::info("trellisd {} serving on {}:{} (admin {}:{})", TRELLIS_VERSION, sc.listen.host,
               s.data->port(), s.cfg.admin.listen.host, s.admin->port());
  return Status::ok();
}

Status Application::reloadTls() {
  Status result = Status::ok();
  bool any = false;
  for (auto* ctx : {impl_->data_tls.get(), impl_->admin_tls.get()}) {
    if (ctx == nullptr) continue;
    any = true;
    if (Status s = ctx->reload(); !s && result) result = s;
  }
  if (!any) spdlog::info("SIGHUP: no listener has TLS configured; nothing to reload");
  return result;
}

void Application::stop() {
  Impl& s = *impl_;
  if (s.stopped) return;
  lua::Watchdog::instance().setReporter(nullptr);
  s.stopped = true;
  s.ready = false;
  if (s.data) {
    spdlog::info("draining in-flight requests (up to {} ms)", s.cfg.server.drain_timeout.count());
    s.data->stop(s.cfg.server.drain_timeout);
  }
  if (s.admin) s.admin->stop(std::chrono::milliseconds(1000));
  s.events.flush();
  if (s.jobs) s.jobs->stop();  // no new runs; the plugins' running ones end as they stop
  if (s.plugins) s.plugins->stopAll();
  if (s.usage) s.usage->stop();  // what the drained requests produced reaches the journal
  spdlog::info("trellisd stopped");
}

uint16_t Application::port() const {
  return impl_->data ? impl_->data->port() : 0;
}
uint16_t Application::adminPort() const {
  return impl_->admin ? impl_->admin->port() : 0;
}

Status Application::writeReadyFile(const fs::path& file) const {
  return util::writeFileAtomically(file,
                                   "{\"port\":" + std::to_string(port()) +
                                       ",\"admin_port\":" + std::to_string(adminPort()) + "}\n",
                                   0644);
}

}  // namespace trellis::kernel::app
