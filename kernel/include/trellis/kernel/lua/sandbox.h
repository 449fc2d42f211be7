// A sandboxed, metered Lua 5.4 state: the one place the kernel runs untrusted Lua (admin
// policies, and Lua plugins through lua_plugin.h). What a script can reach:
//   - base: assert error ipairs next pairs pcall xpcall rawequal rawlen rawget rawset select
//     setmetatable getmetatable tonumber tostring type load _VERSION _G
//   - string (no dump), table, math, utf8, coroutine — all read-only
//   - the host libraries added with addLibrary(), read-only too
// Gone: io, os, debug, package, require, dofile, loadfile, collectgarbage, print, warn,
// string.dump and binary chunks (`load` is text-only and defaults to the sandbox's env).
// setmetatable refuses a metatable with __gc; rawset refuses the read-only tables;
// getmetatable on a string, a library or the globals answers "locked".
//
// Every load() and call() runs under a Budget:
//   - instructions: a count hook. Once over budget the hook *yields* the call's coroutine
//     out to the host, so pcall/xpcall cannot catch it; where yielding is impossible (inside
//     a C function such as table.sort's comparator) it raises an uncatchable-in-effect
//     sentinel error on every instruction until the script is back where it can be yielded.
//   - memory: the state's allocator refuses to grow past memory_bytes (the whole state,
//     including the loaded code); once refused, the call is over budget.
//   - wall time: checked by the hook, by the allocator (every 64th and every large
//     allocation) and by every charge() below. A call that ends after its deadline fails.
//   - work in C: every standard-library function a script can reach either does work
//     bounded by its arguments' size or is replaced by a budget-aware version
//     (bounded_stdlib.cc) that charges the work it is about to do against what is *left*
//     of the call's instruction budget (charge()), so a loop of C calls cannot multiply
//     one budget-sized call. A table's hash part holds at most kMaxHashKeys keys, which
//     bounds a rehash of keys chosen to collide.
//   - a watchdog thread (watchdog.h) notices a call still running past its deadline plus
//     a grace period, reports it and asks it to stop at its next check.
// A budget failure is sticky for the rest of the call and is reported as such even if the
// script caught the error. The state stays usable for the next call.
//
//   auto sb = Sandbox::create(Budget{.instructions = 100'000});
//   (*sb)->addLibrary("host", kHostFunctions, &my_context);
//   auto loaded = (*sb)->load(source, "policy.lua");          // runs the top level
//   if (!loaded.ok()) log(loaded.error);                      // "policy.lua:3: ..."
//   auto r = (*sb)->call("on_request", pushArgs, readResults, &data);
//
// THREADING: a Sandbox is not thread-safe; use one per thread (or lock around it).
// HOST FUNCTIONS (lua_CFunction) run inside Lua's protected calls: Lua reports errors by
// longjmp, so a host function must not hold objects with non-trivial destructors while it
// calls a Lua API function that can raise (anything that allocates, luaL_check*, lua_error).
// Keep C++ work in a separate function that returns before pushing results; scratch() is a
// per-state string for results built in C++.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "lua.hpp"
#include "trellis/status.hpp"

namespace trellis::kernel::lua {

struct Budget {
  uint64_t instructions = 1'000'000;      // VM instructions per call (counted in steps of 100)
  size_t memory_bytes = 8 * 1024 * 1024;  // the whole state
  std::chrono::microseconds wall_time{50'000};
};

enum class Outcome { kOk, kError, kInstructionLimit, kMemoryLimit, kWallTimeLimit };
// "ok", "error", "instructions", "memory", "wall_time"
std::string_view outcomeName(Outcome o);

struct Usage {
  uint64_t instructions = 0;     // a multiple of the hook step (100), or fewer for tiny budgets
  size_t peak_memory_bytes = 0;  // of the whole state during the call
  std::chrono::microseconds wall_time{0};
};

struct CallResult {
  Outcome outcome = Outcome::kOk;
  std::string error;  // "policy.lua:12: attempt to index a nil value", or the budget exceeded
  Usage usage;
  bool ok() const { return outcome == Outcome::kOk; }
};

class Sandbox {
 public:
  // Pushes a call's arguments (returns how many) or reads its results (at stack indices
  // 1..lua_gettop(L); returns 0). Both run inside the call's coroutine and may raise Lua
  // errors (luaL_error) — with no C++ objects with destructors in their frames.
  // Read with raw access (lua_rawget): a metamethod would run script code, which is metered
  // but fails the call.
  using Marshal = int (*)(lua_State* L, void* data);

  static Result<std::unique_ptr<Sandbox>> create(const Budget& budget);
  // Instructions every call on this thread has used so far (monotonic): a caller takes the
  // difference around a stretch of work, e.g. the usage record of a request.
  static uint64_t threadInstructions();
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  // Adds the read-only global table `name` with `functions` (NULL-terminated); each gets
  // `context` as its upvalue 1 (lua_touserdata(L, lua_upvalueindex(1))). Call before load().
  // A dotted name ("host.kv") nests the table inside a library added earlier ("host").
  Status addLibrary(const char* name, const luaL_Reg* functions, void* context);

  // Compiles `source` (text only) as chunk `chunk_name` ("policy.lua" in error messages)
  // and runs its top level under the budget.
  CallResult load(std::string_view source, std::string_view chunk_name);

  // Runs `fn` (a lua_CFunction getting `data` as a light userdata argument) in protected
  // mode, unmetered: for host set-up such as registering objects in the registry.
  Status protectedCall(lua_CFunction fn, void* data);

  // True if the script defined a global function `name`.
  bool hasFunction(const char* name);

  // Calls the global function `name` with what `push` pushes; `read` sees its results
  // (and is not called when the function returned none). A missing function is an error.
  // Either callback may be null.
  CallResult call(const char* name, Marshal push, Marshal read, void* data);
  // As call(), for the function a host function stored with luaL_ref(L, LUA_REGISTRYINDEX):
  // closures a script registered (route handlers) rather than globals it could redefine.
  CallResult callRef(int ref, Marshal push, Marshal read, void* data);

  // Charges `units` of work (about one VM instruction each) that a C function is about to
  // do against the rest of the call's instruction budget, and checks the deadline and the
  // watchdog's stop request. Over budget, the call is over (sticky) and this raises a Lua
  // error, so the caller's frame must hold only trivially destructible objects. Outside a
  // call (host set-up) it does nothing.
  static void charge(lua_State* L, uint64_t units);
  // As charge(), for C++ code that must not raise: false once the call is over budget
  // (the next charge, hook or allocation then stops it).
  static bool checkpoint(lua_State* L, uint64_t units);
  // Units a call may still charge; UINT64_MAX outside a call.
  static uint64_t remaining(lua_State* L);
  // Wall time the call has left (0 once past its deadline); max() outside a call. Host
  // functions that block (egress) bound their waits with it.
  static std::chrono::microseconds wallLeft(lua_State* L);
  // Bytes the state may still allocate; SIZE_MAX outside a call. Host functions that copy
  // data in from outside (blob reads, egress bodies) refuse more than this up front.
  static size_t memoryLeft(lua_State* L);
  // Keys a table may hold outside its array part (see kMaxHashKeys in sandbox.cc).
  static constexpr size_t kMaxHashKeys = 4096;

  // Who runs in this sandbox ("policy global v3 (acme.lua)"), for the watchdog's reports.
  void setLabel(std::string label);

  const Budget& budget() const { return budget_; }
  void setBudget(const Budget& budget) { budget_ = budget; }
  size_t memoryInUse() const { return in_use_; }

  // Replaces the value at the top of the stack (a table or a function) with a metatable for
  // a read-only proxy: the value is its __index, `refuse` its __newindex, and getmetatable()
  // answers "locked". Raises on allocation failure, so call it in a protected call.
  static void makeLockedMetatable(lua_State* L, lua_CFunction refuse);
  // The Sandbox that owns `L` (any of its threads).
  static Sandbox* from(lua_State* L);
  // A per-state buffer for host functions to build results in (see HOST FUNCTIONS).
  std::string& scratch() { return scratch_; }
  // Registry references (luaL_ref) a host keeps for values it pushes on every call: a
  // lua_rawgeti on the registry's array part is cheaper than a keyed lookup.
  static constexpr size_t kHostRefs = 8;
  int hostRef(size_t i) const { return host_refs_[i]; }
  void setHostRef(size_t i, int ref) { host_refs_[i] = ref; }

 private:
  struct Run;
  explicit Sandbox(const Budget& budget);
  static void* allocate(void* ud, void* ptr, size_t osize, size_t nsize) noexcept;
  static void hook(lua_State* L, lua_Debug* ar);
  static int setUp(lua_State* L);
  static int newCoroutine(lua_State* L);
  static int body(lua_State* L);
  static int afterBody(lua_State* L, int status, lua_KContext ctx);
  CallResult run(Run& run);
  uint64_t used() const { return hook_fires_ * static_cast<uint64_t>(hook_step_) + charged_; }
  // Over budget: stop this thread at its next instruction, and raise here.
  [[noreturn]] static void preempt(lua_State* L);
  bool stopRequested() const {
    return stop_requested_.load(std::memory_order_relaxed) == deadline_;
  }
  std::string describeError(lua_State* from, int status) const;

  Budget budget_;
  lua_State* L_ = nullptr;
  lua_State* co_ = nullptr;  // the coroutine calls run in; anchored in the registry
  // Metering of the current call (the allocator and the hook read these).
  size_t in_use_ = 0;
  size_t peak_ = 0;
  bool metering_ = false;
  Outcome tripped_ = Outcome::kOk;
  uint64_t hook_fires_ = 0;
  uint64_t charged_ = 0;         // units C functions charged in this call
  uint32_t charge_ticks_ = 0;    // small charges since the clock was read
  bool hash_limit_hit_ = false;  // the memory failure was a table over kMaxHashKeys
  int hook_step_ = 100;
  uint32_t alloc_ticks_ = 0;
  int64_t deadline_ = 0;  // in budget_clock ticks
  std::string scratch_;
  std::array<int, kHostRefs> host_refs_{};
  friend class Watchdog;
  // What the watchdog sees (watchdog.h): the running call's deadline (0: idle), and its
  // request to stop, which the hook, the allocator and charge() check.
  std::atomic<int64_t> watched_deadline_{0};
  std::atomic<int64_t> stop_requested_{0};  // the deadline of the call asked to stop
  std::string label_;  // guarded by the watchdog's registry lock once registered
};

// JSON for scripts; lua_CFunctions to register with addLibrary().
//   json_encode(value) -> string: tables with keys 1..n are arrays, others need string keys;
//                                 an empty table is {} unless marked as an array: then []
//                                 functions, NaN and cycles are errors
//   json_decode(text)  -> value:  null becomes nil; arrays come back marked (so [] stays
//                                 []); depth is limited to 100
//   json_array([t])    -> t:      marks t (or a new table) as an array
int jsonEncode(lua_State* L);
int jsonDecode(lua_State* L);
int jsonArray(lua_State* L);
// Marks the table at `idx` as a JSON array (for lists the host hands to scripts). May
// raise a Lua memory error.
void markJsonArray(lua_State* L, int idx);

}  // namespace trellis::kernel::lua
