// A Lua script a plugin handed the kernel (ABI 1.2 script_load): its own sandboxed,
// metered state (lua/sandbox.h), and calls of its functions with JSON in and JSON out.
// The kernel decides the budget: what the plugin asked for, 0 meaning the default, capped
// by the operator's ceiling for that plugin.
//
//   auto budget = scriptBudget({.instructions = 200'000}, ceiling);
//   auto s = Script::load("local n = 0 function f(x) n = n + x return n end", "rule.lua",
//                         budget, "script acme/x (rule.lua)");
//   auto out = (*s)->call("f", "2");        // "2"; the next call("f", "3") gives "5"
//   if (!out) log(out.status().message());  // "rule.lua:1: attempt to ..." or the budget
//
// THREADING: calls on one Script run one at a time (a mutex); Scripts are independent.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "trellis/kernel/lua/sandbox.h"
#include "trellis/status.hpp"

namespace trellis::kernel::services::script {

inline constexpr size_t kMaxSourceBytes = 1024 * 1024;
inline constexpr size_t kMaxJsonBytes = 1024 * 1024;  // a call's input and its output
inline constexpr size_t kMaxNameBytes = 128;

// What a plugin may ask for (0 = the default).
struct Request {
  uint64_t instructions = 0;
  uint64_t memory_bytes = 0;
  uint32_t wall_ms = 0;
};

// The defaults a script gets, before the ceiling caps them.
inline constexpr lua::Budget kDefaultBudget{.instructions = 1'000'000,
                                            .memory_bytes = 8 * 1024 * 1024,
                                            .wall_time = std::chrono::milliseconds(50)};

// The request with defaults filled in, each field capped by `ceiling`; a memory budget
// below the sandbox's minimum (64 KiB) is raised to it.
lua::Budget scriptBudget(const Request& asked, const lua::Budget& ceiling);

// A call's outcome as a status: OK; INVALID (the script's error, with chunk and line);
// QUOTA_EXCEEDED (instructions, memory); TIMEOUT (wall time). `what` prefixes budget
// messages ("rule.lua: instruction budget of 1000 exceeded").
Status statusOf(const lua::CallResult& r, std::string_view what);

class Script {
 public:
  // Compiles `source` and runs its top level under `budget`. INVALID for an empty or
  // oversized source, a bad name, a syntax or top-level error; budget statuses as above.
  static Result<std::unique_ptr<Script>> load(std::string_view source, std::string_view name,
                                              const lua::Budget& budget, std::string label);

  // Calls global function `function` with `input_json` decoded; its first result encoded.
  // NOT_FOUND if there is no such function; INVALID for a bad function name, input that is
  // not JSON, or an error of the script; budget statuses as above.
  Result<std::string> call(std::string_view function, std::string_view input_json);

  const std::string& name() const { return name_; }
  const lua::Budget& budget() const { return sb_->budget(); }
  // What the last call used (for metrics and tests).
  lua::Usage lastUsage() const;

 private:
  Script(std::unique_ptr<lua::Sandbox> sb, std::string name)
      : sb_(std::move(sb)), name_(std::move(name)) {}

  mutable std::mutex mu_;
  std::unique_ptr<lua::Sandbox> sb_;
  std::string name_;
  lua::Usage last_;
};

// True for 1..128 bytes of [A-Za-z_][A-Za-z0-9_]*: a global function a script may define.
bool isFunctionName(std::string_view name);

}  // namespace trellis::kernel::services::script
