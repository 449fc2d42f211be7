// Per-tenant metrics stay bounded however many tenants there are.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/admin_plane.h"

namespace trellis::kernel::runtime {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TenantMetricsTest, NamesTheBusiestTenantsAndSumsTheRestUnderOther) {
  tenants::Admission admission;
  const std::pair<const char*, int> traffic[] = {{"a", 5}, {"b", 1}, {"c", 9}, {"d", 2}};
  for (const auto& [tenant, requests] : traffic) {
    for (int i = 0; i < requests; ++i) (void)admission.admit(tenant, tenants::Quotas{}, 0);
  }
  std::string text = renderTenantMetrics(admission, 2);
  EXPECT_THAT(text,
              HasSubstr("trellis_tenant_requests_total{tenant=\"c\",outcome=\"admitted\"} 9"));
  EXPECT_THAT(text,
              HasSubstr("trellis_tenant_requests_total{tenant=\"a\",outcome=\"admitted\"} 5"));
  EXPECT_THAT(text,
              HasSubstr("trellis_tenant_requests_total{tenant=\"_other\",outcome=\"admitted\"} 3"));
  EXPECT_THAT(text, Not(HasSubstr("tenant=\"b\"")));
  EXPECT_THAT(text, Not(HasSubstr("tenant=\"d\"")));
  EXPECT_THAT(text, HasSubstr("# TYPE trellis_tenant_requests_in_flight gauge"));
  EXPECT_THAT(text, HasSubstr("trellis_tenant_requests_in_flight{tenant=\"c\"} 0"));
}

TEST(TenantMetricsTest, FewTenantsHaveNoOtherSeries) {
  tenants::Admission admission;
  { auto held = admission.admit("acme", tenants::Quotas{}, 0); }
  auto in_flight = admission.admit("acme", tenants::Quotas{}, 0);
  std::string text = renderTenantMetrics(admission, 100);
  EXPECT_THAT(text, HasSubstr("trellis_tenant_requests_in_flight{tenant=\"acme\"} 1"));
  EXPECT_THAT(text, Not(HasSubstr("{tenant=\"_other\"")));
}

}  // namespace
}  // namespace trellis::kernel::runtime
