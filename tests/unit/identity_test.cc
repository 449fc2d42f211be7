#include "trellis/tenants/identity.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <thread>
#include <vector>

namespace trellis::tenants {
namespace {

TEST(IdentityTest, Sha256HexIsLowercaseHex) {
  EXPECT_EQ(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256Hex(std::string("a\0b", 3)).size(), 64u);
  EXPECT_NE(sha256Hex(std::string("a\0b", 3)), sha256Hex("a"));
}

TEST(IdentityTest, ValidTenantIds) {
  for (const std::string& ok :
       std::vector<std::string>{"a", "0", "acme", "acme-2", "a-", std::string(63, 'z')}) {
    EXPECT_TRUE(isValidTenantId(ok)) << ok;
  }
  for (const std::string& bad :
       std::vector<std::string>{"", "-a", "A", "acme_2", "ac me", "../x", "a/b", "a.b", "é",
                                std::string(64, 'z'), std::string("a\0", 2)}) {
    EXPECT_FALSE(isValidTenantId(bad)) << bad;
  }
}

TEST(IdentityTest, ParsesAndPrintsDigestHex) {
  auto d = parseSha256Hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD");
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, sha256Digest("abc"));
  EXPECT_EQ(sha256HexOf(*d), sha256Hex("abc"));
  EXPECT_FALSE(parseSha256Hex("abc"));
  EXPECT_FALSE(parseSha256Hex(std::string(64, 'g')));
}

}  // namespace
}  // namespace trellis::tenants
