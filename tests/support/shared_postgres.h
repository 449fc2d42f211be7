// One PostgreSQL server per test process, shared by every test in it, with a fresh
// database per test laid out as production has it: the schema `trellis` created by an owner
// role (trellis_owner) and used by an app role (trellis_app) that owns nothing.
//
//   auto db = SharedPostgres::freshDatabase();   // starts the server on first use
//   ASSERT_TRUE(db) << db.error;
//   auto pool = tenants::PostgresPool::open(db.app, {.size = 4});
//   SqlResult r = SharedPostgres::server().execSql("SELECT count(*) FROM trellis.kv", db.name);
//
// Call it first from the test's main thread (see postgres_server.h on why). The server
// stops when the process exits.
#pragma once

#include <string>

#include "support/postgres_server.h"
#include "trellis/tenants/postgres.h"

namespace trellis::test {

struct TestDatabase {
  std::string name;
  tenants::PostgresUrl app;    // trellis_app: what trellisd serves with (storage.url)
  tenants::PostgresUrl owner;  // trellis_owner: owns the schema (storage.owner_url)
  std::string error;           // set if it could not be made
  explicit operator bool() const { return error.empty(); }
  // The URLs as an operator writes them, with a password (trust auth ignores it).
  std::string appUrl() const;
  std::string ownerUrl() const;
};

class SharedPostgres {
 public:
  static constexpr const char* kAppPassword = "app-pass-Zq7";
  static constexpr const char* kOwnerPassword = "owner-pass-Xw3";

  // The running server (started and given the two roles on first use). If it cannot
  // start, every later call fails the same way: check ok().
  static PostgresServer& server();
  static bool ok();
  static const std::string& error();

  // A new database owned by trellis_owner. With `migrated`, the Trellis schema is applied
  // (postgres_schema::migrate as the owner, granting trellis_app).
  static TestDatabase freshDatabase(bool migrated = true);
};

}  // namespace trellis::test
