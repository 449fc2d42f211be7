// Where applied policies live: <data_dir>/policies/global/ and
// <data_dir>/policies/tenants/<id>/, one v<N>.lua (+ v<N>.name, the file name the admin
// applied) per version and a `state` file naming the active version and the earlier ones a
// rollback returns to. Every write is atomic (util::writeFileAtomically), so a crash leaves
// either the old or the new version active.
//
//   auto store = PolicyStore::open(data_dir / "policies");
//   auto v = (*store)->save("", "example.lua", source);   // "" = the global policy
//   auto back = (*store)->rollback("");                    // the version before, now active
//   (*store)->deactivate("acme");                          // acme falls back to the global
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::kernel::lua {

struct StoredPolicy {
  std::string tenant;  // empty: the global policy
  uint64_t version = 0;
  std::string name;  // "example.lua"
  std::string source;
  int64_t applied_at_ms = 0;  // when this version last became active
};

class PolicyStore {
 public:
  // Creates `dir` if missing (mode 0700: policies may name internal addresses).
  static Result<std::unique_ptr<PolicyStore>> open(const std::filesystem::path& dir);

  // The active version of every scope that has one.
  Result<std::vector<StoredPolicy>> loadActive() const;
  // Stores `source` as the next version of the scope and makes it active. INVALID for a
  // bad tenant id.
  Result<StoredPolicy> save(std::string_view tenant, std::string_view name,
                            std::string_view source);
  // Deactivates the scope's policy (the active version joins the history, so a rollback
  // brings it back). NOT_FOUND if none is active.
  Status deactivate(std::string_view tenant);
  // Deletes every version of a tenant's policy (the tenant was deleted). OK if none.
  Status purge(std::string_view tenant);
  // Makes the version active before the current one active again. CONFLICT if there is
  // none, NOT_FOUND if the scope has no policy. With commit = false, only returns the
  // version a rollback would activate (so the caller can compile it first).
  Result<StoredPolicy> rollback(std::string_view tenant, bool commit = true);

 private:
  explicit PolicyStore(std::filesystem::path dir) : dir_(std::move(dir)) {}
  struct State;
  Result<std::filesystem::path> scopeDir(std::string_view tenant) const;
  std::filesystem::path dir_;
};

}  // namespace trellis::kernel::lua
