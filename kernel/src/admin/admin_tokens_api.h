// The admin API for admin principals (admin role only; admin_roles.h):
//   GET    /v1/admin-tokens           {"principals":[{"id","name","role","created_at_ms",
//                                      "revoked_at_ms"?}]}  (never a secret or a hash)
//   POST   /v1/admin-tokens           {"name":"alice","role":"operator"} -> 201 with
//                                     "token": shown this once, stored only hashed
//   DELETE /v1/admin-tokens/{id|name} revoke: its token is refused from now on
//   PUT    /v1/admin-tokens/{id|name}/certificate  {"spiffe"} | {"subject","issuer"} | {"pin"}:
//                                     a verified client certificate authenticates as it
//   DELETE /v1/admin-tokens/{id|name}/certificate  unbind
#pragma once

#include <optional>
#include <string_view>

#include "admin/admin_principals.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"

namespace trellis::kernel::admin {

class AdminTokensApi {
 public:
  explicit AdminTokensApi(AdminPrincipals& principals);
  // nullopt for a path that is not ours.
  std::optional<http::Response> handle(const http::Request& req, std::string_view path);

 private:
  AdminPrincipals& principals_;
  http::Router router_;
};

}  // namespace trellis::kernel::admin
