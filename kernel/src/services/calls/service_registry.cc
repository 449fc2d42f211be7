#include "services/calls/service_registry.h"

#include <spdlog/spdlog.h>

#include <thread>

#include "runtime/plugin_instance.h"

namespace trellis::kernel::services {

void ServiceRegistry::bind(runtime::PluginInstance& plugin) {
  std::unique_lock lock(mu_);
  for (const auto& service : plugin.manifest().provides) {
    auto fresh = std::make_unique<Provider>();
    fresh->plugin = &plugin;
    auto& slot = active_[service.name];
    if (slot) retiring_.push_back(std::move(slot));
    slot = std::move(fresh);
  }
}

bool ServiceRegistry::unbind(const runtime::PluginInstance& plugin,
                             std::chrono::milliseconds patience) {
  std::vector<std::unique_ptr<Provider>> leaving;
  {
    std::unique_lock lock(mu_);
    for (auto it = active_.begin(); it != active_.end();) {
      if (it->second->plugin == &plugin) {
        leaving.push_back(std::move(it->second));
        it = active_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = retiring_.begin(); it != retiring_.end();) {
      if ((*it)->plugin == &plugin) {
        leaving.push_back(std::move(*it));
        it = retiring_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // No new call can find these now; wait for the ones that did.
  auto busy = [&] {
    for (const auto& p : leaving) {
      if (p->in_flight.load(std::memory_order_acquire) > 0) return true;
    }
    return false;
  };
  bool in_time = true;
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (busy()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      spdlog::warn("plugin {} still answers service calls; waiting for them before it stops",
                   plugin.id());
      in_time = false;
      deadline = std::chrono::steady_clock::now() + patience;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return in_time;
}

std::optional<ServiceRegistry::Lease> ServiceRegistry::acquire(std::string_view service) {
  std::shared_lock lock(mu_);
  auto it = active_.find(service);
  if (it == active_.end()) return std::nullopt;
  // Counted under the lock, so unbind (which takes it exclusively first) sees every call.
  it->second->in_flight.fetch_add(1, std::memory_order_acq_rel);
  return Lease(it->second.get());
}

}  // namespace trellis::kernel::services
