// The one-pass record reader (core/json_reader.h) against Poco's reading, which every
// stored log was made with. Property: for any bytes both accept or both refuse; a refusal
// names its reason; an accepted record builds the same line on both paths under every
// sensitive-field setting (test/record_differential.h). canonicalJson() likewise.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../record_differential.h"
#include "core/canonical_json.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string diff = trellis::audit::testing::recordDifference(bytes);
  FUZZ_CHECK(diff.empty(), diff);
  auto fast = trellis::audit::canonicalJson(bytes);
  auto ref = trellis::audit::canonicalJsonReference(bytes);
  FUZZ_CHECK(fast.isOk() == ref.isOk(),
             "canonicalJson() and Poco disagree on accepting it: " + fast.status().message());
  if (fast)
    FUZZ_CHECK(*fast == *ref, "canonicalJson() differs from Poco: " + *fast + " vs " + *ref);
  return 0;
}
