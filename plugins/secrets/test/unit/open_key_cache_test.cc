// The transit engine's cache of unwrapped keys: an entry serves only the same tenant, key
// name and stored bytes in the same seal epoch, and sealing empties it, also against a
// key opened just before the seal.
#include "transit/open_key_cache.h"

#include <gtest/gtest.h>

#include "transit/transit_engine.h"

namespace trellis::secrets::transit {
namespace {

TEST(OpenKeyCacheTest, ServesOnlyTheSameStoredBytesTenantAndEpoch) {
  Seal seal;
  OpenKeyCache cache;
  seal.onSeal([&cache] { cache.clear(); });
  auto key = std::make_shared<const OpenKey>();
  const uint64_t epoch = seal.epoch();
  EXPECT_EQ(cache.find("acme", "k", "stored-1", epoch), nullptr);
  cache.put("acme", "k", "stored-1", epoch, key, seal);
  EXPECT_EQ(cache.find("acme", "k", "stored-1", epoch), key);
  EXPECT_EQ(cache.find("acme", "k", "stored-2", epoch), nullptr) << "the key changed in storage";
  EXPECT_EQ(cache.find("globex", "k", "stored-1", epoch), nullptr) << "another tenant";
  EXPECT_EQ(cache.find("acme", "k2", "stored-1", epoch), nullptr) << "another key";

  seal.seal();
  EXPECT_NE(seal.epoch(), epoch);
  EXPECT_EQ(cache.find("acme", "k", "stored-1", seal.epoch()), nullptr) << "sealing forgets keys";
  EXPECT_EQ(key.use_count(), 1) << "the cache still holds the key material";

  // A key opened before the seal and stored after it is never kept.
  cache.put("acme", "k", "stored-1", epoch, key, seal);
  EXPECT_EQ(cache.find("acme", "k", "stored-1", epoch), nullptr);
  EXPECT_EQ(key.use_count(), 1);
}

TEST(OpenKeyCacheTest, StartsOverPastItsLimit) {
  Seal seal;
  OpenKeyCache cache;
  auto key = std::make_shared<const OpenKey>();
  for (size_t i = 0; i < OpenKeyCache::kMaxEntries; ++i) {
    cache.put("acme", "k" + std::to_string(i), "s", seal.epoch(), key, seal);
  }
  EXPECT_EQ(cache.find("acme", "k0", "s", seal.epoch()), key);
  cache.put("acme", "one-more", "s", seal.epoch(), key, seal);
  EXPECT_EQ(cache.find("acme", "k0", "s", seal.epoch()), nullptr);
  EXPECT_EQ(cache.find("acme", "one-more", "s", seal.epoch()), key);
  EXPECT_EQ(key.use_count(), 2);
}

}  // namespace
}  // namespace trellis::secrets::transit
