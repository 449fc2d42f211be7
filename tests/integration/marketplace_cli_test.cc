// The publisher commands as a publisher runs them: keygen, package, inspect, verify.
#include <gtest/gtest.h>

#include <filesystem>

#include "support/test_support.h"

namespace {

using trellis::test::runCommand;
using trellis::test::TempDir;
namespace fs = std::filesystem;

struct CliRun {
  int rc = -1;
  std::string out;  // stdout and stderr
};

CliRun trellis(const std::string& args) {
  CliRun r;
  r.out = runCommand(std::string(TRELLIS_CLI_PATH) + " " + args + " 2>&1", &r.rc);
  return r;
}

TEST(MarketplaceCliTest, PublisherPackagesAndVerifiesAPlugin) {
  TempDir dir;
  const std::string keys = (dir / "keys").string();
  const std::string good = std::string(TRELLIS_FIXTURE_DIR) + "/good";
  const std::string zip = (dir / "good.zip").string();

  CliRun keygen = trellis("keygen --out " + keys + " --name acme");
  ASSERT_EQ(keygen.rc, 0) << keygen.out;
  EXPECT_NE(keygen.out.find("key id:"), std::string::npos);
  EXPECT_EQ(keygen.out.find("PRIVATE KEY"), std::string::npos);  // never printed
  EXPECT_TRUE(fs::exists(dir / "keys" / "acme.pem"));

  CliRun again = trellis("keygen --out " + keys + " --name acme");
  EXPECT_EQ(again.rc, 1);
  EXPECT_NE(again.out.find("already exists; refusing to overwrite a key"), std::string::npos);

  CliRun package = trellis("package " + good + " --key " + keys + "/acme.pem --out " + zip);
  ASSERT_EQ(package.rc, 0) << package.out;
  EXPECT_NE(package.out.find("packaged fixture/good 1.0.0"), std::string::npos);

  CliRun inspect = trellis("package inspect " + zip);
  ASSERT_EQ(inspect.rc, 0) << inspect.out;
  EXPECT_NE(inspect.out.find("libfixture_good.so"), std::string::npos);

  CliRun verify = trellis("package verify " + zip + " --pubkey " + keys + "/acme.pub");
  ASSERT_EQ(verify.rc, 0) << verify.out;
  EXPECT_NE(verify.out.find("verified fixture/good 1.0.0"), std::string::npos);

  ASSERT_EQ(trellis("keygen --out " + keys + " --name other").rc, 0);
  CliRun wrong = trellis("package verify " + zip + " --pubkey " + keys + "/other.pub");
  EXPECT_EQ(wrong.rc, 1);
  EXPECT_NE(wrong.out.find("which is not trusted"), std::string::npos) << wrong.out;
}

TEST(MarketplaceCliTest, PackageRefusesAManifestTheKernelRefuses) {
  TempDir dir;
  ASSERT_EQ(trellis("keygen --out " + (dir / "k").string()).rc, 0);
  fs::copy(fs::path(TRELLIS_FIXTURE_DIR) / "good", dir / "plugin");
  trellis::test::writeFile(
      dir / "plugin" / "trellis-plugin.json",
      R"({"schema":1,"id":"acme/x","version":"1.0.0","abi":{"major":1,"minor":0},
                               "entry":{"linux-x86_64":"libfixture_good.so"},"colour":"red"})");
  CliRun r = trellis("package " + (dir / "plugin").string() + " --key " +
                     (dir / "k" / "publisher.pem").string() + " --out " + (dir / "x.zip").string());
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("unknown field \"colour\""), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "x.zip"));
}

}  // namespace
