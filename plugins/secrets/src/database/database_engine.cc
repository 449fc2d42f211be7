#include "database/database_engine.h"

#include <algorithm>
#include <charconv>
#include <memory>

#include "audit/audit.h"
#include "crypto/encoding.h"
#include "database/pg_client.h"
#include "database/records.h"
#include "database/session.h"
#include "database/sql_template.h"

namespace trellis::secrets::database {
namespace {

constexpr uint32_t kPage = 64;

// The entry stored at `key`; NOT_FOUND says `missing`, other failures pass as they are.
Result<KvEntry> storedEntry(const Context& ctx, const std::string& key, std::string missing) {
  auto entry = ctx.kv().get(key);
  if (!entry && entry.status().code() == StatusCode::kNotFound) {
    return Status::notFound(std::move(missing));
  }
  return entry;
}

Result<KvEntry> storedLease(const Context& ctx, std::string_view lease_id) {
  return storedEntry(ctx, std::string(DatabaseEngine::kLeasePrefix) + std::string(lease_id),
                     "no lease \"" + std::string(lease_id) + "\" (revoked or expired?)");
}

const std::vector<std::string>& defaultRevocation() {
  static const std::vector<std::string> v = {
      "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM \"{{name}}\";",
      "REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public FROM \"{{name}}\";",
      "REVOKE USAGE ON SCHEMA public FROM \"{{name}}\";", "DROP ROLE IF EXISTS \"{{name}}\";"};
  return v;
}
const std::vector<std::string>& defaultRenew() {
  static const std::vector<std::string> v = {
      "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"};
  return v;
}

std::string joinStatements(const std::vector<std::string>& statements) {
  std::string sql;
  for (const auto& s : statements) {
    sql += s;
    std::string_view t = s;
    while (!t.empty() && (t.back() == ' ' || t.back() == '\n' || t.back() == '\t'))
      t.remove_suffix(1);
    if (!t.ends_with(';')) sql += ';';
    sql += '\n';
  }
  return sql;
}

// Replaces every occurrence of each secret in `s`'s message: a server error may quote the
// statement it failed on.
Status redact(Status s, std::initializer_list<std::string_view> secrets) {
  if (s) return s;
  std::string m = s.message();
  for (std::string_view secret : secrets) {
    if (secret.size() < 4) continue;
    for (size_t at = m.find(secret); at != std::string::npos; at = m.find(secret, at)) {
      m.replace(at, secret.size(), "[redacted]");
    }
  }
  return Status(s.code(), m);
}

// ---- stored forms ----

bool roleAllowed(const std::vector<std::string>& allowed, std::string_view role) {
  return std::any_of(allowed.begin(), allowed.end(),
                     [&](const std::string& a) { return a == "*" || a == role; });
}

}  // namespace

Status checkName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 128) {
    return Status::invalid("a " + std::string(what) + " name is 1 to 128 characters");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok)
      return Status::invalid("a " + std::string(what) + " name holds only A-Z a-z 0-9 . _ -");
  }
  return Status::ok();
}

Status checkLeasePath(std::string_view what, std::string_view path) {
  if (path.empty() || path.size() > 256)
    return Status::invalid("a " + std::string(what) + " is 1 to 256 characters");
  for (char c : path) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == '/';
    if (!ok) return Status::invalid("a " + std::string(what) + " holds only A-Z a-z 0-9 . _ - /");
  }
  if (path.find("..") != std::string_view::npos) {
    return Status::invalid("a " + std::string(what) + " may not hold \"..\"");
  }
  return Status::ok();
}

Result<ConnectionView> DatabaseEngine::writeConfig(const Context& ctx, ConnectionInput in) const {
  if (Status s = checkName("connection", in.name); !s) return s;
  if (auto t = parseConnectionUrl(in.connection_url); !t) return t.status();
  if (in.username.empty() || in.username.size() > 63 ||
      in.username.find('\0') != std::string::npos) {
    return Status::invalid("\"username\" must be 1 to 63 bytes without NUL");
  }
  if (in.password && (in.password->empty() || in.password->size() > 1024 ||
                      in.password->find('\0') != std::string::npos)) {
    return Status::invalid("\"password\" must be 1 to 1024 bytes without NUL");
  }
  for (const auto& r : in.allowed_roles.value_or(std::vector<std::string>{})) {
    if (r != "*") {
      if (Status s = checkName("role", r); !s) return s;
    }
  }
  auto ring = Keyring::open(ctx, seal_, /*create=*/true);
  if (!ring) return ring.status();
  const std::string key = std::string(kConfigPrefix) + in.name;
  Kv store = ctx.kv();
  auto existing = store.get(key);
  if (!existing && existing.status().code() != StatusCode::kNotFound) return existing.status();
  std::optional<StoredConfig> old;
  if (existing) {
    auto parsed = parseConfig(in.name, existing->value);
    if (!parsed) return parsed.status();
    old = std::move(*parsed);
  }
  SecureBuffer password;
  if (in.password) {
    password = SecureBuffer(*in.password);
    cleanse(*in.password);
  } else if (old) {
    auto plain = envelope::open(*ring, old->password, passwordAad(ctx.tenant(), in.name));
    if (!plain) return Status::internal("the stored connection password does not open");
    password = std::move(*plain);
  } else {
    return Status::invalid("\"password\" is required for a new connection");
  }
  if (in.verify_connection) {
    auto session = Session::open(ctx, in.connection_url, in.username, password.view());
    if (!session) {
      Status s = redact(session.status(), {password.view()});
      return Status(s.code() == StatusCode::kPermissionDenied ? StatusCode::kInvalid : s.code(),
                    "the connection was not saved: " + s.message());
    }
  }
  StoredConfig cfg;
  std::vector<std::string> allowed;
  if (in.allowed_roles) {
    allowed = std::move(*in.allowed_roles);
  } else if (old) {
    allowed = old->view.allowed_roles;
  }
  cfg.view = {in.name, in.connection_url, in.username, std::move(allowed), ctx.nowUnixMs()};
  if (Status s = kek_uses_.take(ctx, seal_, *ring); !s) return s;
  auto env = envelope::seal(*ring, password.view(), passwordAad(ctx.tenant(), in.name));
  if (!env) return env.status();
  cfg.password = std::move(*env);
  auto put = store.put(key, serialize(cfg), existing ? existing->version : Kv::kAbsent);
  if (!put) {
    if (put.status().code() == StatusCode::kConflict) {
      return Status::conflict("the connection changed meanwhile; retry");
    }
    return put.status();
  }
  return cfg.view;
}

Result<ConnectionView> DatabaseEngine::readConfig(const Context& ctx, std::string_view name) const {
  if (Status s = checkName("connection", name); !s) return s;
  auto entry = storedEntry(ctx, std::string(kConfigPrefix) + std::string(name),
                           "no database connection \"" + std::string(name) + "\"");
  if (!entry) return entry.status();
  auto cfg = parseConfig(name, entry->value);
  if (!cfg) return cfg.status();
  return cfg->view;
}

Status DatabaseEngine::deleteConfig(const Context& ctx, std::string_view name) const {
  if (Status s = checkName("connection", name); !s) return s;
  // Its leases could not be revoked any more: their roles would outlive them.
  uint64_t live = 0;
  std::string after;
  while (true) {
    size_t visited = 0;
    Status listed = ctx.kv().list(kLeasePrefix, after, 256,
                                  [&](std::string_view k, std::string_view v, uint64_t) {
                                    after = std::string(k);
                                    ++visited;
                                    auto l = parseLease(k.substr(kLeasePrefix.size()), v);
                                    if (l && l->db_name == name) ++live;
                                    return true;
                                  });
    if (!listed) return listed;
    if (visited < 256) break;
  }
  if (live > 0) {
    return Status::conflict("the connection \"" + std::string(name) + "\" has " +
                            std::to_string(live) +
                            " leases; revoke them first (sys/leases/revoke-prefix/database/creds/"
                            "<role>)");
  }
  Status s = ctx.kv().remove(std::string(kConfigPrefix) + std::string(name));
  return s.code() == StatusCode::kNotFound ? Status::ok() : s;
}

Result<std::vector<std::string>> DatabaseEngine::list(const Context& ctx,
                                                      std::string_view prefix) const {
  std::vector<std::string> names;
  std::string after;
  while (true) {
    size_t got = 0;
    Status s =
        ctx.kv().list(prefix, after, 256, [&](std::string_view k, std::string_view, uint64_t) {
          names.emplace_back(k.substr(prefix.size()));
          after = std::string(k);
          ++got;
          return true;
        });
    if (!s) return s;
    if (got < 256) return names;
  }
}

Status DatabaseEngine::writeRole(const Context& ctx, const RoleConfig& role) const {
  if (Status s = checkName("role", role.name); !s) return s;
  if (Status s = checkName("connection", role.db_name); !s) return s;
  if (role.creation_statements.empty()) {
    return Status::invalid("\"creation_statements\" must hold at least one statement");
  }
  // Each template must fill: an unknown placeholder is refused now, not at issue time.
  for (const auto* list :
       {&role.creation_statements, &role.revocation_statements, &role.renew_statements}) {
    for (const auto& s : *list) {
      if (s.size() > 16 * 1024) return Status::invalid("a statement is longer than 16384 bytes");
      auto filled = fillTemplate(s, {"n", "p", "e"});
      if (!filled) return filled.status();
    }
  }
  if (role.default_ttl_s == 0 || role.max_ttl_s == 0 || role.default_ttl_s > role.max_ttl_s ||
      role.max_ttl_s > kMaxTtlS) {
    return Status::invalid(
        "\"default_ttl\" and \"max_ttl\" must be from 1 s to 365 days, with "
        "default_ttl at most max_ttl");
  }
  if (seal_.status().sealed) return Status::unavailable(std::string(kSealedMessage));
  auto put = ctx.kv().put(std::string(kRolePrefix) + role.name, serialize(role));
  return put ? Status::ok() : put.status();
}

Result<RoleConfig> DatabaseEngine::readRole(const Context& ctx, std::string_view name) const {
  if (Status s = checkName("role", name); !s) return s;
  auto entry = storedEntry(ctx, std::string(kRolePrefix) + std::string(name),
                           "no database role \"" + std::string(name) + "\"");
  if (!entry) return entry.status();
  return parseRole(name, entry->value);
}

Status DatabaseEngine::deleteRole(const Context& ctx, std::string_view name) const {
  if (Status s = checkName("role", name); !s) return s;
  Status s = ctx.kv().remove(std::string(kRolePrefix) + std::string(name));
  return s.code() == StatusCode::kNotFound ? Status::ok() : s;
}

Result<Issued> DatabaseEngine::issue(const Context& ctx, std::string_view role_name) const {
  auto role = readRole(ctx, role_name);
  if (!role) return role.status();
  auto cfg = readConfig(ctx, role->db_name);
  if (!cfg) return cfg.status();
  if (!roleAllowed(cfg->allowed_roles, role_name)) {
    return Status::permissionDenied("the connection \"" + role->db_name +
                                    "\" does not allow the role \"" + std::string(role_name) +
                                    "\" (see its allowed_roles)");
  }
  const uint64_t now = ctx.nowUnixMs();
  Issued out;
  Lease& l = out.lease;
  l.id = "database/creds/" + std::string(role_name) + "/" + toHex(randomBytes(12).view());
  l.role = std::string(role_name);
  l.db_name = role->db_name;
  l.username = generateUsername(ctx.tenant(), role_name);
  l.issued_ms = now;
  l.expire_ms = now + role->default_ttl_s * 1000;
  l.max_expire_ms = now + role->max_ttl_s * 1000;
  l.default_ttl_s = role->default_ttl_s;
  l.revocation_statements = role->revocation_statements;
  l.renew_statements = role->renew_statements;
  out.password = generatePassword();
  auto sql = fillTemplate(joinStatements(role->creation_statements),
                          {l.username, out.password, pgTimestamp(l.expire_ms)});
  if (!sql) return sql.status();

  auto session = openStored(ctx, seal_, role->db_name);
  if (!session) return session.status();
  // The lease first: if the process dies after the role exists, the sweeper drops it.
  const std::string key = std::string(kLeasePrefix) + l.id;
  auto put = ctx.kv().put(key, serialize(l), Kv::kAbsent);
  if (!put) return put.status();
  // No sweeper, no credentials: a role nobody drops at expiry would outlive its lease.
  if (Status s = scheduleSweep(ctx, l.expire_ms); !s) {
    (void)ctx.kv().remove(key, *put);
    cleanse(out.password);
    return Status(s.code(), "the lease sweeper could not be scheduled: " + s.message());
  }
  auto created = (*session)->exec(*sql);
  cleanse(*sql);
  if (!created) {
    Status s = redact(created.status(), {out.password});
    // A server error rolled the statements back: nothing exists, so the lease goes too.
    // Anything else (the connection broke) may have left the role: the lease stays for the
    // sweeper.
    if (s.code() == StatusCode::kInvalid || s.code() == StatusCode::kPermissionDenied) {
      (void)ctx.kv().remove(key, *put);
      cleanse(out.password);
      return Status::invalid("the role's creation_statements failed: " + s.message());
    }
    cleanse(out.password);
    return Status::unavailable("creating the credentials failed: " + s.message());
  }
  return out;
}

Result<Lease> DatabaseEngine::lookup(const Context& ctx, std::string_view lease_id) const {
  if (Status s = checkLeasePath("lease id", lease_id); !s) return s;
  auto entry = storedLease(ctx, lease_id);
  if (!entry) return entry.status();
  return parseLease(lease_id, entry->value);
}

Result<Lease> DatabaseEngine::renew(const Context& ctx, std::string_view lease_id,
                                    uint64_t increment_s) const {
  if (Status s = checkLeasePath("lease id", lease_id); !s) return s;
  if (increment_s > kMaxTtlS) return Status::invalid("\"increment\" is at most 365 days");
  const std::string key = std::string(kLeasePrefix) + std::string(lease_id);
  auto entry = storedLease(ctx, lease_id);
  if (!entry) return entry.status();
  auto lease = parseLease(lease_id, entry->value);
  if (!lease) return lease.status();
  const uint64_t now = ctx.nowUnixMs();
  if (lease->expire_ms <= now) {
    return Status::invalid("the lease expired; it cannot be renewed: ask for new credentials");
  }
  const uint64_t ttl = increment_s ? increment_s : lease->default_ttl_s;
  const uint64_t until = std::min(now + ttl * 1000, lease->max_expire_ms);
  auto session = openStored(ctx, seal_, lease->db_name);
  if (!session) return session.status();
  const auto& statements =
      lease->renew_statements.empty() ? defaultRenew() : lease->renew_statements;
  auto sql = fillTemplate(joinStatements(statements), {lease->username, "", pgTimestamp(until)});
  if (!sql) return sql.status();
  auto done = (*session)->exec(*sql);
  if (!done) return Status(done.status().code(), "renewing failed: " + done.status().message());
  lease->expire_ms = until;
  auto put = ctx.kv().put(key, serialize(*lease), entry->version);
  if (!put) {
    if (put.status().code() == StatusCode::kConflict) {
      return Status::conflict("the lease changed meanwhile; retry");
    }
    return put.status();
  }
  return *lease;
}

Status DatabaseEngine::revokeLease(const Context& ctx, const Lease& lease, uint64_t version) const {
  auto session = openStored(ctx, seal_, lease.db_name);
  if (!session) return session.status();
  auto exists = (*session)->exec("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '" + [&] {
    std::string q;
    for (char c : lease.username) {
      q.push_back(c);
      if (c == '\'') q.push_back(c);
    }
    return q;
  }() + "'");
  if (!exists) return exists.status();
  if (!exists->rows.empty()) {
    const auto& statements =
        lease.revocation_statements.empty() ? defaultRevocation() : lease.revocation_statements;
    auto sql = fillTemplate(joinStatements(statements), {lease.username, "", ""});
    if (!sql) return sql.status();
    auto done = (*session)->exec(*sql);
    if (!done) return Status(done.status().code(), "revoking failed: " + done.status().message());
  }
  Status removed = ctx.kv().remove(std::string(kLeasePrefix) + lease.id, version);
  if (removed.code() == StatusCode::kNotFound) return Status::ok();
  return removed;
}

Status DatabaseEngine::revoke(const Context& ctx, std::string_view lease_id) const {
  if (Status s = checkLeasePath("lease id", lease_id); !s) return s;
  auto entry = storedLease(ctx, lease_id);
  if (!entry) return entry.status();
  auto lease = parseLease(lease_id, entry->value);
  if (!lease) return lease.status();
  return revokeLease(ctx, *lease, entry->version);
}

Result<uint64_t> DatabaseEngine::revokePrefix(const Context& ctx, std::string_view prefix) const {
  if (Status s = checkLeasePath("lease prefix", prefix); !s) return s;
  std::string full = std::string(kLeasePrefix) + std::string(prefix);
  if (!full.ends_with('/')) full += '/';
  uint64_t count = 0;
  while (true) {
    std::vector<std::pair<Lease, uint64_t>> page;
    Status listed = Status::ok();
    Status s = ctx.kv().list(full, "", kPage,
                             [&](std::string_view k, std::string_view v, uint64_t version) {
                               auto l = parseLease(k.substr(kLeasePrefix.size()), v);
                               if (!l) {
                                 listed = l.status();
                                 return false;
                               }
                               page.emplace_back(std::move(*l), version);
                               return true;
                             });
    if (!s) return s;
    if (!listed) return listed;
    for (const auto& [lease, version] : page) {
      if (Status r = revokeLease(ctx, lease, version); !r) {
        return Status(r.code(), "revoked " + std::to_string(count) + " leases, then " + lease.id +
                                    ": " + r.message());
      }
      auditOperation(ctx, seal_, "secret.lease.revoke", "lease", lease.id);
      ++count;
    }
    if (page.size() < kPage) return count;
  }
}

Result<uint64_t> DatabaseEngine::rewrapOlder(const Context& ctx, std::string_view storage_key,
                                             Keyring& ring) const {
  const std::string_view name = storage_key.substr(kConfigPrefix.size());
  Kv store = ctx.kv();
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto entry = store.get(storage_key);
    if (!entry)
      return entry.status().code() == StatusCode::kNotFound ? Result<uint64_t>(0) : entry.status();
    auto cfg = parseConfig(name, entry->value);
    if (!cfg) return cfg.status();
    if (cfg->password.kek_version >= ring.current().version) return 0;
    if (Status s = kek_uses_.take(ctx, seal_, ring); !s) return s;
    auto again = envelope::rewrap(ring, cfg->password, passwordAad(ctx.tenant(), name));
    if (!again) return again.status();
    cfg->password = std::move(*again);
    auto put = store.put(storage_key, serialize(*cfg), entry->version);
    if (put) return 1;
    if (put.status().code() != StatusCode::kConflict) return put.status();
  }
  return Status::unavailable("the connection changed concurrently too often; retry");
}

}  // namespace trellis::secrets::database