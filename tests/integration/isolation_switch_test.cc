// Switching a running plugin between in process and a worker process by hot activation
// (POST /v1/plugins/{ns}/{name}/activate {"isolation": …}, `trellis plugin activate ID
// --isolation …`): the new instance starts, routes move, the old one drains. A client that
// keeps calling sees no failure, the answers come from the new mode, the plugin's KV data
// carries over, and the change is audited; what cannot work is refused by name.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;
using ::testing::HasSubstr;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

// trellis/hello counts visits in KV; fixture/crashy's /crashy/ok answers "ok <pid>" of the
// process that ran it (trellisd's own pid in process). sys-audit is the audit.v1 sink.
const std::string kPlugins =
    "    - id: trellis/hello\n"
    "      config: {greeting: Hello}\n"
    "    - id: fixture/crashy\n"
    "      isolation: in-process\n"
    "    - id: trellis/hello-lua\n"
    "    - id: fixture/sys-audit\n"
    "      system: true\n";

// A client that keeps calling both plugins, one request at a time, until stopped; its
// visits are counted under its own name.
class SteadyClient {
 public:
  SteadyClient(uint16_t port, std::string name)
      : port_(port), name_(std::move(name)), thread_([this] { run(); }) {}
  ~SteadyClient() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t calls() const { return calls_; }
  std::string lastCrashyBody() const {
    std::lock_guard lock(mu_);
    return last_crashy_;
  }
  std::vector<std::string> failures() const {
    std::lock_guard lock(mu_);
    return failures_;
  }
  // Each answer's visit count, in order: a switch that lost or repeated KV data shows here.
  std::vector<int> visits() const {
    std::lock_guard lock(mu_);
    return visits_;
  }

 private:
  void run() {
    while (!stop_) {
      auto crashy = request(port_, "GET", "/crashy/ok", kAcme);
      auto hello = request(port_, "GET", "/hello/" + name_, kAcme);
      std::lock_guard lock(mu_);
      if (crashy.status != 200) failures_.push_back("crashy " + std::to_string(crashy.status));
      if (hello.status != 200) failures_.push_back("hello " + std::to_string(hello.status));
      if (crashy.status == 200) last_crashy_ = crashy.body;
      if (hello.status == 200) visits_.push_back(json(hello.body)->getValue<int>("visits"));
      ++calls_;
    }
  }

  uint16_t port_;
  std::string name_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> calls_{0};
  mutable std::mutex mu_;
  std::string last_crashy_;
  std::vector<std::string> failures_;
  std::vector<int> visits_;
  std::thread thread_;
};

class IsolationSwitchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig(kPlugins));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& path,
                  const std::string& body = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body,
                   std::chrono::seconds(60));
  }
  HttpReply activate(const std::string& id, const std::string& body) {
    return admin("POST", "/v1/plugins/" + id + "/activate", body);
  }
  Object::Ptr pluginEntry(const std::string& id) {
    auto list = json(admin("GET", "/v1/plugins").body)->getArray("plugins");
    for (size_t i = 0; i < list->size(); ++i) {
      auto p = list->getObject(static_cast<unsigned>(i));
      if (p->getValue<std::string>("id") == id) return p;
    }
    return nullptr;
  }
  std::string isolationOf(const std::string& id) {
    auto p = pluginEntry(id);
    return p ? p->optValue<std::string>("isolation", "") : "";
  }
  // The pid of the worker serving `tenant` ("*": the shared one), or 0.
  int workerPid(const std::string& id, const std::string& tenant = "*") {
    auto p = pluginEntry(id);
    if (!p || !p->has("workers")) return 0;
    auto workers = p->getArray("workers");
    for (size_t i = 0; i < workers->size(); ++i) {
      auto w = workers->getObject(static_cast<unsigned>(i));
      if (w->getValue<std::string>("tenant") == tenant) return w->optValue<int>("pid", 0);
    }
    return 0;
  }
  // The audit records the sink stored with this action.
  std::vector<Object::Ptr> auditRecords(const std::string& action) {
    auto res = admin("GET", "/v1/x/fixture/sys-audit/records");
    EXPECT_EQ(res.status, 200) << res.body;
    std::vector<Object::Ptr> out;
    auto list = Poco::JSON::Parser().parse(res.body).extract<Poco::JSON::Array::Ptr>();
    for (size_t i = 0; i < list->size(); ++i) {
      auto r = list->getObject(static_cast<unsigned>(i));
      if (r->getValue<std::string>("action") == action) out.push_back(r);
    }
    return out;
  }

  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(IsolationSwitchTest, SwitchesBothWaysWhileAClientKeepsCalling) {
  const std::string host_pid = "ok " + std::to_string(server_->pid());
  ASSERT_EQ(request(server_->port(), "GET", "/crashy/ok", kAcme).body, host_pid);
  ASSERT_EQ(isolationOf("fixture/crashy"), "in-process");
  // Two clients, so that a switch meets calls in flight on more than one connection.
  SteadyClient client(server_->port(), "ann");
  SteadyClient other(server_->port(), "bob");
  auto seen = [&](uint64_t more) {
    const uint64_t target = client.calls() + more;
    const uint64_t other_target = other.calls() + more;
    return eventually([&] { return client.calls() >= target && other.calls() >= other_target; });
  };
  ASSERT_TRUE(seen(5));

  // In process -> a worker, globex with one of its own.
  auto to_process =
      activate("fixture/crashy", R"({"isolation":"process","dedicated_tenants":["globex"]})");
  ASSERT_EQ(to_process.status, 200) << to_process.body << server_->log();
  auto o = json(to_process.body);
  EXPECT_EQ(o->getValue<std::string>("isolation"), "process");
  EXPECT_EQ(o->getValue<std::string>("previous_isolation"), "in-process");
  EXPECT_FALSE(o->getValue<bool>("unchanged"));
  EXPECT_TRUE(o->getValue<bool>("drained"));
  EXPECT_FALSE(o->getValue<bool>("persists_across_restart"));
  EXPECT_THAT(o->getValue<std::string>("note"), HasSubstr("trellis.yaml"));
  auto hello_to_process = activate("trellis/hello", R"({"isolation":"process"})");
  ASSERT_EQ(hello_to_process.status, 200) << hello_to_process.body;

  EXPECT_EQ(isolationOf("fixture/crashy"), "process");
  EXPECT_EQ(isolationOf("trellis/hello"), "process");
  EXPECT_TRUE(pluginEntry("fixture/crashy")->getValue<bool>("isolation_set_at_runtime"));
  const int shared = workerPid("fixture/crashy");
  const int globex = workerPid("fixture/crashy", "globex");
  ASSERT_GT(shared, 0);
  ASSERT_GT(globex, 0);
  EXPECT_NE(shared, globex);
  ASSERT_TRUE(seen(5));
  EXPECT_EQ(client.lastCrashyBody(), "ok " + std::to_string(shared));
  EXPECT_EQ(request(server_->port(), "GET", "/crashy/ok", kGlobex).body,
            "ok " + std::to_string(globex));
  // `trellis plugin list` says the mode is not trellis.yaml's.
  int status = -1;
  std::string list = runCli(*server_, "plugin list", &status);
  EXPECT_EQ(status, 0) << list;
  EXPECT_THAT(list, HasSubstr("isolation=process (set at run time; trellis.yaml sets it again"));

  // And back, through the CLI.
  std::string out =
      runCli(*server_, "plugin activate fixture/crashy --isolation in-process", &status);
  ASSERT_EQ(status, 0) << out << server_->log();
  EXPECT_THAT(out, HasSubstr("fixture/crashy@1.0.0 is active (isolation: in-process)"));
  EXPECT_THAT(out, HasSubstr("note: this isolation holds until trellisd restarts"));
  out = runCli(*server_, "plugin activate trellis/hello --isolation in-process", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(isolationOf("fixture/crashy"), "in-process");
  EXPECT_EQ(isolationOf("trellis/hello"), "in-process");
  EXPECT_EQ(pluginEntry("fixture/crashy")->getArray("workers"), nullptr);
  ASSERT_TRUE(seen(5));
  EXPECT_EQ(client.lastCrashyBody(), host_pid);
  client.stop();
  other.stop();

  for (const SteadyClient* c : {&client, &other}) {
    EXPECT_TRUE(c->failures().empty()) << ::testing::PrintToString(c->failures());
    // KV data carried across both switches: every visit counted once, in order.
    auto visits = c->visits();
    ASSERT_GE(visits.size(), 15u);
    for (size_t i = 0; i < visits.size(); ++i) ASSERT_EQ(visits[i], static_cast<int>(i) + 1);
  }
  EXPECT_EQ(
      json(request(server_->port(), "GET", "/hello/ann", kAcme).body)->getValue<int>("visits"),
      static_cast<int>(client.visits().size()) + 1);

  // Each change is in the audit trail: the request (with its body) and what changed.
  std::vector<Object::Ptr> changes;
  EXPECT_TRUE(eventually([&] {
    changes = auditRecords("plugin_isolation_changed");
    return changes.size() >= 4;
  }));
  ASSERT_EQ(changes.size(), 4u);
  auto first = changes[0]->getObject("parameters");
  EXPECT_EQ(changes[0]->getValue<std::string>("resource"), "fixture/crashy");
  EXPECT_EQ(first->getValue<std::string>("from"), "in-process");
  EXPECT_EQ(first->getValue<std::string>("to"), "process");
  EXPECT_EQ(first->getArray("dedicated_tenants")->getElement<std::string>(0), "globex");
  EXPECT_FALSE(first->getValue<bool>("persists_across_restart"));
  auto back = changes[2]->getObject("parameters");
  EXPECT_EQ(back->getValue<std::string>("from"), "process");
  EXPECT_EQ(back->getValue<std::string>("to"), "in-process");
  auto requests = auditRecords("POST /v1/plugins/fixture/crashy/activate");
  ASSERT_GE(requests.size(), 1u);
  EXPECT_EQ(requests[0]->getObject("parameters")->getValue<std::string>("isolation"), "process");
}

TEST_F(IsolationSwitchTest, ALuaPluginMovesIntoAWorkerAndBackWithItsData) {
  auto visits = [&] {
    auto r = request(server_->port(), "GET", "/hello-lua/ann", kAcme);
    EXPECT_EQ(r.status, 200) << r.body << server_->log();
    return r.status == 200 ? json(r.body)->getValue<int>("visits") : -1;
  };
  EXPECT_EQ(visits(), 1);
  EXPECT_EQ(isolationOf("trellis/hello-lua"), "");  // in its Lua sandbox in trellisd

  auto to_process = activate("trellis/hello-lua", R"({"isolation":"process"})");
  ASSERT_EQ(to_process.status, 200) << to_process.body << server_->log();
  EXPECT_EQ(json(to_process.body)->getValue<std::string>("isolation"), "process");
  EXPECT_EQ(isolationOf("trellis/hello-lua"), "process");
  const int pid = workerPid("trellis/hello-lua");
  ASSERT_GT(pid, 0);
  EXPECT_NE(pid, server_->pid());
  // The script's KV data is the plugin's and the tenant's, not the instance's.
  EXPECT_EQ(visits(), 2);
  EXPECT_EQ(workerPid("trellis/hello-lua"), pid);

  auto back = activate("trellis/hello-lua", R"({"isolation":"in-process"})");
  ASSERT_EQ(back.status, 200) << back.body;
  EXPECT_FALSE(json(back.body)->getValue<bool>("unchanged"));
  EXPECT_EQ(isolationOf("trellis/hello-lua"), "");
  EXPECT_EQ(pluginEntry("trellis/hello-lua")->getArray("workers"), nullptr);
  EXPECT_EQ(visits(), 3);

  std::vector<Object::Ptr> changes;
  EXPECT_TRUE(eventually([&] {
    changes = auditRecords("plugin_isolation_changed");
    return changes.size() >= 2;
  }));
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0]->getValue<std::string>("resource"), "trellis/hello-lua");
  EXPECT_EQ(changes[0]->getObject("parameters")->getValue<std::string>("to"), "process");
}

TEST_F(IsolationSwitchTest, ALaterActivationKeepsTheModeChosenAtRunTime) {
  ASSERT_EQ(activate("fixture/crashy", R"({"isolation":"process"})").status, 200);
  const int pid = workerPid("fixture/crashy");
  ASSERT_GT(pid, 0);
  // The same choice again changes nothing; a plain activation keeps the runtime mode.
  auto again = activate("fixture/crashy", R"({"isolation":"process"})");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_TRUE(json(again.body)->getValue<bool>("unchanged"));
  auto plain = activate("fixture/crashy", "");
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(json(plain.body)->getValue<std::string>("isolation"), "process");
  EXPECT_EQ(workerPid("fixture/crashy"), pid);
}

TEST_F(IsolationSwitchTest, WhatCannotWorkIsRefusedByNameAndChangesNothing) {
  const std::string host_pid = "ok " + std::to_string(server_->pid());
  struct Case {
    std::string id, body;
    int status;
    std::string message;
  };
  for (const auto& c : std::vector<Case>{
           {"fixture/crashy", R"({"isolation":"sandboxed"})", 400,
            R"(isolation: expected \"process\" or \"in-process\", got \"sandboxed\")"},
           {"fixture/crashy", R"({"isolation":1})", 400, "isolation: expected"},
           {"fixture/crashy", R"({"isolation":"in-process","dedicated_tenants":["globex"]})", 400,
            R"(dedicated_tenants needs isolation \"process\")"},
           {"fixture/crashy", R"({"dedicated_tenants":["globex"]})", 400,
            "dedicated_tenants needs"},
           {"fixture/crashy", R"({"isolation":"process","dedicated_tenants":[""]})", 400,
            "dedicated_tenants[0]: expected a tenant id"},
           {"fixture/crashy", R"({"isolaton":"process"})", 400, R"(unknown member \"isolaton\")"},
           {"fixture/crashy", "not json", 400, "body must be"},
           {"fixture/sys-audit", R"({"isolation":"process"})", 501,
            "isolation: process is not available for system plugins"},
       }) {
    SCOPED_TRACE(c.id + " " + c.body);
    auto r = activate(c.id, c.body);
    EXPECT_EQ(r.status, c.status) << r.body;
    EXPECT_EQ(r.header("content-type"), "application/problem+json");
    EXPECT_THAT(r.body, HasSubstr(c.message));
  }
  EXPECT_EQ(isolationOf("fixture/crashy"), "in-process");
  EXPECT_FALSE(pluginEntry("fixture/crashy")->getValue<bool>("isolation_set_at_runtime"));
  EXPECT_EQ(request(server_->port(), "GET", "/crashy/ok", kAcme).body, host_pid);
  EXPECT_EQ(request(server_->port(), "GET", "/hello-lua/x", kAcme).status, 200);
  EXPECT_EQ(pluginEntry("fixture/sys-audit")->getValue<std::string>("state"), "active");
  EXPECT_TRUE(auditRecords("plugin_isolation_changed").empty());
  // The CLI checks the value before asking.
  int status = -1;
  std::string out =
      runCli(*server_, "plugin activate fixture/crashy --isolation sandboxed", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("--isolation"));
}

}  // namespace
}  // namespace trellis::test
