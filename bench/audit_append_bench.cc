// What appending to the audit log costs (issue #15's target: 50,000 records/s on one
// core): trellis/audit loaded in-process, its audit.v1 methods called the way the kernel's
// audit stream calls them, storing into the SQLite KV store (WAL, synchronous=FULL) in a
// temporary directory. Chain, Merkle tree, HMAC of sensitive fields and durable write:
//   BM_AuditWrite        one record per call, one durable write each (the admin path)
//   BM_AuditWriteBatch   records per call (the argument), one durable write per block
// The peer, in the same run: BM_KvPutSameBytes, the same store taking blocks of the same
// size with no chain, tree or HMAC: what the durable write alone costs. With one review
// rule (review_rules.h) on the records' log, run by the kernel's script service after each
// durable write: BM_AuditWriteOneRule and BM_AuditWriteBatchOneRule, against the two above
// (no rule) in the same run.
//   taskset -c 0 build/release/bench/trellis_audit_bench     # one core
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "runtime/call_context.h"
#include "runtime/plugin_manager.h"
#include "runtime/system_grants.h"
#include "services/calls/service_registry.h"
#include "services/core/handle_table.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/storage/kv_store.h"

namespace {

using namespace trellis::kernel;

// A record as the kernel sends it for an admin call (about 400 bytes).
std::string sampleRecord(int i) {
  return R"({"type":"admin.request","action":"PUT /v1/tenants/{id}","tenant":"acme",)"
         R"("resource":"tenants/acme","outcome":"pending","status":0,"seq":)" +
         std::to_string(i) +
         R"(,"request_id":"0193a7c2-1f4e-7000-8000-00000000abcd","trace_id":)"
         R"("4bf92f3577b34da6a3ce929d0e0e4736","actor":{"name":"ops","principal":)"
         R"("token:ops","role":"operator"},"parameters":{"plan":"pro","labels":)"
         R"({"team":"payments"},"email":"carol@example.com"}})";
}

// A review rule as an operator might write one: a window of counts per principal that
// never reaches its threshold on the sample records, so it costs a call and raises nothing.
constexpr const char* kRule = R"(
local counts = {}
function on_record(input)
  local who = input.record.actor.name
  counts[who] = (counts[who] or 0) + 1
  if counts[who] > 1000000 then return {principal = who} end
  return nil
end)";

struct AuditInProcess {
  std::filesystem::path dir;
  std::unique_ptr<storage::KvStore> kv;
  services::ServiceRegistry registry;
  services::HandleTable handles;
  metrics::MetricsRegistry metrics;
  events::EventBus events{1024};
  std::unique_ptr<runtime::SystemGrants> grants;
  std::unique_ptr<runtime::PluginManager> manager;
  runtime::PluginInstance* sink = nullptr;

  // With `rule`, one review rule on the records' log (acme), stored as the admin route
  // stores it, before the plugin starts.
  explicit AuditInProcess(bool rule = false) {
    char tmpl[] = "/tmp/trellis-audit-bench-XXXXXX";
    dir = mkdtemp(tmpl);
    kv = std::move(storage::openSqliteKvStore(dir / "kv")).value();
    if (rule) {
      std::string source = "\"";
      for (char c : std::string(kRule)) {
        if (c == '\n') {
          source += "\\n";
        } else if (c == '"') {
          source += "\\\"";
        } else {
          source += c;
        }
      }
      source += "\"";
      const storage::Scope scope{std::string(storage::kSystemScopeTenant), "trellis/audit"};
      (void)kv->put(scope, "rule/acme/bench", "{\"source\":" + source + "}", storage::kAbsent);
    }
    config::PluginEntry audit;
    audit.id = "trellis/audit";
    audit.system = true;
    // No purge job: the host here has no job service.
    audit.config_json =
        R"({"checkpoint_every":1000,"sensitive_fields":["email"],"purge_interval_s":0})";
    grants = std::make_unique<runtime::SystemGrants>(std::vector{audit});
    manager = std::make_unique<runtime::PluginManager>(
        runtime::HostServices{.kv = kv.get(),
                              .events = &events,
                              .metrics = &metrics,
                              .handles = &handles,
                              .service_registry = &registry,
                              .system_grants = grants.get()});
    manager->startAll({TRELLIS_PLUGIN_DIR}, {audit});
    const auto view = manager->read();  // named: plugins() refers into the view
    for (const auto* p : view.plugins()) {
      if (p->id() == "trellis/audit" && p->state == runtime::PluginState::kActive) {
        sink = const_cast<runtime::PluginInstance*>(p);
      }
    }
  }
  ~AuditInProcess() {
    manager.reset();
    kv.reset();
    std::filesystem::remove_all(dir);
  }

  // audit.v1 `method`, called as admin::AuditStream::deliver calls `write`.
  bool call(const char* method, const std::string& body) {
    const auto& fn = sink->service_methods.at("audit.v1").at(method);
    const auto trace = services::TraceContext::root();
    trellis_ctx ctx;
    ctx.plugin = sink;
    ctx.trace = &trace;
    ctx.phase = runtime::Phase::kService;
    ctx.caller = "kernel";
    trellis_service_reply reply;
    ctx.reply = &reply;
    runtime::CallScope scope(&ctx);
    return fn.fn(fn.user, &ctx, trellis_str{body.data(), body.size()}, &reply) == TRELLIS_OK;
  }
};

// Whether the plugin loaded the bench's rule (GET …/rules would say "active").
bool ruleActive(AuditInProcess& audit) {
  return audit.handles.size() == 1;
}

void BM_AuditWrite(benchmark::State& state) {
  AuditInProcess audit(state.range(0) == 1);
  if (!audit.sink) return state.SkipWithError("trellis/audit did not start");
  if (state.range(0) == 1 && !ruleActive(audit)) return state.SkipWithError("no rule loaded");
  int i = 0;
  for (auto _ : state) {
    if (!audit.call("write", sampleRecord(++i))) return state.SkipWithError("write failed");
  }
  state.counters["records/s"] =
      benchmark::Counter(static_cast<double>(i), benchmark::Counter::kIsRate);
}
// Argument: 0 without a rule, 1 with one review rule.
BENCHMARK(BM_AuditWrite)->ArgName("rules")->Arg(0)->Arg(1)->UseRealTime()->MinTime(2.0);

void BM_AuditWriteBatch(benchmark::State& state) {
  AuditInProcess audit(state.range(1) == 1);
  if (!audit.sink) return state.SkipWithError("trellis/audit did not start");
  if (state.range(1) == 1 && !ruleActive(audit)) return state.SkipWithError("no rule loaded");
  const int per_call = static_cast<int>(state.range(0));
  int i = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::string batch;
    for (int n = 0; n < per_call; ++n) batch += sampleRecord(++i) + "\n";
    state.ResumeTiming();
    if (!audit.call("write_batch", batch)) return state.SkipWithError("write_batch failed");
  }
  state.counters["records/s"] =
      benchmark::Counter(static_cast<double>(i), benchmark::Counter::kIsRate);
}
// Arguments: records per call; 0 without a rule, 1 with one review rule.
BENCHMARK(BM_AuditWriteBatch)
    ->ArgNames({"per_call", "rules"})
    ->Args({16, 0})
    ->Args({256, 0})
    ->Args({256, 1})
    ->UseRealTime()
    ->MinTime(2.0);

// The peer: the durable write alone, the same bytes per block as BM_AuditWriteBatch/256
// stores (a stored record line is about 650 bytes).
void BM_KvPutSameBytes(benchmark::State& state) {
  char tmpl[] = "/tmp/trellis-audit-bench-XXXXXX";
  const std::filesystem::path dir = mkdtemp(tmpl);
  auto kv = std::move(storage::openSqliteKvStore(dir / "kv")).value();
  const storage::Scope scope{std::string(storage::kSystemScopeTenant), "trellis/audit"};
  const int per_put = static_cast<int>(state.range(0));
  const std::string block(static_cast<size_t>(per_put) * 650, 'x');
  int i = 0;
  for (auto _ : state) {
    char key[32];
    std::snprintf(key, sizeof key, "blk/%020d", i);
    if (!kv->put(scope, key, block, storage::kAbsent)) return state.SkipWithError("put failed");
    i += per_put;
  }
  state.counters["records/s"] =
      benchmark::Counter(static_cast<double>(i), benchmark::Counter::kIsRate);
  kv.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_KvPutSameBytes)->Arg(1)->Arg(256)->UseRealTime()->MinTime(2.0);

}  // namespace
