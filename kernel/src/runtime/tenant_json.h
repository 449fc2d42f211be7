// How tenants, quotas, usage and keys look as JSON, in one place for the admin API
// (`trellis tenant …`) and the tenant self-service host calls, so both describe a tenant
// the same way.
//
//   auto o = usageJson(*view, admission.usage(view->id), storage_bytes);
//   o->stringify(out);
#pragma once

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <functional>
#include <string>

#include "trellis/tenants/admission.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

// Only the quotas that are set; an absent one is unlimited.
Poco::JSON::Object::Ptr quotasJson(const tenants::Quotas& q);
// {"plugin": ["capability", …]} for the plugins whose grants are restricted.
Poco::JSON::Object::Ptr grantsJson(const std::map<std::string, std::set<std::string>>& grants);
Poco::JSON::Object::Ptr tenantJson(const tenants::TenantRecord& t);
// Ids and dates only: the secret is never stored, so it cannot be shown.
Poco::JSON::Object::Ptr keyJson(const tenants::KeyInfo& k);
// Outbound HTTP of the tenant's plugins today (UTC), on this host.
struct EgressUsage {
  uint64_t requests_today = 0;
  uint64_t bytes_today = 0;
};
using EgressUsageFn = std::function<EgressUsage(const std::string& tenant)>;

// {"tenant","plan","quotas","in_flight","admitted","rejected","storage_bytes","egress"}
// storage_bytes counts KV and blobs.
Poco::JSON::Object::Ptr usageJson(const tenants::TenantView& tenant,
                                  const tenants::Admission::Usage& usage, uint64_t storage_bytes,
                                  EgressUsage egress = {});

}  // namespace trellis::kernel::runtime
