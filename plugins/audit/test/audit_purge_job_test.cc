// The scheduled retention purge on a real trellisd: the plugin's own durable job
// (`retention-purge`, every purge_interval_s) purges the sealed segments a log's retention
// lets go, records each purge in that log (signed at once) like the purge route does, and
// leaves a log under legal hold alone until the hold is released. A bad interval stops
// the plugin naming the key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "audit_test_util.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;

constexpr const char* kSink = "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n";

class AuditPurgeJobTest : public ::testing::Test {
 protected:
  HttpReply audit(TrellisdProcess& server, const std::string& method, const std::string& tail,
                  const std::string& body = "") {
    return request(server.adminPort(), method, "/v1/x/trellis/audit/" + tail,
                   {{"Authorization", "Bearer " + server.adminToken()}}, body);
  }
  uint64_t purgedThrough(TrellisdProcess& server, const std::string& log) {
    auto r = audit(server, "GET", "logs/" + log + "/retention");
    return r.status == 200 ? json(r.body)->getValue<uint64_t>("purged_through") : 0;
  }
};

TEST_F(AuditPurgeJobTest, TheJobPurgesExpiredSegmentsAndLeavesHeldLogsAlone) {
  TrellisdProcess server(
      defaultTestConfig("    - id: trellis/audit\n"
                        "      system: true\n"
                        "      config: {checkpoint_every: 1000,"
                        " checkpoint_interval_s: 3600, min_retention: 1s,"
                        " purge_interval_s: 1}\n",
                        kSink));
  ASSERT_TRUE(server.start()) << server.log();
  auto admin = [&](const std::string& method, const std::string& path) {
    return request(server.adminPort(), method, path,
                   {{"Authorization", "Bearer " + server.adminToken()}});
  };
  // Records in acme's log (the kernel records the key's creation there) and in the
  // system log; both sealed by a checkpoint now.
  ASSERT_EQ(admin("POST", "/v1/tenants/acme/keys").status, 201);
  ASSERT_EQ(admin("POST", "/v1/tenants/acme/keys").status, 201);
  ASSERT_EQ(audit(server, "PUT", "logs/_system/legal-hold", R"({"reason":"case 2026-114"})").status,
            200);
  for (const std::string log : {"acme", "_system"}) {
    ASSERT_EQ(audit(server, "PUT", "logs/" + log + "/retention", R"({"keep":"1s"})").status, 200);
    ASSERT_EQ(audit(server, "POST", "logs/" + log + "/checkpoint").status, 200);
  }

  // Once the segment is older than its retention, the job purges acme's log by itself.
  ASSERT_TRUE(eventually([&] { return purgedThrough(server, "acme") > 0; }))
      << audit(server, "GET", "logs/acme/records").body << server.log();
  const uint64_t through = purgedThrough(server, "acme");
  bool at_checkpoint = false;  // whole sealed segments only
  uint64_t signed_size = 0;
  for (const auto& cp : lines(audit(server, "GET", "logs/acme/checkpoints").body)) {
    at_checkpoint |= json(cp)->getValue<uint64_t>("size") == through;
    signed_size = json(cp)->getValue<uint64_t>("size");
  }
  EXPECT_TRUE(at_checkpoint) << through;
  // The purge is a record of the log, by the plugin, and signed at once.
  std::string purge_record;
  uint64_t purge_seq = 0;
  for (const auto& line : lines(audit(server, "GET", "logs/acme/records").body)) {
    auto r = json(line);
    EXPECT_GT(r->getValue<uint64_t>("seq"), through);  // the purged lines are gone
    if (r->getValue<std::string>("action") == "audit.purge" && purge_record.empty()) {
      purge_record = line;
      purge_seq = r->getValue<uint64_t>("seq");
    }
  }
  ASSERT_FALSE(purge_record.empty()) << audit(server, "GET", "logs/acme/records").body;
  EXPECT_THAT(purge_record, HasSubstr("\"purged_through\":" + std::to_string(through)));
  EXPECT_THAT(purge_record, HasSubstr("\"scheduled\":true"));
  EXPECT_THAT(purge_record, HasSubstr("\"name\":\"trellis/audit\""));
  EXPECT_GE(signed_size, purge_seq);

  // The held log kept everything, through many runs of the job.
  EXPECT_EQ(purgedThrough(server, "_system"), 0u);
  EXPECT_EQ(json(lines(audit(server, "GET", "logs/_system/records?limit=1").body).at(0))
                ->getValue<uint64_t>("seq"),
            1u);
  // Released, it goes at the next run: the hold was what kept it.
  ASSERT_EQ(audit(server, "DELETE", "logs/_system/legal-hold").status, 200);
  EXPECT_TRUE(eventually([&] { return purgedThrough(server, "_system") > 0; })) << server.log();
  EXPECT_THAT(admin("GET", "/v1/jobs").body, HasSubstr("retention-purge"));
}

TEST_F(AuditPurgeJobTest, ABadIntervalStopsThePluginNamingTheKey) {
  TrellisdProcess server(
      defaultTestConfig("    - id: trellis/audit\n"
                        "      system: true\n"
                        "      config: {purge_interval_s: soon}\n",
                        kSink));
  (void)server.start();
  EXPECT_TRUE(eventually([&] {
    return server.log().find("purge_interval_s: expected a whole number") != std::string::npos;
  })) << server.log();
}

}  // namespace
}  // namespace trellis::test
