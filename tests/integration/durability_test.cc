// Acknowledged means durable: a real trellisd is killed with SIGKILL in the middle of a
// storm of group-committed writes (GET /hello/{name}: a read and a compare-and-set put),
// and after a restart every write a client saw acknowledged is there, and no write that
// was in flight is half there. Writes reach the redo log first and the SQLite file in
// batches (applies), so the kill lands after some applies, with more changes in the log.
#include <gtest/gtest.h>
#include <signal.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::test {
namespace {

using namespace std::chrono_literals;
using tenants::sql::Query;

// "visits":N from /hello's JSON answer; -1 if absent.
long long visitsOf(const std::string& body) {
  const auto at = body.find("\"visits\":");
  return at == std::string::npos ? -1 : std::stoll(body.substr(at + 9));
}

// The redo log beside `db` (<db>-redo.N): whether the store has copied it into the file at
// least once (each apply starts a new segment and deletes the ones it copied), and whether
// it holds changes that are not in the file yet.
struct RedoLog {
  bool applied_once = false;
  bool holds_changes = false;
};
RedoLog redoLogOf(const std::filesystem::path& db) {
  RedoLog out;
  const std::string prefix = db.filename().string() + "-redo.";
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(db.parent_path(), ec)) {
    const std::string name = f.path().filename().string();
    if (!name.starts_with(prefix) || name == prefix + "lock") continue;
    if (name != prefix + "1") out.applied_once = true;
    if (f.file_size(ec) > 0) out.holds_changes = true;
  }
  return out;
}

struct Row {
  std::string value;
  long long version = 0;
};

TEST(DurabilityTest, EveryAcknowledgedWriteSurvivesAKillDashNineInAWriteStorm) {
  TrellisdProcess server(defaultTestConfig());
  ASSERT_TRUE(server.start()) << server.log();
  const auto db = server.dir() / "data" / "tenants" / "acme.db";

  // Each client cycles through names of its own: more keys than an apply waits for, so
  // the store copies its log into the file several times before the kill.
  constexpr int kClients = 16;
  constexpr int kNamesPerClient = 300;
  auto name = [](int client, int n) {
    return "client-" + std::to_string(client) + "-" + std::to_string(n);
  };
  // The last count each client saw answered, per name.
  std::vector<std::vector<long long>> acked(kClients, std::vector<long long>(kNamesPerClient));
  std::atomic<bool> stop{false};
  std::atomic<int> out_of_order{0};
  std::atomic<long long> total{0};
  std::vector<std::thread> clients;
  const uint16_t port = server.port();
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; !stop; ++i) {
        const int n = i % kNamesPerClient;
        auto r =
            request(port, "GET", "/hello/" + name(c, n), {{"Authorization", "Bearer acme-key"}});
        if (r.status != 200) return;  // the server is gone: this request is unacknowledged
        const long long visits = visitsOf(r.body);
        if (visits != acked[c][n] + 1) ++out_of_order;
        acked[c][n] = visits;
        ++total;
      }
    });
  }
  // Kill while every client has a write in flight, once the log has been copied into the
  // file at least once and several thousand writes were acknowledged.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while ((total < 6000 || !redoLogOf(db).applied_once) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  server.kill();
  stop = true;
  for (auto& t : clients) t.join();
  ASSERT_GE(total.load(), 6000) << server.log();
  const RedoLog log = redoLogOf(db);
  ASSERT_TRUE(log.applied_once) << "the redo log was never copied into " << db;
  EXPECT_TRUE(log.holds_changes) << "the kill left nothing to replay";
  EXPECT_EQ(out_of_order.load(), 0);

  // What the crash left, as the next start recovers it: trellisd replays the log, and a
  // clean stop copies everything into the file, which is then read on its own.
  ASSERT_TRUE(server.start()) << server.log();
  ASSERT_EQ(server.stop(), 0) << server.log();
  std::map<std::string, Row> rows;
  long long usage = -1, real = -2;
  {
    soci::session sql(soci::sqlite3, "db=\"" + db.string() + "\"");
    std::string key, value;
    long long version = 0;
    Query q(sql,
            "SELECT CAST(key AS TEXT), CAST(value AS TEXT), version FROM kv "
            "WHERE plugin = 'trellis/hello'");
    q.into(key).into(value).into(version);
    for (bool row = q.run(); row; row = q.next()) rows[key] = Row{value, version};
    Query(sql, "SELECT bytes FROM usage").into(usage).run();
    Query(sql, "SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM kv").into(real).run();
  }
  // No write is half applied: the quota's count matches the data, and every entry's
  // value and version moved together (hello writes count N at version N).
  EXPECT_EQ(usage, real);
  for (int c = 0; c < kClients; ++c) {
    for (int n = 0; n < kNamesPerClient; ++n) {
      const std::string key = "visits/" + name(c, n);
      const Row& row = rows[key];  // version 0 if the name was never written
      EXPECT_EQ(row.value, row.version ? std::to_string(row.version) : "") << key;
      // Every acknowledged count is there; at most the one unanswered request beyond it.
      EXPECT_GE(row.version, acked[c][n]) << key;
      EXPECT_LE(row.version, acked[c][n] + 1) << key;
    }
  }

  // And the restarted server carries on from exactly there.
  ASSERT_TRUE(server.start()) << server.log();
  for (int c = 0; c < kClients; ++c) {
    auto r = request(server.port(), "GET", "/hello/" + name(c, 0),
                     {{"Authorization", "Bearer acme-key"}});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(visitsOf(r.body), rows["visits/" + name(c, 0)].version + 1);
  }
}

}  // namespace
}  // namespace trellis::test
