#include "system_db.h"

#include <fcntl.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace trellis::tenants::internal {
namespace {

using sql::exec;
using sql::Query;

constexpr int kBusyTimeoutMs = 5000;

// Schema migrations; version N is the first N entries. Append only: a released entry
// never changes, a later change is a new entry (ALTER TABLE ...).
const std::vector<std::vector<std::string>>& migrations() {
  static const std::vector<std::vector<std::string>> kMigrations = {
      {
          "CREATE TABLE plans("
          " name TEXT PRIMARY KEY,"
          " requests_per_second BIGINT, burst BIGINT, max_concurrent BIGINT,"
          " max_body_bytes BIGINT, max_storage_bytes BIGINT, max_host_calls BIGINT)",
          "INSERT INTO plans(name) VALUES('default')",
          "CREATE TABLE tenants("
          " id TEXT PRIMARY KEY,"
          " plan TEXT NOT NULL REFERENCES plans(name),"
          " status TEXT NOT NULL CHECK(status IN ('active', 'suspended')),"
          " source TEXT NOT NULL CHECK(source IN ('api', 'config')),"
          " created_at_ms BIGINT NOT NULL,"
          " requests_per_second BIGINT, burst BIGINT, max_concurrent BIGINT,"
          " max_body_bytes BIGINT, max_storage_bytes BIGINT, max_host_calls BIGINT)",
          "CREATE TABLE tenant_labels("
          " tenant TEXT NOT NULL REFERENCES tenants(id),"
          " name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(tenant, name))",
          "CREATE TABLE tenant_plugins("
          " tenant TEXT NOT NULL REFERENCES tenants(id),"
          " plugin TEXT NOT NULL, PRIMARY KEY(tenant, plugin))",
          "CREATE TABLE api_keys("
          " id TEXT PRIMARY KEY,"
          " tenant TEXT NOT NULL REFERENCES tenants(id),"
          " sha256 TEXT NOT NULL UNIQUE,"
          " created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT, revoked_at_ms BIGINT)",
          "CREATE INDEX api_keys_by_tenant ON api_keys(tenant)",
      },
      {
          // Self-service key limits and per-(plugin, tenant) capability grants. A NULL
          // grants column means "everything the manifest requests"; otherwise a
          // comma-separated list, possibly empty.
          "ALTER TABLE plans ADD COLUMN max_api_keys BIGINT",
          "ALTER TABLE plans ADD COLUMN max_key_ttl_seconds BIGINT",
          "ALTER TABLE tenants ADD COLUMN max_api_keys BIGINT",
          "ALTER TABLE tenants ADD COLUMN max_key_ttl_seconds BIGINT",
          "ALTER TABLE tenant_plugins ADD COLUMN grants TEXT",
      },
      {
          // ABI 1.2 jobs: the max_jobs quota.
          "ALTER TABLE plans ADD COLUMN max_jobs BIGINT",
          "ALTER TABLE tenants ADD COLUMN max_jobs BIGINT",
      },
      {
          // Egress quotas (ABI 1.2 egress HTTP).
          "ALTER TABLE plans ADD COLUMN egress_requests_per_second BIGINT",
          "ALTER TABLE plans ADD COLUMN egress_bytes_per_day BIGINT",
          "ALTER TABLE tenants ADD COLUMN egress_requests_per_second BIGINT",
          "ALTER TABLE tenants ADD COLUMN egress_bytes_per_day BIGINT",
      },
      {
          // Client certificates as tenant credentials (mTLS). `lookup` is the hex SHA-256 of
          // the selector (kind, value, issuer): the data plane's index. Unique among
          // unrevoked rows, so a revoked selector can be mapped again later.
          "CREATE TABLE cert_credentials("
          " id TEXT PRIMARY KEY,"
          " tenant TEXT NOT NULL REFERENCES tenants(id),"
          " kind TEXT NOT NULL CHECK(kind IN ('pin', 'spiffe', 'subject')),"
          " value TEXT NOT NULL, issuer TEXT NOT NULL, lookup TEXT NOT NULL,"
          " created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT, revoked_at_ms BIGINT)",
          "CREATE INDEX cert_credentials_by_tenant ON cert_credentials(tenant)",
          "CREATE INDEX cert_credentials_by_lookup ON cert_credentials(lookup)",
          "CREATE UNIQUE INDEX cert_credentials_active ON cert_credentials(lookup)"
          " WHERE revoked_at_ms IS NULL",
      },
      {
          // Per-tenant plugin configuration: the keys a tenant overrides, as a JSON object
          // the kernel checked against the plugin's tenant_config schema.
          "CREATE TABLE tenant_plugin_config("
          " tenant TEXT NOT NULL REFERENCES tenants(id),"
          " plugin TEXT NOT NULL, config TEXT NOT NULL, updated_at_ms BIGINT NOT NULL,"
          " PRIMARY KEY(tenant, plugin))",
      }};
  return kMigrations;
}

std::string quotaColumns() {
  std::string out;
  for (const auto& f : kQuotaFields) out += std::string(out.empty() ? "" : ", ") + f.name;
  return out;
}

std::string quotaPlaceholders() {
  std::string out;
  for (size_t i = 0; i < kQuotaFields.size(); ++i) {
    out += (i == 0 ? ":q" : ", :q") + std::to_string(i);
  }
  return out;
}

std::string quotaAssignments() {
  std::string out;
  for (size_t i = 0; i < kQuotaFields.size(); ++i) {
    out += std::string(i == 0 ? "" : ", ") + kQuotaFields[i].name + " = :q" + std::to_string(i);
  }
  return out;
}

// Quotas as nullable BIGINT columns: bound with use(), read with into().
struct QuotaValues {
  std::array<long long, kQuotaFields.size()> values{};
  std::array<soci::indicator, kQuotaFields.size()> inds{};

  static QuotaValues of(const Quotas& q) {
    QuotaValues v;
    for (size_t i = 0; i < kQuotaFields.size(); ++i) {
      const auto& field = q.*kQuotaFields[i].member;
      // The registry refuses values above INT64_MAX before they get here.
      v.values[i] = field ? static_cast<long long>(*field) : 0;
      v.inds[i] = field ? soci::i_ok : soci::i_null;
    }
    return v;
  }
  Quotas get() const {
    Quotas q;
    for (size_t i = 0; i < kQuotaFields.size(); ++i) {
      if (inds[i] == soci::i_null) continue;
      if (values[i] < 0) {
        throw std::runtime_error(std::string("negative ") + kQuotaFields[i].name +
                                 " in the system database");
      }
      q.*kQuotaFields[i].member = static_cast<uint64_t>(values[i]);
    }
    return q;
  }
  void bindUse(Query& q) {
    for (size_t i = 0; i < values.size(); ++i) q.use(values[i], inds[i]);
  }
  void bindInto(Query& q) {
    for (size_t i = 0; i < values.size(); ++i) q.into(values[i], inds[i]);
  }
};

std::string joinGrants(const std::set<std::string>& capabilities) {
  std::string out;
  for (const auto& c : capabilities) out += (out.empty() ? "" : ",") + c;
  return out;
}

std::set<std::string> splitGrants(const std::string& list) {
  std::set<std::string> out;
  for (size_t begin = 0; begin < list.size();) {
    size_t end = std::min(list.find(',', begin), list.size());
    out.emplace(list.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

// Reads (plugin, grants) rows into `t`: enabled plugins and, where not NULL, their grants.
void addPluginRow(TenantRecord& t, const std::string& plugin, const std::string& grants,
                  soci::indicator grants_ind) {
  t.plugins.insert(plugin);
  if (grants_ind != soci::i_null) t.grants[plugin] = splitGrants(grants);
}

TenantStatus parseStatus(const std::string& s) {
  if (s == "active") return TenantStatus::kActive;
  if (s == "suspended") return TenantStatus::kSuspended;
  throw std::runtime_error("unknown tenant status \"" + s + "\" in the system database");
}

std::optional<int64_t> nullable(long long v, soci::indicator ind) {
  if (ind == soci::i_null) return std::nullopt;
  return v;
}

// Reads key rows selected as id, tenant, sha256, created_at_ms, expires_at_ms,
// revoked_at_ms.
template <typename Bind>
std::vector<StoredKey> readKeys(soci::session& sql, const std::string& where, Bind bind) {
  std::string id, tenant, hex;
  long long created = 0, expires = 0, revoked = 0;
  soci::indicator expires_ind = soci::i_ok, revoked_ind = soci::i_ok;
  Query q(sql,
          "SELECT id, tenant, sha256, created_at_ms, expires_at_ms, revoked_at_ms FROM api_keys" +
              where + " ORDER BY id");
  bind(q);
  q.into(id)
      .into(tenant)
      .into(hex)
      .into(created)
      .into(expires, expires_ind)
      .into(revoked, revoked_ind);
  std::vector<StoredKey> out;
  for (bool row = q.run(); row; row = q.next()) {
    out.push_back({KeyInfo{id, tenant, created, nullable(expires, expires_ind),
                           nullable(revoked, revoked_ind)},
                   hex});
  }
  return out;
}

// Reads certificate credential rows selected by `where`.
template <typename Bind>
std::vector<StoredCert> readCerts(soci::session& sql, const std::string& where, Bind bind) {
  std::string id, tenant, kind, value, issuer, lookup;
  long long created = 0, expires = 0, revoked = 0;
  soci::indicator expires_ind = soci::i_ok, revoked_ind = soci::i_ok;
  Query q(sql,
          "SELECT id, tenant, kind, value, issuer, lookup, created_at_ms, expires_at_ms,"
          " revoked_at_ms FROM cert_credentials" +
              where + " ORDER BY id");
  bind(q);
  q.into(id).into(tenant).into(kind).into(value).into(issuer).into(lookup).into(created);
  q.into(expires, expires_ind).into(revoked, revoked_ind);
  std::vector<StoredCert> out;
  for (bool row = q.run(); row; row = q.next()) {
    auto k = parseCertSelectorKind(kind);
    if (!k) throw std::runtime_error("unknown certificate selector \"" + kind + "\"");
    out.push_back({CertCredential{id, tenant, CertSelector{*k, value, issuer}, created,
                                  nullable(expires, expires_ind), nullable(revoked, revoked_ind)},
                   lookup});
  }
  return out;
}

// Reads tenant rows (without labels and plugins) selected by `where`.
template <typename Bind>
std::vector<TenantRecord> readTenants(soci::session& sql, const std::string& where, Bind bind) {
  std::string id, plan, status, source;
  long long created = 0;
  QuotaValues overrides;
  Query q(sql, "SELECT id, plan, status, source, created_at_ms, " + quotaColumns() +
                   " FROM tenants" + where + " ORDER BY id");
  bind(q);
  q.into(id).into(plan).into(status).into(source).into(created);
  overrides.bindInto(q);
  std::vector<TenantRecord> out;
  for (bool row = q.run(); row; row = q.next()) {
    TenantRecord t;
    t.id = id;
    t.plan = plan;
    t.status = parseStatus(status);
    t.source = source;
    t.created_at_ms = created;
    t.overrides = overrides.get();
    out.push_back(std::move(t));
  }
  return out;
}

void insertLabelsAndPlugins(soci::session& sql, const TenantRecord& t) {
  for (const auto& [name, value] : t.labels) {
    Query(sql, "INSERT INTO tenant_labels(tenant, name, value) VALUES(:t, :n, :v)")
        .use(t.id)
        .use(name)
        .use(value)
        .run();
  }
  for (const auto& plugin : t.plugins) {
    auto granted = t.grants.find(plugin);
    std::string grants = granted == t.grants.end() ? "" : joinGrants(granted->second);
    soci::indicator grants_ind = granted == t.grants.end() ? soci::i_null : soci::i_ok;
    Query(sql, "INSERT INTO tenant_plugins(tenant, plugin, grants) VALUES(:t, :p, :g)")
        .use(t.id)
        .use(plugin)
        .use(grants, grants_ind)
        .run();
  }
}

void deleteLabelsAndPlugins(soci::session& sql, const std::string& id) {
  Query(sql, "DELETE FROM tenant_labels WHERE tenant = :t").use(id).run();
  Query(sql, "DELETE FROM tenant_plugins WHERE tenant = :t").use(id).run();
}

}  // namespace

Result<std::unique_ptr<SystemDb>> SystemDb::openSqlite(const std::filesystem::path& file) {
  if (file.empty()) return Status::invalid("system database path is empty");
  // The path goes into SOCI's connection string, which quotes it with '"'.
  if (file.string().find('"') != std::string::npos) {
    return Status::invalid("system database path must not contain '\"': " + file.string());
  }
  try {
    std::filesystem::path dir = file.parent_path();
    if (!dir.empty()) {
      std::error_code ec;
      // Keys, tenants and plans are the server's secrets-adjacent state: a directory we
      // create is private to the server's user.
      if (std::filesystem::create_directories(dir, ec)) {
        std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
      }
      if (ec) throw std::system_error(ec, "create directory " + dir.string());
    }
    // Create the file 0600 before SQLite does (it would use the umask); SQLite gives the
    // -wal and -shm files the same mode.
    int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "create");
    ::close(fd);

    std::unique_ptr<SystemDb> db(new SystemDb("BEGIN IMMEDIATE"));
    db->sql_.open(soci::sqlite3,
                  "db=\"" + file.string() + "\" timeout=" + std::to_string(kBusyTimeoutMs / 1000));
    std::string mode;
    Query(db->sql_, "PRAGMA journal_mode=WAL").into(mode).run();
    if (mode != "wal") throw std::runtime_error("cannot enable WAL (journal_mode=" + mode + ")");
    exec(db->sql_, "PRAGMA synchronous=FULL");
    exec(db->sql_, "PRAGMA busy_timeout=" + std::to_string(kBusyTimeoutMs));
    exec(db->sql_, "PRAGMA foreign_keys=ON");
    db->migrate();
    return db;
  } catch (const std::exception& e) {
    return Status::unavailable("cannot open the system database " + file.string() + ": " +
                               e.what());
  }
}

int SystemDb::schemaVersion() {
  return static_cast<int>(migrations().size());
}

const std::vector<std::vector<std::string>>& SystemDb::migrationSteps() {
  return migrations();
}

void SystemDb::migrate() {
  exec(sql_, "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)");
  auto tx = transaction();
  int current = 0;
  soci::indicator ind = soci::i_ok;
  Query(sql_, "SELECT MAX(version) FROM schema_version").into(current, ind).run();
  if (ind == soci::i_null) current = 0;
  const auto& steps = migrations();
  if (current > static_cast<int>(steps.size())) {
    throw std::runtime_error("schema version " + std::to_string(current) +
                             " is newer than this build supports (" + std::to_string(steps.size()) +
                             ")");
  }
  if (current == static_cast<int>(steps.size())) return;
  for (size_t v = static_cast<size_t>(current); v < steps.size(); ++v) {
    for (const auto& statement : steps[v]) exec(sql_, statement);
  }
  int version = static_cast<int>(steps.size());
  exec(sql_, "DELETE FROM schema_version");
  Query(sql_, "INSERT INTO schema_version(version) VALUES(:v)").use(version).run();
  tx.commit();
}

StoredState SystemDb::load() {
  StoredState state;
  {
    std::string name;
    QuotaValues quotas;
    Query q(sql_, "SELECT name, " + quotaColumns() + " FROM plans ORDER BY name");
    q.into(name);
    quotas.bindInto(q);
    for (bool row = q.run(); row; row = q.next()) state.plans.push_back({name, quotas.get()});
  }
  state.tenants = readTenants(sql_, "", [](Query&) {});
  std::map<std::string, TenantRecord*> by_id;
  for (auto& t : state.tenants) by_id.emplace(t.id, &t);
  {
    std::string tenant, name, value;
    Query q(sql_, "SELECT tenant, name, value FROM tenant_labels");
    q.into(tenant).into(name).into(value);
    for (bool row = q.run(); row; row = q.next()) by_id.at(tenant)->labels.emplace(name, value);
  }
  {
    std::string tenant, plugin, grants;
    soci::indicator grants_ind = soci::i_ok;
    Query q(sql_, "SELECT tenant, plugin, grants FROM tenant_plugins");
    q.into(tenant).into(plugin).into(grants, grants_ind);
    for (bool row = q.run(); row; row = q.next()) {
      addPluginRow(*by_id.at(tenant), plugin, grants, grants_ind);
    }
  }
  state.keys = readKeys(sql_, "", [](Query&) {});
  state.certs = readCerts(sql_, "", [](Query&) {});
  {
    StoredPluginConfig c;
    Query q(sql_,
            "SELECT tenant, plugin, config FROM tenant_plugin_config ORDER BY tenant, plugin");
    q.into(c.tenant).into(c.plugin).into(c.json);
    for (bool row = q.run(); row; row = q.next()) state.plugin_configs.push_back(c);
  }
  return state;
}

std::optional<Plan> SystemDb::plan(const std::string& name) {
  QuotaValues quotas;
  Query q(sql_, "SELECT " + quotaColumns() + " FROM plans WHERE name = :n");
  q.use(name);
  quotas.bindInto(q);
  if (!q.run()) return std::nullopt;
  return Plan{name, quotas.get()};
}

void SystemDb::replacePlans(const std::vector<Plan>& plans) {
  std::vector<std::string> existing;
  {
    std::string name;
    Query q(sql_, "SELECT name FROM plans");
    q.into(name);
    for (bool row = q.run(); row; row = q.next()) existing.push_back(name);
  }
  for (const auto& name : existing) {
    bool kept = false;
    for (const auto& p : plans) kept = kept || p.name == name;
    if (!kept) Query(sql_, "DELETE FROM plans WHERE name = :n").use(name).run();
  }
  for (const auto& p : plans) {
    QuotaValues quotas = QuotaValues::of(p.quotas);
    // Update-then-insert instead of an upsert: portable to every SQL database.
    Query update(sql_, "UPDATE plans SET " + quotaAssignments() + " WHERE name = :n");
    quotas.bindUse(update);
    update.use(p.name).run();
    if (update.affectedRows() > 0) continue;
    Query insert(sql_, "INSERT INTO plans(name, " + quotaColumns() + ") VALUES(:n, " +
                           quotaPlaceholders() + ")");
    insert.use(p.name);
    quotas.bindUse(insert);
    insert.run();
  }
}

std::optional<std::string> SystemDb::tenantOnPlan(const std::string& plan) {
  std::string id;
  if (!Query(sql_, "SELECT id FROM tenants WHERE plan = :p ORDER BY id").use(plan).into(id).run()) {
    return std::nullopt;
  }
  return id;
}

std::optional<TenantRecord> SystemDb::tenant(const std::string& id) {
  auto rows = readTenants(sql_, " WHERE id = :id", [&](Query& q) { q.use(id); });
  if (rows.empty()) return std::nullopt;
  TenantRecord t = std::move(rows.front());
  {
    std::string name, value;
    Query q(sql_, "SELECT name, value FROM tenant_labels WHERE tenant = :t");
    q.use(id).into(name).into(value);
    for (bool row = q.run(); row; row = q.next()) t.labels.emplace(name, value);
  }
  {
    std::string plugin, grants;
    soci::indicator grants_ind = soci::i_ok;
    Query q(sql_, "SELECT plugin, grants FROM tenant_plugins WHERE tenant = :t");
    q.use(id).into(plugin).into(grants, grants_ind);
    for (bool row = q.run(); row; row = q.next()) addPluginRow(t, plugin, grants, grants_ind);
  }
  return t;
}

void SystemDb::insertTenant(const TenantRecord& t) {
  std::string status(tenantStatusName(t.status));
  long long created = t.created_at_ms;
  QuotaValues overrides = QuotaValues::of(t.overrides);
  Query q(sql_, "INSERT INTO tenants(id, plan, status, source, created_at_ms, " + quotaColumns() +
                    ") VALUES(:id, :plan, :status, :source, :created, " + quotaPlaceholders() +
                    ")");
  q.use(t.id).use(t.plan).use(status).use(t.source).use(created);
  overrides.bindUse(q);
  q.run();
  insertLabelsAndPlugins(sql_, t);
}

void SystemDb::updateTenant(const TenantRecord& t) {
  QuotaValues overrides = QuotaValues::of(t.overrides);
  Query q(sql_, "UPDATE tenants SET plan = :plan, " + quotaAssignments() + " WHERE id = :id");
  q.use(t.plan);
  overrides.bindUse(q);
  q.use(t.id).run();
  deleteLabelsAndPlugins(sql_, t.id);
  insertLabelsAndPlugins(sql_, t);
  // A plugin the tenant no longer enables takes its overrides with it.
  Query(sql_,
        "DELETE FROM tenant_plugin_config WHERE tenant = :t AND plugin NOT IN "
        "(SELECT plugin FROM tenant_plugins WHERE tenant = :t2)")
      .use(t.id)
      .use(t.id)
      .run();
}

void SystemDb::setStatus(const std::string& id, TenantStatus status) {
  std::string name(tenantStatusName(status));
  Query(sql_, "UPDATE tenants SET status = :s WHERE id = :id").use(name).use(id).run();
}

void SystemDb::removeTenant(const std::string& id) {
  Query(sql_, "DELETE FROM api_keys WHERE tenant = :t").use(id).run();
  Query(sql_, "DELETE FROM cert_credentials WHERE tenant = :t").use(id).run();
  Query(sql_, "DELETE FROM tenant_plugin_config WHERE tenant = :t").use(id).run();
  deleteLabelsAndPlugins(sql_, id);
  Query(sql_, "DELETE FROM tenants WHERE id = :t").use(id).run();
}

std::optional<StoredKey> SystemDb::key(const std::string& id) {
  auto rows = readKeys(sql_, " WHERE id = :id", [&](Query& q) { q.use(id); });
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

std::optional<StoredKey> SystemDb::keyByHash(const std::string& sha256_hex) {
  auto rows = readKeys(sql_, " WHERE sha256 = :h", [&](Query& q) { q.use(sha256_hex); });
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

void SystemDb::insertKey(const StoredKey& key) {
  long long created = key.info.created_at_ms;
  long long expires = key.info.expires_at_ms.value_or(0);
  soci::indicator expires_ind = key.info.expires_at_ms ? soci::i_ok : soci::i_null;
  long long revoked = key.info.revoked_at_ms.value_or(0);
  soci::indicator revoked_ind = key.info.revoked_at_ms ? soci::i_ok : soci::i_null;
  Query(sql_,
        "INSERT INTO api_keys(id, tenant, sha256, created_at_ms, expires_at_ms, revoked_at_ms) "
        "VALUES(:id, :t, :h, :c, :e, :r)")
      .use(key.info.id)
      .use(key.info.tenant)
      .use(key.sha256_hex)
      .use(created)
      .use(expires, expires_ind)
      .use(revoked, revoked_ind)
      .run();
}

uint64_t SystemDb::activeKeys(const std::string& tenant, int64_t now_ms) {
  long long now = now_ms;
  long long count = 0;
  Query(sql_,
        "SELECT COUNT(*) FROM api_keys WHERE tenant = :t AND revoked_at_ms IS NULL"
        " AND (expires_at_ms IS NULL OR expires_at_ms > :now)")
      .use(tenant)
      .use(now)
      .into(count)
      .run();
  return static_cast<uint64_t>(count);
}

void SystemDb::revokeKey(const std::string& id, int64_t at_ms) {
  long long at = at_ms;
  Query(sql_, "UPDATE api_keys SET revoked_at_ms = :at WHERE id = :id AND revoked_at_ms IS NULL")
      .use(at)
      .use(id)
      .run();
}

std::optional<StoredCert> SystemDb::cert(const std::string& id) {
  auto rows = readCerts(sql_, " WHERE id = :id", [&](Query& q) { q.use(id); });
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

std::optional<StoredCert> SystemDb::activeCertByLookup(const std::string& lookup_hex) {
  auto rows = readCerts(sql_, " WHERE lookup = :l AND revoked_at_ms IS NULL",
                        [&](Query& q) { q.use(lookup_hex); });
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

void SystemDb::insertCert(const StoredCert& cert) {
  std::string kind(certSelectorKindName(cert.info.selector.kind));
  long long created = cert.info.created_at_ms;
  long long expires = cert.info.expires_at_ms.value_or(0);
  soci::indicator expires_ind = cert.info.expires_at_ms ? soci::i_ok : soci::i_null;
  Query(sql_,
        "INSERT INTO cert_credentials(id, tenant, kind, value, issuer, lookup, created_at_ms,"
        " expires_at_ms) VALUES(:id, :t, :k, :v, :i, :l, :c, :e)")
      .use(cert.info.id)
      .use(cert.info.tenant)
      .use(kind)
      .use(cert.info.selector.value)
      .use(cert.info.selector.issuer)
      .use(cert.lookup_hex)
      .use(created)
      .use(expires, expires_ind)
      .run();
}

void SystemDb::revokeCert(const std::string& id, int64_t at_ms) {
  long long at = at_ms;
  Query(sql_,
        "UPDATE cert_credentials SET revoked_at_ms = :at WHERE id = :id AND revoked_at_ms IS NULL")
      .use(at)
      .use(id)
      .run();
}

void SystemDb::setPluginConfig(const std::string& tenant, const std::string& plugin,
                               const std::string& json, int64_t at_ms) {
  long long at = at_ms;
  removePluginConfig(tenant, plugin);
  Query(sql_,
        "INSERT INTO tenant_plugin_config(tenant, plugin, config, updated_at_ms) "
        "VALUES(:t, :p, :c, :u)")
      .use(tenant)
      .use(plugin)
      .use(json)
      .use(at)
      .run();
}

void SystemDb::removePluginConfig(const std::string& tenant, const std::string& plugin) {
  Query(sql_, "DELETE FROM tenant_plugin_config WHERE tenant = :t AND plugin = :p")
      .use(tenant)
      .use(plugin)
      .run();
}

}  // namespace trellis::tenants::internal
