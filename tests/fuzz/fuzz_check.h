// What every harness shares: a failed property is a finding like a crash, so it prints what
// failed and aborts, and libFuzzer saves the input as crash-<sha1>.
//
//   FUZZ_CHECK(again == once, "canonical JSON is not stable: " + once);
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace trellis::fuzz {

[[noreturn]] inline void propertyFailed(const char* file, int line, const char* expr,
                                        std::string_view what) {
  std::fprintf(stderr, "%s:%d: property failed: %s\n  %.*s\n", file, line, expr,
               static_cast<int>(what.size()), what.data());
  std::abort();
}

}  // namespace trellis::fuzz

#define FUZZ_CHECK(cond, what)                                                       \
  do {                                                                               \
    if (!(cond)) ::trellis::fuzz::propertyFailed(__FILE__, __LINE__, #cond, (what)); \
  } while (0)
