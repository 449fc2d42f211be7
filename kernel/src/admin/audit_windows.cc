#include "admin/audit_windows.h"

#include "trellis/tenants/identity.h"

namespace trellis::kernel::admin {

std::optional<uint64_t> AuditWindows::shouldRecord(const std::string& key_id,
                                                   const std::string& source) {
  constexpr auto kWindow = std::chrono::minutes(1);
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (windows_.size() >= max_buckets_) {
    std::erase_if(windows_, [&](const auto& kv) { return now - kv.second.start >= kWindow; });
    if (windows_.size() >= max_buckets_) windows_.clear();  // all fresh: a flood; start over
  }
  auto [it, fresh] = windows_.try_emplace({key_id, source}, Window{now, 0});
  if (!fresh && now - it->second.start < kWindow) {
    ++it->second.count;
    return std::nullopt;
  }
  const uint64_t previous = fresh ? 0 : it->second.count;
  it->second = Window{now, 1};
  return previous;
}

std::string credentialFingerprint(std::string_view credential) {
  if (credential.empty()) return "";
  return "sha256:" + tenants::sha256Hex(credential).substr(0, 12);
}

}  // namespace trellis::kernel::admin
