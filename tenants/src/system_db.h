// The registry's tables in the system database. Every SQL statement the tenant registry
// runs lives in system_db.cc; the SQL is plain and portable (TEXT/BIGINT columns, hex
// digests, no upserts or SQLite-only functions), so a PostgreSQL SystemDb differs only in
// how the session is opened and how a write transaction begins (system_db_postgres.cc).
//
//   auto db = SystemDb::openSqlite("var/data/system.db");
//   auto tx = (*db)->transaction();
//   (*db)->insertTenant(record);
//   StoredState state = (*db)->load();
//   tx.commit();
//
// Methods other than openSqlite() throw std::exception on database failure. A SystemDb is
// not thread-safe: the registry calls it under its mutation mutex.
#pragma once

#include <soci/soci.h>

#include <array>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trellis/status.hpp"
#include "trellis/tenants/postgres.h"
#include "trellis/tenants/registry.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::tenants::internal {

struct StoredKey {
  KeyInfo info;
  std::string sha256_hex;  // lowercase
};

struct StoredCert {
  CertCredential info;
  std::string lookup_hex;  // the selector's lookup digest: indexed, unique among unrevoked
};

struct StoredPluginConfig {
  std::string tenant;
  std::string plugin;
  std::string json;  // the tenant's override object
};

// Everything the registry holds, each list sorted by its primary key.
struct StoredState {
  std::vector<Plan> plans;
  std::vector<TenantRecord> tenants;
  std::vector<StoredKey> keys;
  std::vector<StoredCert> certs;
  std::vector<StoredPluginConfig> plugin_configs;
};

class SystemDb {
 public:
  // Creates the file (mode 0600; its directory 0700 if created), enables WAL with
  // synchronous=FULL and a busy timeout, and migrates the schema. UNAVAILABLE on failure,
  // including a schema newer than this build knows.
  static Result<std::unique_ptr<SystemDb>> openSqlite(const std::filesystem::path& file);
  // The shared registry in PostgreSQL (schema trellis, created by postgres_schema::migrate;
  // this does not migrate). One dedicated session, reconnected when it breaks.
  // UNAVAILABLE if PostgreSQL cannot be reached.
  static Result<std::unique_ptr<SystemDb>> openPostgres(const PostgresUrl& url);

  // The newest schema version this build creates and reads.
  static int schemaVersion();
  // The registry's migrations (version N = the first N steps). Their SQL is portable:
  // the PostgreSQL schema (postgres_schema.cc) applies the same steps.
  static const std::vector<std::vector<std::string>>& migrationSteps();

  // One write transaction; rolled back unless committed. On PostgreSQL it starts by
  // bumping the registry's change counter, whose row lock serialises registry writers on
  // every host (as BEGIN IMMEDIATE does on SQLite) and tells other hosts to reload.
  sql::WriteTransaction transaction() {
    reconnectIfBroken();
    return sql::WriteTransaction(sql_, begin_, after_begin_);
  }
  // A read-only transaction that sees one consistent state (load() plus changeVersion()).
  sql::WriteTransaction readTransaction();
  // The change counter: differs after any registry write by any host. Nothing for
  // SQLite, where this process is the only writer that matters.
  std::optional<int64_t> changeVersion();
  // PostgreSQL: replaces a session the server dropped (restart, network). Throws if it
  // cannot connect. No-op for SQLite.
  void reconnectIfBroken();

  StoredState load();

  std::optional<Plan> plan(const std::string& name);
  // Inserts or updates each plan and deletes the plans not listed.
  void replacePlans(const std::vector<Plan>& plans);
  // Some tenant on `plan`, if any.
  std::optional<std::string> tenantOnPlan(const std::string& plan);

  std::optional<TenantRecord> tenant(const std::string& id);
  void insertTenant(const TenantRecord& t);
  // Plan, labels, plugins and overrides; the rest of the row is kept.
  void updateTenant(const TenantRecord& t);
  void setStatus(const std::string& id, TenantStatus status);
  // The tenant with its labels, plugins and keys.
  void removeTenant(const std::string& id);

  std::optional<StoredKey> key(const std::string& id);
  std::optional<StoredKey> keyByHash(const std::string& sha256_hex);
  void insertKey(const StoredKey& key);
  // Keys of `tenant` neither revoked nor expired at `now_ms`.
  uint64_t activeKeys(const std::string& tenant, int64_t now_ms);
  void revokeKey(const std::string& id, int64_t at_ms);

  std::optional<StoredCert> cert(const std::string& id);
  // The unrevoked credential with this lookup digest, if any.
  std::optional<StoredCert> activeCertByLookup(const std::string& lookup_hex);
  void insertCert(const StoredCert& cert);
  void revokeCert(const std::string& id, int64_t at_ms);

  // A tenant's overrides of one plugin's configuration, replacing any before.
  void setPluginConfig(const std::string& tenant, const std::string& plugin,
                       const std::string& json, int64_t at_ms);
  void removePluginConfig(const std::string& tenant, const std::string& plugin);

 private:
  explicit SystemDb(const char* begin) : begin_(begin) {}
  void migrate();

  soci::session sql_;
  const char* begin_;                  // the statement that starts a write transaction
  const char* after_begin_ = nullptr;  // and the one right after it, if any
  std::optional<PostgresUrl> postgres_;
};

}  // namespace trellis::tenants::internal
