// The hand-written JSON of hot paths (kernel/src/util/json.cc) and the plugin audit record
// built and read back with it (admin/audit_stream.cc).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "admin/audit_stream.h"
#include "trellis/kernel/util/json.h"

namespace trellis::kernel {
namespace {

using util::isJsonObject;
using util::readJsonString;

std::string nested(size_t depth) {
  std::string s = "{\"a\":";
  for (size_t i = 1; i < depth; ++i) s += "[";
  s += "1";
  for (size_t i = 1; i < depth; ++i) s += "]";
  return s + "}";
}

TEST(JsonObjectCheckTest, AcceptsObjectsOfEveryKindOfValue) {
  EXPECT_TRUE(isJsonObject("{}"));
  EXPECT_TRUE(isJsonObject(" \t\r\n{ } \n"));
  EXPECT_TRUE(isJsonObject(
      R"({"a":[1,-0,18446744073709551615,-9223372036854775808,-2.5e+3,0.5E-2,10e9,true,false,null,{},[]],"b":{"c":"\u00e9\"\\\/\b\f\n\r\t\ud83d\ude00"}})"));
  EXPECT_TRUE(isJsonObject("{\"caf\xc3\xa9\":\"\xf0\x9f\x98\x80\"}"));
  EXPECT_TRUE(isJsonObject(nested(util::kMaxJsonDepth)));
}

TEST(JsonObjectCheckTest, RefusesEverythingElseWithoutReadingPastTheEnd) {
  for (const std::string& bad : std::vector<std::string>{"",
                                                         " ",
                                                         "[]",
                                                         "1",
                                                         "\"a\"",
                                                         "null",
                                                         "{} {}",
                                                         "{}x",
                                                         "{",
                                                         "}",
                                                         "{\"a\"}",
                                                         "{\"a\":}",
                                                         "{\"a\":1,}",
                                                         "{,}",
                                                         "{\"a\" 1}",
                                                         "{a:1}",
                                                         "{'a':1}",
                                                         "{\"a\":01}",
                                                         "{\"a\":1.}",
                                                         "{\"a\":.5}",
                                                         "{\"a\":1e}",
                                                         "{\"a\":+1}",
                                                         "{\"a\":-}",
                                                         "{\"a\":tru}",
                                                         "{\"a\":nul}",
                                                         "{\"a\":[1,]}",
                                                         "{\"a\":[1}",
                                                         "{\"a\":{]}",
                                                         "{\"a\":\"x}",
                                                         "{\"a\":\"\\q\"}",
                                                         "{\"a\":\"\\u12\"}",
                                                         "{\"a\":\"\\u12g4\"}",
                                                         "{\"a\":\"\x01\"}",
                                                         std::string("{\"a\":\"\0\"}", 8),
                                                         "{\"a\":\"\xc3\"}",
                                                         "{\"a\":\"\xed\xa0\x80\"}",
                                                         "{\"a\":\"\xc0\xaf\"}",
                                                         "{\"a\":1e999}",
                                                         "{\"a\":-1e999}",
                                                         "{\"a\":\"\\ud83d\"}",
                                                         "{\"a\":\"\\ude00\"}",
                                                         "{\"a\":\"\\ud83d\\u0041\"}",
                                                         "{\"a\":18446744073709551616}",
                                                         "{\"a\":-9223372036854775809}",
                                                         std::string("{\"a\":1}\0", 8),
                                                         nested(util::kMaxJsonDepth + 1)}) {
    EXPECT_FALSE(isJsonObject(bad)) << bad;
  }
}

TEST(JsonStringReadTest, ReadsBackWhatAppendJsonStringWrote) {
  for (const std::string& text : std::vector<std::string>{
           std::string(), std::string("plain"), std::string("q\"b\\s/ \b\f\n\r\t\x01\x7f"),
           std::string("caf\xc3\xa9 \xf0\x9f\x98\x80"), std::string("nul\0in", 6)}) {
    std::string json = "x";
    util::appendJsonString(json, text);
    json += ",";
    size_t pos = 1;
    std::string out = "stale";
    ASSERT_TRUE(readJsonString(json, pos, out)) << json;
    EXPECT_EQ(out, text);
    EXPECT_EQ(json[pos], ',');
  }
}

TEST(JsonStringReadTest, DecodesSurrogatePairsAndReplacesLoneSurrogates) {
  std::string out;
  size_t pos = 0;
  ASSERT_TRUE(readJsonString(R"("\ud83d\ude00\u00e9\u002F")", pos, out));
  EXPECT_EQ(out, "\xf0\x9f\x98\x80\xc3\xa9/");
  pos = 0;
  ASSERT_TRUE(readJsonString(R"("a\ud83db\ude00")", pos, out));
  EXPECT_EQ(out,
            "a\xef\xbf\xbd"
            "b\xef\xbf\xbd");
}

TEST(JsonStringReadTest, RefusesWhatIsNotAStringLiteral) {
  for (const std::string& bad :
       std::vector<std::string>{"", "x", "\"", "\"abc", "\"a\\\"", "\"\\x\"", "\"\\u12\""}) {
    size_t pos = 0;
    std::string out;
    EXPECT_FALSE(readJsonString(bad, pos, out)) << bad;
  }
}

TEST(PluginAuditRecordTest, ActionAndResourceAreReadBackFromThePayload) {
  const std::string resource = "secret/\"db\"\n\xc3\xa9";
  const std::string payload = admin::pluginRecordPayload("secret.read", resource, R"({"items":1})");
  EXPECT_TRUE(isJsonObject(payload)) << payload;
  auto head = admin::readPluginRecordHead(payload);
  ASSERT_TRUE(head) << payload;
  EXPECT_EQ(head->action, "secret.read");
  EXPECT_EQ(head->resource, resource);
}

TEST(PluginAuditRecordTest, APayloadOfAnotherShapeIsNotRead) {
  for (const std::string& other : std::vector<std::string>{
           "", "{}", R"({"resource":"r","action":"a","details":{}})", R"({"action":"a"})",
           R"({"action":"a","resource":"r"})", R"({"action":"a","resource":"r,"details":{}})"}) {
    EXPECT_FALSE(admin::readPluginRecordHead(other)) << other;
  }
}

}  // namespace
}  // namespace trellis::kernel
