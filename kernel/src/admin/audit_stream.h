// The audit stream: who did what to the host, delivered to a sink before it takes effect.
// The kernel writes a record for every admin API call (a request record before the action
// runs, a response record after), for security events the kernel already publishes on the
// event bus under "audit.*" (capability denials, plugin scope refusals, plugin failures,
// Lua calls past their deadline, aggregated authentication failures), and for records
// plugins emit themselves (host->audit_emit).
//
// The sink is a system plugin providing the inter-plugin service "audit.v1", method
// "write": the request is one record as JSON, any OK answer means it is stored. With a
// configured sink in `block` mode, write() fails when the record could not be stored and
// the admin plane refuses the action (503); in `degrade` mode (and for records that guard
// no action) the failure is counted (trellis_audit_sink_failures_total) and the record waits
// in a bounded backlog (10000 records; the oldest dropped past that, counted in
// trellis_audit_dropped_records_total) and reaches the sink, in order, before the
// next record once the sink stores again; the log warns.
//
//   AuditStream audit(options, service_registry, metrics);
//   audit.attach(event_bus);                         // "audit.*" events become records
//   if (Status s = audit.write(record); !s) -> 503  // only in block mode
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::events {
class EventBus;
}
namespace trellis::kernel::metrics {
class MetricsRegistry;
class Counter;
class Gauge;
}  // namespace trellis::kernel::metrics
namespace trellis::kernel::services {
class ServiceRegistry;
}

namespace trellis::kernel::admin {

inline constexpr std::string_view kAuditService = "audit.v1";
inline constexpr std::string_view kAuditWriteMethod = "write";
// A record plugins emit (action + resource + details) is refused above this size.
inline constexpr size_t kMaxPluginAuditBytes = 16 * 1024;

struct AuditRecord {
  std::string type;        // "admin.request", "admin.response", "event", "plugin"
  std::string principal;   // admin principal id, plugin id, key id, or "kernel"
  std::string name;        // principal name ("alice", "bootstrap"); "" if none
  std::string role;        // admin role; "" if none
  std::string action;      // "POST /v1/tenants", "auth.failure", "secret.read"
  std::string resource;    // "/v1/tenants/acme", "acme/audit"
  std::string tenant;      // "" when not about one tenant
  std::string parameters;  // JSON, secrets already redacted; "{}" if none
  std::string outcome;     // "pending" (request), "success", "failure", "denied", …
  int status = 0;          // HTTP status of a response record; 0 otherwise
  std::string request_id;
  std::string trace_id;
};

class AuditStream {
 public:
  struct Options {
    std::string sink;    // the configured sink's plugin id; "" = none configured
    bool block = false;  // with a sink: refuse what cannot be recorded
  };
  AuditStream(Options options, services::ServiceRegistry& services,
              metrics::MetricsRegistry& metrics);
  ~AuditStream();  // detaches from the bus first: no event reaches a destroyed stream
  AuditStream(const AuditStream&) = delete;
  AuditStream& operator=(const AuditStream&) = delete;

  // Delivers one record synchronously. UNAVAILABLE (naming why) only when it guards an
  // action in block mode and was not stored; otherwise OK (failures counted and warned).
  Status write(AuditRecord record, bool guards_action);
  // Turns every "audit.*" event on `bus` into a record (the topic minus "audit." is the
  // action, the payload the parameters). Call once.
  void attach(events::EventBus& bus);

  bool blocking() const { return options_.block && !options_.sink.empty(); }
  const std::string& sink() const { return options_.sink; }

  // The record as the sink receives it (one JSON object).
  static std::string toJson(const AuditRecord& record, uint64_t seq, int64_t time_ms);

 private:
  Status deliver(const std::string& json);

  Options options_;
  services::ServiceRegistry& services_;
  metrics::MetricsRegistry& metrics_;
  std::mutex mu_;  // one record at a time reaches the sink, in sequence order
  uint64_t seq_ = 0;
  metrics::Counter* written_;
  metrics::Counter* failed_;
  metrics::Counter* refused_;
  metrics::Counter* dropped_;
  metrics::Gauge* backlog_gauge_;
  // Records not yet stored that guard no action, oldest first (bounded by kMaxBacklog).
  static constexpr size_t kMaxBacklog = 10'000;
  std::deque<std::string> backlog_;
  std::map<std::string, std::chrono::steady_clock::time_point> last_warning_;  // per action
  events::EventBus* bus_ = nullptr;
  uint64_t subscription_ = 0;
};

// `json` (an admin request body) with the values of secret-looking members ("key",
// "token", "secret", "password", "private_key", "sha256", …, at any depth) replaced by
// "[redacted]". Bodies that are not a JSON object become {"body_bytes": n}.
std::string redactedParameters(std::string_view json);

// What a plugin's audit_emit publishes on "audit.plugin" (a topic plugins cannot publish
// on themselves): {"action":…,"resource":…,"details":{…}}, `details_json` a JSON object.
// The stream reads the action and resource back from their fixed places, without a
// JSON parser: one plugin record per request is common (secrets audits every operation).
std::string pluginRecordPayload(std::string_view action, std::string_view resource,
                                std::string_view details_json);
struct PluginRecordHead {
  std::string action;
  std::string resource;
};
std::optional<PluginRecordHead> readPluginRecordHead(std::string_view payload);

}  // namespace trellis::kernel::admin
