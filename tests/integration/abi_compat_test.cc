// ABI compatibility on a real trellisd: a plugin compiled against the frozen ABI 1.1
// header (tests/fixtures/abi-1-1) loads on this host and every 1.0/1.1 slot it calls still
// works — the 1.2 slots were appended, nothing moved.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

std::map<std::string, std::string> bearer(const std::string& key) {
  return {{"Authorization", "Bearer " + key}};
}

TEST(AbiCompatTest, PluginBuiltAgainstFrozenAbi11HeaderServesOnThisHost) {
  TrellisdProcess server(defaultTestConfig("    - id: fixture/abi-1-1\n"));
  ASSERT_TRUE(server.start()) << server.log();

  auto put = request(server.port(), "PUT", "/fixture/abi-1-1/colour", bearer("acme-key"), "teal");
  ASSERT_EQ(put.status, 201) << put.body << server.log();
  // ctx_tenant (1.0) and ctx_principal (1.1): the tenant and the id of the key it used.
  EXPECT_THAT(put.body, MatchesRegex("acme cfg[0-9a-f]+"));

  auto get = request(server.port(), "GET", "/fixture/abi-1-1/colour", bearer("acme-key"));
  EXPECT_EQ(get.status, 200);
  EXPECT_EQ(get.body, "teal");

  // Another tenant's KV is its own; last_error (1.1) explains the miss.
  auto other = request(server.port(), "GET", "/fixture/abi-1-1/colour", bearer("globex-key"));
  EXPECT_EQ(other.status, 404);
  EXPECT_FALSE(other.body.empty());
  EXPECT_THAT(server.log(), Not(HasSubstr("host table lacks the ABI 1.1 slots")));
}

}  // namespace
}  // namespace trellis::test
