// The registry's configuration (marketplace/registry/src/config.h): what an operator gets
// told for each mistake, and the root.json a valid config signs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "config.h"
#include "support/test_support.h"
#include "trellis/marketplace/encoding.h"
#include "trellis/marketplace/index.h"

namespace trellis::registry {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class RegistryConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"root", "timestamp"}) {
      auto key = marketplace::PrivateKey::generate().value();
      ASSERT_TRUE(key.writePem(dir_ / (std::string(name) + ".pem")).isOk());
    }
  }
  // A valid config with `extra` members appended (JSON, leading comma included).
  std::string config(const std::string& extra = "") const {
    return "{\"tenant\":\"registry\",\"admin_token_sha256\":\"" + marketplace::sha256Hex("t") +
           "\",\"root_keys\":[\"" + (dir_ / "root.pem").string() +
           "\"],\"root_expires\":1900000000,\"timestamp_key\":\"" +
           (dir_ / "timestamp.pem").string() + "\"" + extra + "}";
  }
  std::string error(const std::string& json) const {
    auto c = RegistryConfig::parse(json);
    return c.isOk() ? "<accepted>" : c.status().message();
  }
  test::TempDir dir_;
};

TEST_F(RegistryConfigTest, ValidConfigSignsARootThatVerifiesItself) {
  auto c = RegistryConfig::parse(config());
  ASSERT_TRUE(c.isOk()) << c.status().message();
  EXPECT_EQ(c->max_package_bytes, 20u << 20);
  auto root_bytes = c->signedRoot();
  ASSERT_TRUE(root_bytes.isOk());
  auto root = marketplace::Root::loadTrusted(*root_bytes);
  ASSERT_TRUE(root.isOk()) << root.status().message();
  EXPECT_EQ(root->expires, 1900000000);
  // No index_key: the timestamp key signs the index too.
  EXPECT_EQ(root->index.keyids, root->timestamp.keyids);
  EXPECT_EQ(*c->signedRoot(), *root_bytes);  // deterministic across restarts
}

TEST_F(RegistryConfigTest, EachMistakeIsNamed) {
  EXPECT_THAT(error(config(",\"chunk_size\":1")), HasSubstr("chunk_size is not a known setting"));
  EXPECT_THAT(error("{\"tenant\":\"r\"}"), HasSubstr("admin_token_sha256 is required"));
  EXPECT_THAT(error(config(",\"root_threshold\":2")),
              HasSubstr("root_threshold must be an integer from 1 to 1"));
  EXPECT_THAT(error(config(",\"chunk_bytes\":2097152")), HasSubstr("chunk_bytes"));
  EXPECT_THAT(error(config(",\"max_package_bytes\":{\"a\":1}")),
              HasSubstr("max_package_bytes must be an integer"));
  EXPECT_THAT(error(config(",\"index_expiry_seconds\":3600")),
              HasSubstr("must not be shorter than timestamp_expiry_seconds"));
  EXPECT_THAT(error(config(",\"index_key\":\"index.pem\"")), HasSubstr("must be an absolute path"));
  EXPECT_THAT(error(config(",\"index_key\":\"" + (dir_ / "missing.pem").string() + "\"")),
              HasSubstr("index_key"));
  fs::permissions(dir_ / "timestamp.pem", fs::perms::others_read, fs::perm_options::add);
  std::string readable = error(config());
  EXPECT_THAT(readable, HasSubstr("timestamp_key"));
  EXPECT_THAT(readable, Not(HasSubstr("PRIVATE KEY")));
}

}  // namespace
}  // namespace trellis::registry
