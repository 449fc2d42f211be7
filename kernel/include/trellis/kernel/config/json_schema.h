// A small JSON Schema subset, for the configuration keys a plugin lets tenants override
// (manifest "tenant_config"). Both the schema and the documents are checked strictly, and
// every refusal names where it is: schema faults by their schema path
// (`/properties/limits/properties/max/minimum: expected a number, got a string`), document
// faults by their document path (`/limits/max: must be <= 100`).
//
//   auto schema = JsonSchema::parse(R"({"type": "object",
//       "properties": {"greeting": {"type": "string", "maxLength": 80}}})");
//   if (!schema.isOk()) return schema.status();
//   Status s = schema->validate(R"({"greeting": "Bonjour"})");   // OK
//
// Keywords: type (object, string, integer, number, boolean, array), properties, required,
// enum (scalars), minimum, maximum, minLength, maxLength, pattern (ECMAScript regex; strings
// longer than kMaxPatternInput are refused rather than matched; a pattern longer than
// kMaxPatternLength, with a number of more than 9 digits or whose repeat counts expand past
// kMaxPatternStates is refused), items, default, title,
// description. Objects accept only the keys their "properties" declare
// (additionalProperties: false is implied), so an unknown override key is refused.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::config {

class JsonSchema {
 public:
  // std::regex backtracks; the schema is trusted (signed manifest) but the input is not, so
  // pattern checks only run on strings up to this length.
  static constexpr std::size_t kMaxPatternInput = 1024;
  // libstdc++'s regex compiler recurses once per alternative and overflows a signed integer
  // on a huge repeat count or back-reference, so a pattern is checked before it is compiled.
  static constexpr std::size_t kMaxPatternLength = 512;
  static constexpr std::size_t kMaxPatternStates = 10000;

  // Refuses an unknown keyword, a wrong keyword type or a default that breaks its own schema.
  static Result<JsonSchema> parse(std::string_view schema_json);

  // OK, or INVALID naming the first document path at fault.
  Status validate(std::string_view document_json) const;

  struct Node;

 private:
  explicit JsonSchema(std::shared_ptr<const Node> root) : root_(std::move(root)) {}
  std::shared_ptr<const Node> root_;  // immutable, so copies share it across threads
};

}  // namespace trellis::kernel::config
