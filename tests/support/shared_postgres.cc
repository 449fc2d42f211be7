#include "support/shared_postgres.h"

#include <atomic>
#include <memory>

namespace trellis::test {
namespace {

struct State {
  PostgresServer server;
  std::string error;
};

State& state() {
  // A function-local static: made on first use, destroyed at exit, which stops the
  // server after every test has run.
  static std::unique_ptr<State> s = [] {
    auto st = std::make_unique<State>();
    if (!st->server.start()) {
      st->error = st->server.error();
      return st;
    }
    SqlResult roles = st->server.execSql(
        "CREATE ROLE trellis_owner LOGIN PASSWORD 'owner-pass-Xw3';"
        "CREATE ROLE trellis_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'app-pass-Zq7'");
    if (!roles) st->error = "cannot create the test roles: " + roles.error;
    return st;
  }();
  return *s;
}

std::string urlFor(const tenants::PostgresUrl& u) {
  return "postgresql://" + u.user + ":" + u.password + "@" + u.endpoint() + "/" + u.database;
}

}  // namespace

std::string TestDatabase::appUrl() const {
  return urlFor(app);
}
std::string TestDatabase::ownerUrl() const {
  return urlFor(owner);
}

PostgresServer& SharedPostgres::server() {
  return state().server;
}
bool SharedPostgres::ok() {
  return state().error.empty();
}
const std::string& SharedPostgres::error() {
  return state().error;
}

TestDatabase SharedPostgres::freshDatabase(bool migrated) {
  static std::atomic<int> counter{0};
  TestDatabase db;
  if (!ok()) {
    db.error = error();
    return db;
  }
  db.name = "trellis_" + std::to_string(++counter);
  if (SqlResult r = server().createDatabase(db.name, "trellis_owner"); !r) {
    db.error = "cannot create database " + db.name + ": " + r.error;
    return db;
  }
  const std::string base = "@127.0.0.1:" + std::to_string(server().port()) + "/" + db.name;
  auto app =
      tenants::parsePostgresUrl("postgresql://trellis_app:" + std::string(kAppPassword) + base);
  auto owner =
      tenants::parsePostgresUrl("postgresql://trellis_owner:" + std::string(kOwnerPassword) + base);
  if (!app || !owner) {
    db.error = "bad test URL";
    return db;
  }
  db.app = *app;
  db.owner = *owner;
  if (migrated) {
    if (Status s = tenants::postgres_schema::migrate(db.owner, db.app.user); !s) {
      db.error = s.toString();
    }
  }
  return db;
}

}  // namespace trellis::test
