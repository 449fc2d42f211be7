// Ships every audit log to a syslog collector: RFC 5424 messages (core/export_formats.h)
// framed by octet counting (RFC 6587) over one TCP or TLS stream per run (the host's
// stream_connect, under the operator's egress rules). It runs as the plugin's own durable
// job, so one host sends each run on a shared database, and a run that fails is retried
// with backoff, then dead-lettered where `trellis jobs` shows it.
//
// Each log keeps its cursor, the next seq to send, in the plugin's system storage
// (fwd/<log>). A run sends what each log holds past its cursor, in batches, and moves the
// cursor once a batch is written. Delivery is therefore at least once: a run that dies
// between writing and moving the cursor sends that batch again, and the collector can
// drop the copy by its event_id (in the structured data). Records that retention purged
// before they were sent are skipped with a warning that names them.
//
//   SyslogForwarder forwarder({.url = "tls://siem.internal:6514", .hostname = "trellis-1"});
//   Status s = forwarder.run(ctx, sink);   // from the job handler (tenant-less ctx)
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "sink.h"
#include "trellis/plugin.hpp"

namespace trellis::audit {

struct ForwarderOptions {
  std::string url;                 // tcp://host:port or tls://host:port
  std::string hostname = "-";      // the HOSTNAME of each message
  uint64_t batch = 1000;           // records per write
  uint64_t max_batches = 20;       // per log and run: a long backlog takes several runs
  uint32_t io_timeout_ms = 10000;  // per write
};

class SyslogForwarder {
 public:
  static constexpr std::string_view kJobName = "syslog-forward";

  explicit SyslogForwarder(ForwarderOptions options) : options_(std::move(options)) {}

  // INVALID naming the setting unless `url` is tcp:// or tls:// with a host and port.
  static Status checkUrl(std::string_view url);

  // One pass over every log. Non-OK (the first failure) leaves the cursors where the last
  // written batch put them.
  Status run(const Context& ctx, const AuditSink& sink) const;

 private:
  // The next seq of `tenant`'s log as this host last stored it. Another host may have
  // moved the cursor further since; a log that grew past this is read from storage.
  std::optional<uint64_t> sentThrough(const std::string& tenant) const;
  void remember(const std::string& tenant, uint64_t next) const;

  ForwarderOptions options_;
  mutable std::mutex mu_;
  mutable std::map<std::string, uint64_t, std::less<>> sent_;
};

}  // namespace trellis::audit
