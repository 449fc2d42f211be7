// Where the `trellis` CLI finds the admin API and its token (flags, TRELLIS_* variables, the
// profile file `trellis login` writes, the server's config), how it refuses an unsafe or
// malformed profile, --output json|yaml, and its exit codes (docs/operations.md).
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class CliProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig());
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  std::string adminUrl() const {
    return "http://127.0.0.1:" + std::to_string(server_->adminPort());
  }
  std::string tokenFile() const { return (server_->dir() / "admin.token").string(); }
  fs::path profile() const { return dir_ / "cfg" / "profiles.yaml"; }

  // The CLI run from an empty folder with only `env` set (no TRELLIS_* from the caller),
  // so nothing but what the test gives can point it at the server.
  std::string cli(const std::string& env, const std::string& args, int* status) {
    fs::create_directories(dir_ / "cwd");
    return runCommand("cd " + (dir_ / "cwd").string() +
                          " && env -u TRELLIS_ADMIN_URL -u TRELLIS_ADMIN_TOKEN -u TRELLIS_CONFIG "
                          "-u TRELLIS_PROFILE -u TRELLIS_REGISTRY TRELLIS_PROFILE_FILE=" +
                          profile().string() + " " + env + " " + TRELLIS_CLI_PATH + " " + args +
                          " 2>&1 </dev/null",
                      status);
  }

  TempDir dir_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(CliProfileTest, LoginWritesAPrivateProfileThatLaterCommandsUse) {
  int status = 0;
  auto out = cli("", "status", &status);
  EXPECT_NE(status, 0) << "no flags, no profile, no config: nothing should find the server";

  out = cli("", "login --admin " + adminUrl() + " --token-file " + tokenFile(), &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("saved profile \"default\""));
  struct stat st {};
  ASSERT_EQ(::stat(profile().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(readFile(profile()), HasSubstr(server_->adminToken()));

  out = cli("", "status", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("ready:       yes"));

  // Flags beat the environment, which beats the profile.
  out = cli("TRELLIS_ADMIN_URL=http://127.0.0.1:1", "status", &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("cannot reach the admin API at http://127.0.0.1:1"));
  out = cli("TRELLIS_ADMIN_URL=http://127.0.0.1:1", "--admin " + adminUrl() + " status", &status);
  EXPECT_EQ(status, 0) << out;
  writeFile(dir_ / "wrong.token", "not-the-admin-token-at-all");
  out = cli("", "--token-file " + (dir_ / "wrong.token").string() + " status", &status);
  EXPECT_EQ(status, 4) << out;
  EXPECT_THAT(out, HasSubstr("refused the token (401): check --token-file"));

  // A named profile that does not exist is an error, not a silent fallback.
  out = cli("", "--profile staging status", &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("no profile \"staging\""));

  // A bad token is not saved.
  out = cli("",
            "login --profile bad --admin " + adminUrl() + " --token-file " +
                (dir_ / "wrong.token").string(),
            &status);
  EXPECT_EQ(status, 4) << out;
  // (Not a search for "bad" alone: the saved hex token may hold those letters.)
  EXPECT_THAT(readFile(profile()), Not(HasSubstr("  bad:")));
  EXPECT_THAT(readFile(profile()), Not(HasSubstr("not-the-admin-token-at-all")));
}

TEST_F(CliProfileTest, ProfileOthersCanReadOrThatIsMalformedIsRefusedNamingTheCause) {
  fs::create_directories(profile().parent_path());
  writeFile(profile(), "profiles:\n  default:\n    admin: \"" + adminUrl() + "\"\n    token: \"" +
                           server_->adminToken() + "\"\n");
  ::chmod(profile().c_str(), 0644);
  int status = 0;
  auto out = cli("", "status", &status);
  EXPECT_EQ(status, 4) << out;
  EXPECT_THAT(out, HasSubstr("has mode 0644; it holds tokens"));
  EXPECT_THAT(out, HasSubstr("chmod 600 " + profile().string()));

  ::chmod(profile().c_str(), 0600);
  out = cli("", "status --output json", &status);
  ASSERT_EQ(status, 0) << out;
  auto parsed = Poco::JSON::Parser().parse(out).extract<Poco::JSON::Object::Ptr>();
  EXPECT_TRUE(parsed->getValue<bool>("ready"));
  out = cli("", "plugin list -o yaml", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("id: \"trellis/hello\""));
  out = cli("", "status --output xml", &status);
  EXPECT_EQ(status, 2) << out;

  writeFile(profile(), "profiles:\n  default:\n    admin: \"" + adminUrl() + "\"\n    tokn: x\n");
  ::chmod(profile().c_str(), 0600);
  out = cli("", "status", &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("profiles.default.tokn: unknown key"));

  writeFile(profile(), "profiles:\n  default:\n    admin: [1, 2]\n");
  out = cli("", "status", &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("profiles.default.admin: expected a string"));
}

TEST(CliServerConfigTest, StatusNeedsNoFlagsGivenTheServersConfig) {
  const uint16_t admin_port = freeLoopbackPort();  // the server binds it right after
  std::string config = defaultTestConfig();
  const std::string admin_listen = "admin:\n  listen: 127.0.0.1:0\n";
  ASSERT_NE(config.find(admin_listen), std::string::npos);
  config.replace(config.find(admin_listen), admin_listen.size(),
                 "admin:\n  listen: 127.0.0.1:" + std::to_string(admin_port) + "\n");
  TrellisdProcess server(config);
  ASSERT_TRUE(server.start()) << server.log();
  TempDir dir;
  int status = 0;
  auto out = runCommand(
      "cd " + dir.path().string() +
          " && env -u TRELLIS_ADMIN_URL -u TRELLIS_ADMIN_TOKEN TRELLIS_PROFILE_FILE=" +
          (dir / "none.yaml").string() + " TRELLIS_CONFIG=" + server.configFile().string() + " " +
          TRELLIS_CLI_PATH + " status 2>&1 </dev/null",
      &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("ready:       yes"));
}

}  // namespace
}  // namespace trellis::test
