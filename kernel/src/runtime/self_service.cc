#include "runtime/self_service.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <sstream>

#include "runtime/tenant_json.h"

namespace trellis::kernel::runtime {
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool isActive(const tenants::KeyInfo& k, int64_t now_ms) {
  return !k.revoked_at_ms && (!k.expires_at_ms || *k.expires_at_ms > now_ms);
}

template <typename Json>
std::string text(const Json& json) {
  std::ostringstream out;
  json->stringify(out);
  return out.str();
}

}  // namespace

Result<std::string> SelfService::info(const tenants::TenantView& tenant) const {
  auto stored = storage_.storageBytes(tenant.id);
  if (!stored) return stored.status();
  Object::Ptr usage = usageJson(tenant, admission_.usage(tenant.id), *stored,
                                egress_usage_ ? egress_usage_(tenant.id) : EgressUsage{});
  Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  o->set("id", tenant.id);
  o->set("plan", tenant.plan);
  Object::Ptr labels = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  for (const auto& [k, v] : tenant.labels) labels->set(k, v);
  o->set("labels", labels);
  o->set("quotas", usage->get("quotas"));
  for (const char* field : {"tenant", "plan", "quotas"}) usage->remove(field);
  o->set("usage", usage);
  return text(o);
}

std::string SelfService::keys(const tenants::TenantView& tenant) const {
  int64_t now = nowMs();
  Array::Ptr list = new Array;
  for (const auto& k : registry_.listKeys(tenant.id)) {
    auto o = keyJson(k);
    o->set("active", isActive(k, now));
    list->add(o);
  }
  return text(list);
}

// The lifetime a self-service key gets: at most the plan's max_key_ttl_seconds, which is
// also the default; no expiry only when the plan sets no maximum.
Result<std::optional<int64_t>> SelfService::lifetime(const tenants::TenantView& tenant,
                                                     uint64_t ttl_seconds) const {
  const auto& max_ttl = tenant.quotas.max_key_ttl_seconds;
  if (max_ttl && ttl_seconds > *max_ttl) {
    return Status::invalid("ttl_seconds " + std::to_string(ttl_seconds) +
                           " is longer than the plan allows (max_key_ttl_seconds " +
                           std::to_string(*max_ttl) + ")");
  }
  uint64_t ttl = ttl_seconds > 0 ? ttl_seconds : max_ttl.value_or(0);
  if (ttl == 0) return std::optional<int64_t>();
  return std::optional<int64_t>(static_cast<int64_t>(std::min<uint64_t>(ttl, INT64_MAX)));
}

std::string SelfService::newKeyJson(const tenants::NewKey& key) {
  auto o = keyJson(key.info);
  o->remove("tenant");
  o->set("key", key.secret);
  return text(o);
}

Result<std::string> SelfService::createKey(const tenants::TenantView& tenant,
                                           uint64_t ttl_seconds) {
  auto ttl = lifetime(tenant, ttl_seconds);
  if (!ttl) return ttl.status();
  auto key = registry_.createKey(tenant.id, *ttl, tenant.quotas.max_api_keys);
  if (!key) return key.status();
  spdlog::info("tenant {} created its key {}", tenant.id, key->info.id);  // never the secret
  return newKeyJson(*key);
}

Result<std::string> SelfService::rotateKey(const tenants::TenantView& tenant,
                                           std::string_view principal, uint64_t ttl_seconds) {
  if (principal.empty()) return Status::invalid("only a request made with a key can rotate it");
  auto ttl = lifetime(tenant, ttl_seconds);
  if (!ttl) return ttl.status();
  auto key = registry_.rotateKey(tenant.id, principal, *ttl);
  if (!key) return key.status();
  spdlog::info("tenant {} rotated its key {} to {}", tenant.id, principal, key->info.id);
  return newKeyJson(*key);
}

Status SelfService::revokeKey(const tenants::TenantView& tenant, std::string_view key_id) {
  int64_t now = nowMs();
  const tenants::KeyInfo* target = nullptr;
  size_t active = 0;
  auto keys = registry_.listKeys(tenant.id);
  for (const auto& k : keys) {
    if (k.id == key_id) target = &k;
    active += isActive(k, now) ? 1 : 0;
  }
  // Another tenant's key id answers exactly like one that does not exist.
  if (!target) return Status::notFound("no key \"" + std::string(key_id) + "\"");
  if (isActive(*target, now) && active <= 1) {
    return Status::conflict("key \"" + target->id +
                            "\" is the tenant's last active key; create another one first");
  }
  if (Status s = registry_.revokeKey(target->id); !s) return s;
  spdlog::info("tenant {} revoked its key {}", tenant.id, target->id);
  return Status::ok();
}

}  // namespace trellis::kernel::runtime
