// Jobs and timers on a real trellisd (tests/fixtures/jobs): one-shot, interval and cron
// schedules for a tenant, durable retries and the dead letter, a restart, the admin API
// and CLI, and the refusals a plugin gets.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

class JobsTest : public ::testing::Test {
 protected:
  // `tenant_extra` lines go under globex; `data` replaces the data directory (restarts).
  std::string config(const std::string& tenant_extra = "", const std::string& data = "") {
    std::string c = defaultTestConfig("    - id: fixture/jobs\n");
    if (!tenant_extra.empty()) {
      const std::string globex = "  - id: globex\n";
      c.insert(c.find(globex) + globex.size(), tenant_extra);
    }
    if (!data.empty()) c.replace(c.find("@DATA@"), 6, data);
    return c;
  }
  void startWith(const std::string& cfg) {
    server_ = std::make_unique<TrellisdProcess>(cfg);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply schedule(const std::string& name, const std::string& query,
                     const std::string& payload = "",
                     std::map<std::string, std::string> headers = kAcme) {
    return request(server_->port(), "POST", "/jobs/schedule/" + name + "?" + query, headers,
                   payload);
  }
  // "<runs> <tries> <traceparent>" as the plugin recorded them.
  std::string runs(const std::string& name, std::map<std::string, std::string> h = kAcme) {
    return request(server_->port(), "GET", "/jobs/runs/" + name, h).body;
  }
  // Waits (up to 15 s) until the job's record starts with `prefix`.
  bool waitFor(const std::string& name, const std::string& prefix) {
    for (int i = 0; i < 150; ++i) {
      if (runs(name).starts_with(prefix)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  Poco::JSON::Object::Ptr adminJob(const std::string& name) {
    auto jobs = json(request(server_->adminPort(), "GET", "/v1/jobs",
                             {{"Authorization", "Bearer " + server_->adminToken()}})
                         .body)
                    ->getArray("jobs");
    for (size_t i = 0; i < jobs->size(); ++i) {
      auto j = jobs->getObject(static_cast<unsigned>(i));
      if (j->getValue<std::string>("name") == name) return j;
    }
    return nullptr;
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(JobsTest, OneShotRunsOnceForItsTenantInTheSchedulersTrace) {
  startWith(config());
  auto headers = kAcme;
  headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  ASSERT_EQ(schedule("hello", "kind=once&delay=200", "", headers).body, "OK");
  ASSERT_TRUE(waitFor("hello", "1 1 ")) << runs("hello") << server_->log();
  EXPECT_THAT(runs("hello"),
              MatchesRegex("1 1 00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01"));
  EXPECT_THAT(runs("hello", kGlobex), StartsWith("0 0 "));  // acme's job, acme's data
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_THAT(runs("hello"), StartsWith("1 1 "));  // once means once
  EXPECT_EQ(adminJob("hello"), nullptr);           // and then it is gone
}

TEST_F(JobsTest, ATenantPluginHasNoJobsOutsideATenant) {
  startWith(config());
  // fixture/jobs tries at start, where its ctx has no tenant (only a system plugin's may).
  EXPECT_THAT(server_->log(),
              HasSubstr("job_schedule at start: INVALID: job_schedule needs a tenant: call it from "
                        "a request, job, service or event handler (only a system plugin has "
                        "jobs of its own outside tenants)"));
  EXPECT_EQ(request(server_->adminPort(), "GET", "/v1/jobs",
                    {{"Authorization", "Bearer " + server_->adminToken()}})
                .body.find("outside-a-tenant"),
            std::string::npos);
}

TEST_F(JobsTest, AOneShotThatSchedulesItselfAgainRunsAgain) {
  // Each run replaces the job while it runs; the end of that run must not retire the new one.
  startWith(config());
  ASSERT_EQ(schedule("chain", "kind=once&delay=0", "again:3").body, "OK");
  ASSERT_TRUE(waitFor("chain", "4 4 ")) << runs("chain") << server_->log();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_THAT(runs("chain"), StartsWith("4 4 "));  // and no more
  EXPECT_EQ(adminJob("chain"), nullptr);
}

TEST_F(JobsTest, IntervalJobIsListedRunAndCancelledByTheOperator) {
  startWith(config());
  ASSERT_EQ(schedule("tick", "kind=every&interval=1000").body, "OK");
  ASSERT_TRUE(waitFor("tick", "2 ")) << runs("tick");
  auto job = adminJob("tick");
  ASSERT_NE(job, nullptr);
  EXPECT_EQ(job->getValue<std::string>("tenant"), "acme");
  EXPECT_EQ(job->getValue<std::string>("plugin"), "fixture/jobs");
  EXPECT_EQ(job->getValue<std::string>("kind"), "every");
  EXPECT_GE(job->getValue<int>("runs"), 2);
  EXPECT_TRUE(job->has("next_run_ms"));

  int rc = -1;
  std::string listed = runCli(*server_, "job list --tenant acme", &rc);
  EXPECT_EQ(rc, 0) << listed;
  EXPECT_THAT(listed, MatchesRegex("(.|\n)*acme +fixture/jobs +tick +(scheduled|running)(.|\n)*"));
  std::string cancelled = runCli(*server_, "job cancel acme fixture/jobs tick", &rc);
  EXPECT_EQ(rc, 0) << cancelled;
  EXPECT_EQ(adminJob("tick"), nullptr);
  std::string after = runs("tick");
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(runs("tick").substr(0, 2), after.substr(0, 2));  // no more runs
  std::string missing = runCli(*server_, "job cancel acme fixture/jobs tick", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_THAT(missing, HasSubstr("no job \"tick\""));
}

TEST_F(JobsTest, DurableJobRetriesWithBackoffThenDeadLettersThenOperatorRetries) {
  startWith(config());
  ASSERT_EQ(schedule("flaky", "kind=once&durable=1&attempts=2", "fail-first:2").body, "OK");
  for (int i = 0; i < 100; ++i) {
    auto j = adminJob("flaky");
    if (j && j->getValue<std::string>("state") == "dead") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto dead = adminJob("flaky");
  ASSERT_NE(dead, nullptr);
  EXPECT_EQ(dead->getValue<std::string>("state"), "dead");
  EXPECT_EQ(dead->getValue<int>("failures"), 2);
  EXPECT_EQ(dead->getValue<std::string>("last_error"), "asked to fail");
  EXPECT_FALSE(dead->has("next_run_ms"));
  EXPECT_THAT(runs("flaky"), StartsWith("0 2 "));

  int rc = -1;
  std::string fired = runCli(*server_, "job run acme fixture/jobs flaky", &rc);
  EXPECT_EQ(rc, 0) << fired;
  ASSERT_TRUE(waitFor("flaky", "1 3 ")) << runs("flaky");
}

TEST_F(JobsTest, DurableJobSurvivesARestart) {
  TempDir data;
  startWith(config("", data.path().string()));
  ASSERT_EQ(schedule("later", "kind=once&durable=1&delay=2500").body, "OK");
  ASSERT_EQ(server_->stop(), 0);
  startWith(config("", data.path().string()));
  ASSERT_TRUE(waitFor("later", "1 1 ")) << runs("later") << server_->log();
}

TEST_F(JobsTest, CapabilityGrantQuotaAndBadInputAreRefused) {
  std::string cfg = config("    grants: {fixture/jobs: [kv]}\n");
  const std::string acme = "  - id: acme\n";
  cfg.insert(cfg.find(acme) + acme.size(), "    quotas: {max_jobs: 2}\n");
  startWith(cfg);
  EXPECT_EQ(schedule("x", "kind=once&delay=60000", "", kGlobex).body,
            "PERMISSION_DENIED: capability \"jobs\" is not granted to this plugin by tenant "
            "globex");
  EXPECT_EQ(schedule("a", "kind=once&delay=60000").body, "OK");
  EXPECT_EQ(schedule("b", "kind=cron&cron=0%203%20*%20*%20*").body, "OK");
  EXPECT_EQ(schedule("b", "kind=every&interval=60000").body, "OK");  // replacing is no new job
  auto over = schedule("c", "kind=once&delay=60000");
  EXPECT_EQ(over.status, 429) << over.body;
  EXPECT_EQ(json(over.body)->getValue<std::string>("quota"), "max_jobs");

  EXPECT_EQ(schedule("b", "kind=cron&cron=61%20*%20*%20*%20*").body,
            "INVALID: job spec cron: cron field 1 (minute): 61 is out of range 0-59");
  EXPECT_EQ(schedule("b", "kind=every&interval=10").body,
            "INVALID: job spec interval_ms: must be at least 1000");
  EXPECT_EQ(schedule("b", "kind=sometimes").body,
            "INVALID: job spec kind: must be TRELLIS_JOB_ONCE, _EVERY or _CRON");
  EXPECT_EQ(schedule("b%20c", "kind=once").body,
            "INVALID: job spec name: must be 1-128 of A-Z a-z 0-9 . _ : -");
  EXPECT_EQ(schedule("b", "kind=once", std::string(70000, 'x')).body,
            "INVALID: job spec payload: exceeds 64 KiB");
  EXPECT_EQ(request(server_->port(), "POST", "/jobs/cancel/zzz", kAcme).body,
            "NOT_FOUND: no job \"zzz\"");
}

TEST_F(JobsTest, HungNativeRunsAreMarkedAndHoldOnlyTheirPluginsShareOfThePool) {
  // Two job threads (the default): one plugin gets at most one of them, so three hung runs
  // of fixture/jobs leave the other thread to fixture/svc-lua.
  startWith(defaultTestConfig("    - id: fixture/jobs\n    - id: fixture/svc-lua\n"));
  for (const char* name : {"h1", "h2", "h3"}) {
    ASSERT_EQ(schedule(name, "kind=once&budget=300", "sleep:60000").body, "OK");
  }
  auto marked = [&] {
    for (const char* name : {"h1", "h2", "h3"}) {
      auto j = adminJob(name);
      if (j && j->getValue<std::string>("state") == "running" && j->has("overruns")) return j;
    }
    return Poco::JSON::Object::Ptr();
  };
  Poco::JSON::Object::Ptr hung;
  for (int i = 0; i < 100 && !(hung = marked()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_NE(hung, nullptr) << server_->log();
  EXPECT_EQ(hung->getValue<int>("overruns"), 1);
  EXPECT_THAT(hung->getValue<std::string>("last_error"),
              HasSubstr("overran its budget of 300 ms and still holds its thread"));
  EXPECT_THAT(server_->log(), HasSubstr("overran its budget of 300 ms"));

  // Another plugin's job still runs while the hung ones hold their thread.
  ASSERT_EQ(request(server_->port(), "POST", "/svc-lua/job/other", kAcme).body, "OK");
  std::string other;
  for (int i = 0; i < 150; ++i) {
    other = request(server_->port(), "GET", "/svc-lua/job/other", kAcme).body;
    if (other.starts_with("1 ")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_THAT(other, StartsWith("1 ")) << server_->log();
  for (const char* name : {"h1", "h2", "h3"}) {
    EXPECT_NE(adminJob(name), nullptr) << name;  // none has finished
  }
  // Only one of them has started: the other two wait for fixture/jobs' one thread.
  int tried = 0;
  for (const char* name : {"h1", "h2", "h3"}) tried += runs(name).starts_with("0 1 ");
  EXPECT_EQ(tried, 1);
  server_->kill();  // the hung handler would hold shutdown for a minute
}

}  // namespace
}  // namespace trellis::test
