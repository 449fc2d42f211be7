// Dynamic PostgreSQL credentials, after Vault's database secrets engine. A tenant stores a
// connection (its password envelope-encrypted under the tenant's KEK, never shown again)
// and roles (SQL templates and TTLs); reading a role's credentials creates a real
// PostgreSQL role with VALID UNTIL and records a lease, which can be renewed (up to the
// role's max_ttl), revoked, or revoked by prefix. The lease sweeper (a durable job) drops
// expired roles. The plugin reaches PostgreSQL only through the SDK's egress streams.
//
// Storage (the tenant's KV): "database/config/<name>", "database/roles/<name>",
// "sys/leases/<lease id>" with lease ids "database/creds/<role>/<random>", and
// "sys/lease-sweep" (when the sweeper runs next).
//
//   DatabaseEngine db(seal, kek_uses);
//   db.writeConfig(ctx, "main", {...});
//   db.writeRole(ctx, {...});
//   auto creds = db.issue(ctx, "app");   // username, password, lease
//   db.revoke(ctx, creds->lease.id);
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keys/envelope.h"
#include "keys/keyring.h"
#include "seal/seal.h"
#include "trellis/plugin.hpp"

namespace trellis::secrets::database {

inline constexpr uint64_t kDefaultTtlS = 3600;
inline constexpr uint64_t kDefaultMaxTtlS = 86400;
inline constexpr uint64_t kMaxTtlS = 365ULL * 86400;

struct ConnectionInput {
  std::string name;
  std::string connection_url;  // tcp://host:port/database or tls://host:port/database
  std::string username;
  std::optional<std::string> password;  // absent on an update: keep the stored one
  std::optional<std::vector<std::string>> allowed_roles;  // likewise; none on a new one
  bool verify_connection = true;
};

// A stored connection as shown: no password.
struct ConnectionView {
  std::string name;
  std::string connection_url;
  std::string username;
  std::vector<std::string> allowed_roles;
  uint64_t updated_ms = 0;
};

struct RoleConfig {
  std::string name;
  std::string db_name;
  std::vector<std::string> creation_statements;
  std::vector<std::string> revocation_statements;  // empty: the default
  std::vector<std::string> renew_statements;       // empty: the default
  uint64_t default_ttl_s = kDefaultTtlS;
  uint64_t max_ttl_s = kDefaultMaxTtlS;
};

struct Lease {
  std::string id;
  std::string role;
  std::string db_name;
  std::string username;
  uint64_t issued_ms = 0;
  uint64_t expire_ms = 0;
  uint64_t max_expire_ms = 0;
  uint64_t default_ttl_s = 0;
  std::vector<std::string> revocation_statements;
  std::vector<std::string> renew_statements;
};

struct Issued {
  Lease lease;
  std::string password;  // shown once; wipe after answering
};

class DatabaseEngine {
 public:
  static constexpr std::string_view kSweepJob = "database-lease-sweep";
  static constexpr std::string_view kConfigPrefix = "database/config/";
  static constexpr std::string_view kRolePrefix = "database/roles/";
  static constexpr std::string_view kLeasePrefix = "sys/leases/";

  DatabaseEngine(const Seal& seal, KekUses& kek_uses) : seal_(seal), kek_uses_(kek_uses) {}

  // Verifies the connection (logs in) unless told not to, then stores it; nothing is
  // stored when the check fails. INVALID names what was wrong.
  Result<ConnectionView> writeConfig(const Context& ctx, ConnectionInput in) const;
  Result<ConnectionView> readConfig(const Context& ctx, std::string_view name) const;
  Status deleteConfig(const Context& ctx, std::string_view name) const;
  Result<std::vector<std::string>> list(const Context& ctx, std::string_view prefix) const;

  Status writeRole(const Context& ctx, const RoleConfig& role) const;
  Result<RoleConfig> readRole(const Context& ctx, std::string_view name) const;
  Status deleteRole(const Context& ctx, std::string_view name) const;

  // Creates the role in the database and records its lease; the lease is recorded first,
  // so a crash between the two leaves a lease the sweeper cleans up, never a lost role.
  Result<Issued> issue(const Context& ctx, std::string_view role) const;
  // `increment_s` 0: the role's default_ttl. Never past issued + max_ttl.
  Result<Lease> renew(const Context& ctx, std::string_view lease_id, uint64_t increment_s) const;
  Status revoke(const Context& ctx, std::string_view lease_id) const;
  // How many leases were revoked; stops at the first failure (what was revoked stays so).
  // The prefix is a path: "database/creds/a" is read as "database/creds/a/", as Vault does,
  // so it never reaches the leases of a role "ab".
  Result<uint64_t> revokePrefix(const Context& ctx, std::string_view prefix) const;
  Result<Lease> lookup(const Context& ctx, std::string_view lease_id) const;

  // One run of the sweeper: revokes expired leases (a page at a time) and schedules the
  // next run at the earliest expiry left. Idempotent: a run cut short runs again.
  Status sweep(const Context& ctx) const;

  // Re-wraps the connection password stored at `storage_key` (under kConfigPrefix) if an
  // older KEK than `ring`'s current wrapped it; 1 if it did, 0 otherwise.
  Result<uint64_t> rewrapOlder(const Context& ctx, std::string_view storage_key,
                               Keyring& ring) const;

  void setExpiredMetric(trellis_metric_id id) { expired_metric_ = id; }

 private:
  Status revokeLease(const Context& ctx, const Lease& lease, uint64_t version) const;
  Status scheduleSweep(const Context& ctx, uint64_t at_ms) const;

  const Seal& seal_;
  KekUses& kek_uses_;
  trellis_metric_id expired_metric_ = 0;
};

// Names of connections and roles: 1..128 bytes of [A-Za-z0-9._-].
Status checkName(std::string_view what, std::string_view name);
// A lease id or prefix: 1..256 bytes of [A-Za-z0-9._/-], no "..".
Status checkLeasePath(std::string_view what, std::string_view path);

}  // namespace trellis::secrets::database
