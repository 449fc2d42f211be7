// Client certificates as credentials on a real trellisd with mTLS (client_auth optional,
// client_ca the test CA), certificates from support/test_certs.h and requests through curl.
// On the data plane a certificate mapped to a tenant (by SPIFFE ID, subject and issuer, or
// pin) reaches that tenant with the principal "cert:<id>" (fixture/svc-b's whoami reports it
// through svc-a); unmapped, revoked and expired credentials get 401 naming why; a certificate
// from an untrusted CA is refused at the handshake, and the log says why. The mappings are
// made with the real `trellis` CLI. On the admin plane a certificate bound to an admin
// principal authenticates as that principal.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <chrono>
#include <regex>
#include <string>
#include <thread>

#include "support/shared_postgres.h"
#include "support/test_certs.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using namespace std::chrono_literals;

struct CurlReply {
  int status = 0;  // 0: no HTTP answer (the handshake failed)
  std::string body;
};

// The certificate's SHA-256 over its DER, lowercase hex: what --pin takes.
std::string pinOf(const Identity& id) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(id.cert.get(), EVP_sha256(), md, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

// The credential id in `trellis tenant cert add`'s answer.
std::string credentialId(const std::string& cli_output) {
  std::smatch m;
  if (!std::regex_search(cli_output, m, std::regex("certificate credential ([0-9a-f]{8}) "))) {
    return "";
  }
  return m[1].str();
}

class MtlsTenantsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path dir = certs_.path();
    ca_ = makeCert(dir, "ca", {.cn = "Mtls Test CA", .ca = true}, nullptr);
    server_cert_ =
        makeCert(dir, "server", {.cn = "localhost", .sans = "DNS:localhost,IP:127.0.0.1"}, &ca_);
    spiffe_ =
        makeCert(dir, "spiffe",
                 {.cn = "billing", .sans = "URI:spiffe://acme.test/ns/prod/sa/billing"}, &ca_);
    subject_ = makeCert(dir, "subject", {.cn = "orders"}, &ca_);
    pinned_ = makeCert(dir, "pinned", {.cn = "pinned"}, &ca_);
    globex_ = makeCert(dir, "globex", {.cn = "globex-app"}, &ca_);
    unmapped_ = makeCert(dir, "unmapped", {.cn = "stranger"}, &ca_);
    rogue_ca_ = makeCert(dir, "rogue-ca", {.cn = "Mtls Test CA"}, nullptr);
    rogue_ = makeCert(dir, "rogue", {.cn = "orders"}, &rogue_ca_);
    expired_ =
        makeCert(dir, "expired", {.cn = "orders", .not_before = -7200, .not_after = -3600}, &ca_);
  }

  // `server.tls` (and `admin.tls` with `admin_tls`): client certificates optional, verified
  // against the test CA.
  // `storage`: lines added to the storage map (PostgreSQL).
  std::string config(bool admin_tls = false, const std::string& client_auth = "optional",
                     const std::string& storage = "") const {
    const std::string tls = "    certificates:\n      - {cert: " + server_cert_.cert_file.string() +
                            ", key: " + server_cert_.key_file.string() +
                            "}\n    client_auth: " + client_auth +
                            "\n    client_ca: " + ca_.cert_file.string() + "\n";
    std::string yaml = defaultTestConfig("    - id: fixture/svc-a\n    - id: fixture/svc-b\n");
    const std::string drain = "  drain_timeout_ms: 5000\n";
    yaml.replace(yaml.find(drain), drain.size(), drain + "  tls:\n" + tls);
    if (!storage.empty()) {
      const std::string anchor = "  data_dir: @DATA@\n";
      yaml.insert(yaml.find(anchor) + anchor.size(), storage);
    }
    if (admin_tls) {
      const std::string token = "  token_file: @DIR@/admin.token\n";
      yaml.replace(yaml.find(token), token.size(), token + "  tls:\n" + tls);
    }
    return yaml;
  }

  // One request over HTTPS with `client` as the client certificate (none if null).
  CurlReply curl(uint16_t port, const std::string& method, const std::string& path,
                 const Identity* client, const std::string& header = "") const {
    std::string cmd = "curl -sS --max-time 10 -X " + method + " --cacert " +
                      ca_.cert_file.string() + " -w '\\n%{http_code}' ";
    if (client) {
      cmd += "--cert " + client->cert_file.string() + " --key " + client->key_file.string() + " ";
    }
    if (!header.empty()) cmd += "-H '" + header + "' ";
    cmd += "https://localhost:" + std::to_string(port) + path + " 2>/dev/null";
    int exit_status = 0;
    std::string out = runCommand(cmd, &exit_status);
    CurlReply r;
    size_t nl = out.rfind('\n');
    if (nl == std::string::npos) return r;
    r.status = std::atoi(out.c_str() + nl + 1);
    r.body = out.substr(0, nl);
    return r;
  }

  CurlReply call(const std::string& method, const Identity* client,
                 const std::string& header = "") {
    return curl(server_->port(), "POST", "/svc-a/call/svc-b/" + method, client, header);
  }

  // `trellis <args>`; its output, asserting the exit status.
  std::string cli(const std::string& args, int expected_status = 0) {
    int status = -1;
    std::string out = runCli(*server_, args, &status);
    EXPECT_EQ(status, expected_status) << args << "\n" << out;
    return out;
  }

  std::string addCert(const std::string& args) {
    std::string out = cli("tenant cert add " + args);
    std::string id = credentialId(out);
    EXPECT_NE(id, "") << out;
    return id;
  }

  void start(bool admin_tls = false, const std::string& client_auth = "optional") {
    server_ = std::make_unique<TrellisdProcess>(config(admin_tls, client_auth));
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  // Waits until `pred` holds; false after 10 s.
  template <typename Pred>
  static bool eventually(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(50ms);
    }
    return true;
  }

  TempDir certs_;
  Identity ca_, server_cert_, spiffe_, subject_, pinned_, globex_, unmapped_, rogue_ca_, rogue_,
      expired_;
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(MtlsTenantsTest, EachSelectorMapsItsCertificateToItsTenantAsCertPrincipal) {
  start();
  // Before any mapping: verified at TLS, but no tenant.
  auto before = call("whoami", &spiffe_);
  EXPECT_EQ(before.status, 401) << before.body;

  const std::string by_spiffe = addCert("acme --spiffe spiffe://acme.test/ns/prod/sa/billing");
  const std::string by_subject = addCert("acme --subject 'CN=orders' --issuer 'CN=Mtls Test CA'");
  const std::string by_pin = addCert("globex --pin " + pinOf(pinned_));

  const std::pair<const Identity*, std::string> expected[] = {
      {&spiffe_, "acme cert:" + by_spiffe},
      {&subject_, "acme cert:" + by_subject},
      {&pinned_, "globex cert:" + by_pin}};
  for (const auto& [client, who] : expected) {
    auto reply = call("whoami", client);
    ASSERT_EQ(reply.status, 200) << reply.body << server_->log();
    // caller plugin, tenant, traceparent, principal
    EXPECT_THAT(reply.body, MatchesRegex("fixture/svc-a " + who.substr(0, who.find(' ')) +
                                         " 00-[0-9a-f]{32}-[0-9a-f]{16}-0[01] " +
                                         who.substr(who.find(' ') + 1)));
  }

  // The listing shows the three, with their selectors.
  std::string acme = cli("tenant cert list acme");
  EXPECT_THAT(acme, HasSubstr(by_spiffe));
  EXPECT_THAT(acme, HasSubstr("spiffe spiffe://acme.test/ns/prod/sa/billing"));
  EXPECT_THAT(acme, HasSubstr("subject \"CN=orders\" issuer \"CN=Mtls Test CA\""));
  EXPECT_THAT(acme, Not(HasSubstr(by_pin)));
  EXPECT_THAT(cli("tenant cert list globex"), HasSubstr("pin " + pinOf(pinned_)));

  // An API key still wins over the certificate when the request carries one.
  auto keyed = call("whoami", &spiffe_, "Authorization: Bearer globex-key");
  ASSERT_EQ(keyed.status, 200);
  EXPECT_THAT(keyed.body, HasSubstr(" globex "));
}

TEST_F(MtlsTenantsTest, ACertificateSeesOnlyItsTenantsData) {
  start();
  addCert("acme --spiffe spiffe://acme.test/ns/prod/sa/billing");
  addCert("globex --subject CN=globex-app --issuer 'CN=Mtls Test CA'");
  EXPECT_EQ(call("count", &spiffe_).body, "1");
  EXPECT_EQ(call("count", &spiffe_).body, "2");
  // globex's certificate starts from nothing; acme's key sees acme's data.
  EXPECT_EQ(call("count", &globex_).body, "1");
  EXPECT_EQ(call("count", nullptr, "Authorization: Bearer acme-key").body, "3");
  EXPECT_EQ(call("count", &globex_).body, "2");
  EXPECT_EQ(call("count", &spiffe_).body, "4");
}

TEST_F(MtlsTenantsTest, UnmappedRevokedAndExpiredCertificatesGet401NamingWhy) {
  start();
  addCert("acme --subject CN=orders --issuer 'CN=Mtls Test CA'");
  auto unmapped = call("whoami", &unmapped_);
  EXPECT_EQ(unmapped.status, 401);
  EXPECT_THAT(unmapped.body, HasSubstr("not mapped to a tenant"));
  // Nothing about other tenants or their credentials.
  EXPECT_THAT(unmapped.body, Not(HasSubstr("acme")));
  EXPECT_THAT(unmapped.body, Not(HasSubstr("orders")));
  EXPECT_THAT(server_->log(), HasSubstr("client certificate from 127.0.0.1 refused"));

  const std::string id = addCert("acme --spiffe spiffe://acme.test/ns/prod/sa/billing");
  ASSERT_EQ(call("whoami", &spiffe_).status, 200);
  EXPECT_THAT(cli("tenant cert revoke acme " + id), HasSubstr("revoked"));
  auto revoked = call("whoami", &spiffe_);
  EXPECT_EQ(revoked.status, 401);
  EXPECT_THAT(revoked.body, HasSubstr("revoked"));
  EXPECT_TRUE(std::regex_search(cli("tenant cert list acme"), std::regex(id + " +revoked")));
  // Another tenant cannot revoke acme's credential, and is not told it exists.
  std::string other = cli("tenant cert revoke globex " + id, 1);
  EXPECT_THAT(other, HasSubstr("no certificate credential"));

  addCert("acme --pin " + pinOf(pinned_) + " --expires 2s");
  ASSERT_EQ(call("whoami", &pinned_).status, 200);
  CurlReply expired;
  ASSERT_TRUE(eventually([&] {
    expired = call("whoami", &pinned_);
    return expired.status == 401;
  }));
  EXPECT_THAT(expired.body, HasSubstr("expired"));
  // Other tenants' requests never noticed.
  EXPECT_EQ(call("whoami", &subject_).status, 200);
}

TEST_F(MtlsTenantsTest, AnUntrustedCertificateIsRefusedAtTheHandshakeWithALoggedReason) {
  start();
  addCert("acme --subject CN=orders --issuer 'CN=Mtls Test CA'");
  // Same subject and issuer name, another CA: TLS refuses it before any mapping is consulted.
  auto rogue = call("whoami", &rogue_);
  EXPECT_EQ(rogue.status, 0);
  ASSERT_TRUE(eventually([&] {
    return server_->log().find("untrusted issuer") != std::string::npos;
  })) << server_->log();
  EXPECT_THAT(server_->log(), HasSubstr("client certificate untrusted issuer"));
  // Nothing of a key reaches the log.
  EXPECT_THAT(server_->log(), Not(HasSubstr("PRIVATE KEY")));
  // The listener goes on serving the trusted one.
  EXPECT_EQ(call("whoami", &subject_).status, 200);
}

TEST_F(MtlsTenantsTest, HandshakeFailuresAreLoggedWithTheirReason) {
  start(false, "required");
  addCert("acme --subject CN=orders --issuer 'CN=Mtls Test CA'");
  EXPECT_EQ(call("whoami", nullptr).status, 0);
  EXPECT_EQ(call("whoami", &expired_).status, 0);
  ASSERT_TRUE(eventually([&] {
    const std::string log = server_->log();
    return log.find("no client certificate, and this listener requires one") != log.npos &&
           log.find(
               "client certificate expired (certificate has expired): subject "
               "\"CN=orders\"") != log.npos;
  })) << server_->log();
  EXPECT_EQ(call("whoami", &subject_).status, 200);
}

// client_crl: a certificate its CA revoked is refused at the handshake with the reason
// logged while the others pass; a new CRL is picked up without a restart, un-revoking too;
// a CRL past its nextUpdate vouches for nobody, so every certificate of that CA is refused.
TEST_F(MtlsTenantsTest, ACertificateItsCaRevokedIsRefusedAndANewCrlIsPickedUp) {
  const fs::path crl = certs_.path() / "ca.crl";
  writeCrl(crl, ca_, {&pinned_});
  std::string yaml = config();
  const std::string ca_line = "    client_ca: " + ca_.cert_file.string() + "\n";
  yaml.replace(yaml.find(ca_line), ca_line.size(),
               ca_line + "    client_crl: " + crl.string() + "\n    reload_check_ms: 100\n");
  server_ = std::make_unique<TrellisdProcess>(yaml);
  ASSERT_TRUE(server_->start()) << server_->log();
  addCert("acme --subject CN=orders --issuer 'CN=Mtls Test CA'");
  addCert("globex --pin " + pinOf(pinned_));

  EXPECT_EQ(call("whoami", &subject_).status, 200);
  EXPECT_EQ(call("whoami", &pinned_).status, 0);
  ASSERT_TRUE(eventually([&] {
    return server_->log().find(
               "client certificate revoked (certificate revoked): subject "
               "\"CN=pinned\"") != std::string::npos;
  })) << server_->log();

  writeCrl(crl, ca_, {&pinned_, &subject_});
  EXPECT_TRUE(eventually([&] { return call("whoami", &subject_).status == 0; }));
  writeCrl(crl, ca_, {});
  EXPECT_TRUE(eventually([&] {
    return call("whoami", &subject_).status == 200 && call("whoami", &pinned_).status == 200;
  }));
  writeCrl(crl, ca_, {}, -60);
  EXPECT_TRUE(eventually([&] { return call("whoami", &subject_).status == 0; }));
  EXPECT_THAT(server_->log(), HasSubstr("client certificate unverifiable (revocation list) (CRL "
                                        "has expired)"));
}

TEST_F(MtlsTenantsTest, TheCliRefusesBadInputWithAClearMessage) {
  start();
  EXPECT_THAT(cli("tenant cert add acme --pin 1234", 2), HasSubstr("64 hex digits"));
  EXPECT_THAT(cli("tenant cert add acme --spiffe https://acme.test/x", 2),
              HasSubstr("expected spiffe://"));
  EXPECT_THAT(cli("tenant cert add acme --spiffe spiffe://acme.test/x/", 2),
              HasSubstr("must not end with '/'"));
  EXPECT_THAT(cli("tenant cert add acme --subject /CN=x --issuer 'CN=Mtls Test CA'", 2),
              HasSubstr("RFC 2253"));
  EXPECT_THAT(cli("tenant cert add acme --spiffe spiffe://acme.test/x --expires soon", 2),
              HasSubstr("RFC 3339"));
  EXPECT_THAT(cli("tenant cert add acme --spiffe spiffe://acme.test/x --expires "
                  "2001-01-01T00:00:00Z",
                  2),
              HasSubstr("in the past"));
  EXPECT_THAT(cli("tenant cert add umbrella --spiffe spiffe://acme.test/x", 1),
              HasSubstr("no tenant \"umbrella\""));
  EXPECT_NE(cli("tenant cert add acme", 2).find("needs one of"), std::string::npos);
  // Nothing was stored by any of them.
  EXPECT_THAT(cli("tenant cert list acme"), Not(HasSubstr("spiffe://")));
  // Admin principals take the same selectors.
  cli("admin-token create deployer --role operator");
  EXPECT_THAT(cli("admin-token cert deployer --spiffe spiffe://acme.test/ops/deployer"),
              HasSubstr("admin principal deployer"));
  EXPECT_THAT(cli("admin-token cert deployer --pin 12:34", 2), HasSubstr("64 hex digits"));
  EXPECT_THAT(cli("admin-token cert nobody --spiffe spiffe://acme.test/ops/x", 1),
              HasSubstr("no active admin principal \"nobody\""));
  EXPECT_THAT(cli("--json admin-token list"), HasSubstr("spiffe://acme.test/ops/deployer"));
  EXPECT_THAT(cli("admin-token cert deployer --unbind"), HasSubstr("has no client certificate"));
  EXPECT_THAT(cli("--json admin-token list"), Not(HasSubstr("spiffe://acme.test/ops/deployer")));
  // The same selector twice is a conflict, naming the credential that has it.
  const std::string id = addCert("acme --spiffe spiffe://acme.test/x");
  EXPECT_THAT(cli("tenant cert add acme --spiffe spiffe://acme.test/x", 1), HasSubstr(id));
}

TEST_F(MtlsTenantsTest, ACertificateBoundToAnAdminPrincipalAuthenticatesAsIt) {
  start(/*admin_tls=*/true);
  const std::string bootstrap = "Authorization: Bearer " + server_->adminToken();
  const uint16_t admin = server_->adminPort();
  std::string create = "curl -sS --max-time 10 --cacert " + ca_.cert_file.string() + " -H '" +
                       bootstrap + "' -d '{\"name\":\"auditor-bot\",\"role\":\"auditor\"}' " +
                       "https://localhost:" + std::to_string(admin) + "/v1/admin-tokens";
  int status = 0;
  ASSERT_THAT(runCommand(create, &status), HasSubstr("auditor-bot"));
  std::string bind = "curl -sS --max-time 10 --cacert " + ca_.cert_file.string() + " -X PUT -H '" +
                     bootstrap +
                     "' -d '{\"spiffe\":\"spiffe://acme.test/ns/prod/sa/billing\"}' "
                     "https://localhost:" +
                     std::to_string(admin) + "/v1/admin-tokens/auditor-bot/certificate";
  ASSERT_THAT(runCommand(bind, &status), HasSubstr("\"certificate\""));

  // The certificate alone reads what an auditor may read...
  auto read = curl(admin, "GET", "/v1/tenants", &spiffe_);
  EXPECT_EQ(read.status, 200) << read.body << server_->log();
  EXPECT_THAT(read.body, HasSubstr("acme"));
  // ...and is refused, by name and role, what an auditor may not do.
  auto write = curl(admin, "POST", "/v1/tenants/acme/suspend", &spiffe_);
  EXPECT_EQ(write.status, 403);
  EXPECT_THAT(write.body, HasSubstr("admin principal auditor-bot has role auditor"));
  // A certificate bound to nobody gets 401.
  auto stranger = curl(admin, "GET", "/v1/tenants", &unmapped_);
  EXPECT_EQ(stranger.status, 401);
  EXPECT_THAT(stranger.body, HasSubstr("bound to no admin principal"));

  // The CLI presents one too (--cert/--key) and then needs no token at all.
  auto cliWith = [&](const Identity& who, const std::string& args, int* exit_status) {
    return runCommand("cd " + certs_.path().string() +
                          " && env -u TRELLIS_ADMIN_TOKEN -u TRELLIS_CONFIG -u TRELLIS_PROFILE " +
                          TRELLIS_CLI_PATH + " --admin https://localhost:" + std::to_string(admin) +
                          " --ca " + ca_.cert_file.string() + " --cert " + who.cert_file.string() +
                          " --key " + who.key_file.string() + " " + args + " 2>&1 </dev/null",
                      exit_status);
  };
  ASSERT_EQ(::chmod(spiffe_.key_file.c_str(), 0644), 0);
  EXPECT_THAT(cliWith(spiffe_, "tenant list", &status),
              HasSubstr("the private key is readable by others (mode 0644); chmod 600 it"));
  EXPECT_EQ(status, 2);
  ASSERT_EQ(::chmod(spiffe_.key_file.c_str(), 0600), 0);
  ASSERT_EQ(::chmod(unmapped_.key_file.c_str(), 0600), 0);
  std::string out = cliWith(spiffe_, "tenant list", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("acme"));
  out = cliWith(spiffe_, "tenant suspend acme", &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_THAT(out, HasSubstr("admin principal auditor-bot has role auditor"));
  out = cliWith(unmapped_, "tenant list", &status);
  EXPECT_EQ(status, 4) << out;
  EXPECT_THAT(out, HasSubstr("refused the client certificate of --cert/--key"));
  EXPECT_THAT(out, HasSubstr("bound to no admin principal"));

  // Revoking the principal revokes its certificate's access too.
  ASSERT_EQ(curl(admin, "DELETE", "/v1/admin-tokens/auditor-bot", nullptr, bootstrap).status, 200);
  auto revoked = curl(admin, "GET", "/v1/tenants", &spiffe_);
  EXPECT_EQ(revoked.status, 401);
  EXPECT_THAT(revoked.body, HasSubstr("was revoked"));
  // The data plane is unaffected: the same certificate is no tenant credential there.
  EXPECT_EQ(call("whoami", &spiffe_).status, 401);
}

// Two hosts on one PostgreSQL: a credential added through one reaches the tenant through the
// other, and a revocation on one is refused on the other once it has polled the registry.
TEST_F(MtlsTenantsTest, OnPostgresACredentialAndItsRevocationReachEveryHost) {
  auto db = SharedPostgres::freshDatabase();
  ASSERT_TRUE(db) << db.error;
  const std::string storage =
      "  url: \"" + db.appUrl() + "\"\n  owner_url: \"" + db.ownerUrl() + "\"\n  pool_size: 2\n";
  server_ = std::make_unique<TrellisdProcess>(config(false, "optional", storage));
  ASSERT_TRUE(server_->start()) << server_->log();
  TrellisdProcess other(config(false, "optional", storage));
  ASSERT_TRUE(other.start()) << other.log();

  const std::string id = addCert("acme --spiffe spiffe://acme.test/ns/prod/sa/billing");
  CurlReply there;
  ASSERT_TRUE(eventually([&] {
    there = curl(other.port(), "POST", "/svc-a/call/svc-b/whoami", &spiffe_);
    return there.status == 200;
  })) << there.body;
  EXPECT_THAT(there.body, HasSubstr(" acme "));
  EXPECT_THAT(there.body, HasSubstr("cert:" + id));

  cli("tenant cert revoke acme " + id);
  ASSERT_TRUE(eventually([&] {
    there = curl(other.port(), "POST", "/svc-a/call/svc-b/whoami", &spiffe_);
    return there.status == 401;
  })) << there.body;
  EXPECT_THAT(there.body, HasSubstr("revoked"));
}

}  // namespace
}  // namespace trellis::test
