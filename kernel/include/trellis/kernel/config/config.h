// trellis.yaml: the operator's configuration. Parsed strictly at start-up: unknown keys,
// wrong types and bad values throw ConfigError naming the key path
// ("server.max_body_bytes: expected a positive integer, got \"big\"").
// Relative paths are resolved against the directory of the config file. Every key is
// optional; the values below are the defaults except where marked "example". An empty
// file (or one holding only comments) means all defaults.
//
//   server:   {listen: "127.0.0.1:8080", threads: 0, max_header_bytes: 16384,
//              max_body_bytes: 1048576, read_timeout_ms: 10000, idle_timeout_ms: 60000,
//              drain_timeout_ms: 10000, blocking_threads: 8, blocking_queue: 1024,
//              max_connections: 10000}
//   server:   {seal_key_file: "/etc/trellis/seal.key"}   # example; default: none. 32 random
//                                                # bytes as 64 hex characters, mode 0600: the
//                                                # root of the seal service (key_wrap), the same
//                                                # file on every host of one database
//   admin:    {listen: "127.0.0.1:8081", token_file: "../var/admin.token",
//              allow_plaintext: false}           # true: plain HTTP on a non-loopback address
//   server:                                      # example: TLS (same keys under admin:)
//     tls:
//       certificates:                            # the first is the default; others by SNI
//         - {cert: "tls/api.pem", key: "tls/api.key"}
//         - {cert: "tls/legacy.pem", key: "tls/legacy.key"}
//       client_auth: off                         # off | optional | required (mTLS)
//       client_ca: "tls/clients-ca.pem"          # needed unless client_auth is off
//       client_crl: "tls/clients-ca.crl"         # optional: PEM CRLs of client_ca's CAs
//       ciphers: "<TLS 1.2 list>"                # default: ECDHE with AEAD only
//       ciphersuites: "<TLS 1.3 list>"           # default: the three AEAD suites
//       handshake_timeout_ms: 10000
//       reload_check_ms: 2000                    # 0: reload on SIGHUP only
//   storage:  {data_dir: "../var/data"}
//   storage:                                     # example: PostgreSQL instead of SQLite
//     url: "postgresql://trellis_app:secret@db.internal:5432/trellis"   # the app role
//     owner_url: "postgresql://trellis_owner:secret@db.internal:5432/trellis"  # optional
//     pool_size: 8                               # sessions per host for plugin storage
//   log:      {level: info, access_log: "stdout" | "off" | <file>}
//   plugins:
//     dirs: ["../build/plugins"]                 # example; default: none
//     enabled:                                   # example; default: none
//       - id: trellis/hello
//         config: {greeting: "Hello"}            # any YAML, handed over as JSON text
//       - id: acme/audit-sink                    # example: a plugin whose manifest asks for
//         system: true                           # "scope": "system" needs this grant
//         egress: ["tls://127.0.0.1:16514"]      # its tenant-less egress (needs system: true)
//       - id: trellis/hello-lua                  # budgets of each call into a Lua plugin
//         lua: {instructions: 10000000, memory_bytes: 33554432, wall_ms: 100,
//               blocking_wall_ms: 1000}          # wall_ms: event-loop routes; blocking_
//                                                # wall_ms: blocking routes, events, init
//   plans:                                       # example; "default" (no limits) is implicit
//     - name: free
//       quotas: {requests_per_second: 10, burst: 20, max_concurrent: 4,
//                max_body_bytes: 65536, max_storage_bytes: 1048576, max_host_calls: 100,
//                max_api_keys: 5, max_key_ttl_seconds: 7776000}
//   tenants:                                     # example; default: none
//     - id: demo
//       plan: free                               # default: "default"
//       labels: {team: payments}
//       plugins: [trellis/hello]                 # routes exist only for these plugins
//       grants: {trellis/hello: [kv]}            # narrow a plugin's capabilities
//       quotas: {max_concurrent: 8}              # overrides on top of the plan
//       keys: [{sha256: "<hex of the key>"}]     # or {key: "<plaintext, dev only>"}
//   policy:                                      # admin Lua policies (docs/policies.md)
//     instructions: 1000000                      # per hook call
//     memory_bytes: 8388608                      # per Lua state
//     wall_time_ms: 50                           # per hook call
//     fail: {on_request: closed, on_response: open, on_plugin_install: closed}
//     decision_log: "off"                        # or a file: JSON lines
//     decision_log_sample: 1.0                   # share of decisions logged (failures: all)
//
// storage.url selects PostgreSQL: tenants, keys and plugin data then live in the shared
// schema `trellis` of that database, so several trellisd can serve the same tenants; the
// role in the URL (the app role) must not own the tables, be a superuser or BYPASSRLS.
// storage.owner_url, the role that owns the schema, is used only at start to create or
// upgrade the tables (row-level security included) and grant the app role access; without
// it, trellisd checks the schema exists at the version it needs and refuses to start
// otherwise. Both are postgresql://user:password@host[:port]/database[?sslmode=...]
// (parameters: sslmode, sslrootcert, sslcert, sslkey, connect_timeout, application_name);
// passwords never appear in logs or error messages. data_dir is then unused for storage.
//
// listen is "a.b.c.d:port" or "[v6 address]:port" (host names are refused: the bind
// address must not depend on DNS). Integers must be unquoted. Plugin config scalars
// become JSON numbers, true/false or null only when written plain (unquoted, untagged)
// and spelled as JSON spells them; anything else becomes a JSON string.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "trellis/kernel/tls/server_options.h"
#include "trellis/tenants/postgres.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::config {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ListenAddress {
  std::string host = "127.0.0.1";  // an IP address; IPv6 without brackets
  uint16_t port = 0;
};

struct ServerConfig {
  ListenAddress listen{"127.0.0.1", 8080};
  unsigned threads = 0;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1024 * 1024;
  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds drain_timeout{10'000};
  size_t blocking_threads = 8;
  size_t blocking_queue = 1024;
  size_t max_connections = 10'000;  // open data-plane connections; further ones are closed
  tls::ServerTlsOptions tls;        // no certificates: plain HTTP
  // The seal service's root key (services/seal/seal_key.h); empty: the service answers
  // UNAVAILABLE. Read and checked when trellisd starts, not here.
  std::filesystem::path seal_key_file;
};

struct AdminConfig {
  ListenAddress listen{"127.0.0.1", 8081};
  std::filesystem::path token_file;  // default: <data_dir>/../admin.token
  tls::ServerTlsOptions tls;
  // Plain HTTP on an address other than loopback sends admin tokens in clear text; refused
  // at start-up unless this says the operator means it.
  bool allow_plaintext = false;
};

// What one call into a Lua plugin may use (ignored for native plugins). Set by the
// operator, never by the plugin's manifest: a plugin cannot raise its own limits.
struct LuaBudget {
  uint64_t instructions = 10'000'000;
  uint64_t memory_bytes = 32 * 1024 * 1024;       // the plugin's whole state per thread
  std::chrono::milliseconds wall{100};            // routes on an event-loop thread
  std::chrono::milliseconds blocking_wall{1000};  // blocking routes, events, init/start/stop
};

// Where a native plugin's code runs (docs/operations.md, "Choosing isolation").
enum class Isolation {
  kDefault,    // third-party plugins installed from a marketplace: kProcess; others in process
  kInProcess,  // dlopen'ed into trellisd
  kProcess,    // in sandboxed trellis-worker processes
};

struct PluginEntry {
  std::string id;
  std::string config_json = "{}";  // the `config:` subtree as JSON; "{}" if absent or null
  LuaBudget lua;
  Isolation isolation = Isolation::kDefault;
  // Tenants that get a worker of their own (isolation: process only); the others share one.
  std::vector<std::string> dedicated_tenants;
  // The operator's grant of system scope (`system: true`). Activates only a plugin whose
  // manifest asks for "scope": "system"; granting it to a tenant-scope plugin is refused.
  bool system = false;
  // The operator's egress rules (`egress: [rule, …]`, services/egress_policy.h) for this
  // system plugin's tenant-less calls (http_send, stream_connect): they play the part of a
  // tenant's "egress:<rule>" grant, narrowing the manifest's rules and alone allowing a
  // loopback or private address they name. Unset: the manifest's rules, public addresses
  // only. Only with `system: true`.
  std::optional<std::vector<std::string>> egress;
};

// plugins.worker: how trellis-worker processes run. Applies to every plugin in a worker.
struct WorkerConfig {
  std::filesystem::path binary;  // default: trellis-worker next to the trellisd executable
  uint64_t channels = 8;         // concurrent calls per worker
  std::chrono::milliseconds call_timeout{5000};
  bool sandbox = true;
  std::string user = "nobody";  // setuid target when trellisd runs as root
  uint64_t max_memory_bytes = 1024ull * 1024 * 1024;
  uint64_t max_files = 64;
  uint64_t max_cpu_seconds = 0;  // 0 = no CPU-time limit
  // Each channel's shared-memory region for request snapshots (0 = none: every request
  // travels in its INVOKE), and the smallest snapshot placed there (smaller ones go inline).
  uint64_t snapshot_bytes = 2ull * 1024 * 1024;
  uint64_t snapshot_min_bytes = 0;
};

struct TenantKey {
  std::string sha256_hex;  // lowercase; plaintext keys are hashed at load
};

struct TenantEntry {
  std::string id;
  std::vector<TenantKey> keys;
  std::string plan = "default";
  std::map<std::string, std::string> labels;
  std::set<std::string> plugins;  // must be in plugins.enabled
  // Per plugin, the capabilities it may use for this tenant (absent: all it requests).
  std::map<std::string, std::set<std::string>> grants;
  tenants::Quotas quotas;  // overrides on top of the plan
  // State files only (StateFile): the tenant's overrides, a JSON object per plugin id.
  std::map<std::string, std::string> plugin_config;
};

// PostgreSQL storage (storage.url and friends); unset url = SQLite under data_dir.
struct PostgresConfig {
  std::optional<tenants::PostgresUrl> url;        // the app role; never log (redacted())
  std::optional<tenants::PostgresUrl> owner_url;  // used at start for migrations only
  size_t pool_size = 8;
};

struct PolicyConfig {
  uint64_t instructions = 1'000'000;
  size_t memory_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds wall_time{50};
  std::map<std::string, bool> fail_open;  // hook name -> true: open, false: closed (as set)
  std::string decision_log = "off";       // "off" or an absolute file path
  double decision_log_sample = 1.0;
};

// Outbound HTTP the kernel makes for plugins (ABI 1.2 egress).
//   egress: {ca_file: /etc/trellis/ca.pem}   # trusted CAs; default: the system store
struct EgressConfig {
  std::filesystem::path ca_file;
};

// The usage stream (docs/admin-guide.md, "Usage retention"). Unacknowledged records are
// kept up to max_bytes and max_age; a warning and the backlog metrics start at
// warn_fraction of either.
//   usage: {max_bytes: 1073741824, max_age_seconds: 604800, warn_percent: 50}
struct UsageConfig {
  uint64_t max_bytes = 1ULL << 30;
  std::chrono::seconds max_age{7 * 24 * 3600};
  double warn_fraction = 0.5;
  size_t queue_records = 100'000;  // in memory, between request threads and the journal
  std::chrono::milliseconds flush_interval{200};  // the most a crash loses
  size_t batch_records = 1000;                    // per journal write and per delivery
  uint64_t max_unacked = 20'000;                  // delivered, not yet acknowledged
  std::chrono::milliseconds redeliver_after{30'000};
  std::chrono::milliseconds retention_check{5'000};
};

// The audit stream (docs/admin-guide.md, "Audit"). `sink` names the system plugin that
// provides the audit.v1 service; with a sink, `block` (the default) refuses an admin action
// whose request record cannot be written (503, nothing changes), `degrade` lets it proceed
// and counts and warns. Without a sink, records go to any active system plugin providing
// audit.v1, as in degrade.
//   audit: {sink: acme/audit, on_sink_failure: block}
struct AuditConfig {
  std::string sink;   // plugin id; "" = none configured
  bool block = true;  // on_sink_failure: block (true) or degrade (false); sink only
};

// Identity providers whose signed tokens (JWT) the data plane accepts as tenant credentials
// (docs/operations.md, "JWT issuers"). Each issuer names its public keys by jwks_uri
// (https, fetched in the background and cached) or jwks_file (read at start; re-read on
// refresh and on an unknown kid).
//   auth:
//     jwt:
//       issuers:
//         - issuer: https://idp.example.com/      # "iss" must equal it exactly
//           audience: trellis                     # "aud" must hold it
//           jwks_uri: https://idp.example.com/.well-known/jwks.json   # or jwks_file: path
//           ca_file: /etc/trellis/idp-ca.pem      # jwks_uri only; default egress.ca_file
//           tenant_claim: tenant                  # default
//           principal_claim: sub                  # default
//           clock_skew_seconds: 60                # default; at most 300
//           jwks_refresh_seconds: 300             # default; 10 .. 86400
//           jwks_min_refetch_seconds: 10          # unknown-kid refetches at most this often
struct JwtIssuerConfig {
  std::string issuer;
  std::string audience;
  std::string jwks_uri;
  std::filesystem::path jwks_file;
  std::filesystem::path ca_file;
  std::string tenant_claim = "tenant";
  std::string principal_claim = "sub";
  std::chrono::seconds clock_skew{60};
  std::chrono::seconds jwks_refresh{300};
  std::chrono::seconds jwks_min_refetch{10};
};

struct AuthConfig {
  std::vector<JwtIssuerConfig> jwt_issuers;
};

struct Config {
  std::filesystem::path file;  // where it was loaded from
  ServerConfig server;
  AdminConfig admin;
  std::filesystem::path data_dir;
  PostgresConfig postgres;
  std::string log_level = "info";
  std::string access_log = "stdout";  // "stdout", "off", or an absolute file path
  std::vector<std::filesystem::path> plugin_dirs;
  std::vector<PluginEntry> plugins;
  WorkerConfig worker;
  std::vector<tenants::Plan> plans;  // "default" (no limits) is implicit
  std::vector<TenantEntry> tenants;
  PolicyConfig policy;
  EgressConfig egress;
  AuditConfig audit;
  UsageConfig usage;
  AuthConfig auth;

  // Throws ConfigError; its message starts with the file's absolute path.
  static Config load(const std::filesystem::path& file);
  // As load() for text; relative paths resolve against `base_dir`. `file` stays empty.
  static Config parse(const std::string& yaml, const std::filesystem::path& base_dir);
};

// A desired state for `trellis config diff|apply FILE` (docs/operations.md, "Declarative
// configuration"): the parts of trellis.yaml that change without a restart, plus what only
// the admin API sets. Parsed as strictly as trellis.yaml, errors naming the key path.
//   plans: [...]                  as in trellis.yaml; the whole set (absent: left alone)
//   tenants:                      as in trellis.yaml, plus each tenant's plugin overrides
//     - {id: acme, plugins: [trellis/hello], plugin_config: {trellis/hello: {greeting: Hi}}}
//   policies:                     the whole set of active policies (absent: left alone)
//     global: {name: base.lua, source: "..."}      # the CLI turns {file: x.lua} into these
//     tenants: {acme: {name: acme.lua, source: "..."}}
struct StatePolicy {
  std::string name;
  std::string source;
  friend bool operator==(const StatePolicy&, const StatePolicy&) = default;
};

struct StateFile {
  std::optional<std::vector<tenants::Plan>> plans;
  std::vector<TenantEntry> tenants;
  std::optional<std::map<std::string, StatePolicy>> policies;  // by tenant id; "" = global

  // Throws ConfigError.
  static StateFile parse(const std::string& yaml);
  // `yaml` with each policy given as {file: path} (relative to `base_dir`) turned into
  // {name: <file name>, source: <its text>}, as parse() takes it (then as JSON). Throws
  // ConfigError naming the policy for a file that cannot be read.
  static std::string inlinePolicyFiles(const std::string& yaml,
                                       const std::filesystem::path& base_dir);
};

}  // namespace trellis::kernel::config
