// What a tenant may see and do about its own account through a plugin (the ABI 1.1
// tenant_* host calls that plugins/tenancy is built on): read its plan, quotas and usage,
// and manage its own API keys within the limits its plan sets. Every function acts on the
// tenant it is given, which the host takes from the call's context, never from plugin
// input; results are JSON text for the plugin.
//
//   SelfService self{registry, admission, kv};
//   auto json = self.createKey(tenant, 3600);   // {"id":…,"key":"trk_…",…}
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/tenant_json.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/status.hpp"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

class SelfService {
 public:
  SelfService(tenants::TenantRegistry& registry, const tenants::Admission& admission,
              storage::KvStore& storage, EgressUsageFn egress_usage = {})
      : registry_(registry),
        admission_(admission),
        storage_(storage),
        egress_usage_(std::move(egress_usage)) {}

  // Plan, labels, effective quotas and usage.
  Result<std::string> info(const tenants::TenantView& tenant) const;
  // The tenant's keys, oldest first, each with "active".
  std::string keys(const tenants::TenantView& tenant) const;
  // A new key within the plan: max_api_keys active keys (QUOTA_EXCEEDED) and a lifetime of
  // at most max_key_ttl_seconds (INVALID above it; 0 = that maximum, or no expiry).
  Result<std::string> createKey(const tenants::TenantView& tenant, uint64_t ttl_seconds);
  // Swaps the key `principal` for a new one atomically (same lifetime rules; no free key
  // slot needed). INVALID without a principal, NOT_FOUND if it is no longer active.
  Result<std::string> rotateKey(const tenants::TenantView& tenant, std::string_view principal,
                                uint64_t ttl_seconds);
  // NOT_FOUND unless `key_id` is the tenant's own; CONFLICT for its last active key.
  Status revokeKey(const tenants::TenantView& tenant, std::string_view key_id);

 private:
  Result<std::optional<int64_t>> lifetime(const tenants::TenantView& tenant,
                                          uint64_t ttl_seconds) const;
  static std::string newKeyJson(const tenants::NewKey& key);

  tenants::TenantRegistry& registry_;
  const tenants::Admission& admission_;
  storage::KvStore& storage_;
  EgressUsageFn egress_usage_;
};

}  // namespace trellis::kernel::runtime
