#include "trellis/kernel/storage/kv_store.h"
#include "trellis/tenants/identity.h"

namespace trellis::kernel::storage {

bool isValidScopeTenant(std::string_view tenant) {
  return tenants::isValidTenantId(tenant) || tenant == kSystemScopeTenant;
}

}  // namespace trellis::kernel::storage

namespace trellis::kernel::storage {

void KvStore::putAsync(const Scope& scope, std::string_view key, std::string_view value,
                       uint64_t expected_version, PutDone done) {
  CommitPool::instance().post(
      [this, scope, key = std::string(key), value = std::string(value), expected_version,
       done = std::move(done)] { done(put(scope, key, value, expected_version)); });
}

}  // namespace trellis::kernel::storage
