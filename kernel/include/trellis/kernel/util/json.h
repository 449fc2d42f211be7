// JSON string escaping for the few places that build JSON by hand on hot paths (problem
// details, the access log) or from foreign text (YAML config). Invalid UTF-8 becomes
// U+FFFD, so the output is always valid JSON whatever bytes a client sent.
//
//   std::string out = "{\"path\":";
//   appendJsonString(out, untrusted_path);   // adds the quotes
#pragma once

#include <string>
#include <string_view>

namespace trellis::kernel::util {

void appendJsonString(std::string& out, std::string_view s);

}  // namespace trellis::kernel::util
