// Issue #15 item 5, "changing the sink is audited", with the real plugin as the sink: each
// start of trellisd records which audit sink and on_sink_failure mode it runs with
// (audit.sink.configured), and a start whose settings differ from the previous start's
// records audit.sink.changed naming the old and the new.
#include <Poco/JSON/Object.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "audit_test_util.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

class AuditSinkConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/audit\n"
                          "      system: true\n",
                          "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  // The system log's records with `action`, oldest first.
  std::vector<Poco::JSON::Object::Ptr> systemRecords(const std::string& action) {
    std::vector<Poco::JSON::Object::Ptr> out;
    auto r = request(server_->adminPort(), "GET",
                     "/v1/x/trellis/audit/logs/_system/records?from=1&limit=100000",
                     {{"Authorization", "Bearer " + server_->adminToken()}});
    EXPECT_EQ(r.status, 200) << r.body;
    for (const auto& l : lines(r.body)) {
      auto rec = json(l);
      if (rec->getValue<std::string>("action") == action) out.push_back(rec);
    }
    return out;
  }

  void restartWith(const std::string& from, const std::string& to) {
    ASSERT_EQ(server_->stop(), 0) << server_->log();
    std::ifstream in(server_->configFile());
    std::stringstream text;
    text << in.rdbuf();
    std::string config = text.str();
    const auto at = config.find(from);
    ASSERT_NE(at, std::string::npos) << config;
    config.replace(at, from.size(), to);
    std::ofstream(server_->configFile(), std::ios::trunc) << config;
    ASSERT_TRUE(server_->start()) << server_->log();
  }

  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(AuditSinkConfigTest, EachStartRecordsTheSinkAndAChangeNamesOldAndNew) {
  auto configured = systemRecords("audit.sink.configured");
  ASSERT_EQ(configured.size(), 1u) << server_->log();
  auto params = configured[0]->getObject("parameters");
  EXPECT_EQ(params->getValue<std::string>("sink"), "trellis/audit");
  EXPECT_EQ(params->getValue<std::string>("on_sink_failure"), "block");
  EXPECT_TRUE(params->isNull("previous")) << "a first start knows no previous settings";
  EXPECT_EQ(configured[0]->getObject("actor")->getValue<std::string>("principal"), "kernel");

  // Same settings: configured again, previous known, no change.
  restartWith("on_sink_failure: block", "on_sink_failure: block");
  configured = systemRecords("audit.sink.configured");
  ASSERT_EQ(configured.size(), 2u) << server_->log();
  EXPECT_EQ(configured[1]
                ->getObject("parameters")
                ->getObject("previous")
                ->getValue<std::string>("on_sink_failure"),
            "block");
  EXPECT_TRUE(systemRecords("audit.sink.changed").empty());

  restartWith("on_sink_failure: block", "on_sink_failure: degrade");
  auto changed = systemRecords("audit.sink.changed");
  ASSERT_EQ(changed.size(), 1u) << server_->log();
  params = changed[0]->getObject("parameters");
  EXPECT_EQ(params->getValue<std::string>("sink"), "trellis/audit");
  EXPECT_EQ(params->getValue<std::string>("on_sink_failure"), "degrade");
  auto previous = params->getObject("previous");
  ASSERT_TRUE(previous);
  EXPECT_EQ(previous->getValue<std::string>("sink"), "trellis/audit");
  EXPECT_EQ(previous->getValue<std::string>("on_sink_failure"), "block");
  EXPECT_NE(server_->log().find("the audit sink changed since the last start"), std::string::npos);
}

}  // namespace
}  // namespace trellis::test
