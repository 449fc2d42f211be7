// Issue #15 "Bad input: records over the size limit" and item 2's request and trace ids, end
// to end with the real plugin as the sink: what the plugin stores, read back from its log.
//   * an admin call's records carry the X-Request-Id the caller got and the trace id of the
//     caller's traceparent;
//   * a plugin's audit_emit over the kernel's 16 KiB limit is refused with a message naming
//     the limit, the refusal is itself recorded, nothing recorded before is lost, and the
//     tenant's log still verifies.
#include <Poco/JSON/Object.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "audit_test_util.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;

class AuditRecordLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // fixture/audit-emit: a data-plane route that calls audit_emit with the body.
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/audit\n"
                          "      system: true\n"
                          "    - id: fixture/audit-emit\n",
                          "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& path,
                  std::map<std::string, std::string> headers = {}, const std::string& body = "") {
    headers["Authorization"] = "Bearer " + server_->adminToken();
    return request(server_->adminPort(), method, path, headers, body);
  }
  std::vector<Poco::JSON::Object::Ptr> records(const std::string& log) {
    std::vector<Poco::JSON::Object::Ptr> out;
    auto r = admin("GET", "/v1/x/trellis/audit/logs/" + log + "/records?limit=100000");
    EXPECT_EQ(r.status, 200) << r.body;
    for (const auto& l : lines(r.body)) out.push_back(json(l));
    return out;
  }
  int verify(const std::string& log) {
    EXPECT_EQ(admin("POST", "/v1/x/trellis/audit/logs/" + log + "/checkpoint").status, 200);
    auto evidence = admin("GET", "/v1/x/trellis/audit/logs/" + log + "/evidence");
    EXPECT_EQ(evidence.status, 200) << evidence.body;
    std::string out;
    const int status = verifyPack(evidence.body, &out);
    EXPECT_EQ(status, 0) << out;
    return status;
  }
  HttpReply emit(const std::string& body) {
    return request(server_->port(), "POST", "/audit-emit", {{"Authorization", "Bearer acme-key"}},
                   body);
  }

  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditRecordLimitsTest, AnAdminCallsRecordsCarryItsRequestIdAndTraceId) {
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  auto r = admin("POST", "/v1/tenants", {{"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"}},
                 R"({"id":"initech"})");
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string request_id = r.header("x-request-id");
  ASSERT_FALSE(request_id.empty());
  int matched = 0;
  for (const auto& rec : records("_system")) {
    if (rec->optValue<std::string>("request_id", "") != request_id) continue;
    ++matched;
    EXPECT_EQ(rec->getValue<std::string>("trace_id"), trace);
    EXPECT_EQ(rec->getValue<std::string>("action"), "POST /v1/tenants");
  }
  EXPECT_EQ(matched, 2) << "the request record and the response record";
}

TEST_F(AuditRecordLimitsTest, AnOversizedPluginRecordIsRefusedAndNothingRecordedIsLost) {
  auto small = emit(R"({"path":"db/password"})");
  ASSERT_EQ(small.status, 200) << small.body;
  ASSERT_EQ(small.body, "OK");
  std::vector<Poco::JSON::Object::Ptr> before;
  ASSERT_TRUE(eventually([&] {
    before = records("acme");
    for (const auto& rec : before) {
      if (rec->getValue<std::string>("action") == "fixture.emitted") return true;
    }
    return false;
  })) << server_->log();

  const std::string big = R"({"blob":")" + std::string(17 * 1024, 'x') + R"("})";
  auto refused = emit(big);
  ASSERT_EQ(refused.status, 200) << refused.body;
  EXPECT_THAT(refused.body, HasSubstr("INVALID"));
  EXPECT_THAT(refused.body, HasSubstr("exceeds the 16 KiB limit"));

  // The refusal is recorded (the kernel's plugin_call_refused), the big record is not, and
  // every record from before is still there, byte for byte.
  std::vector<Poco::JSON::Object::Ptr> after;
  ASSERT_TRUE(eventually([&] {
    after = records("acme");
    for (const auto& rec : after) {
      if (rec->getValue<std::string>("action") == "plugin_call_refused") return true;
    }
    return false;
  })) << server_->log();
  ASSERT_GE(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i]->getValue<std::string>("event_id"),
              before[i]->getValue<std::string>("event_id"));
  }
  for (const auto& rec : after) {
    std::ostringstream text;
    rec->stringify(text);
    EXPECT_EQ(text.str().find(std::string(1024, 'x')), std::string::npos)
        << "the oversized record is not stored";
    if (rec->getValue<std::string>("action") == "plugin_call_refused") {
      EXPECT_THAT(text.str(), HasSubstr("16 KiB"));
    }
  }
  verify("acme");
}

}  // namespace
}  // namespace trellis::test
