#include "syslog_forwarder.h"

#include "core/export_formats.h"
#include "core/whole_number.h"

namespace trellis::audit {
namespace {

std::string cursorKey(std::string_view tenant) {
  return "fwd/" + logName(tenant);
}

// The log's next seq to send: 1 before anything was sent.
Result<uint64_t> cursorOf(const Context& ctx, std::string_view tenant) {
  auto entry = ctx.kv().get(cursorKey(tenant));
  if (!entry) {
    if (entry.status().code() == StatusCode::kNotFound) return uint64_t{1};
    return entry.status();
  }
  const auto next = wholeNumberIn(entry->value);
  if (!next || *next == 0) {
    return Status::internal("audit: the syslog cursor of log " + logName(tenant) +
                            " is not a number: \"" + entry->value + "\"");
  }
  return *next;
}

}  // namespace

std::optional<uint64_t> SyslogForwarder::sentThrough(const std::string& tenant) const {
  std::lock_guard lock(mu_);
  auto it = sent_.find(tenant);
  return it == sent_.end() ? std::nullopt : std::optional<uint64_t>(it->second);
}

void SyslogForwarder::remember(const std::string& tenant, uint64_t next) const {
  std::lock_guard lock(mu_);
  sent_[tenant] = next;
}

Status SyslogForwarder::checkUrl(std::string_view url) {
  const bool scheme = url.starts_with("tcp://") || url.starts_with("tls://");
  const std::string_view rest = scheme ? url.substr(6) : std::string_view();
  const size_t colon = rest.rfind(':');
  if (!scheme || colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size()) {
    return Status::invalid("syslog_url: \"" + std::string(url) +
                           "\" must be tcp://host:port or tls://host:port");
  }
  return Status::ok();
}

Status SyslogForwarder::run(const Context& ctx, const AuditSink& sink) const {
  std::optional<Stream> stream;  // opened when the first batch is ready
  for (const std::string& tenant : sink.logNames()) {
    // Nothing new since this host moved the cursor: no storage read for an idle log.
    if (std::optional<uint64_t> sent = sentThrough(tenant); sent && *sent > sink.logSize(tenant)) {
      continue;
    }
    auto next = cursorOf(ctx, tenant);
    if (!next) return next.status();
    for (uint64_t b = 0; b < options_.max_batches; ++b) {
      AuditSink::RecordRange range = sink.records(tenant, *next, options_.batch);
      if (range.count == 0) break;
      if (range.first > *next) {
        ctx.warn("audit: syslog forwarding of log " + logName(tenant) + " skips records " +
                 std::to_string(*next) + ".." + std::to_string(range.first - 1) +
                 ": retention purged them before they were sent");
      }
      auto frames = exportRecords(range.lines, ExportFormat::kSyslog, options_.hostname);
      if (!frames) return frames.status();
      if (!stream) {
        auto opened = ctx.connect({.url = options_.url, .io_timeout_ms = options_.io_timeout_ms});
        if (!opened) return opened.status();
        stream.emplace(std::move(*opened));
      }
      if (Status s = stream->write(*frames); !s) return s;
      *next = range.first + range.count;
      if (auto put = ctx.kv().put(cursorKey(tenant), std::to_string(*next)); !put) {
        return put.status();
      }
      remember(tenant, *next);
      if (range.count < options_.batch) break;
    }
  }
  return Status::ok();
}

}  // namespace trellis::audit
