// Canonical JSON (marketplace/client/src/canonical_json.cc): the bytes publishers and the
// registry sign. Properties: canonicalizing is idempotent (a signature made over the output
// verifies after any re-canonicalization), its output parses strictly, and it never holds
// whitespace outside strings.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "trellis/marketplace/canonical_json.h"

using trellis::marketplace::canonicalizeJsonText;
using trellis::marketplace::parseJsonStrict;

namespace {

bool whitespaceOutsideStrings(std::string_view s) {
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      return true;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto once = canonicalizeJsonText(text);
  if (!once) {
    FUZZ_CHECK(!once.status().message().empty(), "a refusal without a message");
    return 0;
  }
  FUZZ_CHECK(parseJsonStrict(*once), "canonical output does not parse: " + *once);
  auto twice = canonicalizeJsonText(*once);
  FUZZ_CHECK(twice, "canonical output refused: " + twice.status().message());
  FUZZ_CHECK(*twice == *once, "not idempotent:\n  " + *once + "\n  " + *twice);
  FUZZ_CHECK(!whitespaceOutsideStrings(*once), "whitespace in canonical output: " + *once);
  return 0;
}
