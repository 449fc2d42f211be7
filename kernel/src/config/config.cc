#include "trellis/kernel/config/config.h"

#include <arpa/inet.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

#include "trellis/kernel/plugin/manifest.h"
#include "trellis/kernel/services/egress_policy.h"
#include "trellis/kernel/tls/server_context.h"
#include "trellis/kernel/util/json.h"
#include "trellis/tenants/identity.h"

namespace trellis::kernel::config {
namespace {

constexpr int kMaxJsonDepth = 64;
constexpr uint64_t kMaxBytesSetting = uint64_t{1} << 30;
constexpr uint64_t kMaxMillis = 24ull * 60 * 60 * 1000;
constexpr uintmax_t kMaxPolicyFileBytes = 1024 * 1024;  // the policy engine's limit too

// Keys and values come from the document: control characters are shown escaped so that
// an error stays one readable line (a key may even begin with a NUL byte).
std::string visible(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw ConfigError(visible(path.empty() ? message : path + ": " + message));
}

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string indexed(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// What the operator wrote, for "expected X, got Y" messages.
std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Scalar: {
      std::string s;
      std::string_view text = node.Scalar();
      util::appendJsonString(s, text.substr(0, 80));
      if (text.size() > 80) s.insert(s.size() - 1, "...");
      return s;
    }
    default: return "nothing";
  }
}

bool isPlain(const YAML::Node& node) {
  return node.Tag() == "?";
}

// The literal JSON number grammar; YAML spellings JSON lacks (.5, 0x1f, .inf) stay strings.
bool isJsonNumber(std::string_view s) {
  size_t i = 0;
  auto digits = [&] {
    size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i > start;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

void toJson(const YAML::Node& node, const std::string& path, int depth, std::string& out) {
  if (depth > kMaxJsonDepth) fail(path, "nested too deeply");
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: out += "null"; return;
    case YAML::NodeType::Scalar: {
      const std::string& s = node.Scalar();
      if (isPlain(node)) {
        // YAML 1.2 core schema booleans; yes/no/on/off stay strings.
        if (s == "true" || s == "True" || s == "TRUE") {
          out += "true";
          return;
        }
        if (s == "false" || s == "False" || s == "FALSE") {
          out += "false";
          return;
        }
        std::string_view number = s;
        if (!number.empty() && number[0] == '+') number.remove_prefix(1);
        if (isJsonNumber(number)) {
          out += number;
          return;
        }
      }
      util::appendJsonString(out, s);
      return;
    }
    case YAML::NodeType::Sequence: {
      out += '[';
      for (size_t i = 0; i < node.size(); ++i) {
        if (i > 0) out += ',';
        toJson(node[i], indexed(path, i), depth + 1, out);
      }
      out += ']';
      return;
    }
    case YAML::NodeType::Map: {
      out += '{';
      std::set<std::string> seen;
      bool first = true;
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) fail(path, "map keys must be strings, got " + describe(kv.first));
        const std::string& key = kv.first.Scalar();
        std::string child_path = join(path, key);
        if (!seen.insert(key).second) fail(child_path, "duplicate key");
        if (!first) out += ',';
        first = false;
        util::appendJsonString(out, key);
        out += ':';
        toJson(kv.second, child_path, depth + 1, out);
      }
      out += '}';
      return;
    }
  }
}

class Parser {
 public:
  explicit Parser(std::filesystem::path base_dir) : base_(std::move(base_dir)) {}

  Config parse(const YAML::Node& root) {
    Config cfg;
    if (root.IsNull()) return withDefaults(std::move(cfg), false);
    if (!root.IsMap()) {
      fail("",
           "expected a map of sections (server, admin, storage, log, plugins, plans, "
           "tenants, policy, egress, audit, usage, auth), got " +
               describe(root));
    }
    checkKeys(root, "",
              {"server", "admin", "storage", "log", "plugins", "plans", "tenants", "policy",
               "egress", "audit", "usage", "auth"});
    if (auto n = root["server"]) parseServer(n, "server", cfg.server);
    bool token_set = false;
    if (auto n = root["admin"]) token_set = parseAdmin(n, "admin", cfg.admin);
    if (auto n = root["storage"]) parseStorage(n, "storage", cfg);
    if (auto n = root["log"]) parseLog(n, "log", cfg);
    if (auto n = root["plugins"]) parsePlugins(n, "plugins", cfg);
    if (auto n = root["audit"]) parseAudit(n, "audit", cfg);
    if (auto n = root["plans"]) parsePlans(n, "plans", cfg);
    if (auto n = root["tenants"]) parseTenants(n, "tenants", cfg, false);
    if (auto n = root["policy"]) parsePolicy(n, "policy", cfg.policy);
    if (auto n = root["egress"]) {
      checkKeys(n, "egress", {"ca_file"});
      if (auto f = n["ca_file"]) cfg.egress.ca_file = readPath(f, "egress.ca_file");
    }
    if (auto n = root["usage"]) parseUsage(n, "usage", cfg.usage);
    if (auto n = root["auth"]) parseAuth(n, "auth", cfg);
    return withDefaults(std::move(cfg), token_set);
  }

  StateFile parseState(const YAML::Node& root) const {
    StateFile state;
    if (root.IsNull()) return state;
    if (!root.IsMap())
      fail("", "expected a map with plans, tenants, policies; got " + describe(root));
    checkKeys(root, "", {"plans", "tenants", "policies"});
    Config cfg;
    if (auto n = root["plans"]) {
      parsePlans(n, "plans", cfg);
      state.plans = cfg.plans;
    }
    if (auto n = root["tenants"]) {
      parseTenants(n, "tenants", cfg, true, state.plans.has_value());
    }
    state.tenants = std::move(cfg.tenants);
    if (auto n = root["policies"]) state.policies = parsePolicies(n, "policies");
    return state;
  }

 private:
  static void parseUsage(const YAML::Node& n, const std::string& path, UsageConfig& u) {
    checkKeys(n, path,
              {"max_bytes", "max_age_seconds", "warn_percent", "queue_records", "flush_interval_ms",
               "batch_records", "max_unacked", "redeliver_after_ms", "retention_check_ms"});
    if (n.IsNull()) return;
    auto uint = [&](const char* key, uint64_t min, uint64_t max) -> std::optional<uint64_t> {
      if (auto v = n[key]) return readUInt(v, join(path, key), min, max);
      return std::nullopt;
    };
    if (auto v = uint("max_bytes", 1024 * 1024, 1ULL << 50)) u.max_bytes = *v;
    if (auto v = uint("max_age_seconds", 60, 10ULL * 365 * 86400))
      u.max_age = std::chrono::seconds(*v);
    if (auto v = uint("warn_percent", 1, 99)) u.warn_fraction = static_cast<double>(*v) / 100.0;
    if (auto v = uint("queue_records", 1000, 100'000'000)) u.queue_records = *v;
    // At most a second: a crash loses at most this much.
    if (auto v = uint("flush_interval_ms", 10, 1000))
      u.flush_interval = std::chrono::milliseconds(*v);
    if (auto v = uint("batch_records", 1, 100'000)) u.batch_records = *v;
    if (auto v = uint("max_unacked", 1, 100'000'000)) u.max_unacked = *v;
    if (auto v = uint("redeliver_after_ms", 100, kMaxMillis)) {
      u.redeliver_after = std::chrono::milliseconds(*v);
    }
    if (auto v = uint("retention_check_ms", 100, kMaxMillis)) {
      u.retention_check = std::chrono::milliseconds(*v);
    }
  }

  void parseAuth(const YAML::Node& n, const std::string& path, Config& cfg) const {
    checkKeys(n, path, {"jwt"});
    if (n.IsNull()) return;
    const YAML::Node jwt = n["jwt"];
    if (!jwt) return;
    const std::string jwt_path = join(path, "jwt");
    checkKeys(jwt, jwt_path, {"issuers"});
    if (jwt.IsNull()) return;
    const YAML::Node list = jwt["issuers"];
    if (!list) return;
    const std::string list_path = join(jwt_path, "issuers");
    if (!list.IsSequence()) fail(list_path, "expected a list, got " + describe(list));
    std::set<std::string> seen;
    for (size_t i = 0; i < list.size(); ++i) {
      const YAML::Node item = list[i];
      const std::string at = indexed(list_path, i);
      checkKeys(item, at,
                {"issuer", "audience", "jwks_uri", "jwks_file", "ca_file", "tenant_claim",
                 "principal_claim", "clock_skew_seconds", "jwks_refresh_seconds",
                 "jwks_min_refetch_seconds"});
      if (!item.IsMap()) fail(at, "expected a map, got " + describe(item));
      JwtIssuerConfig c;
      auto required = [&](const char* key) {
        const YAML::Node v = item[key];
        if (!v) fail(join(at, key), "required");
        std::string s = readString(v, join(at, key));
        if (s.empty()) fail(join(at, key), "must not be empty");
        return s;
      };
      c.issuer = required("issuer");
      c.audience = required("audience");
      if (!seen.insert(c.issuer).second) {
        fail(join(at, "issuer"), "issuer \"" + c.issuer + "\" is listed twice");
      }
      const YAML::Node uri = item["jwks_uri"];
      const YAML::Node file = item["jwks_file"];
      if (bool(uri) == bool(file)) fail(at, "set exactly one of jwks_uri and jwks_file");
      if (uri) {
        c.jwks_uri = readString(uri, join(at, "jwks_uri"));
        if (!c.jwks_uri.starts_with("https://")) {
          fail(join(at, "jwks_uri"), "must be an https:// URL (keys are not fetched in clear)");
        }
      }
      if (file) c.jwks_file = readPath(file, join(at, "jwks_file"));
      if (auto v = item["ca_file"]) {
        if (!uri) fail(join(at, "ca_file"), "only applies with jwks_uri");
        c.ca_file = readPath(v, join(at, "ca_file"));
      } else if (uri) {
        c.ca_file = cfg.egress.ca_file;
      }
      for (auto [key, out] : {std::pair{"tenant_claim", &c.tenant_claim},
                              std::pair{"principal_claim", &c.principal_claim}}) {
        if (auto v = item[key]) {
          *out = readString(v, join(at, key));
          if (out->empty()) fail(join(at, key), "must not be empty");
        }
      }
      if (auto v = item["clock_skew_seconds"]) {
        c.clock_skew = std::chrono::seconds(readUInt(v, join(at, "clock_skew_seconds"), 0, 300));
      }
      if (auto v = item["jwks_refresh_seconds"]) {
        c.jwks_refresh =
            std::chrono::seconds(readUInt(v, join(at, "jwks_refresh_seconds"), 10, 86400));
      }
      if (auto v = item["jwks_min_refetch_seconds"]) {
        c.jwks_min_refetch =
            std::chrono::seconds(readUInt(v, join(at, "jwks_min_refetch_seconds"), 1, 3600));
      }
      cfg.auth.jwt_issuers.push_back(std::move(c));
    }
  }

  Config withDefaults(Config cfg, bool token_set) const {
    if (cfg.data_dir.empty()) cfg.data_dir = resolve("../var/data");
    if (!token_set) cfg.admin.token_file = parentOf(cfg.data_dir) / "admin.token";
    return cfg;
  }

  static std::filesystem::path parentOf(std::filesystem::path p) {
    if (!p.has_filename()) p = p.parent_path();  // "/a/b/" names b, not an empty child
    return p.parent_path();
  }

  std::filesystem::path resolve(const std::filesystem::path& p) const {
    return (p.is_absolute() ? p : base_ / p).lexically_normal();
  }

  // A map (null counts as empty) whose keys are all in `allowed`, each at most once.
  static void checkKeys(const YAML::Node& node, const std::string& path,
                        const std::vector<std::string_view>& allowed) {
    if (node.IsNull()) return;
    if (!node.IsMap()) fail(path, "expected a map, got " + describe(node));
    std::set<std::string> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) fail(path, "keys must be strings, got " + describe(kv.first));
      const std::string& key = kv.first.Scalar();
      bool known = false;
      std::string expected;
      for (std::string_view a : allowed) {
        known = known || a == key;
        expected += (expected.empty() ? "" : ", ") + std::string(a);
      }
      if (!known) fail(join(path, key), "unknown key (expected one of: " + expected + ")");
      if (!seen.insert(key).second) fail(join(path, key), "duplicate key");
    }
  }

  static std::string readString(const YAML::Node& node, const std::string& path) {
    if (!node.IsScalar()) fail(path, "expected a string, got " + describe(node));
    return node.Scalar();
  }

  // Plain true or false only: a quoted "true" or a YAML 1.1 "yes" is a typo, not consent.
  static bool readBool(const YAML::Node& node, const std::string& path) {
    if (node.IsScalar() && isPlain(node)) {
      if (node.Scalar() == "true") return true;
      if (node.Scalar() == "false") return false;
    }
    fail(path, "expected true or false, got " + describe(node));
  }

  std::filesystem::path readPath(const YAML::Node& node, const std::string& path) const {
    std::string s = readString(node, path);
    if (s.empty()) fail(path, "expected a path, got \"\"");
    return resolve(s);
  }

  static uint64_t readUInt(const YAML::Node& node, const std::string& path, uint64_t min,
                           uint64_t max) {
    std::string expected = min == 0 ? "a non-negative integer" : "a positive integer";
    if (!node.IsScalar()) fail(path, "expected " + expected + ", got " + describe(node));
    const std::string& s = node.Scalar();
    bool digits =
        !s.empty() && s.size() <= 19 && s.find_first_not_of("0123456789") == std::string::npos;
    if (!digits) fail(path, "expected " + expected + ", got " + describe(node));
    if (!isPlain(node)) fail(path, "expected " + expected + " (unquoted), got " + describe(node));
    uint64_t v = std::stoull(s);
    if (v < min || v > max) {
      fail(path, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                     ", got " + s);
    }
    return v;
  }

  static bool isLoopback(const std::string& host) {
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    return host == "::1";
  }

  static ListenAddress readListen(const YAML::Node& node, const std::string& path) {
    if (!node.IsScalar()) fail(path, "expected host:port, got " + describe(node));
    const std::string& s = node.Scalar();
    std::string host, port;
    bool ok = false;
    if (!s.empty() && s[0] == '[') {
      size_t close = s.find("]:");
      if (close != std::string::npos) {
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
        in6_addr a6{};
        ok = inet_pton(AF_INET6, host.c_str(), &a6) == 1;
      }
    } else if (size_t colon = s.rfind(':'); colon != std::string::npos) {
      host = s.substr(0, colon);
      port = s.substr(colon + 1);
      in_addr a4{};
      ok = inet_pton(AF_INET, host.c_str(), &a4) == 1;
    }
    if (!ok) {
      fail(path,
           "expected host:port with an IPv4 address or [IPv6 address]:port, got " + describe(node));
    }
    bool digits = !port.empty() && port.size() <= 5 &&
                  port.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || std::stoul(port) > 65535) {
      fail(path, "expected a port from 0 to 65535, got " + describe(node));
    }
    return ListenAddress{host, static_cast<uint16_t>(std::stoul(port))};
  }

  // The files are loaded here too (and thrown away), so `trellisd --check` catches a
  // missing file or a key that does not match its certificate.
  tls::ServerTlsOptions parseTls(const YAML::Node& n, const std::string& path) const {
    checkKeys(n, path,
              {"certificates", "client_auth", "client_ca", "client_crl", "ciphers", "ciphersuites",
               "handshake_timeout_ms", "reload_check_ms"});
    tls::ServerTlsOptions t;
    if (n.IsNull()) fail(path, "expected a map with certificates, got null");
    auto certs = n["certificates"];
    if (!certs) fail(join(path, "certificates"), "required: a list of {cert, key}");
    if (!certs.IsSequence() || certs.size() == 0) {
      fail(join(path, "certificates"),
           "expected a non-empty list of {cert, key}, got " + describe(certs));
    }
    for (size_t i = 0; i < certs.size(); ++i) {
      const std::string ipath = indexed(join(path, "certificates"), i);
      const YAML::Node& c = certs[i];
      checkKeys(c, ipath, {"cert", "key"});
      if (!c.IsMap() || !c["cert"] || !c["key"])
        fail(ipath, "expected {cert: <file>, key: <file>}");
      t.certificates.push_back(
          {readPath(c["cert"], join(ipath, "cert")), readPath(c["key"], join(ipath, "key"))});
    }
    if (auto v = n["client_auth"]) {
      std::string mode = v.IsScalar() ? v.Scalar() : "";
      if (mode == "off") {
        t.client_auth = tls::ClientAuth::kOff;
      } else if (mode == "optional") {
        t.client_auth = tls::ClientAuth::kOptional;
      } else if (mode == "required") {
        t.client_auth = tls::ClientAuth::kRequired;
      } else {
        fail(join(path, "client_auth"), "expected off, optional or required, got " + describe(v));
      }
    }
    if (auto v = n["client_ca"]) t.client_ca = readPath(v, join(path, "client_ca"));
    if (t.client_auth != tls::ClientAuth::kOff && t.client_ca.empty()) {
      fail(join(path, "client_ca"),
           "required when client_auth is " +
               std::string(t.client_auth == tls::ClientAuth::kRequired ? "required" : "optional"));
    }
    if (t.client_auth == tls::ClientAuth::kOff && !t.client_ca.empty()) {
      fail(join(path, "client_ca"), "set, but client_auth is off (set it to optional or required)");
    }
    if (auto v = n["client_crl"]) {
      t.client_crl = readPath(v, join(path, "client_crl"));
      if (t.client_auth == tls::ClientAuth::kOff) {
        fail(join(path, "client_crl"),
             "set, but client_auth is off (set it to optional or required)");
      }
    }
    if (auto v = n["ciphers"]) t.ciphers = readString(v, join(path, "ciphers"));
    if (auto v = n["ciphersuites"]) t.ciphersuites = readString(v, join(path, "ciphersuites"));
    if (auto v = n["handshake_timeout_ms"]) {
      t.handshake_timeout =
          std::chrono::milliseconds(readUInt(v, join(path, "handshake_timeout_ms"), 1, kMaxMillis));
    }
    if (auto v = n["reload_check_ms"]) {
      t.reload_check =
          std::chrono::milliseconds(readUInt(v, join(path, "reload_check_ms"), 0, kMaxMillis));
    }
    // "server.tls" -> "server": the context names its keys from there.
    auto loaded = tls::ServerContext::create(t, path.substr(0, path.rfind('.')));
    if (!loaded) fail("", loaded.status().message());
    return t;
  }

  void parseServer(const YAML::Node& n, const std::string& path, ServerConfig& s) const {
    checkKeys(n, path,
              {"listen", "threads", "max_header_bytes", "max_body_bytes", "read_timeout_ms",
               "idle_timeout_ms", "drain_timeout_ms", "blocking_threads", "blocking_queue",
               "max_connections", "tls", "seal_key_file"});
    if (n.IsNull()) return;
    if (auto v = n["listen"]) s.listen = readListen(v, join(path, "listen"));
    if (auto v = n["tls"]) s.tls = parseTls(v, join(path, "tls"));
    if (auto v = n["threads"]) s.threads = readUInt(v, join(path, "threads"), 0, 4096);
    if (auto v = n["max_header_bytes"]) {
      s.max_header_bytes = readUInt(v, join(path, "max_header_bytes"), 1, kMaxBytesSetting);
    }
    if (auto v = n["max_body_bytes"]) {
      s.max_body_bytes = readUInt(v, join(path, "max_body_bytes"), 1, kMaxBytesSetting);
    }
    auto millis = [&](const char* key, uint64_t min, std::chrono::milliseconds& out) {
      if (auto v = n[key]) {
        out = std::chrono::milliseconds(readUInt(v, join(path, key), min, kMaxMillis));
      }
    };
    millis("read_timeout_ms", 1, s.read_timeout);
    millis("idle_timeout_ms", 1, s.idle_timeout);
    millis("drain_timeout_ms", 0, s.drain_timeout);
    if (auto v = n["blocking_threads"]) {
      s.blocking_threads = readUInt(v, join(path, "blocking_threads"), 1, 4096);
    }
    if (auto v = n["blocking_queue"]) {
      s.blocking_queue = readUInt(v, join(path, "blocking_queue"), 1, 10'000'000);
    }
    if (auto v = n["max_connections"]) {
      s.max_connections = readUInt(v, join(path, "max_connections"), 1, 10'000'000);
    }
    if (auto v = n["seal_key_file"]) s.seal_key_file = readPath(v, join(path, "seal_key_file"));
  }

  void parseStorage(const YAML::Node& n, const std::string& path, Config& cfg) const {
    checkKeys(n, path, {"data_dir", "url", "owner_url", "pool_size"});
    if (n.IsNull()) return;
    if (auto d = n["data_dir"]) cfg.data_dir = readPath(d, join(path, "data_dir"));
    PostgresConfig& pg = cfg.postgres;
    if (auto u = n["url"]) pg.url = readPostgresUrl(u, join(path, "url"));
    if (auto u = n["owner_url"]) {
      pg.owner_url = readPostgresUrl(u, join(path, "owner_url"));
      if (!pg.url)
        fail(join(path, "owner_url"), "needs storage.url (the role trellisd serves with)");
      if (pg.owner_url->user == pg.url->user) {
        fail(join(path, "owner_url"), "uses the same role \"" + pg.url->user +
                                          "\" as storage.url; the role trellisd serves with must "
                                          "not own the tables");
      }
    }
    if (auto v = n["pool_size"]) {
      if (!pg.url) fail(join(path, "pool_size"), "only applies with storage.url (PostgreSQL)");
      pg.pool_size = readUInt(v, join(path, "pool_size"), 1, 1024);
    }
  }

  // Never echoes the value: it may hold a password.
  static tenants::PostgresUrl readPostgresUrl(const YAML::Node& node, const std::string& path) {
    if (!node.IsScalar()) {
      fail(path, "expected postgresql://user:password@host:port/database, got " +
                     std::string(node.IsMap()        ? "a map"
                                 : node.IsSequence() ? "a list"
                                                     : "null"));
    }
    auto url = tenants::parsePostgresUrl(node.Scalar());
    if (!url) fail(path, url.status().message());
    return *url;
  }

  // True if token_file was given.
  bool parseAdmin(const YAML::Node& n, const std::string& path, AdminConfig& a) const {
    checkKeys(n, path, {"listen", "token_file", "tls", "allow_plaintext"});
    if (n.IsNull()) return false;
    if (auto v = n["listen"]) a.listen = readListen(v, join(path, "listen"));
    if (auto v = n["tls"]) a.tls = parseTls(v, join(path, "tls"));
    if (auto v = n["allow_plaintext"]) {
      a.allow_plaintext = readBool(v, join(path, "allow_plaintext"));
    }
    if (!a.tls.enabled() && !a.allow_plaintext && !isLoopback(a.listen.host)) {
      fail(join(path, "listen"),
           a.listen.host +
               " is not a loopback address and admin.tls is not set: admin tokens would cross "
               "the network in clear text. Configure admin.tls, or set admin.allow_plaintext: "
               "true if something else (a TLS proxy, a private link) protects this address");
    }
    if (auto v = n["token_file"]) {
      a.token_file = readPath(v, join(path, "token_file"));
      return true;
    }
    return false;
  }

  void parseLog(const YAML::Node& n, const std::string& path, Config& cfg) const {
    checkKeys(n, path, {"level", "access_log"});
    if (n.IsNull()) return;
    if (auto v = n["level"]) {
      static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error"};
      std::string level = v.IsScalar() ? v.Scalar() : "";
      if (kLevels.count(level) == 0) {
        fail(join(path, "level"),
             "expected one of trace, debug, info, warn, error, got " + describe(v));
      }
      cfg.log_level = level;
    }
    if (auto v = n["access_log"]) {
      std::string target = readString(v, join(path, "access_log"));
      if (target.empty()) fail(join(path, "access_log"), "expected stdout, off or a file path");
      cfg.access_log = target == "stdout" || target == "off" ? target : resolve(target).string();
    }
  }

  void parsePolicy(const YAML::Node& n, const std::string& path, PolicyConfig& p) const {
    checkKeys(n, path,
              {"instructions", "memory_bytes", "wall_time_ms", "fail", "decision_log",
               "decision_log_sample"});
    if (n.IsNull()) return;
    if (auto v = n["instructions"]) {
      p.instructions = readUInt(v, join(path, "instructions"), 100, 1'000'000'000);
    }
    if (auto v = n["memory_bytes"]) {
      p.memory_bytes = readUInt(v, join(path, "memory_bytes"), 256 * 1024, kMaxBytesSetting);
    }
    if (auto v = n["wall_time_ms"]) {
      p.wall_time = std::chrono::milliseconds(readUInt(v, join(path, "wall_time_ms"), 1, 60'000));
    }
    if (auto f = n["fail"]) {
      const std::string fpath = join(path, "fail");
      checkKeys(f, fpath, {"on_request", "on_response", "on_plugin_install"});
      if (!f.IsNull()) {
        for (const auto& kv : f) {
          const std::string key = kv.first.Scalar();
          const std::string mode = kv.second.IsScalar() ? kv.second.Scalar() : "";
          if (mode != "open" && mode != "closed") {
            fail(join(fpath, key), "expected open or closed, got " + describe(kv.second));
          }
          p.fail_open[key] = mode == "open";
        }
      }
    }
    if (auto v = n["decision_log"]) {
      std::string target = readString(v, join(path, "decision_log"));
      if (target.empty()) fail(join(path, "decision_log"), "expected off or a file path");
      p.decision_log = target == "off" ? target : resolve(target).string();
    }
    if (auto v = n["decision_log_sample"]) {
      const std::string where = join(path, "decision_log_sample");
      const std::string s = v.IsScalar() ? v.Scalar() : "";
      char* end = nullptr;
      double d = s.empty() ? -1 : std::strtod(s.c_str(), &end);
      if (s.empty() || !isPlain(v) || end != s.c_str() + s.size() || !(d >= 0 && d <= 1)) {
        fail(where, "expected a number from 0 to 1, got " + describe(v));
      }
      p.decision_log_sample = d;
    }
  }

  void parsePlugins(const YAML::Node& n, const std::string& path, Config& cfg) const {
    checkKeys(n, path, {"dirs", "enabled", "worker"});
    if (n.IsNull()) return;
    if (auto w = n["worker"]) parseWorker(w, join(path, "worker"), cfg.worker);
    if (auto dirs = n["dirs"]) {
      std::string dpath = join(path, "dirs");
      requireList(dirs, dpath);
      for (size_t i = 0; i < dirs.size(); ++i) {
        cfg.plugin_dirs.push_back(readPath(dirs[i], indexed(dpath, i)));
      }
    }
    if (auto enabled = n["enabled"]) {
      std::string epath = join(path, "enabled");
      requireList(enabled, epath);
      std::set<std::string> ids;
      for (size_t i = 0; i < enabled.size(); ++i) {
        const YAML::Node& e = enabled[i];
        std::string ipath = indexed(epath, i);
        if (!e.IsMap()) fail(ipath, "expected a map with id and config, got " + describe(e));
        checkKeys(e, ipath,
                  {"id", "config", "lua", "isolation", "dedicated_tenants", "system", "egress"});
        PluginEntry entry;
        if (!e["id"]) fail(join(ipath, "id"), "required");
        entry.id = readString(e["id"], join(ipath, "id"));
        if (!plugin::isValidPluginId(entry.id)) {
          fail(join(ipath, "id"),
               "expected namespace/name (each [a-z0-9][a-z0-9-]{0,62}), got " + describe(e["id"]));
        }
        if (!ids.insert(entry.id).second) {
          fail(join(ipath, "id"), "duplicate plugin id \"" + entry.id + "\"");
        }
        if (auto c = e["config"]; c && !c.IsNull()) {
          entry.config_json.clear();
          toJson(c, join(ipath, "config"), 0, entry.config_json);
        }
        if (auto l = e["lua"]) parseLuaBudget(l, join(ipath, "lua"), entry.lua);
        if (auto iso = e["isolation"]) {
          std::string v = readString(iso, join(ipath, "isolation"));
          if (v == "process") {
            entry.isolation = Isolation::kProcess;
          } else if (v == "in-process") {
            entry.isolation = Isolation::kInProcess;
          } else {
            fail(join(ipath, "isolation"),
                 "expected \"process\" or \"in-process\", got " + describe(iso));
          }
        }
        if (auto d = e["dedicated_tenants"]) {
          std::string dpath = join(ipath, "dedicated_tenants");
          requireList(d, dpath);
          if (entry.isolation != Isolation::kProcess) {
            fail(dpath, "needs isolation: process on this plugin");
          }
          for (size_t k = 0; k < d.size(); ++k) {
            std::string tenant = readString(d[k], indexed(dpath, k));
            // A typo would silently give nobody a worker of their own.
            if (!tenants::isValidTenantId(tenant)) {
              fail(indexed(dpath, k),
                   "expected a tenant id ([a-z0-9][a-z0-9-]{0,62}), got " + describe(d[k]));
            }
            for (const auto& other : entry.dedicated_tenants) {
              if (other == tenant) fail(indexed(dpath, k), "tenant \"" + tenant + "\" twice");
            }
            entry.dedicated_tenants.push_back(std::move(tenant));
          }
        }
        if (auto sys = e["system"]) entry.system = readBool(sys, join(ipath, "system"));
        if (auto eg = e["egress"]) {
          // Only a system plugin's tenant-less calls read this list; on any other entry it
          // would look like a grant while granting nothing (tenants grant "egress:<rule>").
          const std::string gpath = join(ipath, "egress");
          if (!entry.system) {
            fail(gpath,
                 "needs system: true on this plugin (the list governs a system plugin's "
                 "tenant-less egress; tenants grant egress with \"egress:<rule>\" grants)");
          }
          requireList(eg, gpath);
          entry.egress.emplace();
          for (size_t k = 0; k < eg.size(); ++k) {
            const std::string rpath = indexed(gpath, k);
            std::string text = readString(eg[k], rpath);
            if (auto rule = services::egress::parseRule(text); !rule) {
              fail(rpath, rule.status().message());
            }
            entry.egress->push_back(std::move(text));
          }
        }
        cfg.plugins.push_back(std::move(entry));
      }
    }
  }

  void parseWorker(const YAML::Node& n, const std::string& path, WorkerConfig& w) const {
    checkKeys(n, path,
              {"binary", "channels", "call_timeout_ms", "sandbox", "user", "max_memory_mb",
               "max_files", "max_cpu_seconds", "snapshot_bytes", "snapshot_min_bytes"});
    if (n.IsNull()) return;
    if (auto v = n["binary"]) w.binary = readPath(v, join(path, "binary"));
    if (auto v = n["channels"]) w.channels = readUInt(v, join(path, "channels"), 1, 256);
    if (auto v = n["call_timeout_ms"]) {
      w.call_timeout =
          std::chrono::milliseconds(readUInt(v, join(path, "call_timeout_ms"), 10, 3'600'000));
    }
    if (auto v = n["sandbox"]) {
      std::string s = readString(v, join(path, "sandbox"));
      if (s != "true" && s != "false") {
        fail(join(path, "sandbox"), "expected true or false, got " + describe(v));
      }
      w.sandbox = s == "true";
    }
    if (auto v = n["user"]) {
      w.user = readString(v, join(path, "user"));
      if (w.user.empty() || w.user == "root") {
        fail(join(path, "user"), "expected an unprivileged user name, got " + describe(v));
      }
    }
    if (auto v = n["max_memory_mb"]) {
      w.max_memory_bytes = readUInt(v, join(path, "max_memory_mb"), 16, 1u << 20) << 20;
    }
    if (auto v = n["max_files"]) w.max_files = readUInt(v, join(path, "max_files"), 16, 65536);
    if (auto v = n["max_cpu_seconds"]) {
      w.max_cpu_seconds = readUInt(v, join(path, "max_cpu_seconds"), 0, 1u << 30);
    }
    if (auto v = n["snapshot_bytes"]) {
      w.snapshot_bytes = readUInt(v, join(path, "snapshot_bytes"), 0, 1u << 30);
    }
    if (auto v = n["snapshot_min_bytes"]) {
      w.snapshot_min_bytes = readUInt(v, join(path, "snapshot_min_bytes"), 0, 1u << 30);
    }
  }

  static void parseAudit(const YAML::Node& n, const std::string& path, Config& cfg) {
    checkKeys(n, path, {"sink", "on_sink_failure"});
    if (n.IsNull()) return;
    if (auto v = n["sink"]) {
      cfg.audit.sink = readString(v, join(path, "sink"));
      bool enabled = false;
      for (const auto& p : cfg.plugins) enabled = enabled || p.id == cfg.audit.sink;
      if (!enabled) {
        fail(join(path, "sink"), "plugin \"" + cfg.audit.sink + "\" is not in plugins.enabled");
      }
    }
    if (auto v = n["on_sink_failure"]) {
      std::string mode = readString(v, join(path, "on_sink_failure"));
      if (mode != "block" && mode != "degrade") {
        fail(join(path, "on_sink_failure"), "expected block or degrade, got " + describe(v));
      }
      if (cfg.audit.sink.empty()) {
        fail(join(path, "on_sink_failure"), "only applies with audit.sink");
      }
      cfg.audit.block = mode == "block";
    }
  }

  static void parseLuaBudget(const YAML::Node& n, const std::string& path, LuaBudget& b) {
    checkKeys(n, path, {"instructions", "memory_bytes", "wall_ms", "blocking_wall_ms"});
    if (n.IsNull()) return;
    if (auto v = n["instructions"]) {
      b.instructions = readUInt(v, join(path, "instructions"), 1000, uint64_t{1} << 40);
    }
    if (auto v = n["memory_bytes"]) {
      b.memory_bytes = readUInt(v, join(path, "memory_bytes"), 256 * 1024, kMaxBytesSetting);
    }
    if (auto v = n["wall_ms"]) {
      b.wall = std::chrono::milliseconds(readUInt(v, join(path, "wall_ms"), 1, kMaxMillis));
    }
    if (auto v = n["blocking_wall_ms"]) {
      b.blocking_wall =
          std::chrono::milliseconds(readUInt(v, join(path, "blocking_wall_ms"), 1, kMaxMillis));
    }
  }

  // A trellis.yaml tenant names plugins of plugins.enabled and plans of the file; a state
  // file's may name whatever the server runs (checked there) and adds plugin_config.
  static void parseTenants(const YAML::Node& n, const std::string& path, Config& cfg,
                           bool state_file, bool plans_given = true) {
    if (n.IsNull()) return;
    requireList(n, path);
    std::map<std::string, std::string> key_owner;  // sha256 hex -> tenant id
    for (size_t i = 0; i < n.size(); ++i) {
      const YAML::Node& t = n[i];
      std::string tpath = indexed(path, i);
      if (!t.IsMap()) fail(tpath, "expected a map with id and keys, got " + describe(t));
      std::vector<std::string_view> keys{"id",      "keys",   "plan",  "labels",
                                         "plugins", "grants", "quotas"};
      if (state_file) keys.push_back("plugin_config");
      checkKeys(t, tpath, keys);
      TenantEntry entry;
      if (!t["id"]) fail(join(tpath, "id"), "required");
      entry.id = readString(t["id"], join(tpath, "id"));
      if (!tenants::isValidTenantId(entry.id)) {
        fail(join(tpath, "id"), "expected [a-z0-9][a-z0-9-]{0,62}, got " + describe(t["id"]));
      }
      for (const auto& other : cfg.tenants) {
        if (other.id == entry.id) {
          fail(join(tpath, "id"), "duplicate tenant id \"" + entry.id + "\"");
        }
      }
      if (auto keys = t["keys"]) {
        std::string kpath = join(tpath, "keys");
        if (!keys.IsNull()) requireList(keys, kpath);
        for (size_t k = 0; k < keys.size(); ++k) {
          std::string hex = readTenantKey(keys[k], indexed(kpath, k));
          auto [it, fresh] = key_owner.emplace(hex, entry.id);
          if (!fresh) {
            fail(indexed(kpath, k), "key already used by tenant \"" + it->second + "\"");
          }
          entry.keys.push_back(TenantKey{std::move(hex)});
        }
      }
      if (auto plan = t["plan"]) {
        entry.plan = readString(plan, join(tpath, "plan"));
        bool known = entry.plan == "default" || !plans_given;
        for (const auto& p : cfg.plans) known = known || p.name == entry.plan;
        if (!known) fail(join(tpath, "plan"), "unknown plan \"" + entry.plan + "\"");
      }
      if (auto labels = t["labels"]; labels && !labels.IsNull()) {
        if (!labels.IsMap()) fail(join(tpath, "labels"), "expected a map, got " + describe(labels));
        for (const auto& kv : labels) {
          std::string key = readString(kv.first, join(tpath, "labels"));
          entry.labels[key] = readString(kv.second, join(join(tpath, "labels"), key));
        }
      }
      if (auto plugins = t["plugins"]) {
        std::string ppath = join(tpath, "plugins");
        requireList(plugins, ppath);
        for (size_t k = 0; k < plugins.size(); ++k) {
          std::string id = readString(plugins[k], indexed(ppath, k));
          if (!plugin::isValidPluginId(id)) {
            fail(indexed(ppath, k), "expected namespace/name, got " + describe(plugins[k]));
          }
          bool enabled = state_file;
          for (const auto& p : cfg.plugins) enabled = enabled || p.id == id;
          if (!enabled) {
            fail(indexed(ppath, k), "plugin \"" + id + "\" is not in plugins.enabled");
          }
          entry.plugins.insert(id);
        }
      }
      if (auto grants = t["grants"]) readGrants(grants, join(tpath, "grants"), entry);
      if (auto q = t["quotas"]) entry.quotas = readQuotas(q, join(tpath, "quotas"));
      if (auto c = t["plugin_config"]) readPluginConfig(c, join(tpath, "plugin_config"), entry);
      cfg.tenants.push_back(std::move(entry));
    }
  }

  // grants: {plugin id: [capability, …]}: each plugin enabled for the tenant, each
  // capability one the kernel knows.
  static void readGrants(const YAML::Node& n, const std::string& path, TenantEntry& entry) {
    if (n.IsNull()) return;
    if (!n.IsMap()) fail(path, "expected a map of plugin id to capabilities, got " + describe(n));
    for (const auto& kv : n) {
      std::string plugin = readString(kv.first, path);
      std::string gpath = join(path, plugin);
      if (entry.plugins.count(plugin) == 0) {
        fail(gpath, "plugin \"" + plugin + "\" is not in this tenant's plugins");
      }
      auto& granted = entry.grants[plugin];
      if (kv.second.IsNull()) continue;
      requireList(kv.second, gpath);
      for (size_t k = 0; k < kv.second.size(); ++k) {
        std::string capability = readString(kv.second[k], indexed(gpath, k));
        if (!plugin::isKnownCapability(capability)) {
          fail(indexed(gpath, k), "unknown capability \"" + capability + "\"");
        }
        granted.insert(std::move(capability));
      }
    }
  }

  // plugin_config: {plugin id: {key: value}}: overrides of plugins the tenant enables.
  static void readPluginConfig(const YAML::Node& n, const std::string& path, TenantEntry& entry) {
    if (n.IsNull()) return;
    if (!n.IsMap()) fail(path, "expected a map of plugin id to overrides, got " + describe(n));
    for (const auto& kv : n) {
      std::string plugin = readString(kv.first, path);
      std::string cpath = join(path, plugin);
      if (entry.plugins.count(plugin) == 0) {
        fail(cpath, "plugin \"" + plugin + "\" is not in this tenant's plugins");
      }
      if (!kv.second.IsMap())
        fail(cpath, "expected a map of overrides, got " + describe(kv.second));
      toJson(kv.second, cpath, 0, entry.plugin_config[plugin]);
    }
  }

  // policies: {global: {name, source}, tenants: {id: {name, source}}}; the whole set.
  static std::map<std::string, StatePolicy> parsePolicies(const YAML::Node& n,
                                                          const std::string& path) {
    checkKeys(n, path, {"global", "tenants"});
    std::map<std::string, StatePolicy> out;
    if (n.IsNull()) return out;
    if (auto g = n["global"]; g && !g.IsNull()) out[""] = readPolicy(g, join(path, "global"));
    if (auto t = n["tenants"]; t && !t.IsNull()) {
      std::string tpath = join(path, "tenants");
      if (!t.IsMap()) fail(tpath, "expected a map of tenant id to policy, got " + describe(t));
      for (const auto& kv : t) {
        std::string id = readString(kv.first, tpath);
        if (!tenants::isValidTenantId(id)) {
          fail(join(tpath, id), "expected a tenant id ([a-z0-9][a-z0-9-]{0,62})");
        }
        out[id] = readPolicy(kv.second, join(tpath, id));
      }
    }
    return out;
  }

  static StatePolicy readPolicy(const YAML::Node& n, const std::string& path) {
    if (!n.IsMap()) fail(path, "expected {name, source} (or file: in the CLI), got " + describe(n));
    checkKeys(n, path, {"name", "source"});
    if (!n["name"]) fail(join(path, "name"), "required");
    if (!n["source"]) fail(join(path, "source"), "required");
    return {readString(n["name"], join(path, "name")),
            readString(n["source"], join(path, "source"))};
  }

  static void parsePlans(const YAML::Node& n, const std::string& path, Config& cfg) {
    if (n.IsNull()) return;
    requireList(n, path);
    for (size_t i = 0; i < n.size(); ++i) {
      const YAML::Node& p = n[i];
      std::string ppath = indexed(path, i);
      if (!p.IsMap()) fail(ppath, "expected a map with name and quotas, got " + describe(p));
      checkKeys(p, ppath, {"name", "quotas"});
      if (!p["name"]) fail(join(ppath, "name"), "required");
      tenants::Plan plan;
      plan.name = readString(p["name"], join(ppath, "name"));
      if (!tenants::isValidTenantId(plan.name)) {
        fail(join(ppath, "name"), "expected [a-z0-9][a-z0-9-]{0,62}, got " + describe(p["name"]));
      }
      for (const auto& other : cfg.plans) {
        if (other.name == plan.name)
          fail(join(ppath, "name"), "duplicate plan \"" + plan.name + "\"");
      }
      if (auto q = p["quotas"]) plan.quotas = readQuotas(q, join(ppath, "quotas"));
      cfg.plans.push_back(std::move(plan));
    }
  }

  // Every quota is optional (absent = unlimited) and at least 1.
  static tenants::Quotas readQuotas(const YAML::Node& n, const std::string& path) {
    std::vector<std::string_view> names;
    for (const auto& field : tenants::kQuotaFields) names.emplace_back(field.name);
    checkKeys(n, path, names);
    tenants::Quotas q;
    for (const auto& [name, field] : tenants::kQuotaFields) {
      const std::string key(name);
      if (auto v = n[key]) q.*field = readUInt(v, join(path, key), 1, UINT64_MAX >> 1);
    }
    if (q.burst && q.requests_per_second && *q.burst < *q.requests_per_second) {
      fail(join(path, "burst"),
           "must be at least requests_per_second (" + std::to_string(*q.requests_per_second) + ")");
    }
    return q;
  }

  // {sha256: <64 hex>} or {key: <plaintext>}; returns the lowercase hex digest.
  static std::string readTenantKey(const YAML::Node& n, const std::string& path) {
    if (!n.IsMap()) {
      fail(path, "expected {sha256: <hex>} or {key: <plaintext>}, got " + describe(n));
    }
    checkKeys(n, path, {"sha256", "key"});
    if (n.size() != 1) fail(path, "expected exactly one of sha256 or key");
    if (auto h = n["sha256"]) {
      std::string hex = readString(h, join(path, "sha256"));
      if (hex.size() != 64 ||
          hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
        fail(join(path, "sha256"), "expected 64 hex characters");
      }
      for (char& c : hex) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return hex;
    }
    std::string plain = readString(n["key"], join(path, "key"));
    if (plain.empty()) fail(join(path, "key"), "expected a non-empty key");
    return tenants::sha256Hex(plain);
  }

  static void requireList(const YAML::Node& n, const std::string& path) {
    if (!n.IsSequence() && !n.IsNull()) fail(path, "expected a list, got " + describe(n));
  }

  std::filesystem::path base_;
};

// Records where each document starts; ignores everything else.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// The number of documents in `yaml`. Not YAML::LoadAll: on some malformed input (",`") the
// yaml-cpp parser yields empty documents forever without consuming a byte, and LoadAll never
// returns. A document that starts where the previous one did is that stuck parser.
size_t countDocuments(const std::string& yaml) {
  std::istringstream in(yaml);
  YAML::Parser parser(in);
  DocumentStarts events;
  while (parser.HandleNextDocument(events)) {
    size_t n = events.starts.size();
    if (n >= 2 && events.starts[n - 1].pos == events.starts[n - 2].pos) {
      const YAML::Mark& at = events.starts[n - 1];
      unsigned char c = at.pos >= 0 && static_cast<size_t>(at.pos) < yaml.size()
                            ? static_cast<unsigned char>(yaml[static_cast<size_t>(at.pos)])
                            : 0;
      throw YAML::ParserException(at, c >= 0x21 && c < 0x7f
                                          ? std::string("unexpected '") + char(c) + "'"
                                          : std::string("unexpected character"));
    }
  }
  return events.starts.size();
}

}  // namespace

namespace {

YAML::Node loadOneDocument(const std::string& yaml) {
  try {
    size_t docs = countDocuments(yaml);
    if (docs > 1) throw ConfigError("expected one YAML document, found " + std::to_string(docs));
    return YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw ConfigError("invalid YAML at line " + std::to_string(e.mark.line + 1) + ", column " +
                      std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

}  // namespace

Config Config::parse(const std::string& yaml, const std::filesystem::path& base_dir) {
  YAML::Node doc = loadOneDocument(yaml);
  std::filesystem::path base = std::filesystem::absolute(base_dir).lexically_normal();
  try {
    return Parser(base).parse(doc);
  } catch (const YAML::Exception& e) {
    // Not expected (we never convert with as<>), but never let one escape as another type.
    throw ConfigError(std::string("invalid configuration: ") + e.what());
  }
}

StateFile StateFile::parse(const std::string& yaml) {
  YAML::Node doc = loadOneDocument(yaml);
  try {
    return Parser({}).parseState(doc);
  } catch (const YAML::Exception& e) {
    throw ConfigError(std::string("invalid state: ") + e.what());
  }
}

namespace {

// {file: x.lua} -> {name: x.lua, source: <its text>}; anything else is the parser's to judge.
void inlinePolicyFile(YAML::Node policy, const std::filesystem::path& base,
                      const std::string& path) {
  if (!policy.IsMap() || !policy["file"]) return;
  if (!policy["file"].IsScalar()) fail(join(path, "file"), "expected a path");
  const std::filesystem::path file = (base / policy["file"].Scalar()).lexically_normal();
  // A regular file of policy size only: /dev/zero or a FIFO must not hang the CLI.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    fail(join(path, "file"), "cannot read " + file.string() + ": not a regular file");
  }
  if (std::filesystem::file_size(file, ec) > kMaxPolicyFileBytes) {
    fail(join(path, "file"), file.string() + " is larger than 1 MiB");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(join(path, "file"), "cannot read " + file.string() + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  policy.remove("file");
  if (!policy["name"]) policy["name"] = file.filename().string();
  policy["source"] = text.str();
}

}  // namespace

std::string StateFile::inlinePolicyFiles(const std::string& yaml,
                                         const std::filesystem::path& base_dir) {
  YAML::Node root = loadOneDocument(yaml);
  if (!root.IsMap() || !root["policies"] || !root["policies"].IsMap()) return yaml;
  // A node bound to a name modifies the tree it came from (yaml-cpp nodes are handles).
  YAML::Node policies = root["policies"];
  if (policies["global"]) inlinePolicyFile(policies["global"], base_dir, "policies.global");
  if (YAML::Node tenants = policies["tenants"]; tenants && tenants.IsMap()) {
    for (auto kv : tenants) {
      if (kv.first.IsScalar()) {
        inlinePolicyFile(kv.second, base_dir, join("policies.tenants", kv.first.Scalar()));
      }
    }
  }
  std::string json;  // JSON is YAML: plain scalars stay plain, quoted ones strings
  toJson(root, "", 0, json);
  return json;
}

Config Config::load(const std::filesystem::path& file) {
  std::filesystem::path abs = std::filesystem::absolute(file).lexically_normal();
  std::error_code ec;
  if (std::filesystem::is_directory(abs, ec)) {
    throw ConfigError("cannot read config file " + abs.string() + ": it is a directory");
  }
  std::ifstream in(abs, std::ios::binary);
  if (!in) {
    throw ConfigError("cannot read config file " + abs.string() + ": " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw ConfigError("cannot read config file " + abs.string() + ": " + std::strerror(errno));
  }
  try {
    Config cfg = parse(text.str(), abs.parent_path());
    cfg.file = abs;
    return cfg;
  } catch (const ConfigError& e) {
    throw ConfigError(abs.string() + ": " + e.what());
  }
}

}  // namespace trellis::kernel::config
