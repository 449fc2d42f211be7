// The tenant registry over the system database. Validation, snapshots, key resolution and
// drift reports live here; every SQL statement lives in SystemDb (system_db.cc).
//
// Each mutation takes `mu_`, runs in one write transaction, re-reads the registry inside
// that transaction, builds a new immutable Snapshot from it, commits, and only then
// publishes the snapshot. A failed mutation therefore changes neither the database nor
// what readers see. Readers (resolve, view, get, list, plans, listKeys) only load the
// published snapshot. Rebuilding costs O(tenants + keys) per mutation, which suits
// admin-rate changes; the hot path pays nothing for it.
#include "trellis/tenants/registry.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "system_db.h"
#include "trellis/tenants/identity.h"

namespace trellis::tenants {
namespace {

using internal::StoredCert;
using internal::StoredKey;
using internal::StoredState;
using internal::SystemDb;

constexpr std::string_view kDefaultPlan = "default";
constexpr std::string_view kKeyPrefix = "trk_";
constexpr size_t kKeyIdHexChars = 8;
constexpr size_t kSecretBytes = 32;
constexpr std::string_view kImportedKeyPrefix = "cfg";
// Longer than any key we issue or a sane operator would declare; hashing megabytes per
// request would be a cheap way to burn CPU.
constexpr size_t kMaxPresentedKeyBytes = 1024;
constexpr size_t kMaxLabels = 64;
constexpr size_t kMaxLabelValueBytes = 256;
constexpr size_t kMaxPlugins = 256;
constexpr int64_t kMaxTtlSeconds = int64_t{100} * 365 * 24 * 3600;
// Quotas are stored as signed 64-bit integers (BIGINT) in every SQL database.
constexpr uint64_t kMaxQuotaValue = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string inQuotes(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

// ---- validation -------------------------------------------------------------------------

constexpr std::string_view kNamePattern = "[a-z0-9][a-z0-9-]{0,62}";

bool isValidLabelKey(std::string_view key) {
  if (key.empty() || key.size() > 63) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
  });
}

bool isValidPluginId(std::string_view id) {
  size_t slash = id.find('/');
  if (slash == std::string_view::npos) return false;
  return isValidTenantId(id.substr(0, slash)) && isValidTenantId(id.substr(slash + 1));
}

// Capability names are the kernel's business; the registry only keeps them well formed.
// A name, or "name:argument" ("service:secrets", "egress:https://api.example.com"): the
// kernel checks what an argument means; here it only must survive the system database's
// comma-separated column (no commas, no whitespace or controls, at most 512 bytes).
bool isValidCapabilityName(std::string_view c) {
  const size_t colon = c.find(':');
  std::string_view name = c.substr(0, colon);
  if (name.empty() || name.size() > 32 || name[0] < 'a' || name[0] > 'z') return false;
  if (!std::all_of(name.begin(), name.end(),
                   [](char ch) { return (ch >= 'a' && ch <= 'z') || ch == '.'; })) {
    return false;
  }
  if (colon == std::string_view::npos) return true;
  std::string_view arg = c.substr(colon + 1);
  return !arg.empty() && arg.size() <= 512 && std::all_of(arg.begin(), arg.end(), [](char ch) {
    return ch > 0x20 && ch < 0x7f && ch != ',';
  });
}

// `where` names the owner in messages: `plan "free"`, `tenant "acme" overrides`.
Status validateQuotas(const Quotas& q, const std::string& where) {
  for (const auto& f : kQuotaFields) {
    const auto& v = q.*f.member;
    if (!v) continue;
    // 0 would read as "nothing allowed" to some and "unlimited" to others; unset is
    // unlimited, and a tenant that must get nothing is suspended instead.
    if (*v == 0) {
      return Status::invalid(where + ": " + f.name + " must be at least 1 (leave it unset for " +
                             "no limit)");
    }
    if (*v > kMaxQuotaValue) {
      return Status::invalid(where + ": " + f.name + " must be at most " +
                             std::to_string(kMaxQuotaValue));
    }
  }
  if (q.requests_per_second && q.burst && *q.burst < *q.requests_per_second) {
    return Status::invalid(where + ": burst (" + std::to_string(*q.burst) +
                           ") must be at least requests_per_second (" +
                           std::to_string(*q.requests_per_second) + ")");
  }
  return Status::ok();
}

Status validatePlan(const Plan& p) {
  if (!isValidTenantId(p.name)) {
    return Status::invalid("plan name " + inQuotes(p.name) + " is invalid: expected " +
                           std::string(kNamePattern));
  }
  return validateQuotas(p.quotas, "plan " + inQuotes(p.name));
}

// Everything checkable without the database: id, labels, plugins, overrides, source.
Status validateRecordShape(const TenantRecord& t) {
  if (!isValidTenantId(t.id)) {
    return Status::invalid("tenant id " + inQuotes(t.id) + " is invalid: expected " +
                           std::string(kNamePattern));
  }
  const std::string who = "tenant " + inQuotes(t.id);
  if (!isValidTenantId(t.plan)) {
    return Status::invalid(who + ": plan name " + inQuotes(t.plan) + " is invalid: expected " +
                           std::string(kNamePattern));
  }
  if (t.labels.size() > kMaxLabels) {
    return Status::invalid(who + ": " + std::to_string(t.labels.size()) + " labels; the limit is " +
                           std::to_string(kMaxLabels));
  }
  for (const auto& [key, value] : t.labels) {
    if (!isValidLabelKey(key)) {
      return Status::invalid(who + ": label key " + inQuotes(key) +
                             " is invalid: expected [a-z0-9_.-]{1,63}");
    }
    if (value.size() > kMaxLabelValueBytes) {
      return Status::invalid(who + ": label " + inQuotes(key) + " value is " +
                             std::to_string(value.size()) + " bytes; the limit is " +
                             std::to_string(kMaxLabelValueBytes));
    }
    // Labels end up in logs, metrics and problem details: no control characters.
    if (std::any_of(value.begin(), value.end(), [](char c) {
          auto u = static_cast<unsigned char>(c);
          return u < 0x20 || u == 0x7f;
        })) {
      return Status::invalid(who + ": label " + inQuotes(key) +
                             " value contains control characters");
    }
  }
  if (t.plugins.size() > kMaxPlugins) {
    return Status::invalid(who + ": " + std::to_string(t.plugins.size()) +
                           " plugins; the limit is " + std::to_string(kMaxPlugins));
  }
  for (const auto& plugin : t.plugins) {
    if (!isValidPluginId(plugin)) {
      return Status::invalid(who + ": plugin id " + inQuotes(plugin) +
                             " is invalid: expected \"namespace/name\", each part " +
                             std::string(kNamePattern));
    }
  }
  for (const auto& [plugin, capabilities] : t.grants) {
    if (t.plugins.count(plugin) == 0) {
      return Status::invalid(who + ": grants for plugin " + inQuotes(plugin) +
                             ", which the tenant has not enabled");
    }
    for (const auto& capability : capabilities) {
      if (!isValidCapabilityName(capability)) {
        return Status::invalid(who + ": capability " + inQuotes(capability) + " for plugin " +
                               inQuotes(plugin) +
                               " is invalid: expected [a-z][a-z.]{0,31}[:<argument>]");
      }
    }
  }
  if (t.source != "api" && t.source != "config") {
    return Status::invalid(who + ": source " + inQuotes(t.source) +
                           " is invalid: expected \"api\" or \"config\"");
  }
  return validateQuotas(t.overrides, who + " overrides");
}

// The record's plan must exist, and the plan overlaid with the overrides must still be a
// valid quota set (an override rate above the plan's burst would be unusable).
Status validateAgainstPlan(SystemDb& db, const TenantRecord& t) {
  auto plan = db.plan(t.plan);
  if (!plan) {
    return Status::invalid("tenant " + inQuotes(t.id) + ": plan " + inQuotes(t.plan) +
                           " is not defined");
  }
  return validateQuotas(
      plan->quotas.overlaidWith(t.overrides),
      "tenant " + inQuotes(t.id) + " (plan " + inQuotes(t.plan) + " with overrides)");
}

// ---- keys -------------------------------------------------------------------------------

std::string hexOf(const unsigned char* data, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 0x0f]);
  }
  return out;
}

// Unpadded base64url (RFC 4648 section 5): 32 bytes -> 43 characters.
std::string base64Url(const unsigned char* data, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((n * 4 + 2) / 3);
  for (size_t i = 0; i < n; i += 3) {
    uint32_t chunk = uint32_t{data[i]} << 16;
    if (i + 1 < n) chunk |= uint32_t{data[i + 1]} << 8;
    if (i + 2 < n) chunk |= data[i + 2];
    size_t chars = std::min<size_t>(4, (n - i) * 4 / 3 + ((n - i) < 3 ? 1 : 0));
    for (size_t c = 0; c < chars; ++c) out.push_back(kAlphabet[(chunk >> (18 - 6 * c)) & 0x3f]);
  }
  return out;
}

// ---- snapshot ---------------------------------------------------------------------------

struct KeyEntry {
  const TenantView* tenant;  // owned by the same Snapshot
  std::string id;
  int64_t expires_at_ms;  // INT64_MAX: never
  bool revoked;
};

// The digest is uniformly distributed; its first bytes are already a good hash.
struct DigestHash {
  size_t operator()(const Sha256Digest& d) const {
    size_t h = 0;
    std::memcpy(&h, d.data(), sizeof h);
    return h;
  }
};

struct CertEntry {
  const TenantView* tenant;  // owned by the same Snapshot
  std::string principal;     // "cert:<id>"
  int64_t expires_at_ms;     // INT64_MAX: never
  bool revoked;
};

struct Snapshot {
  std::vector<Plan> plans;                                                      // by name
  std::map<std::string, TenantRecord, std::less<>> records;                     // by id
  std::map<std::string, std::shared_ptr<const TenantView>, std::less<>> views;  // by id
  std::map<std::string, std::vector<KeyInfo>, std::less<>> keys_by_tenant;      // by created, id
  std::unordered_map<Sha256Digest, KeyEntry, DigestHash> by_digest;
  std::map<std::string, std::vector<CertCredential>, std::less<>> certs_by_tenant;  // by created
  // By selector lookup digest: the unrevoked credential if there is one, else a revoked one.
  std::unordered_map<Sha256Digest, CertEntry, DigestHash> certs_by_lookup;
};

// INVALID if a tenant's plan overlaid with its overrides breaks the quota rules (a plan
// redefinition can do that); a row the registry could not have written throws.
Result<std::shared_ptr<const Snapshot>> buildSnapshot(StoredState state) {
  auto snap = std::make_shared<Snapshot>();
  std::map<std::string, const Plan*, std::less<>> plans;
  for (const auto& p : state.plans) plans.emplace(p.name, &p);
  for (auto& t : state.tenants) {
    auto plan = plans.find(t.plan);
    if (plan == plans.end()) throw std::runtime_error("tenant " + inQuotes(t.id) + " has no plan");
    auto view = std::make_shared<TenantView>();
    view->id = t.id;
    view->plan = t.plan;
    view->labels = t.labels;
    view->plugins.insert(t.plugins.begin(), t.plugins.end());
    for (const auto& [plugin, capabilities] : t.grants) {
      view->grants[plugin].insert(capabilities.begin(), capabilities.end());
    }
    view->quotas = plan->second->quotas.overlaidWith(t.overrides);
    view->status = t.status;
    if (auto s = validateQuotas(view->quotas, "tenant " + inQuotes(t.id) + " (plan " +
                                                  inQuotes(t.plan) + " with overrides)");
        !s) {
      return s;
    }
    snap->views.emplace(t.id, std::move(view));
    snap->records.emplace(t.id, std::move(t));
  }
  for (auto& c : state.plugin_configs) {
    auto view = snap->views.find(c.tenant);
    if (view == snap->views.end()) {
      throw std::runtime_error("plugin configuration of tenant " + inQuotes(c.tenant) +
                               " has no tenant");
    }
    // Views are immutable once published; this one is not published yet.
    std::const_pointer_cast<TenantView>(view->second)
        ->plugin_config.emplace(std::move(c.plugin), std::move(c.json));
  }
  for (auto& k : state.keys) {
    auto digest = parseSha256Hex(k.sha256_hex);
    auto view = snap->views.find(k.info.tenant);
    if (!digest || view == snap->views.end()) {
      throw std::runtime_error("api key " + inQuotes(k.info.id) + " is corrupt");
    }
    snap->by_digest.emplace(
        *digest, KeyEntry{view->second.get(), k.info.id,
                          k.info.expires_at_ms.value_or(std::numeric_limits<int64_t>::max()),
                          k.info.revoked_at_ms.has_value()});
    snap->keys_by_tenant[k.info.tenant].push_back(std::move(k.info));
  }
  for (auto& c : state.certs) {
    auto lookup = parseSha256Hex(c.lookup_hex);
    auto view = snap->views.find(c.info.tenant);
    if (!lookup || view == snap->views.end() || *lookup != c.info.selector.lookup()) {
      throw std::runtime_error("certificate credential " + inQuotes(c.info.id) + " is corrupt");
    }
    CertEntry entry{view->second.get(), "cert:" + c.info.id,
                    c.info.expires_at_ms.value_or(std::numeric_limits<int64_t>::max()),
                    c.info.revoked_at_ms.has_value()};
    auto [it, inserted] = snap->certs_by_lookup.try_emplace(*lookup, entry);
    if (!inserted && it->second.revoked) it->second = std::move(entry);
    snap->certs_by_tenant[c.info.tenant].push_back(std::move(c.info));
  }
  for (auto& [tenant, certs] : snap->certs_by_tenant) {
    std::sort(certs.begin(), certs.end(), [](const CertCredential& a, const CertCredential& b) {
      return std::tie(a.created_at_ms, a.id) < std::tie(b.created_at_ms, b.id);
    });
  }
  for (auto& [tenant, keys] : snap->keys_by_tenant) {
    std::sort(keys.begin(), keys.end(), [](const KeyInfo& a, const KeyInfo& b) {
      return std::tie(a.created_at_ms, a.id) < std::tie(b.created_at_ms, b.id);
    });
  }
  snap->plans = std::move(state.plans);
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

// ---- drift ------------------------------------------------------------------------------

std::string describe(const std::optional<uint64_t>& v) {
  return v ? std::to_string(*v) : std::string("unset");
}

// {"acme/x": [kv, metrics]} as `acme/x=kv,metrics`; "none" when empty.
std::string describe(const std::map<std::string, std::set<std::string>>& grants) {
  std::string out;
  for (const auto& [plugin, capabilities] : grants) {
    out += (out.empty() ? "" : " ") + plugin + "=";
    std::string list;
    for (const auto& c : capabilities) list += (list.empty() ? "" : ",") + c;
    out += list;
  }
  return out.empty() ? "none" : out;
}

// How the registry's `reg` differs from `decl`, declared in `where` ("trellis.yaml", "the
// file"), one line per difference. Status is not compared: suspending a tenant is an
// operational action, not a declaration.
std::vector<std::string> differences(const TenantRecord& reg, const TenantRecord& decl,
                                     const std::string& where) {
  std::vector<std::string> out;
  const std::string in_decl = " in " + where;
  if (reg.plan != decl.plan) {
    out.push_back("plan is " + inQuotes(reg.plan) + " in the registry but " + inQuotes(decl.plan) +
                  in_decl);
  }
  for (const auto& [key, value] : decl.labels) {
    auto it = reg.labels.find(key);
    if (it == reg.labels.end()) {
      out.push_back("label " + inQuotes(key) + " is missing from the registry but " +
                    inQuotes(value) + in_decl);
    } else if (it->second != value) {
      out.push_back("label " + inQuotes(key) + " is " + inQuotes(it->second) +
                    " in the registry but " + inQuotes(value) + in_decl);
    }
  }
  for (const auto& [key, value] : reg.labels) {
    if (decl.labels.count(key) == 0) {
      out.push_back("label " + inQuotes(key) + " is " + inQuotes(value) +
                    " in the registry but not" + in_decl);
    }
  }
  for (const auto& plugin : decl.plugins) {
    if (reg.plugins.count(plugin) == 0) {
      out.push_back("plugin " + inQuotes(plugin) + " is enabled" + in_decl +
                    " but not in the registry");
    }
  }
  for (const auto& plugin : reg.plugins) {
    if (decl.plugins.count(plugin) == 0) {
      out.push_back("plugin " + inQuotes(plugin) + " is enabled in the registry but not" + in_decl);
    }
  }
  if (reg.grants != decl.grants) {
    out.push_back("capability grants are " + describe(reg.grants) + " in the registry but " +
                  describe(decl.grants) + in_decl);
  }
  for (const auto& f : kQuotaFields) {
    const auto& r = reg.overrides.*f.member;
    const auto& d = decl.overrides.*f.member;
    if (r != d) {
      out.push_back(std::string("override ") + f.name + " is " + describe(r) +
                    " in the registry but " + describe(d) + in_decl);
    }
  }
  return out;
}

void compareDeclared(const TenantRecord& reg, const TenantRecord& decl, std::vector<Drift>& out) {
  if (reg.source != "config") {
    out.push_back({decl.id, "created through the API, also declared in trellis.yaml"});
  }
  for (auto& detail : differences(reg, decl, "trellis.yaml")) {
    out.push_back({decl.id, std::move(detail)});
  }
}

// A desired state's checks that need no database: shapes, duplicates, key hashes, and
// overrides only for plugins the tenant enables.
Status validateDesired(const DesiredState& state) {
  if (state.plans) {
    std::set<std::string, std::less<>> names;
    for (const auto& p : *state.plans) {
      if (auto s = validatePlan(p); !s) return s;
      if (!names.insert(p.name).second) {
        return Status::invalid("plan " + inQuotes(p.name) + " is declared twice");
      }
    }
  }
  std::set<std::string, std::less<>> ids, hashes;
  for (const auto& d : state.tenants) {
    if (auto s = validateRecordShape(d.record); !s) return s;
    const std::string who = "tenant " + inQuotes(d.record.id);
    if (!ids.insert(d.record.id).second) return Status::invalid(who + " is declared twice");
    for (const auto& hex : d.key_hashes) {
      auto digest = parseSha256Hex(hex);
      if (!digest || hex != sha256HexOf(*digest)) {
        return Status::invalid(who + ": key sha256 must be 64 lowercase hex digits");
      }
      if (!hashes.insert(hex).second) {
        return Status::invalid(who + ": key " + hex.substr(0, 8) + "… is declared twice");
      }
    }
    for (const auto& [plugin, json] : d.plugin_config) {
      if (d.record.plugins.count(plugin) == 0) {
        return Status::invalid(who + " configures plugin " + inQuotes(plugin) +
                               " but does not enable it");
      }
      if (json.size() > TenantRegistry::kMaxPluginConfigBytes) {
        return Status::invalid(who + ": the configuration of " + inQuotes(plugin) + " is " +
                               std::to_string(json.size()) + " bytes; the limit is " +
                               std::to_string(TenantRegistry::kMaxPluginConfigBytes));
      }
    }
  }
  return Status::ok();
}

// ---- the registry -----------------------------------------------------------------------

class SqlTenantRegistry final : public TenantRegistry {
 public:
  explicit SqlTenantRegistry(std::unique_ptr<SystemDb> db) : db_(std::move(db)) {}
  ~SqlTenantRegistry() override {
    {
      std::lock_guard lock(poll_mu_);
      stopping_ = true;
    }
    poll_cv_.notify_all();
    if (poller_.joinable()) poller_.join();
  }

  // Builds the first snapshot; UNAVAILABLE if the stored state cannot be read. A non-zero
  // `poll_interval` then starts checking for other hosts' changes (shared databases).
  Status start(std::chrono::milliseconds poll_interval = std::chrono::milliseconds(0),
               std::function<void(const Status&)> on_refresh = nullptr) {
    {
      std::lock_guard lock(mu_);
      try {
        auto tx = db_->readTransaction();
        auto version = db_->changeVersion();
        auto snap = buildSnapshot(db_->load());
        tx.commit();
        if (!snap) return snap.status();
        publish(std::move(*snap));
        seen_version_ = version;
      } catch (const std::exception& e) {
        return Status::unavailable(std::string("cannot read the tenant registry: ") + e.what());
      }
    }
    if (poll_interval.count() > 0) {
      poller_ = std::thread([this, poll_interval, report = std::move(on_refresh)] {
        pollLoop(poll_interval, report);
      });
    }
    return Status::ok();
  }

  // Reloads the snapshot if another host changed the registry since we last looked.
  // Failures keep the current snapshot: this host goes on serving what it knew.
  Status refresh() {
    std::lock_guard lock(mu_);  // also orders us after this host's own mutations
    try {
      db_->reconnectIfBroken();
      auto version = db_->changeVersion();
      if (!version || version == seen_version_) return Status::ok();
      auto tx = db_->readTransaction();
      version = db_->changeVersion();  // the one matching the state we load
      auto snap = buildSnapshot(db_->load());
      tx.commit();
      if (!snap) return snap.status();
      publish(std::move(*snap));
      seen_version_ = version;
      return Status::ok();
    } catch (const std::exception& e) {
      return Status::unavailable(std::string("cannot refresh the tenant registry: ") + e.what());
    }
  }

  static Status validatePlanSet(const std::vector<Plan>& plans) {
    std::set<std::string, std::less<>> names;
    for (const auto& p : plans) {
      if (auto s = validatePlan(p); !s) return s;
      if (!names.insert(p.name).second) {
        return Status::invalid("plan " + inQuotes(p.name) + " is defined twice");
      }
    }
    return Status::ok();
  }

  Status definePlans(std::vector<Plan> plans) override {
    if (Status s = validatePlanSet(plans); !s) return s;
    // "default" always exists: a set that leaves it out gets the unlimited default.
    if (std::none_of(plans.begin(), plans.end(),
                     [](const Plan& p) { return p.name == kDefaultPlan; })) {
      plans.push_back(Plan{std::string(kDefaultPlan), {}});
    }
    return mutate("define plans", [&]() -> Status {
      for (const auto& existing : db_->load().plans) {
        if (std::any_of(plans.begin(), plans.end(),
                        [&](const Plan& p) { return p.name == existing.name; })) {
          continue;
        }
        if (auto user = db_->tenantOnPlan(existing.name)) {
          return Status::conflict("plan " + inQuotes(existing.name) + " is still used by tenant " +
                                  inQuotes(*user));
        }
      }
      db_->replacePlans(plans);
      return Status::ok();
    });
  }

  Status upsertPlans(std::vector<Plan> plans) override {
    if (Status s = validatePlanSet(plans); !s) return s;
    return mutate("define plans", [&]() -> Status {
      std::vector<Plan> all = db_->load().plans;
      for (auto& p : plans) {
        auto same =
            std::find_if(all.begin(), all.end(), [&](const Plan& e) { return e.name == p.name; });
        if (same != all.end()) {
          *same = std::move(p);
        } else {
          all.push_back(std::move(p));
        }
      }
      db_->replacePlans(all);
      return Status::ok();
    });
  }

  std::vector<Plan> plans() const override { return current()->plans; }

  Result<TenantRecord> create(TenantRecord tenant) override {
    if (auto s = validateRecordShape(tenant); !s) return s;
    tenant.created_at_ms = nowMs();
    Status s = mutate("create tenant", [&]() -> Status {
      if (db_->tenant(tenant.id)) {
        return Status::conflict("tenant " + inQuotes(tenant.id) + " already exists");
      }
      if (auto v = validateAgainstPlan(*db_, tenant); !v) return v;
      db_->insertTenant(tenant);
      return Status::ok();
    });
    if (!s) return s;
    return tenant;
  }

  Result<TenantRecord> update(TenantRecord tenant) override {
    if (auto s = validateRecordShape(tenant); !s) return s;
    TenantRecord updated;
    Status s = mutate("update tenant", [&]() -> Status {
      auto existing = db_->tenant(tenant.id);
      if (!existing) return Status::notFound("no tenant " + inQuotes(tenant.id));
      if (auto v = validateAgainstPlan(*db_, tenant); !v) return v;
      updated = std::move(*existing);
      updated.plan = std::move(tenant.plan);
      updated.labels = std::move(tenant.labels);
      updated.plugins = std::move(tenant.plugins);
      updated.grants = std::move(tenant.grants);
      updated.overrides = tenant.overrides;
      db_->updateTenant(updated);
      return Status::ok();
    });
    if (!s) return s;
    return updated;
  }

  Result<TenantRecord> get(std::string_view id) const override {
    auto snap = current();
    auto it = snap->records.find(id);
    if (it == snap->records.end()) return Status::notFound("no tenant " + inQuotes(id));
    return it->second;
  }

  std::vector<TenantRecord> list() const override {
    auto snap = current();
    std::vector<TenantRecord> out;
    out.reserve(snap->records.size());
    for (const auto& [id, record] : snap->records) out.push_back(record);
    return out;
  }

  Status setStatus(std::string_view id, TenantStatus status) override {
    std::string tenant(id);
    return mutate("set tenant status", [&]() -> Status {
      if (!db_->tenant(tenant)) return Status::notFound("no tenant " + inQuotes(tenant));
      db_->setStatus(tenant, status);
      return Status::ok();
    });
  }

  Status remove(std::string_view id) override {
    std::string tenant(id);
    return mutate("remove tenant", [&]() -> Status {
      if (!db_->tenant(tenant)) return Status::notFound("no tenant " + inQuotes(tenant));
      db_->removeTenant(tenant);
      return Status::ok();
    });
  }

  Result<NewKey> createKey(std::string_view tenant, std::optional<int64_t> ttl_seconds,
                           std::optional<uint64_t> max_active_keys) override {
    if (Status s = validateTtl(ttl_seconds); !s) return s;
    NewKey out;
    std::string owner(tenant);
    Status s = mutate("create key", [&]() -> Status {
      if (!db_->tenant(owner)) return Status::notFound("no tenant " + inQuotes(owner));
      if (max_active_keys && db_->activeKeys(owner, nowMs()) >= *max_active_keys) {
        return Status::quotaExceeded("tenant " + inQuotes(owner) + " already holds " +
                                     std::to_string(*max_active_keys) +
                                     " active keys, the max_api_keys quota of its plan; "
                                     "revoke one first");
      }
      return insertNewKey(owner, ttl_seconds, out);
    });
    if (!s) return s;
    return out;
  }

  Result<NewKey> rotateKey(std::string_view tenant, std::string_view old_key_id,
                           std::optional<int64_t> ttl_seconds) override {
    if (Status s = validateTtl(ttl_seconds); !s) return s;
    NewKey out;
    std::string owner(tenant), old_id(old_key_id);
    Status s = mutate("rotate key", [&]() -> Status {
      auto old = db_->key(old_id);
      int64_t now = nowMs();
      // Another tenant's key answers like a missing one.
      if (!old || old->info.tenant != owner || old->info.revoked_at_ms ||
          (old->info.expires_at_ms && *old->info.expires_at_ms <= now)) {
        return Status::notFound("no active key " + inQuotes(old_id) + " of tenant " +
                                inQuotes(owner));
      }
      if (Status created = insertNewKey(owner, ttl_seconds, out); !created) return created;
      db_->revokeKey(old_id, now);
      return Status::ok();
    });
    if (!s) return s;
    return out;
  }

  // Imported keys get the id "cfg" + the first 8 hex digits of their hash (more digits
  // if those are taken). The id is fixed when first imported; importing the same hash
  // again returns the stored key unchanged, revoked or not.
  Result<KeyInfo> importKeyHash(std::string_view tenant, std::string_view sha256_hex) override {
    auto digest = parseSha256Hex(sha256_hex);
    if (!digest) return Status::invalid("key sha256 must be 64 hex digits");
    std::string hex = sha256HexOf(*digest);
    std::string owner(tenant);
    KeyInfo out;
    Status s = mutate("import key", [&]() -> Status {
      if (!db_->tenant(owner)) return Status::notFound("no tenant " + inQuotes(owner));
      auto imported = importHash(owner, hex);
      if (!imported) return imported.status();
      out = std::move(imported->first);
      return Status::ok();
    });
    if (!s) return s;
    return out;
  }

  std::vector<KeyInfo> listKeys(std::string_view tenant) const override {
    auto snap = current();
    auto it = snap->keys_by_tenant.find(tenant);
    return it == snap->keys_by_tenant.end() ? std::vector<KeyInfo>{} : it->second;
  }

  Status revokeKey(std::string_view key_id) override {
    std::string id(key_id);
    return mutate("revoke key", [&]() -> Status {
      if (!db_->key(id)) return Status::notFound("no key " + inQuotes(id));
      db_->revokeKey(id, nowMs());
      return Status::ok();
    });
  }

  Result<CertCredential> addCertCredential(std::string_view tenant, CertSelector selector,
                                           std::optional<int64_t> expires_at_ms) override {
    const int64_t now = nowMs();
    if (expires_at_ms && (*expires_at_ms <= now || *expires_at_ms > now + kMaxTtlSeconds * 1000)) {
      return Status::invalid("expires_at_ms must be in the future, within " +
                             std::to_string(kMaxTtlSeconds / (365 * 24 * 3600)) +
                             " years (unset: never expires)");
    }
    CertCredential out;
    std::string owner(tenant);
    const std::string lookup = sha256HexOf(selector.lookup());
    Status s = mutate("add certificate credential", [&]() -> Status {
      if (!db_->tenant(owner)) return Status::notFound("no tenant " + inQuotes(owner));
      if (auto existing = db_->activeCertByLookup(lookup)) {
        // Another tenant's credential is not named: its id would tell who else is here.
        return Status::conflict(existing->info.tenant == owner
                                    ? "certificate credential " + inQuotes(existing->info.id) +
                                          " of tenant " + inQuotes(owner) + " already maps " +
                                          selector.describe() + "; revoke it first"
                                    : selector.describe() + " is already mapped to another tenant");
      }
      std::string id;
      for (int attempt = 0; attempt < 16 && id.empty(); ++attempt) {
        unsigned char raw[kKeyIdHexChars / 2];
        if (RAND_bytes(raw, sizeof raw) != 1) return Status::internal("RAND_bytes failed");
        std::string candidate = hexOf(raw, sizeof raw);
        if (!db_->cert(candidate)) id = std::move(candidate);
      }
      if (id.empty()) return Status::internal("no free credential id after 16 attempts");
      StoredCert stored{CertCredential{id, owner, selector, now, expires_at_ms, std::nullopt},
                        lookup};
      db_->insertCert(stored);
      out = std::move(stored.info);
      return Status::ok();
    });
    if (!s) return s;
    return out;
  }

  std::vector<CertCredential> listCertCredentials(std::string_view tenant) const override {
    auto snap = current();
    auto it = snap->certs_by_tenant.find(tenant);
    return it == snap->certs_by_tenant.end() ? std::vector<CertCredential>{} : it->second;
  }

  Status revokeCertCredential(std::string_view tenant, std::string_view id) override {
    std::string owner(tenant), cert_id(id);
    return mutate("revoke certificate credential", [&]() -> Status {
      auto c = db_->cert(cert_id);
      // Another tenant's credential answers like a missing one.
      if (!c || c->info.tenant != owner) {
        return Status::notFound("no certificate credential " + inQuotes(cert_id) + " of tenant " +
                                inQuotes(owner));
      }
      db_->revokeCert(cert_id, nowMs());
      return Status::ok();
    });
  }

  Status setPluginConfig(std::string_view tenant, std::string_view plugin,
                         std::optional<std::string> override_json) override {
    if (override_json && override_json->size() > kMaxPluginConfigBytes) {
      return Status::invalid("plugin configuration overrides are " +
                             std::to_string(override_json->size()) + " bytes; the limit is " +
                             std::to_string(kMaxPluginConfigBytes));
    }
    std::string owner(tenant), plugin_id(plugin);
    return mutate("set plugin configuration", [&]() -> Status {
      auto t = db_->tenant(owner);
      if (!t) return Status::notFound("no tenant " + inQuotes(owner));
      if (t->plugins.count(plugin_id) == 0) {
        return Status::invalid("tenant " + inQuotes(owner) + " does not enable plugin " +
                               inQuotes(plugin_id) + ": enable it first");
      }
      if (override_json) {
        db_->setPluginConfig(owner, plugin_id, *override_json, nowMs());
      } else {
        db_->removePluginConfig(owner, plugin_id);
      }
      return Status::ok();
    });
  }

  // The registry wins: a declared tenant that already exists is never overwritten, so a
  // change made through the API survives a restart. Each difference is reported instead,
  // as is a tenant created through the API that trellis.yaml also declares and a
  // "config" tenant that trellis.yaml no longer declares. Status is not compared:
  // suspending a tenant is an operational action, not a declaration.
  Result<std::vector<Drift>> applyDeclared(const std::vector<TenantRecord>& declared) override {
    std::set<std::string, std::less<>> ids;
    for (const auto& d : declared) {
      if (auto s = validateRecordShape(d); !s) return s;
      if (!ids.insert(d.id).second) {
        return Status::invalid("tenant " + inQuotes(d.id) + " is declared twice");
      }
    }
    std::vector<Drift> drift;
    Status s = mutate("apply declared tenants", [&]() -> Status {
      drift.clear();
      StoredState state = db_->load();
      std::map<std::string, const TenantRecord*, std::less<>> existing;
      for (const auto& t : state.tenants) existing.emplace(t.id, &t);
      for (const auto& d : declared) {
        if (auto v = validateAgainstPlan(*db_, d); !v) return v;
        auto it = existing.find(d.id);
        if (it != existing.end()) {
          compareDeclared(*it->second, d, drift);
          continue;
        }
        TenantRecord record = d;
        record.source = "config";
        record.created_at_ms = nowMs();
        db_->insertTenant(record);
      }
      for (const auto& t : state.tenants) {
        if (t.source == "config" && ids.count(t.id) == 0) {
          drift.push_back({t.id,
                           "declared in trellis.yaml earlier but no longer; kept in the "
                           "registry until removed through the API"});
        }
      }
      return Status::ok();
    });
    if (!s) return s;
    return drift;
  }

  Result<StatePlan> applyState(const DesiredState& state, bool dry_run) override {
    if (Status s = validateDesired(state); !s) return s;
    StatePlan plan;
    Status s = mutate(
        "apply state",
        [&]() -> Status {
          plan = {};
          StoredState before = db_->load();
          // Every plan, old and new, exists while tenants move; the unused old ones go last.
          if (state.plans) {
            std::vector<Plan> all = withDefaultPlan(*state.plans);
            for (const auto& p : before.plans) {
              if (!findPlan(all, p.name)) all.push_back(p);
            }
            db_->replacePlans(all);
          }
          for (const auto& d : state.tenants) {
            if (Status t = applyTenant(d, before, plan); !t) return t;
          }
          if (state.plans) {
            if (Status p = replacePlansAtLast(withDefaultPlan(*state.plans), before, plan); !p) {
              return p;
            }
          }
          for (const auto& t : before.tenants) {
            auto declared =
                std::find_if(state.tenants.begin(), state.tenants.end(),
                             [&](const DesiredTenant& d) { return d.record.id == t.id; });
            if (declared == state.tenants.end()) {
              plan.drift.push_back({t.id, "not in the file; left as it is"});
            }
          }
          return Status::ok();
        },
        dry_run);
    if (!s) return s;
    return plan;
  }

  Resolution resolve(std::string_view presented_key) const override {
    Resolution r;
    if (presented_key.empty() || presented_key.size() > kMaxPresentedKeyBytes) return r;
    Sha256Digest digest = sha256Digest(presented_key);
    auto snap = current();
    auto it = snap->by_digest.find(digest);
    if (it == snap->by_digest.end()) return r;
    // The map compared digests, not keys; confirm in constant time anyway so the answer
    // never depends on a short-circuiting comparison.
    if (CRYPTO_memcmp(it->first.data(), digest.data(), digest.size()) != 0) return r;
    const KeyEntry& entry = it->second;
    if (entry.revoked) {
      r.outcome = Resolution::Outcome::kRevokedKey;
    } else if (entry.expires_at_ms <= nowMs()) {
      r.outcome = Resolution::Outcome::kExpiredKey;
    } else {
      r.outcome = entry.tenant->status == TenantStatus::kSuspended ? Resolution::Outcome::kSuspended
                                                                   : Resolution::Outcome::kOk;
      r.tenant = entry.tenant;
      r.key_id = entry.id;
      r.snapshot = std::move(snap);
    }
    return r;
  }

  Resolution resolveCertificate(const PresentedCertificate& cert) const override {
    using Outcome = Resolution::Outcome;
    Resolution r;
    const auto lookups = lookupsOf(cert);
    auto snap = current();
    const int64_t now = nowMs();
    for (size_t i = 0; i < lookups.size(); ++i) {
      if (!lookups[i]) continue;
      auto it = snap->certs_by_lookup.find(*lookups[i]);
      if (it == snap->certs_by_lookup.end()) continue;
      const CertEntry& entry = it->second;
      if (entry.revoked || entry.expires_at_ms <= now) {
        if (r.outcome == Outcome::kUnknownKey) {
          r.outcome = entry.revoked ? Outcome::kRevokedKey : Outcome::kExpiredKey;
        }
        if (i == 0 && entry.revoked) return r;  // a revoked pin: that certificate is out
        continue;
      }
      r.outcome =
          entry.tenant->status == TenantStatus::kSuspended ? Outcome::kSuspended : Outcome::kOk;
      r.tenant = entry.tenant;
      r.key_id = entry.principal;
      r.snapshot = std::move(snap);
      return r;
    }
    return r;
  }

  std::shared_ptr<const TenantView> view(std::string_view id) const override {
    auto snap = current();
    auto it = snap->views.find(id);
    return it == snap->views.end() ? nullptr : it->second;
  }

 private:
  std::shared_ptr<const Snapshot> current() const { return std::atomic_load(&snapshot_); }
  void publish(std::shared_ptr<const Snapshot> snap) {
    std::atomic_store(&snapshot_, std::move(snap));
  }

  // Runs `body` (which returns a Status and may throw) in one write transaction and
  // publishes the resulting snapshot if both it and the snapshot rebuild succeed. A dry run
  // does the same work, snapshot check included, and rolls it back.
  template <typename Body>
  Status mutate(std::string_view what, Body&& body, bool dry_run = false) {
    std::lock_guard lock(mu_);
    try {
      auto tx = db_->transaction();
      if (Status s = body(); !s) return s;
      auto snap = buildSnapshot(db_->load());
      if (!snap) return snap.status();
      if (dry_run) return Status::ok();
      auto version = db_->changeVersion();
      tx.commit();
      publish(std::move(*snap));
      seen_version_ = version;
      return Status::ok();
    } catch (const std::exception& e) {
      return Status::unavailable("system database: " + std::string(what) + " failed: " + e.what());
    }
  }

  // A key that is expired at birth, or whose expiry overflows, is a caller's mistake.
  static Status validateTtl(std::optional<int64_t> ttl_seconds) {
    if (ttl_seconds && (*ttl_seconds < 1 || *ttl_seconds > kMaxTtlSeconds)) {
      return Status::invalid("ttl_seconds must be between 1 and " + std::to_string(kMaxTtlSeconds) +
                             " (unset: never expires)");
    }
    return Status::ok();
  }

  static std::vector<Plan> withDefaultPlan(std::vector<Plan> plans) {
    if (!findPlan(plans, kDefaultPlan)) plans.push_back(Plan{std::string(kDefaultPlan), {}});
    return plans;
  }
  static const Plan* findPlan(const std::vector<Plan>& plans, std::string_view name) {
    auto it =
        std::find_if(plans.begin(), plans.end(), [&](const Plan& p) { return p.name == name; });
    return it == plans.end() ? nullptr : &*it;
  }

  // Inside applyState, after the tenants: the plan set becomes `wanted`; a plan that goes
  // must no longer be used by any tenant.
  Status replacePlansAtLast(const std::vector<Plan>& wanted, const StoredState& before,
                            StatePlan& plan) {
    for (const auto& old : before.plans) {
      const Plan* now = findPlan(wanted, old.name);
      if (now == nullptr) {
        if (auto user = db_->tenantOnPlan(old.name)) {
          return Status::conflict("plan " + inQuotes(old.name) + " is not in the file but tenant " +
                                  inQuotes(*user) + " is still on it");
        }
        plan.changes.push_back({"remove", "plan " + inQuotes(old.name), {}});
      } else if (!(now->quotas == old.quotas)) {
        plan.changes.push_back({"update", "plan " + inQuotes(old.name), quotaChanges(old, *now)});
      }
    }
    for (const auto& p : wanted) {
      if (!findPlan(before.plans, p.name)) {
        plan.changes.push_back({"create", "plan " + inQuotes(p.name), {}});
      }
    }
    db_->replacePlans(wanted);
    return Status::ok();
  }

  static std::vector<std::string> quotaChanges(const Plan& from, const Plan& to) {
    std::vector<std::string> out;
    for (const auto& f : kQuotaFields) {
      if (from.quotas.*f.member != to.quotas.*f.member) {
        out.push_back(std::string(f.name) + ": " + describe(from.quotas.*f.member) + " -> " +
                      describe(to.quotas.*f.member));
      }
    }
    return out;
  }

  // Inside applyState: one declared tenant, its keys and its plugin overrides.
  Status applyTenant(const DesiredTenant& d, const StoredState& before, StatePlan& plan) {
    const TenantRecord& want = d.record;
    const std::string who = "tenant " + inQuotes(want.id);
    if (auto v = validateAgainstPlan(*db_, want); !v) return v;
    auto existing = db_->tenant(want.id);
    if (!existing) {
      TenantRecord record = want;
      record.source = "api";
      record.status = TenantStatus::kActive;
      record.created_at_ms = nowMs();
      db_->insertTenant(record);
      plan.changes.push_back({"create", who, {}});
    } else if (auto diff = differences(*existing, want, "the file"); !diff.empty()) {
      TenantRecord updated = std::move(*existing);
      updated.plan = want.plan;
      updated.labels = want.labels;
      updated.plugins = want.plugins;
      updated.grants = want.grants;
      updated.overrides = want.overrides;
      db_->updateTenant(updated);
      plan.changes.push_back({"update", who, std::move(diff)});
    }
    for (const auto& hex : d.key_hashes) {
      auto imported = importHash(want.id, hex);
      if (!imported)
        return Status(imported.status().code(), who + ": " + imported.status().message());
      const KeyInfo& key = imported->first;
      if (imported->second) {
        plan.changes.push_back({"import key", "key " + inQuotes(key.id) + " of " + who, {}});
      } else if (key.revoked_at_ms) {
        plan.drift.push_back(
            {want.id, "key " + inQuotes(key.id) + " is in the file but revoked in the registry"});
      }
    }
    const int64_t now = nowMs();
    for (const auto& k : before.keys) {
      const bool active =
          !k.info.revoked_at_ms && (!k.info.expires_at_ms || *k.info.expires_at_ms > now);
      if (k.info.tenant == want.id && active &&
          std::find(d.key_hashes.begin(), d.key_hashes.end(), k.sha256_hex) == d.key_hashes.end()) {
        plan.drift.push_back({want.id, "key " + inQuotes(k.info.id) +
                                           " is active in the registry but not in the file"});
      }
    }
    for (const auto& c : before.plugin_configs) {
      if (c.tenant == want.id && d.plugin_config.count(c.plugin) == 0) {
        db_->removePluginConfig(want.id, c.plugin);
        plan.changes.push_back(
            {"remove config", "plugin " + inQuotes(c.plugin) + " of " + who, {}});
      }
    }
    for (const auto& [plugin, json] : d.plugin_config) {
      auto old =
          std::find_if(before.plugin_configs.begin(), before.plugin_configs.end(),
                       [&](const auto& c) { return c.tenant == want.id && c.plugin == plugin; });
      if (old != before.plugin_configs.end() && old->json == json) continue;
      db_->setPluginConfig(want.id, plugin, json, nowMs());
      plan.changes.push_back(
          {"set config",
           "plugin " + inQuotes(plugin) + " of " + who,
           {old == before.plugin_configs.end() ? json : old->json + " -> " + json}});
    }
    return Status::ok();
  }

  // Inside mutate(): the key with SHA-256 `hex` for `owner`, inserted if new (second =
  // true). CONFLICT if another tenant holds it.
  Result<std::pair<KeyInfo, bool>> importHash(const std::string& owner, const std::string& hex) {
    if (auto existing = db_->keyByHash(hex)) {
      if (existing->info.tenant != owner) {
        return Status::conflict("key hash is already registered as key " +
                                inQuotes(existing->info.id) + " of another tenant");
      }
      return std::pair{std::move(existing->info), false};
    }
    std::string id;
    for (size_t n = kKeyIdHexChars; n <= hex.size() && id.empty(); ++n) {
      std::string candidate = std::string(kImportedKeyPrefix) + hex.substr(0, n);
      if (!db_->key(candidate)) id = std::move(candidate);
    }
    if (id.empty()) return Status::internal("no free key id for an imported key");
    StoredKey stored{KeyInfo{id, owner, nowMs(), std::nullopt, std::nullopt}, hex};
    db_->insertKey(stored);
    return std::pair{std::move(stored.info), true};
  }

  // Inside mutate(): a fresh id and secret for `owner`, stored as its hash.
  Status insertNewKey(const std::string& owner, std::optional<int64_t> ttl_seconds, NewKey& out) {
    // 32 bits of id: collisions are rare but possible, so look before taking one.
    std::string id;
    for (int attempt = 0; attempt < 16 && id.empty(); ++attempt) {
      unsigned char raw[kKeyIdHexChars / 2];
      if (RAND_bytes(raw, sizeof raw) != 1) return Status::internal("RAND_bytes failed");
      std::string candidate = hexOf(raw, sizeof raw);
      if (!db_->key(candidate)) id = std::move(candidate);
    }
    if (id.empty()) return Status::internal("no free key id after 16 attempts");
    unsigned char secret[kSecretBytes];
    if (RAND_bytes(secret, sizeof secret) != 1) return Status::internal("RAND_bytes failed");
    std::string key = std::string(kKeyPrefix) + id + "_" + base64Url(secret, sizeof secret);
    OPENSSL_cleanse(secret, sizeof secret);
    int64_t now = nowMs();
    StoredKey stored{KeyInfo{id, owner, now, std::nullopt, std::nullopt}, sha256Hex(key)};
    if (ttl_seconds) stored.info.expires_at_ms = now + *ttl_seconds * 1000;
    db_->insertKey(stored);
    out.info = std::move(stored.info);
    out.secret = std::move(key);
    return Status::ok();
  }

  void pollLoop(std::chrono::milliseconds interval,
                const std::function<void(const Status&)>& report) {
    bool failing = false;
    std::unique_lock lock(poll_mu_);
    while (!poll_cv_.wait_for(lock, interval, [this] { return stopping_; })) {
      lock.unlock();
      Status s = refresh();  // an outage is retried at the next tick
      if (static_cast<bool>(s) == failing) {
        failing = !s;
        if (report) report(s);
      }
      lock.lock();
    }
  }

  std::mutex mu_;  // serialises mutations and every use of db_
  const std::unique_ptr<SystemDb> db_;
  std::optional<int64_t> seen_version_;  // guarded by mu_: the snapshot's change counter
  std::mutex poll_mu_;
  std::condition_variable poll_cv_;
  bool stopping_ = false;  // guarded by poll_mu_
  std::thread poller_;     // last member: joined before the rest is destroyed
  // Read and written only through std::atomic_load/atomic_store. Not the C++20
  // std::atomic<std::shared_ptr>: GCC 12's load() releases its internal lock with relaxed
  // order, a data race ThreadSanitizer reports. Both forms hold a short internal lock
  // around the reference-count copy; neither waits for a mutation.
  std::shared_ptr<const Snapshot> snapshot_;
};

}  // namespace

Quotas Quotas::overlaidWith(const Quotas& overrides) const {
  Quotas out = *this;
  for (const auto& f : kQuotaFields) {
    if (overrides.*f.member) out.*f.member = overrides.*f.member;
  }
  return out;
}

std::string_view tenantStatusName(TenantStatus s) {
  switch (s) {
    case TenantStatus::kActive: return "active";
    case TenantStatus::kSuspended: return "suspended";
  }
  return "unknown";
}

Result<std::unique_ptr<TenantRegistry>> TenantRegistry::openSqlite(
    const std::filesystem::path& db) {
  auto opened = SystemDb::openSqlite(db);
  if (!opened) return opened.status();
  auto registry = std::make_unique<SqlTenantRegistry>(std::move(*opened));
  if (auto s = registry->start(); !s) return s;
  return std::unique_ptr<TenantRegistry>(std::move(registry));
}

Result<std::unique_ptr<TenantRegistry>> TenantRegistry::openPostgres(
    const PostgresUrl& url, std::chrono::milliseconds poll_interval,
    std::function<void(const Status&)> on_refresh) {
  auto opened = SystemDb::openPostgres(url);
  if (!opened) return opened.status();
  auto registry = std::make_unique<SqlTenantRegistry>(std::move(*opened));
  if (auto s = registry->start(poll_interval, std::move(on_refresh)); !s) return s;
  return std::unique_ptr<TenantRegistry>(std::move(registry));
}

}  // namespace trellis::tenants
