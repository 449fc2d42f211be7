#include "lua/internal/bounded_stdlib.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "trellis/kernel/lua/sandbox.h"

// Lua reports errors by longjmp, and Sandbox::charge raises: every frame here holds only
// trivially destructible objects. The originals are called directly (they have no
// upvalues of their own), with the arguments they were given or with explicit ones that
// say what was charged.

namespace trellis::kernel::lua::bounded_stdlib {
namespace {

lua_CFunction original(lua_State* L) {
  return lua_tocfunction(L, lua_upvalueindex(1));
}

uint64_t stringBytes(lua_State* L, int from, int to) {
  size_t bytes = 0;
  for (int i = from; i <= to; ++i) {
    if (lua_type(L, i) == LUA_TSTRING) bytes += lua_rawlen(L, i);
  }
  return bytes;
}

// Linear in what it is given and what it gives back: one unit, the bytes of its string
// arguments and the count of its arguments before the call (string.char, utf8.char,
// table.pack read or push one value each); the bytes of the strings it made after it
// (string.pack("c1000000", ""), string.format("%099d"...) make more than they are given).
int chargedByArguments(lua_State* L) {
  const int n = lua_gettop(L);
  Sandbox::charge(L, scanUnits(stringBytes(L, 1, n)) + static_cast<uint64_t>(n) / 8);
  const int results = original(L)(L);
  const int top = lua_gettop(L);
  Sandbox::charge(L, stringBytes(L, top - results + 1, top) / 64);
  return results;
}

// Elements a C loop touches between two charges. Raw accesses cost O(1) and are charged
// in blocks; an access through a metatable may run an __index chain of up to 2000 tables
// (Lua's limit) in C, so then each is charged, and each charge looks at the clock.
int chargeStride(lua_State* L, int arg) {
  if (!lua_getmetatable(L, arg)) return 256;
  lua_pop(L, 1);
  return 1;
}

// Charges element by element (in strides) while a loop runs.
struct Meter {
  lua_State* L;
  int stride;
  int pending = 0;
  void tick() {
    if (++pending >= stride) finish();
  }
  void finish() {
    Sandbox::charge(L, static_cast<uint64_t>(pending));
    pending = 0;
  }
};

// ------------------------------------------------------------------ string

int boundedRep(lua_State* L) {
  size_t len = 0, sep_len = 0;
  luaL_checklstring(L, 1, &len);
  const lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &sep_len);
  if (n <= 0 || len + sep_len == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  const double total = static_cast<double>(n) * static_cast<double>(len + sep_len);
  const double limit = static_cast<double>(Sandbox::from(L)->budget().memory_bytes);
  if (total > limit) {
    return luaL_error(L, "string.rep: a result of %f bytes exceeds the memory budget (%f)",
                      static_cast<lua_Number>(total), static_cast<lua_Number>(limit));
  }
  Sandbox::charge(L, scanUnits(static_cast<size_t>(total)));
  return original(L)(L);
}

// Lua's pattern specials: a pattern without them is a literal, searched for by find.
bool hasSpecials(const char* p, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    if (p[i] != '\0' && std::strchr("^$*+?.([%-", p[i])) return true;
  }
  return false;
}

// The first `needle` in `hay`, charging the bytes looked at as it goes: a literal search
// costs up to length(subject) x length(pattern), which no hook or allocation would see.
const char* boundedSearch(lua_State* L, const char* hay, size_t n, const char* needle, size_t m) {
  if (m == 0) return hay;
  if (m > n) return nullptr;
  constexpr size_t kStep = 64 * 1024;  // bytes between charges
  const char* const last = hay + (n - m);
  size_t work = 0;
  for (const char* at = hay; at <= last;) {
    const char* hit =
        static_cast<const char*>(std::memchr(at, needle[0], static_cast<size_t>(last - at) + 1));
    work += hit ? static_cast<size_t>(hit - at) + m : static_cast<size_t>(last - at) + 1;
    if (work >= kStep || !hit) {
      Sandbox::charge(L, scanUnits(work));
      work = 0;
    }
    if (!hit) return nullptr;
    if (std::memcmp(hit + 1, needle + 1, m - 1) == 0) {
      Sandbox::charge(L, scanUnits(work));
      return hit;
    }
    at = hit + 1;
  }
  Sandbox::charge(L, scanUnits(work));
  return nullptr;
}

// Items that make a Lua pattern backtrack: repetitions (*, +, -, ?), %b and back
// references (%1-%9, each comparing up to the subject's length).
int backtrackingItems(const char* p, size_t len) {
  int items = 0;
  for (size_t i = 0; i < len; ++i) {
    const char c = p[i];
    if (c == '%') {
      if (i + 1 < len && p[i + 1] == 'b') {
        ++items;
        i += 3;
      } else {
        if (i + 1 < len && p[i + 1] >= '1' && p[i + 1] <= '9') ++items;
        ++i;
      }
    } else if (c == '[') {
      ++i;
      if (i < len && p[i] == '^') ++i;
      if (i < len && p[i] == ']') ++i;
      while (i < len && p[i] != ']') {
        if (p[i] == '%') ++i;
        ++i;
      }
    } else if ((c == '*' || c == '+' || c == '-' || c == '?') && i > 0) {
      ++items;
    }
  }
  return items;
}

// Matching runs in C with no hook: charge its worst case before it starts, or refuse.
// A pattern of length m with k backtracking items costs at most about
// m x (n+1)^k steps per start position, and an unanchored one tries n+1 positions.
constexpr double kMatchStepsPerUnit = 16;

void chargePattern(lua_State* L, const char* fname, int subject_arg, int pattern_arg) {
  size_t n = 0, m = 0;
  luaL_checklstring(L, subject_arg, &n);
  const char* p = luaL_checklstring(L, pattern_arg, &m);
  const bool anchored = m > 0 && p[0] == '^';
  const int items = backtrackingItems(p, m);
  const double steps =
      static_cast<double>(m + 1) * std::pow(static_cast<double>(n) + 1, items + (anchored ? 0 : 1));
  const double units = steps / kMatchStepsPerUnit + 1;
  const uint64_t left = Sandbox::remaining(L);
  if (units > static_cast<double>(left)) {
    Sandbox::charge(L, scanUnits(m));
    luaL_error(L,
               "%s: this pattern may cost up to %f steps on a %d-byte subject (%d backtracking "
               "items%s), more than the call has left; anchor it with ^, use fewer "
               "repetitions or a shorter subject",
               fname, static_cast<lua_Number>(steps), static_cast<int>(n), items,
               anchored ? "" : ", unanchored");
  }
  Sandbox::charge(L, static_cast<uint64_t>(units));
}

int boundedFind(lua_State* L) {
  size_t n = 0, m = 0;
  const char* s = luaL_checklstring(L, 1, &n);
  const char* p = luaL_checklstring(L, 2, &m);
  if (!lua_toboolean(L, 4) && hasSpecials(p, m)) {
    chargePattern(L, "string.find", 1, 2);
    return original(L)(L);
  }
  // string.find's own rules for init (lstrlib's posrelatI).
  lua_Integer init = luaL_optinteger(L, 3, 1);
  if (init < 0)
    init = init < -static_cast<lua_Integer>(n) ? 1 : static_cast<lua_Integer>(n) + init + 1;
  if (init == 0) init = 1;
  if (init > static_cast<lua_Integer>(n) + 1) {
    luaL_pushfail(L);
    return 1;
  }
  const size_t from = static_cast<size_t>(init - 1);
  const char* hit = boundedSearch(L, s + from, n - from, p, m);
  if (!hit) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, static_cast<lua_Integer>(hit - s) + 1);
  lua_pushinteger(L, static_cast<lua_Integer>(hit - s + static_cast<ptrdiff_t>(m)));
  return 2;
}

int boundedMatch(lua_State* L) {
  chargePattern(L, "string.match", 1, 2);
  return original(L)(L);
}
int boundedGmatch(lua_State* L) {
  chargePattern(L, "string.gmatch", 1, 2);
  return original(L)(L);
}
// gsub's lookup in a replacement table, charged: the table's __index may be a chain.
int chargedLookup(lua_State* L) {
  Sandbox::charge(L, 1);
  lua_settop(L, 1);
  lua_gettable(L, lua_upvalueindex(1));
  return 1;
}

int boundedGsub(lua_State* L) {
  chargePattern(L, "string.gsub", 1, 2);
  if (lua_type(L, 3) == LUA_TTABLE && chargeStride(L, 3) == 1) {
    lua_pushvalue(L, 3);
    lua_pushcclosure(L, chargedLookup, 1);
    lua_replace(L, 3);
  }
  return original(L)(L);
}

// ------------------------------------------------------------------ table

// What ltablib's checktab accepts: a table, or a value with the metamethods used.
void checkTableLike(lua_State* L, int arg) {
  if (lua_type(L, arg) == LUA_TTABLE) return;
  if (lua_getmetatable(L, arg)) {
    const bool ok = lua_getfield(L, -1, "__index") != LUA_TNIL &&
                    lua_getfield(L, -2, "__newindex") != LUA_TNIL &&
                    lua_getfield(L, -3, "__len") != LUA_TNIL;
    lua_pop(L, 4);
    if (ok) return;
  }
  luaL_checktype(L, arg, LUA_TTABLE);
}

// Element moves between two positions: what table.insert/remove/move/concat/unpack cost.
uint64_t span(lua_Integer from, lua_Integer to) {
  return from > to ? 1 : static_cast<lua_Unsigned>(to) - static_cast<lua_Unsigned>(from) + 1;
}

// table.insert, with its length read once and its shifting charged as it goes (an endless
// loop in the original when __len reports a huge length).
int boundedInsert(lua_State* L) {
  checkTableLike(L, 1);
  const lua_Integer e = luaL_len(L, 1) + 1;  // first empty element
  lua_Integer pos = e;
  switch (lua_gettop(L)) {
    case 2: break;
    case 3: {
      pos = luaL_checkinteger(L, 2);
      luaL_argcheck(L, static_cast<lua_Unsigned>(pos) - 1u < static_cast<lua_Unsigned>(e), 2,
                    "position out of bounds");
      Meter meter{L, chargeStride(L, 1)};
      for (lua_Integer i = e; i > pos; --i) {
        lua_geti(L, 1, i - 1);
        lua_seti(L, 1, i);
        meter.tick();
      }
      meter.finish();
      break;
    }
    default: return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_seti(L, 1, pos);
  return 0;
}

int boundedRemove(lua_State* L) {
  checkTableLike(L, 1);
  const lua_Integer size = luaL_len(L, 1);
  lua_Integer pos = luaL_optinteger(L, 2, size);
  if (pos != size) {
    luaL_argcheck(L, static_cast<lua_Unsigned>(pos) - 1u <= static_cast<lua_Unsigned>(size), 2,
                  "position out of bounds");
  }
  Meter meter{L, chargeStride(L, 1)};
  lua_geti(L, 1, pos);
  for (; pos < size; ++pos) {
    lua_geti(L, 1, pos + 1);
    lua_seti(L, 1, pos);
    meter.tick();
  }
  meter.finish();
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

// table.move, with its range charged as it copies (the original's loop never stops early).
int boundedMove(lua_State* L) {
  const lua_Integer f = luaL_checkinteger(L, 2);
  const lua_Integer e = luaL_checkinteger(L, 3);
  const lua_Integer t = luaL_checkinteger(L, 4);
  const int tt = !lua_isnoneornil(L, 5) ? 5 : 1;  // destination table
  checkTableLike(L, 1);
  checkTableLike(L, tt);
  if (e >= f) {
    luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
    luaL_argcheck(L, t <= LUA_MAXINTEGER - (e - f) + 1, 4, "destination wrap around");
    Meter meter{L, std::min(chargeStride(L, 1), chargeStride(L, tt))};
    const bool forward = t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ));
    for (lua_Integer i = 0; i <= e - f; ++i) {
      const lua_Integer k = forward ? i : e - f - i;
      lua_geti(L, 1, f + k);
      lua_seti(L, tt, t + k);
      meter.tick();
    }
    meter.finish();
  }
  lua_pushvalue(L, tt);
  return 1;
}

// table.concat's range (its end read once) charged as it goes.
int boundedConcat(lua_State* L) {
  size_t sep_len = 0;
  const char* sep = luaL_optlstring(L, 2, "", &sep_len);
  lua_Integer i = luaL_optinteger(L, 3, 1);
  const lua_Integer last = luaL_opt(L, luaL_checkinteger, 4, luaL_len(L, 1));
  Meter meter{L, chargeStride(L, 1)};
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (; i <= last; ++i) {
    lua_geti(L, 1, i);
    if (!lua_isstring(L, -1)) {
      return luaL_error(L, "invalid value (at index %I) in table for 'concat'",
                        static_cast<LUAI_UACINT>(i));
    }
    luaL_addvalue(&b);
    if (i != last) luaL_addlstring(&b, sep, sep_len);
    meter.tick();
    if (i == LUA_MAXINTEGER) break;
  }
  meter.finish();
  luaL_pushresult(&b);
  return 1;
}

// table.unpack's range, charged before it is pushed (the stack bounds it too).
int boundedUnpack(lua_State* L) {
  const lua_Integer i = luaL_optinteger(L, 2, 1);
  const lua_Integer e = luaL_opt(L, luaL_checkinteger, 3, luaL_len(L, 1));
  Sandbox::charge(L, span(i, e));
  if (chargeStride(L, 1) == 1) {
    // Through a metatable each element is charged again, and the clock read, as it comes.
    if (i > e) return 0;
    const lua_Unsigned n = static_cast<lua_Unsigned>(e) - static_cast<lua_Unsigned>(i);
    if (n >= static_cast<lua_Unsigned>(INT32_MAX) || !lua_checkstack(L, static_cast<int>(n) + 1)) {
      return luaL_error(L, "too many results to unpack");
    }
    for (lua_Integer k = i;; ++k) {
      Sandbox::charge(L, 1);
      lua_geti(L, 1, k);
      if (k == e) break;
    }
    return static_cast<int>(n) + 1;
  }
  lua_settop(L, 3);
  lua_pushinteger(L, i);
  lua_replace(L, 2);
  lua_pushinteger(L, e);
  lua_replace(L, 3);
  return original(L)(L);
}

// The comparison table.sort makes, charged: one unit, plus the bytes two strings compare
// (strcoll per chunk). Upvalue 1 is the script's comparator, or nil for `<`.
int chargedLess(lua_State* L) {
  uint64_t units = 1;
  if (lua_type(L, 1) == LUA_TSTRING && lua_type(L, 2) == LUA_TSTRING) {
    units += scanUnits(std::min(lua_rawlen(L, 1), lua_rawlen(L, 2)));
  }
  Sandbox::charge(L, units);
  if (lua_isnil(L, lua_upvalueindex(1))) {
    lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

// table.sort always compares through chargedLess, so every comparison is paid for,
// whatever __len, __index or the comparator (a C function, say) do.
int boundedSort(lua_State* L) {
  checkTableLike(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_pushcclosure(L, chargedLess, 1);
  return original(L)(L);
}

// ------------------------------------------------------------------ installing

struct Replacement {
  const char* name;
  lua_CFunction fn;
};

// Every function of the library at `lib` charged by its arguments, then the replacements.
void replaceAll(lua_State* L, int lib, std::initializer_list<Replacement> special) {
  lib = lua_absindex(L, lib);
  lua_pushnil(L);
  while (lua_next(L, lib) != 0) {
    if (lua_type(L, -1) == LUA_TFUNCTION) {
      lua_pushcclosure(L, chargedByArguments, 1);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, lib);
    } else {
      lua_pop(L, 1);
    }
  }
  for (const Replacement& r : special) {
    lua_getfield(L, lib, r.name);
    lua_getupvalue(L, -1, 1);  // the original, under chargedByArguments
    lua_remove(L, -2);
    lua_pushcclosure(L, r.fn, 1);
    lua_setfield(L, lib, r.name);
  }
}

}  // namespace

void replaceStringFunctions(lua_State* L, int lib) {
  replaceAll(L, lib,
             {{"rep", boundedRep},
              {"find", boundedFind},
              {"match", boundedMatch},
              {"gmatch", boundedGmatch},
              {"gsub", boundedGsub}});
}

void replaceTableFunctions(lua_State* L, int lib) {
  replaceAll(L, lib,
             {{"insert", boundedInsert},
              {"remove", boundedRemove},
              {"move", boundedMove},
              {"concat", boundedConcat},
              {"unpack", boundedUnpack},
              {"sort", boundedSort}});
}

void replaceUtf8Functions(lua_State* L, int lib) {
  replaceAll(L, lib, {});
}

}  // namespace trellis::kernel::lua::bounded_stdlib
