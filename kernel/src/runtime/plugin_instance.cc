#include "runtime/plugin_instance.h"

#include <spdlog/spdlog.h>

#include "runtime/system_grants.h"
#include "trellis/kernel/config/config_merge.h"

namespace trellis::kernel::runtime {

bool PluginInstance::isSystemPlugin() const {
  return manifest_.scope == plugin::PluginScope::System && services_.system_grants &&
         services_.system_grants->isGranted(manifest_.id);
}

Result<std::string_view> PluginInstance::config(std::string_view path) {
  std::lock_guard lock(config_mu_);
  if (auto it = config_cache_.find(path); it != config_cache_.end()) {
    return std::string_view(it->second);
  }
  auto answer = config::configValue(config_json_, path);
  if (!answer) return answer.status();
  return std::string_view(
      config_cache_.emplace(std::string(path), std::move(*answer)).first->second);
}

Result<std::string> PluginInstance::config(std::string_view path,
                                           const tenants::TenantView& tenant) {
  auto overrides = tenant.plugin_config.find(manifest_.id);
  if (overrides == tenant.plugin_config.end()) {
    auto global = config(path);
    if (!global) return global.status();
    return std::string(*global);
  }
  std::lock_guard lock(config_mu_);
  TenantConfig& entry = tenant_config_[tenant.id];
  if (entry.overrides != overrides->second || entry.merged.empty()) {
    entry = {overrides->second, mergedFor(tenant.id, overrides->second), {}};
  }
  if (auto it = entry.answers.find(path); it != entry.answers.end()) return it->second;
  auto answer = config::configValue(entry.merged, path);
  if (!answer) return answer.status();
  return entry.answers.emplace(std::string(path), std::move(*answer)).first->second;
}

// The admin API checked the overrides against the schema of the version then running; an
// upgrade may have narrowed it. What the running version refuses is ignored, never seen.
std::string PluginInstance::mergedFor(const std::string& tenant, const std::string& overrides) {
  Status fit = manifest_.tenant_config ? manifest_.tenant_config->validate(overrides)
                                       : Status::invalid("version " + manifest_.version.toString() +
                                                         " declares no tenant_config");
  if (fit) {
    if (auto merged = config::mergeConfig(config_json_, overrides)) return std::move(*merged);
  }
  spdlog::warn("plugin {}: tenant {}'s configuration overrides are ignored: {}", manifest_.id,
               tenant, fit ? "they cannot be merged" : fit.message());
  return config_json_.empty() ? std::string("null") : config_json_;
}

}  // namespace trellis::kernel::runtime
