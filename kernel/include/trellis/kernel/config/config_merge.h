// A plugin's configuration as one tenant sees it: the global `config:` block from
// trellis.yaml with that tenant's overrides laid over it. Objects merge key by key, so an
// override of `limits.max` keeps `limits.min`; anything else in the override (scalars,
// arrays) replaces the global value whole, as in Kong's per-consumer plugin config.
//
//   auto merged = mergeConfig(R"({"greeting":"Hello","limits":{"min":1,"max":10}})",
//                             R"({"limits":{"max":50}})");
//   // *merged == R"({"greeting":"Hello","limits":{"max":50,"min":1}})"
#pragma once

#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::config {

// The value at a dotted path ("" = everything, "limits.max" = nested) of a config document:
// scalars as their text, objects and arrays as condensed JSON, null as "null". NOT_FOUND if
// the path is absent, INVALID if `json` is not JSON.
Result<std::string> configValue(std::string_view json, std::string_view path);

// `base_json` may be any JSON value, or empty for a plugin without config; `override_json`
// must be an object. INVALID if either is not JSON. The result is condensed JSON.
Result<std::string> mergeConfig(std::string_view base_json, std::string_view override_json);

}  // namespace trellis::kernel::config
