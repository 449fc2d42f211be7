// The differential property of the one-pass record reader (core/json_reader.h), shared by
// the unit test and the fuzz harness: for any bytes, IncomingRecord::parse() accepts
// exactly what Poco's reading (parseReference()) accepts, and builds the same line under
// every sensitive-field setting, so logs written before it stay the logs written after.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/record.h"

namespace trellis::audit::testing {

// "" when the two paths agree on `json`; otherwise what differs. `*fast_path` (if given)
// is set when the one-pass path built the line itself, without deferring to Poco.
inline std::string recordDifference(std::string_view json, bool* fast_path = nullptr) {
  auto fast = IncomingRecord::parse(json);
  auto ref = IncomingRecord::parseReference(json);
  if (fast_path) *fast_path = fast && !fast->object;
  if (fast.isOk() != ref.isOk()) {
    return std::string(fast ? "only the one-pass reader accepts it"
                            : "only the one-pass reader refuses it: " + fast.status().message()) +
           (ref ? "" : " (Poco: " + ref.status().message() + ")");
  }
  if (!fast) {
    return fast.status().message().empty() ? "refused without a reason" : "";
  }
  if (fast->tenant != ref->tenant) return "tenant " + fast->tenant + " vs " + ref->tenant;
  static const std::vector<std::vector<std::string>> kSensitive = {
      {}, {"email", "ip"}, {"email", "resource", "a", "b", ""}};
  for (const auto& sensitive : kSensitive) {
    RecordContext ctx;
    ctx.seq = 42;
    ctx.time_ms = 1764825514123;
    ctx.event_id = "01234567-89ab-7000-8000-000000000000";
    ctx.prev[0] = 0x5a;
    ctx.hmac_key = "per-log key";
    ctx.sensitive = &sensitive;
    const std::string a = buildRecord(*fast, ctx);
    const std::string b = buildRecordReference(*ref, ctx);
    if (a != b) return "lines differ:\n  one-pass: " + a + "\n  Poco:     " + b;
  }
  return "";
}

}  // namespace trellis::audit::testing
