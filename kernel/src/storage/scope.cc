#include "trellis/kernel/storage/kv_store.h"
#include "trellis/tenants/identity.h"

namespace trellis::kernel::storage {

bool isValidScopeTenant(std::string_view tenant) {
  return tenants::isValidTenantId(tenant) || tenant == kSystemScopeTenant;
}

}  // namespace trellis::kernel::storage
