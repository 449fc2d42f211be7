// The admin API's declarative configuration (runtime/config_admin.h) around a registry
// whose commit fails after everything was checked: the policies it had already activated
// are put back, so an apply is all or nothing across the registry and the policy engine.
#include "runtime/config_admin.h"

#include <gtest/gtest.h>

#include <future>

#include "support/test_support.h"
#include "trellis/kernel/lua/policy_store.h"

namespace trellis::kernel::runtime {
namespace {

namespace bhttp = boost::beast::http;
using tenants::TenantRegistry;

// The real registry, except that committing a desired state fails as a database that went
// away between the dry run and the commit would make it fail.
class CommitFails final : public TenantRegistry {
 public:
  explicit CommitFails(TenantRegistry& real) : real_(real) {}
  Result<tenants::StatePlan> applyState(const tenants::DesiredState& state, bool dry_run) override {
    if (!dry_run) return Status::unavailable("system database: apply state failed: disk I/O error");
    return real_.applyState(state, dry_run);
  }
  Status definePlans(std::vector<tenants::Plan> p) override { return real_.definePlans(p); }
  Status upsertPlans(std::vector<tenants::Plan> p) override { return real_.upsertPlans(p); }
  std::vector<tenants::Plan> plans() const override { return real_.plans(); }
  Result<tenants::TenantRecord> create(tenants::TenantRecord t) override { return real_.create(t); }
  Result<tenants::TenantRecord> update(tenants::TenantRecord t) override { return real_.update(t); }
  Result<tenants::TenantRecord> get(std::string_view id) const override { return real_.get(id); }
  std::vector<tenants::TenantRecord> list() const override { return real_.list(); }
  Status setStatus(std::string_view id, tenants::TenantStatus s) override {
    return real_.setStatus(id, s);
  }
  Status remove(std::string_view id) override { return real_.remove(id); }
  Result<tenants::NewKey> createKey(std::string_view t, std::optional<int64_t> ttl,
                                    std::optional<uint64_t> max) override {
    return real_.createKey(t, ttl, max);
  }
  Result<tenants::NewKey> rotateKey(std::string_view t, std::string_view old,
                                    std::optional<int64_t> ttl) override {
    return real_.rotateKey(t, old, ttl);
  }
  Result<tenants::KeyInfo> importKeyHash(std::string_view t, std::string_view h) override {
    return real_.importKeyHash(t, h);
  }
  std::vector<tenants::KeyInfo> listKeys(std::string_view t) const override {
    return real_.listKeys(t);
  }
  Status revokeKey(std::string_view id) override { return real_.revokeKey(id); }
  Result<tenants::CertCredential> addCertCredential(std::string_view t, tenants::CertSelector s,
                                                    std::optional<int64_t> e) override {
    return real_.addCertCredential(t, std::move(s), e);
  }
  std::vector<tenants::CertCredential> listCertCredentials(std::string_view t) const override {
    return real_.listCertCredentials(t);
  }
  Status revokeCertCredential(std::string_view t, std::string_view id) override {
    return real_.revokeCertCredential(t, id);
  }
  Status setPluginConfig(std::string_view t, std::string_view p,
                         std::optional<std::string> json) override {
    return real_.setPluginConfig(t, p, std::move(json));
  }
  Result<std::vector<tenants::Drift>> applyDeclared(
      const std::vector<tenants::TenantRecord>& d) override {
    return real_.applyDeclared(d);
  }
  tenants::Resolution resolve(std::string_view k) const override { return real_.resolve(k); }
  std::shared_ptr<const tenants::TenantView> view(std::string_view id) const override {
    return real_.view(id);
  }
  tenants::Resolution resolveCertificate(const tenants::PresentedCertificate& c) const override {
    return real_.resolveCertificate(c);
  }

 private:
  TenantRegistry& real_;
};

constexpr const char* kOldGlobal = "function on_request(ctx, req) end\n";

class ConfigAdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = TenantRegistry::openSqlite(dir_.path() / "system.db");
    ASSERT_TRUE(reg) << reg.status().toString();
    registry_ = std::move(*reg);
    auto store = lua::PolicyStore::open(dir_.path() / "policies");
    ASSERT_TRUE(store);
    lua::PolicyOptions options;
    options.budget = lua::Budget{.instructions = 100'000,
                                 .memory_bytes = 1024 * 1024,
                                 .wall_time = std::chrono::seconds(10)};
    engine_ = std::make_unique<lua::PolicyEngine>(options, std::move(*store), nullptr, nullptr);
    ASSERT_TRUE(engine_->start());
    ASSERT_TRUE(engine_->apply("", "old.lua", kOldGlobal));
    plugins_.startAll({dir_.path() / "plugins"}, {});
    failing_ = std::make_unique<CommitFails>(*registry_);
    admin_ = std::make_unique<ConfigAdmin>(*failing_, plugins_, *engine_);
  }

  http::Response post(const std::string& target, const std::string& body) {
    http::Request req{bhttp::verb::post, target, 11};
    req.body() = body;
    req.prepare_payload();
    std::promise<http::Response> answer;
    EXPECT_TRUE(
        admin_->handle(req, target, [&](http::Response res) { answer.set_value(std::move(res)); }));
    return answer.get_future().get();
  }

  test::TempDir dir_;
  std::unique_ptr<TenantRegistry> registry_;
  std::unique_ptr<lua::PolicyEngine> engine_;
  PluginManager plugins_{HostServices{}};
  std::unique_ptr<CommitFails> failing_;
  std::unique_ptr<ConfigAdmin> admin_;
};

constexpr const char* kState = R"(
tenants: [{id: acme, labels: {team: a}}]
policies:
  global: {name: new.lua, source: "function on_request(ctx, req) return policy.allow() end"}
  tenants: {acme: {name: acme.lua, source: "function on_response(ctx, res) end"}}
)";

TEST_F(ConfigAdminTest, ACommitThatFailsAfterThePoliciesPutsThemBack) {
  auto planned = post("/v1/config/plan", kState);
  ASSERT_EQ(planned.result_int(), 200) << planned.body();
  EXPECT_NE(planned.body().find("\"update\""), std::string::npos) << planned.body();
  EXPECT_NE(planned.body().find("policy of tenant \\\"acme\\\""), std::string::npos);

  auto applied = post("/v1/config/apply", kState);
  EXPECT_EQ(applied.result_int(), 503) << applied.body();
  EXPECT_NE(applied.body().find("disk I/O error"), std::string::npos) << applied.body();
  // Both policies had been activated before the commit; both are back as they were.
  auto global = engine_->activeSource("");
  ASSERT_TRUE(global);
  EXPECT_EQ(global->name, "old.lua");
  EXPECT_EQ(global->source, kOldGlobal);
  EXPECT_FALSE(engine_->activeSource("acme"));
  EXPECT_FALSE(registry_->get("acme"));
}

TEST_F(ConfigAdminTest, ABadFileOrPolicyChangesNothingAndSaysWhy) {
  const std::pair<std::string, std::string> refused[] = {
      {"tenants: [{id: acme, colour: red}]\n", "tenants[0].colour: unknown key"},
      {"tenants: [{id: acme, plugins: [acme/missing]}]\n",
       "plugins.enabled and restart trellisd first"},
      {"policies: {tenants: {nobody: {name: x.lua, source: \"function on_request() end\"}}}\n",
       "no such tenant in the registry or the file"},
      {"policies: {global: {name: bad.lua, source: \"function on_request(\"}}\n", "bad.lua:1:"},
  };
  for (const auto& [body, why] : refused) {
    auto res = post("/v1/config/apply", body);
    EXPECT_EQ(res.result_int(), 400) << body << " -> " << res.body();
    EXPECT_NE(res.body().find(why), std::string::npos) << res.body();
    EXPECT_EQ(engine_->activeSource("")->name, "old.lua");
  }
  EXPECT_TRUE(registry_->list().empty());
}

}  // namespace
}  // namespace trellis::kernel::runtime
