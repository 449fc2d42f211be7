// The admin API's plugin lifecycle endpoints: the install policy hook decides, activation
// errors come back as problem details naming the reason.
#include "runtime/plugin_control.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <thread>

#include "support/test_support.h"

namespace {

using trellis::kernel::runtime::ActiveRoutes;
using trellis::kernel::runtime::HostServices;
using trellis::kernel::runtime::InstallCheck;
using trellis::kernel::runtime::PluginControl;
using trellis::kernel::runtime::PluginManager;
namespace bhttp = boost::beast::http;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

trellis::kernel::http::Request post(const std::string& target, const std::string& body = "") {
  trellis::kernel::http::Request req{bhttp::verb::post, target, 11};
  req.body() = body;
  req.prepare_payload();
  return req;
}

class PluginControlTest : public ::testing::Test {
 protected:
  PluginControlTest() { manager_.startAll({dir_.path()}, {}); }

  // The answer, or nullopt for a path that is not ours; *answered_on gets the thread that
  // answered.
  std::optional<trellis::kernel::http::Response> call(const std::string& target,
                                                      const std::string& body = "",
                                                      std::thread::id* answered_on = nullptr) {
    auto req = post(target, body);
    std::string_view path = req.target();
    std::promise<std::pair<trellis::kernel::http::Response, std::thread::id>> answer;
    auto done = answer.get_future();
    if (!control_.handle(req, path, [&](trellis::kernel::http::Response res) {
          answer.set_value({std::move(res), std::this_thread::get_id()});
        })) {
      return std::nullopt;
    }
    auto [res, thread] = done.get();
    if (answered_on) *answered_on = thread;
    return std::move(res);
  }

  trellis::test::TempDir dir_;
  PluginManager manager_{HostServices{}};
  ActiveRoutes routes_;
  PluginControl control_{manager_, routes_, 1s};
};

constexpr const char* kCheck =
    R"({"id":"acme/spy","version":"1.0.0","publisher":"4cd420c2477b1425",)"
    R"("source":"mirror /srv/m","capabilities":["egress","kv"]})";

TEST_F(PluginControlTest, InstallCheckAllowsWhenNoPolicyIsConnected) {
  auto res = call("/v1/plugins/install-check", kCheck);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 200);
  EXPECT_NE(res->body().find("\"allowed\": true"), std::string::npos) << res->body();
}

TEST_F(PluginControlTest, InstallCheckAsksThePolicyAndReportsItsReason) {
  InstallCheck seen;
  control_.setInstallPolicy([&](const InstallCheck& c) -> std::optional<std::string> {
    seen = c;
    for (const auto& cap : c.capabilities) {
      if (cap == "egress") return "plugins with egress need a security review";
    }
    return std::nullopt;
  });
  std::thread::id answered_on;
  auto res = call("/v1/plugins/install-check", kCheck, &answered_on);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 403);
  // The policy (Lua, in trellisd) ran on the control's own thread, not the admin listener's.
  EXPECT_NE(answered_on, std::this_thread::get_id());
  EXPECT_NE(res->body().find("the on_plugin_install policy denied acme/spy@1.0.0: plugins with "
                             "egress need a security review"),
            std::string::npos)
      << res->body();
  EXPECT_EQ(seen.publisher, "4cd420c2477b1425");
  EXPECT_EQ(seen.source, "mirror /srv/m");
  EXPECT_EQ(seen.capabilities, (std::vector<std::string>{"egress", "kv"}));

  auto malformed = call("/v1/plugins/install-check", "{\"id\":1}");
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->result_int(), 400);
}

TEST_F(PluginControlTest, ActivatingAPluginThatIsNotInstalledSaysSo) {
  auto res = call("/v1/plugins/acme/hello/activate");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 404);
  EXPECT_NE(res->body().find("acme/hello is not installed in any plugin folder"), std::string::npos)
      << res->body();
  auto bad = call("/v1/plugins/Acme/x/activate");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->result_int(), 400);
  EXPECT_FALSE(call("/v1/plugins/acme/hello/explode"));
}

TEST_F(PluginControlTest, ActivateRefusesABadIsolationRequestNamingTheProblem) {
  for (const auto& [body, message] : std::vector<std::pair<std::string, std::string>>{
           {R"({"isolation":"sandboxed"})",
            R"(isolation: expected \"process\" or \"in-process\", got \"sandboxed\")"},
           {R"({"isolation":["process"]})", R"(isolation: expected \"process\")"},
           {R"({"dedicated_tenants":["globex"]})", "dedicated_tenants needs"},
           {R"({"isolation":"process","dedicated_tenants":"globex"})",
            "dedicated_tenants: expected an array of tenant ids"},
           {R"({"isolation":"process","dedicated_tenants":[7]})",
            "dedicated_tenants[0]: expected a tenant id"},
           {R"({"version":"1.0.0","mode":"process"})", R"(unknown member \"mode\")"},
           {R"({"version":"one"})", "one"},
           {"[]", "body must be"},
       }) {
    SCOPED_TRACE(body);
    auto res = call("/v1/plugins/acme/hello/activate", body);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result_int(), 400) << res->body();
    EXPECT_NE(res->body().find(message), std::string::npos) << res->body();
  }
  // A well-formed request gets as far as looking for the plugin.
  auto res = call("/v1/plugins/acme/hello/activate",
                  R"({"isolation":"process","dedicated_tenants":["globex"]})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result_int(), 404) << res->body();
}

}  // namespace
