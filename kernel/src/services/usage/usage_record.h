// One usage record: what a data-plane request (or a plugin's own billable act, usage_emit)
// cost a tenant. The data plane fills one after every answer, refusals included; the usage
// stream (usage_stream.h) persists it and hands it to subscribed system plugins as one JSON
// object per line.
//
//   UsageRecord r;
//   r.tenant = "acme"; r.status = 429; r.method = "GET"; ...
//   std::string line = toJson(r);   // {"event_id":"0192…","kind":"request",…}
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
  // JSON object is in `emitted`.
  std::string kind = "request";
  std::string event_id;  // UUIDv7 (time-ordered)
  int64_t time_ms = 0;   // Unix milliseconds when the answer was ready
  std::string tenant;    // "" when the key resolved to no tenant (401)
  std::string key_id;
  std::string plugin;  // "" when no route matched
  std::string route;   // the route pattern, e.g. /hello/{name}
  std::string method;
  unsigned status = 0;
  uint64_t bytes_in = 0;   // request body
  uint64_t bytes_out = 0;  // response body
  uint64_t duration_us = 0;
  Counters counters;
  std::string decision_id;  // the quota's or policy's decision, if one was made
  std::string trace_id;
  std::string request_id;
  std::string emitted;  // kind "plugin": the plugin's JSON object, validated
};

// A fresh RFC 9562 UUIDv7: 48 bits of Unix milliseconds, then 74 random bits.
std::string newEventId(int64_t unix_ms);

// The record as one line of JSON (no newline).
std::string toJson(const UsageRecord& r);

}  // namespace trellis::kernel::services::usage
