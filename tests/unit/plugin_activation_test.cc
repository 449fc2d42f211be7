// Hot activation in the plugin manager: a new plugin starts next to running ones, an
// upgrade whose on_init fails leaves the old version serving, a good upgrade swaps the
// route table, and the old version is unloaded only once no request holds the old table.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "runtime/plugin_manager.h"
#include "support/test_support.h"

namespace {

using trellis::kernel::runtime::ActiveRoutes;
using trellis::kernel::runtime::HostServices;
using trellis::kernel::runtime::PluginManager;
using trellis::kernel::runtime::PluginState;
using trellis::kernel::runtime::RouteTable;
using trellis::test::TempDir;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class PluginActivationTest : public ::testing::Test {
 protected:
  void install(const std::string& fixture, const std::string& as) {
    fs::copy(fs::path(TRELLIS_FIXTURE_DIR) / fixture, dir_ / as, fs::copy_options::recursive);
  }

  // The version serving GET /fixture/good, as the data plane would find it.
  std::string serving() {
    auto table = routes_.load();
    auto m = table->router.match("GET", "/fixture/good");
    if (!m) return "";
    return table->targets[m->target].plugin->manifest().version.toString();
  }

  void start() {
    manager_.startAll({dir_.path()}, {{"fixture/good", "{}"}});
    routes_.store(std::make_shared<const RouteTable>(manager_.buildRouteTable()));
  }

  TempDir dir_;
  PluginManager manager_{HostServices{}};
  ActiveRoutes routes_;
};

TEST_F(PluginActivationTest, ActivatesAPluginInstalledAfterStart) {
  start();
  EXPECT_EQ(serving(), "");
  install("good", "fixture.good@1.0.0");
  auto done = manager_.activate("fixture/good", routes_, 5s);
  ASSERT_TRUE(done) << done.status().message();
  EXPECT_EQ(done->version, "1.0.0");
  EXPECT_EQ(done->previous, "");
  EXPECT_EQ(serving(), "1.0.0");
}

TEST_F(PluginActivationTest, FailedInitOfTheNewVersionKeepsTheOldOneServing) {
  install("good", "fixture.good@1.0.0");
  start();
  auto before = routes_.load();
  install("good-v3-init-fails", "fixture.good@3.0.0");

  auto done = manager_.activate("fixture/good", routes_, 5s);
  ASSERT_FALSE(done);
  EXPECT_NE(done.status().message().find("fixture/good@3.0.0 failed: on_init returned INVALID: "
                                         "this version refuses to start"),
            std::string::npos)
      << done.status().message();
  EXPECT_EQ(routes_.load(), before);  // the very same table: nothing was swapped
  EXPECT_EQ(serving(), "1.0.0");
  ASSERT_EQ(manager_.read().plugins().size(), 1u);
  EXPECT_EQ(manager_.read().plugins()[0]->state.load(), PluginState::kActive);
}

TEST_F(PluginActivationTest, UpgradeSwapsRoutesButKeepsTheOldVersionLoadedWhileARequestHoldsIt) {
  install("good", "fixture.good@1.0.0");
  start();
  install("good-v2", "fixture.good@2.0.0");

  // A request still holds the old table: the old version must not be unloaded under it.
  std::shared_ptr<const RouteTable> in_flight = routes_.load();
  auto held = manager_.activate("fixture/good", routes_, 0ms);
  ASSERT_TRUE(held) << held.status().message();
  EXPECT_EQ(held->previous, "1.0.0");
  EXPECT_FALSE(held->drained);
  EXPECT_EQ(serving(), "2.0.0");
  // The held table still reaches a loaded 1.0.0.
  auto m = in_flight->router.match("GET", "/fixture/good");
  ASSERT_TRUE(m);
  EXPECT_EQ(in_flight->targets[m->target].plugin->state.load(), PluginState::kActive);
  EXPECT_NE(in_flight->targets[m->target].plugin->library, nullptr);
  in_flight.reset();  // the retired 1.0.0 is unloaded at shutdown (the manager's destructor)
}

TEST_F(PluginActivationTest, UpgradeWithNoRequestInFlightUnloadsTheOldVersionAtOnce) {
  install("good", "fixture.good@1.0.0");
  start();
  install("good-v2", "fixture.good@2.0.0");
  auto done = manager_.activate("fixture/good", routes_, 5s);
  ASSERT_TRUE(done) << done.status().message();
  EXPECT_TRUE(done->drained);
  EXPECT_EQ(serving(), "2.0.0");
  ASSERT_EQ(manager_.read().plugins().size(), 1u);
  EXPECT_EQ(manager_.read().plugins()[0]->manifest().version.toString(), "2.0.0");

  // Activating what already runs changes nothing.
  auto again = manager_.activate("fixture/good", routes_, 5s);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->already);
}

TEST_F(PluginActivationTest, ANamedVersionCanReplaceAHigherOne) {
  install("good", "fixture.good@1.0.0");
  install("good-v2", "fixture.good@2.0.0");
  start();
  EXPECT_EQ(serving(), "2.0.0");  // at start, the highest installed version runs

  auto down = manager_.activate("fixture/good", routes_, 5s,
                                trellis::kernel::plugin::Version::parse("1.0.0").value());
  ASSERT_TRUE(down) << down.status().message();
  EXPECT_EQ(down->previous, "2.0.0");
  EXPECT_EQ(serving(), "1.0.0");

  auto missing = manager_.activate("fixture/good", routes_, 5s,
                                   trellis::kernel::plugin::Version::parse("9.9.9").value());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.status().message(), "fixture/good@9.9.9 is not installed in any plugin folder");
  EXPECT_EQ(serving(), "1.0.0");
}

TEST_F(PluginActivationTest, DeactivateRefusesWhileADependentIsActive) {
  install("good", "fixture.good@1.0.0");
  install("needs-good", "fixture.needs-good@1.0.0");
  manager_.startAll({dir_.path()}, {{"fixture/good", "{}"}, {"fixture/needs-good", "{}"}});
  routes_.store(std::make_shared<const RouteTable>(manager_.buildRouteTable()));

  auto refused = manager_.deactivate("fixture/good", routes_, 5s);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.status().message(),
            "fixture/needs-good depends on fixture/good; deactivate it first");
  EXPECT_EQ(serving(), "1.0.0");

  ASSERT_TRUE(manager_.deactivate("fixture/needs-good", routes_, 5s));
  auto done = manager_.deactivate("fixture/good", routes_, 5s);
  ASSERT_TRUE(done) << done.status().message();
  EXPECT_TRUE(done->drained);
  EXPECT_EQ(serving(), "");
}

}  // namespace

// Admin threads list plugins while plugin control swaps them: a view never shows a plugin
// that is stopping or already freed (ASan turns the second into a failure).
TEST_F(PluginActivationTest, AReadViewNeverShowsAStoppedOrFreedPlugin) {
  install("good", "fixture.good@1.0.0");
  start();
  std::atomic<bool> done{false};
  std::atomic<int> views{0};
  std::thread reader([&] {
    while (!done) {
      const auto view = manager_.read();
      for (const auto* p : view.plugins()) {
        EXPECT_EQ(p->state.load(), PluginState::kActive) << p->manifest().version.toString();
        EXPECT_EQ(view.find(p->id()), p);
      }
      ++views;
    }
  });
  // On a loaded machine the reader may not run at all during 20 swaps: the swaps go on
  // until it has read while they happen.
  while (views == 0) std::this_thread::yield();
  const int before = views;
  for (int i = 0; i < 20 || views == before; ++i) {
    ASSERT_TRUE(manager_.deactivate("fixture/good", routes_, 5s));
    ASSERT_TRUE(manager_.activate("fixture/good", routes_, 5s));
  }
  done = true;
  reader.join();
  EXPECT_GT(views.load(), before);
}
