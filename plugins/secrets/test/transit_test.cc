// Transit and the secrets.v1 service on a real trellisd, and the canary: a planted secret
// value that must not show up in any log, audit record, metric or error body.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}
Object::Ptr dataOf(const HttpReply& r) {
  return json(r.body)->getObject("data");
}

// base64 of "hello transit" and of the canary value below.
constexpr const char* kHello = "aGVsbG8gdHJhbnNpdA==";

class SecretsTransitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/secrets\n      system: true\n"
                          "    - id: test/secrets-caller\n" +
                              extraPlugins(),
                          extraConfig()));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  virtual std::string extraPlugins() const { return ""; }
  virtual std::string extraConfig() const { return ""; }
  HttpReply admin(const std::string& method, const std::string& route, const std::string& body) {
    return request(server_->adminPort(), method, "/v1/x/trellis/secrets/" + route,
                   {{"Authorization", "Bearer " + server_->adminToken()}}, body);
  }
  void initAndUnseal() {
    auto res = admin("POST", "init", R"({"shares":1,"threshold":1})");
    ASSERT_EQ(res.status, 400) << "a threshold of 1 is no sharing at all";
    res = admin("POST", "init", R"({"shares":2,"threshold":2})");
    ASSERT_EQ(res.status, 200) << res.body;
    auto list = json(res.body)->getArray("shares");
    for (size_t i = 0; i < list->size(); ++i) {
      auto u = admin("POST", "unseal", "{\"key\":\"" + list->getElement<std::string>(i) + "\"}");
      ASSERT_EQ(u.status, 200) << u.body;
    }
  }
  HttpReply call(const std::string& method, const std::string& path, const std::string& body = "",
                 const std::string& key = "acme-key") {
    return request(server_->port(), method, path, {{"Authorization", "Bearer " + key}}, body);
  }
  HttpReply transit(const std::string& method, const std::string& tail,
                    const std::string& body = "", const std::string& key = "acme-key") {
    return call(method, "/secrets/v1/transit/" + tail, body, key);
  }
  std::string encrypt(const std::string& key_name, const std::string& b64) {
    auto r = transit("POST", "encrypt/" + key_name, "{\"plaintext\":\"" + b64 + "\"}");
    EXPECT_EQ(r.status, 200) << r.body;
    return r.status == 200 ? dataOf(r)->getValue<std::string>("ciphertext") : "";
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(SecretsTransitTest, EncryptDecryptRotateMinDecryptionVersionAndRewrap) {
  initAndUnseal();
  ASSERT_EQ(transit("POST", "keys/orders").status, 200);
  EXPECT_EQ(transit("POST", "keys/orders").status, 409);
  const std::string v1 = encrypt("orders", kHello);
  EXPECT_EQ(v1.rfind("trellis:v1:", 0), 0u) << v1;

  auto rotated = transit("POST", "keys/orders/rotate");
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  EXPECT_EQ(dataOf(rotated)->getValue<int>("latest_version"), 2);
  const std::string v2 = encrypt("orders", kHello);
  EXPECT_EQ(v2.rfind("trellis:v2:", 0), 0u) << v2;

  auto old = transit("POST", "decrypt/orders", "{\"ciphertext\":\"" + v1 + "\"}");
  ASSERT_EQ(old.status, 200) << old.body;
  EXPECT_EQ(dataOf(old)->getValue<std::string>("plaintext"), kHello);

  auto rewrapped = transit("POST", "rewrap/orders", "{\"ciphertext\":\"" + v1 + "\"}");
  ASSERT_EQ(rewrapped.status, 200) << rewrapped.body;
  EXPECT_EQ(dataOf(rewrapped)->getValue<std::string>("ciphertext").rfind("trellis:v2:", 0), 0u);
  EXPECT_EQ(rewrapped.body.find(kHello), std::string::npos) << "rewrap shows no plaintext";

  ASSERT_EQ(transit("POST", "keys/orders/config", R"({"min_decryption_version":2})").status, 200);
  auto refused = transit("POST", "decrypt/orders", "{\"ciphertext\":\"" + v1 + "\"}");
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("below min_decryption_version 2"), std::string::npos) << refused.body;
  EXPECT_EQ(transit("POST", "keys/orders/config", R"({"min_decryption_version":3})").status, 400);

  auto info = transit("GET", "keys/orders");
  ASSERT_EQ(info.status, 200);
  EXPECT_FALSE(dataOf(info)->getValue<bool>("exportable"));
  EXPECT_EQ(dataOf(info)->getObject("keys")->size(), 2u);
}

TEST_F(SecretsTransitTest, BatchesAnswerPerItem) {
  initAndUnseal();
  ASSERT_EQ(transit("POST", "keys/b").status, 200);
  auto enc = transit("POST", "encrypt/b",
                     std::string(R"({"batch_input":[{"plaintext":")") + kHello +
                         R"("},{"plaintext":"not base64!"}]})");
  ASSERT_EQ(enc.status, 200) << enc.body;
  auto results = dataOf(enc)->getArray("batch_results");
  ASSERT_EQ(results->size(), 2u);
  const std::string ct = results->getObject(0)->getValue<std::string>("ciphertext");
  EXPECT_NE(results->getObject(1)->getValue<std::string>("error").find("base64"),
            std::string::npos);
  auto dec = transit("POST", "decrypt/b",
                     R"({"batch_input":[{"ciphertext":")" + ct + R"("},{"ciphertext":"x"}]})");
  ASSERT_EQ(dec.status, 200) << dec.body;
  auto dr = dataOf(dec)->getArray("batch_results");
  EXPECT_EQ(dr->getObject(0)->getValue<std::string>("plaintext"), kHello);
  EXPECT_TRUE(dr->getObject(1)->has("error"));
}

TEST_F(SecretsTransitTest, DataKeysAndDeletionNeedingDeletionAllowed) {
  initAndUnseal();
  ASSERT_EQ(transit("POST", "keys/dk").status, 200);
  auto plain = transit("POST", "datakey/plaintext/dk");
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_TRUE(dataOf(plain)->has("plaintext"));
  auto back =
      transit("POST", "decrypt/dk",
              "{\"ciphertext\":\"" + dataOf(plain)->getValue<std::string>("ciphertext") + "\"}");
  EXPECT_EQ(dataOf(back)->getValue<std::string>("plaintext"),
            dataOf(plain)->getValue<std::string>("plaintext"));
  auto wrapped = transit("POST", "datakey/wrapped/dk");
  ASSERT_EQ(wrapped.status, 200);
  EXPECT_FALSE(dataOf(wrapped)->has("plaintext"));
  EXPECT_EQ(transit("POST", "datakey/other/dk").status, 400);

  auto del = transit("DELETE", "keys/dk");
  EXPECT_EQ(del.status, 400);
  EXPECT_NE(del.body.find("deletion_allowed"), std::string::npos) << del.body;
  ASSERT_EQ(transit("POST", "keys/dk/config", R"({"deletion_allowed":true})").status, 200);
  EXPECT_EQ(transit("DELETE", "keys/dk").status, 204);
  EXPECT_EQ(transit("GET", "keys/dk").status, 404);
  EXPECT_EQ(transit("POST", "keys/exp", R"({"exportable":true})").status, 400);
}

// Unwrapped keys are kept open between requests: a key deleted and made again under the
// same name is the new key at once, and sealing forgets them all.
TEST_F(SecretsTransitTest, KeysKeptOpenFollowTheStoreAndTheSeal) {
  auto res = admin("POST", "init", R"({"shares":2,"threshold":2})");
  ASSERT_EQ(res.status, 200) << res.body;
  auto shares = json(res.body)->getArray("shares");
  auto unseal = [&] {
    for (size_t i = 0; i < shares->size(); ++i) {
      auto u = admin("POST", "unseal", "{\"key\":\"" + shares->getElement<std::string>(i) + "\"}");
      ASSERT_EQ(u.status, 200) << u.body;
    }
  };
  unseal();
  ASSERT_EQ(transit("POST", "keys/k").status, 200);
  const std::string first = encrypt("k", kHello);
  ASSERT_EQ(transit("POST", "keys/k/config", R"({"deletion_allowed":true})").status, 200);
  ASSERT_EQ(transit("DELETE", "keys/k").status, 204);
  ASSERT_EQ(transit("POST", "keys/k").status, 200);
  EXPECT_EQ(transit("POST", "decrypt/k", "{\"ciphertext\":\"" + first + "\"}").status, 400)
      << "the old key's ciphertext opened under the new key of the same name";
  const std::string second = encrypt("k", kHello);

  ASSERT_EQ(admin("POST", "seal", "").status, 200);
  auto sealed = transit("POST", "encrypt/k", std::string("{\"plaintext\":\"") + kHello + "\"}");
  EXPECT_EQ(sealed.status, 503) << sealed.body;
  unseal();
  auto back = transit("POST", "decrypt/k", "{\"ciphertext\":\"" + second + "\"}");
  ASSERT_EQ(back.status, 200) << back.body;
  EXPECT_EQ(dataOf(back)->getValue<std::string>("plaintext"), kHello);
}

// The common one-member body is read without a JSON tree; any other shape of the same
// request goes through the full parser and must answer alike.
TEST_F(SecretsTransitTest, OneMemberBodiesAndOtherJsonShapesAnswerAlike) {
  initAndUnseal();
  ASSERT_EQ(transit("POST", "keys/shapes").status, 200);
  const std::string slashes = "Pz8/";  // base64 of "???": a '/' the full parser sees escaped
  const std::vector<std::string> bodies = {
      "{\"plaintext\":\"" + slashes + "\"}",
      " {\n \"plaintext\" : \"" + slashes + "\" }\n",
      "{\"plaintext\":\"Pz8\\/\"}",
      "{\"plaintext\":\"" + slashes + "\",\"context\":\"ignored\"}",
  };
  for (const std::string& body : bodies) {
    auto enc = transit("POST", "encrypt/shapes", body);
    ASSERT_EQ(enc.status, 200) << body << " -> " << enc.body;
    EXPECT_EQ(dataOf(enc)->getValue<int>("key_version"), 1) << enc.body;
    const std::string ct = dataOf(enc)->getValue<std::string>("ciphertext");
    ASSERT_EQ(ct.rfind("trellis:v1:", 0), 0u) << enc.body;
    for (const std::string& dec_body :
         {"{\"ciphertext\":\"" + ct + "\"}", "{ \"ciphertext\":\"" + ct + "\", \"x\":1}"}) {
      auto dec = transit("POST", "decrypt/shapes", dec_body);
      ASSERT_EQ(dec.status, 200) << dec.body;
      EXPECT_EQ(dataOf(dec)->getValue<std::string>("plaintext"), slashes);
    }
    auto again = transit("POST", "rewrap/shapes", "{\"ciphertext\":\"" + ct + "\"}");
    ASSERT_EQ(again.status, 200) << again.body;
    EXPECT_EQ(dataOf(again)->getValue<std::string>("ciphertext").rfind("trellis:v1:", 0), 0u);
  }
  auto bad = transit("POST", "encrypt/shapes", R"({"plaintext":"not base64!"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("must be base64"), std::string::npos) << bad.body;
  auto missing = transit("POST", "encrypt/shapes", R"({"plain":"Pz8/"})");
  EXPECT_EQ(missing.status, 400);
  EXPECT_NE(missing.body.find("plaintext\\\" is missing or not a string"), std::string::npos)
      << missing.body;
  auto number = transit("POST", "encrypt/shapes", R"({"plaintext":12})");
  EXPECT_EQ(number.status, 400) << number.body;
  auto broken = transit("POST", "encrypt/shapes", R"({"plaintext":"Pz8/")");
  EXPECT_EQ(broken.status, 400);
  EXPECT_NE(broken.body.find("not valid JSON"), std::string::npos) << broken.body;
}

TEST_F(SecretsTransitTest, CiphertextsDoNotOpenUnderAnotherTenantOrKey) {
  initAndUnseal();
  ASSERT_EQ(transit("POST", "keys/k").status, 200);
  ASSERT_EQ(transit("POST", "keys/other").status, 200);
  ASSERT_EQ(transit("POST", "keys/k", "", "globex-key").status, 200);
  const std::string ct = encrypt("k", kHello);
  for (auto [key_name, tenant] : std::vector<std::pair<std::string, std::string>>{
           {"k", "globex-key"}, {"other", "acme-key"}}) {
    auto r = transit("POST", "decrypt/" + key_name, "{\"ciphertext\":\"" + ct + "\"}", tenant);
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(r.body.find("does not authenticate"), std::string::npos) << r.body;
  }
  auto bad = transit("POST", "decrypt/k", R"({"ciphertext":"vault:v1:abc"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("trellis:v<version>:<base64>"), std::string::npos) << bad.body;
  EXPECT_EQ(
      transit("POST", "encrypt/nokey", std::string("{\"plaintext\":\"") + kHello + "\"}").status,
      404);
}

TEST_F(SecretsTransitTest, OtherPluginsUseTheServiceForTheirTenantOnly) {
  auto sealed = call("POST", "/secrets-caller/read", R"({"ref":"secret://db#password"})");
  EXPECT_EQ(sealed.status, 502);
  EXPECT_NE(sealed.body.find("sealed"), std::string::npos) << sealed.body;
  initAndUnseal();
  ASSERT_EQ(
      call("POST", "/secrets/v1/kv/data/db", R"({"data":{"password":"pw-1","port":5432}})").status,
      200);
  auto read = call("POST", "/secrets-caller/read", R"({"ref":"secret://db#password"})");
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(json(read.body)->getValue<std::string>("value"), "pw-1");
  auto port = call("POST", "/secrets-caller/read", R"({"ref":"secret://db#port"})");
  EXPECT_EQ(json(port.body)->getValue<std::string>("value"), "5432");
  EXPECT_EQ(call("POST", "/secrets-caller/read", R"({"ref":"secret://db#password"})", "globex-key")
                .status,
            502)
      << "globex has no secret db";
  auto bad_ref = call("POST", "/secrets-caller/read", R"({"ref":"db.password"})");
  EXPECT_NE(bad_ref.body.find("secret://<path>#<field>"), std::string::npos) << bad_ref.body;

  ASSERT_EQ(call("POST", "/secrets/v1/transit/keys/svc").status, 200);
  auto enc = call("POST", "/secrets-caller/encrypt",
                  std::string(R"({"key":"svc","plaintext":")") + kHello + "\"}");
  ASSERT_EQ(enc.status, 200) << enc.body;
  auto dec = call("POST", "/secrets-caller/decrypt",
                  R"({"key":"svc","ciphertext":")" +
                      json(enc.body)->getValue<std::string>("ciphertext") + "\"}");
  ASSERT_EQ(dec.status, 200) << dec.body;
  EXPECT_EQ(json(dec.body)->getValue<std::string>("plaintext"), kHello);
  auto mac1 = call("POST", "/secrets-caller/hmac", R"({"key":"svc","input":"YWJj"})");
  auto mac2 = call("POST", "/secrets-caller/hmac", R"({"key":"svc","input":"YWJj"})");
  ASSERT_EQ(mac1.status, 200) << mac1.body;
  EXPECT_EQ(mac1.body, mac2.body);
  auto dk = call("POST", "/secrets-caller/datakey", R"({"key":"svc","mode":"wrapped"})");
  ASSERT_EQ(dk.status, 200) << dk.body;
  EXPECT_FALSE(json(dk.body)->has("plaintext"));

  // ensure_key makes a missing key once, then reports the existing one; it never shows key bytes.
  auto first = call("POST", "/secrets-caller/ensure_key", R"({"key":"audit-hmac"})");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_TRUE(json(first.body)->getValue<bool>("created")) << first.body;
  EXPECT_EQ(json(first.body)->getValue<int>("latest_version"), 1) << first.body;
  auto again = call("POST", "/secrets-caller/ensure_key", R"({"key":"audit-hmac"})");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_FALSE(json(again.body)->getValue<bool>("created")) << again.body;
  EXPECT_EQ(call("GET", "/secrets/v1/transit/keys/audit-hmac").status, 200);
  EXPECT_EQ(
      call("POST", "/secrets-caller/datakey", R"({"key":"audit-hmac","mode":"wrapped"})").status,
      200);
  EXPECT_EQ(call("GET", "/secrets/v1/transit/keys/audit-hmac", "", "globex-key").status, 404)
      << "the key belongs to the calling tenant only";
  auto bad = call("POST", "/secrets-caller/ensure_key", R"({"key":"no/such name"})");
  EXPECT_EQ(bad.status, 502) << bad.body;
  EXPECT_EQ(call("POST", "/secrets-caller/ensure_key", "{}").status, 502);
}

// A key a plugin made for the tenant through ensure_key is the plugin's: the tenant reads,
// uses and rotates it, but its DELETE and config are 403 naming the plugin, which keeps full
// use. A key the tenant made stays the tenant's, even when a plugin ensures it later.
TEST_F(SecretsTransitTest, AKeyAPluginMadeForTheTenantCannotBeDeletedOrWeakenedByIt) {
  initAndUnseal();
  auto ensured = call("POST", "/secrets-caller/ensure_key", R"({"key":"plugin-key"})");
  ASSERT_EQ(ensured.status, 200) << ensured.body;
  EXPECT_EQ(json(ensured.body)->getValue<std::string>("owner_plugin"), "test/secrets-caller");
  auto wrapped =
      call("POST", "/secrets-caller/datakey", R"({"key":"plugin-key","mode":"wrapped"})");
  ASSERT_EQ(wrapped.status, 200) << wrapped.body;
  const std::string v1_ciphertext = json(wrapped.body)->getValue<std::string>("ciphertext");

  auto read = transit("GET", "keys/plugin-key");
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(dataOf(read)->getValue<std::string>("owner_plugin"), "test/secrets-caller");
  ASSERT_EQ(transit("POST", "keys/plugin-key/rotate").status, 200);
  for (const auto& [method, tail, body] :
       {std::tuple{"POST", "keys/plugin-key/config", R"({"deletion_allowed":true})"},
        std::tuple{"POST", "keys/plugin-key/config", R"({"min_decryption_version":2})"},
        std::tuple{"DELETE", "keys/plugin-key", ""}}) {
    auto r = transit(method, tail, body);
    EXPECT_EQ(r.status, 403) << method << " " << tail << " " << body << ": " << r.body;
    EXPECT_NE(r.body.find("is owned by the plugin test/secrets-caller"), std::string::npos)
        << r.body;
    EXPECT_NE(r.body.find("deletion_allowed, min_decryption_version"), std::string::npos);
  }
  auto policy = dataOf(transit("GET", "keys/plugin-key"));
  EXPECT_EQ(policy->getValue<int>("min_decryption_version"), 1);
  EXPECT_FALSE(policy->getValue<bool>("deletion_allowed"));
  auto opened = call("POST", "/secrets-caller/decrypt",
                     R"({"key":"plugin-key","ciphertext":")" + v1_ciphertext + "\"}");
  EXPECT_EQ(opened.status, 200) << "the owner still opens what it wrapped: " << opened.body;

  // The tenant's own key: a plugin may use it, but ensuring it does not make it the plugin's.
  ASSERT_EQ(transit("POST", "keys/tenant-key").status, 200);
  EXPECT_FALSE(dataOf(transit("GET", "keys/tenant-key"))->has("owner_plugin"));
  auto theirs = call("POST", "/secrets-caller/ensure_key", R"({"key":"tenant-key"})");
  ASSERT_EQ(theirs.status, 200) << theirs.body;
  EXPECT_EQ(json(theirs.body)->getValue<std::string>("owner_plugin"), "");
  EXPECT_EQ(transit("POST", "keys/tenant-key/config", R"({"deletion_allowed":true})").status, 200);
  EXPECT_EQ(transit("DELETE", "keys/tenant-key").status, 204);
}

// Plants a canary value, drives every route and service method (including failing ones),
// then looks for it everywhere an operator or another party could read.
// With an audit sink that keeps every record (tests/fixtures/sys-audit).
class SecretsCanaryTest : public SecretsTransitTest {
 protected:
  std::string extraPlugins() const override {
    return "    - id: fixture/sys-audit\n      system: true\n";
  }
  std::string extraConfig() const override { return "audit:\n  sink: fixture/sys-audit\n"; }
};

TEST_F(SecretsCanaryTest, TheCanaryValueShowsUpNowhereButItsOwnReads) {
  initAndUnseal();
  const std::string canary = "CANARY-5e1f0c2d9a7b";
  const std::string canary_b64 = "Q0FOQVJZLTVlMWYwYzJkOWE3Yg==";
  std::vector<HttpReply> replies;
  auto kv = [&](const std::string& method, const std::string& tail, const std::string& body) {
    replies.push_back(call(method, "/secrets/v1/kv/" + tail, body));
    return replies.back();
  };
  kv("POST", "data/canary", "{\"data\":{\"v\":\"" + canary + "\"}}");
  kv("POST", "data/canary", "{\"data\":{\"v\":\"" + canary + "\"},\"options\":{\"cas\":0}}");
  kv("POST", "data/canary", "{\"data\":{\"v\":\"" + canary + "\"},\"options\":{\"cas\":\"x\"}}");
  kv("POST", "data/" + std::string(600, 'p'), "{\"data\":{\"v\":\"" + canary + "\"}}");
  kv("GET", "metadata/canary", "");
  kv("GET", "metadata?list=true", "");
  kv("DELETE", "data/canary", "");
  kv("GET", "data/canary", "");
  kv("POST", "undelete/canary", R"({"versions":[1]})");
  transit("POST", "keys/c");
  replies.push_back(transit("POST", "encrypt/c", "{\"plaintext\":\"" + canary_b64 + "\"}"));
  replies.push_back(transit("POST", "encrypt/c", "{\"plaintext\":\"" + canary + "\"}"));
  replies.push_back(transit("POST", "encrypt/nokey", "{\"plaintext\":\"" + canary_b64 + "\"}"));
  replies.push_back(transit("POST", "decrypt/c", "{\"ciphertext\":\"" + canary + "\"}"));
  replies.push_back(call("POST", "/secrets-caller/read", R"({"ref":"secret://canary#v"})"));
  replies.push_back(call("POST", "/secrets-caller/read", R"({"ref":"secret://canary#nope"})"));
  replies.push_back(
      call("POST", "/secrets-caller/encrypt", R"({"key":"c","plaintext":")" + canary_b64 + "\"}"));
  replies.push_back(
      call("POST", "/secrets-caller/hmac", R"({"key":"c","input":")" + canary + "\"}"));
  replies.push_back(
      call("POST", "/secrets-caller/decrypt", R"({"key":"c","ciphertext":")" + canary + "\"}"));
  admin("POST", "seal", "");
  replies.push_back(call("GET", "/secrets/v1/kv/data/canary"));
  replies.push_back(call("POST", "/secrets-caller/read", R"({"ref":"secret://canary#v"})"));

  for (const HttpReply& r : replies) {
    if (r.status >= 400) {
      EXPECT_EQ(r.body.find(canary), std::string::npos) << "an error body holds the canary";
    }
  }
  auto audit = request(server_->adminPort(), "GET", "/v1/x/fixture/sys-audit/records",
                       {{"Authorization", "Bearer " + server_->adminToken()}});
  ASSERT_EQ(audit.status, 200) << audit.body;
  EXPECT_NE(audit.body.find("secret.kv.write"), std::string::npos) << "operations are audited";
  EXPECT_NE(audit.body.find("hmac-sha256:"), std::string::npos) << "with the path HMAC'd";
  EXPECT_EQ(audit.body.find("kv/canary"), std::string::npos) << "the path itself is not shown";
  EXPECT_EQ(audit.body.find(canary), std::string::npos) << "an audit record holds the canary";
  EXPECT_EQ(audit.body.find(canary_b64), std::string::npos);
  auto metrics = request(server_->adminPort(), "GET", "/metrics",
                         {{"Authorization", "Bearer " + server_->adminToken()}});
  EXPECT_EQ(metrics.body.find(canary), std::string::npos);
  ASSERT_EQ(server_->stop(), 0);
  EXPECT_EQ(server_->log().find(canary), std::string::npos) << "the log holds the canary";
  EXPECT_EQ(server_->log().find(canary_b64), std::string::npos);
  for (const auto& entry : std::filesystem::recursive_directory_iterator(server_->dir())) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".log") || name.find("audit") != std::string::npos ||
        name.find("usage") != std::string::npos) {
      EXPECT_EQ(readFile(entry.path()).find(canary), std::string::npos) << entry.path();
    }
  }
}

// Every transit operation leaves its own audit record, under the key's pseudonym: the one
// its creation was recorded under, derived once when the key was opened.
TEST_F(SecretsCanaryTest, EveryTransitOperationIsAuditedUnderItsKeysPseudonym) {
  initAndUnseal();
  ASSERT_EQ(transit("POST", "keys/orders").status, 200);
  ASSERT_EQ(transit("POST", "keys/payroll").status, 200);
  std::string ct;
  for (int i = 0; i < 3; ++i) ct = encrypt("orders", kHello);
  for (int i = 0; i < 2; ++i) encrypt("payroll", kHello);
  ASSERT_EQ(transit("POST", "decrypt/orders", "{\"ciphertext\":\"" + ct + "\"}").status, 200);
  ASSERT_EQ(transit("POST", "encrypt/orders",
                    std::string(R"({"batch_input":[{"plaintext":")") + kHello +
                        R"("},{"plaintext":"x"}]})")
                .status,
            200);

  // Records reach the sink through the event bus, a moment after the answers.
  std::map<std::string, std::vector<std::string>> seen;  // action -> resources
  auto count = [&] {
    seen.clear();
    auto res = request(server_->adminPort(), "GET", "/v1/x/fixture/sys-audit/records",
                       {{"Authorization", "Bearer " + server_->adminToken()}});
    if (res.status != 200) return false;
    auto list = Poco::JSON::Parser().parse(res.body).extract<Poco::JSON::Array::Ptr>();
    for (size_t i = 0; i < list->size(); ++i) {
      auto r = list->getObject(static_cast<unsigned>(i));
      seen[r->getValue<std::string>("action")].push_back(r->getValue<std::string>("resource"));
    }
    return seen["secret.transit.encrypt"].size() == 6 && seen["secret.transit.decrypt"].size() == 1;
  };
  ASSERT_TRUE(eventually(count)) << seen["secret.transit.encrypt"].size();
  ASSERT_EQ(seen["secret.transit.create"].size(), 2u);
  const std::string orders = seen["secret.transit.create"][0];
  const std::string payroll = seen["secret.transit.create"][1];
  EXPECT_EQ(orders.rfind("transit/hmac-sha256:", 0), 0u) << orders;
  EXPECT_NE(orders, payroll);
  const auto& enc = seen["secret.transit.encrypt"];
  EXPECT_EQ(std::count(enc.begin(), enc.end(), orders), 4) << "three single, one batch";
  EXPECT_EQ(std::count(enc.begin(), enc.end(), payroll), 2);
  EXPECT_EQ(seen["secret.transit.decrypt"][0], orders);
}

}  // namespace
}  // namespace trellis::test
