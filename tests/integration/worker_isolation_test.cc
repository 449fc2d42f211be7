// Native plugins in worker processes (isolation: process), end to end: the unchanged .so
// answers as it does in process; a worker that crashes, hangs, floods its channel with
// garbage or attacks its sandbox costs only its own requests (502/504 problem+json), is
// restarted with backoff, and shows up in the admin API, the CLI and /metrics.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAreArray;

const std::map<std::string, std::string> kAcme = {{"Authorization", "Bearer acme-key"}};
const std::map<std::string, std::string> kGlobex = {{"Authorization", "Bearer globex-key"}};

Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

Poco::JSON::Object::Ptr pluginEntry(const TrellisdProcess& t, const std::string& id) {
  auto reply =
      request(t.adminPort(), "GET", "/v1/plugins", {{"Authorization", "Bearer " + t.adminToken()}});
  auto list = json(reply.body)->getArray("plugins");
  for (size_t i = 0; i < list->size(); ++i) {
    auto p = list->getObject(static_cast<unsigned>(i));
    if (p->getValue<std::string>("id") == id) return p;
  }
  return nullptr;
}

// The admin API's report of `id`'s worker for `tenant` ("*" = shared).
Poco::JSON::Object::Ptr workerOf(const TrellisdProcess& t, const std::string& id,
                                 const std::string& tenant = "*") {
  auto p = pluginEntry(t, id);
  if (!p || !p->has("workers")) return nullptr;
  auto workers = p->getArray("workers");
  for (size_t i = 0; i < workers->size(); ++i) {
    auto w = workers->getObject(static_cast<unsigned>(i));
    if (w->getValue<std::string>("tenant") == tenant) return w;
  }
  return nullptr;
}

bool processExists(int pid) {
  return pid > 0 && ::kill(pid, 0) == 0 &&
         readFile("/proc/" + std::to_string(pid) + "/status").find("State:\tZ") ==
             std::string::npos;
}

// Polls `path` until it answers 200 (a restarted worker), up to `limit`.
HttpReply untilOk(uint16_t port, const std::string& path,
                  const std::map<std::string, std::string>& who = kAcme,
                  std::chrono::seconds limit = std::chrono::seconds(90)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  HttpReply r;
  do {
    r = request(port, "GET", path, who);
    if (r.status == 200) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < deadline);
  return r;
}

const std::string kWorkers =
    "    - id: trellis/hello\n"
    "      config: {greeting: Hello}\n"
    "      isolation: process\n"
    "    - id: trellis/echo-c\n"
    "      isolation: process\n"
    "    - id: fixture/crashy\n"
    "      isolation: process\n"
    "  worker:\n"
    "    call_timeout_ms: 4000\n"
    "    max_memory_mb: 128\n"
    "    max_cpu_seconds: 30\n";

class WorkerIsolationTest : public ::testing::Test {
 protected:
  void startWith(const std::string& plugins_yaml, const std::string& extra = "",
                 bool one_event_loop = false) {
    std::string config = defaultTestConfig(plugins_yaml, extra);
    if (one_event_loop) config.replace(config.find("threads: 2"), 10, "threads: 1");
    server_ = std::make_unique<TrellisdProcess>(config);
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  TrellisdProcess& server() { return *server_; }
  uint16_t port() { return server_->port(); }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(WorkerIsolationTest, TheSameLibrariesAnswerTheSameFromAWorker) {
  startWith(kWorkers);
  auto first = request(port(), "GET", "/hello/ann", kAcme);
  ASSERT_EQ(first.status, 200) << first.body << server().log();
  EXPECT_EQ(first.header("content-type"), "application/json");
  EXPECT_EQ(first.body, R"({"message":"Hello, ann!","visits":1})");
  EXPECT_EQ(request(port(), "GET", "/hello/ann", kAcme).body,
            R"({"message":"Hello, ann!","visits":2})");
  EXPECT_EQ(request(port(), "GET", "/hello/ann", kGlobex).body,
            R"({"message":"Hello, ann!","visits":1})");
  EXPECT_EQ(request(port(), "GET", "/hello/J%20Doe", kAcme).body,
            R"({"message":"Hello, J Doe!","visits":1})");
  // A client error the plugin answers itself (res_problem) crosses too.
  auto bad = request(port(), "GET", "/hello/" + std::string(100, 'x'), kAcme);
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.header("content-type"), "application/problem+json");

  auto echo = request(port(), "POST", "/echo/a/b?x=1&y=two",
                      {{"Authorization", "Bearer acme-key"}, {"X-Trace", "t\"1"}}, "hi\n");
  ASSERT_EQ(echo.status, 200) << echo.body;
  auto o = json(echo.body);
  EXPECT_EQ(o->getValue<std::string>("tenant"), "acme");
  EXPECT_EQ(o->getValue<std::string>("method"), "POST");
  EXPECT_EQ(o->getValue<std::string>("path"), "/echo/a/b");
  EXPECT_EQ(o->getValue<std::string>("query"), "x=1&y=two");
  EXPECT_EQ(o->getValue<std::string>("body"), "hi\n");
  EXPECT_THAT(echo.body, HasSubstr(R"(["X-Trace","t\"1"])"));
  EXPECT_THAT(echo.body,
              AllOf(HasSubstr(R"(["Authorization","[redacted]"])"), Not(HasSubstr("acme-key"))));

  // Each runs in a process of its own, not in trellisd, as an unprivileged user.
  auto hello = pluginEntry(server(), "trellis/hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->getValue<std::string>("isolation"), "process");
  EXPECT_EQ(hello->getValue<std::string>("state"), "active");
  auto w = workerOf(server(), "trellis/hello");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->getValue<std::string>("state"), "running");
  int pid = w->getValue<int>("pid");
  EXPECT_NE(pid, server().pid());
  EXPECT_TRUE(processExists(pid));
  if (::geteuid() == 0) {
    EXPECT_THAT(readFile("/proc/" + std::to_string(pid) + "/status"), HasSubstr("Uid:\t65534"));
  }
  // Plugin metrics defined in the worker are exported by the host.
  auto metrics = request(server().adminPort(), "GET", "/metrics",
                         {{"Authorization", "Bearer " + server().adminToken()}});
  EXPECT_THAT(metrics.body, HasSubstr("trellis_plugin_hello_greetings_total"));
}

// A process's environment, one NAME=value a line (empty if it cannot be read).
std::vector<std::string> environOf(int pid) {
  std::vector<std::string> vars;
  std::istringstream in(readFile("/proc/" + std::to_string(pid) + "/environ"));
  for (std::string v; std::getline(in, v, '\0');) vars.push_back(v);
  return vars;
}

// Of trellisd's environment a worker gets its sanitizer options only (a sanitizer build's
// workers then use the same reports and suppressions): nothing else reaches a plugin, a
// secret meant for trellisd included.
TEST_F(WorkerIsolationTest, AWorkerGetsTrellisdsSanitizerOptionsAndNothingElseOfItsEnvironment) {
  // In trellisd's environment only (it copies the test's at start).
  ::setenv("SECRET_X", "1", 1);
  const bool had_lsan = std::getenv("LSAN_OPTIONS") != nullptr;
  const std::string lsan =
      had_lsan ? std::getenv("LSAN_OPTIONS")
               : "suppressions=" + std::string(TRELLIS_SOURCE_DIR) + "/tests/sanitizers/lsan.supp";
  ::setenv("LSAN_OPTIONS", lsan.c_str(), 1);
  const bool had_tsan = std::getenv("TSAN_OPTIONS") != nullptr;
  const std::string tsan = had_tsan ? std::getenv("TSAN_OPTIONS") : "history_size=2";
  ::setenv("TSAN_OPTIONS", tsan.c_str(), 1);  // read by a thread-sanitizer build only
  server_ = std::make_unique<TrellisdProcess>(defaultTestConfig(kWorkers));
  const bool started = server_->start();
  ::unsetenv("SECRET_X");
  if (!had_lsan) ::unsetenv("LSAN_OPTIONS");
  if (!had_tsan) ::unsetenv("TSAN_OPTIONS");
  ASSERT_TRUE(started) << server().log();
  ASSERT_EQ(request(port(), "GET", "/hello/x", kAcme).status, 200) << server().log();
  auto w = workerOf(server(), "trellis/hello");
  ASSERT_TRUE(w);

  const auto daemon = environOf(server().pid());
  const auto worker = environOf(w->getValue<int>("pid"));
  ASSERT_THAT(daemon, Contains("SECRET_X=1"));
  std::vector<std::string> sanitizer_options;
  for (const std::string& v : daemon) {
    if (v.starts_with("ASAN_OPTIONS=") || v.starts_with("LSAN_OPTIONS=") ||
        v.starts_with("UBSAN_OPTIONS=") || v.starts_with("TSAN_OPTIONS=")) {
      sanitizer_options.push_back(v);
    }
  }
  EXPECT_THAT(worker, Contains("LSAN_OPTIONS=" + lsan));
  EXPECT_THAT(worker, Contains("TSAN_OPTIONS=" + tsan));
  EXPECT_THAT(worker, UnorderedElementsAreArray(sanitizer_options));
  EXPECT_THAT(worker, Not(Contains(HasSubstr("SECRET_X"))));
}

TEST_F(WorkerIsolationTest, CrashesCostOnlyTheirOwnRequestsAndRestartTheWorker) {
  startWith(kWorkers);
  auto ok = request(port(), "GET", "/crashy/ok", kAcme);
  ASSERT_EQ(ok.status, 200) << ok.body << server().log();
  const std::string first_pid = ok.body;

  for (const std::string route : {"/crashy/segv", "/crashy/abort", "/crashy/exit"}) {
    SCOPED_TRACE(route);
    auto crash = request(port(), "GET", route, kAcme);
    EXPECT_EQ(crash.status, 502) << crash.body;
    EXPECT_EQ(crash.header("content-type"), "application/problem+json");
    EXPECT_THAT(crash.body, HasSubstr("worker process failed"));
    EXPECT_FALSE(crash.header("x-request-id").empty());
    // Other plugins never noticed.
    EXPECT_EQ(request(port(), "GET", "/hello/x", kAcme).status, 200);
    auto again = untilOk(port(), "/crashy/ok");
    ASSERT_EQ(again.status, 200) << again.body;
    EXPECT_NE(again.body, first_pid);
  }
  auto w = workerOf(server(), "fixture/crashy");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->getValue<uint64_t>("crashes"), 3u);
  EXPECT_GE(w->getValue<uint64_t>("restarts"), 3u);
  EXPECT_EQ(w->getValue<std::string>("last_crash"), "exited with 3");
  auto metrics = request(server().adminPort(), "GET", "/metrics",
                         {{"Authorization", "Bearer " + server().adminToken()}});
  EXPECT_THAT(metrics.body,
              HasSubstr(R"(trellis_worker_crashes_total{plugin="fixture/crashy",tenant="*"} 3)"));
  EXPECT_THAT(server().log(), HasSubstr("signal 11"));
}

TEST_F(WorkerIsolationTest, HangsAndSpinsAreAnswered504AndTheWorkerReplaced) {
  startWith(kWorkers);
  for (const std::string route : {"/crashy/hang", "/crashy/spin"}) {
    SCOPED_TRACE(route);
    auto before = std::chrono::steady_clock::now();
    auto r = request(port(), "GET", route, kAcme);
    EXPECT_EQ(r.status, 504) << r.body;
    EXPECT_EQ(r.header("content-type"), "application/problem+json");
    EXPECT_THAT(r.body, HasSubstr("did not answer within 4000 ms"));
    EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(30));
    EXPECT_EQ(request(port(), "GET", "/hello/x", kAcme).status, 200);
    EXPECT_EQ(untilOk(port(), "/crashy/ok").status, 200);
    auto w = workerOf(server(), "fixture/crashy");
    ASSERT_TRUE(w);
    EXPECT_EQ(w->getValue<std::string>("last_crash"), "gave no answer within 4000 ms");
  }
}

// Calls that queue up cross to the worker together (pipelined on one channel, answered in
// one write): under concurrent load every request still gets its own answer.
TEST_F(WorkerIsolationTest, ConcurrentRequestsEachGetTheirOwnAnswer) {
  startWith(kWorkers);
  std::atomic<int> wrong{0}, ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 16; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        const std::string path = "/echo/c" + std::to_string(t) + "-" + std::to_string(i);
        auto r = request(port(), "GET", path, t % 2 ? kAcme : kGlobex);
        bool mine = r.status == 200 &&
                    r.body.find("\"path\":\"" + path + "\"") != std::string::npos &&
                    r.body.find(t % 2 ? "\"tenant\":\"acme\"" : "\"tenant\":\"globex\"") !=
                        std::string::npos;
        if (!mine && wrong++ == 0) ADD_FAILURE() << path << ": " << r.status << " " << r.body;
        if (mine) ++ok;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(wrong, 0) << server().log();
  EXPECT_EQ(ok, 16 * 40);
}

// A request waiting for its worker holds no event-loop thread: with one loop, a hung call
// leaves the loop free for the worker's other channels and for in-process plugins, and
// the hung call itself is answered 502 when its worker dies.
TEST_F(WorkerIsolationTest, AHungWorkerCallHoldsNoEventLoop) {
  startWith(
      "    - id: fixture/crashy\n"
      "      isolation: process\n"
      "    - id: trellis/echo-c\n"
      "  worker:\n"
      "    call_timeout_ms: 120000\n",
      "", true);
  ASSERT_EQ(request(port(), "GET", "/crashy/ok", kAcme).status, 200) << server().log();

  std::atomic<bool> hung_answered{false};
  HttpReply hung;
  std::thread caller([&] {
    hung = request(port(), "GET", "/crashy/hang", kAcme);
    hung_answered = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let it reach the worker
  EXPECT_EQ(request(port(), "GET", "/echo/x", kAcme).status, 200);
  EXPECT_THAT(request(port(), "GET", "/crashy/ok", kAcme).body, StartsWith("ok "));
  EXPECT_FALSE(hung_answered) << "the hung call ended early: " << hung.status << " " << hung.body;

  auto w = workerOf(server(), "fixture/crashy");
  ASSERT_TRUE(w);
  ::kill(w->getValue<int>("pid"), SIGKILL);
  caller.join();
  EXPECT_EQ(hung.status, 502) << hung.body;
  EXPECT_EQ(hung.header("content-type"), "application/problem+json");
  EXPECT_EQ(untilOk(port(), "/crashy/ok").status, 200);
}

// A worker route's host call that waits (a service call to a provider that sleeps, from a
// route not declared blocking) is served off the event loop that reads the worker's
// answers: with one loop, another request is answered meanwhile.
TEST_F(WorkerIsolationTest, AWorkerRoutesWaitingHostCallHoldsNoEventLoop) {
  startWith(
      "    - id: fixture/svc-a\n"
      "      isolation: process\n"
      "    - id: fixture/svc-b\n"
      "    - id: trellis/echo-c\n",
      "", true);
  auto warm = request(port(), "POST", "/svc-a/loop-call/svc-b/echo", kAcme, "hi");
  ASSERT_EQ(warm.status, 200) << warm.body;
  ASSERT_EQ(warm.body, "hi");

  std::atomic<bool> slow_answered{false};
  HttpReply slow;
  std::thread caller([&] {
    slow = request(port(), "POST", "/svc-a/loop-call/svc-b/sleep", kAcme, "3000");
    slow_answered = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // inside the service call
  // Well within the 3 s the service sleeps: a loop held by the call could not answer it.
  auto other = request(port(), "GET", "/echo/x", kAcme, "", std::chrono::milliseconds(1500));
  EXPECT_EQ(other.status, 200) << "no answer while the service call ran";
  EXPECT_FALSE(slow_answered) << "the service call ended early: " << slow.status << " "
                              << slow.body;
  caller.join();
  EXPECT_EQ(slow.status, 200) << slow.body;
  EXPECT_EQ(slow.body, "slept");
}

TEST_F(WorkerIsolationTest, GarbageFromAWorkerKillsOnlyThatWorker) {
  startWith(kWorkers);
  auto r = request(port(), "GET", "/crashy/garbage", kAcme);
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_THAT(server().log(), HasSubstr("protocol violation"));
  EXPECT_EQ(request(port(), "GET", "/hello/x", kAcme).status, 200);
  EXPECT_EQ(untilOk(port(), "/crashy/ok").status, 200);
}

TEST_F(WorkerIsolationTest, AnOversizedStreamPieceFromAWorkerIsAViolation) {
  startWith(kWorkers);
  auto r = request(port(), "GET", "/crashy/stream-oversized", kAcme);
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_THAT(server().log(), HasSubstr("protocol violation: a CALL that does not decode (op 39)"));
  auto metrics = request(server().adminPort(), "GET", "/metrics",
                         {{"Authorization", "Bearer " + server().adminToken()}});
  EXPECT_THAT(metrics.body,
              HasSubstr(R"(trellis_worker_crashes_total{plugin="fixture/crashy",tenant="*"} 1)"));
  EXPECT_EQ(request(port(), "GET", "/hello/x", kAcme).status, 200);
  EXPECT_EQ(untilOk(port(), "/crashy/ok").status, 200);
}

TEST_F(WorkerIsolationTest, AMemoryBombMeetsTheAddressSpaceLimit) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "an AddressSanitizer worker cannot run under RLIMIT_AS (sandbox.cc)";
#endif
  startWith(kWorkers);
  auto r = request(port(), "GET", "/crashy/alloc", kAcme);
  // Either malloc failed under RLIMIT_AS (the plugin says so) or the worker died of it.
  if (r.status == 200) {
    EXPECT_THAT(r.body, StartsWith("malloc failed after "));
    EXPECT_LE(std::stoul(r.body.substr(20)), 128u);
  } else {
    EXPECT_EQ(r.status, 502) << r.body;
  }
  EXPECT_EQ(request(port(), "GET", "/hello/x", kAcme).status, 200);
}

TEST_F(WorkerIsolationTest, ARequestThatCrashedTheWorkerThreeTimesIsRefusedAtOnce) {
  startWith(kWorkers);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(untilOk(port(), "/crashy/ok").status, 200);
    auto r = request(port(), "POST", "/crashy/poison", kAcme, "poison");
    EXPECT_EQ(r.status, 502) << r.body;
    EXPECT_THAT(r.body, HasSubstr("worker process failed"));
  }
  ASSERT_EQ(untilOk(port(), "/crashy/ok").status, 200);
  auto refused = request(port(), "POST", "/crashy/poison", kAcme, "poison");
  EXPECT_EQ(refused.status, 502);
  EXPECT_THAT(refused.body, HasSubstr("fail repeatedly"));
  EXPECT_EQ(workerOf(server(), "fixture/crashy")->getValue<uint64_t>("crashes"), 3u);
  // The same route with another body is served.
  auto fine = request(port(), "POST", "/crashy/poison", kAcme, "fine");
  EXPECT_EQ(fine.status, 200);
  EXPECT_EQ(fine.body, "fine");
}

TEST_F(WorkerIsolationTest, RepeatedCrashesBackOffIntoAVisibleCrashLoop) {
  startWith(kWorkers);
  // Each crash by another request (another body), so that the poison-request rule, which
  // refuses a request after its third crash, does not end the series first.
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(untilOk(port(), "/crashy/ok").status, 200) << "crash " << i;
    EXPECT_EQ(request(port(), "GET", "/crashy/segv", kAcme, "crash " + std::to_string(i)).status,
              502);
  }
  // The audit stream gets one record of it. There is no sink here, so the record's failure
  // is logged, by the event bus's thread: poll for it before any admin call, since failures
  // are logged once per 10 s and an admin call's own record could take that line.
  const std::string needle = "(worker_crashloop) not stored";
  for (int i = 0; i < 100 && server().log().find(needle) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_THAT(server().log(), HasSubstr(needle));
  auto w = workerOf(server(), "fixture/crashy");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->getValue<std::string>("state"), "crashlooping");
  EXPECT_GT(w->getValue<double>("backoff_seconds"), 0.0);
  // While it backs off, its requests are answered at once; everything else is served.
  auto during = request(port(), "GET", "/crashy/ok", kAcme);
  EXPECT_EQ(during.status, 502);
  EXPECT_THAT(during.body, HasSubstr("restarting"));
  EXPECT_EQ(request(port(), "GET", "/hello/x", kAcme).status, 200);
  int status = -1;
  std::string list = runCli(server(), "plugin list", &status);
  EXPECT_EQ(status, 0) << list;
  EXPECT_THAT(list, HasSubstr("state=crashlooping"));
  auto metrics = request(server().adminPort(), "GET", "/metrics",
                         {{"Authorization", "Bearer " + server().adminToken()}});
  EXPECT_THAT(metrics.body,
              HasSubstr(R"(trellis_worker_crashlooping{plugin="fixture/crashy",tenant="*"} 1)"));
}

TEST_F(WorkerIsolationTest, ADedicatedTenantWorkerCrashesAlone) {
  startWith(
      "    - id: fixture/crashy\n"
      "      isolation: process\n"
      "      dedicated_tenants: [globex]\n");
  auto acme = request(port(), "GET", "/crashy/ok", kAcme);
  auto globex = request(port(), "GET", "/crashy/ok", kGlobex);
  ASSERT_EQ(acme.status, 200) << server().log();
  ASSERT_EQ(globex.status, 200);
  EXPECT_NE(acme.body, globex.body);  // two processes
  EXPECT_EQ(request(port(), "GET", "/crashy/segv", kGlobex).status, 502);
  EXPECT_EQ(request(port(), "GET", "/crashy/ok", kAcme).body, acme.body);  // untouched
  EXPECT_EQ(untilOk(port(), "/crashy/ok", kGlobex).status, 200);
  EXPECT_EQ(workerOf(server(), "fixture/crashy", "globex")->getValue<uint64_t>("crashes"), 1u);
  EXPECT_EQ(workerOf(server(), "fixture/crashy", "*")->getValue<uint64_t>("crashes"), 0u);
}

TEST_F(WorkerIsolationTest, TheSandboxRefusesEachForbiddenThing) {
  startWith(
      "    - id: fixture/hostile-native\n"
      "      isolation: process\n"
      "    - id: trellis/echo-c\n");
  auto r = request(port(), "GET", "/hostile/try", kAcme);
  ASSERT_EQ(r.status, 200) << r.body << server().log();
  EXPECT_THAT(r.body, HasSubstr("thread ALLOWED"));  // the control: threads are fine
  for (const char* forbidden :
       {"exec", "fork", "clone-process", "ptrace", "socket-inet", "socket-inet6", "socket-raw",
        "socket-netlink", "socket-unix", "io_uring", "signal-other-process"}) {
    EXPECT_THAT(r.body, HasSubstr(std::string(forbidden) + " denied")) << r.body;
  }
  auto w = workerOf(server(), "fixture/hostile-native");
  ASSERT_TRUE(w);
  if (w->getValue<std::string>("landlock").rfind("abi", 0) == 0) {
    EXPECT_THAT(r.body, HasSubstr("read-outside-plugin-dir denied"));
    EXPECT_THAT(r.body, HasSubstr("write-tmp denied"));
  }
  EXPECT_EQ(request(port(), "GET", "/hostile/alive", kAcme).body, "alive");
  EXPECT_EQ(request(port(), "GET", "/echo/x", kAcme).status, 200);

  // The request snapshot in shared memory: its pages cannot be made writable, the sealed
  // region cannot be mapped writable, written, resized or resealed, nor written through
  // /proc/self/mem; the host keeps serving.
  r = request(port(), "GET", "/hostile/snapshot", kAcme);
  ASSERT_EQ(r.status, 200) << r.body << server().log();
  for (const char* forbidden :
       {"mprotect-snapshot-writable", "map-snapshot-writable", "write-snapshot-fd",
        "shrink-snapshot", "reseal-snapshot", "write-snapshot-proc-mem"}) {
    EXPECT_THAT(r.body, HasSubstr(std::string(forbidden) + " denied")) << r.body;
  }
  EXPECT_THAT(r.body, Not(HasSubstr("ALLOWED"))) << r.body;
  EXPECT_EQ(request(port(), "GET", "/hostile/alive", kAcme).body, "alive");
  EXPECT_EQ(request(port(), "GET", "/echo/x", kAcme).status, 200);
}

// The /metrics line of `name` with `labels`, or "" if absent.
std::string metricLine(const TrellisdProcess& t, const std::string& name_and_labels) {
  auto metrics =
      request(t.adminPort(), "GET", "/metrics", {{"Authorization", "Bearer " + t.adminToken()}});
  std::istringstream lines(metrics.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name_and_labels + " ", 0) == 0) return line;
  }
  return "";
}

double metricValue(const TrellisdProcess& t, const std::string& name_and_labels) {
  std::string line = metricLine(t, name_and_labels);
  return line.empty() ? -1 : std::stod(line.substr(name_and_labels.size() + 1));
}

// A body of printable bytes that JSON escaping leaves as it is, different at every offset
// that matters (a slot written over or cut short shows).
std::string patterned(size_t n) {
  std::string b(n, 'a');
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  return b;
}

// A worker route's request crosses in the channel's shared-memory snapshot region: a body
// far larger than a socket buffer and a hundred headers arrive intact; a body larger than
// the region travels inline as before, just as intact.
TEST_F(WorkerIsolationTest, LargeBodiesAndManyHeadersReachTheWorkerThroughTheSnapshot) {
  std::string config = defaultTestConfig(
      "    - id: trellis/echo-c\n"
      "      isolation: process\n"
      "  worker:\n"
      "    snapshot_bytes: 6291456\n");
  config.replace(config.find("  threads: 2\n"), 13,
                 "  threads: 2\n  max_body_bytes: 16777216\n  max_header_bytes: 65536\n");
  server_ = std::make_unique<TrellisdProcess>(config);
  ASSERT_TRUE(server_->start()) << server_->log();
  const std::string shared =
      R"(trellis_worker_snapshots_total{plugin="trellis/echo-c",tenant="*",path="shared"})";
  const std::string inlined =
      R"(trellis_worker_snapshots_total{plugin="trellis/echo-c",tenant="*",path="inline"})";

  std::map<std::string, std::string> headers = kAcme;
  for (int i = 0; i < 100; ++i) {
    headers["X-Snap-" + std::to_string(i)] = "value-" + std::to_string(i * 31);
  }
  const std::string big = patterned(4u << 20);
  auto r = request(port(), "POST", "/echo/big?q=1", headers, big, std::chrono::seconds(30));
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 300) << server().log();
  EXPECT_NE(r.body.find("\"body\":\"" + big + "\""), std::string::npos) << "body altered";
  EXPECT_THAT(r.body, HasSubstr("\"path\":\"/echo/big\""));
  EXPECT_THAT(r.body, HasSubstr("\"query\":\"q=1\""));
  for (int i = 0; i < 100; ++i) {
    EXPECT_THAT(r.body, AnyOf(HasSubstr("\"x-snap-" + std::to_string(i) + "\",\"value-" +
                                        std::to_string(i * 31) + "\""),
                              HasSubstr("\"X-Snap-" + std::to_string(i) + "\",\"value-" +
                                        std::to_string(i * 31) + "\"")))
        << i;
  }
  EXPECT_GE(metricValue(server(), shared), 1) << metricLine(server(), shared);

  // Larger than the region: inline, intact.
  const double inline_before = std::max(0.0, metricValue(server(), inlined));
  const std::string huge = patterned(7u << 20);
  r = request(port(), "POST", "/echo/huge", kAcme, huge, std::chrono::seconds(30));
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 300);
  EXPECT_NE(r.body.find("\"body\":\"" + huge + "\""), std::string::npos) << "body altered";
  EXPECT_EQ(metricValue(server(), inlined), inline_before + 1);
  // And the region serves the next request again.
  const double shared_before = metricValue(server(), shared);
  EXPECT_EQ(request(port(), "GET", "/echo/after", kAcme).status, 200);
  EXPECT_EQ(metricValue(server(), shared), shared_before + 1);
}

// With a region too small for most requests (the knob), and full while calls pipeline,
// snapshots fall back to the INVOKE: every answer is still each request's own.
TEST_F(WorkerIsolationTest, SnapshotsTravelInlineWhenTheRegionIsTooSmallOrFull) {
  startWith(
      "    - id: trellis/echo-c\n"
      "      isolation: process\n"
      "  worker:\n"
      "    channels: 2\n"
      "    snapshot_bytes: 4096\n");
  std::atomic<int> wrong{0}, ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 12; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 30; ++i) {
        const std::string path = "/echo/s" + std::to_string(t) + "-" + std::to_string(i);
        // Some fit the region a few at a time, some never fit it.
        const std::string body = patterned(t % 3 == 0 ? 9000 : 700 + 10 * t + i);
        auto r = request(port(), "POST", path, kAcme, body);
        bool mine = r.status == 200 &&
                    r.body.find("\"path\":\"" + path + "\"") != std::string::npos &&
                    r.body.find("\"body\":\"" + body + "\"") != std::string::npos;
        if (!mine && wrong++ == 0) ADD_FAILURE() << path << ": " << r.status << " " << r.body;
        if (mine) ++ok;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(wrong, 0) << server().log();
  EXPECT_EQ(ok, 12 * 30);
  EXPECT_GE(metricValue(server(), R"(trellis_worker_snapshots_total{plugin="trellis/echo-c",)"
                                  R"(tenant="*",path="shared"})"),
            1);
  EXPECT_GE(metricValue(server(), R"(trellis_worker_snapshots_total{plugin="trellis/echo-c",)"
                                  R"(tenant="*",path="inline"})"),
            4 * 30);  // the 9000-byte bodies, at least
  EXPECT_EQ(metricValue(server(), R"(trellis_worker_snapshot_slots{plugin="trellis/echo-c",)"
                                  R"(tenant="*"})"),
            0);
}

// snapshot_bytes: 0 turns the regions off: every request travels in its INVOKE.
TEST_F(WorkerIsolationTest, WithoutSnapshotRegionsEveryRequestTravelsInline) {
  startWith(
      "    - id: trellis/echo-c\n"
      "      isolation: process\n"
      "  worker:\n"
      "    snapshot_bytes: 0\n");
  const std::string body = patterned(100000);
  auto r = request(port(), "POST", "/echo/off", kAcme, body);
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 300) << server().log();
  EXPECT_NE(r.body.find("\"body\":\"" + body + "\""), std::string::npos);
  EXPECT_EQ(request(port(), "GET", "/echo/off2", kAcme).status, 200);
  EXPECT_EQ(metricValue(server(), R"(trellis_worker_snapshots_total{plugin="trellis/echo-c",)"
                                  R"(tenant="*",path="inline"})"),
            2);
  EXPECT_EQ(metricValue(server(), R"(trellis_worker_snapshots_total{plugin="trellis/echo-c",)"
                                  R"(tenant="*",path="shared"})"),
            0);
}

// Requests too large for the socket buffers travel inline (no snapshot region) on one
// channel, among requests the worker answers with bodies as large and small calls that
// keep batches several calls long: every request gets its own body back. (Whether two large
// frames cross at once here depends on timing; WorkerProcessTest.LargeInvokesPipelined...
// makes them cross every time.)
TEST_F(WorkerIsolationTest, LargeInlineRequestsPipelinedBehindLargeAnswersAllComplete) {
  std::string config = defaultTestConfig(
      "    - id: trellis/echo-c\n"
      "      isolation: process\n"
      "  worker:\n"
      "    channels: 1\n"
      "    snapshot_bytes: 0\n");
  config.replace(config.find("  threads: 2\n"), 13, "  threads: 2\n  max_body_bytes: 16777216\n");
  server_ = std::make_unique<TrellisdProcess>(config);
  ASSERT_TRUE(server_->start()) << server_->log();
  std::atomic<int> wrong{0}, ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 10; ++t) {
    clients.emplace_back([&, t] {
      const bool large = t < 4;
      for (int i = 0; i < (large ? 4 : 40); ++i) {
        const std::string path = "/echo/l" + std::to_string(t) + "-" + std::to_string(i);
        const std::string body = large ? patterned((1u << 20) + 1000 * t + i) : "";
        auto r =
            request(port(), large ? "POST" : "GET", path, kAcme, body, std::chrono::seconds(30));
        bool mine = r.status == 200 &&
                    r.body.find("\"path\":\"" + path + "\"") != std::string::npos &&
                    r.body.find("\"body\":\"" + body + "\"") != std::string::npos;
        if (!mine && wrong++ == 0) {
          ADD_FAILURE() << path << ": " << r.status << " " << r.body.substr(0, 300);
        }
        if (mine) ++ok;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(wrong, 0) << server().log();
  EXPECT_EQ(ok, 4 * 4 + 6 * 40);
}

// A worker that stops reading its channels (here it stops itself) while trellisd writes it
// a request too large for the socket buffer: the write holds the route thread no longer
// than the call's timeout, the call is answered 504 saying the worker stopped reading (not
// that the plugin gave no answer), the worker is replaced for that reason, and the other
// plugins are served meanwhile.
TEST_F(WorkerIsolationTest, AWorkerThatStopsReadingCostsItsCallOnlyTheTimeout) {
  std::string config = defaultTestConfig(
      "    - id: trellis/echo-c\n"
      "    - id: fixture/crashy\n"
      "      isolation: process\n"
      "  worker:\n"
      "    call_timeout_ms: 2000\n"
      "    snapshot_bytes: 0\n");
  config.replace(config.find("  threads: 2\n"), 13, "  threads: 2\n  max_body_bytes: 16777216\n");
  server_ = std::make_unique<TrellisdProcess>(config);
  ASSERT_TRUE(server_->start()) << server_->log();
  ASSERT_EQ(request(port(), "GET", "/crashy/freeze", kAcme).body, "freezing") << server().log();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the worker is stopped

  HttpReply big;
  std::chrono::steady_clock::duration took{};
  std::thread caller([&] {
    const auto before = std::chrono::steady_clock::now();
    big = request(port(), "POST", "/crashy/poison", kAcme, patterned(4u << 20),
                  std::chrono::seconds(60));
    took = std::chrono::steady_clock::now() - before;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(request(port(), "GET", "/echo/meanwhile", kAcme).status, 200);
  caller.join();
  EXPECT_EQ(big.status, 504) << big.body << server().log();
  EXPECT_EQ(big.header("content-type"), "application/problem+json");
  EXPECT_THAT(big.body, HasSubstr("did not read its requests within 2000 ms"));
  EXPECT_THAT(big.body, Not(HasSubstr("did not answer")));
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_EQ(request(port(), "GET", "/echo/after", kAcme).status, 200);
  EXPECT_EQ(untilOk(port(), "/crashy/ok").status, 200);
  auto w = workerOf(server(), "fixture/crashy");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->getValue<std::string>("last_crash"), "did not read its requests within 2000 ms");
  EXPECT_THAT(server().log(), HasSubstr("did not read its requests within 2000 ms"));
}

// A worker that dies with calls pipelined behind the one that killed it: those calls go to
// the next worker with fresh snapshots, and no slot of the dead worker stays counted.
TEST_F(WorkerIsolationTest, SnapshotSlotsAreReclaimedWhenTheWorkerCrashesMidBatch) {
  startWith(kWorkers);
  ASSERT_EQ(request(port(), "GET", "/crashy/ok", kAcme).status, 200) << server().log();
  std::atomic<bool> stop{false};
  std::atomic<int> served{0}, failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 12; ++t) {
    clients.emplace_back([&, t] {
      // Each request its own body: the poison-request key (route and body) of the calls
      // in flight during a crash then never reaches three.
      for (int i = 0; !stop; ++i) {
        const std::string body = std::to_string(t) + "-" + std::to_string(i);
        int s = request(port(), "GET", "/crashy/ok", kAcme, body).status;
        if (s == 200) {
          ++served;
        } else {
          ++failed;  // 502 while the worker is down: expected, not counted as a leak
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(request(port(), "GET", "/crashy/segv", kAcme).status, 502);
    ASSERT_EQ(untilOk(port(), "/crashy/ok").status, 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_GT(served, 0);
  // Requests after the restarts are served through the new worker's region.
  for (int i = 0; i < 20; ++i) EXPECT_EQ(request(port(), "GET", "/crashy/ok", kAcme).status, 200);
  EXPECT_EQ(metricValue(server(), R"(trellis_worker_snapshot_slots{plugin="fixture/crashy",)"
                                  R"(tenant="*"})"),
            0)
      << metricLine(server(), R"(trellis_worker_snapshot_slots{plugin="fixture/crashy",)"
                              R"(tenant="*"})");
  EXPECT_GE(metricValue(server(), R"(trellis_worker_snapshots_total{plugin="fixture/crashy",)"
                                  R"(tenant="*",path="shared"})"),
            served + 20);
  auto w = workerOf(server(), "fixture/crashy");
  ASSERT_TRUE(w);
  EXPECT_GE(w->getValue<uint64_t>("crashes"), 2u);
}

TEST_F(WorkerIsolationTest, WorkersDieWithTrellisd) {
  startWith(kWorkers);
  auto w = workerOf(server(), "fixture/crashy");
  ASSERT_TRUE(w);
  int pid = w->getValue<int>("pid");
  ASSERT_TRUE(processExists(pid));
  server().kill();  // SIGKILL: no shutdown code runs
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (processExists(pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(processExists(pid)) << "worker " << pid << " outlived trellisd";
}

TEST(WorkerConfigTest, IsolationIsParsedStrictly) {
  TempDir dir;
  for (const auto& [yaml, message] : std::vector<std::pair<std::string, std::string>>{
           {"    - id: trellis/hello\n      isolation: sandboxed\n",
            "isolation: expected \"process\" or \"in-process\""},
           {"    - id: trellis/hello\n      dedicated_tenants: [acme]\n",
            "dedicated_tenants: needs isolation: process"},
           {"    - id: trellis/hello\n      isolation: process\n      dedicated_tenants: [Acme "
            "Corp]\n",
            "dedicated_tenants[0]: expected a tenant id"},
           {"    - id: trellis/hello\n      isolation: process\n      dedicated_tenants: [acme, "
            "acme]\n",
            "dedicated_tenants[1]: tenant \"acme\" twice"},
           {"    - id: trellis/hello\n  worker:\n    user: root\n", "worker.user"},
           {"    - id: trellis/hello\n  worker:\n    channels: 0\n", "worker.channels"},
           {"    - id: trellis/hello\n  worker:\n    snapshot_bytes: 2147483648\n",
            "worker.snapshot_bytes"},
           {"    - id: trellis/hello\n  worker:\n    snapshot_min_bytes: -1\n",
            "worker.snapshot_min_bytes"}}) {
    writeFile(dir / "trellis.yaml", "plugins:\n  enabled:\n" + yaml);
    int status = -1;
    std::string out = runCommand(
        std::string(TRELLISD_PATH) + " --check -c " + (dir / "trellis.yaml").string() + " 2>&1",
        &status);
    EXPECT_EQ(status, 2) << yaml;
    EXPECT_THAT(out, HasSubstr(message)) << yaml;
  }
}

}  // namespace
}  // namespace trellis::test
