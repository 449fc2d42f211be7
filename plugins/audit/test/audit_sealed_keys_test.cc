// trellis/audit's own keys sealed under the operator's seal key (server.seal_key_file,
// the kernel's key_wrap), on a real trellisd: the checkpoint signing seed and the own HMAC
// master are stored sealed only; hex keys from a host without a seal key are sealed at the
// first start with one, keeping the same keys, and an interrupted migration finishes; the
// same file keeps the public key across restarts, and another file makes activation fail
// with a message rather than a new key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <sys/stat.h>

#include <map>
#include <memory>
#include <string>

#include "audit_test_util.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr const char* kAudit =
    "    - id: trellis/audit\n"
    "      system: true\n"
    "      config: {sensitive_fields: [reason], hmac_key_interval_s: 0}\n";
constexpr const char* kKeyA = "8d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6";
constexpr const char* kKeyB = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";
constexpr const char* kUnsealedWarning =
    "the checkpoint signing key and the own HMAC master key are stored unsealed";

class AuditSealedKeysTest : public ::testing::Test {
 protected:
  // (Re)starts trellisd on the same data, with `key` ("" = none) in the seal key file.
  bool start(const std::string& key) {
    std::string cfg = defaultTestConfig(kAudit);
    if (!key.empty()) {
      const auto file = keys_ / "seal.key";
      writeFile(file, key + "\n");
      ::chmod(file.c_str(), 0600);
      cfg.replace(0, 8, "server:\n  seal_key_file: " + file.string() + "\n");
    }
    // The same data directory each time: the test's own, not the process's.
    cfg.replace(cfg.find("@DATA@"), 6, (data_.path() / "data").string());
    server_ = std::make_unique<TrellisdProcess>(cfg);
    return server_->start();
  }
  int stop() { return server_->stop(); }
  HttpReply audit(const std::string& method, const std::string& tail,
                  const std::string& body = "") {
    return request(server_->adminPort(), method, "/v1/x/trellis/audit/" + tail,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  std::string publicKey() {
    auto r = audit("GET", "public-key");
    EXPECT_EQ(r.status, 200) << r.body << server_->log();
    return r.body;
  }
  std::string ownDigest() {
    auto r = audit("POST", "hmac", R"({"tenant":"acme","value":"case-9","key":"own"})");
    EXPECT_EQ(r.status, 200) << r.body;
    return r.status == 200 ? json(r.body)->getValue<std::string>("digest") : "";
  }
  // GET status: whether the plugin's own keys are sealed.
  Poco::JSON::Object::Ptr keysStatus() {
    auto r = audit("GET", "status");
    EXPECT_EQ(r.status, 200) << r.body << server_->log();
    return json(r.status == 200 ? r.body : "{}");
  }
  static std::string unsealedOf(const Poco::JSON::Object::Ptr& status) {
    std::string out;
    if (auto a = status->getArray("unsealed")) {
      for (size_t i = 0; i < a->size(); ++i) out += a->getElement<std::string>(i) + " ";
    }
    return out;
  }
  std::filesystem::path systemDb() const {
    return data_.path() / "data" / "tenants" / "_system.db";
  }
  // The plugin's key/... entries in its system storage (trellisd stopped).
  std::map<std::string, std::string> storedKeys() {
    std::map<std::string, std::string> out;
    soci::session sql(soci::sqlite3, "db=\"" + systemDb().string() + "\"");
    soci::rowset<soci::row> rows = sql.prepare
                                   << "SELECT CAST(key AS TEXT), CAST(value AS TEXT) FROM kv "
                                      "WHERE plugin = 'trellis/audit' AND "
                                      "CAST(key AS TEXT) LIKE 'key/%'";
    for (const auto& row : rows) out[row.get<std::string>(0)] = row.get<std::string>(1);
    return out;
  }
  void putStored(const std::string& key, const std::string& value) {
    soci::session sql(soci::sqlite3, "db=\"" + systemDb().string() + "\"");
    sql << "INSERT INTO kv(plugin, key, value, version) VALUES ('trellis/audit', "
           "CAST(:k AS BLOB), CAST(:v AS BLOB), 1)",
        soci::use(key), soci::use(value);
  }

  TempDir keys_;
  TempDir data_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditSealedKeysTest, KeysAreStoredSealedAndTheSameSealFileKeepsThem) {
  ASSERT_TRUE(start(kKeyA)) << server_->log();
  const std::string pem = publicKey();
  const std::string digest = ownDigest();
  EXPECT_THAT(server_->log(), Not(HasSubstr(kUnsealedWarning)));
  auto status = keysStatus();
  EXPECT_TRUE(status->optValue("keys_sealed", false));
  EXPECT_THAT(status->optValue<std::string>("reason", ""),
              HasSubstr("sealed under this host's seal key"));
  EXPECT_EQ(unsealedOf(status), "");
  ASSERT_EQ(stop(), 0) << server_->log();

  auto stored = storedKeys();
  EXPECT_EQ(stored.count("key/ed25519"), 0u) << "no hex seed in storage";
  EXPECT_EQ(stored.count("key/hmac-own"), 0u) << "no hex master in storage";
  ASSERT_EQ(stored.count("key/ed25519.sealed"), 1u);
  ASSERT_EQ(stored.count("key/hmac-own.sealed"), 1u);
  EXPECT_THAT(stored["key/ed25519.sealed"], StartsWith("tseal:v1:"));
  EXPECT_THAT(stored["key/hmac-own.sealed"], StartsWith("tseal:v1:"));

  ASSERT_TRUE(start(kKeyA)) << server_->log();
  EXPECT_EQ(publicKey(), pem);
  EXPECT_EQ(ownDigest(), digest);
  ASSERT_EQ(stop(), 0) << server_->log();
  EXPECT_EQ(storedKeys(), stored) << "nothing made or rewritten";
}

TEST_F(AuditSealedKeysTest, WithoutASealKeyItWarnsAndHexKeysAreSealedOnceTheHostHasOne) {
  ASSERT_TRUE(start("")) << server_->log();
  EXPECT_THAT(server_->log(), HasSubstr(kUnsealedWarning));
  EXPECT_THAT(server_->log(), HasSubstr("Set server.seal_key_file"));
  auto unsealed = keysStatus();
  EXPECT_FALSE(unsealed->optValue("keys_sealed", true));
  EXPECT_THAT(unsealed->optValue<std::string>("reason", ""),
              HasSubstr("this host has no seal key (server.seal_key_file)"));
  EXPECT_EQ(unsealedOf(unsealed), "key/ed25519 key/hmac-own ");
  const std::string pem = publicKey();
  const std::string digest = ownDigest();
  ASSERT_EQ(stop(), 0) << server_->log();
  auto hex = storedKeys();
  ASSERT_EQ(hex.count("key/ed25519"), 1u);
  ASSERT_EQ(hex.count("key/hmac-own"), 1u);
  EXPECT_EQ(hex.count("key/ed25519.sealed"), 0u);

  ASSERT_TRUE(start(kKeyA)) << server_->log();
  EXPECT_THAT(server_->log(), HasSubstr("sealed the checkpoint signing key (key/ed25519.sealed) "
                                        "and deleted its unsealed copy"));
  EXPECT_THAT(server_->log(), Not(HasSubstr(kUnsealedWarning)));
  EXPECT_EQ(publicKey(), pem) << "the same signing key, sealed";
  EXPECT_EQ(ownDigest(), digest) << "the same HMAC master, sealed";
  EXPECT_TRUE(keysStatus()->optValue("keys_sealed", false));
  ASSERT_EQ(stop(), 0) << server_->log();
  auto sealed = storedKeys();
  EXPECT_EQ(sealed.count("key/ed25519"), 0u);
  EXPECT_EQ(sealed.count("key/hmac-own"), 0u);
  EXPECT_EQ(sealed.count("key/ed25519.sealed"), 1u);
  EXPECT_EQ(sealed.count("key/hmac-own.sealed"), 1u);
  for (const auto& [name, value] : sealed) {
    EXPECT_THAT(value, Not(HasSubstr(hex["key/ed25519"])));
    EXPECT_THAT(value, Not(HasSubstr(hex["key/hmac-own"])));
  }

  // A start killed after writing the sealed copies but before deleting the hex ones leaves
  // both: the next start uses the sealed ones and finishes the deletion.
  putStored("key/ed25519", hex["key/ed25519"]);
  putStored("key/hmac-own", hex["key/hmac-own"]);
  ASSERT_TRUE(start(kKeyA)) << server_->log();
  EXPECT_EQ(publicKey(), pem);
  EXPECT_EQ(ownDigest(), digest);
  ASSERT_EQ(stop(), 0) << server_->log();
  EXPECT_EQ(storedKeys(), sealed);

  // A log's own HMAC key from before 0.2 stays hex even with a seal key: the status says so.
  putStored("hmac/globex", std::string(64, 'a'));
  ASSERT_TRUE(start(kKeyA)) << server_->log();
  auto legacy = keysStatus();
  EXPECT_FALSE(legacy->optValue("keys_sealed", true));
  EXPECT_EQ(unsealedOf(legacy), "hmac/globex ");
  EXPECT_THAT(legacy->optValue<std::string>("reason", ""), HasSubstr("from before 0.2"));
}

TEST_F(AuditSealedKeysTest, AnotherSealKeyFileFailsActivationAndMakesNoNewKey) {
  ASSERT_TRUE(start(kKeyA)) << server_->log();
  const std::string pem = publicKey();
  ASSERT_EQ(stop(), 0) << server_->log();
  const auto stored = storedKeys();

  ASSERT_TRUE(start(kKeyB)) << server_->log();
  EXPECT_TRUE(eventually([&] {
    return server_->log().find(
               "the checkpoint signing key is stored sealed "
               "(key/ed25519.sealed) and does not open") != std::string::npos;
  })) << server_->log();
  EXPECT_THAT(server_->log(), HasSubstr("server.seal_key_file is not the file it was sealed with"));
  EXPECT_THAT(server_->log(), HasSubstr("no new key is made, it would fork the log's signatures"));
  EXPECT_NE(audit("GET", "public-key").status, 200) << "the plugin is not active";
  ASSERT_EQ(stop(), 0) << server_->log();
  EXPECT_EQ(storedKeys(), stored);

  // Without any seal key it does not fall back to a new or unsealed key either.
  ASSERT_TRUE(start("")) << server_->log();
  EXPECT_TRUE(eventually([&] {
    return server_->log().find(
               "this host cannot open it: no seal key is configured "
               "(server.seal_key_file)") != std::string::npos;
  })) << server_->log();
  ASSERT_EQ(stop(), 0) << server_->log();
  EXPECT_EQ(storedKeys(), stored);

  ASSERT_TRUE(start(kKeyA)) << server_->log();
  EXPECT_EQ(publicKey(), pem);
}

}  // namespace
}  // namespace trellis::test
