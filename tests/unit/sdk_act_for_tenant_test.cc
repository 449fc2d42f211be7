// The C++ SDK's Context::actForTenant against a host table that plays the kernel's part:
// the lambda gets a Context on the ctx the host issued, its failure comes back with its
// message, and a host without the slot (before ABI 1.2) is reported as such. The kernel's
// side is tested end to end in tests/integration/system_plugins_test.cc.
#include <gtest/gtest.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#include "trellis/plugin.hpp"

namespace trellis {
namespace {

// Two distinct ctx addresses; the SDK never looks inside a ctx.
alignas(8) char outer_storage, inner_storage;
const trellis_ctx* const kOuter = reinterpret_cast<const trellis_ctx*>(&outer_storage);
const trellis_ctx* const kInner = reinterpret_cast<const trellis_ctx*>(&inner_storage);

// What the fake host saw and says, shared by its slots.
struct FakeHost {
  std::string tenant, reason, error;
  trellis_status refuse = TRELLIS_OK;  // non-OK: refuse without running the function
} fake;

trellis_status fakeAct(const trellis_ctx* ctx, trellis_str tenant, trellis_str reason,
                       trellis_tenant_fn fn, void* user) {
  if (ctx != kOuter) return TRELLIS_INVALID;
  fake.tenant = std::string(toView(tenant));
  fake.reason = std::string(toView(reason));
  if (fake.refuse != TRELLIS_OK) {
    fake.error = "act_for_tenant: no tenant \"" + fake.tenant + "\"";
    return fake.refuse;
  }
  return fn(user, kInner);  // the kernel passes the inner ctx's error on as the outer's
}
void fakeSetError(const trellis_ctx*, trellis_str message) {
  fake.error = std::string(toView(message));
}
trellis_status fakeLastError(const trellis_ctx*, trellis_str* out) {
  *out = toStr(fake.error);
  return TRELLIS_OK;
}

trellis_host_api fakeHost() {
  trellis_host_api host{};
  host.struct_size = sizeof(trellis_host_api);
  host.abi_major = TRELLIS_ABI_MAJOR;
  host.abi_minor = TRELLIS_ABI_MINOR;
  host.set_error = fakeSetError;
  host.last_error = fakeLastError;
  host.act_for_tenant = fakeAct;
  return host;
}

class SdkActForTenantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake = FakeHost{};
    host_ = fakeHost();
    detail::hostSlot() = &host_;
  }
  void TearDown() override { detail::hostSlot() = nullptr; }
  trellis_host_api host_;
};

TEST_F(SdkActForTenantTest, TheFunctionRunsOnTheCtxTheHostIssued) {
  Context outer(&host_, kOuter);
  const trellis_ctx* seen = nullptr;
  Status s = outer.actForTenant("acme", "monthly invoice", [&](Context& acme) {
    seen = acme.raw();
    return Status::ok();
  });
  EXPECT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(seen, kInner);
  EXPECT_EQ(fake.tenant, "acme");
  EXPECT_EQ(fake.reason, "monthly invoice");
}

TEST_F(SdkActForTenantTest, TheFunctionsFailureComesBackWithItsMessage) {
  Context outer(&host_, kOuter);
  Status s = outer.actForTenant("acme", "repair",
                                [](Context&) { return Status::conflict("invoice changed"); });
  EXPECT_EQ(s.code(), StatusCode::kConflict);
  EXPECT_EQ(s.message(), "invoice changed");
  Status thrown = outer.actForTenant("acme", "repair",
                                     [](Context&) -> Status { throw std::runtime_error("boom"); });
  EXPECT_EQ(thrown.code(), StatusCode::kInternal);
  EXPECT_EQ(thrown.message(), "uncaught exception: boom");
}

TEST_F(SdkActForTenantTest, AHostRefusalIsReportedAndTheFunctionNeverRuns) {
  fake.refuse = TRELLIS_NOT_FOUND;
  Context outer(&host_, kOuter);
  bool ran = false;
  Status s = outer.actForTenant("nobody", "why", [&](Context&) {
    ran = true;
    return Status::ok();
  });
  EXPECT_FALSE(ran);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "act_for_tenant: no tenant \"nobody\"");
}

TEST_F(SdkActForTenantTest, AnOlderHostWithoutTheSlotSaysWhichAbiItNeeds) {
  host_.struct_size = offsetof(trellis_host_api, act_for_tenant);
  Context outer(&host_, kOuter);
  Status s = outer.actForTenant("acme", "why", [](Context&) { return Status::ok(); });
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_EQ(s.message(), "the host does not offer act_for_tenant (needs ABI 1.2)");
}

}  // namespace
}  // namespace trellis
