#include "review_rules.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <charconv>
#include <vector>

#include "core/canonical_json.h"
#include "core/hash.h"

namespace trellis::audit {
namespace {

constexpr std::string_view kRulePrefix = "rule/";

std::string ruleKey(std::string_view log, std::string_view name) {
  return std::string(kRulePrefix) + std::string(log) + "/" + std::string(name);
}

// The tenant a log name stands for ("" for "_system").
std::string tenantOf(std::string_view log) {
  return log == "_system" ? std::string() : std::string(log);
}

std::string chunkName(std::string_view log, std::string_view name) {
  return std::string(log) + "/" + std::string(name) + ".lua";
}

// A stored line's top-level string member: canonical JSON escapes every quote inside a
// string, so `"name":"` is a member wherever it occurs; `last` picks the top-level one
// among members that nested objects may repeat (they sort before it, see record.h).
std::optional<std::string_view> member(std::string_view line, std::string_view key, bool last) {
  const std::string needle = "\"" + std::string(key) + "\":";
  const size_t at = last ? line.rfind(needle) : line.find(needle);
  if (at == std::string_view::npos) return std::nullopt;
  size_t start = at + needle.size(), end = start;
  if (start < line.size() && line[start] == '"') {
    end = line.find('"', start + 1);
    if (end == std::string_view::npos) return std::nullopt;
    return line.substr(start + 1, end - start - 1);
  }
  while (end < line.size() && line[end] >= '0' && line[end] <= '9') ++end;
  return line.substr(start, end - start);
}

std::optional<uint64_t> number(std::string_view text) {
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return n;
}

// {"log","time_ms","record"}: what on_record receives.
std::string ruleInput(std::string_view log, int64_t time_ms, std::string_view line) {
  std::string in = "{\"log\":";
  appendJsonString(in, log);
  in += ",\"time_ms\":" + std::to_string(time_ms) + ",\"record\":";
  in += line;
  in += "}";
  return in;
}

// The alert as published and as a dry run lists it: the record it concerns, and the rule's value.
std::string alertJson(std::string_view rule, std::string_view log, std::string_view line,
                      int64_t time_ms, std::string_view alert) {
  std::string out = "{\"rule\":";
  appendJsonString(out, rule);
  out += ",\"log\":";
  appendJsonString(out, log);
  auto seq = member(line, "seq", true);
  out += ",\"seq\":" + std::string(seq && number(*seq) ? *seq : "0");
  out += ",\"event_id\":";
  appendJsonString(out, member(line, "event_id", false).value_or(""));
  out += ",\"time_ms\":" + std::to_string(time_ms) + ",\"alert\":";
  out += alert;
  out += "}";
  return out;
}

}  // namespace

bool ReviewRules::isRuleName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool ReviewRules::isLogName(std::string_view log) {
  return !log.empty() && log.size() <= 128 && std::all_of(log.begin(), log.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

Status ReviewRules::load(InitContext& ctx) {
  auto alerts = ctx.counter("audit_review_alerts_total", "Alerts raised by review rules");
  if (!alerts) return alerts.status();
  auto failures = ctx.counter("audit_review_rule_failures_total",
                              "Review rule calls that failed or were stopped by their budget");
  if (!failures) return failures.status();
  alerts_metric_ = *alerts;
  failures_metric_ = *failures;

  std::vector<std::pair<std::string, std::string>> stored;  // key, value
  std::string after;
  for (;;) {
    size_t got = 0;
    Status s =
        ctx.kv().list(kRulePrefix, after, 0, [&](std::string_view k, std::string_view v, uint64_t) {
          stored.emplace_back(k, v);
          after = std::string(k);
          ++got;
          return true;
        });
    if (!s) return s;
    if (got == 0) break;
  }
  std::lock_guard lock(mu_);
  for (const auto& [key, value] : stored) {
    const std::string_view rest = std::string_view(key).substr(kRulePrefix.size());
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) continue;
    const std::string log(rest.substr(0, slash)), name(rest.substr(slash + 1));
    Rule rule;
    try {
      auto o = Poco::JSON::Parser().parse(value).extract<Poco::JSON::Object::Ptr>();
      rule.source = o->getValue<std::string>("source");
      rule.updated_ms = o->optValue<int64_t>("updated_ms", 0);
      rule.updated_by = o->optValue<std::string>("updated_by", "");
    } catch (const std::exception&) {
      return Status::internal("stored review rule " + key + " is not readable");
    }
    ScriptOptions options = kRuleBudget;
    options.name = chunkName(log, name);
    auto script = ctx.loadScript(rule.source, options);
    if (script) {
      rule.script = script->release();
    } else {
      rule.state = "failed";
      rule.error = script.status().message();
      ctx.warn("audit: review rule " + log + "/" + name + " does not load: " + rule.error);
    }
    rules_[log][name] = std::move(rule);
  }
  updateObserving();
  return Status::ok();
}

Result<std::string> ReviewRules::put(const Context& ctx, std::string_view log,
                                     std::string_view name, std::string_view source,
                                     int64_t now_ms) {
  if (!isLogName(log)) return Status::invalid("a log is a tenant id or _system");
  if (!isRuleName(name)) return Status::invalid("a rule name is 1 to 64 bytes of [a-z0-9_-]");
  ScriptOptions options = kRuleBudget;
  options.name = chunkName(log, name);
  auto script = ctx.loadScript(source, options);
  if (!script) return Status::invalid("the rule does not load: " + script.status().message());
  // A rule without on_record would fail on every record: refuse it now.
  if (auto probe = script->call("on_record", "null");
      !probe && probe.status().code() == StatusCode::kNotFound) {
    return Status::invalid("the rule must define a global function on_record(input)");
  }
  // The probe may have touched the rule's state: the stored rule starts from a fresh one.
  auto fresh = ctx.loadScript(source, options);
  if (!fresh) return Status::invalid("the rule does not load: " + fresh.status().message());
  Rule rule;
  rule.source = std::string(source);
  rule.updated_ms = now_ms;
  rule.updated_by = std::string(ctx.principal());
  std::string stored = "{\"source\":";
  appendJsonString(stored, source);
  stored += ",\"updated_by\":";
  appendJsonString(stored, rule.updated_by);
  stored += ",\"updated_ms\":" + std::to_string(now_ms) + "}";
  if (auto s = ctx.kv().put(ruleKey(log, name), stored, TRELLIS_KV_ANY_VERSION); !s) {
    return Status::unavailable("the rule is not stored: " + s.status().message());
  }
  std::string parameters = "{\"rule\":";
  appendJsonString(parameters, name);
  parameters += ",\"source_sha256\":\"" + toHex(sha256(source)) + "\"}";
  if (auto seq =
          sink_.recordOwn(ctx, tenantOf(log), "audit.rule", "audit.rule.set", parameters, now_ms);
      !seq) {
    ctx.warn("audit: the change of review rule " + std::string(log) + "/" + std::string(name) +
             " is stored but not recorded: " + seq.status().message());
  }
  rule.script = fresh->release();
  std::lock_guard lock(mu_);
  Rule& slot = rules_[std::string(log)][std::string(name)];
  if (slot.script != TRELLIS_HANDLE_NONE) (void)ctx.closeHandle(slot.script);
  slot = std::move(rule);
  updateObserving();
  return ruleJson(log, name, slot);
}

Status ReviewRules::remove(const Context& ctx, std::string_view log, std::string_view name,
                           int64_t now_ms) {
  {
    std::lock_guard lock(mu_);
    auto l = rules_.find(log);
    if (l == rules_.end() || l->second.find(name) == l->second.end()) {
      return Status::notFound("log " + std::string(log) + " has no review rule " +
                              std::string(name));
    }
  }
  if (auto s = ctx.kv().remove(ruleKey(log, name)); !s && s.code() != StatusCode::kNotFound) {
    return Status::unavailable("the rule is not deleted: " + s.message());
  }
  std::string parameters = "{\"rule\":";
  appendJsonString(parameters, name);
  parameters += "}";
  if (auto seq = sink_.recordOwn(ctx, tenantOf(log), "audit.rule", "audit.rule.delete", parameters,
                                 now_ms);
      !seq) {
    ctx.warn("audit: the deletion of review rule " + std::string(log) + "/" + std::string(name) +
             " is not recorded: " + seq.status().message());
  }
  std::lock_guard lock(mu_);
  auto l = rules_.find(log);
  if (l == rules_.end()) return Status::ok();
  if (auto r = l->second.find(name); r != l->second.end()) {
    if (r->second.script != TRELLIS_HANDLE_NONE) (void)ctx.closeHandle(r->second.script);
    l->second.erase(r);
  }
  if (l->second.empty()) rules_.erase(l);
  updateObserving();
  return Status::ok();
}

std::string ReviewRules::ruleJson(std::string_view log, std::string_view name, const Rule& r) {
  std::string out = "{\"name\":";
  appendJsonString(out, name);
  out += ",\"log\":";
  appendJsonString(out, log);
  out += ",\"state\":";
  appendJsonString(out, r.state);
  out += ",\"error\":";
  appendJsonString(out, r.error);
  out += ",\"evaluated\":" + std::to_string(r.evaluated) +
         ",\"alerts\":" + std::to_string(r.alerts) + ",\"errors\":" + std::to_string(r.errors) +
         ",\"updated_ms\":" + std::to_string(r.updated_ms) + ",\"updated_by\":";
  appendJsonString(out, r.updated_by);
  out += ",\"source\":";
  appendJsonString(out, r.source);
  out += "}";
  return out;
}

std::string ReviewRules::listJson(std::string_view log) const {
  std::lock_guard lock(mu_);
  std::string out = "{\"rules\":[";
  if (auto l = rules_.find(log); l != rules_.end()) {
    bool first = true;
    for (const auto& [name, rule] : l->second) {
      if (!first) out += ",";
      first = false;
      out += ruleJson(log, name, rule);
    }
  }
  return out + "]}";
}

void ReviewRules::updateObserving() {
  sink_.observe(!rules_.empty());
}

void ReviewRules::review(const Context& ctx) {
  for (;;) {
    {
      std::unique_lock turn(review_mu_, std::try_to_lock);
      if (!turn) return;  // the reviewing thread takes this thread's records too
      for (auto batch = sink_.takeAppended(); !batch.empty(); batch = sink_.takeAppended()) {
        for (const auto& a : batch) evaluate(ctx, logName(a.tenant), a.line);
      }
    }
    // Records stored after the last take but before the unlock found the turn taken.
    if (!sink_.hasAppended()) return;
  }
}

void ReviewRules::evaluate(const Context& ctx, std::string_view log, std::string_view line) {
  std::lock_guard lock(mu_);
  auto l = rules_.find(log);
  if (l == rules_.end()) return;
  const int64_t time_ms = recordTimeMs(line).value_or(0);
  const std::string input = ruleInput(log, time_ms, line);
  for (auto& [name, rule] : l->second) {
    if (rule.state != "active") continue;
    ++rule.evaluated;
    auto out = ctx.callScript(rule.script, "on_record", input);
    if (!out) {
      reportFailure(ctx, log, name, rule, out.status());
      continue;
    }
    rule.timeouts_in_row = 0;
    if (*out == "null") continue;
    ++rule.alerts;
    if (alerts_metric_) (void)ctx.record(*alerts_metric_, 1);
    if (Status s = ctx.publish(kAlertTopic, alertJson(name, log, line, time_ms, *out)); !s) {
      ctx.warn("audit: review rule " + std::string(log) + "/" + name +
               " raised an alert that was not published: " + s.message());
    }
  }
}

void ReviewRules::reportFailure(const Context& ctx, std::string_view log, std::string_view name,
                                Rule& rule, const Status& s) {
  ++rule.errors;
  rule.error = s.message();
  if (failures_metric_) (void)ctx.record(*failures_metric_, 1);
  // Past its budget, a rule would cost every append that much again: it stops here. A
  // wall-time overrun may be the machine's load rather than the rule, so only a run of them.
  if (s.code() == StatusCode::kTimeout) ++rule.timeouts_in_row;
  const bool suspend = s.code() == StatusCode::kQuotaExceeded ||
                       s.code() == StatusCode::kNotFound ||
                       rule.timeouts_in_row >= kTimeoutsToSuspend;
  if (suspend) rule.state = "suspended";
  const std::string who = std::string(log) + "/" + std::string(name);
  ctx.warn("audit: review rule " + who + (suspend ? " suspended: " : " failed: ") + s.message());
  std::string event = "{\"rule\":";
  appendJsonString(event, name);
  event += ",\"log\":";
  appendJsonString(event, log);
  event += ",\"suspended\":";
  event += suspend ? "true" : "false";
  event += ",\"error\":";
  appendJsonString(event, s.message());
  event += "}";
  (void)ctx.publish(kFailureTopic, event);
}

Result<std::string> ReviewRules::dryRun(const Context& ctx, std::string_view log,
                                        std::string_view source, int64_t from_ms,
                                        int64_t to_ms) const {
  if (!isLogName(log)) return Status::invalid("a log is a tenant id or _system");
  ScriptOptions options = kRuleBudget;
  options.name = chunkName(log, "dry-run");
  auto script = ctx.loadScript(source, options);
  if (!script) return Status::invalid("the rule does not load: " + script.status().message());
  const std::string tenant = tenantOf(log);
  std::string alerts;
  uint64_t scanned = 0, next = 1;
  bool truncated = false;
  while (!truncated) {
    auto range = sink_.records(tenant, next, 1000);
    if (range.count == 0) break;
    next = range.first + range.count;
    size_t start = 0;
    for (uint64_t i = 0; i < range.count; ++i) {
      size_t end = range.lines.find('\n', start);
      if (end == std::string::npos) end = range.lines.size();
      const std::string_view line = std::string_view(range.lines).substr(start, end - start);
      start = end + 1;
      const int64_t time_ms = recordTimeMs(line).value_or(0);
      if (time_ms < from_ms || time_ms >= to_ms) continue;
      if (scanned == kMaxDryRunRecords) {
        truncated = true;
        break;
      }
      ++scanned;
      auto out = script->call("on_record", ruleInput(log, time_ms, line));
      if (!out) {
        return Status::invalid("the rule failed on record " +
                               std::string(member(line, "seq", true).value_or("?")) + ": " +
                               out.status().message());
      }
      if (*out == "null") continue;
      if (!alerts.empty()) alerts += ",";
      alerts += alertJson("dry-run", log, line, time_ms, *out);
    }
  }
  std::string body = "{\"log\":";
  appendJsonString(body, log);
  body += ",\"records\":" + std::to_string(scanned) + ",\"alerts\":[" + alerts +
          "],\"truncated\":" + (truncated ? "true" : "false") + "}";
  return body;
}

}  // namespace trellis::audit
