// Canonical JSON: object members sorted by key (bytewise), no whitespace, strings with
// only the escapes JSON requires (", \\, control characters as \uXXXX), integers as
// digits and other numbers in the shortest form that reads back the same. Records are
// hashed as these bytes, so the same record always hashes the same way.
//
//   Result<std::string> c = canonicalJson(R"({"b":1, "a":[true,null]})");
//   // *c == R"({"a":[true,null],"b":1})"
#pragma once

#include <Poco/Dynamic/Var.h>

#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::audit {

// Parses `json` and writes it canonically; INVALID (with the parser's reason) otherwise.
Result<std::string> canonicalJson(std::string_view json);
// Appends the canonical form of a parsed value.
void appendCanonical(std::string& out, const Poco::Dynamic::Var& value);
void appendJsonString(std::string& out, std::string_view s);

}  // namespace trellis::audit
