// What the policy engine (policy_engine.cc) and the `policy` Lua library with the ctx/req/
// res/q proxies (policy_library.cc) share: the compiled policy, the hook call in progress
// on this thread, and the engine services the library may use.
#pragma once

#include <string>
#include <string_view>

#include "trellis/kernel/lua/policy_engine.h"

namespace trellis::kernel::lua {

struct CompiledPolicy {
  uint64_t uid = 0;  // unique per compiled version, for the per-thread sandbox caches
  std::string tenant;
  std::string scope;  // "global" or "tenant:<id>"
  uint64_t version = 0;
  std::string name;
  std::string source;
  int64_t applied_at_ms = 0;
  std::array<bool, kHookCount> hooks{};
};

struct PolicyEngine::Call {
  Hook hook = Hook::kOnRequest;
  const RequestContext* rc = nullptr;
  const http::Request* req = nullptr;
  const http::Response* res = nullptr;
  const tenants::Rejection* rejection = nullptr;
  const PluginInstall* install = nullptr;
  const CompiledPolicy* policy = nullptr;
  PolicyEngine* engine = nullptr;
  Verdict* verdict = nullptr;
};

// The verdict's decision id, made on first use (see Verdict::decision_id).
inline const std::string& decisionId(Verdict& v) noexcept {
  try {
    if (v.decision_id.empty()) v.decision_id = tenants::newDecisionId();
  } catch (...) {  // out of memory: no id rather than an exception through Lua's C frames
  }
  return v.decision_id;
}

// The hook call in progress on this thread; null outside hook calls.
extern constinit thread_local PolicyEngine::Call* t_policy_call;

// Engine services for the library. Each keeps its C++ objects in its own frame and returns
// before the library function touches Lua again (Lua errors are longjmps).
struct EngineAccess {
  static void log(const PolicyEngine::Call& c, const char* msg, size_t n) noexcept;
  // Reads the calling tenant's value into `out`. False if absent or unavailable.
  static bool kvGet(const PolicyEngine::Call& c, std::string_view plugin, std::string_view key,
                    std::string& out) noexcept;
  // False if the name is new and the bound on distinct names is reached.
  static bool metric(const PolicyEngine::Call& c, std::string_view name, double value) noexcept;
  static constexpr size_t kMaxMetricNames = 100;
};

namespace policy_library {
// The `policy` table's functions, for Sandbox::addLibrary.
extern const luaL_Reg kFunctions[];
// Creates the ctx/req/res/q proxies in a sandbox (run with Sandbox::protectedCall).
int installProxies(lua_State* L);
// Sandbox::Marshal callbacks for a hook call; `data` is the PolicyEngine::Call.
int pushArgs(lua_State* L, void* data);
int readVerdict(lua_State* L, void* data);
}  // namespace policy_library

}  // namespace trellis::kernel::lua
