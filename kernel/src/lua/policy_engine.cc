#include "trellis/kernel/lua/policy_engine.h"

#include <arpa/inet.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <strings.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <unordered_map>

#include "trellis/kernel/lua/policy_store.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/util/json.h"

// Functions that Lua calls (the `policy` library, the ctx/req/res proxies, the marshal
// callbacks) keep only trivially destructible objects in their frames: a Lua error is a
// longjmp. C++ work happens in helpers that return before any raising Lua call.

namespace trellis::kernel::lua {
namespace bhttp = boost::beast::http;
using Clock = std::chrono::steady_clock;

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

struct PolicySnapshot {
  std::shared_ptr<const CompiledPolicy> global;
  std::map<std::string, std::shared_ptr<const CompiledPolicy>, std::less<>> tenants;
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

// Appends decisions as JSON lines through its own spdlog thread pool; when the queue is
// full the oldest lines are dropped, so the event loop never waits for the disk.
class DecisionLog {
 public:
  explicit DecisionLog(const std::string& file) {
    std::filesystem::create_directories(std::filesystem::path(file).parent_path());
    pool_ = std::make_shared<spdlog::details::thread_pool>(8192, 1);
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file);
    logger_ = std::make_shared<spdlog::async_logger>("policy-decisions", std::move(sink), pool_,
                                                     spdlog::async_overflow_policy::overrun_oldest);
    logger_->set_pattern("%v");
    logger_->flush_on(spdlog::level::info);
  }
  ~DecisionLog() { logger_->flush(); }
  void write(const std::string& line) { logger_->info(line); }

 private:
  std::shared_ptr<spdlog::details::thread_pool> pool_;
  std::shared_ptr<spdlog::async_logger> logger_;
};

struct PolicyEngine::Internals {
  std::mutex apply_mu;  // one apply/rollback at a time
  std::mutex metric_mu;
  std::set<std::string, std::less<>> metric_names;  // policy.metric names seen (bounded)
  metrics::Family<metrics::Counter>* custom = nullptr;
  std::atomic<int64_t> log_window{0};  // second of the current throttle window
  std::atomic<int> log_count{0};
  std::string init_error;  // reported by start(): the decision log could not be opened
};

namespace {

constexpr size_t kMaxMetricNames = 100;
constexpr size_t kMaxSourceBytes = 1024 * 1024;
constexpr int kLogLinesPerSecond = 20;

std::atomic<uint64_t> g_next_uid{1};

thread_local PolicyEngine::Call* t_call = nullptr;

}  // namespace

struct PolicyEngine::ThreadSandbox {
  std::unique_ptr<Sandbox> sandbox;  // null: the policy did not load on this thread
  uint32_t overruns = 0;             // budget failures in a row
  Outcome last = Outcome::kOk;
  Clock::time_point retry_at{};  // while in the future, the breaker is open
};

namespace {

constexpr uint32_t kOverrunsToOpen = 5;
constexpr auto kBreakerOpenFor = std::chrono::seconds(1);

struct ThreadCache {
  uint64_t generation = UINT64_MAX;
  std::shared_ptr<const PolicySnapshot> snapshot;
  std::unordered_map<uint64_t, PolicyEngine::ThreadSandbox> sandboxes;  // by policy uid
  // `allow` decisions counted here and added to the shared counter in batches, so serving
  // threads do not contend on one cache line per request.
  std::array<uint32_t, kHookCount> pending_allows{};
};
// By engine uid. Sandboxes are per thread: a lua_State is never shared across threads.
thread_local std::unordered_map<uint64_t, ThreadCache> t_caches;
// The last engine this thread served and its cache: one comparison instead of a lookup.
thread_local uint64_t t_last_uid = 0;
thread_local ThreadCache* t_last_cache = nullptr;
constexpr uint32_t kAllowBatch = 64;

ThreadCache& threadCache(uint64_t uid) {
  if (t_last_uid != uid) {
    t_last_cache = &t_caches[uid];  // unordered_map nodes stay put on rehash
    t_last_uid = uid;
  }
  return *t_last_cache;
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string scopeOf(std::string_view tenant) {
  return tenant.empty() ? "global" : "tenant:" + std::string(tenant);
}

// ------------------------------------------------------------------ proxies: ctx, req, res, q
enum ProxyKind : int { kCtx, kReq, kReqHeaders, kRes, kResHeaders, kQuota, kProxyKinds };
char kProxyKeys[kProxyKinds];

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

void pushHeaderProxy(lua_State* L, ProxyKind kind) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kProxyKeys[kind]);
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
    pushView(L, rc ? rc->principal : std::string_view(c.install->principal));
  } else if (key == "route") {
    rc ? pushView(L, rc->route) : lua_pushnil(L);
  } else if (key == "quota") {
    rc ? pushQuota(L, *rc) : lua_pushnil(L);
  } else if (key == "time") {
    lua_pushnumber(L, static_cast<lua_Number>(nowMs()) / 1000.0);
  } else if (key == "decision_id") {
    pushView(L, c.verdict->decision_id);
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
  } else if (key == "headers") {
    pushHeaderProxy(L, kReqHeaders);
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

int proxyIndex(lua_State* L) {
  const int kind = *static_cast<int*>(lua_touserdata(L, 1));
  const PolicyEngine::Call* c = t_call;
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
      if (key == "headers") {
        pushHeaderProxy(L, kResHeaders);
        return 1;
      }
      break;
    case kResHeaders:
      if (c->res) return headerField(L, c->res->base(), key);
      break;
    case kQuota:
      if (c->rejection) return quotaField(L, *c->rejection, key);
      break;
  }
  lua_pushnil(L);
  return 1;
}

int proxyReadOnly(lua_State* L) {
  return luaL_error(L, "ctx, req, res and q are read-only (use policy.modify for headers)");
}

int installProxies(lua_State* L) {
  lua_createtable(L, 0, 3);  // one metatable for every proxy
  const int mt = lua_gettop(L);
  lua_pushcfunction(L, proxyIndex);
  lua_setfield(L, mt, "__index");
  lua_pushcfunction(L, proxyReadOnly);
  lua_setfield(L, mt, "__newindex");
  lua_pushliteral(L, "locked");
  lua_setfield(L, mt, "__metatable");
  for (int kind = 0; kind < kProxyKinds; ++kind) {
    *static_cast<int*>(lua_newuserdatauv(L, sizeof(int), 0)) = kind;
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kProxyKeys[kind]);
  }
  return 0;
}

// ------------------------------------------------------------------ the `policy` library
int policyAllow(lua_State*) {
  return 0;  // nil: the request goes on as it is
}

int policyDeny(lua_State* L) {
  lua_Integer status = luaL_optinteger(L, 1, 403);
  luaL_argcheck(L, status >= 400 && status <= 599, 1, "status must be from 400 to 599");
  size_t n = 0;
  const char* reason = luaL_optlstring(L, 2, "denied by policy", &n);
  luaL_argcheck(L, n <= 1024, 2, "reason is longer than 1024 bytes");
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

bool throttle(PolicyEngine::Internals& in) {
  const int64_t second = nowMs() / 1000;
  int64_t window = in.log_window.load(std::memory_order_relaxed);
  if (window != second && in.log_window.compare_exchange_strong(window, second)) {
    in.log_count.store(0, std::memory_order_relaxed);
  }
  return in.log_count.fetch_add(1, std::memory_order_relaxed) >= kLogLinesPerSecond;
}

}  // namespace

// Helpers with C++ objects in their frames; called from the library functions below.
struct EngineAccess {
  static void log(const PolicyEngine::Call& c, const char* msg, size_t n) noexcept {
    try {
      if (throttle(*c.engine->internals_)) return;
      spdlog::info("policy {} v{} {} [decision {}]: {}", c.policy->scope, c.policy->version,
                   hookName(c.hook), c.verdict->decision_id,
                   std::string_view(msg, std::min<size_t>(n, 1024)));
    } catch (...) {
    }
  }

  // Reads the calling tenant's value into `out`. False if absent or unavailable.
  static bool kvGet(const PolicyEngine::Call& c, std::string_view plugin, std::string_view key,
                    std::string& out) noexcept {
    try {
      if (!c.engine->kv_ || !c.rc) return false;
      storage::Scope scope{c.rc->tenant->id, std::string(plugin)};
      auto entry = c.engine->kv_->get(scope, key);
      if (!entry) return false;
      out = std::move(entry->value);
      return true;
    } catch (...) {
      return false;
    }
  }

  // False if the name is new and the bound on distinct names is reached.
  static bool metric(const PolicyEngine::Call& c, std::string_view name, double value) noexcept {
    try {
      auto& in = *c.engine->internals_;
      if (!in.custom) return true;
      std::lock_guard lock(in.metric_mu);
      if (!in.metric_names.count(name)) {
        if (in.metric_names.size() >= kMaxMetricNames) return false;
        in.metric_names.emplace(name);
      }
      auto child = in.custom->tryLabels({std::string(name)});
      if (child) (*child)->add(value);
      return true;
    } catch (...) {
      return false;
    }
  }
};

namespace {

int policyLog(lua_State* L) {
  size_t n = 0;
  const char* msg = luaL_checklstring(L, 1, &n);
  if (t_call) EngineAccess::log(*t_call, msg, n);
  return 0;
}

int policyKvGet(lua_State* L) {
  size_t plen = 0, klen = 0;
  const char* plugin = luaL_checklstring(L, 1, &plen);
  const char* key = luaL_checklstring(L, 2, &klen);
  if (!t_call) return luaL_error(L, "policy.kv_get can only be used during a hook call");
  std::string& out = Sandbox::from(L)->scratch();
  if (!EngineAccess::kvGet(*t_call, std::string_view(plugin, plen), std::string_view(key, klen),
                           out)) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, out.data(), out.size());
  return 1;
}

// Parses "a.b.c.d", "::1" into 16 bytes (IPv4 as ::ffff:a.b.c.d); false if invalid.
bool parseIp(const char* s, size_t n, unsigned char out[16], bool* v4) {
  char buf[64];
  if (n == 0 || n >= sizeof buf) return false;
  std::memcpy(buf, s, n);
  buf[n] = '\0';
  in_addr a4{};
  if (inet_pton(AF_INET, buf, &a4) == 1) {
    std::memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    std::memcpy(out + 12, &a4, 4);
    *v4 = true;
    return true;
  }
  *v4 = false;
  return inet_pton(AF_INET6, buf, out) == 1;
}

// 1 match, 0 no match, -1 invalid CIDR.
int cidrContains(const unsigned char ip[16], const char* cidr, size_t n) {
  const char* slash = static_cast<const char*>(std::memchr(cidr, '/', n));
  size_t addr_len = slash ? static_cast<size_t>(slash - cidr) : n;
  unsigned char net[16];
  bool v4 = false;
  if (!parseIp(cidr, addr_len, net, &v4)) return -1;
  int bits = v4 ? 32 : 128;
  if (slash) {
    const char* p = slash + 1;
    const char* end = cidr + n;
    if (p == end || end - p > 3) return -1;
    int b = 0;
    for (; p < end; ++p) {
      if (*p < '0' || *p > '9') return -1;
      b = b * 10 + (*p - '0');
    }
    if (b > bits) return -1;
    bits = b;
  }
  if (v4) bits += 96;
  for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    unsigned char mask = bits >= 8 ? 0xff : static_cast<unsigned char>(0xff << (8 - bits));
    if ((ip[i] & mask) != (net[i] & mask)) return 0;
  }
  return 1;
}

int policyCidrMatch(lua_State* L) {
  size_t n = 0;
  const char* ip_text = luaL_checklstring(L, 1, &n);
  unsigned char ip[16];
  bool v4 = false;
  const bool valid_ip = parseIp(ip_text, n, ip, &v4);
  auto test = [&](int idx) {
    size_t clen = 0;
    const char* cidr = lua_tolstring(L, idx, &clen);
    if (!cidr) luaL_error(L, "policy.cidr_match: CIDRs must be strings");
    int r = cidrContains(ip, cidr, clen);
    if (r < 0) luaL_error(L, "policy.cidr_match: invalid CIDR \"%s\"", cidr);
    return valid_ip && r == 1;
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
  if (!t_call) return 0;
  if (!EngineAccess::metric(*t_call, std::string_view(name, n), value)) {
    return luaL_error(L, "policy.metric: at most %d distinct metric names",
                      static_cast<int>(kMaxMetricNames));
  }
  return 0;
}

const luaL_Reg kPolicyLibrary[] = {{"allow", policyAllow},      {"deny", policyDeny},
                                   {"modify", policyModify},    {"log", policyLog},
                                   {"kv_get", policyKvGet},     {"cidr_match", policyCidrMatch},
                                   {"json_encode", jsonEncode}, {"json_decode", jsonDecode},
                                   {"metric", policyMetric},    {nullptr, nullptr}};

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
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kProxyKeys[kCtx]);
  switch (c->hook) {
    case Hook::kOnRequest: lua_rawgetp(L, LUA_REGISTRYINDEX, &kProxyKeys[kReq]); break;
    case Hook::kOnResponse: lua_rawgetp(L, LUA_REGISTRYINDEX, &kProxyKeys[kRes]); break;
    case Hook::kOnQuotaExceeded: lua_rawgetp(L, LUA_REGISTRYINDEX, &kProxyKeys[kQuota]); break;
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
    rawField(L, 1, "status");
    v->status = static_cast<unsigned>(lua_tointeger(L, -1));
    rawField(L, 1, "reason");
    size_t n = 0;
    const char* reason = lua_tolstring(L, -1, &n);
    if (v->status < 400 || v->status > 599 || !reason) {
      return luaL_error(L, "%s: malformed deny decision (use policy.deny)", hook);
    }
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

size_t resultIndex(const Verdict& v, FailMode mode) {
  if (v.failed) return mode == FailMode::kOpen ? 3 : 4;
  return static_cast<size_t>(v.action);
}

}  // namespace

std::string_view hookName(Hook h) {
  switch (h) {
    case Hook::kOnRequest: return "on_request";
    case Hook::kOnResponse: return "on_response";
    case Hook::kOnQuotaExceeded: return "on_quota_exceeded";
    case Hook::kOnPluginInstall: return "on_plugin_install";
  }
  return "unknown";
}

std::optional<Hook> hookFromName(std::string_view name) {
  for (size_t i = 0; i < kHookCount; ++i) {
    if (hookName(static_cast<Hook>(i)) == name) return static_cast<Hook>(i);
  }
  return std::nullopt;
}

void applyHeaderEdits(const std::vector<HeaderEdit>& edits, bhttp::fields& fields) {
  for (const auto& e : edits) {
    if (e.value) {
      fields.set(e.name, *e.value);
    } else {
      fields.erase(e.name);
    }
  }
}

PolicyEngine::PolicyEngine(PolicyOptions options, std::unique_ptr<PolicyStore> store,
                           storage::KvStore* kv, metrics::MetricsRegistry* metrics)
    : uid_(g_next_uid.fetch_add(1)),
      options_(std::move(options)),
      store_(std::move(store)),
      kv_(kv),
      metrics_(metrics),
      snapshot_(std::make_shared<PolicySnapshot>()),
      internals_(std::make_unique<Internals>()) {
  if (options_.decision_log != "off")
    decision_log_ = std::make_unique<DecisionLog>(options_.decision_log);
  if (!metrics_) return;
  auto& decisions = metrics_->counter("trellis_policy_decisions_total",
                                      "Policy hook evaluations by result", {"hook", "result"});
  auto& failures = metrics_->counter("trellis_policy_failures_total",
                                     "Policy hooks that failed, by cause", {"hook", "cause"});
  const char* results[] = {"allow", "deny", "modify", "failed_open", "failed_closed"};
  const char* causes[] = {"error", "instructions", "memory", "wall_time"};
  for (size_t h = 0; h < kHookCount; ++h) {
    std::string hook(hookName(static_cast<Hook>(h)));
    for (size_t r = 0; r < 5; ++r) decisions_[h][r] = &decisions.labels({hook, results[r]});
    for (size_t f = 0; f < 4; ++f) failures_[h][f] = &failures.labels({hook, causes[f]});
  }
  internals_->custom = &metrics_->counter(
      "trellis_policy_metric_total", "Counters policies increment with policy.metric", {"name"});
}

PolicyEngine::~PolicyEngine() {
  t_caches.erase(uid_);  // this thread's; other threads' entries are never used again
  if (t_last_uid == uid_) {
    t_last_uid = 0;
    t_last_cache = nullptr;
  }
}

Result<std::shared_ptr<CompiledPolicy>> PolicyEngine::compile(std::string_view tenant,
                                                              uint64_t version,
                                                              std::string_view name,
                                                              std::string_view source,
                                                              int64_t applied_at_ms) {
  auto sb = Sandbox::create(options_.budget);
  if (!sb) return sb.status();
  if (Status s = (*sb)->addLibrary("policy", kPolicyLibrary, this); !s) return s;
  if (Status s = (*sb)->protectedCall(installProxies, nullptr); !s) return s;
  auto loaded = (*sb)->load(source, name);
  if (!loaded.ok()) return Status::invalid(loaded.error);
  auto p = std::make_shared<CompiledPolicy>();
  p->uid = g_next_uid.fetch_add(1);
  p->tenant = std::string(tenant);
  p->scope = scopeOf(tenant);
  p->version = version;
  p->name = std::string(name);
  p->source = std::string(source);
  p->applied_at_ms = applied_at_ms;
  bool any = false;
  for (size_t h = 0; h < kHookCount; ++h) {
    p->hooks[h] = (*sb)->hasFunction(hookName(static_cast<Hook>(h)).data());
    any = any || p->hooks[h];
  }
  if (!any) {
    return Status::invalid(std::string(name) +
                           " defines none of the hooks on_request, on_response, "
                           "on_quota_exceeded, on_plugin_install (as global functions)");
  }
  return p;
}

Status PolicyEngine::start() {
  if (!internals_->init_error.empty()) return Status::unavailable(internals_->init_error);
  if (!store_) return Status::ok();
  auto stored = store_->loadActive();
  if (!stored) return stored.status();
  auto next = std::make_shared<PolicySnapshot>();
  for (const auto& s : *stored) {
    auto p = compile(s.tenant, s.version, s.name, s.source, s.applied_at_ms);
    if (!p) {
      return Status::invalid("the active " + scopeOf(s.tenant) + " policy v" +
                             std::to_string(s.version) + " (" + s.name +
                             ") does not load: " + p.status().message() +
                             " (roll it back with `trellis policy rollback`)");
    }
    if (s.tenant.empty()) {
      next->global = std::move(*p);
    } else {
      next->tenants[s.tenant] = std::move(*p);
    }
    spdlog::info("policy {} v{} ({}) active", scopeOf(s.tenant), s.version, s.name);
  }
  publish(std::move(next));
  return Status::ok();
}

void PolicyEngine::publish(std::shared_ptr<const PolicySnapshot> next) {
  std::lock_guard lock(mu_);
  active_.store(next->global != nullptr || !next->tenants.empty(), std::memory_order_release);
  snapshot_ = std::move(next);
  generation_.fetch_add(1, std::memory_order_release);
}

namespace {
PolicyInfo infoOf(const CompiledPolicy& p) {
  PolicyInfo i{p.scope, p.tenant, p.version, p.name, {}, p.applied_at_ms};
  for (size_t h = 0; h < kHookCount; ++h) {
    if (p.hooks[h]) i.hooks.emplace_back(hookName(static_cast<Hook>(h)));
  }
  return i;
}

bool validPolicyName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') {
      return false;
    }
  }
  return true;
}
}  // namespace

Result<PolicyInfo> PolicyEngine::apply(std::string_view tenant, std::string_view name,
                                       std::string_view source) {
  if (!validPolicyName(name)) {
    return Status::invalid("policy name \"" + std::string(name) +
                           "\" must be 1-128 of [A-Za-z0-9._-] (the file's base name)");
  }
  if (source.size() > kMaxSourceBytes) {
    return Status::invalid(std::string(name) + " is larger than 1 MiB");
  }
  std::lock_guard apply_lock(internals_->apply_mu);
  auto compiled = compile(tenant, 0, name, source, nowMs());
  if (!compiled) return compiled.status();
  std::shared_ptr<const PolicySnapshot> current;
  {
    std::lock_guard lock(mu_);
    current = snapshot_;
  }
  auto& p = **compiled;
  if (store_) {
    auto saved = store_->save(tenant, name, source);
    if (!saved) return saved.status();
    p.version = saved->version;
    p.applied_at_ms = saved->applied_at_ms;
  } else {
    auto it = current->tenants.find(tenant);
    const CompiledPolicy* before = tenant.empty()                 ? current->global.get()
                                   : it == current->tenants.end() ? nullptr
                                                                  : it->second.get();
    p.version = before ? before->version + 1 : 1;
  }
  auto next = std::make_shared<PolicySnapshot>(*current);
  if (tenant.empty()) {
    next->global = *compiled;
  } else {
    next->tenants[std::string(tenant)] = *compiled;
  }
  publish(std::move(next));
  spdlog::info("policy {} v{} ({}) applied", p.scope, p.version, p.name);
  return infoOf(p);
}

Result<PolicyInfo> PolicyEngine::rollback(std::string_view tenant) {
  if (!store_) return Status::unimplemented("rollback needs a policy store");
  std::lock_guard apply_lock(internals_->apply_mu);
  auto previous = store_->rollback(tenant, false);
  if (!previous) return previous.status();
  auto compiled = compile(tenant, previous->version, previous->name, previous->source, nowMs());
  if (!compiled) {
    return Status::invalid("v" + std::to_string(previous->version) + " (" + previous->name +
                           ") no longer loads: " + compiled.status().message());
  }
  auto committed = store_->rollback(tenant, true);
  if (!committed) return committed.status();
  (*compiled)->applied_at_ms = committed->applied_at_ms;
  std::shared_ptr<const PolicySnapshot> current;
  {
    std::lock_guard lock(mu_);
    current = snapshot_;
  }
  auto next = std::make_shared<PolicySnapshot>(*current);
  if (tenant.empty()) {
    next->global = *compiled;
  } else {
    next->tenants[std::string(tenant)] = *compiled;
  }
  publish(std::move(next));
  spdlog::info("policy {} rolled back to v{} ({})", (*compiled)->scope, (*compiled)->version,
               (*compiled)->name);
  return infoOf(**compiled);
}

Status PolicyEngine::remove(std::string_view tenant) {
  std::lock_guard apply_lock(internals_->apply_mu);
  std::shared_ptr<const PolicySnapshot> current;
  {
    std::lock_guard lock(mu_);
    current = snapshot_;
  }
  const bool present =
      tenant.empty() ? current->global != nullptr : current->tenants.count(tenant) > 0;
  if (!present) return Status::notFound("no policy applied for " + scopeOf(tenant));
  if (store_) {
    if (Status s = store_->deactivate(tenant); !s) return s;
  }
  auto next = std::make_shared<PolicySnapshot>(*current);
  if (tenant.empty()) {
    next->global.reset();
  } else {
    next->tenants.erase(std::string(tenant));
  }
  publish(std::move(next));
  spdlog::info("policy {} removed", scopeOf(tenant));
  return Status::ok();
}

Status PolicyEngine::forgetTenant(std::string_view tenant) {
  if (tenant.empty()) return Status::invalid("forgetTenant needs a tenant id");
  std::lock_guard apply_lock(internals_->apply_mu);
  std::shared_ptr<const PolicySnapshot> current;
  {
    std::lock_guard lock(mu_);
    current = snapshot_;
  }
  if (current->tenants.count(tenant)) {
    auto next = std::make_shared<PolicySnapshot>(*current);
    next->tenants.erase(std::string(tenant));
    publish(std::move(next));
  }
  return store_ ? store_->purge(tenant) : Status::ok();
}

std::vector<PolicyInfo> PolicyEngine::list() const {
  std::shared_ptr<const PolicySnapshot> current;
  {
    std::lock_guard lock(mu_);
    current = snapshot_;
  }
  std::vector<PolicyInfo> out;
  if (current->global) out.push_back(infoOf(*current->global));
  for (const auto& [id, p] : current->tenants) out.push_back(infoOf(*p));
  return out;
}

const CompiledPolicy* PolicyEngine::policyFor(std::string_view tenant) const {
  ThreadCache& cache = threadCache(uid_);
  if (cache.generation != generation_.load(std::memory_order_acquire)) {
    {
      std::lock_guard lock(mu_);
      cache.snapshot = snapshot_;
      cache.generation = generation_.load(std::memory_order_relaxed);
    }
    // Drop the sandboxes of versions no longer active.
    std::set<uint64_t> live;
    if (cache.snapshot->global) live.insert(cache.snapshot->global->uid);
    for (const auto& [id, p] : cache.snapshot->tenants) live.insert(p->uid);
    std::erase_if(cache.sandboxes, [&](const auto& e) { return !live.count(e.first); });
  }
  const PolicySnapshot& snap = *cache.snapshot;
  if (!tenant.empty()) {
    auto it = snap.tenants.find(tenant);
    if (it != snap.tenants.end()) return it->second.get();
  }
  return snap.global.get();
}

PolicyEngine::ThreadSandbox& PolicyEngine::sandboxFor(const CompiledPolicy& policy) {
  auto& sandboxes = threadCache(uid_).sandboxes;
  auto it = sandboxes.find(policy.uid);
  if (it != sandboxes.end()) return it->second;
  std::unique_ptr<Sandbox> made;
  auto sb = Sandbox::create(options_.budget);
  if (sb && (*sb)->addLibrary("policy", kPolicyLibrary, this) &&
      (*sb)->protectedCall(installProxies, nullptr)) {
    auto loaded = (*sb)->load(policy.source, policy.name);
    if (loaded.ok()) {
      made = std::move(*sb);
    } else {
      spdlog::error("policy {} v{} ({}) does not load on this thread: {}", policy.scope,
                    policy.version, policy.name, loaded.error);
    }
  }
  ThreadSandbox entry;
  entry.sandbox = std::move(made);
  return sandboxes.emplace(policy.uid, std::move(entry)).first->second;
}

Verdict PolicyEngine::evaluate(Hook hook, const RequestContext* rc, Call& call) {
  Verdict v;
  std::string_view tenant = rc ? std::string_view(rc->tenant->id) : call.install->tenant;
  const CompiledPolicy* policy = policyFor(tenant);
  if (!policy || !policy->hooks[static_cast<size_t>(hook)]) return v;
  v.evaluated = true;
  v.scope = policy->scope;
  v.policy_version = policy->version;
  v.decision_id = tenants::newDecisionId();
  call.hook = hook;
  call.rc = rc;
  call.policy = policy;
  call.engine = this;
  call.verdict = &v;
  ThreadSandbox& ts = sandboxFor(*policy);
  if (!ts.sandbox) {
    v.eval.outcome = Outcome::kError;
    v.eval.error = "the policy does not load on this thread (see the log)";
  } else if (ts.overruns >= kOverrunsToOpen && Clock::now() < ts.retry_at) {
    // The breaker is open: fail as configured without spending the budget again.
    v.eval.outcome = ts.last;
    v.eval.error = "not run: the policy exceeded its " + std::string(outcomeName(ts.last)) +
                   " budget on its last " + std::to_string(ts.overruns) +
                   " calls on this thread (retried within 1 s)";
  } else {
    t_call = &call;
    v.eval = ts.sandbox->call(hookName(hook).data(), pushArgs, readVerdict, &call);
    t_call = nullptr;
    const bool overrun = v.eval.outcome != Outcome::kOk && v.eval.outcome != Outcome::kError;
    ts.overruns = overrun ? ts.overruns + 1 : 0;
    if (overrun) ts.last = v.eval.outcome;
    if (ts.overruns >= kOverrunsToOpen) ts.retry_at = Clock::now() + kBreakerOpenFor;
  }
  if (!v.eval.ok()) {
    v.failed = true;
    v.headers.clear();
    v.status = 0;
    v.reason.clear();
    v.action = Verdict::Action::kAllow;
    const FailMode mode = options_.fail[static_cast<size_t>(hook)];
    if (mode == FailMode::kClosed && hook != Hook::kOnQuotaExceeded) {
      v.action = Verdict::Action::kDeny;
      v.status = 500;
      v.reason = "the admin policy failed, so the request is refused (fail closed); decision " +
                 v.decision_id;
    }
  }
  record(hook, v, tenant);
  return v;
}

void PolicyEngine::record(Hook hook, const Verdict& v, std::string_view tenant) {
  const size_t h = static_cast<size_t>(hook);
  const FailMode mode = options_.fail[h];
  if (metrics_) {
    const size_t result = resultIndex(v, mode);
    if (result == 0) {
      uint32_t& pending = threadCache(uid_).pending_allows[h];
      if (++pending >= kAllowBatch) {
        decisions_[h][0]->add(pending);
        pending = 0;
      }
    } else {
      // Anything but an allow is counted at once, and brings the allows along.
      uint32_t& pending = threadCache(uid_).pending_allows[h];
      if (pending) decisions_[h][0]->add(std::exchange(pending, 0));
      decisions_[h][result]->add(1);
    }
    if (v.failed) failures_[h][static_cast<size_t>(v.eval.outcome) - 1]->add(1);
  }
  if (v.failed && !throttle(*internals_)) {
    spdlog::warn("policy {} v{} {} failed for tenant {} ({}): {}; failing {} [decision {}]",
                 v.scope, v.policy_version, hookName(hook), tenant.empty() ? "-" : tenant,
                 outcomeName(v.eval.outcome), v.eval.error,
                 mode == FailMode::kOpen || hook == Hook::kOnQuotaExceeded ? "open" : "closed",
                 v.decision_id);
  }
  if (!decision_log_) return;
  if (!v.failed && options_.decision_log_sample < 1.0) {
    thread_local std::minstd_rand rng{std::random_device{}()};
    if (std::uniform_real_distribution<double>(0, 1)(rng) >= options_.decision_log_sample) return;
  }
  static const char* const kResults[] = {"allow", "deny", "modify", "failed_open", "failed_closed"};
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::string line = fmt::format("{{\"ts\":\"{:%Y-%m-%dT%H:%M:%S}.{:03}Z\",\"decision_id\":\"{}\"",
                                 fmt::gmtime(std::chrono::system_clock::to_time_t(now)), ms.count(),
                                 v.decision_id);
  line += ",\"policy\":";
  util::appendJsonString(line, v.scope);
  line +=
      fmt::format(",\"version\":{},\"hook\":\"{}\",\"tenant\":", v.policy_version, hookName(hook));
  util::appendJsonString(line, tenant);
  line += fmt::format(",\"result\":\"{}\"", kResults[resultIndex(v, mode)]);
  if (v.action == Verdict::Action::kDeny) line += fmt::format(",\"status\":{}", v.status);
  line += fmt::format(",\"outcome\":\"{}\"", outcomeName(v.eval.outcome));
  if (!v.eval.error.empty()) {
    line += ",\"error\":";
    util::appendJsonString(line, v.eval.error);
  }
  line += fmt::format(",\"instructions\":{},\"peak_memory_bytes\":{},\"wall_us\":{}}}",
                      v.eval.usage.instructions, v.eval.usage.peak_memory_bytes,
                      v.eval.usage.wall_time.count());
  decision_log_->write(line);
}

Verdict PolicyEngine::onRequest(const RequestContext& rc, const http::Request& req) {
  Call call;
  call.req = &req;
  return evaluate(Hook::kOnRequest, &rc, call);
}

Verdict PolicyEngine::onResponse(const RequestContext& rc, const http::Request& req,
                                 const http::Response& res) {
  Call call;
  call.req = &req;
  call.res = &res;
  return evaluate(Hook::kOnResponse, &rc, call);
}

Verdict PolicyEngine::onQuotaExceeded(const RequestContext& rc,
                                      const tenants::Rejection& rejection) {
  Call call;
  call.rejection = &rejection;
  return evaluate(Hook::kOnQuotaExceeded, &rc, call);
}

Verdict PolicyEngine::onPluginInstall(const PluginInstall& install) {
  Call call;
  call.install = &install;
  return evaluate(Hook::kOnPluginInstall, nullptr, call);
}

}  // namespace trellis::kernel::lua
