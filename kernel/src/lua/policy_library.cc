// The `policy` library and the read-only ctx/req/res/q proxies policies see. Everything
// here is called by Lua, so frames hold only trivially destructible objects (a Lua error is
// a longjmp); C++ work goes through EngineAccess.
#include <arpa/inet.h>
#include <strings.h>

#include <array>
#include <chrono>
#include <cstring>
#include <map>

#include "lua/internal/policy_call.h"

namespace trellis::kernel::lua {
namespace bhttp = boost::beast::http;

constinit thread_local PolicyEngine::Call* t_policy_call = nullptr;

namespace {

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ------------------------------------------------------------------ proxies: ctx, req, res, q
// Each proxy is a userdata whose metatable's __index answers from the call in progress.
// Proxies are made once per sandbox and kept in its host refs (Sandbox::hostRef(kind)).
enum ProxyKind : int { kCtx, kReq, kReqHeaders, kRes, kResHeaders, kQuota, kProxyKinds };
static_assert(kProxyKinds <= Sandbox::kHostRefs);

void pushProxy(lua_State* L, ProxyKind kind) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, Sandbox::from(L)->hostRef(kind));
}

void pushView(lua_State* L, std::string_view s) {
  lua_pushlstring(L, s.data(), s.size());
}

void pushLabels(lua_State* L, const std::map<std::string, std::string>& labels) {
  lua_createtable(L, 0, static_cast<int>(labels.size()));
  for (const auto& [k, v] : labels) {
    pushView(L, v);
    lua_setfield(L, -2, k.c_str());
  }
}

void pushQuota(lua_State* L, const RequestContext& rc) {
  lua_createtable(L, 0, 10);
  for (const auto& [name, field] : tenants::kQuotaFields) {
    if (!(rc.tenant->quotas.*field)) continue;
    lua_pushinteger(L, static_cast<lua_Integer>(*(rc.tenant->quotas.*field)));
    lua_setfield(L, -2, name);
  }
  if (rc.admission) {
    const tenants::Admission::Usage u = rc.admission->usage(rc.tenant->id);
    lua_pushinteger(L, static_cast<lua_Integer>(u.in_flight));
    lua_setfield(L, -2, "in_flight");
    lua_pushinteger(L, static_cast<lua_Integer>(u.admitted));
    lua_setfield(L, -2, "admitted");
    lua_pushinteger(L, static_cast<lua_Integer>(u.rejected));
    lua_setfield(L, -2, "rejected");
  }
}

int ctxField(lua_State* L, const PolicyEngine::Call& c, std::string_view key) {
  const RequestContext* rc = c.rc;
  if (key == "tenant") {
    if (rc) {
      pushView(L, rc->tenant->id);
    } else if (!c.install->tenant.empty()) {
      pushView(L, c.install->tenant);
    } else {
      lua_pushnil(L);
    }
  } else if (key == "plan") {
    rc ? pushView(L, rc->tenant->plan) : lua_pushnil(L);
  } else if (key == "labels") {
    rc ? pushLabels(L, rc->tenant->labels) : lua_newtable(L);
  } else if (key == "principal") {
    if (rc && (rc->key_id.starts_with("jwt:") || rc->key_id.starts_with("cert:"))) {
      // A signed token's subject or a certificate credential, already prefixed.
      pushView(L, rc->key_id);
    } else if (rc) {
      lua_pushliteral(L, "key:");
      pushView(L, rc->key_id);
      lua_concat(L, 2);
    } else {
      pushView(L, c.install->principal);
    }
  } else if (key == "route") {
    rc ? pushView(L, rc->route) : lua_pushnil(L);
  } else if (key == "quota") {
    rc ? pushQuota(L, *rc) : lua_pushnil(L);
  } else if (key == "time") {
    lua_pushnumber(L, static_cast<lua_Number>(nowMs()) / 1000.0);
  } else if (key == "decision_id") {
    pushView(L, decisionId(*c.verdict));
  } else if (key == "hook") {
    pushView(L, hookName(c.hook));
  } else if (key == "policy_version") {
    lua_pushinteger(L, static_cast<lua_Integer>(c.policy->version));
  } else if (key == "scope") {
    pushView(L, c.policy->scope);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

int reqField(lua_State* L, const PolicyEngine::Call& c, std::string_view key) {
  const http::Request& req = *c.req;
  if (key == "method") {
    pushView(L, req.method_string());
  } else if (key == "path" || key == "query") {
    std::string_view target = req.target();
    size_t q = target.find('?');
    if (key == "path") {
      pushView(L, target.substr(0, q));
    } else {
      pushView(L, q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
    }
  } else if (key == "remote_addr") {
    pushView(L, c.rc ? c.rc->remote_addr : std::string_view());
  } else if (key == "body_size") {
    lua_pushinteger(L, static_cast<lua_Integer>(req.body().size()));
  } else {
    lua_pushnil(L);
  }
  return 1;
}

int headerField(lua_State* L, const bhttp::fields& fields, std::string_view key) {
  auto it = fields.find(key);
  if (it == fields.end()) {
    lua_pushnil(L);
  } else {
    pushView(L, it->value());
  }
  return 1;
}

int quotaField(lua_State* L, const tenants::Rejection& r, std::string_view key) {
  if (key == "quota") {
    pushView(L, r.quota);
  } else if (key == "limit") {
    lua_pushinteger(L, static_cast<lua_Integer>(r.limit));
  } else if (key == "remaining") {
    lua_pushinteger(L, static_cast<lua_Integer>(r.remaining));
  } else if (key == "reset_seconds") {
    lua_pushinteger(L, static_cast<lua_Integer>(r.reset_seconds));
  } else if (key == "status") {
    lua_pushinteger(L, static_cast<lua_Integer>(r.http_status));
  } else if (key == "decision_id") {
    pushView(L, r.decision_id);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

// __index of proxy kind upvalue 1.
int proxyIndex(lua_State* L) {
  const auto kind = static_cast<ProxyKind>(lua_tointeger(L, lua_upvalueindex(1)));
  const PolicyEngine::Call* c = t_policy_call;
  if (!c) return luaL_error(L, "ctx, req, res and q can only be used during a hook call");
  if (lua_type(L, 2) != LUA_TSTRING) {
    lua_pushnil(L);
    return 1;
  }
  size_t n = 0;
  const char* k = lua_tolstring(L, 2, &n);
  std::string_view key(k, n);
  switch (kind) {
    case kCtx: return ctxField(L, *c, key);
    case kReq:
      if (c->req) return reqField(L, *c, key);
      break;
    case kReqHeaders:
      if (c->req) return headerField(L, c->req->base(), key);
      break;
    case kRes:
      if (!c->res) break;
      if (key == "status") {
        lua_pushinteger(L, static_cast<lua_Integer>(c->res->result_int()));
        return 1;
      }
      break;
    case kResHeaders:
      if (c->res) return headerField(L, c->res->base(), key);
      break;
    case kQuota:
      if (c->rejection) return quotaField(L, *c->rejection, key);
      break;
    case kProxyKinds: break;  // a count, not a proxy
  }
  lua_pushnil(L);
  return 1;
}

int proxyReadOnly(lua_State* L) {
  return luaL_error(L, "ctx, req, res and q are read-only (use policy.modify for headers)");
}

int installProxies(lua_State* L) {
  Sandbox* sb = Sandbox::from(L);
  // Header proxies first: req.headers and res.headers are fixed fields of their parents,
  // answered by a table lookup rather than a call into C.
  for (ProxyKind kind : {kReqHeaders, kResHeaders, kCtx, kReq, kRes, kQuota}) {
    lua_newuserdatauv(L, 0, 0);
    lua_pushinteger(L, kind);
    lua_pushcclosure(L, proxyIndex, 1);
    const ProxyKind headers = kind == kReq ? kReqHeaders : kind == kRes ? kResHeaders : kind;
    if (headers != kind) {
      lua_createtable(L, 0, 1);  // the fixed fields, falling back to proxyIndex
      pushProxy(L, headers);
      lua_setfield(L, -2, "headers");
      lua_createtable(L, 0, 1);
      lua_pushvalue(L, -3);
      lua_setfield(L, -2, "__index");
      lua_setmetatable(L, -2);
      lua_remove(L, -2);
    }
    Sandbox::makeLockedMetatable(L, proxyReadOnly);
    lua_setmetatable(L, -2);
    sb->setHostRef(kind, luaL_ref(L, LUA_REGISTRYINDEX));
  }
  return 0;
}

// ------------------------------------------------------------------ the `policy` library
int policyAllow(lua_State*) {
  return 0;  // nil: the request goes on as it is
}

// What a deny may say, whether policy.deny made it or the script built the table itself.
constexpr size_t kMaxReasonBytes = 1024;
bool validDenyStatus(lua_Integer status) {
  return status >= 400 && status <= 599;
}

int policyDeny(lua_State* L) {
  lua_Integer status = luaL_optinteger(L, 1, 403);
  luaL_argcheck(L, validDenyStatus(status), 1, "status must be from 400 to 599");
  size_t n = 0;
  const char* reason = luaL_optlstring(L, 2, "denied by policy", &n);
  luaL_argcheck(L, n <= kMaxReasonBytes, 2, "reason is longer than 1024 bytes");
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "deny");
  lua_setfield(L, -2, "action");
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, reason, n);
  lua_setfield(L, -2, "reason");
  return 1;
}

int policyModify(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "modify");
  lua_setfield(L, -2, "action");
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "headers");
  return 1;
}

int policyLog(lua_State* L) {
  size_t n = 0;
  const char* msg = luaL_checklstring(L, 1, &n);
  if (t_policy_call) EngineAccess::log(*t_policy_call, msg, n);
  return 0;
}

int policyKvGet(lua_State* L) {
  size_t plen = 0, klen = 0;
  const char* plugin = luaL_checklstring(L, 1, &plen);
  const char* key = luaL_checklstring(L, 2, &klen);
  if (!t_policy_call) return luaL_error(L, "policy.kv_get can only be used during a hook call");
  std::string& out = Sandbox::from(L)->scratch();
  if (!EngineAccess::kvGet(*t_policy_call, std::string_view(plugin, plen),
                           std::string_view(key, klen), out)) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

// Dotted-quad IPv4 as inet_pton reads it (four decimal parts of 0-255, no leading zeros),
// without its copy and terminator: cidr_match runs on every request of a typical policy.
bool parseIpv4(const char* s, size_t n, unsigned char out[4]) {
  size_t part = 0, digits = 0;
  unsigned value = 0;
  for (size_t i = 0; i < n; ++i) {
    const char ch = s[i];
    if (ch >= '0' && ch <= '9') {
      if (digits == 1 && value == 0) return false;  // leading zero
      value = value * 10 + static_cast<unsigned>(ch - '0');
      if (++digits > 3 || value > 255) return false;
    } else if (ch == '.' && digits > 0 && part < 3) {
      out[part++] = static_cast<unsigned char>(value);
      digits = value = 0;
    } else {
      return false;
    }
  }
  if (part != 3 || digits == 0) return false;
  out[3] = static_cast<unsigned char>(value);
  return true;
}

// Parses "a.b.c.d", "::1" into 16 bytes (IPv4 as ::ffff:a.b.c.d); false if invalid.
bool parseIp(const char* s, size_t n, unsigned char out[16], bool* v4) {
  if (parseIpv4(s, n, out + 12)) {
    std::memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    *v4 = true;
    return true;
  }
  *v4 = false;
  char buf[64];
  if (n == 0 || n >= sizeof buf) return false;
  std::memcpy(buf, s, n);
  buf[n] = '\0';
  return inet_pton(AF_INET6, buf, out) == 1;
}

struct Cidr {
  unsigned char net[16];
  int bits;  // of the 16-byte form (IPv4 prefixes + 96)
};

bool parseCidr(const char* cidr, size_t n, Cidr& out) {
  const char* slash = static_cast<const char*>(std::memchr(cidr, '/', n));
  size_t addr_len = slash ? static_cast<size_t>(slash - cidr) : n;
  bool v4 = false;
  if (!parseIp(cidr, addr_len, out.net, &v4)) return false;
  int bits = v4 ? 32 : 128;
  if (slash) {
    const char* p = slash + 1;
    const char* end = cidr + n;
    if (p == end || end - p > 3) return false;
    int b = 0;
    for (; p < end; ++p) {
      if (*p < '0' || *p > '9') return false;
      b = b * 10 + (*p - '0');
    }
    if (b > bits) return false;
    bits = b;
  }
  out.bits = v4 ? bits + 96 : bits;
  return true;
}

bool contains(const Cidr& c, const unsigned char ip[16]) {
  int bits = c.bits;
  for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    unsigned char mask = bits >= 8 ? 0xff : static_cast<unsigned char>(0xff << (8 - bits));
    if ((ip[i] & mask) != (c.net[i] & mask)) return false;
  }
  return true;
}

// Parsed CIDRs by their text, per thread: a policy matches against the same few strings on
// every request. Slots are picked by the Lua string's address (interned strings keep theirs)
// and confirmed by the text, so a reused address never returns a stale parse.
struct CidrSlot {
  char text[52];
  size_t len = 0;  // 0: empty
  bool valid = false;
  Cidr cidr;
};
thread_local std::array<CidrSlot, 64> t_cidr_cache;

// The parsed CIDR, or null if `text` is not one.
const Cidr* cachedCidr(const char* text, size_t n) {
  thread_local CidrSlot uncached;
  CidrSlot& slot = n < sizeof uncached.text
                       ? t_cidr_cache[(reinterpret_cast<uintptr_t>(text) >> 4) % 64]
                       : uncached;
  if (&slot == &uncached || slot.len != n || std::memcmp(slot.text, text, n) != 0) {
    slot.valid = parseCidr(text, n, slot.cidr);
    slot.len = &slot == &uncached ? 0 : n;
    if (slot.len) std::memcpy(slot.text, text, n);
  }
  return slot.valid ? &slot.cidr : nullptr;
}

int policyCidrMatch(lua_State* L) {
  size_t n = 0;
  const char* ip_text = luaL_checklstring(L, 1, &n);
  unsigned char ip[16];
  bool v4 = false;
  const bool valid_ip = parseIp(ip_text, n, ip, &v4);
  auto test = [&](int idx) {
    size_t clen = 0;
    const char* text = lua_tolstring(L, idx, &clen);
    if (!text) luaL_error(L, "policy.cidr_match: CIDRs must be strings");
    const Cidr* cidr = cachedCidr(text, clen);
    if (!cidr) luaL_error(L, "policy.cidr_match: invalid CIDR \"%s\"", text);
    return valid_ip && contains(*cidr, ip);
  };
  if (lua_type(L, 2) == LUA_TTABLE) {
    const lua_Integer len = static_cast<lua_Integer>(lua_rawlen(L, 2));
    bool found = false;
    for (lua_Integer i = 1; i <= len && !found; ++i) {
      lua_rawgeti(L, 2, i);
      found = test(lua_gettop(L));
      lua_pop(L, 1);
    }
    lua_pushboolean(L, found);
    return 1;
  }
  luaL_checktype(L, 2, LUA_TSTRING);
  lua_pushboolean(L, test(2));
  return 1;
}

int policyMetric(lua_State* L) {
  size_t n = 0;
  const char* name = luaL_checklstring(L, 1, &n);
  lua_Number value = luaL_optnumber(L, 2, 1);
  bool valid = n >= 1 && n <= 64;
  for (size_t i = 0; valid && i < n; ++i) {
    char ch = name[i];
    valid = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
  }
  luaL_argcheck(L, valid, 1, "metric names are 1-64 of [a-z0-9_]");
  luaL_argcheck(L, value >= 0, 2, "metric values must be >= 0");
  if (!t_policy_call) return 0;
  if (!EngineAccess::metric(*t_policy_call, std::string_view(name, n), value)) {
    return luaL_error(L, "policy.metric: at most %d distinct metric names",
                      static_cast<int>(EngineAccess::kMaxMetricNames));
  }
  return 0;
}

// ------------------------------------------------------------------ arguments and results
void pushManifest(lua_State* L, const PluginInstall& m) {
  lua_createtable(L, 0, 6);
  const std::pair<const char*, const std::string*> fields[] = {
      {"id", &m.id}, {"version", &m.version}, {"publisher", &m.publisher}, {"source", &m.source}};
  for (const auto& [name, value] : fields) {
    pushView(L, *value);
    lua_setfield(L, -2, name);
  }
  lua_createtable(L, static_cast<int>(m.capabilities.size()), 0);
  for (size_t i = 0; i < m.capabilities.size(); ++i) {
    pushView(L, m.capabilities[i]);
    lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
  }
  lua_setfield(L, -2, "capabilities");
}

int pushArgs(lua_State* L, void* data) {
  auto* c = static_cast<PolicyEngine::Call*>(data);
  pushProxy(L, kCtx);
  switch (c->hook) {
    case Hook::kOnRequest: pushProxy(L, kReq); break;
    case Hook::kOnResponse: pushProxy(L, kRes); break;
    case Hook::kOnQuotaExceeded: pushProxy(L, kQuota); break;
    case Hook::kOnPluginInstall: pushManifest(L, *c->install); break;
  }
  return 2;
}

// Pushes t[name] without metamethods.
int rawField(lua_State* L, int t, const char* name) {
  lua_pushstring(L, name);
  return lua_rawget(L, t);
}

bool validHeaderName(const char* s, size_t n) {
  if (n == 0 || n > 256) return false;
  for (size_t i = 0; i < n; ++i) {
    unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch <= 32 || ch >= 127 || std::strchr("()<>@,;:\\\"/[]?={}", ch)) return false;
  }
  return true;
}

bool protectedHeader(const char* s, size_t n) {
  static const char* const kProtected[] = {
      "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"};
  for (const char* p : kProtected) {
    if (std::strlen(p) == n && strncasecmp(p, s, n) == 0) return true;
  }
  return false;
}

void readHeaderEdits(lua_State* L, int t, Verdict* v, const char* hook) {
  if (lua_type(L, t) != LUA_TTABLE) luaL_error(L, "%s: headers must be a table", hook);
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "%s: header names must be strings", hook);
    size_t kn = 0, vn = 0;
    const char* k = lua_tolstring(L, -2, &kn);
    if (!validHeaderName(k, kn)) luaL_error(L, "%s: invalid header name \"%s\"", hook, k);
    if (protectedHeader(k, kn)) luaL_error(L, "%s: the header %s cannot be changed", hook, k);
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      v->headers.push_back({std::string(k, kn), std::nullopt});
    } else if (lua_type(L, -1) == LUA_TSTRING) {
      const char* val = lua_tolstring(L, -1, &vn);
      if (vn > 8192 || std::memchr(val, '\r', vn) || std::memchr(val, '\n', vn) ||
          std::memchr(val, '\0', vn)) {
        luaL_error(L, "%s: invalid value for header %s (CR, LF, NUL or over 8 KiB)", hook, k);
      }
      v->headers.push_back({std::string(k, kn), std::string(val, vn)});
    } else {
      luaL_error(L, "%s: header %s must be a string, or false to remove it", hook, k);
    }
    lua_pop(L, 1);
  }
}

int readVerdict(lua_State* L, void* data) {
  auto* c = static_cast<PolicyEngine::Call*>(data);
  Verdict* v = c->verdict;
  const char* hook = hookName(c->hook).data();
  const int type = lua_type(L, 1);
  if (type == LUA_TNIL || type == LUA_TNONE) return 0;
  if (type != LUA_TTABLE) {
    return luaL_error(L, "%s returned a %s; expected nothing or a policy.* decision", hook,
                      luaL_typename(L, 1));
  }
  if (c->hook == Hook::kOnQuotaExceeded) {
    if (rawField(L, 1, "status") != LUA_TNIL) {
      lua_Integer status = lua_tointeger(L, -1);
      if (!lua_isinteger(L, -1) || status < 400 || status > 599) {
        return luaL_error(L, "%s: status must be an integer from 400 to 599", hook);
      }
      v->status = static_cast<unsigned>(status);
    }
    if (rawField(L, 1, "message") != LUA_TNIL) {
      size_t n = 0;
      const char* msg = lua_tolstring(L, -1, &n);
      if (!msg || lua_type(L, -1) != LUA_TSTRING || n > 1024) {
        return luaL_error(L, "%s: message must be a string of at most 1024 bytes", hook);
      }
      v->reason.assign(msg, n);
    }
    if (rawField(L, 1, "headers") != LUA_TNIL) readHeaderEdits(L, lua_gettop(L), v, hook);
    v->action = v->headers.empty() ? Verdict::Action::kAllow : Verdict::Action::kModify;
    return 0;
  }
  size_t an = 0;
  const char* action =
      rawField(L, 1, "action") == LUA_TSTRING ? lua_tolstring(L, -1, &an) : nullptr;
  std::string_view a = action ? std::string_view(action, an) : std::string_view();
  if (a == "deny" && c->hook != Hook::kOnResponse) {
    // A table built by hand is held to policy.deny's rules.
    int is_int = 0;
    const lua_Integer status =
        rawField(L, 1, "status") == LUA_TNUMBER ? lua_tointegerx(L, -1, &is_int) : 0;
    if (!is_int || !validDenyStatus(status)) {
      return luaL_error(L, "%s: a deny's status must be an integer from 400 to 599", hook);
    }
    size_t n = 0;
    const char* reason =
        rawField(L, 1, "reason") == LUA_TSTRING ? lua_tolstring(L, -1, &n) : nullptr;
    if (!reason || n > kMaxReasonBytes) {
      return luaL_error(L, "%s: a deny's reason must be a string of at most 1024 bytes", hook);
    }
    if (rawField(L, 1, "headers") != LUA_TNIL) {
      return luaL_error(L, "%s: a deny sets no headers (use policy.deny)", hook);
    }
    v->status = static_cast<unsigned>(status);
    v->reason.assign(reason, n);
    v->action = Verdict::Action::kDeny;
    return 0;
  }
  if (a == "modify" && c->hook != Hook::kOnPluginInstall) {
    rawField(L, 1, "headers");
    readHeaderEdits(L, lua_gettop(L), v, hook);
    v->action = Verdict::Action::kModify;
    return 0;
  }
  return luaL_error(
      L, "%s must return nothing, policy.allow()%s; got a table with no known action", hook,
      c->hook == Hook::kOnResponse        ? " or policy.modify(...)"
      : c->hook == Hook::kOnPluginInstall ? " or policy.deny(...)"
                                          : ", policy.deny(...) or policy.modify(...)");
}

}  // namespace

namespace policy_library {
const luaL_Reg kFunctions[] = {{"allow", policyAllow},      {"deny", policyDeny},
                               {"modify", policyModify},    {"log", policyLog},
                               {"kv_get", policyKvGet},     {"cidr_match", policyCidrMatch},
                               {"json_encode", jsonEncode}, {"json_decode", jsonDecode},
                               {"metric", policyMetric},    {nullptr, nullptr}};
int installProxies(lua_State* L) {
  return lua::installProxies(L);
}
int pushArgs(lua_State* L, void* data) {
  return lua::pushArgs(L, data);
}
int readVerdict(lua_State* L, void* data) {
  return lua::readVerdict(L, data);
}
}  // namespace policy_library

}  // namespace trellis::kernel::lua
