#include "admin/audit_stream.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <sstream>

#include "runtime/call_context.h"
#include "services/calls/service_registry.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/util/json.h"

namespace trellis::kernel::admin {
namespace {

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool isSecretName(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (std::string_view word : {"key", "token", "secret", "password", "passwd", "credential",
                                "private", "sha256", "authorization", "cookie"}) {
    if (name.find(word) != std::string::npos) return true;
  }
  return false;
}

void redact(Poco::Dynamic::Var& v, int depth) {
  if (depth > 16) {
    v = "[redacted: nested too deeply]";
    return;
  }
  if (v.type() == typeid(Poco::JSON::Object::Ptr)) {
    auto o = v.extract<Poco::JSON::Object::Ptr>();
    std::vector<std::string> names;
    o->getNames(names);
    for (const auto& n : names) {
      if (isSecretName(n)) {
        o->set(n, "[redacted]");
      } else {
        Poco::Dynamic::Var child = o->get(n);
        redact(child, depth + 1);
        o->set(n, child);
      }
    }
  } else if (v.type() == typeid(Poco::JSON::Array::Ptr)) {
    auto a = v.extract<Poco::JSON::Array::Ptr>();
    for (size_t i = 0; i < a->size(); ++i) {
      Poco::Dynamic::Var child = a->get(static_cast<unsigned>(i));
      redact(child, depth + 1);
      a->set(static_cast<unsigned>(i), child);
    }
  }
}

}  // namespace

std::string redactedParameters(std::string_view json) {
  if (json.empty()) return "{}";
  constexpr size_t kMaxParameters = 16 * 1024;
  const std::string summary = "{\"body_bytes\":" + std::to_string(json.size()) + "}";
  if (json.size() > kMaxParameters) return summary;
  try {
    Poco::Dynamic::Var v = Poco::JSON::Parser().parse(std::string(json));
    if (v.type() != typeid(Poco::JSON::Object::Ptr)) return summary;
    redact(v, 0);
    std::ostringstream out;
    v.extract<Poco::JSON::Object::Ptr>()->stringify(out);
    return out.str();
  } catch (const Poco::Exception&) {
    return summary;  // a Lua policy, or junk: its size says what happened, not its text
  }
}

namespace {
constexpr std::string_view kActionMember = "{\"action\":";
constexpr std::string_view kResourceMember = ",\"resource\":";
constexpr std::string_view kDetailsMember = ",\"details\":";
}  // namespace

std::string pluginRecordPayload(std::string_view action, std::string_view resource,
                                std::string_view details_json) {
  std::string out;
  out.reserve(kActionMember.size() + action.size() + kResourceMember.size() + resource.size() +
              kDetailsMember.size() + details_json.size() + 8);
  out += kActionMember;
  util::appendJsonString(out, action);
  out += kResourceMember;
  util::appendJsonString(out, resource);
  out += kDetailsMember;
  out += details_json;
  out += '}';
  return out;
}

std::optional<PluginRecordHead> readPluginRecordHead(std::string_view payload) {
  if (!payload.starts_with(kActionMember)) return std::nullopt;
  size_t pos = kActionMember.size();
  // A member's string value at `pos`, then the start of the member after it, as
  // pluginRecordPayload writes them; `pos` ends past both.
  auto valueThen = [&](std::string& value, std::string_view next) {
    if (!util::readJsonString(payload, pos, value) || payload.substr(pos, next.size()) != next) {
      return false;
    }
    pos += next.size();
    return true;
  };
  PluginRecordHead head;
  if (!valueThen(head.action, kResourceMember) || !valueThen(head.resource, kDetailsMember)) {
    return std::nullopt;
  }
  return head;
}

std::string AuditStream::toJson(const AuditRecord& r, uint64_t seq, int64_t time_ms) {
  std::string out;
  out.reserve(256 + r.principal.size() + r.name.size() + r.action.size() + r.resource.size() +
              r.tenant.size() + r.parameters.size() + r.request_id.size() + r.trace_id.size());
  out += "{\"seq\":";
  out += std::to_string(seq);
  out += ",\"time_ms\":";
  out += std::to_string(time_ms);
  auto field = [&out](std::string_view name, std::string_view value) {
    out += ",\"";
    out += name;
    out += "\":";
    util::appendJsonString(out, value);
  };
  field("type", r.type);
  out += ",\"actor\":{\"principal\":";
  util::appendJsonString(out, r.principal);
  out += ",\"name\":";
  util::appendJsonString(out, r.name);
  out += ",\"role\":";
  util::appendJsonString(out, r.role);
  out += "}";
  field("action", r.action);
  field("resource", r.resource);
  field("tenant", r.tenant);
  out += ",\"parameters\":";
  out += r.parameters.empty() ? std::string_view("{}") : std::string_view(r.parameters);
  field("outcome", r.outcome);
  out += ",\"status\":";
  out += std::to_string(r.status);
  field("request_id", r.request_id);
  field("trace_id", r.trace_id);
  out += '}';
  return out;
}

AuditStream::AuditStream(Options options, services::ServiceRegistry& services,
                         metrics::MetricsRegistry& metrics)
    : options_(std::move(options)), services_(services), metrics_(metrics) {
  written_ =
      &metrics_
           .counter("trellis_audit_records_total", "Audit records the sink stored (audit.v1)", {})
           .labels({});
  failed_ =
      &metrics_
           .counter(
               "trellis_audit_sink_failures_total",
               "Audit records the sink did not store when first offered (no sink, or it failed)",
               {})
           .labels({});
  dropped_ = &metrics_
                  .counter("trellis_audit_dropped_records_total",
                           "Audit records lost because the backlog for the sink was full", {})
                  .labels({});
  backlog_gauge_ = &metrics_
                        .gauge("trellis_audit_backlog_records",
                               "Audit records waiting for the sink (kept up to 10000)", {})
                        .labels({});
  refused_ = &metrics_
                  .counter("trellis_audit_refused_actions_total",
                           "Admin actions refused because their audit record was not stored "
                           "(on_sink_failure: block)",
                           {})
                  .labels({});
}

Status AuditStream::deliver(const std::string& json) {
  auto lease = services_.acquire(kAuditService);
  if (!lease) return Status::unavailable("no active plugin provides audit.v1");
  runtime::PluginInstance* sink = lease->plugin();
  if (!sink->isSystemPlugin()) {
    return Status::unavailable(sink->id() + " provides audit.v1 but is not a system plugin");
  }
  if (!options_.sink.empty() && sink->id() != options_.sink) {
    return Status::unavailable("audit.v1 is provided by " + sink->id() +
                               ", not by the configured sink " + options_.sink);
  }
  const runtime::ServiceMethod* write = nullptr;
  if (auto s = sink->service_methods.find(kAuditService); s != sink->service_methods.end()) {
    if (auto m = s->second.find(kAuditWriteMethod); m != s->second.end()) write = &m->second;
  }
  if (!write) return Status::unavailable(sink->id() + " has no audit.v1 method \"write\"");
  const services::TraceContext trace = services::TraceContext::root();
  trellis_ctx call;
  call.plugin = sink;
  call.trace = &trace;
  call.phase = runtime::Phase::kService;
  call.caller = "kernel";
  trellis_service_reply reply;
  call.reply = &reply;
  trellis_status status = TRELLIS_INTERNAL;
  {
    runtime::CallScope scope(&call);
    try {
      status = write->fn(write->user, &call, trellis_str{json.data(), json.size()}, &reply);
    } catch (...) {
      call.error = "exception escaped audit.v1.write";
    }
  }
  if (status != TRELLIS_OK) {
    return Status::unavailable("audit sink " + sink->id() + " did not store the record" +
                               (call.error.empty() ? "" : ": " + call.error));
  }
  return Status::ok();
}

Status AuditStream::write(AuditRecord record, bool guards_action) {
  std::lock_guard lock(mu_);
  std::string json = toJson(record, ++seq_, nowMs());
  // Records that found no sink earlier (the sink still starting, or down in degrade mode)
  // go first, so the sink sees them all and in order.
  Status s = Status::ok();
  while (!backlog_.empty() && (s = deliver(backlog_.front()))) {
    backlog_.pop_front();
    written_->add(1);
  }
  backlog_gauge_->set(static_cast<double>(backlog_.size()));
  if (s) s = deliver(json);
  if (s) {
    written_->add(1);
    return s;
  }
  failed_->add(1);
  const bool refuse = guards_action && blocking();
  // A sink that is down fails every record: one warning per action per 10 s says so
  // without a flood, and a burst of one action does not hide that another was lost too.
  // Past kWarnedActions distinct actions (plugins name their own), the rest share a slot.
  const auto now = std::chrono::steady_clock::now();
  constexpr size_t kWarnedActions = 64;
  const bool known = last_warning_.contains(record.action);
  auto& last = last_warning_[known || last_warning_.size() < kWarnedActions ? record.action : "*"];
  if (refuse || now - last > std::chrono::seconds(10)) {
    last = now;
    spdlog::warn("audit: record {} ({}) not stored: {}{}", seq_, record.action, s.message(),
                 refuse ? "; the action is refused (audit.on_sink_failure: block)" : "");
  }
  if (refuse) {
    refused_->add(1);
    return Status::unavailable("the audit record of this action could not be stored (" +
                               s.message() +
                               "); nothing was changed (audit.on_sink_failure: block)");
  }
  // Kept for the sink's return, within a bound; past it the oldest is lost and counted.
  backlog_.push_back(std::move(json));
  if (backlog_.size() > kMaxBacklog) {
    backlog_.pop_front();
    dropped_->add(1);
  }
  backlog_gauge_->set(static_cast<double>(backlog_.size()));
  return Status::ok();
}

AuditStream::~AuditStream() {
  if (bus_) bus_->unsubscribe(subscription_);
}

void AuditStream::attach(events::EventBus& bus) {
  bus_ = &bus;
  subscription_ = bus.subscribe("audit.*", [this](const events::Event& e) {
    AuditRecord r;
    r.type = e.publisher == "kernel" ? "event" : "plugin";
    r.principal = e.publisher;
    r.action = e.topic.substr(6);  // after "audit."
    r.tenant = e.tenant;
    r.parameters = e.payload.empty() ? "{}" : e.payload;
    r.outcome = "recorded";
    if (auto trace = services::TraceContext::restore(e.traceparent, e.tracestate)) {
      r.trace_id = std::string(trace->traceId());
    }
    if (r.type == "plugin") {
      if (auto head = readPluginRecordHead(r.parameters)) {
        r.action = std::move(head->action);
        r.resource = std::move(head->resource);
        (void)write(std::move(r), false);
        return;
      }
    }
    // Resource: what the event is about, when its payload names it.
    try {
      auto o = Poco::JSON::Parser().parse(r.parameters).extract<Poco::JSON::Object::Ptr>();
      for (const char* k : {"resource", "plugin", "sandbox"}) {
        if (o->has(k) && o->get(k).isString()) {
          r.resource = o->getValue<std::string>(k);
          break;
        }
      }
      if (o->has("action") && o->get("action").isString() && r.type == "plugin") {
        r.action = o->getValue<std::string>("action");
      }
    } catch (const Poco::Exception&) {
      r.parameters = "{}";
    }
    (void)write(std::move(r), false);
  });
}

}  // namespace trellis::kernel::admin
