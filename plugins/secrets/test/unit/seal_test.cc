// The seal without a host: init hands out shares, unseal takes them one by one and checks
// what it is given, seal wipes.
#include "seal/seal.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "seal/share_token.h"

namespace trellis::secrets {
namespace {

Status keep(std::string_view) {
  return Status::ok();
}

std::vector<std::string> initShares(Seal& seal, int n, int t) {
  auto made = seal.init(n, t, keep);
  EXPECT_TRUE(made) << made.status().toString();
  std::vector<std::string> out;
  if (made) {
    for (const auto& s : *made) out.emplace_back(s.view());
  }
  return out;
}

TEST(SecretsSealTest, UnsealsShareByShareWithProgressAndSealsAgain) {
  Seal seal;
  auto shares = initShares(seal, 5, 3);
  ASSERT_EQ(shares.size(), 5u);
  EXPECT_TRUE(seal.status().sealed);
  EXPECT_FALSE(seal.withRoot([](const SecureBuffer&, std::string_view) { return Status::ok(); }));

  auto one = seal.unseal(shares[4]);
  ASSERT_TRUE(one);
  EXPECT_TRUE(one->sealed);
  EXPECT_EQ(one->progress, 1);
  EXPECT_EQ(one->threshold, 3);
  ASSERT_TRUE(seal.unseal(shares[1]));
  auto done = seal.unseal(shares[2]);
  ASSERT_TRUE(done) << done.status().toString();
  EXPECT_FALSE(done->sealed);
  EXPECT_EQ(done->root_check.size(), 8u);
  std::string check;
  ASSERT_TRUE(seal.withRoot([&](const SecureBuffer& root, std::string_view c) {
    EXPECT_EQ(root.size(), 32u);
    EXPECT_EQ(rootCheck(root), c);
    check = c;
    return Status::ok();
  }));

  seal.seal();
  EXPECT_TRUE(seal.status().sealed);
  auto refused = seal.withRoot([](const SecureBuffer&, std::string_view) { return Status::ok(); });
  EXPECT_EQ(refused.code(), StatusCode::kUnavailable);
  // Any other three shares give the same root key back.
  for (int i : {0, 3, 1}) ASSERT_TRUE(seal.unseal(shares[static_cast<size_t>(i)]));
  EXPECT_EQ(seal.status().root_check, check);
  EXPECT_FALSE(seal.status().sealed);
}

TEST(SecretsSealTest, DuplicateMistypedAndForeignSharesAreRefusedWithoutLosingProgress) {
  Seal a;
  Seal b;
  auto shares = initShares(a, 3, 2);
  auto other = initShares(b, 3, 2);
  ASSERT_TRUE(a.unseal(shares[0]));

  auto dup = a.unseal(shares[0]);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.status().message(), "share 1 was already given; progress kept");

  std::string typo = shares[1];
  typo[20] = typo[20] == 'a' ? 'b' : 'a';
  auto mistyped = a.unseal(typo);
  ASSERT_FALSE(mistyped);
  EXPECT_NE(mistyped.status().message().find("checksum"), std::string::npos);
  EXPECT_EQ(mistyped.status().message().find(typo.substr(15, 64)), std::string::npos);

  auto foreign = a.unseal(other[1]);
  ASSERT_FALSE(foreign);
  EXPECT_NE(foreign.status().message().find("belongs to root key"), std::string::npos);

  EXPECT_EQ(a.status().progress, 1);
  auto done = a.unseal(shares[2]);
  ASSERT_TRUE(done);
  EXPECT_FALSE(done->sealed);

  auto again = a.unseal(shares[1]);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.status().code(), StatusCode::kConflict);
}

// A share altered consistently (valid checksum, wrong bytes) is only caught once the
// threshold is reached: the combined key does not match the check value.
TEST(SecretsSealTest, AnAlteredShareIsCaughtWhenCombiningAndProgressResets) {
  Seal seal;
  auto shares = initShares(seal, 3, 2);
  auto token = decodeShare(shares[1]);
  ASSERT_TRUE(token);
  token->share.y.data()[0] ^= 1;
  std::string forged(encodeShare(*token).view());
  ASSERT_TRUE(seal.unseal(shares[0]));
  auto bad = seal.unseal(forged);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("do not combine"), std::string::npos);
  EXPECT_EQ(seal.status().progress, 0);
  EXPECT_TRUE(seal.status().sealed);
}

TEST(SecretsSealTest, InitRefusesBadParametersAndASecondInit) {
  Seal seal;
  EXPECT_EQ(seal.init(2, 3, keep).status().message(),
            "shares (2) must be at least the threshold (3)");
  EXPECT_EQ(seal.init(3, 1, keep).status().message(), "threshold must be at least 2");
  ASSERT_TRUE(seal.init(3, 2, keep));
  EXPECT_TRUE(seal.status().initialized);
  auto second = seal.init(3, 2, keep);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.status().code(), StatusCode::kConflict);
}

TEST(SecretsSealTest, AnInitThatCannotBeRecordedHandsOutNoShares) {
  Seal seal;
  auto made = seal.init(3, 2, [](std::string_view) { return Status::unavailable("disk full"); });
  ASSERT_FALSE(made);
  EXPECT_EQ(made.status().message(), "disk full");
  EXPECT_FALSE(seal.status().initialized);
  EXPECT_TRUE(seal.init(3, 2, keep));  // nothing was taken: a later init may succeed
}

TEST(SecretsSealTest, AStoreInitializedElsewhereTakesOnlyItsOwnRootsShares) {
  Seal other;
  auto foreign = initShares(other, 3, 2);
  Seal seal;  // a host that learned the store's root from storage
  seal.knowStoreRoot("0badc0de");
  EXPECT_TRUE(seal.status().initialized);
  auto refused = seal.unseal(foreign[0]);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.status().message(),
            "this share belongs to root key " + other.status().root_check +
                ", but this store was initialized with root key 0badc0de; progress kept");
  EXPECT_EQ(seal.init(3, 2, keep).status().code(), StatusCode::kConflict);
}

TEST(SecretsSealTest, GarbageIsNotAShare) {
  Seal seal;
  for (std::string_view junk : {"", "hello", "tss1-3-02-zz-00-00", "tss2-3-01-00000000-00-0000"}) {
    auto r = seal.unseal(junk);
    ASSERT_FALSE(r) << junk;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalid);
  }
}

}  // namespace
}  // namespace trellis::secrets
