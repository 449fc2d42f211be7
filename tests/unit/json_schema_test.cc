#include "trellis/kernel/config/json_schema.h"

#include <gtest/gtest.h>

#include <string>

namespace trellis::kernel::config {
namespace {

constexpr const char* kHelloSchema = R"({
  "type": "object",
  "properties": {
    "greeting": {"type": "string", "minLength": 1, "maxLength": 20, "default": "Hello"},
    "mode": {"type": "string", "enum": ["plain", "shout"]},
    "code": {"type": "string", "pattern": "^[a-z]{2}$"},
    "ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "enabled": {"type": "boolean"},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}},
    "limits": {"type": "object", "required": ["max"],
               "properties": {"max": {"type": "integer", "minimum": 1, "maximum": 100}}}
  }
})";

JsonSchema schema(const char* text = kHelloSchema) {
  auto parsed = JsonSchema::parse(text);
  EXPECT_TRUE(parsed.isOk()) << parsed.status().message();
  return *parsed;
}

std::string schemaFault(const char* text) {
  auto parsed = JsonSchema::parse(text);
  EXPECT_FALSE(parsed.isOk()) << text;
  return parsed.isOk() ? "" : parsed.status().message();
}

std::string documentFault(const std::string& doc) {
  Status s = schema().validate(doc);
  EXPECT_FALSE(s.isOk()) << doc;
  return s.message();
}

TEST(JsonSchemaTest, AcceptsDocumentsThatFit) {
  JsonSchema s = schema();
  EXPECT_TRUE(s.validate("{}").isOk());
  Status full = s.validate(R"({"greeting": "Bonjour", "mode": "shout", "code": "fr",
      "ratio": 0.5, "enabled": true, "tags": ["a", "bc"], "limits": {"max": 100}})");
  EXPECT_TRUE(full.isOk()) << full.message();
  // 7.0 is an integer in JSON.
  EXPECT_TRUE(s.validate(R"({"limits": {"max": 7.0}})").isOk());
}

TEST(JsonSchemaTest, RefusalsNameTheDocumentPath) {
  EXPECT_EQ(documentFault(R"({"limits": {"max": 101}})"), "/limits/max: must be <= 100");
  EXPECT_EQ(documentFault(R"({"limits": {"max": 0}})"), "/limits/max: must be >= 1");
  EXPECT_EQ(documentFault(R"({"limits": {"max": 1.5}})"),
            "/limits/max: expected an integer, got a number");
  EXPECT_EQ(documentFault(R"({"limits": {}})"), "/limits/max: required");
  EXPECT_EQ(documentFault(R"({"greeting": 5})"), "/greeting: expected a string, got an integer");
  EXPECT_EQ(documentFault(R"({"greeting": ""})"), "/greeting: must be at least 1 bytes long");
  EXPECT_EQ(documentFault(R"({"mode": "loud"})"), R"(/mode: must be one of "plain", "shout")");
  EXPECT_EQ(documentFault(R"({"code": "FR"})"), R"(/code: must match pattern "^[a-z]{2}$")");
  EXPECT_EQ(documentFault(R"({"tags": ["ok", "toolong"]})"),
            "/tags/1: must be at most 5 bytes long");
  EXPECT_EQ(documentFault(R"({"enabled": "yes"})"), "/enabled: expected a boolean, got a string");
  EXPECT_EQ(documentFault("[]"), "/: expected an object, got an array");
}

TEST(JsonSchemaTest, RefusesUnknownKeysWithAnEscapedPath) {
  EXPECT_EQ(documentFault(R"({"colour": "red"})"), "/colour: unknown key");
  EXPECT_EQ(documentFault(R"({"limits": {"max": 1, "a/b~": 2}})"), "/limits/a~1b~0: unknown key");
}

TEST(JsonSchemaTest, RefusesTextThatIsNotJson) {
  EXPECT_NE(documentFault("{\"greeting\": ").find("not valid JSON"), std::string::npos);
}

TEST(JsonSchemaTest, DoesNotRunPatternsOnOverlongInput) {
  std::string doc = R"({"code": ")" + std::string(JsonSchema::kMaxPatternInput + 1, 'a') + "\"}";
  EXPECT_EQ(documentFault(doc), "/code: too long to match pattern (over 1024 bytes)");
}

TEST(JsonSchemaTest, AcceptsPatternsWithModestRepeatCounts) {
  JsonSchema ids = schema(R"({"type": "object", "properties": {
      "uuid": {"type": "string",
               "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
      "ipv4": {"type": "string", "pattern": "^(\\d{1,3}\\.){3}\\d{1,3}$"}}})");
  EXPECT_TRUE(ids.validate(R"({"uuid": "0190a3c4-1b2c-7d3e-8f40-123456789abc"})").isOk());
  EXPECT_TRUE(ids.validate(R"({"ipv4": "10.0.0.1"})").isOk());
  EXPECT_FALSE(ids.validate(R"({"ipv4": "10.0.0"})").isOk());
}

TEST(JsonSchemaTest, RefusesBadSchemasNamingTheSchemaPath) {
  EXPECT_EQ(schemaFault(R"({"type": "object", "properties": {"a": {"type": "text"}}})"),
            "/properties/a/type: must be one of \"object\", \"string\", \"integer\", "
            "\"number\", \"boolean\", \"array\"");
  EXPECT_EQ(schemaFault(R"({"type": "object", "additionalProperties": true})"),
            "/additionalProperties: unsupported schema keyword");
  EXPECT_EQ(schemaFault(R"({"type": "string", "minimum": 1})"),
            "/minimum: only applies to numbers");
  EXPECT_EQ(schemaFault(R"({"type": "integer", "maximum": "10"})"),
            "/maximum: expected a number, got a string");
  EXPECT_EQ(schemaFault(R"({"type": "integer", "minimum": 5, "maximum": 1})"),
            "/minimum: greater than maximum");
  EXPECT_EQ(schemaFault(R"({"type": "object", "properties": {}, "required": ["x"]})"),
            "/required/0: names no declared property");
  EXPECT_EQ(schemaFault(R"({"properties": {}})"), "/type: required");
  EXPECT_EQ(schemaFault(R"({"type": "array", "items": {"type": "string", "pattern": "("}})")
                .rfind("/items/pattern: not a valid regular expression", 0),
            0u);
  // Found by the json_schema fuzzer: a length past 2^53 overflowed the cast to size_t.
  EXPECT_EQ(schemaFault(R"({"type": "string", "maxLength": 92233720368547758082.0})"),
            "/maxLength: expected a non-negative integer up to 2^53 - 1");
  EXPECT_EQ(schemaFault(R"({"type": "string", "minLength": 18446744073709551615})"),
            "/minLength: expected a non-negative integer up to 2^53 - 1");
  // Patterns std::regex cannot compile safely are refused before it sees them.
  EXPECT_EQ(schemaFault(R"({"type": "string", "pattern": "a{18446744073709551610}"})"),
            "/pattern: has a number of more than 9 digits");
  EXPECT_EQ(schemaFault(R"({"type": "string", "pattern": "((a{100}){100}){100}"})"),
            "/pattern: repeats too much (over 10000 states once its counts are expanded)");
  // Found by the json_schema fuzzer: "[A-Z]****…" backtracked for minutes in std::regex.
  EXPECT_EQ(schemaFault(R"({"type": "string", "pattern": "^[A-Z]**Z"})"),
            "/pattern: repeats a repetition (such as \"a**\")");
  EXPECT_EQ(schemaFault(R"({"type": "string", "pattern": "a+{2}"})"),
            "/pattern: repeats a repetition (such as \"a**\")");
  std::string long_pattern = R"({"type": "string", "pattern": ")" + std::string(600, 'a') + "\"}";
  EXPECT_EQ(schemaFault(long_pattern.c_str()), "/pattern: longer than 512 bytes");
  EXPECT_EQ(schemaFault(R"({"type": "string", "maxLength": 2, "default": "long"})"),
            "/default: breaks its own schema (/: must be at most 2 bytes long)");
  EXPECT_EQ(schemaFault(R"({"type": "integer", "enum": [1, "two"]})"),
            "/enum/1: breaks its own schema (/: expected an integer, got a string)");
}

}  // namespace
}  // namespace trellis::kernel::config
