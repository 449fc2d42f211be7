// Durable jobs on several hosts sharing PostgreSQL (tests/fixtures/jobs): each firing runs
// on exactly one host, and a firing whose host is killed mid-run is run again by the other
// once its lease lapses (at least once).
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "support/shared_postgres.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};

std::string pgJobsConfig(const TestDatabase& db) {
  std::string config = defaultTestConfig("    - id: fixture/jobs\n");
  const std::string anchor = "  data_dir: @DATA@\n";
  config.insert(config.find(anchor) + anchor.size(),
                "  url: \"" + db.appUrl() + "\"\n  pool_size: 4\n");
  return config;
}

HttpReply schedule(const TrellisdProcess& host, const std::string& name, const std::string& query,
                   const std::string& payload = "") {
  return request(host.port(), "POST", "/jobs/schedule/" + name + "?" + query, kAcme, payload);
}

// "<runs> <tries> <traceparent>" as the plugin recorded them (in KV, shared by the hosts).
std::string runs(const TrellisdProcess& host, const std::string& name) {
  return request(host.port(), "GET", "/jobs/runs/" + name, kAcme).body;
}

Poco::JSON::Object::Ptr adminJob(const TrellisdProcess& host, const std::string& name) {
  HttpReply r = request(host.adminPort(), "GET", "/v1/jobs",
                        {{"Authorization", "Bearer " + host.adminToken()}});
  if (r.status != 200) return nullptr;
  auto jobs =
      Poco::JSON::Parser().parse(r.body).extract<Poco::JSON::Object::Ptr>()->getArray("jobs");
  for (size_t i = 0; i < jobs->size(); ++i) {
    auto j = jobs->getObject(static_cast<unsigned>(i));
    if (j->getValue<std::string>("name") == name) return j;
  }
  return nullptr;
}

class PostgresJobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = SharedPostgres::freshDatabase();
    ASSERT_TRUE(db_) << db_.error;
    a_ = std::make_unique<TrellisdProcess>(pgJobsConfig(db_));
    b_ = std::make_unique<TrellisdProcess>(pgJobsConfig(db_));
    ASSERT_TRUE(a_->start()) << a_->log();
    ASSERT_TRUE(b_->start()) << b_->log();
  }
  TestDatabase db_;
  std::unique_ptr<TrellisdProcess> a_, b_;
};

TEST_F(PostgresJobsTest, EachDurableFiringRunsOnExactlyOneHost) {
  // Twelve one-shots due at the same moment, scheduled through both hosts, which both poll.
  constexpr int kJobs = 12;
  for (int i = 0; i < kJobs; ++i) {
    const TrellisdProcess& via = i % 2 ? *a_ : *b_;
    ASSERT_EQ(schedule(via, "once" + std::to_string(i), "kind=once&durable=1&delay=1500").body,
              "OK");
  }
  ASSERT_EQ(schedule(*a_, "tick", "kind=every&durable=1&interval=1000").body, "OK");
  // Both hosts list the shared jobs.
  auto listed = adminJob(*b_, "once3");
  ASSERT_NE(listed, nullptr);
  EXPECT_TRUE(listed->getValue<bool>("durable"));

  for (int i = 0; i < kJobs; ++i) {
    const std::string name = "once" + std::to_string(i);
    ASSERT_TRUE(eventually([&] { return runs(*a_, name).starts_with("1 1 "); }))
        << name << ": " << runs(*a_, name) << a_->log() << b_->log();
  }
  ASSERT_TRUE(eventually([&] { return std::stoi(runs(*b_, "tick")) >= 5; })) << runs(*b_, "tick");
  // Every one-shot ran once in all (tries would count a second run on the other host) and is
  // gone from the store.
  std::this_thread::sleep_for(2s);
  for (int i = 0; i < kJobs; ++i) {
    const std::string name = "once" + std::to_string(i);
    EXPECT_THAT(runs(*b_, name), StartsWith("1 1 ")) << name;
    EXPECT_EQ(adminJob(*a_, name), nullptr) << name;
  }
  // The interval job: the runs both hosts recorded in PostgreSQL are the runs the plugin saw,
  // read while no firing is due.
  bool compared = false;
  for (int attempt = 0; attempt < 50 && !compared; ++attempt) {
    auto job = adminJob(*a_, "tick");
    ASSERT_NE(job, nullptr);
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    if (job->getValue<std::string>("state") != "scheduled" ||
        job->getValue<int64_t>("next_run_ms") - now < 400) {
      std::this_thread::sleep_for(50ms);
      continue;
    }
    const std::string seen = runs(*b_, "tick");
    const std::string recorded = std::to_string(job->getValue<int>("runs"));
    EXPECT_THAT(seen, StartsWith(recorded + " " + recorded + " ")) << "recorded " << recorded;
    compared = true;
  }
  EXPECT_TRUE(compared);
  HttpReply cancelled = request(b_->adminPort(), "DELETE", "/v1/jobs/acme/fixture/jobs/tick",
                                {{"Authorization", "Bearer " + b_->adminToken()}});
  EXPECT_EQ(cancelled.status, 204) << cancelled.body;
  EXPECT_EQ(adminJob(*a_, "tick"), nullptr);

  // Nothing is left in the shared schedule.
  SqlResult rows =
      SharedPostgres::server().execSql("SELECT count(*) FROM trellis.job_schedule", db_.name);
  ASSERT_TRUE(rows) << rows.error;
  EXPECT_EQ(rows.rows.at(0).at(0), "0");
}

TEST_F(PostgresJobsTest, AFiringWhoseHostIsKilledMidRunIsRunAgainByTheOther) {
  // The first try hangs for a minute; the lease is the 1 s budget plus the 5 s margin.
  ASSERT_EQ(schedule(*a_, "stuck", "kind=once&durable=1&budget=1000", "hang-first:60000").body,
            "OK");
  // The kernel marks the firing running before the plugin records its try: wait for both.
  std::string holder;
  ASSERT_TRUE(eventually([&] {
    auto job = adminJob(*b_, "stuck");
    if (!job || job->getValue<std::string>("state") != "running") return false;
    holder = job->getValue<std::string>("running_on");
    return runs(*a_, "stuck").starts_with("0 1 ");
  })) << runs(*a_, "stuck")
      << a_->log();
  // running_on is "<hostname>/<pid>": kill -9 the host that holds the firing.
  const bool a_holds = holder.ends_with("/" + std::to_string(a_->pid()));
  ASSERT_TRUE(a_holds || holder.ends_with("/" + std::to_string(b_->pid()))) << holder;
  TrellisdProcess& killed = a_holds ? *a_ : *b_;
  TrellisdProcess& survivor = a_holds ? *b_ : *a_;
  killed.kill();

  ASSERT_TRUE(eventually([&] { return runs(survivor, "stuck").starts_with("1 2 "); }))
      << runs(survivor, "stuck") << survivor.log();
  EXPECT_EQ(adminJob(survivor, "stuck"), nullptr);  // a one-shot that ran is done
}

}  // namespace
}  // namespace trellis::test
