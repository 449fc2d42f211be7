// The usage stream through a real trellisd and a system plugin built on the SDK alone
// (tests/fixtures/usage-sub, which appends every record it receives to a file): a record
// for every status class, tenants' records kept apart, a kill -9 under load losing at most
// the last second, a stopped subscriber catching up completely (with the backlog warning
// and metric on the way), and the refusals of forged and replayed cursors and of bad
// usage_emit records.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

Poco::JSON::Object::Ptr json(const std::string& text) {
  return Poco::JSON::Parser().parse(text).extract<Poco::JSON::Object::Ptr>();
}

// How long the "stopped subscriber" test keeps it stopped under load. The production bound
// (docs/admin-guide.md) is 10 minutes; TRELLIS_USAGE_STOP_SECONDS=600 runs it at that.
int stopSeconds() {
  const char* v = std::getenv("TRELLIS_USAGE_STOP_SECONDS");
  return v ? std::max(1, std::atoi(v)) : 4;
}

class UsageStreamTest : public ::testing::Test {
 protected:
  std::string config(const std::string& usage = "", const std::string& acme_quotas = "") {
    std::string plugin = "    - id: fixture/usage-sub\n      system: true\n      config: {out: " +
                         (files_ / "records.jsonl").string() +
                         ", pause: " + (files_ / "pause").string() +
                         ", cursors: " + (files_ / "cursors.txt").string() + "}\n";
    std::string c = defaultTestConfig(
        plugin,
        "  - id: initech\n    plugins: [fixture/usage-sub]\n    keys: [{key: initech-key}]\n"
        "    quotas: {requests_per_second: 1, burst: 1}\n"
        "usage: {flush_interval_ms: 100, redeliver_after_ms: 1000, retention_check_ms: 300" +
            usage + "}\n");
    if (!acme_quotas.empty()) {
      const std::string acme = "  - id: acme\n";
      c.insert(c.find(acme) + acme.size(), "    quotas: {" + acme_quotas + "}\n");
    }
    return c;
  }
  void startWith(const std::string& cfg) {
    server_ = std::make_unique<TrellisdProcess>(cfg);
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  // Every record delivered so far, by event id (at least once: duplicates collapse).
  std::map<std::string, Poco::JSON::Object::Ptr> delivered() {
    std::map<std::string, Poco::JSON::Object::Ptr> out;
    std::ifstream in(files_ / "records.jsonl");
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      auto r = json(line);
      out[r->getValue<std::string>("event_id")] = r;
    }
    return out;
  }
  // The delivered records of kind "request", by request id.
  std::map<std::string, Poco::JSON::Object::Ptr> byRequestId() {
    std::map<std::string, Poco::JSON::Object::Ptr> out;
    for (auto& [_, r] : delivered()) {
      if (r->getValue<std::string>("kind") == "request") {
        out[r->getValue<std::string>("request_id")] = r;
      }
    }
    return out;
  }
  // Waits (up to `limit`) until every id in `ids` was delivered; returns the missing ones.
  std::set<std::string> waitForAll(const std::set<std::string>& ids,
                                   std::chrono::seconds limit = std::chrono::seconds(30)) {
    std::set<std::string> missing = ids;
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      auto got = byRequestId();
      std::erase_if(missing, [&got](const std::string& id) { return got.contains(id); });
      if (missing.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return missing;
  }
  std::string lastCursor() {
    std::ifstream in(files_ / "cursors.txt");
    std::string last;
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("u1.")) last = line;
    }
    return last;
  }
  std::string metrics() {
    return request(server_->adminPort(), "GET", "/metrics",
                   {{"Authorization", "Bearer " + server_->adminToken()}})
        .body;
  }

  TempDir files_;
  std::unique_ptr<TrellisdProcess> server_;
};

// Load from `threads` clients until `stop`: the request id of every 200 and when it came.
struct Load {
  std::mutex mu;
  std::vector<std::pair<std::string, Clock::time_point>> acknowledged;
  std::atomic<bool> stop{false};
  size_t limit = SIZE_MAX;             // stops by itself after this many acknowledged requests
  std::chrono::milliseconds pause{0};  // per client, between an answer and its next request
  std::vector<std::thread> threads;

  void start(uint16_t port, int n) {
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([this, port] {
        while (!stop) {
          auto r = request(port, "GET", "/usage-sub/ok", kAcme);
          if (r.status != 200) continue;  // refused or cut off by a kill: not acknowledged
          {
            std::lock_guard lock(mu);
            acknowledged.emplace_back(r.header("x-request-id"), Clock::now());
            if (acknowledged.size() >= limit) stop = true;
          }
          if (pause.count() > 0) std::this_thread::sleep_for(pause);
        }
      });
    }
  }
  void join() {
    stop = true;
    for (auto& t : threads) t.join();
    threads.clear();
  }
  std::set<std::string> ids() {
    std::set<std::string> out;
    for (auto& [id, _] : acknowledged) out.insert(id);
    return out;
  }
};

TEST_F(UsageStreamTest, EveryStatusClassProducesARecordForItsTenantOnly) {
  startWith(config("", "max_body_bytes: 64"));
  std::map<std::string, int> expected;  // request id -> status
  std::map<std::string, std::string> tenant_of;
  auto send = [&](const std::string& method, const std::string& target,
                  std::map<std::string, std::string> headers, const std::string& tenant,
                  const std::string& body = "") {
    auto r = request(server_->port(), method, target, headers, body);
    expected[r.header("x-request-id")] = r.status;
    tenant_of[r.header("x-request-id")] = tenant;
    return r;
  };
  EXPECT_EQ(send("GET", "/usage-sub/ok", kAcme, "acme").status, 200);
  EXPECT_EQ(send("GET", "/usage-sub/ok", kGlobex, "globex").status, 200);
  EXPECT_EQ(send("GET", "/usage-sub/ok", {{"Authorization", "Bearer wrong"}}, "").status, 401);
  EXPECT_EQ(send("GET", "/no/such/route", kAcme, "acme").status, 404);
  EXPECT_EQ(send("POST", "/usage-sub/emit", kAcme, "acme", std::string(100, 'x')).status, 413);
  EXPECT_EQ(send("GET", "/usage-sub/fail", kGlobex, "globex").status, 500);
  int limited = 0;
  for (int i = 0; i < 4; ++i) {
    limited +=
        send("GET", "/usage-sub/ok", {{"Authorization", "Bearer initech-key"}}, "initech").status ==
        429;
  }
  EXPECT_GE(limited, 1);
  ASSERT_EQ(request(server_->adminPort(), "POST", "/v1/tenants/globex/suspend",
                    {{"Authorization", "Bearer " + server_->adminToken()}})
                .status,
            200);
  EXPECT_EQ(send("GET", "/usage-sub/ok", kGlobex, "globex").status, 403);

  std::set<std::string> ids;
  for (auto& [id, _] : expected) ids.insert(id);
  ASSERT_TRUE(waitForAll(ids).empty()) << server_->log();
  auto got = byRequestId();
  std::set<int> statuses;
  std::map<std::string, std::set<std::string>> keys_of;  // tenant -> key ids in its records
  for (const auto& [id, status] : expected) {
    auto r = got.at(id);
    SCOPED_TRACE(id);
    EXPECT_EQ(r->getValue<int>("status"), status);
    EXPECT_EQ(r->getValue<std::string>("tenant"), tenant_of[id]);
    EXPECT_EQ(r->getValue<std::string>("event_id").size(), 36u);
    EXPECT_EQ(r->getValue<std::string>("event_id")[14], '7');  // UUIDv7
    EXPECT_EQ(r->getValue<std::string>("trace_id").size(), 32u);
    statuses.insert(status);
    if (!tenant_of[id].empty()) keys_of[tenant_of[id]].insert(r->getValue<std::string>("key_id"));
    if (status == 200 || status == 500) {
      EXPECT_EQ(r->getValue<std::string>("plugin"), "fixture/usage-sub");
      EXPECT_EQ(r->getValue<std::string>("method"), "GET");
      EXPECT_THAT(r->getValue<std::string>("route"), ::testing::StartsWith("/usage-sub/"));
    }
    if (status == 200) {
      EXPECT_GE(r->getValue<int>("host_calls"), 1);  // res_set_body
    }
    if (status == 413 || status == 429) {
      EXPECT_EQ(r->getValue<std::string>("decision_id").size(), 16u);
    }
  }
  EXPECT_EQ(statuses, (std::set<int>{200, 401, 403, 404, 413, 429, 500}));
  // A tenant's records carry only its own key ids.
  for (const auto& [tenant, keys] : keys_of) {
    for (const auto& [other, other_keys] : keys_of) {
      if (other == tenant) continue;
      for (const auto& k : keys) EXPECT_FALSE(other_keys.contains(k)) << tenant << " " << other;
    }
  }
  // In order per tenant: the journal order is the answer order.
  std::map<std::string, int64_t> last_time;
  std::ifstream in(files_ / "records.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto r = json(line);
    auto& last = last_time[r->getValue<std::string>("tenant")];
    EXPECT_GE(r->getValue<int64_t>("time_ms"), last);
    last = r->getValue<int64_t>("time_ms");
  }
}

TEST_F(UsageStreamTest, KillNineLosesAtMostTheLastSecond) {
  startWith(config());
  Load load;
  load.start(server_->port(), 4);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const auto killed_at = Clock::now();
  server_->kill();
  load.join();
  ASSERT_GT(load.acknowledged.size(), 20u);
  std::set<std::string> older;  // acknowledged more than a second before the kill
  for (auto& [id, at] : load.acknowledged) {
    if (at < killed_at - std::chrono::seconds(1)) older.insert(id);
  }
  ASSERT_TRUE(server_->start()) << server_->log();
  auto missing = waitForAll(load.ids(), std::chrono::seconds(10));
  std::set<std::string> lost_older;
  for (const auto& id : missing) {
    if (older.contains(id)) lost_older.insert(id);
  }
  EXPECT_TRUE(lost_older.empty()) << lost_older.size() << " of " << older.size()
                                  << " records acknowledged over a second before the kill are "
                                     "lost; "
                                  << missing.size() << " of " << load.acknowledged.size()
                                  << " in all";
  RecordProperty("acknowledged", static_cast<int>(load.acknowledged.size()));
  RecordProperty("lost_in_last_second", static_cast<int>(missing.size()));
}

TEST_F(UsageStreamTest, StoppedSubscriberCatchesUpCompletelyAfterABacklogWarning) {
  // Short run (CI): a 1 MiB retention with the warning at 1%, so a few hundred records are
  // "near the limit". Long run (TRELLIS_USAGE_STOP_SECONDS=600, the documented bound): the
  // default retention, the warning at 1% (10 MiB), and a paced load for the whole stop.
  // Batches of 10 keep only the newest 20 records in memory, so catching up reads the
  // journal back before it reaches them.
  const bool long_run = stopSeconds() > 60;
  startWith(config(long_run ? ", warn_percent: 1, batch_records: 10"
                            : ", max_bytes: 1048576, warn_percent: 1, batch_records: 10"));
  { std::ofstream(files_ / "pause") << "stop acking\n"; }
  // Short run: enough records to pass the 1% warning many times over, too few to reach the
  // 1 MiB retention however fast the machine: the test is about catching up, not dropping.
  Load load;
  if (long_run) {
    load.pause = std::chrono::milliseconds(10);  // a few hundred requests a second
  } else {
    load.limit = 300;
  }
  load.start(server_->port(), 3);
  const auto stop_at = Clock::now() + std::chrono::seconds(stopSeconds());
  while (!load.stop && Clock::now() < stop_at) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  load.join();
  ASSERT_GT(load.acknowledged.size(), 20u);
  // Nothing taken while stopped, and the backlog is reported before anything is dropped.
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  while (Clock::now() < deadline &&
         server_->log().find("unacknowledged records") == std::string::npos) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_THAT(server_->log(), HasSubstr("subscriber fixture/usage-sub has"));
  EXPECT_THAT(metrics(),
              HasSubstr("trellis_usage_backlog_bytes{subscriber=\"fixture/usage-sub\"}"));
  EXPECT_THAT(metrics(), HasSubstr("trellis_usage_dropped_records_total{reason=\"retention\"} 0"));
  EXPECT_TRUE(byRequestId().empty());

  std::filesystem::remove(files_ / "pause");
  auto missing = waitForAll(load.ids(), std::chrono::seconds(long_run ? 600 : 60));
  EXPECT_TRUE(missing.empty()) << missing.size() << " of " << load.acknowledged.size()
                               << " records never arrived";
  RecordProperty("records_while_stopped", static_cast<int>(load.acknowledged.size()));
}

TEST_F(UsageStreamTest, RefusesForgedAndReplayedCursorsAndBadEmits) {
  startWith(config());
  auto first = request(server_->port(), "GET", "/usage-sub/ok", kAcme);
  ASSERT_TRUE(waitForAll({first.header("x-request-id")}).empty());
  std::string cursor;
  for (int i = 0; i < 100 && cursor.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cursor = lastCursor();
  }
  ASSERT_FALSE(cursor.empty());

  std::string forged = cursor;
  forged.back() = forged.back() == '0' ? '1' : '0';
  auto r = request(server_->port(), "POST", "/usage-sub/ack", kAcme, forged);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("INVALID: usage cursor is not one this host issued"));
  // A position with a MAC made up for it.
  r = request(server_->port(), "POST", "/usage-sub/ack", kAcme,
              "u1.999999.00000000000000000000000000000000");
  EXPECT_THAT(r.body, HasSubstr("not one this host issued"));
  r = request(server_->port(), "POST", "/usage-sub/ack", kAcme, cursor);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("already acknowledged"));
  EXPECT_THAT(r.body, HasSubstr("replayed"));
  EXPECT_THAT(metrics(), HasSubstr("trellis_usage_cursor_refusals_total{reason=\"replayed\"} 1"));

  r = request(server_->port(), "POST", "/usage-sub/emit", kAcme,
              "{\"operation\":\"" + std::string(5000, 'a') + "\"}");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("at most 4096"));
  r = request(server_->port(), "POST", "/usage-sub/emit", kAcme, "[1,2]");
  EXPECT_THAT(r.body, HasSubstr("must be a JSON object"));
  r = request(server_->port(), "POST", "/usage-sub/emit", kAcme, "{\"units\":");
  EXPECT_THAT(r.body, HasSubstr("not valid JSON"));

  r = request(server_->port(), "POST", "/usage-sub/emit", kGlobex,
              "{\"operation\":\"transit.encrypt\",\n \"units\":3}");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string request_id = r.header("x-request-id");
  Poco::JSON::Object::Ptr emitted;
  for (int i = 0; i < 100 && !emitted; ++i) {
    for (auto& [_, rec] : delivered()) {
      if (rec->getValue<std::string>("kind") == "plugin" &&
          rec->getValue<std::string>("request_id") == request_id) {
        emitted = rec;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(emitted);
  EXPECT_EQ(emitted->getValue<std::string>("tenant"), "globex");
  EXPECT_EQ(emitted->getValue<std::string>("plugin"), "fixture/usage-sub");
  EXPECT_EQ(emitted->getObject("record")->getValue<int>("units"), 3);
}

// A Lua plugin emits its own record (trellis.usage.emit) and its request record counts the
// Lua instructions it ran.
TEST_F(UsageStreamTest, LuaPluginEmitsRecordsAndItsInstructionsAreCounted) {
  const auto dir = files_ / "lua" / "lua-usage";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "trellis-plugin.json")
      << R"({"schema": 1, "id": "fixture/lua-usage", "version": "1.0.0", "runtime": "lua",
            "entry": {"lua": "main.lua"}, "capabilities": ["usage.emit"]})";
  std::ofstream(dir / "main.lua") << R"(
function init(t)
  t.route("POST", "/lua-usage/emit", function(ctx, req)
    local n = 0
    for i = 1, 1000 do n = n + i end
    local ok, err = trellis.usage.emit({operation = "lua.op", units = n})
    if not ok then return 400, err end
    return 200, "OK"
  end)
end
)";
  std::string cfg = config();
  const std::string fixtures = "@FIXTURES@]";
  cfg.replace(cfg.find(fixtures), fixtures.size(),
              "@FIXTURES@, " + (files_ / "lua").string() + "]");
  const std::string enabled = "  enabled:\n";
  cfg.insert(cfg.find(enabled) + enabled.size(), "    - id: fixture/lua-usage\n");
  for (const std::string tenant : {"  - id: acme\n", "  - id: globex\n"}) {
    const auto at = cfg.find("plugins: [", cfg.find(tenant)) + 10;
    cfg.insert(at, "fixture/lua-usage, ");
  }
  startWith(cfg);
  auto r = request(server_->port(), "POST", "/lua-usage/emit", kAcme);
  ASSERT_EQ(r.status, 200) << r.body << server_->log();
  const std::string request_id = r.header("x-request-id");
  ASSERT_TRUE(waitForAll({request_id}).empty());
  Poco::JSON::Object::Ptr emitted;
  for (int i = 0; i < 100 && !emitted; ++i) {
    for (auto& [_, rec] : delivered()) {
      if (rec->getValue<std::string>("kind") == "plugin" &&
          rec->getValue<std::string>("request_id") == request_id) {
        emitted = rec;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(emitted);
  EXPECT_EQ(emitted->getValue<std::string>("plugin"), "fixture/lua-usage");
  EXPECT_EQ(emitted->getValue<std::string>("tenant"), "acme");
  EXPECT_EQ(emitted->getObject("record")->getValue<int>("units"), 500500);
  auto record = byRequestId().at(request_id);
  EXPECT_GT(record->getValue<int64_t>("lua_instructions"), 1000);
}

}  // namespace
}  // namespace trellis::test
