// The shared PostgreSQL schema. Two components are versioned separately in
// trellis.schema_version: "registry" applies the tenant registry's own portable migrations
// (SystemDb::migrationSteps(), the same steps SQLite's system.db gets), "storage" holds
// what only the shared database needs: per-tenant data under row-level security and the
// registry's change counter. Both lists are append-only.
#include <soci/postgresql/soci-postgresql.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "system_db.h"
#include "trellis/tenants/postgres.h"

namespace trellis::tenants::postgres_schema {
namespace {

using sql::exec;
using sql::Query;

// Any constant both old and new builds agree on; "trellis" in ASCII.
constexpr const char* kMigrationLock = "SELECT pg_advisory_xact_lock(32765855592802675)";

// Tables with tenant data: row-level security, FORCEd so that even the table owner is
// bound, with one policy for every command. current_setting(..., true) is NULL when the
// transaction never set a tenant, and NULL matches no row.
constexpr const char* kBlobTables[] = {"blob_objects", "blob_chunks", "blob_uploads", "blob_usage"};

std::vector<std::string> tenantTable(const std::string& table) {
  const std::string predicate = "(tenant_id = current_setting('trellis.tenant', true))";
  return {
      "ALTER TABLE " + table + " ENABLE ROW LEVEL SECURITY",
      "ALTER TABLE " + table + " FORCE ROW LEVEL SECURITY",
      "CREATE POLICY tenant_isolation ON " + table + " USING " + predicate + " WITH CHECK " +
          predicate,
  };
}

const std::vector<std::vector<std::string>>& storageSteps() {
  static const std::vector<std::vector<std::string>> kSteps = [] {
    std::vector<std::string> v1 = {
        // Bumped by every registry write transaction (which also takes its row lock, so
        // registry writers on all hosts are serialised); hosts poll it to refresh.
        "CREATE TABLE registry_version("
        " id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
        "INSERT INTO registry_version(id, version) VALUES (1, 0)",
        // bytea compares bytewise (memcmp), the order list() promises.
        "CREATE TABLE kv("
        " tenant_id TEXT NOT NULL, plugin TEXT NOT NULL, key BYTEA NOT NULL,"
        " value BYTEA NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (tenant_id, plugin, key))",
        // One row per tenant: key + value bytes, charged with a conditional update in the
        // write's transaction (the row lock makes the quota exact across hosts).
        "CREATE TABLE kv_usage(tenant_id TEXT PRIMARY KEY, bytes BIGINT NOT NULL)",
    };
    for (const char* t : {"kv", "kv_usage"}) {
      for (auto& s : tenantTable(t)) v1.push_back(std::move(s));
    }
    std::vector<std::string> v2 = {
        // Shared rate quotas (rate_leases.h): one token bucket per tenant, refilled by the
        // database clock. Counters only, no tenant data, so no row-level security.
        "CREATE TABLE rate_buckets("
        " tenant_id TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL,"
        " refilled_at TIMESTAMPTZ NOT NULL)",
    };
    return std::vector<std::vector<std::string>>{v1, v2};
  }();
  return kSteps;
}

// Blob storage (kernel/src/services/blobs): heads, 1 MiB content rows, uploads in
// progress and per-tenant usage, all tenant data under row-level security.
const std::vector<std::vector<std::string>>& blobSteps() {
  static const std::vector<std::vector<std::string>> kSteps = [] {
    std::vector<std::string> v1 = {
        "CREATE TABLE blob_objects("
        " tenant_id TEXT NOT NULL, plugin TEXT NOT NULL, key BYTEA NOT NULL,"
        " object_id TEXT NOT NULL, size BIGINT NOT NULL, chunk_size INTEGER NOT NULL,"
        " sha256 TEXT NOT NULL, content_type TEXT NOT NULL, metadata TEXT NOT NULL,"
        " created_ms BIGINT NOT NULL, PRIMARY KEY (tenant_id, plugin, key))",
        "CREATE TABLE blob_chunks("
        " tenant_id TEXT NOT NULL, object_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " data BYTEA NOT NULL, PRIMARY KEY (tenant_id, object_id, seq))",
        "CREATE TABLE blob_uploads("
        " tenant_id TEXT NOT NULL, object_id TEXT NOT NULL,"
        " touched_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, object_id))",
        "CREATE TABLE blob_usage(tenant_id TEXT PRIMARY KEY, bytes BIGINT NOT NULL)",
    };
    for (const char* t : kBlobTables) {
      for (auto& s : tenantTable(t)) v1.push_back(std::move(s));
    }
    return std::vector<std::vector<std::string>>{v1};
  }();
  return kSteps;
}

// Durable jobs (kernel/src/services/jobs/postgres_job_store.cc). A job's definition, payload
// and history are tenant data: `jobs`, under row-level security. What hosts need to find
// and claim due firings across tenants is in `job_schedule`: ids, due times and leases,
// no payload, no names, so no row-level security (like rate_buckets).
const std::vector<std::vector<std::string>>& jobSteps() {
  static const std::vector<std::vector<std::string>> kSteps = [] {
    std::vector<std::string> v1 = {
        "CREATE TABLE jobs("
        " tenant_id TEXT NOT NULL, plugin TEXT NOT NULL, name TEXT NOT NULL,"
        " job_id TEXT NOT NULL UNIQUE, kind INTEGER NOT NULL, interval_ms BIGINT NOT NULL,"
        " cron TEXT NOT NULL, payload BYTEA NOT NULL, max_attempts INTEGER NOT NULL,"
        " budget_ms INTEGER NOT NULL, traceparent TEXT NOT NULL, tracestate TEXT NOT NULL,"
        " attempts INTEGER NOT NULL, runs BIGINT NOT NULL, failures BIGINT NOT NULL,"
        " last_error TEXT NOT NULL, last_run_ms BIGINT NOT NULL, dead BOOLEAN NOT NULL,"
        " PRIMARY KEY (tenant_id, plugin, name))",
        // next_run_ms -1: nothing due (dead letter). A lease is held by the host running
        // the firing until lease_until (the database clock); a host that dies lets it lapse.
        "CREATE TABLE job_schedule("
        " job_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, plugin TEXT NOT NULL,"
        " next_run_ms BIGINT NOT NULL, lease_ms BIGINT NOT NULL,"
        " lease_owner TEXT NOT NULL DEFAULT '', lease_token TEXT NOT NULL DEFAULT '',"
        " lease_until TIMESTAMPTZ)",
        "CREATE INDEX job_schedule_due ON job_schedule(next_run_ms)",
    };
    for (auto& s : tenantTable("jobs")) v1.push_back(std::move(s));
    return std::vector<std::vector<std::string>>{v1};
  }();
  return kSteps;
}

// Egress bytes per tenant and UTC day (kernel/src/services/egress), shared so that
// egress_bytes_per_day holds across hosts. Counters only: no row-level security.
const std::vector<std::vector<std::string>>& egressSteps() {
  static const std::vector<std::vector<std::string>> kSteps = {{
      "CREATE TABLE egress_usage("
      " tenant_id TEXT NOT NULL, day BIGINT NOT NULL, bytes BIGINT NOT NULL,"
      " PRIMARY KEY (tenant_id, day))",
  }};
  return kSteps;
}

// Documents of the control plane every host must read alike (kernel/src/admin/
// shared_document.h): admin principals and system grants. Operator data, no tenant data,
// so no row-level security. A NULL body: the row exists (to be locked) but was never written.
const std::vector<std::vector<std::string>>& controlSteps() {
  static const std::vector<std::vector<std::string>> kSteps = {{
      "CREATE TABLE control_documents("
      " name TEXT PRIMARY KEY, body TEXT, version BIGINT NOT NULL)",
  }};
  return kSteps;
}

struct Component {
  const char* name;
  const std::vector<std::vector<std::string>>& steps;
};

std::vector<Component> components() {
  return {{"registry", internal::SystemDb::migrationSteps()},
          {"storage", storageSteps()},
          {"blobs", blobSteps()},
          {"jobs", jobSteps()},
          {"egress", egressSteps()},
          {"control", controlSteps()}};
}

std::string quoteIdent(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// The stored version of `component`, 0 if none.
int storedVersion(soci::session& sql, const std::string& component) {
  int version = 0;
  if (!Query(sql, "SELECT version FROM trellis.schema_version WHERE component = :c")
           .use(component)
           .into(version)
           .run()) {
    return 0;
  }
  return version;
}

// Every role the app role is a member of, directly or through other roles, however the
// membership was granted (inheriting privileges, only SET ROLE, or only ADMIN): any of them
// it can use, or grant itself back, so each counts as the app role itself. One row per
// role, with the shortest membership path.
constexpr const char* kReachableRoles = R"(
WITH RECURSIVE reach(oid, path, depth) AS (
  SELECT oid, rolname::text, 0 FROM pg_roles WHERE rolname = current_user
  UNION ALL
  SELECT m.roleid, reach.path || ' -> ' || r.rolname, reach.depth + 1
  FROM reach JOIN pg_auth_members m ON m.member = reach.oid
  JOIN pg_roles r ON r.oid = m.roleid
  WHERE reach.depth < 64
), shortest AS (
  SELECT DISTINCT ON (oid) oid, path, depth FROM reach ORDER BY oid, depth
)
SELECT s.path, r.rolname,
  CAST(r.rolsuper AS INTEGER), CAST(r.rolbypassrls AS INTEGER),
  CAST(r.rolcreaterole AND current_setting('server_version_num')::int < 160000 AS INTEGER),
  CAST(pg_has_role(current_user, r.oid, 'USAGE') AS INTEGER),
  COALESCE((SELECT string_agg(c.relname, ', ' ORDER BY c.relname) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'trellis' AND c.relkind IN ('r', 'p') AND c.relowner = r.oid), ''),
  CAST(EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = 'trellis' AND n.nspowner = r.oid)
       AS INTEGER)
FROM shortest s JOIN pg_roles r ON r.oid = s.oid
ORDER BY s.depth, r.rolname)";

// Refuses an app role that is, or through role membership can act as, a role that gets
// past row-level security: a superuser, a BYPASSRLS role, the owner of a Trellis table or
// of the schema (ALTER TABLE ... NO FORCE ROW LEVEL SECURITY), or, before PostgreSQL 16,
// a CREATEROLE role (it may grant itself any of those). The message names the path.
Status checkAppRole(soci::session& sql, const std::string& app_user) {
  std::string path, role, owned;
  int super = 0, bypass = 0, createrole = 0, inherits = 0, owns_schema = 0;
  Query q(sql, kReachableRoles);
  q.into(path).into(role).into(super).into(bypass).into(createrole).into(inherits).into(owned);
  q.into(owns_schema);
  for (bool row = q.run(); row; row = q.next()) {
    std::string what;
    if (super) {
      what = "a superuser";
    } else if (bypass) {
      what = "BYPASSRLS";
    } else if (!owned.empty()) {
      what = "the owner of " + owned + " in schema trellis";
    } else if (owns_schema) {
      what = "the owner of schema trellis";
    } else if (createrole) {
      what = "CREATEROLE (before PostgreSQL 16 it can grant itself any role)";
    } else {
      continue;
    }
    const std::string who = "storage.url: role \"" + app_user + "\"";
    const std::string why =
        ", so it could get past row-level security and reach every tenant's data. Serve with "
        "a role that is none of these and belongs to no role that is (see docs/admin-guide.md)";
    if (path == role) {
      if (!owned.empty())
        return Status::invalid(who + " owns " + owned + " in schema trellis" + why);
      return Status::invalid(who + " is " + what + why);
    }
    return Status::invalid(
        who + " is a member of \"" + role + "\" (" + path + ", " +
        (inherits ? "inheriting its privileges" : "not inherited, but a membership it can use") +
        "), which is " + what + why + "; REVOKE that membership");
  }
  return Status::ok();
}

}  // namespace

Status migrate(const PostgresUrl& owner, const std::string& app_role) {
  const std::string where = "cannot apply the Trellis schema to " + owner.redacted();
  if (owner.user == app_role) {
    return Status::invalid(where + ": storage.owner_url and storage.url use the same role \"" +
                           app_role + "\"; the role trellisd serves with must not own the tables");
  }
  try {
    soci::session sql;
    connectPostgres(sql, owner);
    // The advisory lock serialises hosts starting at once; DDL is transactional, so a
    // failed step leaves the previous version intact.
    sql::WriteTransaction tx(sql, "BEGIN", kMigrationLock);
    exec(sql, "CREATE SCHEMA IF NOT EXISTS trellis");
    exec(sql,
         "CREATE TABLE IF NOT EXISTS trellis.schema_version("
         " component TEXT PRIMARY KEY, version INTEGER NOT NULL)");
    for (const auto& c : components()) {
      const int current = storedVersion(sql, c.name);
      const int latest = static_cast<int>(c.steps.size());
      if (current > latest) {
        return Status::unavailable(where + ": its " + c.name + " schema is version " +
                                   std::to_string(current) + ", newer than this build (" +
                                   std::to_string(latest) + ")");
      }
      if (current == latest) continue;
      for (size_t v = static_cast<size_t>(current); v < c.steps.size(); ++v) {
        for (const auto& statement : c.steps[v]) exec(sql, statement);
      }
      const std::string name = c.name;
      Query(sql, "DELETE FROM trellis.schema_version WHERE component = :c").use(name).run();
      Query(sql, "INSERT INTO trellis.schema_version(component, version) VALUES (:c, :v)")
          .use(name)
          .use(latest)
          .run();
    }
    // The app role gets data access only: it owns nothing, so it can neither alter the
    // tables nor switch row-level security off.
    const std::string app = quoteIdent(app_role);
    exec(sql, "GRANT USAGE ON SCHEMA trellis TO " + app);
    exec(sql, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA trellis TO " + app);
    exec(sql, "REVOKE INSERT, UPDATE, DELETE ON schema_version FROM " + app);
    tx.commit();
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::unavailable(where + ": " + scrubbed(e.what(), owner.password));
  }
}

Status verify(PostgresPool& app) {
  const PostgresUrl& url = app.url();
  const std::string where = "PostgreSQL database \"" + url.database + "\" at " + url.endpoint();
  auto lease = app.acquire();
  if (!lease) return lease.status();
  soci::session& sql = lease->session();
  try {
    if (Status s = checkAppRole(sql, url.user); !s) return s;
    int exists = 0;
    Query(sql, "SELECT CASE WHEN to_regclass('trellis.schema_version') IS NULL THEN 0 ELSE 1 END")
        .into(exists)
        .run();
    if (!exists) {
      return Status::unavailable(where +
                                 " has no Trellis schema: start trellisd once with "
                                 "storage.owner_url (the role that owns the schema) to create it");
    }
    for (const auto& c : components()) {
      const int stored = storedVersion(sql, c.name);
      const int latest = static_cast<int>(c.steps.size());
      if (stored < latest) {
        return Status::unavailable(where + " has " + c.name + " schema version " +
                                   std::to_string(stored) + " but this build needs " +
                                   std::to_string(latest) +
                                   ": start trellisd once with storage.owner_url to upgrade it");
      }
      if (stored > latest) {
        return Status::unavailable(where + " has " + c.name + " schema version " +
                                   std::to_string(stored) + ", newer than this build (" +
                                   std::to_string(latest) + ")");
      }
    }
    std::string unforced;
    {
      std::string table;
      Query q(sql,
              "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
              "WHERE n.nspname = 'trellis' AND c.relname IN ('kv', 'kv_usage', 'blob_objects', "
              "'blob_chunks', 'blob_uploads', 'blob_usage', 'jobs') "
              "AND NOT (c.relrowsecurity AND c.relforcerowsecurity) ORDER BY c.relname");
      q.into(table);
      for (bool row = q.run(); row; row = q.next()) {
        unforced += (unforced.empty() ? "" : ", ") + table;
      }
    }
    if (!unforced.empty()) {
      return Status::unavailable(where + ": row-level security is not forced on " + unforced +
                                 "; refusing to serve tenants from it");
    }
    return Status::ok();
  } catch (const std::exception& e) {
    return app.unavailable("checking the schema", e);
  }
}

}  // namespace trellis::tenants::postgres_schema
