// The real `trellis` CLI over HTTPS: a real trellisd whose admin plane serves TLS, and
// Debian's nginx serving a registry (in front of a registry trellisd) and a static mirror over
// TLS, all with certificates from support/test_certs.h. A CA from --ca, TRELLIS_CA or the
// profile's ca: is trusted; without it, for a certificate of another host or an expired one,
// or for a server that speaks only TLS 1.1 (`openssl s_server`), the CLI says why in one line
// and exits 3, never printing a secret.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>

#include "registry_server.h"
#include "support/nginx_server.h"
#include "support/openssl_server.h"
#include "support/test_certs.h"
#include "support/test_mirror.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class CliTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path d = certs_.path();
    ca_ = makeCert(d, "ca", {.cn = "Trellis Test CA", .ca = true}, nullptr);
    localhost_ =
        makeCert(d, "localhost", {.cn = "localhost", .sans = "DNS:localhost,IP:127.0.0.1"}, &ca_);
    other_host_ = makeCert(d, "other", {.cn = "other.test", .sans = "DNS:other.test"}, &ca_);
    expired_ = makeCert(d, "expired",
                        {.cn = "localhost",
                         .sans = "DNS:localhost,IP:127.0.0.1",
                         .not_before = -7200,
                         .not_after = -3600},
                        &ca_);
    rogue_ca_ = makeCert(d, "rogue-ca", {.cn = "Rogue CA", .ca = true}, nullptr);
  }

  // trellisd whose admin plane serves `leaf` over TLS.
  std::unique_ptr<TrellisdProcess> startServer(const Identity& leaf) {
    std::string config = defaultTestConfig();
    const std::string anchor = "  token_file: @DIR@/admin.token\n";
    config.insert(config.find(anchor) + anchor.size(),
                  "  tls:\n    certificates:\n      - {cert: " + leaf.cert_file.string() +
                      ", key: " + leaf.key_file.string() + "}\n");
    auto server = std::make_unique<TrellisdProcess>(config);
    EXPECT_TRUE(server->start()) << server->log();
    return server;
  }

  static std::string adminFlags(const TrellisdProcess& server, const std::string& host) {
    return "--admin https://" + host + ":" + std::to_string(server.adminPort()) + " --token-file " +
           (server.dir() / "admin.token").string();
  }

  fs::path profile() const { return dir_ / "cfg" / "profiles.yaml"; }

  // The CLI from an empty folder with only `env` set (no TRELLIS_* from the caller).
  std::string cli(const std::string& env, const std::string& args, int* status) {
    fs::create_directories(dir_ / "cwd");
    return runCommand("cd " + (dir_ / "cwd").string() +
                          " && env -u TRELLIS_ADMIN_URL -u TRELLIS_ADMIN_TOKEN -u TRELLIS_CONFIG "
                          "-u TRELLIS_PROFILE -u TRELLIS_REGISTRY -u TRELLIS_REGISTRY_KEY "
                          "-u TRELLIS_REGISTRY_TOKEN -u TRELLIS_CA TRELLIS_PROFILE_FILE=" +
                          profile().string() + " " + env + " " + TRELLIS_CLI_PATH + " " + args +
                          " 2>&1 </dev/null",
                      status);
  }

  std::string caFlag() const { return "--ca " + ca_.cert_file.string(); }

  TempDir certs_;
  TempDir dir_;
  Identity ca_, localhost_, other_host_, expired_, rogue_ca_;
};

TEST_F(CliTlsTest, TrustsTheCaFromTheFlagTheEnvironmentOrTheProfile) {
  auto server = startServer(localhost_);
  int status = 0;
  auto out = cli("", adminFlags(*server, "localhost") + " " + caFlag() + " status", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("ready:       yes"));

  // The certificate carries 127.0.0.1 as an IP SAN: dialling the address is verified too.
  out = cli("", adminFlags(*server, "127.0.0.1") + " " + caFlag() + " status", &status);
  EXPECT_EQ(status, 0) << out;

  out = cli("TRELLIS_CA=" + ca_.cert_file.string(), adminFlags(*server, "localhost") + " status",
            &status);
  EXPECT_EQ(status, 0) << out;

  // `trellis login --ca` saves the CA in the profile; later commands need no flag at all.
  out = cli("", "login " + adminFlags(*server, "localhost") + " " + caFlag(), &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(readFile(profile()), HasSubstr("ca: \"" + ca_.cert_file.string() + "\""));
  out = cli("", "status", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("ready:       yes"));

  // A CA file that cannot be read is a usage error naming where it came from.
  out = cli("TRELLIS_CA=" + (dir_ / "missing.pem").string(),
            adminFlags(*server, "localhost") + " status", &status);
  EXPECT_EQ(status, 2) << out;
  EXPECT_THAT(out, HasSubstr("TRELLIS_CA " + (dir_ / "missing.pem").string()));
}

TEST_F(CliTlsTest, RefusesAnUntrustedIssuerWithExitCode3) {
  auto server = startServer(localhost_);
  int status = 0;
  // No CA: the system store does not know the test CA.
  auto out = cli("", adminFlags(*server, "localhost") + " status", &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("TLS certificate refused: untrusted issuer"));
  EXPECT_THAT(out, HasSubstr("--ca FILE"));
  EXPECT_THAT(out, Not(HasSubstr(server->adminToken())));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line: " << out;

  // Another CA than the one that signed it.
  out = cli("",
            adminFlags(*server, "localhost") + " --ca " + rogue_ca_.cert_file.string() + " status",
            &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("untrusted issuer"));
}

TEST_F(CliTlsTest, RefusesACertificateForAnotherHost) {
  auto server = startServer(other_host_);
  int status = 0;
  auto out = cli("", adminFlags(*server, "localhost") + " " + caFlag() + " status", &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("TLS certificate refused: wrong host: it is not for localhost"));
  EXPECT_THAT(out, Not(HasSubstr(server->adminToken())));
}

TEST_F(CliTlsTest, RefusesAnExpiredCertificate) {
  auto server = startServer(expired_);
  int status = 0;
  auto out = cli("", adminFlags(*server, "localhost") + " " + caFlag() + " status", &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("TLS certificate refused: expired"));
}

TEST_F(CliTlsTest, RefusesAServerThatSpeaksOnlyTls11) {
  OpensslServer old(localhost_.cert_file.string(), localhost_.key_file.string(),
                    OpensslServer::tls11Only());
  ASSERT_TRUE(old.ready());
  writeFile(dir_ / "admin.token", "not-sent\n");
  int status = 0;
  auto out = cli("",
                 "--admin https://localhost:" + std::to_string(old.port()) + " --token-file " +
                     (dir_ / "admin.token").string() + " " + caFlag() + " status",
                 &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("TLS handshake with localhost failed: the server offers no TLS "
                             "version this client accepts (1.2 or 1.3)"));
  EXPECT_THAT(out, Not(HasSubstr("not-sent")));
}

TEST_F(CliTlsTest, PublishesToAndSearchesARegistryBehindHttps) {
  RegistryServer registry;
  ASSERT_TRUE(registry.start()) << registry.log();
  NginxServer nginx(registry.port());
  nginx.serveTls(localhost_.cert_file, localhost_.key_file);
  ASSERT_TRUE(nginx.start()) << nginx.error();
  writeFile(dir_ / "registry.key", RegistryServer::kTenantKey);
  writeFile(dir_ / "admin.token", RegistryServer::kAdminToken);
  int status = 0;
  auto out = cli("", "keygen --out " + (dir_ / "keys").string() + " --name acme", &status);
  ASSERT_EQ(status, 0) << out;

  const std::string registry_flags =
      " --registry https://localhost:" + std::to_string(nginx.port()) + " --registry-key-file " +
      (dir_ / "registry.key").string();
  const std::string reg = "publisher key register acme --pubkey " +
                          (dir_ / "keys" / "acme.pub").string() + registry_flags +
                          " --registry-token-file " + (dir_ / "admin.token").string();
  out = cli("", reg, &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("TLS certificate refused: untrusted issuer"));
  EXPECT_THAT(out, Not(HasSubstr(RegistryServer::kTenantKey)));
  EXPECT_THAT(out, Not(HasSubstr(RegistryServer::kAdminToken)));

  out = cli("", reg + " " + caFlag(), &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("as the first key of namespace acme"));

  // The installer's reads (signed metadata) take the same way.
  const std::string search =
      "plugin search" + registry_flags + " --state-dir " + (dir_ / "state").string();
  out = cli("", search, &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("TLS certificate refused: untrusted issuer"));
  out = cli("", search + " " + caFlag(), &status);
  EXPECT_EQ(status, 0) << out;
}

TEST_F(CliTlsTest, InstallsMetadataFromAMirrorBehindHttps) {
  TestMirror mirror(dir_ / "mirror");
  mirror.addPlugin(fs::path(TRELLIS_FIXTURE_DIR) / "good");
  mirror.publish();
  NginxServer nginx(0);
  nginx.serveTls(localhost_.cert_file, localhost_.key_file);
  nginx.serveDirectory(mirror.dir());
  ASSERT_TRUE(nginx.start()) << nginx.error();
  const std::string search =
      "plugin search good --from https://localhost:" + std::to_string(nginx.port()) +
      " --state-dir " + (dir_ / "state").string();
  int status = 0;
  auto out = cli("", search, &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("TLS certificate refused: untrusted issuer"));

  out = cli("TRELLIS_CA=" + ca_.cert_file.string(), search, &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("fixture/good"));
}

TEST_F(CliTlsTest, RefusesAMirrorWithAnExpiredCertificate) {
  TestMirror mirror(dir_ / "mirror");
  mirror.publish();
  NginxServer nginx(0);
  nginx.serveTls(expired_.cert_file, expired_.key_file);
  nginx.serveDirectory(mirror.dir());
  ASSERT_TRUE(nginx.start()) << nginx.error();
  int status = 0;
  auto out = cli("",
                 "plugin search --from https://localhost:" + std::to_string(nginx.port()) +
                     " --state-dir " + (dir_ / "state").string() + " " + caFlag(),
                 &status);
  EXPECT_EQ(status, 3) << out;
  EXPECT_THAT(out, HasSubstr("TLS certificate refused: expired"));
}

}  // namespace
}  // namespace trellis::test
