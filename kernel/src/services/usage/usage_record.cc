#include "services/usage/usage_record.h"

#include <charconv>

#include "trellis/kernel/util/json.h"

namespace trellis::kernel::services::usage {

void appendEventId(std::string& out, int64_t unix_ms, const unsigned char* random) {
  static constexpr char kHex[] = "0123456789abcdef";
  char rnd[2 * kEventIdRandomBytes];  // 20 hex digits of randomness
  for (size_t i = 0; i < kEventIdRandomBytes; ++i) {
    rnd[2 * i] = kHex[random[i] >> 4];
    rnd[2 * i + 1] = kHex[random[i] & 15];
  }
  const auto ms = static_cast<uint64_t>(unix_ms) & 0xffffffffffffULL;
  char ts[12];
  for (int i = 11, shift = 0; i >= 0; --i, shift += 4) ts[i] = kHex[(ms >> shift) & 15];
  // Version 7 in the 13th digit; the variant (10xx) takes two bits of the 17th.
  const int variant = 8 | (random[1] & 3);
  out.append(ts, 8).push_back('-');
  out.append(ts + 8, 4).append("-7").append(rnd, 3).push_back('-');
  out.push_back(kHex[variant]);
  out.append(rnd + 4, 3).push_back('-');
  out.append(rnd + 7, 12);
}

std::string toJsonAfterEventId(const UsageRecord& r) {
  std::string out;
  out.reserve(448 + r.emitted.size());
  auto str = [&out](std::string_view name, std::string_view v) {
    out.append(",\"").append(name).append("\":");
    util::appendJsonString(out, v);
  };
  auto num = [&out](std::string_view name, uint64_t v) {
    char digits[20];
    const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
    out.append(",\"").append(name).append("\":").append(digits, end);
  };
  str("kind", r.kind);
  num("time_ms", static_cast<uint64_t>(r.time_ms));
  str("tenant", r.tenant);
  str("key_id", r.key_id);
  str("plugin", r.plugin);
  if (r.kind == "request") {
    str("route", r.route);
    str("method", r.method);
    num("status", r.status);
    num("bytes_in", r.bytes_in);
    num("bytes_out", r.bytes_out);
    num("duration_us", r.duration_us);
    num("host_calls", r.counters.host_calls);
    num("egress_calls", r.counters.egress_calls);
    num("egress_bytes", r.counters.egress_bytes);
    num("blob_bytes_written", r.counters.blob_bytes_written);
    num("lua_instructions", r.counters.lua_instructions);
    str("decision_id", r.decision_id);
  }
  str("trace_id", r.trace_id);
  str("request_id", r.request_id);
  if (!r.emitted.empty()) out.append(",\"record\":").append(r.emitted);
  out.push_back('}');
  return out;
}

}  // namespace trellis::kernel::services::usage
