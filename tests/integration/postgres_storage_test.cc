// What only the PostgreSQL backend has: the schema and its row-level security as the
// app role meets them with raw SQL, the start-up checks that refuse an unsafe setup, and
// behaviour while the server is away and after it returns.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support/postgres_server.h"
#include "support/shared_postgres.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/tenants/postgres.h"
#include "trellis/tenants/registry.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::test {
namespace {

using kernel::storage::kAbsent;
using kernel::storage::kAnyVersion;
using kernel::storage::KvStore;
using kernel::storage::openPostgresKvStore;
using kernel::storage::Scope;
using tenants::PostgresPool;
using ::testing::HasSubstr;
using ::testing::Not;
namespace schema = tenants::postgres_schema;

std::string only(const SqlResult& r) {
  return r.ok && r.rows.size() == 1 && r.rows[0].size() == 1 ? r.rows[0][0] : "<" + r.error + ">";
}

// The SQLSTATE `stmt` fails with, or "" if it succeeds.
std::string sqlState(soci::session& sql, const std::string& stmt) {
  try {
    tenants::sql::exec(sql, stmt);
  } catch (const soci::postgresql_soci_error& e) {
    return e.sqlstate();
  }
  return "";
}

long long count(soci::session& sql, const std::string& query) {
  long long n = -1;
  tenants::sql::Query(sql, query).into(n).run();
  return n;
}

class PostgresStorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = SharedPostgres::freshDatabase();
    ASSERT_TRUE(db_) << db_.error;
    auto pool = PostgresPool::open(db_.app, {.size = 2});
    ASSERT_TRUE(pool) << pool.status().toString();
    pool_ = *pool;
    auto store = openPostgresKvStore(pool_);
    ASSERT_TRUE(store) << store.status().toString();
    store_ = std::move(*store);
  }

  // A session as the app role, outside the store: what a bug or an injected statement
  // in trellisd could do at most.
  soci::session appSession() { return soci::session(soci::postgresql, db_.app.conninfo()); }

  TestDatabase db_;
  std::shared_ptr<PostgresPool> pool_;
  std::unique_ptr<KvStore> store_;
};

TEST_F(PostgresStorageTest, AppRoleWithoutATenantSeesAndChangesNoRowsEvenWithRawSql) {
  ASSERT_TRUE(store_->put({"acme", "trellis/hello"}, "k1", "acme data", kAnyVersion));
  ASSERT_TRUE(store_->put({"globex", "trellis/hello"}, "k1", "globex data", kAnyVersion));
  ASSERT_EQ(only(SharedPostgres::server().execSql("SELECT count(*) FROM trellis.kv", db_.name)),
            "2");

  soci::session sql = appSession();
  EXPECT_EQ(count(sql, "SELECT count(*) FROM kv"), 0);
  EXPECT_EQ(count(sql, "SELECT count(*) FROM trellis.kv WHERE tenant_id = 'acme'"), 0);
  EXPECT_EQ(count(sql, "SELECT count(*) FROM kv_usage"), 0);
  {
    tenants::sql::Query update(sql, "UPDATE kv SET value = 'x'");
    update.run();
    EXPECT_EQ(update.affectedRows(), 0);
    tenants::sql::Query remove(sql, "DELETE FROM kv");
    remove.run();
    EXPECT_EQ(remove.affectedRows(), 0);
  }
  EXPECT_EQ(sqlState(sql, "INSERT INTO kv VALUES ('acme', 'p', 'k', 'v', 1)"), "42501");

  // With a tenant set: that tenant's rows, and no way to write into another's.
  tenants::sql::exec(sql, "SELECT set_config('trellis.tenant', 'globex', false)");
  EXPECT_EQ(count(sql, "SELECT count(*) FROM kv"), 1);
  EXPECT_EQ(count(sql, "SELECT count(*) FROM kv WHERE tenant_id = 'acme'"), 0);
  EXPECT_EQ(sqlState(sql, "INSERT INTO kv VALUES ('acme', 'p', 'k2', 'v', 1)"), "42501");
  EXPECT_EQ(sqlState(sql, "UPDATE kv SET tenant_id = 'acme'"), "42501");

  EXPECT_EQ(store_->get({"acme", "trellis/hello"}, "k1")->value, "acme data");
  EXPECT_EQ(store_->get({"globex", "trellis/hello"}, "k1")->value, "globex data");
}

TEST_F(PostgresStorageTest, AppRoleCanNeitherTurnIsolationOffNorChangeTheSchema) {
  soci::session sql = appSession();
  for (const char* stmt :
       {"ALTER TABLE kv DISABLE ROW LEVEL SECURITY", "ALTER TABLE kv NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON kv", "DROP TABLE kv_usage",
        "CREATE TABLE trellis.mine (x int)", "SET ROLE trellis_owner",
        "UPDATE schema_version SET version = 99"}) {
    EXPECT_NE(sqlState(sql, stmt), "") << stmt;
  }
  EXPECT_EQ(only(SharedPostgres::server().execSql(
                "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables "
                "WHERE schemaname = 'trellis'",
                db_.name)),
            "trellis_owner");
}

TEST_F(PostgresStorageTest, PooledSessionsUseTheTrellisSchemaAndEndStuckTransactions) {
  auto lease = pool_->acquire();
  ASSERT_TRUE(lease);
  std::string search_path, idle_timeout;
  tenants::sql::Query(lease->session(), "SHOW search_path").into(search_path).run();
  tenants::sql::Query(lease->session(), "SHOW idle_in_transaction_session_timeout")
      .into(idle_timeout)
      .run();
  EXPECT_EQ(search_path, "trellis");
  EXPECT_EQ(idle_timeout, "1min");
}

TEST_F(PostgresStorageTest, TwoHostsWritingAtOnceNeverTakeATenantOverItsQuota) {
  auto other_pool = PostgresPool::open(db_.app, {.size = 4});
  ASSERT_TRUE(other_pool);
  auto other = openPostgresKvStore(*other_pool);
  ASSERT_TRUE(other);
  constexpr uint64_t kQuota = 2000;
  std::atomic<int> written{0}, refused{0}, errors{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 8; ++t) {
    KvStore& host = t % 2 ? *store_ : **other;
    writers.emplace_back([&, t] {
      const Scope s{"acme", t % 4 < 2 ? "trellis/hello" : "trellis/other", kQuota};
      for (int i = 0; i < 40; ++i) {
        auto r = host.put(s, "h" + std::to_string(t) + "/" + std::to_string(100 + i),
                          std::string(10 + i % 5, 'v'), kAbsent);
        if (r) {
          ++written;
        } else if (r.status().code() == StatusCode::kQuotaExceeded) {
          ++refused;
        } else {
          ++errors;
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(refused.load(), 0);
  auto used = store_->storageBytes("acme");
  ASSERT_TRUE(used);
  EXPECT_LE(*used, kQuota);
  EXPECT_GT(*used, kQuota - 20);  // a refusal saw less room than one entry
  EXPECT_EQ(only(SharedPostgres::server().execSql(
                "SELECT sum(length(key) + length(value)) FROM trellis.kv", db_.name)),
            std::to_string(*used));
}

TEST_F(PostgresStorageTest, VerifyAcceptsTheMigratedSchema) {
  EXPECT_TRUE(schema::verify(*pool_));
}

TEST_F(PostgresStorageTest, MigrateIsIdempotentAndSafeFromSeveralHostsAtOnce) {
  std::vector<Status> results(4, Status::internal("not run"));
  std::vector<std::thread> hosts;
  for (auto& r : results) {
    hosts.emplace_back([&] { r = schema::migrate(db_.owner, db_.app.user); });
  }
  for (auto& t : hosts) t.join();
  for (const auto& r : results) EXPECT_TRUE(r) << r.toString();
  EXPECT_TRUE(schema::verify(*pool_));
  EXPECT_EQ(only(SharedPostgres::server().execSql(
                "SELECT string_agg(component || '=' || version, ',' ORDER BY component) "
                "FROM trellis.schema_version",
                db_.name)),
            "blobs=1,control=1,egress=1,jobs=1,registry=6,storage=2");
}

TEST_F(PostgresStorageTest, VerifyRefusesADatabaseWithoutTheSchemaAndSaysHowToCreateIt) {
  TestDatabase bare = SharedPostgres::freshDatabase(/*migrated=*/false);
  ASSERT_TRUE(bare) << bare.error;
  auto pool = PostgresPool::open(bare.app, {.size = 1});
  ASSERT_TRUE(pool) << pool.status().toString();
  Status s = schema::verify(**pool);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("has no Trellis schema"));
  EXPECT_THAT(s.message(), HasSubstr("storage.owner_url"));
}

TEST_F(PostgresStorageTest, VerifyRefusesAnOutdatedOrNewerSchema) {
  auto& pg = SharedPostgres::server();
  ASSERT_TRUE(
      pg.execSql("UPDATE trellis.schema_version SET version = 0 WHERE component = "
                 "'storage'",
                 db_.name));
  Status old = schema::verify(*pool_);
  EXPECT_THAT(old.message(), HasSubstr("storage schema version 0 but this build needs 2"));
  ASSERT_TRUE(
      pg.execSql("UPDATE trellis.schema_version SET version = 7 WHERE component = "
                 "'storage'",
                 db_.name));
  EXPECT_THAT(schema::verify(*pool_).message(), HasSubstr("newer than this build"));
  EXPECT_THAT(schema::migrate(db_.owner, db_.app.user).message(),
              HasSubstr("newer than this build"));
}

TEST_F(PostgresStorageTest, VerifyRefusesAnAppRoleThatCouldBypassRowLevelSecurity) {
  // The superuser as the app role.
  auto super = tenants::parsePostgresUrl(
      "postgresql://postgres@127.0.0.1:" + std::to_string(SharedPostgres::server().port()) + "/" +
      db_.name);
  ASSERT_TRUE(super);
  auto pool = PostgresPool::open(*super, {.size = 1});
  ASSERT_TRUE(pool) << pool.status().toString();
  EXPECT_THAT(schema::verify(**pool).message(), HasSubstr("is a superuser"));

  // The app role owning a table.
  ASSERT_TRUE(
      SharedPostgres::server().execSql("ALTER TABLE trellis.kv OWNER TO trellis_app", db_.name));
  Status owns = schema::verify(*pool_);
  EXPECT_EQ(owns.code(), StatusCode::kInvalid);
  EXPECT_THAT(owns.message(), HasSubstr("role \"trellis_app\" owns kv"));
  ASSERT_TRUE(
      SharedPostgres::server().execSql("ALTER TABLE trellis.kv OWNER TO trellis_owner", db_.name));

  // Row-level security switched off by someone.
  ASSERT_TRUE(SharedPostgres::server().execSql(
      "ALTER TABLE trellis.kv_usage NO FORCE ROW LEVEL SECURITY", db_.name));
  EXPECT_THAT(schema::verify(*pool_).message(),
              HasSubstr("row-level security is not forced on kv_usage"));
}

// A login role of this test only (roles are cluster-wide), with the app role's access
// (it is a member of trellis_app, which is harmless), and a pool for it.
struct ExtraAppRole {
  std::string name;
  tenants::PostgresUrl url;
};
ExtraAppRole extraAppRole(const TestDatabase& db, const std::string& suffix) {
  ExtraAppRole r{db.name + "_" + suffix, db.app};
  r.url.user = r.name;
  SqlResult made = SharedPostgres::server().execSql("CREATE ROLE " + r.name +
                                                    " LOGIN NOSUPERUSER NOBYPASSRLS; "
                                                    "GRANT trellis_app TO " +
                                                    r.name);
  EXPECT_TRUE(made) << made.error;
  return r;
}

Status verifyAs(const tenants::PostgresUrl& url) {
  auto pool = PostgresPool::open(url, {.size = 1});
  if (!pool) return pool.status();
  return schema::verify(**pool);
}

TEST_F(PostgresStorageTest, VerifyRefusesAnAppRoleThatCanBecomeTheOwnerThroughMembership) {
  auto& pg = SharedPostgres::server();
  ExtraAppRole app = extraAppRole(db_, "app");
  const std::string ops = db_.name + "_ops";
  ASSERT_TRUE(pg.execSql("CREATE ROLE " + ops + " NOLOGIN; GRANT " + ops + " TO " + app.name));
  // Plain membership in harmless roles passes.
  EXPECT_TRUE(verifyAs(app.url));

  // The owner two grants away: the app role inherits the right to switch RLS off.
  ASSERT_TRUE(pg.execSql("GRANT trellis_owner TO " + ops));
  {
    soci::session sql(soci::postgresql, app.url.conninfo());
    EXPECT_EQ(sqlState(sql, "ALTER TABLE trellis.kv NO FORCE ROW LEVEL SECURITY"), "");
    EXPECT_EQ(sqlState(sql, "ALTER TABLE trellis.kv FORCE ROW LEVEL SECURITY"), "");
  }
  Status inherited = verifyAs(app.url);
  EXPECT_EQ(inherited.code(), StatusCode::kInvalid);
  EXPECT_THAT(
      inherited.message(),
      HasSubstr("role \"" + app.name + "\" is a member of \"trellis_owner\" (" + app.name + " -> " +
                ops + " -> trellis_owner, inheriting its privileges), which is the owner of "));
  EXPECT_THAT(inherited.message(), HasSubstr(" kv, kv_usage, "));

  // Without INHERIT it still can SET ROLE to the owner: refused all the same.
  ASSERT_TRUE(pg.execSql("ALTER ROLE " + app.name + " NOINHERIT"));
  {
    soci::session sql(soci::postgresql, app.url.conninfo());
    EXPECT_EQ(sqlState(sql, "SET ROLE trellis_owner"), "");
  }
  EXPECT_THAT(verifyAs(app.url).message(),
              HasSubstr("(" + app.name + " -> " + ops +
                        " -> trellis_owner, not inherited, but a membership it can use)"));

  ASSERT_TRUE(pg.execSql("ALTER ROLE " + app.name + " INHERIT; REVOKE trellis_owner FROM " + ops));
  EXPECT_TRUE(verifyAs(app.url));
}

TEST_F(PostgresStorageTest, VerifyRefusesMembershipInASuperuserBypassRlsOrSchemaOwnerRole) {
  auto& pg = SharedPostgres::server();
  ExtraAppRole app = extraAppRole(db_, "app");
  const std::string admin = db_.name + "_admin";
  ASSERT_TRUE(pg.execSql("CREATE ROLE " + admin + " NOLOGIN SUPERUSER; GRANT " + admin + " TO " +
                         app.name));
  EXPECT_THAT(verifyAs(app.url).message(),
              HasSubstr("is a member of \"" + admin + "\" (" + app.name + " -> " + admin +
                        ", inheriting its privileges), which is a superuser"));
  ASSERT_TRUE(pg.execSql("ALTER ROLE " + admin + " NOSUPERUSER BYPASSRLS"));
  EXPECT_THAT(verifyAs(app.url).message(), HasSubstr("), which is BYPASSRLS"));
  ASSERT_TRUE(pg.execSql(
      "ALTER ROLE " + admin + " NOBYPASSRLS; ALTER SCHEMA trellis OWNER TO " + admin, db_.name));
  EXPECT_THAT(verifyAs(app.url).message(), HasSubstr("), which is the owner of schema trellis"));
  ASSERT_TRUE(pg.execSql("ALTER SCHEMA trellis OWNER TO trellis_owner", db_.name));
  EXPECT_TRUE(verifyAs(app.url));
}

TEST_F(PostgresStorageTest, MigrateRefusesToMakeTheAppRoleTheOwner) {
  Status s = schema::migrate(db_.app, db_.app.user);
  EXPECT_EQ(s.code(), StatusCode::kInvalid);
  EXPECT_THAT(s.message(), HasSubstr("same role"));
  EXPECT_THAT(s.message(), Not(HasSubstr(SharedPostgres::kAppPassword)));
}

TEST_F(PostgresStorageTest, PoolAnswersUnavailableWhenEverySessionStaysBusy) {
  auto pool =
      PostgresPool::open(db_.app, {.size = 1, .acquire_timeout = std::chrono::milliseconds(50)});
  ASSERT_TRUE(pool) << pool.status().toString();
  auto held = (*pool)->acquire();
  ASSERT_TRUE(held);
  auto second = (*pool)->acquire();
  ASSERT_FALSE(second);
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("all 1 PostgreSQL sessions to 127.0.0.1:"));
  { auto released = std::move(*held); }
  EXPECT_TRUE((*pool)->acquire());
}

TEST_F(PostgresStorageTest, ATransactionWhoseBodyFailsLeavesNothingBehind) {
  Status s = pool_->transaction("test write", "acme", [](soci::session& sql) {
    tenants::sql::exec(sql,
                       "INSERT INTO kv VALUES ('acme', 'p', decode('00', 'hex'), "
                       "decode('00', 'hex'), 1)");
    return Status::conflict("changed my mind");
  });
  EXPECT_EQ(s.code(), StatusCode::kConflict);
  EXPECT_EQ(only(SharedPostgres::server().execSql("SELECT count(*) FROM trellis.kv", db_.name)),
            "0");
  // A body that throws is reported as UNAVAILABLE, with what was being done.
  s = pool_->transaction("test write", "acme", [](soci::session& sql) {
    tenants::sql::exec(sql, "INSERT INTO no_such_table VALUES (1)");
    return Status::ok();
  });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("test write failed: PostgreSQL at 127.0.0.1:"));
  EXPECT_THAT(s.message(), HasSubstr("no_such_table"));
}

TEST(PostgresUnreachableTest, OpeningAPoolFailsNamingHostAndPortButNotThePassword) {
  // A port nobody listens on: bind one, note it, close it.
  PostgresServer probe;
  uint16_t port = 0;
  {
    ASSERT_TRUE(probe.start()) << probe.error();
    port = probe.port();
    ASSERT_TRUE(probe.stop());
  }
  auto url = tenants::parsePostgresUrl(
      "postgresql://trellis_app:Sup3r-Secret@127.0.0.1:" + std::to_string(port) + "/trellis");
  ASSERT_TRUE(url);
  auto pool = PostgresPool::open(*url, {.size = 2});
  ASSERT_FALSE(pool);
  EXPECT_EQ(pool.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(pool.status().message(),
              HasSubstr("cannot connect to PostgreSQL at 127.0.0.1:" + std::to_string(port)));
  EXPECT_THAT(pool.status().message(), Not(HasSubstr("Sup3r-Secret")));
  EXPECT_EQ(pool.status().message().find('\n'), std::string::npos);
  auto registry = tenants::TenantRegistry::openPostgres(*url);
  ASSERT_FALSE(registry);
  EXPECT_THAT(registry.status().message(), HasSubstr("127.0.0.1:" + std::to_string(port)));
  EXPECT_THAT(registry.status().message(), Not(HasSubstr("Sup3r-Secret")));
}

// A server of its own, so stopping it does not disturb other tests.
class PostgresOutageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pg_.start()) << pg_.error();
    ASSERT_TRUE(pg_.execSql("CREATE ROLE trellis_owner LOGIN; CREATE ROLE trellis_app LOGIN"));
    ASSERT_TRUE(pg_.createDatabase("trellis", "trellis_owner"));
    const std::string base = "@127.0.0.1:" + std::to_string(pg_.port()) + "/trellis";
    app_ = *tenants::parsePostgresUrl("postgresql://trellis_app:Outage-Pass" + base);
    auto owner = tenants::parsePostgresUrl("postgresql://trellis_owner:x" + base);
    ASSERT_TRUE(schema::migrate(*owner, "trellis_app"));
    auto pool = PostgresPool::open(app_, {.size = 2});
    ASSERT_TRUE(pool) << pool.status().toString();
    auto store = openPostgresKvStore(*pool);
    ASSERT_TRUE(store);
    store_ = std::move(*store);
  }

  PostgresServer pg_;
  tenants::PostgresUrl app_;
  std::unique_ptr<KvStore> store_;
  const Scope acme_{"acme", "trellis/hello", 1000};
};

TEST_F(PostgresOutageTest, KvCallsAreUnavailableWhileTheServerIsDownAndWorkAgainAfter) {
  ASSERT_TRUE(store_->put(acme_, "counter", "1", kAbsent));
  ASSERT_TRUE(pg_.stop());

  auto put = store_->put(acme_, "counter", "2", 1);
  EXPECT_EQ(put.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(put.status().message(), HasSubstr("127.0.0.1:" + std::to_string(pg_.port())));
  EXPECT_THAT(put.status().message(), Not(HasSubstr("Outage-Pass")));
  EXPECT_EQ(store_->get(acme_, "counter").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(store_->list(acme_, "", "", 0).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(store_->storageBytes("acme").status().code(), StatusCode::kUnavailable);

  ASSERT_TRUE(pg_.start()) << pg_.error();
  // The refused write left nothing behind: the value, its version and the usage are as
  // before the outage, and the same compare-and-set now succeeds.
  auto e = store_->get(acme_, "counter");
  ASSERT_TRUE(e) << e.status().toString();
  EXPECT_EQ(e->value, "1");
  EXPECT_EQ(e->version, 1u);
  EXPECT_EQ(*store_->storageBytes("acme"), 8u);
  auto again = store_->put(acme_, "counter", "2", 1);
  ASSERT_TRUE(again) << again.status().toString();
  EXPECT_EQ(*again, 2u);
}

TEST_F(PostgresOutageTest, AServerStoppedInTheMiddleOfATransactionKeepsNoneOfIt) {
  ASSERT_TRUE(store_->put(acme_, "before", "1", kAbsent));
  auto pool = PostgresPool::open(app_, {.size = 1});
  ASSERT_TRUE(pool);
  Status s = (*pool)->transaction("half a write", "acme", [&](soci::session& sql) {
    tenants::sql::exec(sql,
                       "INSERT INTO kv VALUES ('acme', 'trellis/hello', decode('6868', 'hex'), "
                       "decode('00', 'hex'), 1)");
    tenants::sql::exec(sql, "UPDATE kv_usage SET bytes = bytes + 3");
    EXPECT_TRUE(pg_.stop());  // the server goes away between two statements
    tenants::sql::exec(sql, "UPDATE kv SET version = 2 WHERE key = decode('6868', 'hex')");
    return Status::ok();
  });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  ASSERT_TRUE(pg_.start()) << pg_.error();
  EXPECT_EQ(store_->get(acme_, "hh").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store_->storageBytes("acme"), 7u);
  EXPECT_EQ(only(pg_.execSql("SELECT count(*) FROM trellis.kv", "trellis")), "1");
}

TEST_F(PostgresOutageTest, RegistryKeepsServingWhatItKnewAndCatchesUpAfterAnOutage) {
  auto a = tenants::TenantRegistry::openPostgres(app_, std::chrono::milliseconds(20));
  auto b = tenants::TenantRegistry::openPostgres(app_, std::chrono::milliseconds(20));
  ASSERT_TRUE(a && b);
  tenants::TenantRecord acme;
  acme.id = "acme";
  ASSERT_TRUE((*a)->create(acme));
  auto key = (*a)->createKey("acme", std::nullopt);
  ASSERT_TRUE(key);
  auto resolvesOn = [&](tenants::TenantRegistry& r, tenants::Resolution::Outcome want) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (r.resolve(key->secret).outcome != want) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  };
  ASSERT_TRUE(resolvesOn(**b, tenants::Resolution::Outcome::kOk));

  ASSERT_TRUE(pg_.stop());
  EXPECT_EQ((*a)->revokeKey(key->info.id).code(), StatusCode::kUnavailable);
  EXPECT_EQ((*b)->resolve(key->secret).outcome, tenants::Resolution::Outcome::kOk);

  ASSERT_TRUE(pg_.start()) << pg_.error();
  ASSERT_TRUE((*a)->revokeKey(key->info.id));
  EXPECT_TRUE(resolvesOn(**b, tenants::Resolution::Outcome::kRevokedKey));
}

}  // namespace
}  // namespace trellis::test
