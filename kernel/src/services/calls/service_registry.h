// Which plugin answers each inter-plugin service, and how many calls it is answering. A
// provider is bound when it becomes active and unbound when it stops; a hot upgrade binds
// the new version (new calls go there at once) and then drains the old one's calls in
// flight before it is stopped and unloaded. Callers hold a Lease for the length of a call,
// so a provider is never unloaded under a running call and no pointer into it is ever
// handed to a plugin (the OSGi/Celix use-after-free lesson).
//
//   registry.bind(provider);                   // at activation
//   if (auto lease = registry.acquire("secrets")) lease->plugin()->…;
//   registry.unbind(provider);                 // at stop: waits for its calls to finish
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace trellis::kernel::runtime {
class PluginInstance;
}

namespace trellis::kernel::services {

class ServiceRegistry {
  struct Provider {
    runtime::PluginInstance* plugin;
    std::atomic<int64_t> in_flight{0};
  };

 public:
  // A provider pinned for one call: while it lives, the provider is not unloaded.
  class Lease {
   public:
    explicit Lease(Provider* p) : p_(p) {}
    Lease(Lease&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (p_) p_->in_flight.fetch_sub(1, std::memory_order_release);
    }
    runtime::PluginInstance* plugin() const { return p_->plugin; }

   private:
    Provider* p_;
  };

  ServiceRegistry() = default;
  ServiceRegistry(const ServiceRegistry&) = delete;
  ServiceRegistry& operator=(const ServiceRegistry&) = delete;

  // Routes calls for every service `plugin`'s manifest provides to it. A provider it
  // replaces (an older version) keeps its calls in flight until unbind(old) drains them.
  void bind(runtime::PluginInstance& plugin);
  // Stops routing calls to `plugin` and waits until none of its calls runs. Returns false
  // if calls still ran after `patience` (it keeps waiting, logging, until they end: the
  // library cannot be unloaded under a running call).
  bool unbind(const runtime::PluginInstance& plugin,
              std::chrono::milliseconds patience = std::chrono::seconds(5));

  // The active provider of `service`, or nullopt (UNAVAILABLE to the caller).
  std::optional<Lease> acquire(std::string_view service);

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<Provider>, Hash, std::equal_to<>> active_;
  std::vector<std::unique_ptr<Provider>> retiring_;  // replaced, calls may still run
};

}  // namespace trellis::kernel::services
