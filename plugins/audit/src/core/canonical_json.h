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

// Parses `json` and writes it canonically in one pass (core/json_reader.h); INVALID (with
// the reason and its byte offset) otherwise.
Result<std::string> canonicalJson(std::string_view json);
// The same through Poco's parser and appendCanonical(): the reference canonicalJson() is
// tested against, and what it defers to for forms only Poco decides.
Result<std::string> canonicalJsonReference(std::string_view json);
// Appends the canonical form of a parsed value.
void appendCanonical(std::string& out, const Poco::Dynamic::Var& value);
void appendJsonString(std::string& out, std::string_view s);

}  // namespace trellis::audit
