// trellis/audit on a real trellisd as the configured audit sink: admin actions become
// records in the system log, a record's inclusion proof verifies against a signed
// checkpoint, tenants read only their own log, records survive kill -9, and an evidence
// pack exported from the admin routes passes `trellis-audit verify` (and fails it once
// a record is altered).
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audit_test_util.h"
#include "core/ed25519.h"
#include "core/merkle.h"
#include "core/record.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;
using ::testing::HasSubstr;

class AuditSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/audit\n"
                          "      system: true\n"
                          "      config: {checkpoint_every: 1000, checkpoint_interval_s: 3600,"
                          " sensitive_fields: [email]}\n",
                          "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& path, const std::string& body = "",
                  const std::string& token = "") {
    return request(server_->adminPort(), method, path,
                   {{"Authorization", "Bearer " + (token.empty() ? server_->adminToken() : token)}},
                   body);
  }
  HttpReply audit(const std::string& method, const std::string& tail,
                  const std::string& token = "") {
    return admin(method, "/v1/x/trellis/audit/" + tail, "", token);
  }
  HttpReply tenant(const std::string& key, const std::string& tail) {
    return request(server_->port(), "GET", "/audit/v1/" + tail,
                   {{"Authorization", "Bearer " + key}});
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditSinkTest, AdminActionsAreRecordedAndTheirProofsVerifyAgainstACheckpoint) {
  // Refused (an unknown field), but its request record is written first, with the email.
  EXPECT_EQ(admin("POST", "/v1/admin-tokens",
                  R"({"name":"dave","role":"auditor","email":"carol@example.com"})")
                .status,
            400);
  auto created = admin("POST", "/v1/admin-tokens", R"({"name":"carol","role":"auditor"})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string carol = json(created.body)->getValue<std::string>("token");

  // The auditor reads the system log: the request and response records of that action.
  auto records = audit("GET", "logs/_system/records", carol);
  ASSERT_EQ(records.status, 200) << records.body;
  int64_t seq = 0;
  std::string line;
  for (const auto& l : lines(records.body)) {
    auto r = json(l);
    if (r->getValue<std::string>("action") == "POST /v1/admin-tokens" &&
        r->getValue<std::string>("type") == "admin.request" && l.find("\"email\"") != l.npos) {
      seq = r->getValue<int64_t>("seq");
      line = l;
      EXPECT_EQ(r->getObject("actor")->getValue<std::string>("name"), "bootstrap");
      EXPECT_EQ(r->getValue<std::string>("event_id").substr(14, 1), "7");  // UUIDv7
      EXPECT_THAT(r->getValue<std::string>("time"), ::testing::EndsWith("Z"));
    }
  }
  ASSERT_GT(seq, 0) << records.body;
  // The configured sensitive field is HMAC'd by the sink; an auditor can still search it.
  EXPECT_THAT(line, ::testing::Not(HasSubstr("carol@example.com")));
  EXPECT_THAT(line, HasSubstr("hmac-sha256:"));
  auto digest = admin("POST", "/v1/x/trellis/audit/hmac",
                      R"({"tenant":"_system","value":"carol@example.com"})", carol);
  ASSERT_EQ(digest.status, 200) << digest.body;
  EXPECT_THAT(line, HasSubstr(json(digest.body)->getValue<std::string>("digest")));

  // Roles: the auditor reads but may not sign; the operator (here bootstrap) may.
  EXPECT_EQ(audit("POST", "logs/_system/checkpoint", carol).status, 403);
  auto cp = audit("POST", "logs/_system/checkpoint");
  ASSERT_EQ(cp.status, 200) << cp.body;
  auto checkpoint = audit::Checkpoint::fromJson(cp.body);
  ASSERT_TRUE(checkpoint) << cp.body;

  auto pem = audit("GET", "public-key", carol);
  ASSERT_EQ(pem.status, 200);
  auto key = audit::ed25519PublicKeyFromText(pem.body);
  ASSERT_TRUE(key) << pem.body;
  EXPECT_TRUE(audit::verifyCheckpoint(*checkpoint, *key));

  auto proof = audit("GET",
                     "logs/_system/proof/inclusion?seq=" + std::to_string(seq) +
                         "&size=" + std::to_string(checkpoint->size),
                     carol);
  ASSERT_EQ(proof.status, 200) << proof.body;
  auto p = json(proof.body);
  std::vector<audit::Hash> path;
  auto list = p->getArray("proof");
  for (size_t i = 0; i < list->size(); ++i) {
    path.push_back(*audit::hashFromHex(list->getElement<std::string>(static_cast<unsigned>(i))));
  }
  EXPECT_TRUE(audit::verifyInclusion(static_cast<uint64_t>(seq - 1), checkpoint->size,
                                     audit::leafHash(line), path, checkpoint->root));
  // The same proof does not prove an altered record.
  std::string altered = line;
  altered.replace(altered.find("dave"), 4, "eve!");
  EXPECT_FALSE(audit::verifyInclusion(static_cast<uint64_t>(seq - 1), checkpoint->size,
                                      audit::leafHash(altered), path, checkpoint->root));

  // More admin actions; the newer checkpoint is consistent with the older one.
  ASSERT_EQ(admin("GET", "/v1/tenants").status, 200);
  auto cp2 = audit("POST", "logs/_system/checkpoint");
  ASSERT_EQ(cp2.status, 200) << cp2.body;
  auto newer = *audit::Checkpoint::fromJson(cp2.body);
  ASSERT_GT(newer.size, checkpoint->size);
  auto consistency =
      audit("GET",
            "logs/_system/proof/consistency?from=" + std::to_string(checkpoint->size) +
                "&to=" + std::to_string(newer.size),
            carol);
  ASSERT_EQ(consistency.status, 200) << consistency.body;
  std::vector<audit::Hash> cproof;
  auto clist = json(consistency.body)->getArray("proof");
  for (size_t i = 0; i < clist->size(); ++i) {
    cproof.push_back(*audit::hashFromHex(clist->getElement<std::string>(static_cast<unsigned>(i))));
  }
  EXPECT_TRUE(
      audit::verifyConsistency(checkpoint->size, newer.size, cproof, checkpoint->root, newer.root));

  // Bad input: a clear 4xx, never a crash.
  EXPECT_EQ(audit("GET", "logs/_system/proof/inclusion", carol).status, 400);
  EXPECT_EQ(audit("GET", "logs/_system/proof/inclusion?seq=999999", carol).status, 404);
  EXPECT_EQ(audit("GET", "logs/_system/proof/consistency?from=0", carol).status, 400);
  // Proofs for the wrong tree size: past the log, or a tree the record is not in.
  auto past = audit("GET", "logs/_system/proof/inclusion?seq=1&size=999999", carol);
  EXPECT_EQ(past.status, 400);
  EXPECT_THAT(past.body, HasSubstr("tree size 999999 is past the log's"));
  auto before_it = audit("GET",
                         "logs/_system/proof/inclusion?seq=" + std::to_string(newer.size) +
                             "&size=" + std::to_string(checkpoint->size),
                         carol);
  EXPECT_EQ(before_it.status, 400);
  EXPECT_THAT(before_it.body, HasSubstr("is not in a tree of"));
  EXPECT_EQ(audit("GET",
                  "logs/_system/proof/consistency?from=" + std::to_string(newer.size + 1) +
                      "&to=" + std::to_string(newer.size),
                  carol)
                .status,
            400);
}

TEST_F(AuditSinkTest, RecordsExportAsCefAndSyslogForCollectors) {
  ASSERT_EQ(admin("POST", "/v1/admin-tokens", R"({"name":"erin","role":"auditor"})").status, 201);
  auto jsonl = lines(audit("GET", "logs/_system/records").body);
  ASSERT_GE(jsonl.size(), 2u);

  auto cef = audit("GET", "logs/_system/records?format=cef&limit=" + std::to_string(jsonl.size()));
  ASSERT_EQ(cef.status, 200) << cef.body;
  EXPECT_EQ(cef.header("content-type"), "text/plain; charset=utf-8");
  auto cef_lines = lines(cef.body);
  ASSERT_EQ(cef_lines.size(), jsonl.size());
  for (const auto& l : cef_lines) EXPECT_TRUE(l.starts_with("CEF:0|Trellis|trellis-audit|1|")) << l;
  EXPECT_THAT(cef.body, HasSubstr("act=POST /v1/admin-tokens"));

  auto syslog = audit("GET", "logs/_system/records?format=syslog&from=2&limit=1");
  ASSERT_EQ(syslog.status, 200) << syslog.body;
  // One octet-counted RFC 5424 message carrying record 2 exactly as stored.
  const size_t space = syslog.body.find(' ');
  ASSERT_NE(space, std::string::npos);
  EXPECT_EQ(std::stoul(syslog.body.substr(0, space)), syslog.body.size() - space - 1);
  EXPECT_THAT(syslog.body, HasSubstr(">1 "));
  EXPECT_TRUE(syslog.body.ends_with(jsonl[1])) << syslog.body;

  auto bad = audit("GET", "logs/_system/records?format=xml");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("format must be jsonl, cef or syslog"));
}

TEST_F(AuditSinkTest, ACanarySecretAppearsInNoExport) {
  // Secrets pass through audited admin actions: an email marked sensitive (HMAC'd), a
  // member named "key" in a request (redacted; refused requests are recorded too), and a
  // tenant key the kernel hands out once (answers are recorded without their bodies).
  const std::string email = "canary-4d61a9@example.com";
  ASSERT_EQ(admin("POST", "/v1/admin-tokens",
                  R"({"name":"frank","role":"auditor","email":")" + email + R"("})")
                .status,
            400);
  ASSERT_EQ(admin("POST", "/v1/admin-tokens", R"({"name":"gina","key":"canary-77e0c1"})").status,
            400);
  auto key = admin("POST", "/v1/tenants/acme/keys");
  ASSERT_EQ(key.status, 201) << key.body;
  const std::string secret = json(key.body)->getValue<std::string>("key");
  ASSERT_GE(secret.size(), 16u);

  std::string everything;
  for (const std::string tenant : {"_system", "acme"}) {
    for (const std::string format : {"jsonl", "cef", "syslog"}) {
      auto res = audit("GET", "logs/" + tenant + "/records?format=" + format);
      ASSERT_EQ(res.status, 200) << tenant << " " << format << ": " << res.body;
      everything += res.body;
    }
    everything += audit("GET", "logs/" + tenant + "/checkpoints").body;
    // The evidence pack: an uncompressed tar, so its records are searchable as they are.
    auto pack = audit("GET", "logs/" + tenant + "/evidence");
    ASSERT_EQ(pack.status, 200) << tenant << ": " << pack.body;
    everything += pack.body;
  }
  everything += tenant("acme-key", "records").body;             // the tenant's own export
  EXPECT_THAT(everything, HasSubstr("/v1/tenants/acme/keys"));  // the action is there
  EXPECT_THAT(everything, HasSubstr("hmac-sha256:"));           // and the email, HMAC'd
  EXPECT_THAT(everything, HasSubstr(R"("key":"[redacted]")"));
  EXPECT_EQ(everything.find(secret), std::string::npos);
  EXPECT_EQ(everything.find(secret.substr(secret.size() - 12)), std::string::npos);
  EXPECT_EQ(everything.find("canary-4d61a9"), std::string::npos);
  EXPECT_EQ(everything.find("canary-77e0c1"), std::string::npos);
  EXPECT_EQ(server_->log().find(secret), std::string::npos);
}

TEST(AuditAccessTest, SelectedDataPlaneRequestsBecomeRecordsInTheirTenantsLog) {
  TrellisdProcess server(
      defaultTestConfig("    - id: trellis/audit\n"
                        "      system: true\n"
                        "      config: {access: {acme: [\"GET /hello/*\"]}}\n"
                        "    - id: trellis/hello\n"
                        "      config: {greeting: Hello}\n"
                        "    - id: trellis/echo-c\n",
                        "audit:\n  sink: trellis/audit\n"));
  ASSERT_TRUE(server.start()) << server.log();
  auto get = [&](const std::string& key, const std::string& path) {
    return request(server.port(), "GET", path, {{"Authorization", "Bearer " + key}});
  };
  ASSERT_EQ(get("acme-key", "/hello/bob").status, 200);
  ASSERT_EQ(get("acme-key", "/ping").status, 200);         // another route: not recorded
  ASSERT_EQ(get("globex-key", "/hello/eve").status, 200);  // another tenant: not recorded
  auto log = [&](const std::string& tenant) {
    return request(server.adminPort(), "GET", "/v1/x/trellis/audit/logs/" + tenant + "/records",
                   {{"Authorization", "Bearer " + server.adminToken()}})
        .body;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (log("acme").find("data.access") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::vector<Object::Ptr> access;
  for (const auto& line : lines(log("acme"))) {
    auto r = json(line);
    if (r->getValue<std::string>("type") == "data.access") access.push_back(r);
  }
  ASSERT_EQ(access.size(), 1u) << log("acme") << server.log();
  EXPECT_EQ(access[0]->getValue<std::string>("action"), "GET /hello/{name}");
  EXPECT_EQ(access[0]->getValue<std::string>("outcome"), "success");
  EXPECT_THAT(access[0]->getObject("actor")->getValue<std::string>("principal"),
              ::testing::StartsWith("key:"));
  EXPECT_EQ(log("globex").find("data.access"), std::string::npos);
  // A tenant reads its access records on the data plane, in its own verified log.
  EXPECT_THAT(get("acme-key", "/audit/v1/records").body, HasSubstr("\"type\":\"data.access\""));

  // Usage batches are stored a block at a time: after kill -9 every acknowledged record is
  // read back from its block, in order, and the log still verifies.
  for (int i = 0; i < 60; ++i)
    ASSERT_EQ(get("acme-key", "/hello/n" + std::to_string(i)).status, 200);
  auto accessCount = [&] {
    size_t n = 0;
    for (const auto& line : lines(log("acme")))
      n += line.find("\"data.access\"") != std::string::npos;
    return n;
  };
  while (accessCount() < 61 &&
         std::chrono::steady_clock::now() < deadline + std::chrono::seconds(15)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(accessCount(), 61u);
  const auto before = lines(log("acme"));
  server.kill();
  ASSERT_TRUE(server.start()) << server.log();
  const auto after = lines(log("acme"));
  ASSERT_GE(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) ASSERT_EQ(after[i], before[i]) << "record " << i + 1;
  auto admin = [&](const std::string& method, const std::string& tail) {
    return request(server.adminPort(), method, "/v1/x/trellis/audit/" + tail,
                   {{"Authorization", "Bearer " + server.adminToken()}});
  };
  ASSERT_EQ(admin("POST", "logs/acme/checkpoint").status, 200);
  TempDir pack;
  writeFile(pack / "checkpoints.jsonl", admin("GET", "logs/acme/checkpoints").body);
  writeFile(pack / "records.jsonl", admin("GET", "logs/acme/records").body);
  writeFile(pack / "public-key.pem", admin("GET", "public-key").body);
  int status = -1;
  const std::string out = runCommand(
      std::string(TRELLIS_AUDIT_TOOL) + " verify " + pack.path().string() + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
}

TEST_F(AuditSinkTest, ATenantReadsOnlyItsOwnLog) {
  // Reading one's own log is audited into that tenant's log.
  ASSERT_EQ(tenant("acme-key", "records").status, 200);
  ASSERT_EQ(tenant("globex-key", "records").status, 200);
  ASSERT_EQ(tenant("globex-key", "records").status, 200);
  // audit_emit reaches the sink asynchronously: wait for both logs to hold their records.
  std::string acme, globex;
  for (int i = 0; i < 100; ++i) {
    acme = tenant("acme-key", "records").body;
    globex = tenant("globex-key", "records").body;
    if (lines(acme).size() >= 1 && lines(globex).size() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(lines(acme).empty());
  ASSERT_GE(lines(globex).size(), 2u);
  for (const auto& l : lines(acme)) {
    EXPECT_EQ(json(l)->getValue<std::string>("tenant"), "acme") << l;
    EXPECT_EQ(json(l)->getValue<std::string>("action"), "audit.read") << l;
  }
  for (const auto& l : lines(globex)) EXPECT_EQ(json(l)->getValue<std::string>("tenant"), "globex");
  // No way to name another log on the data plane; the admin routes are not there either.
  EXPECT_THAT(tenant("acme-key", "records?log=globex").body,
              ::testing::Not(HasSubstr("\"globex\"")));
  EXPECT_EQ(request(server_->port(), "GET", "/v1/x/trellis/audit/logs/globex/records",
                    {{"Authorization", "Bearer acme-key"}})
                .status,
            404);
  // The admin plane needs an admin principal, and sees both.
  EXPECT_THAT(request(server_->adminPort(), "GET", "/v1/x/trellis/audit/logs/globex/records",
                      {{"Authorization", "Bearer acme-key"}})
                  .status,
              ::testing::AnyOf(401, 403));
  EXPECT_THAT(audit("GET", "logs").body, HasSubstr("\"log\":\"globex\""));
  EXPECT_THAT(audit("GET", "logs").body, HasSubstr("\"log\":\"acme\""));
  // Proofs on the data plane are the tenant's own: acme's record 1 proves against acme's
  // newest checkpoint, which the operator has the sink sign now.
  ASSERT_EQ(audit("POST", "logs/acme/checkpoint").status, 200);
  auto cps = lines(tenant("acme-key", "checkpoints").body);
  ASSERT_FALSE(cps.empty());
  auto cp = *audit::Checkpoint::fromJson(cps.back());
  EXPECT_EQ(cp.origin, "trellis-audit/acme");
  auto proof = tenant("acme-key", "proof/inclusion?seq=1");
  ASSERT_EQ(proof.status, 200) << proof.body;
  EXPECT_EQ(json(proof.body)->getValue<std::string>("log"), "acme");
  EXPECT_EQ(json(proof.body)->getValue<std::string>("root"), audit::toHex(cp.root));
}

TEST_F(AuditSinkTest, AnExportedPackVerifiesSurvivesKillAndCatchesTampering) {
  ASSERT_EQ(admin("GET", "/v1/tenants").status, 200);
  ASSERT_EQ(audit("POST", "logs/_system/checkpoint").status, 200);
  auto before = lines(audit("GET", "logs/_system/records").body);
  ASSERT_FALSE(before.empty());

  // Acknowledged records are durable: kill -9, restart, and the chain continues.
  server_->kill();
  ASSERT_TRUE(server_->start()) << server_->log();
  ASSERT_EQ(admin("GET", "/v1/tenants").status, 200);
  ASSERT_EQ(audit("POST", "logs/_system/checkpoint").status, 200);
  auto after = lines(audit("GET", "logs/_system/records").body);
  ASSERT_GT(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after[i], before[i]) << "record " << i + 1;

  TempDir pack;
  writeFile(pack / "records.jsonl", audit("GET", "logs/_system/records").body);
  writeFile(pack / "checkpoints.jsonl", audit("GET", "logs/_system/checkpoints").body);
  writeFile(pack / "public-key.pem", audit("GET", "public-key").body);
  int status = -1;
  const std::string tool = TRELLIS_AUDIT_TOOL;
  std::string out = runCommand(tool + " verify " + pack.path().string() + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("ok: the evidence pack verifies"));
  // `trellis audit verify` is the same verifier (found on PATH here: the build keeps
  // trellis-audit apart from trellis), with the same output and exit code.
  const std::string tool_dir = std::filesystem::path(tool).parent_path().string();
  const std::string trellis_audit =
      "PATH=" + tool_dir + ":$PATH " + TRELLIS_CLI_PATH + " audit verify ";
  out = runCommand(trellis_audit + pack.path().string() + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("ok: the evidence pack verifies"));

  // The operator edits one stored record: the verifier says which, with its exit code.
  auto recs = lines(readFile(pack / "records.jsonl"));
  std::string edited;
  for (size_t i = 0; i < recs.size(); ++i) {
    std::string l = recs[i];
    if (i == 1) l.replace(l.find("\"outcome\":\""), 11, "\"outcome\":\"x");
    edited += l + "\n";
  }
  writeFile(pack / "records.jsonl", edited);
  out = runCommand(tool + " verify " + pack.path().string() + " 2>&1", &status);
  EXPECT_EQ(status, 10) << out;
  EXPECT_THAT(out, HasSubstr("record seq 2 was modified"));
  out = runCommand(trellis_audit + pack.path().string() + " 2>&1", &status);
  EXPECT_EQ(status, 10) << out;
  EXPECT_THAT(out, HasSubstr("record seq 2 was modified"));
}

// Without trellis-audit beside trellis or on PATH, `trellis audit` says where it looked.
TEST(AuditCliTest, TrellisAuditNamesWhereItLookedWhenTheVerifierIsMissing) {
  TempDir empty;
  int status = -1;
  const std::string out = runCommand(
      "PATH=" + empty.path().string() + " " + TRELLIS_CLI_PATH + " audit verify pack.tar 2>&1",
      &status);
  EXPECT_EQ(status, 127) << out;
  EXPECT_THAT(out, HasSubstr("trellis-audit not found"));
  EXPECT_THAT(out, HasSubstr(std::filesystem::path(TRELLIS_CLI_PATH).parent_path().string()));
  EXPECT_THAT(out, HasSubstr(empty.path().string()));
}

// Issue #15 item 3, "every N records or T seconds": with N out of reach, a log is signed
// again once checkpoint_interval_s has passed, at its next record, without anyone asking.
TEST(AuditCheckpointIntervalTest, ALogIsSignedAgainOnceTheIntervalHasPassed) {
  TrellisdProcess server(
      defaultTestConfig("    - id: trellis/audit\n"
                        "      system: true\n"
                        "      config: {checkpoint_every: 1000000, checkpoint_interval_s: 1}\n",
                        "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n"));
  ASSERT_TRUE(server.start()) << server.log();
  const std::map<std::string, std::string> bearer = {
      {"Authorization", "Bearer " + server.adminToken()}};
  // The logs route reads no checkpoint, so it never triggers one itself.
  auto signedSize = [&] {
    auto logs = json(request(server.adminPort(), "GET", "/v1/x/trellis/audit/logs", bearer).body)
                    ->getArray("logs");
    for (size_t i = 0; logs && i < logs->size(); ++i) {
      auto log = logs->getObject(static_cast<unsigned>(i));
      if (log->getValue<std::string>("log") == "_system")
        return log->getValue<uint64_t>("checkpointed_size");
    }
    return uint64_t{0};
  };
  ASSERT_EQ(request(server.adminPort(), "GET", "/v1/tenants", bearer).status, 200);
  const uint64_t first = signedSize();
  ASSERT_GT(first, 0u) << "a log's first record is signed at once";
  EXPECT_TRUE(eventually([&] {
    (void)request(server.adminPort(), "GET", "/v1/tenants", bearer);
    return signedSize() > first;
  })) << server.log();
  auto cps = lines(
      request(server.adminPort(), "GET", "/v1/x/trellis/audit/logs/_system/checkpoints", bearer)
          .body);
  ASSERT_GE(cps.size(), 2u);
  EXPECT_GE(json(cps[1])->getValue<int64_t>("time_ms") - json(cps[0])->getValue<int64_t>("time_ms"),
            1000)
      << "signed for the interval, not for the count";
}

// Garbage in the plugin's settings stops it at init with the key named, never a crash.
TEST(AuditConfigTest, BadSettingsAreRefusedNamingTheKey) {
  const std::pair<std::string, std::string> cases[] = {
      {"{checkpoint_every: 12abc}", "checkpoint_every: expected a whole number from 1"},
      {"{checkpoint_every: 0}", "checkpoint_every: expected a whole number from 1"},
      {"{checkpoint_interval_s: -5}", "checkpoint_interval_s: expected a whole number from 1"},
      {"{sensitive_fields: email}", "sensitive_fields: expected a list of field names"},
      {"{sensitive_fields: [email, [x]]}", "element 1 is not a non-empty string"},
      {"{syslog_url: \"udp://127.0.0.1:514\"}",
       "syslog_url: \"udp://127.0.0.1:514\" must be tcp://host:port or tls://host:port"},
      {"{syslog_url: \"tls://siem.example.com\"}", "must be tcp://host:port or tls://host:port"},
      {"{syslog_url: \"tcp://siem.example.com:514\", syslog_interval_s: 0}",
       "syslog_interval_s: expected a whole number from 1"},
  };
  for (const auto& [config, message] : cases) {
    TrellisdProcess server(
        defaultTestConfig("    - id: trellis/audit\n"
                          "      system: true\n"
                          "      config: " +
                          config + "\n"));
    (void)server.start();
    EXPECT_THAT(server.log(), HasSubstr(message)) << config;
  }
}

}  // namespace
}  // namespace trellis::test
