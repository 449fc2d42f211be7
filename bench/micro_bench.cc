// Hot-path pieces of a data-plane request, one at a time:
//   build/release/bench/trellis_micro_bench
#include <benchmark/benchmark.h>

#include <filesystem>
#include <string>

#include "trellis/kernel/http/router.h"
#include "trellis/kernel/lua/policy_engine.h"
#include "trellis/kernel/lua/policy_store.h"
#include "trellis/kernel/util/json.h"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/registry.h"

namespace {

using trellis::kernel::http::Router;

Router typicalRoutes() {
  Router r;
  const char* patterns[] = {"/hello/{name}", "/echo",           "/echo/{rest...}",
                            "/ping",         "/v1/users/{id}",  "/v1/users/{id}/keys/{key}",
                            "/v1/orders",    "/v1/orders/{id}", "/static/{rest...}"};
  size_t i = 0;
  for (const char* p : patterns) (void)r.add("GET", p, i++);
  return r;
}

void BM_RouterMatchParam(benchmark::State& state) {
  Router r = typicalRoutes();
  for (auto _ : state) benchmark::DoNotOptimize(r.match("GET", "/v1/users/42/keys/abc"));
}
BENCHMARK(BM_RouterMatchParam);

void BM_RouterMatchLiteral(benchmark::State& state) {
  Router r = typicalRoutes();
  for (auto _ : state) benchmark::DoNotOptimize(r.match("GET", "/ping"));
}
BENCHMARK(BM_RouterMatchLiteral);

// Key resolution as the data plane does it: hash, snapshot lookup, constant-time confirm.
void BM_TenantResolve(benchmark::State& state) {
  auto dir = std::filesystem::temp_directory_path() / "trellis-bench-registry";
  std::filesystem::remove_all(dir);
  auto registry = trellis::tenants::TenantRegistry::openSqlite(dir / "system.db");
  if (!registry) return state.SkipWithError(registry.status().toString().c_str());
  std::string key;
  for (int i = 0; i < state.range(0); ++i) {
    trellis::tenants::TenantRecord tenant;
    tenant.id = "tenant-" + std::to_string(i);
    (void)(*registry)->create(std::move(tenant));
    auto k = (*registry)->createKey("tenant-" + std::to_string(i), std::nullopt);
    if (k && key.empty()) key = k->secret;
  }
  for (auto _ : state) benchmark::DoNotOptimize((*registry)->resolve(key));
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_TenantResolve)->Arg(10)->Arg(100);

void BM_JsonEscapePath(benchmark::State& state) {
  const std::string path = "/hello/some-name-with-\"quotes\"-and-\xc3\xa9";
  std::string out;
  for (auto _ : state) {
    out.clear();
    trellis::kernel::util::appendJsonString(out, path);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_JsonEscapePath);

// Admission as the data plane runs it, reading the clock per request. Arg 0: a tenant
// without quotas (the fast path); arg 1: rate, burst, concurrency and body limits, with a
// rate high enough that every request is admitted. With 2 threads both serve one tenant.
void BM_AdmissionAdmit(benchmark::State& state) {
  static trellis::tenants::Admission admission;
  trellis::tenants::Quotas quotas;
  if (state.range(0) != 0) {
    quotas.requests_per_second = 1'000'000'000;
    quotas.max_concurrent = 1'000'000;
    quotas.max_body_bytes = 1 << 20;
  }
  for (auto _ : state) {
    auto ticket = admission.admit("acme", quotas, 512);
    benchmark::DoNotOptimize(ticket);
  }
}
BENCHMARK(BM_AdmissionAdmit)->ArgName("limited")->Arg(0)->Arg(1)->Threads(1)->Threads(2);

// A tenant over its rate: the 429 path, which formats a decision id and the quota name.
void BM_AdmissionReject(benchmark::State& state) {
  trellis::tenants::Admission admission;
  trellis::tenants::Quotas quotas;
  quotas.requests_per_second = 1;
  const auto now = trellis::tenants::Admission::Clock::now();
  (void)admission.admit("acme", quotas, 0, now);
  for (auto _ : state) {
    auto ticket = admission.admit("acme", quotas, 0, now);
    benchmark::DoNotOptimize(ticket);
  }
}
BENCHMARK(BM_AdmissionReject);

// One on_request evaluation as the data plane runs it: the bench policy of bench/run.sh (a
// header check and a CIDR match) in the thread's sandbox, with the verdict read back.
// Arg 0: an empty on_request (the fixed cost of a hook call); arg 1: the bench policy.
void BM_PolicyOnRequest(benchmark::State& state) {
  namespace lua = trellis::kernel::lua;
  lua::PolicyOptions options;
  options.budget.wall_time = std::chrono::seconds(1);  // room to run under valgrind too
  lua::PolicyEngine engine(options, nullptr, nullptr, nullptr);
  auto applied =
      engine.apply("", "bench.lua", state.range(0) == 0 ? "function on_request() end" : R"(
    local allowed = {"127.0.0.0/8", "10.0.0.0/8"}
    function on_request(ctx, req)
      if req.headers["x-blocked"] then return policy.deny(403, "blocked") end
      if not policy.cidr_match(req.remote_addr, allowed) then
        return policy.deny(403, "not from an allowed network")
      end
      return policy.allow()
    end)");
  if (!applied) return state.SkipWithError(applied.status().toString().c_str());
  trellis::tenants::TenantView tenant;
  tenant.id = "bench";
  trellis::kernel::http::Request req{boost::beast::http::verb::get, "/ping", 11};
  req.set("Authorization", "Bearer bench-key");
  req.set("User-Agent", "wrk");
  lua::RequestContext rc{&tenant, "configured", "/ping", "127.0.0.1", nullptr};
  for (auto _ : state) {
    auto v = engine.onRequest(rc, req);
    if (v.action != lua::Verdict::Action::kAllow) {
      state.SkipWithError("the bench policy did not allow");
      break;
    }
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_PolicyOnRequest)->ArgName("bench_policy")->Arg(0)->Arg(1);

// The data plane's whole policy cost when no policy is applied.
void BM_PolicyInactiveCheck(benchmark::State& state) {
  namespace lua = trellis::kernel::lua;
  lua::PolicyEngine engine(lua::PolicyOptions{}, nullptr, nullptr, nullptr);
  for (auto _ : state) benchmark::DoNotOptimize(engine.active());
}
BENCHMARK(BM_PolicyInactiveCheck);

}  // namespace
