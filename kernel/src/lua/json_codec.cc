// JSON encode/decode for sandboxed scripts. Like the rest of kernel/src/lua, every frame
// that can see a Lua error (longjmp) holds only trivially destructible objects: the encoder
// writes into the sandbox's scratch string and raises no Lua error itself; the decoder
// builds Lua values directly and its state is a plain struct.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "trellis/kernel/lua/sandbox.h"
#include "trellis/kernel/util/json.h"

namespace trellis::kernel::lua {
namespace {

constexpr int kMaxDepth = 100;

// The registry key of the metatable that marks a table as a JSON array, so an empty list
// encodes as [] (an unmarked empty table is ambiguous and encodes as {}). Looking a
// light-userdata key up allocates nothing, so the encoder can do it without raising.
const char kArrayMetaKey = 0;

bool isMarkedArray(lua_State* L, int idx) {
  if (!lua_getmetatable(L, idx)) return false;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kArrayMetaKey);
  const bool marked = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return marked;
}

enum class EncodeError { kNone, kDepth, kType, kKey, kNumber, kSize, kMemory, kBudget };

// What an encoding may spend: its output is a C++ string outside the Lua allocator, and a
// table graph with shared subtables is walked once per path (exponential in its depth),
// so both are counted here against what the call has left.
struct EncodeBudget {
  size_t max_bytes;  // output
  uint64_t visits = 0;
  uint64_t charged = 0;  // visits already charged (Sandbox::checkpoint, which reads the clock)
};
constexpr uint64_t kVisitsPerCheckpoint = 1024;

const char* encodeMessage(EncodeError e) {
  switch (e) {
    case EncodeError::kDepth: return "nested too deeply (or a cycle)";
    case EncodeError::kType: return "cannot encode a function, userdata or thread";
    case EncodeError::kKey:
      return "object keys must be strings (or use a sequence 1..n for an array)";
    case EncodeError::kNumber: return "cannot encode NaN or infinity";
    case EncodeError::kSize: return "the result exceeds the memory budget";
    case EncodeError::kBudget: return "the value is too large to encode within the budget";
    default: return "out of memory";
  }
}

// Never raises a Lua error: only non-raising API functions are used here.
EncodeError encodeValue(lua_State* L, int idx, std::string& out, int depth, EncodeBudget& b) {
  if (out.size() > b.max_bytes) return EncodeError::kSize;
  if (++b.visits - b.charged >= kVisitsPerCheckpoint) {
    b.charged = b.visits;
    if (!Sandbox::checkpoint(L, kVisitsPerCheckpoint)) return EncodeError::kBudget;
  }
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TNONE: out += "null"; return EncodeError::kNone;
    case LUA_TBOOLEAN: out += lua_toboolean(L, idx) ? "true" : "false"; return EncodeError::kNone;
    case LUA_TNUMBER: {
      char buf[32];
      if (lua_isinteger(L, idx)) {
        auto r = std::to_chars(buf, buf + sizeof buf, lua_tointeger(L, idx));
        out.append(buf, r.ptr);
        return EncodeError::kNone;
      }
      double d = lua_tonumber(L, idx);
      if (!std::isfinite(d)) return EncodeError::kNumber;
      int n = std::snprintf(buf, sizeof buf, "%.17g", d);
      out.append(buf, static_cast<size_t>(n));
      return EncodeError::kNone;
    }
    case LUA_TSTRING: {
      size_t len = 0;
      const char* s = lua_tolstring(L, idx, &len);  // a string: converts nothing
      util::appendJsonString(out, std::string_view(s, len));
      return EncodeError::kNone;
    }
    case LUA_TTABLE: break;
    default: return EncodeError::kType;
  }
  if (depth >= kMaxDepth) return EncodeError::kDepth;
  if (!lua_checkstack(L, 4)) return EncodeError::kDepth;
  const lua_Unsigned n = lua_rawlen(L, idx);
  // An array if its keys are exactly 1..n (none at all, if marked as an array).
  bool array = n > 0 || isMarkedArray(L, idx);
  lua_Unsigned keys = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    ++keys;
    if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 ||
        static_cast<lua_Unsigned>(lua_tointeger(L, -2)) > n) {
      array = false;
    }
    lua_pop(L, 1);
  }
  array = array && keys == n;
  b.visits += keys;  // the walk over the keys is work too: a wide table may be shared
  if (array) {
    out += '[';
    for (lua_Unsigned i = 1; i <= n; ++i) {
      if (i > 1) out += ',';
      lua_rawgeti(L, idx, static_cast<lua_Integer>(i));
      EncodeError e = encodeValue(L, lua_gettop(L), out, depth + 1, b);
      lua_pop(L, 1);
      if (e != EncodeError::kNone) return e;
    }
    out += ']';
    return EncodeError::kNone;
  }
  out += '{';
  bool first = true;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 2);
      return EncodeError::kKey;
    }
    if (!first) out += ',';
    first = false;
    size_t klen = 0;
    const char* k = lua_tolstring(L, -2, &klen);
    util::appendJsonString(out, std::string_view(k, klen));
    out += ':';
    EncodeError e = encodeValue(L, lua_gettop(L), out, depth + 1, b);
    lua_pop(L, 1);
    if (e != EncodeError::kNone) {
      lua_pop(L, 1);
      return e;
    }
  }
  out += '}';
  return EncodeError::kNone;
}

EncodeError encodeTop(lua_State* L, std::string& out, EncodeBudget& b) noexcept {
  out.clear();
  try {
    return encodeValue(L, 1, out, 0, b);
  } catch (...) {  // std::bad_alloc: must not unwind through Lua's C frames
    return EncodeError::kMemory;
  }
}

struct Decoder {
  const char* p;
  const char* end;
  const char* error;
};

void skipSpace(Decoder& d) {
  while (d.p < d.end && (*d.p == ' ' || *d.p == '\t' || *d.p == '\n' || *d.p == '\r')) ++d.p;
}

bool literal(Decoder& d, const char* word) {
  size_t n = std::strlen(word);
  if (static_cast<size_t>(d.end - d.p) < n || std::memcmp(d.p, word, n) != 0) return false;
  d.p += n;
  return true;
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool hex4(Decoder& d, unsigned& cp) {
  if (d.end - d.p < 4) return false;
  cp = 0;
  for (int i = 0; i < 4; ++i) {
    int h = hexDigit(d.p[i]);
    if (h < 0) return false;
    cp = cp * 16 + static_cast<unsigned>(h);
  }
  d.p += 4;
  return true;
}

void addUtf8(luaL_Buffer& b, unsigned cp) {
  if (cp < 0x80) {
    luaL_addchar(&b, static_cast<char>(cp));
  } else if (cp < 0x800) {
    luaL_addchar(&b, static_cast<char>(0xC0 | (cp >> 6)));
    luaL_addchar(&b, static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    luaL_addchar(&b, static_cast<char>(0xE0 | (cp >> 12)));
    luaL_addchar(&b, static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    luaL_addchar(&b, static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    luaL_addchar(&b, static_cast<char>(0xF0 | (cp >> 18)));
    luaL_addchar(&b, static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    luaL_addchar(&b, static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    luaL_addchar(&b, static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// After the opening quote; pushes the string.
bool decodeString(lua_State* L, Decoder& d) {
  const char* start = d.p;
  while (d.p < d.end && *d.p != '"' && *d.p != '\\') {
    if (static_cast<unsigned char>(*d.p) < 0x20)
      return (d.error = "control character in string", false);
    ++d.p;
  }
  if (d.p >= d.end) return (d.error = "unterminated string", false);
  if (*d.p == '"') {
    lua_pushlstring(L, start, static_cast<size_t>(d.p - start));
    ++d.p;
    return true;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, start, static_cast<size_t>(d.p - start));
  while (d.p < d.end && *d.p != '"') {
    char c = *d.p++;
    if (static_cast<unsigned char>(c) < 0x20)
      return (d.error = "control character in string", false);
    if (c != '\\') {
      luaL_addchar(&b, c);
      continue;
    }
    if (d.p >= d.end) break;
    char e = *d.p++;
    switch (e) {
      case '"':
      case '\\':
      case '/': luaL_addchar(&b, e); break;
      case 'b': luaL_addchar(&b, '\b'); break;
      case 'f': luaL_addchar(&b, '\f'); break;
      case 'n': luaL_addchar(&b, '\n'); break;
      case 'r': luaL_addchar(&b, '\r'); break;
      case 't': luaL_addchar(&b, '\t'); break;
      case 'u': {
        unsigned cp = 0;
        if (!hex4(d, cp)) return (d.error = "bad \\u escape", false);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo = 0;
          if (d.end - d.p < 6 || d.p[0] != '\\' || d.p[1] != 'u') {
            return (d.error = "lone surrogate in \\u escape", false);
          }
          d.p += 2;
          if (!hex4(d, lo) || lo < 0xDC00 || lo > 0xDFFF) {
            return (d.error = "bad surrogate pair in \\u escape", false);
          }
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return (d.error = "lone surrogate in \\u escape", false);
        }
        addUtf8(b, cp);
        break;
      }
      default: return (d.error = "bad escape in string", false);
    }
  }
  if (d.p >= d.end) return (d.error = "unterminated string", false);
  ++d.p;
  luaL_pushresult(&b);
  return true;
}

bool decodeNumber(lua_State* L, Decoder& d) {
  const char* start = d.p;
  bool integral = true;
  if (d.p < d.end && *d.p == '-') ++d.p;
  if (d.p >= d.end || !(*d.p >= '0' && *d.p <= '9')) return (d.error = "bad number", false);
  while (d.p < d.end && ((*d.p >= '0' && *d.p <= '9') || *d.p == '.' || *d.p == 'e' ||
                         *d.p == 'E' || *d.p == '+' || *d.p == '-')) {
    if (*d.p == '.' || *d.p == 'e' || *d.p == 'E') integral = false;
    ++d.p;
  }
  char buf[64];
  size_t len = static_cast<size_t>(d.p - start);
  if (len >= sizeof buf) return (d.error = "number too long", false);
  std::memcpy(buf, start, len);
  buf[len] = '\0';
  if (integral) {
    long long v = 0;
    auto r = std::from_chars(buf, buf + len, v);
    if (r.ec == std::errc() && r.ptr == buf + len) {
      lua_pushinteger(L, static_cast<lua_Integer>(v));
      return true;
    }
  }
  char* stop = nullptr;
  double v = std::strtod(buf, &stop);
  if (stop != buf + len) return (d.error = "bad number", false);
  lua_pushnumber(L, v);
  return true;
}

bool decodeValue(lua_State* L, Decoder& d, int depth) {
  skipSpace(d);
  if (d.p >= d.end) return (d.error = "unexpected end of input", false);
  char c = *d.p;
  // As deep as json_encode goes, so whatever decodes also encodes.
  if ((c == '{' || c == '[') && depth >= kMaxDepth) return (d.error = "nested too deeply", false);
  luaL_checkstack(L, 3, "json_decode: nested too deeply");
  if (c == '{') {
    ++d.p;
    lua_newtable(L);
    skipSpace(d);
    if (d.p < d.end && *d.p == '}') return (++d.p, true);
    for (;;) {
      skipSpace(d);
      if (d.p >= d.end || *d.p != '"') return (d.error = "expected a string key", false);
      ++d.p;
      if (!decodeString(L, d)) return false;
      skipSpace(d);
      if (d.p >= d.end || *d.p != ':') return (d.error = "expected ':'", false);
      ++d.p;
      if (!decodeValue(L, d, depth + 1)) return false;
      lua_rawset(L, -3);
      skipSpace(d);
      if (d.p < d.end && *d.p == ',') {
        ++d.p;
        continue;
      }
      if (d.p < d.end && *d.p == '}') return (++d.p, true);
      return (d.error = "expected ',' or '}'", false);
    }
  }
  if (c == '[') {
    ++d.p;
    lua_newtable(L);
    markJsonArray(L, -1);  // so [] encodes back as []
    skipSpace(d);
    if (d.p < d.end && *d.p == ']') return (++d.p, true);
    for (lua_Integer i = 1;; ++i) {
      if (!decodeValue(L, d, depth + 1)) return false;
      lua_rawseti(L, -2, i);
      skipSpace(d);
      if (d.p < d.end && *d.p == ',') {
        ++d.p;
        continue;
      }
      if (d.p < d.end && *d.p == ']') return (++d.p, true);
      return (d.error = "expected ',' or ']'", false);
    }
  }
  if (c == '"') {
    ++d.p;
    return decodeString(L, d);
  }
  if (literal(d, "true")) return (lua_pushboolean(L, 1), true);
  if (literal(d, "false")) return (lua_pushboolean(L, 0), true);
  if (literal(d, "null")) return (lua_pushnil(L), true);
  return decodeNumber(L, d);
}

}  // namespace

void markJsonArray(lua_State* L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &kArrayMetaKey) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "trellis.json.array");
    lua_setfield(L, -2, "__metatable");  // scripts can neither read nor replace it
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kArrayMetaKey);
  }
  lua_setmetatable(L, idx);
}

int jsonArray(lua_State* L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1) && !isMarkedArray(L, 1)) {
      return luaL_argerror(L, 1, "the table already has a metatable");
    }
    lua_settop(L, 1);
  }
  markJsonArray(L, 1);
  return 1;
}

int jsonEncode(lua_State* L) {
  lua_settop(L, 1);
  Sandbox* sb = Sandbox::from(L);
  const size_t limit = sb->budget().memory_bytes;
  EncodeBudget b{limit - std::min(limit, sb->memoryInUse())};
  EncodeError e = encodeTop(L, sb->scratch(), b);
  // Raises once over budget: the sandbox reports the budget, not this function's error.
  Sandbox::charge(L, b.visits - b.charged + sb->scratch().size() / 64);
  if (e != EncodeError::kNone) return luaL_error(L, "json_encode: %s", encodeMessage(e));
  lua_pushlstring(L, sb->scratch().data(), sb->scratch().size());
  return 1;
}

int jsonDecode(lua_State* L) {
  size_t len = 0;
  const char* s = luaL_checklstring(L, 1, &len);
  Sandbox::charge(L, 1 + len / 64);
  Decoder d{s, s + len, nullptr};
  if (!decodeValue(L, d, 0)) {
    return luaL_error(L, "json_decode: %s at byte %d", d.error, static_cast<int>(d.p - s) + 1);
  }
  skipSpace(d);
  if (d.p != d.end) {
    return luaL_error(L, "json_decode: trailing characters at byte %d",
                      static_cast<int>(d.p - s) + 1);
  }
  return 1;
}

}  // namespace trellis::kernel::lua
