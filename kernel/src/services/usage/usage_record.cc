#include "services/usage/usage_record.h"

#include <cstdio>

#include "trellis/kernel/util/json.h"
#include "trellis/tenants/admission.h"

namespace trellis::kernel::services::usage {

std::string newEventId(int64_t unix_ms) {
  // 20 hex digits = 80 random bits; 74 are used, version and variant take the rest.
  const std::string rnd = tenants::randomHexId(10);
  char ts[13];
  std::snprintf(ts, sizeof ts, "%012llx",
                static_cast<unsigned long long>(unix_ms) & 0xffffffffffffULL);
  static constexpr char kHex[] = "0123456789abcdef";
  const char r3 = rnd[3];  // a hex digit; its low two bits become the variant's
  const int variant_nibble = 8 | ((r3 <= '9' ? r3 - '0' : r3 - 'a' + 10) & 3);
  std::string id;
  id.reserve(36);
  id.append(ts, 8).append("-").append(ts + 8, 4).append("-7").append(rnd, 0, 3).append("-");
  id.push_back(kHex[variant_nibble]);
  id.append(rnd, 4, 3).append("-").append(rnd, 7, 12);
  return id;
}

std::string toJson(const UsageRecord& r) {
  std::string out;
  out.reserve(512 + r.emitted.size());
  auto str = [&out](const char* name, std::string_view v) {
    out.append(",\"").append(name).append("\":");
    util::appendJsonString(out, v);
  };
  auto num = [&out](const char* name, uint64_t v) {
    out.append(",\"").append(name).append("\":").append(std::to_string(v));
  };
  out.append("{\"event_id\":");
  util::appendJsonString(out, r.event_id);
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
