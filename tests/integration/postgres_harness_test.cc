// The PostgreSQL test server (tests/support/postgres_server.h) and the isolation pattern
// the PostgreSQL storage backend builds on: shared tables with a tenant_id column under
// FORCE ROW LEVEL SECURITY, owned by a role the application does not log in as, and the
// tenant chosen per session or per transaction through the `trellis.tenant` setting.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "support/postgres_server.h"

namespace trellis::test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Starts `pg` and reports how long initdb + start-up took (the cost every PostgreSQL test
// pays once).
void startTimed(PostgresServer& pg, const char* what) {
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(pg.start()) << pg.error();
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::cout << what << " started in " << ms << " ms (port " << pg.port() << ")\n";
}

std::string only(const SqlResult& r) {
  return r.ok && r.rows.size() == 1 && r.rows[0].size() == 1 ? r.rows[0][0] : "<" + r.error + ">";
}

TEST(PostgresServerTest, ListensOnLoopbackOnlyWithTestSettings) {
  PostgresServer pg;
  startTimed(pg, "server");
  EXPECT_NE(pg.port(), 0);
  EXPECT_TRUE(pg.running());
  EXPECT_EQ(only(pg.execSql("SHOW listen_addresses")), "127.0.0.1");
  EXPECT_EQ(only(pg.execSql("SHOW port")), std::to_string(pg.port()));
  EXPECT_EQ(only(pg.execSql("SHOW fsync")), "off");
  EXPECT_EQ(only(pg.execSql("SHOW server_encoding")), "UTF8");
  EXPECT_EQ(only(pg.execSql("SHOW unix_socket_directories")), pg.dir().string());
  EXPECT_EQ(pg.connectionString("db", "u"),
            "host=127.0.0.1 port=" + std::to_string(pg.port()) + " dbname=db user=u");

  SqlResult bad = pg.execSql("SELECT * FROM no_such_table");
  EXPECT_FALSE(bad.ok);
  EXPECT_THAT(bad.error, HasSubstr("no_such_table"));

  EXPECT_TRUE(pg.stop());
  EXPECT_FALSE(pg.running());
  EXPECT_FALSE(pg.execSql("SELECT 1").ok);
}

TEST(PostgresServerTest, RestartKeepsDataAndPort) {
  PostgresServer pg;
  startTimed(pg, "server");
  ASSERT_TRUE(pg.createDatabase("keep")) << pg.log();
  ASSERT_TRUE(pg.execSql("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')", "keep"));
  const uint16_t port = pg.port();
  ASSERT_TRUE(pg.stop());
  startTimed(pg, "restarted server");
  EXPECT_EQ(pg.port(), port);
  EXPECT_EQ(only(pg.execSql("SELECT v FROM t", "keep")), "kept");
}

TEST(PostgresServerTest, TwoServersRunSideBySide) {
  PostgresServer a;
  PostgresServer b;
  startTimed(a, "server a");
  startTimed(b, "server b");
  EXPECT_NE(a.port(), b.port());
  EXPECT_NE(a.dir(), b.dir());
  ASSERT_TRUE(a.execSql("CREATE TABLE marker (v text); INSERT INTO marker VALUES ('a')"));
  ASSERT_TRUE(b.execSql("CREATE TABLE marker (v text); INSERT INTO marker VALUES ('b')"));
  EXPECT_EQ(only(a.execSql("SELECT v FROM marker")), "a");
  EXPECT_EQ(only(b.execSql("SELECT v FROM marker")), "b");

  ASSERT_TRUE(a.stop());
  EXPECT_FALSE(a.execSql("SELECT 1").ok);
  EXPECT_EQ(only(b.execSql("SELECT v FROM marker")), "b");
}

TEST(PostgresServerTest, MissingBinariesSayHowToInstallThem) {
  PostgresServer pg("/nonexistent/postgresql/bin");
  EXPECT_FALSE(pg.start());
  EXPECT_THAT(pg.error(), HasSubstr("PostgreSQL server binaries not found"));
  EXPECT_THAT(pg.error(), HasSubstr("scripts/deps.sh --postgres"));
}

// One shared table for every tenant. The owner role owns it (as a migration role would);
// the app role, which trellisd logs in as, may only run DML and is bound by the policy.
// FORCE makes the policy bind the owner as well; only superusers and BYPASSRLS roles pass.
constexpr const char* kSchema = R"sql(
  CREATE ROLE trellis_owner NOLOGIN;
  CREATE ROLE trellis_app LOGIN NOSUPERUSER NOBYPASSRLS;
  CREATE TABLE kv (
    tenant_id text NOT NULL DEFAULT current_setting('trellis.tenant'),
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (tenant_id, key));
  ALTER TABLE kv OWNER TO trellis_owner;
  ALTER TABLE kv ENABLE ROW LEVEL SECURITY;
  ALTER TABLE kv FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON kv
    USING (tenant_id = current_setting('trellis.tenant', true))
    WITH CHECK (tenant_id = current_setting('trellis.tenant', true));
  GRANT SELECT, INSERT, UPDATE, DELETE ON kv TO trellis_app;
)sql";

class PostgresRlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    startTimed(pg_, "server");
    ASSERT_TRUE(pg_.createDatabase("trellis")) << pg_.log();
    SqlResult schema = pg_.execSql(kSchema, "trellis");
    ASSERT_TRUE(schema) << schema.error;
  }

  soci::session appSession() {
    return soci::session(soci::postgresql, pg_.connectionString("trellis", "trellis_app"));
  }

  // Session-wide tenant; the backend uses the transaction-local form (see below).
  static void setTenant(soci::session& sql, const std::string& tenant) {
    sql << "SELECT set_config('trellis.tenant', :t, false)", soci::use(tenant);
  }

  static std::vector<std::string> keys(soci::session& sql) {
    std::vector<std::string> out;
    soci::rowset<std::string> rows = (sql.prepare << "SELECT key FROM kv ORDER BY key");
    for (const auto& k : rows) out.push_back(k);
    return out;
  }

  static long long affected(soci::session& sql, const std::string& stmt) {
    soci::statement st = (sql.prepare << stmt);
    st.execute(true);
    return st.get_affected_rows();
  }

  // The SQLSTATE of the error `stmt` raises, or "" if it succeeds.
  static std::string sqlState(soci::session& sql, const std::string& stmt) {
    try {
      sql << stmt;
    } catch (const soci::postgresql_soci_error& e) {
      return e.sqlstate();
    }
    return "";
  }

  PostgresServer pg_;
};

TEST_F(PostgresRlsTest, AppRoleSeesAndChangesOnlyItsTenantsRows) {
  soci::session sql = appSession();
  setTenant(sql, "acme");
  sql << "INSERT INTO kv (key, value) VALUES ('a1', 'acme one'), ('a2', 'acme two')";
  setTenant(sql, "globex");
  sql << "INSERT INTO kv (key, value) VALUES ('g1', 'globex one')";

  EXPECT_THAT(keys(sql), ElementsAre("g1"));
  long long visible = -1;
  sql << "SELECT count(*) FROM kv WHERE tenant_id = 'acme'", soci::into(visible);
  EXPECT_EQ(visible, 0);
  EXPECT_EQ(affected(sql, "UPDATE kv SET value = 'stolen' WHERE tenant_id = 'acme'"), 0);
  EXPECT_EQ(affected(sql, "UPDATE kv SET value = 'stolen'"), 1);  // its own row only
  EXPECT_EQ(affected(sql, "DELETE FROM kv WHERE key = 'a1'"), 0);

  // WITH CHECK: neither writing into another tenant nor moving a row there is allowed.
  const std::string kRlsViolation = "42501";
  EXPECT_EQ(sqlState(sql, "INSERT INTO kv VALUES ('acme', 'a3', 'planted')"), kRlsViolation);
  EXPECT_EQ(sqlState(sql, "UPDATE kv SET tenant_id = 'acme' WHERE key = 'g1'"), kRlsViolation);

  setTenant(sql, "acme");
  EXPECT_THAT(keys(sql), ElementsAre("a1", "a2"));
  std::string value;
  sql << "SELECT value FROM kv WHERE key = 'a1'", soci::into(value);
  EXPECT_EQ(value, "acme one");

  // The superuser bypasses RLS: it sees everything untouched.
  SqlResult all =
      pg_.execSql("SELECT tenant_id || '/' || key || '=' || value FROM kv ORDER BY 1", "trellis");
  ASSERT_TRUE(all) << all.error;
  std::vector<std::string> flat;
  for (const auto& row : all.rows) flat.push_back(row[0]);
  EXPECT_THAT(flat, ElementsAre("acme/a1=acme one", "acme/a2=acme two", "globex/g1=stolen"));
}

TEST_F(PostgresRlsTest, NoTenantSetMeansNoRows) {
  ASSERT_TRUE(pg_.execSql("INSERT INTO kv VALUES ('acme', 'a1', 'x')", "trellis"));
  soci::session sql = appSession();
  EXPECT_THAT(keys(sql), IsEmpty());
  EXPECT_NE(sqlState(sql, "INSERT INTO kv VALUES ('acme', 'a2', 'x')"), "");
}

TEST_F(PostgresRlsTest, TransactionLocalTenantEndsWithTheTransaction) {
  // set_config(..., true) lasts until COMMIT/ROLLBACK, so a pooled connection handed to
  // the next request cannot carry the previous tenant along.
  soci::session sql = appSession();
  {
    soci::transaction tx(sql);
    sql << "SELECT set_config('trellis.tenant', 'acme', true)";
    sql << "INSERT INTO kv (key, value) VALUES ('a1', 'x')";
    EXPECT_THAT(keys(sql), ElementsAre("a1"));
    tx.commit();
  }
  EXPECT_THAT(keys(sql), IsEmpty());
  EXPECT_EQ(only(pg_.execSql("SELECT tenant_id FROM kv", "trellis")), "acme");
}

TEST_F(PostgresRlsTest, AppRoleCannotTurnIsolationOff) {
  soci::session sql = appSession();
  EXPECT_EQ(sqlState(sql, "ALTER TABLE kv DISABLE ROW LEVEL SECURITY"), "42501");
  EXPECT_EQ(sqlState(sql, "ALTER TABLE kv NO FORCE ROW LEVEL SECURITY"), "42501");
  EXPECT_EQ(sqlState(sql, "DROP POLICY tenant_isolation ON kv"), "42501");
  EXPECT_EQ(sqlState(sql, "SET ROLE trellis_owner"), "42501");
  // Asking to bypass RLS does not bypass it: the query fails instead of showing all rows.
  sql << "SET row_security = off";
  EXPECT_EQ(sqlState(sql, "SELECT count(*) FROM kv"), "42501");
}

TEST_F(PostgresRlsTest, ForceBindsTheTableOwnerToo) {
  ASSERT_TRUE(pg_.execSql(
      "INSERT INTO kv VALUES ('acme', 'a1', 'x'), ('globex', 'g1', 'y'), ('globex', 'g2', 'z')",
      "trellis"));
  EXPECT_EQ(only(pg_.execSql("SET ROLE trellis_owner; SET trellis.tenant = 'globex';"
                             "SELECT count(*) FROM kv",
                             "trellis")),
            "2");
  EXPECT_EQ(only(pg_.execSql("SET ROLE trellis_owner; SELECT count(*) FROM kv", "trellis")), "0");
}

}  // namespace
}  // namespace trellis::test
