// Named admin principals: who may call the admin API, with which role. Besides the
// bootstrap token (the principal "bootstrap", role admin, from admin.token_file), the
// operator creates one token per person or automation with `trellis admin-token create`.
// Only the SHA-256 of each token is stored (a 256-bit random secret needs no slow hash,
// as with tenant API keys), in <data_dir>/admin-principals.json (mode 0600, replaced
// atomically); the token itself is shown once, at creation.
//
// A token reads "tadm_<id>_<secret>": the id part names the principal in audit records of
// failed attempts without revealing anything that authenticates.
//
//   auto store = AdminPrincipals::open(data_dir / "admin-principals.json");
//   auto made = (*store)->create("alice", Role::kOperator);   // made->token: show once
//   auto who = (*store)->authenticate(presented);            // Principal or why not
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "admin/admin_roles.h"
#include "trellis/status.hpp"

namespace trellis::kernel::admin {

struct Principal {
  std::string id;    // "bootstrap" or 16 hex digits
  std::string name;  // "alice", "ci-deploy"; "bootstrap" for the bootstrap token
  Role role = Role::kAdmin;
  int64_t created_at_ms = 0;
  std::optional<int64_t> revoked_at_ms;
};

class AdminPrincipals {
 public:
  // A missing file means no named principals yet; a damaged one refuses to start.
  static Result<std::unique_ptr<AdminPrincipals>> open(std::filesystem::path file,
                                                       std::string bootstrap_token);

  struct Created {
    Principal principal;
    std::string token;  // the only time it exists outside the caller's hands
  };
  // Name: 1-64 of [A-Za-z0-9._@-]. CONFLICT if an unrevoked principal has that name.
  Result<Created> create(const std::string& name, Role role);
  std::vector<Principal> list() const;
  // NOT_FOUND for an unknown id or name; `false` if it was already revoked.
  Result<bool> revoke(const std::string& id_or_name, Principal* revoked = nullptr);

  // Who presents `token`. PERMISSION_DENIED names a revoked principal; UNAUTHENTICATED-
  // like failures are NOT_FOUND. Constant-time in the secret (hash lookup). Thread-safe.
  Result<Principal> authenticate(std::string_view token) const;

  // The principal id a presented token claims ("tadm_<id>_…"), for aggregating failures;
  // "" if it does not look like one of ours.
  static std::string claimedId(std::string_view token);

 private:
  Status persistLocked() const;

  struct Entry {
    Principal principal;
    std::string sha256_hex;
  };
  std::filesystem::path file_;
  std::string bootstrap_token_;
  mutable std::shared_mutex mu_;
  std::map<std::string, Entry> by_id_;
  std::map<std::string, std::string> id_by_hash_;
};

}  // namespace trellis::kernel::admin
