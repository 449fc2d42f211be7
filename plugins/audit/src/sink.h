// The audit sink: every tenant's log (and the system log) in memory, backed by the
// plugin's own system storage, with the checkpoint policy. The plugin object wires it to
// audit.v1 "write" and to the read routes; this class knows nothing of HTTP.
//
// Storage (the plugin's system KV scope, which no tenant sees):
//   key/ed25519            hex seed of the checkpoint signing key
//   hmac/<log>             hex HMAC key for the log's sensitive fields
//   rec/<log>/<seq:020>    one record line
//   cp/<log>/<size:020>    one checkpoint (JSON)
// where <log> is the tenant id, or "_system" for records about no tenant.
//
//   AuditSink sink(options);
//   if (Status s = sink.load(ctx); !s) return s;        // on_init
//   Status s = sink.write(ctx, record_json, now_ms);    // OK only once the line is stored
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/ed25519.h"
#include "core/tenant_log.h"
#include "trellis/plugin.hpp"

namespace trellis::audit {

struct SinkOptions {
  uint64_t checkpoint_every = 1000;        // records between checkpoints
  int64_t checkpoint_interval_ms = 60000;  // or this long, whichever comes first
  std::vector<std::string> sensitive;      // parameter member names HMAC'd
};

// The log name in storage and URLs: the tenant, or "_system".
std::string logName(std::string_view tenant);

class AuditSink {
 public:
  explicit AuditSink(SinkOptions options) : options_(std::move(options)) {}

  // Reads key, HMAC keys, records and checkpoints back; creates the key on first start.
  Status load(const Context& ctx);
  // Appends one record the kernel (or a plugin through it) sent. OK once durable.
  Result<std::string> write(const Context& ctx, std::string_view record_json, int64_t now_ms);
  // Signs a checkpoint of `tenant`'s log now if it grew since the last one (force) or the
  // policy says so; stores it. Returns the newest checkpoint, if any.
  Result<std::optional<Checkpoint>> checkpoint(const Context& ctx, std::string_view tenant,
                                               int64_t now_ms, bool force);

  // Reads, all under the sink's lock.
  std::string recordsJsonl(std::string_view tenant, uint64_t from_seq, uint64_t limit) const;
  std::string checkpointsJsonl(std::string_view tenant) const;
  Result<std::string> inclusionJson(std::string_view tenant, uint64_t seq,
                                    std::optional<uint64_t> size) const;
  Result<std::string> consistencyJson(std::string_view tenant, uint64_t from,
                                      std::optional<uint64_t> to) const;
  std::string logsJson() const;
  std::string publicPem() const;
  Result<std::string> hmacOf(const Context& ctx, std::string_view tenant, std::string_view value);

 private:
  TenantLog& logOf(std::string_view tenant);
  const TenantLog* findLog(std::string_view tenant) const;
  Result<std::string> hmacKey(const Context& ctx, std::string_view tenant);
  Status maybeCheckpoint(const Context& ctx, TenantLog& log, int64_t now_ms, bool force);

  SinkOptions options_;
  mutable std::mutex mu_;
  std::unique_ptr<Ed25519Key> key_;
  std::map<std::string, TenantLog, std::less<>> logs_;
  std::map<std::string, std::string, std::less<>> hmac_keys_;
};

}  // namespace trellis::audit
