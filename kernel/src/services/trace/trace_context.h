// W3C Trace Context (https://www.w3.org/TR/trace-context-1/) for every call the kernel
// makes on a request's behalf. The data plane continues the caller's trace when the
// request carries a valid `traceparent` and starts a new one otherwise; malformed values
// are replaced, never trusted, and an invalid `tracestate` is dropped. Each hop the kernel
// makes (the plugin call, a service call, an event, a job run) is a new span of the trace.
//
//   TraceContext t = TraceContext::fromHeaders(req["traceparent"], req["tracestate"]);
//   t.traceparent();          // "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"
//   TraceContext hop = t.child();   // same trace id, new span id, same flags and state
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace trellis::kernel::services {

class TraceContext {
 public:
  // A new trace (random trace and span ids; sampled flag clear).
  static TraceContext root();
  // Continues the incoming trace if `traceparent` is valid (a new span as its child, its
  // flags and, if valid, its tracestate kept); otherwise a new root without tracestate.
  static TraceContext fromHeaders(std::string_view traceparent, std::string_view tracestate);
  // A valid version-00 traceparent and a valid tracestate, exactly as given (for a job or
  // event that stored them); nullopt if `traceparent` is not valid.
  static std::optional<TraceContext> restore(std::string_view traceparent,
                                             std::string_view tracestate);

  // The next hop: same trace, a new span id.
  TraceContext child() const;

  const std::string& traceparent() const { return traceparent_; }
  const std::string& tracestate() const { return tracestate_; }
  std::string_view traceId() const { return std::string_view(traceparent_).substr(3, 32); }
  std::string_view spanId() const { return std::string_view(traceparent_).substr(36, 16); }

  // The checks fromHeaders applies, exposed for tests and for other planes.
  static bool validTraceparent(std::string_view value);
  static bool validTracestate(std::string_view value);

 private:
  TraceContext(std::string traceparent, std::string tracestate)
      : traceparent_(std::move(traceparent)), tracestate_(std::move(tracestate)) {}
  std::string traceparent_;  // always version 00, 55 characters
  std::string tracestate_;
};

}  // namespace trellis::kernel::services
