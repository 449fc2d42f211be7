#include "trellis/tenants/tenant_directory.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <thread>
#include <vector>

namespace trellis::tenants {
namespace {

TEST(TenantDirectoryTest, Sha256HexIsLowercaseHex) {
  EXPECT_EQ(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256Hex(std::string("a\0b", 3)).size(), 64u);
  EXPECT_NE(sha256Hex(std::string("a\0b", 3)), sha256Hex("a"));
}

TEST(TenantDirectoryTest, ValidTenantIds) {
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

TEST(TenantDirectoryTest, ResolvesKeysToTheirTenant) {
  TenantDirectory dir;
  ASSERT_TRUE(dir.add({"acme"}, {sha256Hex("acme-key"), sha256Hex("acme-key-2")}));
  ASSERT_TRUE(dir.add({"globex"}, {sha256Hex("globex-key")}));
  const Tenant* acme = dir.resolve("acme-key");
  ASSERT_NE(acme, nullptr);
  EXPECT_EQ(acme->id, "acme");
  EXPECT_EQ(dir.resolve("acme-key-2"), acme);
  ASSERT_NE(dir.resolve("globex-key"), nullptr);
  EXPECT_EQ(dir.resolve("globex-key")->id, "globex");
  EXPECT_EQ(dir.find("acme"), acme);
  EXPECT_EQ(dir.find("nobody"), nullptr);
}

TEST(TenantDirectoryTest, UnknownAndEmptyKeysResolveToNothing) {
  TenantDirectory dir;
  ASSERT_TRUE(dir.add({"acme"}, {sha256Hex("acme-key")}));
  EXPECT_EQ(dir.resolve(""), nullptr);
  EXPECT_EQ(dir.resolve("acme-key "), nullptr);
  EXPECT_EQ(dir.resolve("ACME-KEY"), nullptr);
  // The stored hash is not itself a key.
  EXPECT_EQ(dir.resolve(sha256Hex("acme-key")), nullptr);
}

TEST(TenantDirectoryTest, EmptyPresentedKeyNeverResolvesEvenIfItsHashIsRegistered) {
  TenantDirectory dir;
  ASSERT_TRUE(dir.add({"acme"}, {sha256Hex("")}));
  EXPECT_EQ(dir.resolve(""), nullptr);
}

TEST(TenantDirectoryTest, UppercaseHashesAreAccepted) {
  TenantDirectory dir;
  std::string hex = sha256Hex("k");
  for (char& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_TRUE(dir.add({"acme"}, {hex}));
  ASSERT_NE(dir.resolve("k"), nullptr);
}

TEST(TenantDirectoryTest, RefusesMalformedInputAndChangesNothing) {
  TenantDirectory dir;
  EXPECT_EQ(dir.add({"Bad"}, {sha256Hex("k")}).code(), StatusCode::kInvalid);
  EXPECT_EQ(dir.add({"acme"}, {"abc"}).code(), StatusCode::kInvalid);
  EXPECT_EQ(dir.add({"acme"}, {std::string(64, 'g')}).code(), StatusCode::kInvalid);
  EXPECT_EQ(dir.add({"acme"}, {sha256Hex("good"), sha256Hex("x") + "0"}).code(),
            StatusCode::kInvalid);
  EXPECT_EQ(dir.find("acme"), nullptr);
  EXPECT_EQ(dir.resolve("good"), nullptr);
  EXPECT_TRUE(dir.all().empty());
}

TEST(TenantDirectoryTest, RefusesDuplicateIdsAndKeys) {
  TenantDirectory dir;
  ASSERT_TRUE(dir.add({"acme"}, {sha256Hex("k1")}));
  EXPECT_EQ(dir.add({"acme"}, {sha256Hex("k2")}).code(), StatusCode::kConflict);
  EXPECT_EQ(dir.add({"globex"}, {sha256Hex("k1")}).code(), StatusCode::kConflict);
  EXPECT_EQ(dir.add({"initech"}, {sha256Hex("k3"), sha256Hex("k3")}).code(), StatusCode::kConflict);
  EXPECT_EQ(dir.find("globex"), nullptr);
  EXPECT_EQ(dir.resolve("k2"), nullptr);
  EXPECT_EQ(dir.resolve("k3"), nullptr);
  EXPECT_EQ(dir.resolve("k1")->id, "acme");
}

TEST(TenantDirectoryTest, TenantWithoutKeysIsFindableButNotResolvable) {
  TenantDirectory dir;
  ASSERT_TRUE(dir.add({"internal"}, {}));
  EXPECT_NE(dir.find("internal"), nullptr);
}

TEST(TenantDirectoryTest, AllIsSortedById) {
  TenantDirectory dir;
  ASSERT_TRUE(dir.add({"globex"}, {}));
  ASSERT_TRUE(dir.add({"acme"}, {}));
  ASSERT_TRUE(dir.add({"initech"}, {}));
  std::vector<std::string> ids;
  for (const Tenant* t : dir.all()) ids.push_back(t->id);
  EXPECT_EQ(ids, (std::vector<std::string>{"acme", "globex", "initech"}));
}

TEST(TenantDirectoryTest, ConcurrentResolveIsSafe) {
  TenantDirectory dir;
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(dir.add({"t" + std::to_string(i)}, {sha256Hex("key" + std::to_string(i))}));
  }
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int n = 0; n < 2000; ++n) {
        int i = n % 50;
        const Tenant* found = dir.resolve("key" + std::to_string(i));
        if (found == nullptr || found->id != "t" + std::to_string(i)) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace trellis::tenants
