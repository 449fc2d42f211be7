// What a service call costs the host: svc-a calls svc-b's "echo" through service_call
// (gate, capability and grant check, provider lease, callee ctx with a new trace span,
// reply copy), against svc-b's method called directly with a ready ctx — the provider's
// own work. The difference is the host overhead per call.
//   build/release/bench/trellis_service_bench
// (needs the fixtures built: cmake --build … --target fixture_svc_a fixture_svc_b)
#include <benchmark/benchmark.h>

#include <filesystem>

#include "runtime/call_context.h"
#include "runtime/plugin_manager.h"
#include "services/calls/service_registry.h"
#include "services/trace/trace_context.h"

namespace {

using namespace trellis::kernel;

struct TwoPlugins {
  services::ServiceRegistry registry;
  runtime::PluginManager manager{runtime::HostServices{.service_registry = &registry}};
  runtime::PluginInstance* caller = nullptr;
  runtime::PluginInstance* provider = nullptr;
  trellis::tenants::TenantView tenant;

  TwoPlugins() {
    config::PluginEntry a, b;
    a.id = "fixture/svc-a";
    b.id = "fixture/svc-b";
    manager.startAll({TRELLIS_FIXTURE_DIR}, {a, b});
    const auto view = manager.read();  // named: plugins() refers into the view
    for (const auto* p : view.plugins()) {
      if (p->state != runtime::PluginState::kActive) continue;
      auto* mutable_p = const_cast<runtime::PluginInstance*>(p);
      (p->id() == "fixture/svc-a" ? caller : provider) = mutable_p;
    }
    tenant.id = "acme";
    tenant.plugins = {"fixture/svc-a", "fixture/svc-b"};
  }
};

TwoPlugins& plugins() {
  static TwoPlugins p;
  return p;
}

void BM_ServiceCallThroughHost(benchmark::State& state) {
  auto& p = plugins();
  if (!p.caller || !p.provider) return state.SkipWithError("fixtures svc-a/svc-b not loaded");
  const auto trace = services::TraceContext::root();
  trellis_ctx ctx;
  ctx.plugin = p.caller;
  ctx.tenant = &p.tenant;
  ctx.trace = &trace;
  ctx.phase = runtime::Phase::kRequest;
  runtime::CallScope scope(&ctx);
  const trellis_host_api* host = runtime::hostApi();
  for (auto _ : state) {
    trellis_buf out{nullptr, 0};
    if (host->service_call(&ctx, TRELLIS_STR("svc-b"), TRELLIS_STR("echo"), TRELLIS_STR("ping"),
                           &out) != TRELLIS_OK) {
      return state.SkipWithError("service_call failed");
    }
    host->buf_free(&out);
  }
}
BENCHMARK(BM_ServiceCallThroughHost);

void BM_ProviderMethodDirect(benchmark::State& state) {
  auto& p = plugins();
  if (!p.caller || !p.provider) return state.SkipWithError("fixtures svc-a/svc-b not loaded");
  const auto& method = p.provider->service_methods.at("svc-b").at("echo");
  const auto trace = services::TraceContext::root();
  trellis_ctx ctx;
  ctx.plugin = p.provider;
  ctx.tenant = &p.tenant;
  ctx.trace = &trace;
  ctx.phase = runtime::Phase::kService;
  ctx.caller = "fixture/svc-a";
  runtime::CallScope scope(&ctx);
  for (auto _ : state) {
    trellis_service_reply reply;
    ctx.reply = &reply;
    method.fn(method.user, &ctx, TRELLIS_STR("ping"), &reply);
    benchmark::DoNotOptimize(reply.bytes.data());
  }
}
BENCHMARK(BM_ProviderMethodDirect);

}  // namespace
