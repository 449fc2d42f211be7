// The tenant_config schema subset (kernel/src/config/json_schema.cc): schemas come from
// manifests, documents from tenants through the admin API. The input is a schema, a NUL
// byte, then a document. Properties: neither parse nor validate crashes or hangs, every
// refusal has a message that starts with a path ("/..."), or says the text is not JSON.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "trellis/kernel/config/json_schema.h"

using trellis::kernel::config::JsonSchema;

namespace {

bool namesAPlace(const std::string& message) {
  return message.starts_with("/") || message.find("not valid JSON") != std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  auto schema = JsonSchema::parse(input.substr(0, nul));
  if (!schema) {
    FUZZ_CHECK(namesAPlace(schema.status().message()),
               "schema refusal without a path: " + schema.status().message());
    return 0;
  }
  if (nul == std::string_view::npos) return 0;
  auto verdict = schema->validate(input.substr(nul + 1));
  if (!verdict) {
    FUZZ_CHECK(namesAPlace(verdict.message()),
               "document refusal without a path: " + verdict.message());
  }
  return 0;
}
