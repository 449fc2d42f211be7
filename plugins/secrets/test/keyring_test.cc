// Key-encryption keys on a real trellisd: uses are counted before a KEK wraps a data key,
// a KEK at its limit is replaced on its own, rotation on demand, and every secret stays
// readable under the version that wrapped it, across a restart.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

class SecretsKeyringTest : public ::testing::Test {
 protected:
  // Each KEK version wraps at most 4 data keys.
  void SetUp() override { startWith("config: {kek_max_uses: 4}"); }
  void startWith(const std::string& plugin_config) {
    shares_.clear();
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig(
        "    - id: trellis/secrets\n      system: true\n      " + plugin_config + "\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
    auto res = admin("POST", "init", R"({"shares":2,"threshold":2})");
    ASSERT_EQ(res.status, 200) << res.body;
    auto list = json(res.body)->getArray("shares");
    for (size_t i = 0; i < list->size(); ++i) shares_.push_back(list->getElement<std::string>(i));
    unseal();
  }
  void unseal() {
    for (const auto& share : shares_) {
      auto res = admin("POST", "unseal", "{\"key\":\"" + share + "\"}");
      ASSERT_EQ(res.status, 200) << res.body;
    }
  }
  HttpReply admin(const std::string& method, const std::string& route, const std::string& body) {
    return request(server_->adminPort(), method, "/v1/x/trellis/secrets/" + route,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  HttpReply call(const std::string& method, const std::string& path, const std::string& body = "",
                 const std::string& key = "acme-key") {
    return request(server_->port(), method, path, {{"Authorization", "Bearer " + key}}, body);
  }
  void writeSecret(const std::string& path, const std::string& value) {
    auto res =
        call("POST", "/secrets/v1/kv/data/" + path, "{\"data\":{\"value\":\"" + value + "\"}}");
    ASSERT_EQ(res.status, 200) << res.body;
  }
  std::string readSecret(const std::string& path, int version) {
    auto res = call("GET", "/secrets/v1/kv/data/" + path + "?version=" + std::to_string(version));
    EXPECT_EQ(res.status, 200) << res.body;
    if (res.status != 200) return "";
    return json(res.body)->getObject("data")->getObject("data")->getValue<std::string>("value");
  }
  Object::Ptr keyring(const std::string& key = "acme-key") {
    auto res = call("GET", "/secrets/v1/keyring", "", key);
    EXPECT_EQ(res.status, 200) << res.body;
    return json(res.body)->getObject("data");
  }
  std::vector<std::pair<int, int>> versionsAndUses(const Object::Ptr& ring) {
    std::vector<std::pair<int, int>> out;
    auto list = ring->getArray("versions");
    for (size_t i = 0; i < list->size(); ++i) {
      auto v = list->getObject(static_cast<unsigned>(i));
      out.emplace_back(v->getValue<int>("version"), v->getValue<int>("uses"));
    }
    return out;
  }

  std::unique_ptr<TrellisdProcess> server_;
  std::vector<std::string> shares_;
};

TEST_F(SecretsKeyringTest, AKekAtItsLimitIsReplacedAndEverySecretStillReads) {
  EXPECT_EQ(call("GET", "/secrets/v1/keyring").status, 404);  // no keys before a write
  for (int i = 1; i <= 9; ++i) writeSecret("app/db", "value-" + std::to_string(i));
  // 9 data keys at 4 per KEK: versions 1 and 2 used up, the ninth under version 3.
  auto ring = keyring();
  EXPECT_EQ(ring->getValue<int>("current_version"), 3);
  EXPECT_EQ(ring->getValue<int>("max_uses"), 4);
  EXPECT_EQ(versionsAndUses(ring), (std::vector<std::pair<int, int>>{{1, 4}, {2, 4}, {3, 4}}));
  // Only the newest max_versions (10 by default) are kept; all nine are.
  for (int i = 1; i <= 9; ++i) EXPECT_EQ(readSecret("app/db", i), "value-" + std::to_string(i));
}

TEST_F(SecretsKeyringTest, RotateAddsAVersionThatWrapsNewKeysWhileOldOnesStillOpen) {
  startWith("");  // the default limit: the re-wrap job's own uses start no version
  writeSecret("app/api", "before");
  auto rotated = call("POST", "/secrets/v1/keyring/rotate");
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  EXPECT_EQ(json(rotated.body)->getObject("data")->getValue<int>("current_version"), 2);
  writeSecret("app/api", "after");
  EXPECT_EQ(readSecret("app/api", 1), "before");
  EXPECT_EQ(readSecret("app/api", 2), "after");
  // The new version is the newest and has uses reserved: the write was wrapped under it.
  // (Version 1 is there until the re-wrap job, started by the rotation, retires it.)
  auto uses = versionsAndUses(keyring());
  ASSERT_FALSE(uses.empty());
  EXPECT_EQ(uses.back().first, 2);
  EXPECT_GE(uses.back().second, 1);
  // Another tenant's keyring is its own.
  EXPECT_EQ(call("GET", "/secrets/v1/keyring", "", "globex-key").status, 404);
}

TEST_F(SecretsKeyringTest, RotationReWrapsEveryKeyInPagesThenRetiresTheOldVersion) {
  startWith("");  // the default limit: no version is used up by the re-wrap itself
  // More secrets than one page of the job (64), and a transit key with a ciphertext.
  for (int i = 0; i < 70; ++i) writeSecret("bulk/s" + std::to_string(i), std::to_string(i));
  ASSERT_EQ(call("POST", "/secrets/v1/transit/keys/orders").status, 200);
  auto enc = call("POST", "/secrets/v1/transit/encrypt/orders", R"({"plaintext":"aGVsbG8="})");
  ASSERT_EQ(enc.status, 200) << enc.body;
  const std::string ciphertext =
      json(enc.body)->getObject("data")->getValue<std::string>("ciphertext");
  const int before = keyring()->getValue<int>("current_version");

  auto rotated = call("POST", "/secrets/v1/keyring/rotate");
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  EXPECT_TRUE(json(rotated.body)->getObject("data")->has("rewrap")) << rotated.body;

  // The job runs in the background; when it is done only the new version is left.
  std::vector<std::pair<int, int>> versions;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  Object::Ptr ring;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ring = keyring();
    versions = versionsAndUses(ring);
  } while ((ring->has("rewrap") || versions.size() > 1) &&
           std::chrono::steady_clock::now() < deadline);
  ASSERT_EQ(versions.size(), 1u) << request(server_->adminPort(), "GET", "/v1/jobs",
                                            {{"Authorization", "Bearer " + server_->adminToken()}})
                                        .body;
  EXPECT_GT(versions[0].first, before);
  EXPECT_FALSE(ring->has("rewrap"));

  for (int i = 0; i < 70; ++i)
    EXPECT_EQ(readSecret("bulk/s" + std::to_string(i), 1), std::to_string(i));
  auto dec =
      call("POST", "/secrets/v1/transit/decrypt/orders", "{\"ciphertext\":\"" + ciphertext + "\"}");
  ASSERT_EQ(dec.status, 200) << dec.body;
  EXPECT_EQ(json(dec.body)->getObject("data")->getValue<std::string>("plaintext"), "aGVsbG8=");
  // 70 secrets and one transit key version, at least once each (a second pass finds none).
  const std::string metrics = request(server_->adminPort(), "GET", "/metrics",
                                      {{"Authorization", "Bearer " + server_->adminToken()}})
                                  .body;
  EXPECT_NE(metrics.find("trellis_plugin_kek_rewrapped_total{plugin=\"trellis/secrets\"} 71"),
            std::string::npos)
      << metrics;
  EXPECT_NE(server_->log().find("retired after re-wrapping 71 data keys"), std::string::npos);
}

TEST_F(SecretsKeyringTest, CountsSurviveARestartAndAreNeverBehind) {
  writeSecret("app/db", "one");
  const auto before = versionsAndUses(keyring());
  ASSERT_EQ(server_->stop(), 0);
  ASSERT_TRUE(server_->start()) << server_->log();
  unseal();
  // The rest of the block reserved before the restart is lost and stays counted.
  EXPECT_EQ(versionsAndUses(keyring()), before);
  writeSecret("app/db", "two");
  const auto after = versionsAndUses(keyring());
  ASSERT_FALSE(after.empty());
  EXPECT_GT(after.back().first, before.back().first);  // 4 reserved at once: a new version
  EXPECT_EQ(readSecret("app/db", 1), "one");
  EXPECT_EQ(readSecret("app/db", 2), "two");
}

TEST_F(SecretsKeyringTest, RoutesAnswer503WhileSealed) {
  ASSERT_EQ(admin("POST", "seal", "").status, 200);
  EXPECT_EQ(call("GET", "/secrets/v1/keyring").status, 503);
  EXPECT_EQ(call("POST", "/secrets/v1/keyring/rotate").status, 503);
}

TEST(SecretsKeyringConfigTest, AnUnusableLimitRefusesThePluginNamingTheSetting) {
  for (const std::string bad : {"0", "many", "-3", "2147483648"}) {
    TrellisdProcess server(defaultTestConfig(
        "    - id: trellis/secrets\n      system: true\n      config: {kek_max_uses: \"" + bad +
        "\"}\n"));
    server.start();
    auto res = request(server.port(), "GET", "/secrets/v1/keyring",
                       {{"Authorization", "Bearer acme-key"}});
    EXPECT_NE(res.status, 200) << bad;
    EXPECT_NE(server.log().find("kek_max_uses must be a whole number from 1 to 1073741824, not \"" +
                                bad + "\""),
              std::string::npos)
        << server.log();
  }
}

}  // namespace
}  // namespace trellis::test
