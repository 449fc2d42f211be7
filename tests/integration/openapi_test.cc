// The admin API's OpenAPI description (docs/admin-api.openapi.json, served at
// GET /v1/openapi.json): every route the admin modules register is documented, and every
// documented route answers on a real trellisd (never "no admin endpoint" nor 405).
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <set>

#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace fs = std::filesystem;
using Poco::JSON::Object;

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

// "/v1/tenants/{id}/keys" and "/v1/tenants/{tenant}/keys" are the same route.
std::string shape(const std::string& pattern) {
  return std::regex_replace(pattern, std::regex("\\{[^}]*\\}"), "{}");
}

// "GET /v1/tenants/{}" for every route the admin modules register in the source: the route
// tables ({"GET", "/v1/…", …}), router_.add("GET", "/v1/…", …) and the admin plane's own
// path checks.
std::set<std::string> registeredRoutes() {
  std::set<std::string> routes;
  const fs::path runtime = fs::path(TRELLIS_SOURCE_DIR) / "kernel" / "src" / "runtime";
  const std::regex table("\\{\"(GET|POST|PUT|DELETE|PATCH)\", \"(/v1/[^\"]*)\"");
  const std::regex add("router_\\.add\\(\"(GET|POST|PUT|DELETE|PATCH)\", \"(/v1/[^\"]*)\"");
  const std::regex plane("path == \"(/[^\"]*)\"");
  for (const auto& entry : fs::directory_iterator(runtime)) {
    if (entry.path().extension() != ".cc") continue;
    const std::string text = readFile(entry.path());
    for (const auto* re : {&table, &add}) {
      for (std::sregex_iterator it(text.begin(), text.end(), *re), end; it != end; ++it) {
        routes.insert((*it)[1].str() + " " + shape((*it)[2].str()));
      }
    }
    if (entry.path().filename() == "admin_plane.cc") {
      for (std::sregex_iterator it(text.begin(), text.end(), plane), end; it != end; ++it) {
        routes.insert("GET " + (*it)[1].str());
      }
    }
  }
  return routes;
}

class OpenApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(defaultTestConfig());
    ASSERT_TRUE(server_->start()) << server_->log();
    auto reply = request(server_->adminPort(), "GET", "/v1/openapi.json",
                         {{"Authorization", "Bearer " + server_->adminToken()}});
    ASSERT_EQ(reply.status, 200) << reply.body;
    doc_ = json(reply.body);
  }

  std::unique_ptr<TrellisdProcess> server_;
  Object::Ptr doc_;
};

TEST_F(OpenApiTest, ServedDocumentIsTheFileInTheTree) {
  EXPECT_EQ(doc_->getValue<std::string>("openapi"), "3.1.0");
  auto file = json(readFile(fs::path(TRELLIS_SOURCE_DIR) / "docs" / "admin-api.openapi.json"));
  EXPECT_EQ(file->getObject("paths")->getNames(), doc_->getObject("paths")->getNames());
  // It needs the admin token, like the rest of the API.
  EXPECT_EQ(request(server_->adminPort(), "GET", "/v1/openapi.json").status, 401);
}

TEST_F(OpenApiTest, EveryRegisteredAdminRouteIsDocumented) {
  std::set<std::string> documented;
  auto paths = doc_->getObject("paths");
  for (const auto& path : paths->getNames()) {
    for (const auto& method : paths->getObject(path)->getNames()) {
      std::string upper = method;
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.insert(upper + " " + shape(path));
    }
  }
  const auto registered = registeredRoutes();
  ASSERT_GE(registered.size(), 25u) << "the source scan found too few routes; did it break?";
  for (const auto& route : registered) {
    EXPECT_TRUE(documented.count(route)) << route << " is served but not in the OpenAPI document";
  }
}

TEST_F(OpenApiTest, EveryDocumentedRouteAnswers) {
  auto paths = doc_->getObject("paths");
  for (const auto& path : paths->getNames()) {
    // Path parameters get a value no resource has: the route must still be there (a 404
    // then names the missing resource, not the endpoint).
    const std::string target = std::regex_replace(path, std::regex("\\{[^}]*\\}"), "nosuch");
    for (const auto& method : paths->getObject(path)->getNames()) {
      std::string upper = method;
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      auto reply = request(server_->adminPort(), upper, target,
                           {{"Authorization", "Bearer " + server_->adminToken()}});
      SCOPED_TRACE(upper + " " + target + " -> " + std::to_string(reply.status) + " " + reply.body);
      EXPECT_NE(reply.status, 0);
      EXPECT_NE(reply.status, 405);
      EXPECT_EQ(reply.body.find("no admin endpoint"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace trellis::test
