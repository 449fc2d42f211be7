// One usage record: what a data-plane request (or a plugin's own billable act, usage_emit)
// cost a tenant. The data plane fills one after every answer, refusals included; the usage
// stream (usage_stream.h) turns it into one line of JSON at once, so a record holds views of
// the caller's strings and copies nothing.
//
//   UsageRecord r;
//   r.tenant = "acme"; r.status = 429; r.method = "GET"; ...
//   std::string rest = toJsonAfterEventId(r);   // ,"kind":"request",…}
//   std::string line = "{\"event_id\":\"";
//   appendEventId(line, r.time_ms, random);   // 10 bytes the writer drew from RAND_bytes
//   line += "\"" + rest;
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace trellis::kernel::services::usage {

// Counted while a plugin serves the request (see trellis_ctx::usage): each host service
// adds what it already measures for its own quota.
struct Counters {
  uint64_t host_calls = 0;
  uint64_t egress_calls = 0;
  uint64_t egress_bytes = 0;  // request bodies sent plus response bodies received
  uint64_t blob_bytes_written = 0;
  uint64_t lua_instructions = 0;
};

struct UsageRecord {
  // "request": one data-plane request. "plugin": a plugin's own record (usage_emit), whose
  // JSON object (validated, on one line) is `emitted`.
  std::string_view kind = "request";
  int64_t time_ms = 0;      // Unix milliseconds when the answer was ready
  std::string_view tenant;  // "" when the key resolved to no tenant (401)
  std::string_view key_id;
  std::string_view plugin;  // "" when no route matched
  std::string_view route;   // the route pattern, e.g. /hello/{name}
  std::string_view method;
  unsigned status = 0;
  uint64_t bytes_in = 0;   // request body
  uint64_t bytes_out = 0;  // response body
  uint64_t duration_us = 0;
  Counters counters;
  std::string_view decision_id;  // the quota's or policy's decision, if one was made
  std::string_view trace_id;
  std::string_view request_id;
  std::string_view emitted;
};

// Random bytes an event id takes (74 of their 80 bits are used).
inline constexpr size_t kEventIdRandomBytes = 10;

// Appends an RFC 9562 UUIDv7: 48 bits of Unix milliseconds, then 74 bits of `random`
// (kEventIdRandomBytes bytes).
void appendEventId(std::string& out, int64_t unix_ms, const unsigned char* random);

// The record's JSON line without its first member and opening brace: `,"kind":…}`. The
// journal's writer puts `{"event_id":"…"` in front when it assigns the id.
std::string toJsonAfterEventId(const UsageRecord& r);

}  // namespace trellis::kernel::services::usage
