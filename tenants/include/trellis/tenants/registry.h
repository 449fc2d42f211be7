// The tenant registry: tenants, their plans, labels, enabled plugins and API keys,
// persisted in the system database. The data plane resolves keys against an immutable
// in-memory snapshot that is swapped after every change, so a lookup takes no lock.
//
//   auto reg = TenantRegistry::openSqlite("var/data/system.db");
//   auto reg = TenantRegistry::openPostgres(*parsePostgresUrl("postgresql://app@db/trellis"));
//   (*reg)->definePlans({{"free", {.requests_per_second = 10, .burst = 20}}});
//   (*reg)->create({.id = "acme", .plan = "free", .plugins = {"trellis/hello"}});
//   auto key = (*reg)->createKey("acme", std::nullopt);   // key->secret: shown once
//   auto r = (*reg)->resolve(key->secret);                 // r.outcome == kOk
//
// Keys look like "trk_<8 hex id>_<43 base64url secret chars>". Only the SHA-256 of the
// whole key is stored; the id (the part an operator sees in listings) is not secret.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trellis/status.hpp"
#include "trellis/tenants/cert_selector.h"

namespace trellis::tenants {

struct PostgresUrl;

// Per-tenant limits; an unset field means "unlimited".
struct Quotas {
  std::optional<uint64_t> requests_per_second;  // sustained rate
  std::optional<uint64_t> burst;                // bucket size; default = requests_per_second
  std::optional<uint64_t> max_concurrent;       // requests in flight at once
  std::optional<uint64_t> max_body_bytes;       // request body
  std::optional<uint64_t> max_storage_bytes;    // KV keys + values, all plugins
  std::optional<uint64_t> max_host_calls;       // plugin host calls per request
  // Self-service key limits (the tenancy plugin): active keys a tenant may hold, and the
  // longest lifetime of a key it creates itself. Operators creating keys are not bound.
  std::optional<uint64_t> max_api_keys;
  std::optional<uint64_t> max_key_ttl_seconds;
  // Scheduled jobs (ABI 1.2 job_schedule) a tenant may have at once, all plugins together.
  std::optional<uint64_t> max_jobs;
  // Outbound HTTP plugins make for the tenant (ABI 1.2 egress), per host.
  std::optional<uint64_t> egress_requests_per_second;
  std::optional<uint64_t> egress_bytes_per_day;  // request + response bodies, UTC day

  // Fields set in `overrides` replace ours.
  Quotas overlaidWith(const Quotas& overrides) const;
  friend bool operator==(const Quotas&, const Quotas&) = default;
};

// Every quota by the name it has in trellis.yaml, the admin API, the CLI and the system
// database, so all of them stay in step.
struct QuotaField {
  const char* name;
  std::optional<uint64_t> Quotas::*member;
};
inline constexpr std::array<QuotaField, 11> kQuotaFields{{
    {"requests_per_second", &Quotas::requests_per_second},
    {"burst", &Quotas::burst},
    {"max_concurrent", &Quotas::max_concurrent},
    {"max_body_bytes", &Quotas::max_body_bytes},
    {"max_storage_bytes", &Quotas::max_storage_bytes},
    {"max_host_calls", &Quotas::max_host_calls},
    {"max_api_keys", &Quotas::max_api_keys},
    {"max_key_ttl_seconds", &Quotas::max_key_ttl_seconds},
    {"max_jobs", &Quotas::max_jobs},
    {"egress_requests_per_second", &Quotas::egress_requests_per_second},
    {"egress_bytes_per_day", &Quotas::egress_bytes_per_day},
}};

struct Plan {
  std::string name;  // [a-z0-9][a-z0-9-]{0,62}
  Quotas quotas;
};

enum class TenantStatus { kActive, kSuspended };
std::string_view tenantStatusName(TenantStatus s);

struct TenantRecord {
  std::string id;                             // [a-z0-9][a-z0-9-]{0,62}
  std::string plan = "default";               // must name a defined plan
  std::map<std::string, std::string> labels;  // keys [a-z0-9_.-]{1,63}, values <= 256 bytes
  std::set<std::string> plugins;              // plugin ids this tenant enabled
  // Capability grants per enabled plugin. A plugin not listed may use every capability
  // its manifest requests; a listed one only those both requested and granted here.
  std::map<std::string, std::set<std::string>> grants;
  Quotas overrides;  // on top of the plan
  TenantStatus status = TenantStatus::kActive;
  std::string source = "api";  // "api" or "config" (declared in trellis.yaml)
  int64_t created_at_ms = 0;   // set by create()
  friend bool operator==(const TenantRecord&, const TenantRecord&) = default;
};

struct KeyInfo {
  std::string id;  // unique: 8 hex chars; imported hashes: "cfg" + hash prefix (importKeyHash)
  std::string tenant;
  int64_t created_at_ms = 0;
  std::optional<int64_t> expires_at_ms;
  std::optional<int64_t> revoked_at_ms;
};

// A client certificate as a tenant credential, beside API keys: the selector names the
// certificate, the tenant is whose data it reaches. Its principal is "cert:<id>".
struct CertCredential {
  std::string id;  // unique: 8 hex chars
  std::string tenant;
  CertSelector selector;
  int64_t created_at_ms = 0;
  std::optional<int64_t> expires_at_ms;
  std::optional<int64_t> revoked_at_ms;
};

struct NewKey {
  KeyInfo info;
  std::string secret;  // the whole key; never stored, shown once
};

// What the data plane needs about a tenant, frozen for the lifetime of a snapshot.
struct TenantView {
  std::string id;
  std::string plan;
  std::map<std::string, std::string> labels;
  std::set<std::string, std::less<>> plugins;
  std::map<std::string, std::set<std::string, std::less<>>, std::less<>> grants;
  Quotas quotas;  // plan quotas overlaid with the tenant's overrides
  TenantStatus status = TenantStatus::kActive;
  // The tenant's overrides of an enabled plugin's configuration (a JSON object), by plugin
  // id; the kernel lays them over the plugin's global config (setPluginConfig).
  std::map<std::string, std::string, std::less<>> plugin_config;
  bool hasPlugin(std::string_view plugin_id) const { return plugins.count(plugin_id) > 0; }
  // Whether this tenant lets `plugin_id` use `capability` (the manifest must request it
  // too; the kernel checks both).
  bool grantsCapability(std::string_view plugin_id, std::string_view capability) const {
    auto it = grants.find(plugin_id);
    return it == grants.end() || it->second.count(capability) > 0;
  }
};

struct Resolution {
  enum class Outcome {
    kOk,
    kUnknownKey,
    kExpiredKey,
    kRevokedKey,
    kSuspended
  } outcome = Outcome::kUnknownKey;
  // Set for kOk and kSuspended; valid while `snapshot` is held.
  const TenantView* tenant = nullptr;
  // The key that resolved (kOk, kSuspended), or "cert:<id>" for a certificate credential;
  // same lifetime.
  std::string_view key_id;
  std::shared_ptr<const void> snapshot;  // keeps `tenant` alive
};

// Declared tenants differ from the registry: reported, never silently overwritten.
struct Drift {
  std::string tenant;
  std::string detail;  // e.g. "plan is \"pro\" in the registry but \"free\" in trellis.yaml"
};

// A whole desired state (`trellis config apply`): what the file declares, nothing else.
struct DesiredTenant {
  TenantRecord record;  // id, plan, labels, plugins, grants, overrides; the rest is ignored
  std::vector<std::string> key_hashes;  // SHA-256 hex of keys it must hold; imported if missing
  // The tenant's overrides (JSON objects, checked by the caller) by plugin id; a plugin
  // not listed has none afterwards.
  std::map<std::string, std::string> plugin_config;
};

struct DesiredState {
  std::optional<std::vector<Plan>> plans;  // the whole set; unset: plans are left alone
  std::vector<DesiredTenant> tenants;
};

// One step of applying a desired state: `create tenant "acme"`, `update plan "free"`.
struct StateChange {
  std::string action;  // "create", "update", "remove", "import key", "set config", …
  std::string object;  // `tenant "acme"`, `plan "free"`, `key "cfg1a2b3c4d" of "acme"`
  std::vector<std::string> details;  // what changes, one line each (may be empty)
};

struct StatePlan {
  std::vector<StateChange> changes;
  // What the registry holds that the file does not say (a tenant not declared, a key not
  // listed): reported, left as it is.
  std::vector<Drift> drift;
};

class TenantRegistry {
 public:
  virtual ~TenantRegistry() = default;

  // Plans come from trellis.yaml and replace the previous set. INVALID for a bad name,
  // burst < rate, a limit of 0 (unset means unlimited), or a change that would leave some
  // tenant's overrides with burst < rate; a plan still used by a tenant cannot disappear
  // (CONFLICT). "default" always exists: left out of the set, it is unlimited.
  virtual Status definePlans(std::vector<Plan> plans) = 0;
  // Creates or updates these plans and keeps every other one (trellis.yaml's plans at
  // start: a plan a state file or the API added survives a restart). Same checks.
  virtual Status upsertPlans(std::vector<Plan> plans) = 0;
  virtual std::vector<Plan> plans() const = 0;

  // CONFLICT if the id exists; INVALID for a bad id, unknown plan, bad labels, bad plugin
  // id. Sets created_at_ms.
  virtual Result<TenantRecord> create(TenantRecord tenant) = 0;
  // Replaces plan, labels, plugins and overrides (id, status, source, created_at kept).
  // NOT_FOUND if absent.
  virtual Result<TenantRecord> update(TenantRecord tenant) = 0;
  virtual Result<TenantRecord> get(std::string_view id) const = 0;
  virtual std::vector<TenantRecord> list() const = 0;
  virtual Status setStatus(std::string_view id, TenantStatus status) = 0;
  // Removes the tenant and its keys (the caller removes its data). NOT_FOUND if absent.
  virtual Status remove(std::string_view id) = 0;

  // A new key for an existing tenant; `ttl_seconds` unset = never expires, else >= 1.
  // With `max_active_keys`, QUOTA_EXCEEDED (creating nothing) if the tenant already holds
  // that many unrevoked, unexpired keys; checked in the same transaction as the insert.
  virtual Result<NewKey> createKey(std::string_view tenant, std::optional<int64_t> ttl_seconds,
                                   std::optional<uint64_t> max_active_keys = std::nullopt) = 0;
  // Replaces `old_key_id` by a new key in one transaction: the new key is created and the
  // old one revoked together, or neither. NOT_FOUND unless the old key is the tenant's and
  // active. `ttl_seconds` as for createKey.
  virtual Result<NewKey> rotateKey(std::string_view tenant, std::string_view old_key_id,
                                   std::optional<int64_t> ttl_seconds) = 0;
  // Registers a key given only by its SHA-256 (declared in trellis.yaml); idempotent: the
  // same hash again returns the stored key as it is (a revoked one stays revoked).
  // CONFLICT if another tenant has that hash.
  virtual Result<KeyInfo> importKeyHash(std::string_view tenant, std::string_view sha256_hex) = 0;
  virtual std::vector<KeyInfo> listKeys(std::string_view tenant) const = 0;
  // NOT_FOUND for an unknown id; revoking twice is OK.
  virtual Status revokeKey(std::string_view key_id) = 0;

  // Maps certificates matching `selector` to `tenant`. `expires_at_ms` unset: never; else
  // in the future. NOT_FOUND for an unknown tenant; CONFLICT if an unrevoked credential
  // (of any tenant: then without naming it) already has the same selector.
  virtual Result<CertCredential> addCertCredential(std::string_view tenant, CertSelector selector,
                                                   std::optional<int64_t> expires_at_ms) = 0;
  virtual std::vector<CertCredential> listCertCredentials(std::string_view tenant) const = 0;
  // NOT_FOUND unless `id` is one of the tenant's credentials; revoking twice is OK.
  virtual Status revokeCertCredential(std::string_view tenant, std::string_view id) = 0;

  // Sets (a JSON object) or, with nullopt, removes the tenant's overrides of one enabled
  // plugin's configuration. The registry checks only their place and size (at most
  // kMaxPluginConfigBytes); the caller checks them against the plugin's schema. NOT_FOUND
  // for an unknown tenant, INVALID if the tenant does not enable the plugin. Disabling the
  // plugin (update) or deleting the tenant removes them.
  static constexpr size_t kMaxPluginConfigBytes = 64 * 1024;
  virtual Status setPluginConfig(std::string_view tenant, std::string_view plugin,
                                 std::optional<std::string> override_json) = 0;

  // Creates declared tenants that are missing (source "config") and reports those whose
  // registry state differs from the declaration. The registry wins: an existing tenant is
  // never changed here. Also drift: a declared tenant created through the API, and a
  // "config" tenant no longer declared. Status is not compared (suspension is operational).
  virtual Result<std::vector<Drift>> applyDeclared(const std::vector<TenantRecord>& declared) = 0;

  // Brings the registry to `state` in one transaction: plans (if given) replaced, declared
  // tenants created or updated, missing key hashes imported, plugin overrides set or
  // removed. All or nothing: any error (an unknown plan, a plan still in use, a key hash
  // another tenant holds) changes nothing and names the object. With `dry_run` the same
  // work runs and is rolled back, so the plan is exactly what an apply would do.
  virtual Result<StatePlan> applyState(const DesiredState& state, bool dry_run) = 0;

  // Hot path: never waits for a mutation, allocates nothing beyond the shared_ptr copy.
  // Empty, oversized and malformed keys are kUnknownKey.
  virtual Resolution resolve(std::string_view presented_key) const = 0;
  virtual std::shared_ptr<const TenantView> view(std::string_view id) const = 0;
  // Hot path, like resolve(): the tenant of a verified client certificate, looked up by its
  // pin, then its SPIFFE ID, then its subject and issuer, each an O(1) index lookup. The
  // first unrevoked, unexpired credential decides; a revoked pin refuses the certificate
  // outright (a pin names that one certificate). kUnknownKey if nothing maps it, else
  // kRevokedKey / kExpiredKey for the most specific credential that did.
  virtual Resolution resolveCertificate(const PresentedCertificate& cert) const = 0;

  // SQLite system database; created with mode 0600 if missing.
  static Result<std::unique_ptr<TenantRegistry>> openSqlite(const std::filesystem::path& db);
  // The registry shared by every host on one PostgreSQL database (schema trellis, created
  // by postgres_schema::migrate). Writes of any host bump a change counter; this host
  // checks it every `poll_interval` and reloads its snapshot when it moved, so another
  // host's change (a revoked key, a suspended tenant) takes effect here within about one
  // interval. While PostgreSQL is unreachable the last snapshot keeps serving;
  // `on_refresh` (if set, called from the polling thread) hears when refreshing starts
  // failing (the error) and when it works again (OK), once per change, for the log.
  static Result<std::unique_ptr<TenantRegistry>> openPostgres(
      const PostgresUrl& url, std::chrono::milliseconds poll_interval = std::chrono::seconds(1),
      std::function<void(const Status&)> on_refresh = nullptr);
};

}  // namespace trellis::tenants
