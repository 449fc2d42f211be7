// The provider registry: calls find the active provider, a newer version takes new calls
// at once, and unbinding waits for the calls a provider is still answering.
#include "services/calls/service_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "runtime/plugin_instance.h"

namespace trellis::kernel::services {
namespace {

std::unique_ptr<runtime::PluginInstance> provider(const std::string& version) {
  plugin::Manifest m;
  m.id = "acme/vault";
  m.version = *plugin::Version::parse(version);
  m.provides.push_back({"secrets", m.version});
  return std::make_unique<runtime::PluginInstance>(m, "/nonexistent", "{}",
                                                   runtime::HostServices{});
}

TEST(ServiceRegistryTest, NoProviderIsUnavailable) {
  ServiceRegistry registry;
  EXPECT_FALSE(registry.acquire("secrets"));
  auto v1 = provider("1.0.0");
  registry.bind(*v1);
  auto lease = registry.acquire("secrets");
  ASSERT_TRUE(lease);
  EXPECT_EQ(lease->plugin(), v1.get());
  EXPECT_FALSE(registry.acquire("other"));
}

TEST(ServiceRegistryTest, UpgradeTakesNewCallsAndOldOneDrains) {
  ServiceRegistry registry;
  auto v1 = provider("1.0.0"), v2 = provider("2.0.0");
  registry.bind(*v1);
  std::optional<ServiceRegistry::Lease> in_flight = registry.acquire("secrets");
  registry.bind(*v2);
  EXPECT_EQ(registry.acquire("secrets")->plugin(), v2.get());

  std::atomic<bool> unbound{false};
  auto stopping = std::async(std::launch::async, [&] {
    registry.unbind(*v1);
    unbound = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(unbound);  // v1 still answers a call
  in_flight.reset();
  stopping.get();
  EXPECT_TRUE(unbound);
  EXPECT_EQ(registry.acquire("secrets")->plugin(), v2.get());  // v2 unaffected

  registry.unbind(*v2);
  EXPECT_FALSE(registry.acquire("secrets"));
}

}  // namespace
}  // namespace trellis::kernel::services
