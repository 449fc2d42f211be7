// The tenant part of the admin API (behind the admin token):
//   GET    /v1/tenants                         list
//   POST   /v1/tenants                         create {id, plan, labels, plugins, quotas}
//   GET    /v1/tenants/{id}                    show (with keys: ids only)
//   PUT    /v1/tenants/{id}                    replace plan, labels, plugins, quotas
//   POST   /v1/tenants/{id}/suspend | /resume
//   DELETE /v1/tenants/{id}?confirm={id}       delete the tenant, its keys and its data
//   GET    /v1/tenants/{id}/usage              quotas, requests and storage in use
//   GET    /v1/tenants/{id}/keys               key ids, creation, expiry, revocation
//   POST   /v1/tenants/{id}/keys               {ttl_seconds?} -> the key, shown once
//   DELETE /v1/keys/{key_id}                   revoke
//   GET    /v1/tenants/{id}/certs              certificate credentials (mTLS)
//   POST   /v1/tenants/{id}/certs              {spiffe | subject+issuer | pin, expires_at_ms?}
//   DELETE /v1/tenants/{id}/certs/{cert_id}    revoke
//   GET    /v1/drift                           declared tenants that differ from the registry
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runtime/tenant_json.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

class TenantAdmin {
 public:
  // `storage` holds the tenants' plugin data: usage reports it, delete removes it.
  TenantAdmin(tenants::TenantRegistry& registry, tenants::Admission& admission,
              storage::KvStore& storage, std::vector<tenants::Drift> drift,
              EgressUsageFn egress_usage = {});

  // The response, or nullopt if the path is not a tenant endpoint.
  std::optional<http::Response> handle(const http::Request& req, std::string_view path);

 private:
  enum Endpoint : size_t {
    kList,
    kCreate,
    kShow,
    kUpdate,
    kSuspend,
    kResume,
    kDelete,
    kUsage,
    kKeys,
    kCreateKey,
    kRevokeKey,
    kCerts,
    kAddCert,
    kRevokeCert,
    kDrift
  };
  http::Response dispatch(Endpoint e, const http::Request& req, const http::RouteMatch& m);

  tenants::TenantRegistry& registry_;
  tenants::Admission& admission_;
  storage::KvStore& storage_;
  EgressUsageFn egress_usage_;
  std::vector<tenants::Drift> drift_;
  http::Router router_;
};

}  // namespace trellis::kernel::runtime
