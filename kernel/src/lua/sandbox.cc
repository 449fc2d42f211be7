#include "trellis/kernel/lua/sandbox.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "lua/internal/bounded_stdlib.h"
#include "lua/internal/budget_clock.h"
#include "trellis/kernel/lua/watchdog.h"

// Lua reports errors with longjmp (Debian builds it as C). Every function in this file that
// Lua calls, or that calls a raising Lua API function, keeps only trivially destructible
// objects in its frame; C++ objects live in Sandbox members or in frames above lua_pcall.

namespace trellis::kernel::lua {
namespace {

namespace clock = budget_clock;

thread_local uint64_t t_instructions = 0;  // see Sandbox::threadInstructions

// Registry keys (their addresses) and the preemption sentinel.
char kEnvKey;       // the scripts' global table (writable, __index = the read-only base)
char kFrozenKey;    // weak set of the read-only proxies, so rawset can refuse them
char kThreadKey;    // anchors the coroutine calls run in
char kPreempted;    // error value the hook raises where it cannot yield
char kCapturedKey;  // weak map: metatable a script set -> the copy its tables really use
char kOriginalKey;  // in a copy: the metatable it was made from

// A table's hash part is an array of 2^k nodes of this size, allocated fresh (no old
// block, no object tag) when the table is resized. Keys chosen to collide make a resize
// quadratic in C (each key re-inserted walks the chain of the ones before): refusing
// hash parts over Sandbox::kMaxHashKeys keeps the worst at (kMaxHashKeys/2)^2/2 steps.
constexpr size_t kNodeBytes = 24;  // Lua 5.4's Node on LP64
static_assert(sizeof(void*) == 8 && LUA_VERSION_NUM == 504, "kNodeBytes is Lua 5.4's on LP64");

bool isOversizedHashPart(void* ptr, size_t osize, size_t nsize) {
  if (ptr || osize != 0 || nsize % kNodeBytes != 0) return false;
  const size_t nodes = nsize / kNodeBytes;
  return nodes > Sandbox::kMaxHashKeys && (nodes & (nodes - 1)) == 0;
}

// An allocation this large precedes (or is) work in C worth a look at the clock.
constexpr size_t kLargeAllocation = 4096;

const char* const kBaseFunctions[] = {
    "assert", "error",  "ipairs", "next",         "pairs",    "pcall",    "xpcall", "rawequal",
    "rawlen", "rawget", "select", "getmetatable", "tonumber", "tostring", "type",   "_VERSION"};

int readOnlyError(lua_State* L) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    return luaL_error(L, "attempt to modify read-only table (field '%s')", lua_tostring(L, 2));
  }
  return luaL_error(L, "attempt to modify a read-only table");
}

// Replaces the table at the top with a read-only proxy onto it.
void freezeTop(lua_State* L) {
  int real = lua_gettop(L);
  lua_newtable(L);  // proxy
  lua_pushvalue(L, real);
  Sandbox::makeLockedMetatable(L, readOnlyError);
  lua_setmetatable(L, -2);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kFrozenKey);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_replace(L, real);
}

// Calls upvalue 1 (the original function) with this call's arguments.
int callOriginal(lua_State* L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

// True if the copy at `copy` still has exactly the fields of the metatable at `mt`
// (besides its own kOriginalKey and the __metatable it may have been given).
bool sameFields(lua_State* L, int copy, int mt) {
  lua_pushnil(L);
  while (lua_next(L, mt) != 0) {
    lua_pushvalue(L, -2);
    const bool same = lua_rawget(L, copy) != LUA_TNIL && lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!same) {
      lua_pop(L, 1);
      return false;
    }
  }
  lua_pushnil(L);
  while (lua_next(L, copy) != 0) {
    // Ours: the link to the original, and the __metatable a copy gets when mt has none.
    const bool ours =
        lua_touserdata(L, -2) == &kOriginalKey ||
        (lua_type(L, -2) == LUA_TSTRING && std::strcmp(lua_tostring(L, -2), "__metatable") == 0 &&
         lua_rawequal(L, -1, mt));
    bool same = true;
    if (!ours) {
      lua_pushvalue(L, -2);
      same = lua_rawget(L, mt) != LUA_TNIL && lua_rawequal(L, -1, -2);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!same) {
      lua_pop(L, 1);
      return false;
    }
  }
  return true;
}

// setmetatable(t, mt): t gets a copy of mt, taken now, which getmetatable(t) still answers
// as mt. A metatable changed later does not change t: otherwise `mt.__call = t` after
// setmetatable makes a __call chain, which Lua follows in one instruction, shifting the
// stack once per link — quadratic work in C that runs until the memory budget is out
// (minutes at 8 MiB). A copy's __call must be a function, and __gc is refused.
int safeSetmetatable(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const int type = lua_type(L, 2);
  luaL_argexpected(L, type == LUA_TNIL || type == LUA_TTABLE, 2, "nil or table");
  lua_settop(L, 2);
  if (lua_getmetatable(L, 1)) {  // its copy: protected if the original had __metatable
    lua_rawgetp(L, -1, &kOriginalKey);
    lua_pushliteral(L, "__metatable");
    lua_rawget(L, -3);
    if (!lua_isnil(L, -1) && !lua_rawequal(L, -1, -2)) {
      return luaL_error(L, "cannot change a protected metatable");
    }
    lua_pop(L, 3);
  }
  if (type == LUA_TNIL) {
    lua_setmetatable(L, 1);
    return 1;
  }
  lua_pushliteral(L, "__gc");
  if (lua_rawget(L, 2) != LUA_TNIL) {
    return luaL_error(L, "setmetatable: __gc metamethods are not allowed in the sandbox");
  }
  lua_pushliteral(L, "__call");
  const int call = lua_rawget(L, 2);
  if (call != LUA_TNIL && call != LUA_TFUNCTION) {
    return luaL_error(L, "setmetatable: __call must be a function in the sandbox");
  }
  lua_settop(L, 2);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kCapturedKey);  // 3
  lua_pushvalue(L, 2);
  if (lua_rawget(L, 3) != LUA_TTABLE || !sameFields(L, 4, 2)) {  // 4: the copy
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, 2) != 0) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, 4);
    }
    lua_pushvalue(L, 2);
    lua_rawsetp(L, 4, &kOriginalKey);
    lua_pushliteral(L, "__metatable");
    if (lua_rawget(L, 4) == LUA_TNIL) {
      lua_pushliteral(L, "__metatable");
      lua_pushvalue(L, 2);
      lua_rawset(L, 4);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 4);
    lua_rawset(L, 3);
  }
  lua_setmetatable(L, 1);
  lua_settop(L, 1);
  return 1;
}

int safeRawset(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kFrozenKey);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) != LUA_TNIL) return luaL_error(L, "rawset: the table is read-only");
  lua_pop(L, 2);
  return callOriginal(L);
}

// load(chunk [, chunkname [, mode [, env]]]): text only; env defaults to the sandbox's.
int safeLoad(lua_State* L) {
  const bool has_env = lua_gettop(L) >= 4;
  if (!lua_isnoneornil(L, 3)) {
    const char* mode = luaL_checkstring(L, 3);
    if (std::strcmp(mode, "t") != 0) {
      return luaL_error(L, "load: only text chunks can be loaded (mode \"t\")");
    }
  }
  if (lua_type(L, 1) == LUA_TSTRING) {
    Sandbox::charge(L, bounded_stdlib::scanUnits(lua_rawlen(L, 1)));  // the parser's work
  }
  lua_settop(L, 4);
  lua_pushliteral(L, "t");
  lua_replace(L, 3);
  if (!has_env) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kEnvKey);
    lua_replace(L, 4);
  }
  return callOriginal(L);
}

void noWarnings(void*, const char*, int) {}

int panic(lua_State* L) {
  const char* msg = lua_tostring(L, -1);
  spdlog::critical("lua: unprotected error in a sandbox: {}", msg ? msg : "?");
  std::abort();
}

struct LibrarySpec {
  const char* name;
  const luaL_Reg* functions;
  void* context;
};

int addLibraryProtected(lua_State* L) {
  auto* spec = static_cast<LibrarySpec*>(lua_touserdata(L, 1));
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kEnvKey);
  lua_getmetatable(L, -1);
  lua_getfield(L, -1, "__index");  // the base table
  // "a.b": descend into the table behind library a's read-only proxy.
  const char* name = spec->name;
  for (const char* dot = std::strchr(name, '.'); dot; dot = std::strchr(name, '.')) {
    lua_pushlstring(L, name, static_cast<size_t>(dot - name));
    if (lua_rawget(L, -2) != LUA_TTABLE || !lua_getmetatable(L, -1)) {
      return luaL_error(L, "no library to nest %s in", spec->name);
    }
    lua_getfield(L, -1, "__index");
    name = dot + 1;
  }
  lua_newtable(L);
  lua_pushlightuserdata(L, spec->context);
  luaL_setfuncs(L, spec->functions, 1);
  freezeTop(L);
  lua_setfield(L, -2, name);
  return 0;
}

int hasFunctionProtected(lua_State* L) {
  const char* name = static_cast<const char*>(lua_touserdata(L, 1));
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kEnvKey);
  lua_pushstring(L, name);
  lua_pushboolean(L, lua_rawget(L, -2) == LUA_TFUNCTION);
  return 1;
}

}  // namespace

std::string_view outcomeName(Outcome o) {
  switch (o) {
    case Outcome::kOk: return "ok";
    case Outcome::kError: return "error";
    case Outcome::kInstructionLimit: return "instructions";
    case Outcome::kMemoryLimit: return "memory";
    case Outcome::kWallTimeLimit: return "wall_time";
  }
  return "unknown";
}

struct Sandbox::Run {
  const char* function = nullptr;  // a global function, or null to run `source`
  int ref = LUA_NOREF;             // or a function in the registry
  std::string_view source;
  std::string chunk_name;  // "=policy.lua"
  Marshal push = nullptr;
  Marshal read = nullptr;
  void* data = nullptr;
};

void Sandbox::makeLockedMetatable(lua_State* L, lua_CFunction refuse) {
  lua_createtable(L, 0, 3);
  lua_insert(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, refuse);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "locked");
  lua_setfield(L, -2, "__metatable");
}

Sandbox::Sandbox(const Budget& budget) : budget_(budget) {}

Sandbox::~Sandbox() {
  Watchdog::instance().remove(this);
  if (L_) lua_close(L_);
}

void Sandbox::setLabel(std::string label) {
  Watchdog::instance().relabel(this, std::move(label));
}

Sandbox* Sandbox::from(lua_State* L) {
  return *static_cast<Sandbox**>(lua_getextraspace(L));
}

void* Sandbox::allocate(void* ud, void* ptr, size_t osize, size_t nsize) noexcept {
  auto* sb = static_cast<Sandbox*>(ud);
  const size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    std::free(ptr);
    sb->in_use_ -= old;
    return nullptr;
  }
  if (nsize > old) {
    if (sb->metering_) {
      // Once over any budget the call is over: refusing memory stops C functions early.
      if (sb->tripped_ != Outcome::kOk) return nullptr;
      // The allocator is the clock check inside C functions that build strings or tables.
      if ((nsize >= kLargeAllocation || (++sb->alloc_ticks_ & 63) == 0) &&
          (clock::now() >= sb->deadline_ || sb->stopRequested())) {
        sb->tripped_ = Outcome::kWallTimeLimit;
        return nullptr;
      }
      if (isOversizedHashPart(ptr, osize, nsize)) {
        sb->tripped_ = Outcome::kMemoryLimit;
        sb->hash_limit_hit_ = true;
        return nullptr;
      }
    }
    if (sb->in_use_ - old + nsize > sb->budget_.memory_bytes) {
      if (sb->metering_) sb->tripped_ = Outcome::kMemoryLimit;
      return nullptr;
    }
  }
  void* p = std::realloc(ptr, nsize);
  if (!p) return nullptr;
  sb->in_use_ = sb->in_use_ - old + nsize;
  sb->peak_ = std::max(sb->peak_, sb->in_use_);
  return p;
}

void Sandbox::hook(lua_State* L, lua_Debug*) {
  Sandbox* sb = from(L);
  if (sb->tripped_ == Outcome::kOk) {
    ++sb->hook_fires_;
    if (sb->used() > sb->budget_.instructions) {
      sb->tripped_ = Outcome::kInstructionLimit;
    } else if (clock::now() >= sb->deadline_ || sb->stopRequested()) {
      sb->tripped_ = Outcome::kWallTimeLimit;
    } else {
      return;
    }
  }
  // Over budget: from now on this thread stops at every instruction.
  lua_sethook(L, &Sandbox::hook, LUA_MASKCOUNT, 1);
  if (lua_isyieldable(L)) {
    lua_yield(L, 0);  // straight out to run(): no pcall in between can see it
    return;
  }
  lua_pushlightuserdata(L, &kPreempted);
  lua_error(L);
}

void Sandbox::preempt(lua_State* L) {
  lua_sethook(L, &Sandbox::hook, LUA_MASKCOUNT, 1);
  lua_pushlightuserdata(L, &kPreempted);
  lua_error(L);
  std::abort();  // lua_error unwinds (longjmp or throw), but is not declared noreturn
}

bool Sandbox::checkpoint(lua_State* L, uint64_t units) {
  Sandbox* sb = from(L);
  if (!sb->metering_) return true;
  sb->charged_ += units;
  if (sb->tripped_ == Outcome::kOk) {
    if (sb->used() > sb->budget_.instructions) {
      sb->tripped_ = Outcome::kInstructionLimit;
    } else if ((units < 64 && (++sb->charge_ticks_ & 15) != 0) ||
               (clock::now() < sb->deadline_ && !sb->stopRequested())) {
      // The clock is read for a large charge, and for every 16th small one: a small
      // charge stands for at most about a unit's work (an __index chain: ~2000 lookups).
      return true;
    } else {
      sb->tripped_ = Outcome::kWallTimeLimit;
    }
  }
  return false;
}

void Sandbox::charge(lua_State* L, uint64_t units) {
  if (!checkpoint(L, units)) preempt(L);
}

uint64_t Sandbox::remaining(lua_State* L) {
  const Sandbox* sb = from(L);
  if (!sb->metering_) return UINT64_MAX;
  const uint64_t used = sb->used();
  return used >= sb->budget_.instructions ? 0 : sb->budget_.instructions - used;
}

std::chrono::microseconds Sandbox::wallLeft(lua_State* L) {
  const Sandbox* sb = from(L);
  if (!sb->metering_) return std::chrono::microseconds::max();
  const int64_t left = sb->deadline_ - clock::now();
  return left > 0 ? clock::toMicros(left) : std::chrono::microseconds(0);
}

size_t Sandbox::memoryLeft(lua_State* L) {
  const Sandbox* sb = from(L);
  if (!sb->metering_) return SIZE_MAX;
  return sb->in_use_ >= sb->budget_.memory_bytes ? 0 : sb->budget_.memory_bytes - sb->in_use_;
}

int Sandbox::setUp(lua_State* L) {
  lua_newtable(L);  // the frozen set, weak keys
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kFrozenKey);
  lua_newtable(L);  // the captured metatables, weak keys
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kCapturedKey);

  luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
  const int g = lua_gettop(L);
  lua_newtable(L);  // base: what scripts see through their globals' __index
  const int base = lua_gettop(L);
  for (const char* name : kBaseFunctions) {
    lua_getfield(L, g, name);
    lua_setfield(L, base, name);
  }
  struct Wrapped {
    const char* name;
    lua_CFunction fn;
  };
  for (const Wrapped& w : {Wrapped{"setmetatable", safeSetmetatable}, Wrapped{"rawset", safeRawset},
                           Wrapped{"load", safeLoad}}) {
    lua_getfield(L, g, w.name);
    lua_pushcclosure(L, w.fn, 1);
    lua_setfield(L, base, w.name);
  }

  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
  const int str = lua_gettop(L);
  lua_pushnil(L);
  lua_setfield(L, str, "dump");
  bounded_stdlib::replaceStringFunctions(L, str);
  freezeTop(L);
  // Strings index the read-only proxy, and their metatable cannot be fetched.
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_pushvalue(L, str);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "locked");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 2);
  lua_setfield(L, base, "string");

  luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 0);
  bounded_stdlib::replaceTableFunctions(L, lua_gettop(L));
  freezeTop(L);
  lua_setfield(L, base, "table");
  luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 0);
  bounded_stdlib::replaceUtf8Functions(L, lua_gettop(L));
  freezeTop(L);
  lua_setfield(L, base, "utf8");
  const std::pair<const char*, lua_CFunction> plain[] = {{LUA_MATHLIBNAME, luaopen_math},
                                                         {LUA_COLIBNAME, luaopen_coroutine}};
  for (const auto& [name, open] : plain) {
    luaL_requiref(L, name, open, 0);
    freezeTop(L);
    lua_setfield(L, base, name);
  }

  // The scripts' globals: writable, falling back to base, metatable locked.
  lua_newtable(L);
  const int env = lua_gettop(L);
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, base);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "locked");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, env);
  lua_pushvalue(L, env);
  lua_setfield(L, env, "_G");
  lua_pushvalue(L, env);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kEnvKey);
  // What the C API and the default `load` call "globals" is the sandbox's env too.
  lua_pushvalue(L, env);
  lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);

  Sandbox* sb = from(L);
  sb->co_ = lua_newthread(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kThreadKey);
  return 0;
}

uint64_t Sandbox::threadInstructions() {
  return t_instructions;
}

Result<std::unique_ptr<Sandbox>> Sandbox::create(const Budget& budget) {
  if (budget.instructions == 0) return Status::invalid("lua budget: instructions must be > 0");
  if (budget.memory_bytes < 64 * 1024) {
    return Status::invalid("lua budget: memory must be at least 65536 bytes");
  }
  if (budget.wall_time.count() <= 0) return Status::invalid("lua budget: wall time must be > 0");
  std::unique_ptr<Sandbox> sb(new Sandbox(budget));
  sb->L_ = lua_newstate(&Sandbox::allocate, sb.get());
  if (!sb->L_) return Status::internal("lua: cannot create a state");
  *static_cast<Sandbox**>(lua_getextraspace(sb->L_)) = sb.get();
  lua_atpanic(sb->L_, panic);
  lua_setwarnf(sb->L_, noWarnings, nullptr);
  lua_pushcfunction(sb->L_, &Sandbox::setUp);
  if (lua_pcall(sb->L_, 0, 0, 0) != LUA_OK) {
    std::string msg = lua_tostring(sb->L_, -1) ? lua_tostring(sb->L_, -1) : "unknown error";
    return Status::internal("lua: cannot set up the sandbox: " + msg);
  }
  lua_gc(sb->L_, LUA_GCGEN, 0, 0);  // short-lived garbage per call: generational suits it
  // Hooked too, so a metamethod that host code triggers on the main thread is metered.
  lua_sethook(sb->L_, &Sandbox::hook, LUA_MASKCOUNT, 100);
  Watchdog::instance().add(sb.get());
  return sb;
}

Status Sandbox::addLibrary(const char* name, const luaL_Reg* functions, void* context) {
  LibrarySpec spec{name, functions, context};
  lua_pushcfunction(L_, addLibraryProtected);
  lua_pushlightuserdata(L_, &spec);
  if (lua_pcall(L_, 1, 0, 0) != LUA_OK) {
    std::string msg = describeError(L_, LUA_ERRRUN);
    lua_settop(L_, 0);
    return Status::internal(std::string("lua: cannot add library ") + name + ": " + msg);
  }
  return Status::ok();
}

Status Sandbox::protectedCall(lua_CFunction fn, void* data) {
  lua_pushcfunction(L_, fn);
  lua_pushlightuserdata(L_, data);
  if (lua_pcall(L_, 1, 0, 0) != LUA_OK) {
    std::string msg = describeError(L_, LUA_ERRRUN);
    lua_settop(L_, 0);
    return Status::internal("lua: " + msg);
  }
  return Status::ok();
}

bool Sandbox::hasFunction(const char* name) {
  lua_pushcfunction(L_, hasFunctionProtected);
  lua_pushlightuserdata(L_, const_cast<char*>(name));
  bool yes = lua_pcall(L_, 1, 1, 0) == LUA_OK && lua_toboolean(L_, -1);
  lua_settop(L_, 0);
  return yes;
}

int Sandbox::newCoroutine(lua_State* L) {
  Sandbox* sb = from(L);
  sb->co_ = lua_newthread(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kThreadKey);
  return 0;
}

// The body of a call, run as the coroutine's main function: finds the function, pushes the
// arguments, calls it and reads its results. Running all of it inside the coroutine means
// one protected entry (lua_resume) per call.
int Sandbox::body(lua_State* L) {
  auto* r = static_cast<Run*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  if (r->ref != LUA_NOREF) {
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref) != LUA_TFUNCTION) {
      return luaL_error(L, "registry reference %d is not a function", r->ref);
    }
  } else if (r->function) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);  // the scripts' env
    lua_pushstring(L, r->function);
    if (lua_rawget(L, 1) != LUA_TFUNCTION) {
      return luaL_error(L, "the script defines no function %s", r->function);
    }
    lua_remove(L, 1);
  } else if (luaL_loadbufferx(L, r->source.data(), r->source.size(), r->chunk_name.c_str(), "t") !=
             LUA_OK) {
    return lua_error(L);  // "policy.lua:3: syntax error near ..."
  }
  const int n = r->push ? r->push(L, r->data) : 0;
  // With a continuation, so the hook can still yield out of the script.
  lua_callk(L, n, LUA_MULTRET, reinterpret_cast<lua_KContext>(r), &Sandbox::afterBody);
  return afterBody(L, LUA_OK, reinterpret_cast<lua_KContext>(r));
}

int Sandbox::afterBody(lua_State* L, int, lua_KContext ctx) {
  auto* r = reinterpret_cast<Run*>(ctx);
  if (r->read && lua_gettop(L) > 0) r->read(L, r->data);
  return 0;
}

std::string Sandbox::describeError(lua_State* from, int status) const {
  if (status == LUA_ERRMEM) return "not enough memory";
  if (lua_touserdata(from, -1) == &kPreempted) return "preempted";
  if (lua_type(from, -1) == LUA_TSTRING) return lua_tostring(from, -1);
  return std::string("(error object is a ") + luaL_typename(from, -1) + " value)";
}

CallResult Sandbox::run(Run& r) {
  CallResult out;
  const clock::Ticks started = clock::now();
  deadline_ = started + clock::fromMicros(budget_.wall_time);
  tripped_ = Outcome::kOk;
  hash_limit_hit_ = false;
  hook_fires_ = 0;
  charged_ = 0;
  charge_ticks_ = 0;
  alloc_ticks_ = 0;
  hook_step_ = static_cast<int>(std::clamp<uint64_t>(budget_.instructions, 1, 100));
  peak_ = in_use_;
  metering_ = true;
  watched_deadline_.store(deadline_, std::memory_order_release);

  lua_State* L = L_;
  lua_settop(L, 0);
  bool abnormal = false;
  if (!co_) {  // the last call ended abnormally: its coroutine is dead
    lua_pushcfunction(L, &Sandbox::newCoroutine);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
      out.outcome = Outcome::kError;
      out.error = describeError(L, LUA_ERRMEM);
      abnormal = true;
    }
  }
  if (co_) {
    lua_State* co = co_;
    lua_sethook(co, &Sandbox::hook, LUA_MASKCOUNT, hook_step_);
    lua_pushcfunction(co, &Sandbox::body);
    lua_pushlightuserdata(co, &r);
    int nres = 0;
    const int status = lua_resume(co, L, 1, &nres);
    if (status == LUA_OK) {
      lua_settop(co, 0);
    } else {
      abnormal = true;
      out.outcome = Outcome::kError;
      out.error = status == LUA_YIELD ? "the script yielded outside a coroutine"
                                      : describeError(co, status);
      // A script may hold this coroutine (coroutine.running()): kill it, still metered, so
      // a later call cannot resume the preempted one. The next call gets a fresh coroutine.
#if LUA_VERSION_RELEASE_NUM >= 50406
      lua_closethread(co, L);
#else
      lua_resetthread(co);
#endif
      co_ = nullptr;
    }
  }
  metering_ = false;
  watched_deadline_.store(0, std::memory_order_release);
  const clock::Ticks ended = clock::now();
  if (tripped_ == Outcome::kOk && out.ok() && ended > deadline_) tripped_ = Outcome::kWallTimeLimit;
  if (tripped_ != Outcome::kOk) {
    out.outcome = tripped_;
    switch (tripped_) {
      case Outcome::kInstructionLimit:
        out.error = "instruction budget of " + std::to_string(budget_.instructions) + " exceeded";
        break;
      case Outcome::kMemoryLimit:
        out.error = hash_limit_hit_ ? "a table may hold at most " + std::to_string(kMaxHashKeys) +
                                          " keys outside its array part (memory budget)"
                                    : "memory budget of " + std::to_string(budget_.memory_bytes) +
                                          " bytes exceeded";
        break;
      default:
        out.error =
            "wall-time budget of " + std::to_string(budget_.wall_time.count()) + " us exceeded";
        break;
    }
  }
  out.usage.instructions = used();
  t_instructions += out.usage.instructions;
  out.usage.peak_memory_bytes = peak_;
  out.usage.wall_time = clock::toMicros(ended - started);
  lua_settop(L, 0);
  if (abnormal || !out.ok()) lua_gc(L, LUA_GCCOLLECT);  // what a runaway call left behind
  return out;
}

CallResult Sandbox::load(std::string_view source, std::string_view chunk_name) {
  Run r;
  r.source = source;
  r.chunk_name = "=" + std::string(chunk_name);
  return run(r);
}

CallResult Sandbox::call(const char* name, Marshal push, Marshal read, void* data) {
  Run r;
  r.function = name;
  r.push = push;
  r.read = read;
  r.data = data;
  return run(r);
}

CallResult Sandbox::callRef(int ref, Marshal push, Marshal read, void* data) {
  Run r;
  r.ref = ref;
  r.push = push;
  r.read = read;
  r.data = data;
  return run(r);
}

}  // namespace trellis::kernel::lua
