#include "admin/audit_sink_config.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <spdlog/spdlog.h>

#include <optional>

#include "trellis/kernel/util/json.h"

namespace trellis::kernel::admin {
namespace {

// What a start ran with: {"sink": "<plugin id or empty>", "on_sink_failure": "block"|"degrade"}.
std::string settingsJson(const std::string& sink, const std::string& mode) {
  std::string out = "{\"sink\":";
  util::appendJsonString(out, sink);
  out += ",\"on_sink_failure\":";
  util::appendJsonString(out, mode);
  return out + "}";
}

std::string modeOf(const config::AuditConfig& cfg) {
  if (cfg.sink.empty()) return "";  // the mode only applies with a sink
  return cfg.block ? "block" : "degrade";
}

struct Settings {
  std::string sink, mode;
};

// The stored last values; nullopt when never stored or not readable as such (then the record
// says the previous values are unknown rather than inventing them).
std::optional<Settings> parseLast(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  try {
    auto o = Poco::JSON::Parser().parse(*text).extract<Poco::JSON::Object::Ptr>();
    return Settings{o->optValue<std::string>("sink", ""),
                    o->optValue<std::string>("on_sink_failure", "")};
  } catch (const Poco::Exception& e) {
    spdlog::warn(
        "audit: the last audit sink settings are not readable ({}); recording them "
        "as unknown",
        e.displayText());
    return std::nullopt;
  }
}

}  // namespace

Status recordAuditSinkConfig(AuditStream& audit, SharedDocument& last,
                             const config::AuditConfig& current) {
  auto stored = last.read();
  if (!stored) return stored.status();
  const std::optional<Settings> previous = parseLast(stored->text);
  const Settings now{current.sink, modeOf(current)};
  const bool changed = previous && (previous->sink != now.sink || previous->mode != now.mode);

  AuditRecord record;
  record.type = "event";
  record.principal = "kernel";
  record.action = changed ? "audit.sink.changed" : "audit.sink.configured";
  record.resource = "audit/sink";
  record.outcome = "success";
  record.parameters = settingsJson(now.sink, now.mode);
  record.parameters.pop_back();
  record.parameters += ",\"previous\":";
  record.parameters += previous ? settingsJson(previous->sink, previous->mode) : "null";
  record.parameters += "}";
  (void)audit.write(std::move(record), /*guards_action=*/false);
  if (changed) {
    spdlog::warn("audit: the audit sink changed since the last start: {} ({}) -> {} ({})",
                 previous->sink.empty() ? "none" : previous->sink, previous->mode,
                 now.sink.empty() ? "none" : now.sink, now.mode);
  }

  auto written = last.update([&](const std::optional<std::string>&) -> Result<std::string> {
    return settingsJson(now.sink, now.mode);
  });
  if (!written) return written.status();
  return Status::ok();
}

}  // namespace trellis::kernel::admin
