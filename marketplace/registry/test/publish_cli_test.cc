// The publisher's side of the marketplace through the real `trellis` CLI against a real
// registry trellisd: register a key, mint a publish token, publish from a folder (dry run
// first), rotate the key and publish again, yank, revoke the token and be refused, and what
// a registry that is down or not a registry looks like.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <regex>
#include <sstream>

#include "registry_server.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using Poco::JSON::Object;
using ::testing::HasSubstr;
using ::testing::Not;

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

class PublishCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.start()) << registry_.log();
    writeFile(dir_ / "registry.key", RegistryServer::kTenantKey);
    writeFile(dir_ / "admin.token", RegistryServer::kAdminToken);
    ::chmod((dir_ / "registry.key").c_str(), 0600);
    ::chmod((dir_ / "admin.token").c_str(), 0600);
  }

  // Runs the CLI with no profile and no TRELLIS_* variables, so only the flags count.
  std::string cli(const std::string& args, int* status) {
    const std::string env =
        "env -u TRELLIS_REGISTRY -u TRELLIS_REGISTRY_KEY "
        "-u TRELLIS_REGISTRY_TOKEN TRELLIS_PROFILE_FILE=" +
        (dir_ / "no-profile.yaml").string() + " ";
    return runCommand(env + TRELLIS_CLI_PATH + " " + args + " 2>&1 </dev/null", status);
  }

  // A registry command authorised by `token_file` (the admin token by default).
  std::string reg(const std::string& args, int* status, const std::string& token_file = "") {
    return cli(args + " --registry " + registry_.url() + " --registry-key-file " +
                   (dir_ / "registry.key").string() + " --registry-token-file " +
                   (token_file.empty() ? (dir_ / "admin.token").string() : token_file),
               status);
  }

  // `trellis keygen` into dir_/keys; returns the key id it printed.
  std::string keygen(const std::string& name) {
    int status = 0;
    auto out = cli("keygen --out " + (dir_ / "keys").string() + " --name " + name, &status);
    EXPECT_EQ(status, 0) << out;
    std::smatch m;
    EXPECT_TRUE(std::regex_search(out, m, std::regex("key id: +([0-9a-f]{16})"))) << out;
    return m.size() > 1 ? m[1].str() : "";
  }

  fs::path key(const std::string& name) const { return dir_ / "keys" / (name + ".pem"); }

  // A plugin build folder: the good fixture's library under `id`@`version`.
  fs::path pluginFolder(const std::string& id, const std::string& version) {
    const fs::path dir = dir_ / ("build-" + version);
    fs::create_directories(dir);
    const fs::path good = fs::path(TRELLIS_FIXTURE_DIR) / "good";
    fs::copy_file(good / "libfixture_good.so", dir / "libfixture_good.so");
    Object::Ptr manifest = json(readFile(good / "trellis-plugin.json"));
    manifest->set("id", id);
    manifest->set("version", version);
    std::ostringstream text;
    Poco::JSON::Stringifier::condense(manifest, text);
    writeFile(dir / "trellis-plugin.json", text.str());
    return dir;
  }

  // A publish token for `ns`, saved to a 0600 file whose path is returned.
  fs::path publishToken(const std::string& ns, std::string* id = nullptr) {
    int status = 0;
    auto out = reg("publisher token create " + ns + " --expires 1h --description CI", &status);
    EXPECT_EQ(status, 0) << out;
    std::smatch m;
    EXPECT_TRUE(std::regex_search(out, m, std::regex("publish token ([0-9a-f]+) .*\n +(trp_\\S+)")))
        << out;
    if (id && m.size() > 2) *id = m[1].str();
    const fs::path file = dir_ / ("token-" + std::to_string(tokens_++));
    writeFile(file, m.size() > 2 ? m[2].str() : "");
    ::chmod(file.c_str(), 0600);
    return file;
  }

  HttpReply get(const std::string& path) {
    return request(registry_.port(), "GET", "/registry/v1" + path,
                   {{"Authorization", std::string("Bearer ") + RegistryServer::kTenantKey}});
  }

  TempDir dir_;
  RegistryServer registry_;
  int tokens_ = 0;
};

TEST_F(PublishCliTest, PublishesFromAFolderAfterADryRunThatStoresNothing) {
  const std::string keyid = keygen("acme");
  int status = 0;
  auto out =
      reg("publisher key register acme --pubkey " + (dir_ / "keys" / "acme.pub").string(), &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("registered key " + keyid + " as the first key of namespace acme"));
  const fs::path token = publishToken("acme");
  const fs::path folder = pluginFolder("acme/hello", "1.0.0");

  out = reg("publish " + folder.string() + " --key " + key("acme").string() + " --dry-run", &status,
            token);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("dry run: the registry accepts acme/hello 1.0.0"));
  EXPECT_EQ(get("/packages/acme/hello/versions").status, 404) << "a dry run stored the package";

  out = reg("publish " + folder.string() + " --key " + key("acme").string() + " --tags demo",
            &status, token);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("published acme/hello 1.0.0"));
  EXPECT_THAT(out, HasSubstr("signed by key " + keyid));
  const std::string url = registry_.url() + "/registry/v1/packages/acme/hello/versions/1.0.0";
  EXPECT_THAT(out, HasSubstr("url " + url));
  auto v = get("/packages/acme/hello/versions/1.0.0");
  ASSERT_EQ(v.status, 200) << v.body;
  EXPECT_EQ(json(v.body)->getValue<std::string>("keyid"), keyid);

  // Published versions are immutable; a dry run says so too, and stores nothing either way.
  out = reg("publish " + folder.string() + " --key " + key("acme").string() + " --dry-run", &status,
            token);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("already published"));
  out = reg("publish " + folder.string() + " --key " + key("acme").string(), &status, token);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("409"));

  // A signed package file publishes as is.
  out = cli("package " + pluginFolder("acme/hello", "1.0.1").string() + " --key " +
                key("acme").string() + " --out " + (dir_ / "hello-1.0.1.zip").string(),
            &status);
  ASSERT_EQ(status, 0) << out;
  out = reg("publish " + (dir_ / "hello-1.0.1.zip").string() + " --output json", &status, token);
  ASSERT_EQ(status, 0) << out;
  auto published = json(out);
  EXPECT_EQ(published->getValue<std::string>("version"), "1.0.1");
  EXPECT_EQ(published->getValue<std::string>("url"),
            registry_.url() + "/registry/v1/packages/acme/hello/versions/1.0.1");
}

TEST_F(PublishCliTest, RotatedKeyPublishesAndTheRevokedOldKeyIsRefused) {
  const std::string old_id = keygen("old");
  const std::string new_id = keygen("new");
  int status = 0;
  auto out =
      reg("publisher key register acme --pubkey " + (dir_ / "keys" / "old.pub").string(), &status);
  ASSERT_EQ(status, 0) << out;
  const fs::path token = publishToken("acme");
  out = reg(
      "publish " + pluginFolder("acme/hello", "1.0.0").string() + " --key " + key("old").string(),
      &status, token);
  ASSERT_EQ(status, 0) << out;

  // The publisher rotates with its publish token: the old key signs for the new one.
  out = reg("publisher key rotate acme --key " + key("old").string() + " --new-key " +
                key("new").string(),
            &status, token);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("added key " + new_id + ", signed by " + old_id));
  out = reg("publisher key revoke acme " + old_id + " --reason rotated", &status, token);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("revoked key " + old_id));

  out = reg(
      "publish " + pluginFolder("acme/hello", "1.1.0").string() + " --key " + key("old").string(),
      &status, token);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("revoked"));
  EXPECT_EQ(get("/packages/acme/hello/versions/1.1.0").status, 404);

  out = reg("publish " + (dir_ / "build-1.1.0").string() + " --key " + key("new").string(), &status,
            token);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("signed by key " + new_id));

  // key list, for people and for scripts.
  out = reg("publisher key list acme", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr(old_id));
  EXPECT_THAT(out, HasSubstr("revoked at"));
  out = reg("publisher key list acme --output json", &status);
  ASSERT_EQ(status, 0) << out;
  auto keys = json(out)->getArray("keys");
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_TRUE(keys->getObject(0)->has("revoked"));
  EXPECT_EQ(keys->getObject(1)->getValue<std::string>("signed_by"), old_id);
  out = reg("publisher key list acme --output yaml", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("signed_by: \"" + old_id + "\""));

  // Yank and unyank the first version.
  out = reg("plugin yank acme/hello@1.0.0 --reason broken", &status, token);
  ASSERT_EQ(status, 0) << out;
  EXPECT_TRUE(json(get("/packages/acme/hello/versions/1.0.0").body)->getValue<bool>("yanked"));
  out = reg("plugin yank acme/hello@1.0.0 --reason again", &status, token);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("already yanked"));
  out = reg("plugin unyank acme/hello@1.0.0 --reason fixed", &status, token);
  ASSERT_EQ(status, 0) << out;
  EXPECT_FALSE(json(get("/packages/acme/hello/versions/1.0.0").body)->getValue<bool>("yanked"));
}

TEST_F(PublishCliTest, RevokedTokenIsRefusedAndNothingIsStored) {
  keygen("acme");
  int status = 0;
  auto out =
      reg("publisher key register acme --pubkey " + (dir_ / "keys" / "acme.pub").string(), &status);
  ASSERT_EQ(status, 0) << out;
  std::string token_id;
  const fs::path token = publishToken("acme", &token_id);
  out = reg("publisher token list", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr(token_id));
  EXPECT_THAT(out, Not(HasSubstr(readFile(token))));  // the secret is shown only once

  out = reg("publisher token revoke " + token_id, &status);
  ASSERT_EQ(status, 0) << out;
  out = reg(
      "publish " + pluginFolder("acme/hello", "1.0.0").string() + " --key " + key("acme").string(),
      &status, token);
  EXPECT_EQ(status, 4) << out;  // exit code: a token was refused
  EXPECT_THAT(out, HasSubstr("403"));
  EXPECT_EQ(get("/packages/acme/hello/versions").status, 404);

  // A publish token cannot mint tokens, nor act for another namespace.
  const fs::path other = publishToken("acme");
  out = reg("publisher token create acme --expires 1h", &status, other);
  EXPECT_EQ(status, 4) << out;
  out = reg("plugin yank globex/x@1.0.0 --reason r", &status, other);
  EXPECT_EQ(status, 4) << out;
}

TEST_F(PublishCliTest, RegistryThatIsDownOrNotARegistryIsNamed) {
  keygen("acme");
  const fs::path folder = pluginFolder("acme/hello", "1.0.0");
  int status = 0;
  // Nothing listens on the admin port of a stopped server.
  TrellisdProcess stopped(defaultTestConfig());
  ASSERT_TRUE(stopped.start()) << stopped.log();
  const uint16_t dead_port = stopped.port();
  stopped.stop();
  auto out = cli("publish " + folder.string() + " --key " + key("acme").string() +
                     " --registry http://127.0.0.1:" + std::to_string(dead_port) +
                     " --registry-token-file " + (dir_ / "admin.token").string(),
                 &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("cannot reach the registry at http://127.0.0.1:" +
                             std::to_string(dead_port) + "/registry/v1"));

  // A trellisd without the registry plugin: its 404 is not a registry's answer.
  TrellisdProcess plain(defaultTestConfig());
  ASSERT_TRUE(plain.start()) << plain.log();
  out = cli("publisher key list acme --registry http://127.0.0.1:" + std::to_string(plain.port()) +
                " --registry-key-file " + (dir_ / "registry.key").string(),
            &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("404"));

  // No token: said before anything is sent.
  out = cli("publish " + folder.string() + " --key " + key("acme").string() + " --registry " +
                registry_.url(),
            &status);
  EXPECT_EQ(status, 2) << out;
  EXPECT_THAT(out, HasSubstr("needs a registry token"));
}

}  // namespace
}  // namespace trellis::test
