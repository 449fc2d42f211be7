// The response head the data plane writes itself (http/response_head.h) is byte for byte
// what Beast's serializer writes for the same prepared response.
#include "http/response_head.h"

#include <gtest/gtest.h>

#include <boost/beast/http/write.hpp>
#include <sstream>

namespace trellis::kernel::http {
namespace {

namespace bhttp = boost::beast::http;

std::string byBeast(const Response& res) {
  std::ostringstream out;
  out << res;
  return out.str();
}

std::string byUs(const Response& res) {
  std::string wire;
  appendResponseHead(res, wire);
  return wire + res.body();
}

Response prepared(bhttp::status status, std::string body, unsigned version = 11) {
  Response res{status, version};
  res.set(bhttp::field::server, "trellis");
  res.set(bhttp::field::content_type, "application/json");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

TEST(ResponseHeadTest, MatchesBeastsSerializer) {
  std::vector<Response> cases;
  cases.push_back(prepared(bhttp::status::ok, "ok"));
  cases.push_back(prepared(bhttp::status::not_found, "{\"title\":\"Not Found\"}", 10));
  cases.push_back(prepared(bhttp::status::no_content, ""));
  Response custom = prepared(bhttp::status::too_many_requests, std::string(70'000, 'x'));
  custom.reason("Slow Down");
  custom.insert("X-Many", "one");
  custom.insert("X-Many", "two");
  custom.insert("x-lower-case", "");
  cases.push_back(std::move(custom));
  Response unknown{static_cast<bhttp::status>(599), 11};  // no standard reason phrase
  unknown.set(bhttp::field::content_length, "0");
  cases.push_back(std::move(unknown));
  Response head = prepared(bhttp::status::ok, "a body HEAD does not send");
  head.body().clear();  // Content-Length stays: the length GET would send
  cases.push_back(std::move(head));
  for (const Response& res : cases) EXPECT_EQ(byUs(res), byBeast(res));
}

// The server's own last field, as the server adds it: after the response's fields, where
// set() would have put a new one.
TEST(ResponseHeadTest, TheServersLastFieldGoesWhereSetWouldPutIt) {
  Response res{bhttp::status::ok, 11};
  res.set(bhttp::field::content_type, "text/plain");
  res.body() = "ok";
  res.prepare_payload();
  std::string ours;
  appendResponseHead(res, ours, "Server: trellis\r\n");
  res.set(bhttp::field::server, "trellis");
  EXPECT_EQ(ours + res.body(), byBeast(res));
}

}  // namespace
}  // namespace trellis::kernel::http
