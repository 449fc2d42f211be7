// The seal service (ABI 1.2 key_wrap/key_unwrap) on a real trellisd, through
// tests/fixtures/seal (fixture/seal and fixture/seal-other, the same code as two plugins):
// what a plugin seals opens for that plugin, tenant and label only, never after a bit flip or
// under another seal key file; trellisd refuses to start on a key file it cannot trust; and
// without one the service answers 503 (UNAVAILABLE). ctest runs SealServiceTest and the 503
// again with the plugins in worker processes (it_seal_service_test_in_workers), where the key
// stays in trellisd and only labels and bytes cross.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cctype>
#include <filesystem>
#include <memory>
#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr const char* kPlugins =
    "    - id: fixture/seal\n"
    "    - id: fixture/seal-other\n";
constexpr const char* kKeyA = "3f1c0a9b7e5d4c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b3a";
constexpr const char* kKeyB = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

// The test config with server.seal_key_file set (if `key_file` is not empty).
std::string configWithKey(const std::string& key_file) {
  std::string cfg = defaultTestConfig(kPlugins);
  if (!key_file.empty()) cfg.replace(0, 8, "server:\n  seal_key_file: " + key_file + "\n");
  return cfg;
}

void writeKey(const std::filesystem::path& file, const std::string& text, mode_t mode = 0600) {
  writeFile(file, text);
  ::chmod(file.c_str(), mode);
}

class SealServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    writeKey(key_file(), std::string(kKeyA) + "\n");
    start();
  }
  void start() {
    server_ = std::make_unique<TrellisdProcess>(configWithKey(key_file().string()));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  std::filesystem::path key_file() const { return keys_ / "seal.key"; }
  HttpReply post(const std::string& path, const std::string& body,
                 const std::string& key = "acme-key") {
    return request(server_->port(), "POST", path, {{"Authorization", "Bearer " + key}}, body);
  }
  HttpReply wrap(const std::string& label, const std::string& plaintext,
                 const std::string& prefix = "/seal", const std::string& key = "acme-key") {
    return post(prefix + "/wrap?label=" + label, plaintext, key);
  }
  HttpReply unwrap(const std::string& label, const std::string& sealed,
                   const std::string& prefix = "/seal", const std::string& key = "acme-key") {
    return post(prefix + "/unwrap?label=" + label, sealed, key);
  }
  std::string sealed(const std::string& label, const std::string& plaintext) {
    auto r = wrap(label, plaintext);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.body;
  }

  TempDir keys_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(SealServiceTest, ASealedValueOpensForTheSamePluginTenantAndLabel) {
  const std::string a = sealed("key/signing", "the signing seed");
  EXPECT_THAT(a, StartsWith("tseal:v1:"));
  EXPECT_THAT(a, Not(HasSubstr("signing seed")));
  // A fresh nonce each time: two seals of one secret differ, and both open.
  const std::string b = sealed("key/signing", "the signing seed");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.substr(0, 26), b.substr(0, 26)) << "same version and seal key id";
  for (const auto& s : {a, b}) {
    auto opened = unwrap("key/signing", s);
    EXPECT_EQ(opened.status, 200) << opened.body;
    EXPECT_EQ(opened.body, "the signing seed");
  }
  // Binary secrets round-trip too.
  const std::string binary("\x00\xff\x10\n\x00 raw", 9);
  auto opened = unwrap("bin", sealed("bin", binary));
  EXPECT_EQ(opened.body, binary);
  // The seal key's id is in trellisd's log, the key itself never.
  EXPECT_THAT(server_->log(), HasSubstr("seal: key " + a.substr(9, 16)));
  EXPECT_THAT(server_->log(), Not(HasSubstr(kKeyA)));
  EXPECT_THAT(server_->log(), Not(HasSubstr("signing seed")));
}

TEST_F(SealServiceTest, ASealedValueDoesNotOpenForAnotherPluginTenantOrLabelNorAltered) {
  const std::string s = sealed("key/signing", "seed-1");
  auto label = unwrap("key/other", s);
  EXPECT_EQ(label.status, 400) << label.body;
  EXPECT_THAT(label.body, HasSubstr("does not open for plugin fixture/seal, tenant acme, label "
                                    "\"key/other\": it was sealed for another plugin, tenant or "
                                    "label, or altered"));
  auto tenant = unwrap("key/signing", s, "/seal", "globex-key");
  EXPECT_EQ(tenant.status, 400) << tenant.body;
  EXPECT_THAT(tenant.body, HasSubstr("tenant globex"));
  auto plugin = unwrap("key/signing", s, "/seal-other");
  EXPECT_EQ(plugin.status, 400) << plugin.body;
  EXPECT_THAT(plugin.body, HasSubstr("plugin fixture/seal-other"));
  // One bit of the ciphertext flipped (a base64url character changed), and the header.
  std::string flipped = s;
  flipped[flipped.size() - 5] = flipped[flipped.size() - 5] == 'A' ? 'B' : 'A';
  auto altered = unwrap("key/signing", flipped);
  EXPECT_EQ(altered.status, 400) << altered.body;
  EXPECT_THAT(altered.body, HasSubstr("or altered"));
  auto garbage = unwrap("key/signing", "not sealed at all");
  EXPECT_EQ(garbage.status, 400);
  EXPECT_THAT(garbage.body, HasSubstr("not a sealed value"));
  auto future = unwrap("key/signing", "tseal:v9:0011223344556677:AAAA");
  EXPECT_EQ(future.status, 400);
  EXPECT_THAT(future.body, HasSubstr("this host reads tseal:v1"));
  // The value itself was not harmed by all that.
  EXPECT_EQ(unwrap("key/signing", s).body, "seed-1");
}

TEST_F(SealServiceTest, LabelsAndSizesAreChecked) {
  auto no_label = wrap("", "x");
  EXPECT_EQ(no_label.status, 400);
  EXPECT_THAT(no_label.body, HasSubstr("a seal label must be 1 to 256 bytes, not 0"));
  auto empty = wrap("k", "");
  EXPECT_EQ(empty.status, 400);
  EXPECT_THAT(empty.body, HasSubstr("1 to 65536 bytes of plaintext, not 0"));
  auto big = wrap("k", std::string(64 * 1024 + 1, 'x'));
  EXPECT_EQ(big.status, 400);
  EXPECT_THAT(big.body, HasSubstr("not 65537"));
  auto max = wrap("k", std::string(64 * 1024, 'x'));
  ASSERT_EQ(max.status, 200);
  EXPECT_EQ(unwrap("k", max.body).body, std::string(64 * 1024, 'x'));
}

TEST_F(SealServiceTest, AnotherSealKeyFileDoesNotOpenItAndTheSameFileDoesAfterARestart) {
  const std::string s = sealed("key/signing", "seed-2");
  ASSERT_EQ(server_->stop(), 0) << server_->log();
  ASSERT_TRUE(server_->start()) << server_->log();  // the same file
  EXPECT_EQ(unwrap("key/signing", s).body, "seed-2");

  ASSERT_EQ(server_->stop(), 0) << server_->log();
  writeKey(key_file(), kKeyB);  // no trailing newline: allowed too
  ASSERT_TRUE(server_->start()) << server_->log();
  auto other = unwrap("key/signing", s);
  EXPECT_EQ(other.status, 400) << other.body;
  EXPECT_THAT(other.body, HasSubstr("was sealed under seal key " + s.substr(9, 16) +
                                    ", but this host's seal key is "));
  EXPECT_THAT(other.body, HasSubstr("server.seal_key_file is not the file it was sealed with"));
}

// Key files trellisd must not trust, and the service without one.
class SealKeyFileTest : public ::testing::Test {
 protected:
  // Starts trellisd with `key_file` as server.seal_key_file; true if it came up.
  bool startWith(const std::string& key_file) {
    server_ = std::make_unique<TrellisdProcess>(configWithKey(key_file));
    return server_->start();
  }
  TempDir keys_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(SealKeyFileTest, WithoutASealKeyTheServiceAnswersUnavailable) {
  ASSERT_TRUE(startWith("")) << server_->log();
  auto r = request(server_->port(), "POST", "/seal/wrap?label=k",
                   {{"Authorization", "Bearer acme-key"}}, "x");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.body, "no seal key is configured (server.seal_key_file)");
}

TEST_F(SealKeyFileTest, AKeyFileThatCannotBeTrustedStopsTheStartNamingFileAndProblem) {
  const auto file = keys_ / "seal.key";
  const std::string name = "seal key file " + file.string() + " (server.seal_key_file)";

  EXPECT_FALSE(startWith(file.string()));
  EXPECT_THAT(server_->log(), HasSubstr("cannot read " + name + ": No such file or directory"));

  writeKey(file, std::string(kKeyA) + "\n", 0640);
  EXPECT_FALSE(startWith(file.string()));
  EXPECT_THAT(server_->log(),
              HasSubstr(name + " is accessible by group or others (mode 0640): chmod 600 it"));
  EXPECT_THAT(server_->log(), Not(HasSubstr(kKeyA)));

  writeKey(file, std::string(kKeyA).substr(0, 63) + "\n");
  EXPECT_FALSE(startWith(file.string()));
  EXPECT_THAT(server_->log(),
              HasSubstr(name + " holds 63 characters; it must hold 32 random bytes as "
                               "64 hex characters (make one with `openssl rand "
                               "-hex 32 > seal.key && chmod 600 seal.key`)"));

  writeKey(file, "zz" + std::string(kKeyA).substr(2));
  EXPECT_FALSE(startWith(file.string()));
  EXPECT_THAT(server_->log(), HasSubstr(name + " holds a character that is not a hex digit"));

  writeKey(file, std::string(kKeyA) + "\n\n");  // one trailing newline only
  EXPECT_FALSE(startWith(file.string()));
  EXPECT_THAT(server_->log(), HasSubstr(name + " holds 65 characters"));

  // Uppercase hex is the same key, and fine.
  std::string upper(kKeyA);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  writeKey(file, upper + "\n");
  EXPECT_TRUE(startWith(file.string())) << server_->log();
}

}  // namespace
}  // namespace trellis::test
