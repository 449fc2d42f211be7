// Which data-plane requests become access records, and what such a record says.
#include "core/access_records.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <string>

namespace trellis::audit {
namespace {

std::string usage(const std::string& tenant, const std::string& method, const std::string& route,
                  int status) {
  return R"({"event_id":"01a2-u","kind":"request","time_ms":1,"tenant":")" + tenant +
         R"(","key_id":"k1","plugin":"acme/x","route":")" + route + R"(","method":")" + method +
         R"(","status":)" + std::to_string(status) + R"(,"trace_id":"t1","request_id":"r1"})";
}

TEST(AccessRulesTest, MatchByTenantMethodAndRoute) {
  auto rules = AccessRules::parse(
      R"({"acme":["GET /secrets/v1/kv/data/*","/billing/{id}"],"globex":["*"]})");
  ASSERT_TRUE(rules) << rules.status().message();
  EXPECT_TRUE(rules->matches("acme", "GET", "/secrets/v1/kv/data/{path...}"));
  EXPECT_FALSE(rules->matches("acme", "POST", "/secrets/v1/kv/data/{path...}"));
  EXPECT_TRUE(rules->matches("acme", "DELETE", "/billing/{id}"));
  EXPECT_FALSE(rules->matches("acme", "GET", "/billing/{id}/items"));
  EXPECT_TRUE(rules->matches("globex", "PATCH", "/anything"));
  EXPECT_FALSE(rules->matches("initech", "GET", "/billing/{id}"));
}

TEST(AccessRulesTest, RefusesGarbageNamingThePlace) {
  auto message = [](const std::string& json) {
    auto r = AccessRules::parse(json);
    return r ? std::string("accepted") : r.status().message();
  };
  EXPECT_EQ(message("[1]"), "config access is a map of tenant to a list of routes");
  EXPECT_EQ(message("{not json"), "config access is a map of tenant to a list of routes");
  EXPECT_EQ(message(R"({"acme":"GET /x"})"), "config access.acme is a list of routes");
  EXPECT_EQ(message(R"({"acme":[7]})"), "config access.acme[0] is a string");
  EXPECT_EQ(message(R"({"acme":["/ok","get /x"]})"),
            "config access.acme[1] starts with \"get\", which is not an HTTP method in capitals");
  EXPECT_EQ(message(R"({"acme":["billing"]})"),
            "config access.acme[0] is \"*\", or a route pattern starting with /");
}

TEST(AccessRecordTest, ASelectedRequestBecomesADataAccessRecord) {
  auto rules = AccessRules::parse(R"({"acme":["GET /hello/*"]})");
  ASSERT_TRUE(rules);
  auto r = accessRecord(*rules, usage("acme", "GET", "/hello/{name}", 403));
  ASSERT_TRUE(r) << r.status().message();
  ASSERT_TRUE(r->has_value());
  auto o = Poco::JSON::Parser().parse(**r).extract<Poco::JSON::Object::Ptr>();
  EXPECT_EQ(o->getValue<std::string>("type"), "data.access");
  EXPECT_EQ(o->getValue<std::string>("tenant"), "acme");
  EXPECT_EQ(o->getValue<std::string>("action"), "GET /hello/{name}");
  EXPECT_EQ(o->getValue<std::string>("outcome"), "failure");
  EXPECT_EQ(o->getValue<int>("status"), 403);
  EXPECT_EQ(o->getObject("actor")->getValue<std::string>("principal"), "key:k1");
  EXPECT_EQ(o->getObject("parameters")->getValue<std::string>("usage_event_id"), "01a2-u");
  EXPECT_EQ(o->getValue<std::string>("request_id"), "r1");
  EXPECT_EQ(o->getValue<std::string>("trace_id"), "t1");
}

TEST(AccessRecordTest, OtherTenantsRoutesAndEmittedRecordsAreSkipped) {
  auto rules = AccessRules::parse(R"({"acme":["GET /hello/*"]})");
  ASSERT_TRUE(rules);
  for (const std::string& line :
       {usage("globex", "GET", "/hello/{name}", 200), usage("acme", "POST", "/hello/{name}", 200),
        usage("acme", "GET", "/ping", 200),
        std::string(R"({"event_id":"e","kind":"emit","tenant":"acme","operation":"x"})")}) {
    auto r = accessRecord(*rules, line);
    ASSERT_TRUE(r) << line;
    EXPECT_FALSE(r->has_value()) << line;
  }
  EXPECT_FALSE(accessRecord(*rules, "not json"));
}

}  // namespace
}  // namespace trellis::audit
