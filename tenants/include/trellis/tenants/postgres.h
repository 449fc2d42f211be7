// PostgreSQL plumbing shared by everything that stores state in PostgreSQL: the tenant
// registry, the kernel's KV store and (later) leased rate quotas. It parses the operator's
// `storage.url` / `storage.owner_url`, keeps passwords out of every message, hands out
// pooled SOCI sessions, and owns the shared schema (migrations, row-level security).
//
//   auto url = parsePostgresUrl("postgresql://app:secret@db:5432/trellis");   // INVALID names
//   auto pool = PostgresPool::open(*url, {.size = 8});                       // the problem
//   Status s = (*pool)->transaction("lease renewal", "acme", [&](soci::session& sql) {
//     sql::Query(sql, "UPDATE rate_leases SET ... WHERE tenant_id = :t").use(t).run();
//     return Status::ok();                       // anything else rolls back
//   });
//
// Every table lives in the schema `trellis`; pooled sessions run with search_path=trellis.
// Tables holding tenant data (kv, kv_usage, blob_*) have a tenant_id column and FORCE ROW LEVEL
// SECURITY with the policy tenant_id = current_setting('trellis.tenant'): a session that
// has not set the tenant for its transaction (transaction() below) sees no rows. New
// tables are new steps in postgres_schema.cc.
#pragma once

#include <soci/soci.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"
#include "trellis/tenants/sql_statement.h"

namespace trellis::tenants {

// A parsed postgresql:// URL. The password is only ever used to connect: redacted(),
// endpoint() and every error message built by this module leave it out.
struct PostgresUrl {
  std::string user;
  std::string password;  // may be empty (trust, peer, .pgpass, client certificates)
  std::string host;      // name, IPv4 address, or IPv6 address without brackets
  uint16_t port = 5432;
  std::string database;
  std::map<std::string, std::string> params;  // allowed: see parsePostgresUrl

  // "postgresql://user:***@host:port/db?sslmode=require": safe for logs and errors.
  std::string redacted() const;
  // "host:port" ("[v6]:port"): how messages name the server.
  std::string endpoint() const;
  // libpq keyword/value connection string with the password, search_path=trellis and a
  // connect_timeout (5 s unless the URL sets one). Never log this.
  std::string conninfo() const;
};

// postgresql://user[:password]@host[:port]/database[?param=value&...] (also postgres://).
// user, password and database may be percent-encoded. Query parameters other than
// sslmode, sslrootcert, sslcert, sslkey, ssl_min_protocol_version (TLSv1.2 or TLSv1.3; the
// default is TLSv1.2), connect_timeout and application_name are refused
// (options in particular: the schema and row-level security settings are not negotiable).
// INVALID with a message that names the problem and never contains the password.
Result<PostgresUrl> parsePostgresUrl(std::string_view url);

// `text` with every occurrence of `secret` (if non-empty) replaced by "***", and line
// breaks folded into spaces: libpq's multi-line errors become one log line.
std::string scrubbed(std::string text, const std::string& secret);

// A fixed-size pool of sessions to one database. A session is (re)connected when it is
// handed out and is not healthy, so the pool recovers by itself once PostgreSQL is back.
// Thread-safe. A Lease must not outlive its pool.
class PostgresPool {
 public:
  struct Options {
    size_t size = 8;
    // How long acquire() waits for a free session before answering UNAVAILABLE.
    std::chrono::milliseconds acquire_timeout{5000};
  };

  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    ~Lease();  // returns the session; one left broken or inside a transaction is dropped
    soci::session& session() { return *session_; }

   private:
    friend class PostgresPool;
    Lease(PostgresPool* pool, size_t slot, soci::session* session)
        : pool_(pool), slot_(slot), session_(session) {}
    PostgresPool* pool_;
    size_t slot_;
    soci::session* session_;
  };

  // Connects one session right away, so an unreachable server, a wrong password or a
  // missing database is reported at start: UNAVAILABLE "cannot connect to PostgreSQL at
  // host:port (database d, user u): <reason>".
  static Result<std::shared_ptr<PostgresPool>> open(const PostgresUrl& url, Options options);
  ~PostgresPool();

  // A healthy session. UNAVAILABLE (message names host:port) if none frees up in time or
  // PostgreSQL cannot be reached.
  Result<Lease> acquire();

  // Runs `body` in one transaction on a pooled session and commits if it returns OK (any
  // other status, or an exception, rolls back). With a non-empty `tenant`, the transaction
  // first sets trellis.tenant for itself only, so row-level security shows exactly that
  // tenant's rows. Serialization failures, deadlocks and unique violations (two first
  // inserts racing) run `body` again from the start, up to 5 times; a session the server
  // dropped (a restart) is replaced once before anything ran. Failures are UNAVAILABLE:
  // "<what> failed: PostgreSQL at host:port: ...", never with the password.
  Status transaction(const std::string& what, const std::string& tenant,
                     const std::function<Status(soci::session&)>& body);

  const PostgresUrl& url() const { return url_; }
  size_t size() const { return slots_.size(); }
  // UNAVAILABLE "<what> failed: PostgreSQL at host:port: <reason>", password scrubbed.
  Status unavailable(const std::string& what, const std::exception& e) const;

 private:
  PostgresPool(PostgresUrl url, Options options);
  void release(size_t slot, bool keep);

  const PostgresUrl url_;
  const Options options_;
  std::mutex mu_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<soci::session>> slots_;  // null: not connected
  std::vector<bool> busy_;
};

// True while `sql` is connected and not inside a transaction (libpq's own view; a server
// that went away is noticed by the next statement).
bool isHealthyPostgresSession(soci::session& sql);

// Opens one session (not pooled) with url.conninfo(). Throws soci::soci_error.
void connectPostgres(soci::session& sql, const PostgresUrl& url);

namespace postgres_schema {

// With the owner role's session (the role that owns, or may create, schema `trellis`):
// creates or upgrades every table, enables and forces row-level security with the tenant
// policy, and grants the app role DML only (it owns nothing). Serialised across hosts by
// an advisory lock, so several trellisd may start at once. UNAVAILABLE on failure,
// including a schema newer than this build.
Status migrate(const PostgresUrl& owner, const std::string& app_role);

// With the app role's pool: the schema exists at this build's version, and the app role
// can neither own the tables nor bypass row-level security (superuser or BYPASSRLS). The
// message says what to do, e.g. start once with storage.owner_url.
Status verify(PostgresPool& app);

}  // namespace postgres_schema

}  // namespace trellis::tenants
