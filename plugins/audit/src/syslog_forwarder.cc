#include "syslog_forwarder.h"

#include <charconv>

#include "core/export_formats.h"

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
  uint64_t next = 0;
  const std::string& v = entry->value;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), next);
  if (ec != std::errc() || end != v.data() + v.size() || next == 0) {
    return Status::internal("audit: the syslog cursor of log " + logName(tenant) +
                            " is not a number: \"" + v + "\"");
  }
  return next;
}

}  // namespace

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
      if (range.count < options_.batch) break;
    }
  }
  return Status::ok();
}

}  // namespace trellis::audit
