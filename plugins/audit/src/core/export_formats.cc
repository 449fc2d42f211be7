#include "core/export_formats.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstdio>
#include <ctime>
#include <optional>

namespace trellis::audit {
namespace {

using Poco::JSON::Object;

struct Fields {
  std::string type, action, outcome, tenant, resource, time, event_id, request_id, trace_id, prev;
  std::string actor_name, actor_principal, actor_role;
  uint64_t seq = 0;
};

std::string text(const Object::Ptr& o, const std::string& name) {
  if (!o || !o->has(name)) return "";
  auto v = o->get(name);
  return v.isString() ? v.extract<std::string>() : v.isEmpty() ? "" : v.toString();
}

Result<Fields> fieldsOf(std::string_view line) {
  Object::Ptr o;
  try {
    o = Poco::JSON::Parser().parse(std::string(line)).extract<Object::Ptr>();
  } catch (const Poco::Exception& e) {
    return Status::invalid("not an audit record (JSON): " + e.displayText());
  }
  if (!o || !o->has("seq") || !o->has("event_id") || !o->has("time")) {
    return Status::invalid("not an audit record: seq, event_id and time are required");
  }
  Fields f;
  f.type = text(o, "type");
  f.action = text(o, "action");
  f.outcome = text(o, "outcome");
  f.tenant = text(o, "tenant");
  f.resource = text(o, "resource");
  f.time = text(o, "time");
  f.event_id = text(o, "event_id");
  f.request_id = text(o, "request_id");
  f.trace_id = text(o, "trace_id");
  f.prev = text(o, "prev");
  auto actor = o->getObject("actor");
  f.actor_name = text(actor, "name");
  f.actor_principal = text(actor, "principal");
  f.actor_role = text(actor, "role");
  try {
    f.seq = o->getValue<uint64_t>("seq");
  } catch (const Poco::Exception&) {
    return Status::invalid("not an audit record: seq must be a number");
  }
  return f;
}

// "2026-12-04T05:18:34.123Z" -> Unix milliseconds; nullopt if it is not that shape.
std::optional<int64_t> unixMs(const std::string& t) {
  std::tm tm{};
  int ms = 0;
  if (t.size() != 24 || t[23] != 'Z' ||
      std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

// CEF header parts: '\' and '|' escaped; line breaks cannot appear there at all.
std::string cefHeader(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '|') out += '\\';
    out += (c == '\n' || c == '\r') ? ' ' : c;
  }
  return out;
}

// `s` with each of `specials` preceded by a backslash and line breaks written as \n and
// \r: CEF extension values ('\\' and '='), RFC 5424 PARAM-VALUEs ('"', '\\' and ']',
// §6.3.3; line breaks are allowed there but break line-oriented collectors, and the record
// in MSG keeps the exact value).
std::string backslashEscaped(std::string_view s, std::string_view specials) {
  std::string out;
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      if (specials.find(c) != std::string_view::npos) out += '\\';
      out += c;
    }
  }
  return out;
}
std::string cefValue(std::string_view s) {
  return backslashEscaped(s, "\\=");
}
std::string sdValue(std::string_view s) {
  return backslashEscaped(s, "\"\\]");
}

// RFC 5424 header fields are PRINTUSASCII without spaces, at most `max` long; "-" if empty.
std::string headerToken(std::string_view s, size_t max) {
  std::string out;
  for (char c : s.substr(0, max)) out += (c > 32 && c < 127) ? c : '_';
  return out.empty() ? "-" : out;
}

// CEF severity (0-10) and syslog severity (RFC 5424 §6.2.1) of an outcome.
int cefSeverity(const std::string& outcome) {
  if (outcome == "failure") return 7;
  if (outcome == "denied") return 6;
  return 3;
}
int syslogSeverity(const std::string& outcome) {
  if (outcome == "failure") return 3;  // error
  if (outcome == "denied") return 4;   // warning
  return 6;                            // informational
}

constexpr int kFacilityLogAudit = 13;

}  // namespace

Result<ExportFormat> parseExportFormat(std::string_view name) {
  if (name == "jsonl") return ExportFormat::kJsonLines;
  if (name == "cef") return ExportFormat::kCef;
  if (name == "syslog") return ExportFormat::kSyslog;
  return Status::invalid("format must be jsonl, cef or syslog, not \"" + std::string(name) + "\"");
}

Result<std::string> toCef(std::string_view line) {
  auto f = fieldsOf(line);
  if (!f) return f.status();
  std::string out = "CEF:0|Trellis|trellis-audit|1|" + cefHeader(f->type) + "|" +
                    cefHeader(f->action) + "|" + std::to_string(cefSeverity(f->outcome)) + "|";
  bool first = true;
  auto add = [&](std::string_view key, std::string_view value) {
    if (value.empty()) return;
    if (!first) out += ' ';
    first = false;
    out += key;
    out += '=';
    out += cefValue(value);
  };
  if (auto ms = unixMs(f->time)) add("rt", std::to_string(*ms));
  add("externalId", f->event_id);
  add("act", f->action);
  add("outcome", f->outcome);
  add("suser", f->actor_name);
  add("suid", f->actor_principal);
  add("spriv", f->actor_role);
  add("cn1Label", "seq");
  add("cn1", std::to_string(f->seq));
  add("cs1Label", "tenant");
  add("cs1", f->tenant.empty() ? "_system" : f->tenant);
  add("cs2Label", "resource");
  add("cs2", f->resource);
  add("cs3Label", "requestId");
  add("cs3", f->request_id);
  add("cs4Label", "traceId");
  add("cs4", f->trace_id);
  add("cs5Label", "prevHash");
  add("cs5", f->prev);
  return out;
}

Result<std::string> toSyslog(std::string_view line, std::string_view hostname) {
  auto f = fieldsOf(line);
  if (!f) return f.status();
  std::string out = "<" + std::to_string(kFacilityLogAudit * 8 + syslogSeverity(f->outcome)) +
                    ">1 " + headerToken(f->time, 64) + " " + headerToken(hostname, 255) +
                    " trellis-audit - " + headerToken(f->type, 32) + " [trellis@32473";
  auto param = [&](std::string_view name, std::string_view value) {
    out += ' ';
    out += name;
    out += "=\"";
    out += sdValue(value);
    out += '"';
  };
  param("tenant", f->tenant.empty() ? "_system" : f->tenant);
  param("seq", std::to_string(f->seq));
  param("event_id", f->event_id);
  param("action", f->action);
  param("outcome", f->outcome);
  param("actor", f->actor_name);
  out += "] \xEF\xBB\xBF";  // MSG-UTF8: BOM, then the record exactly as stored and chained
  out += line;
  return out;
}

std::string octetCounted(std::string_view message) {
  return std::to_string(message.size()) + " " + std::string(message);
}

Result<std::string> exportRecords(std::string_view lines, ExportFormat format,
                                  std::string_view hostname) {
  if (format == ExportFormat::kJsonLines) return std::string(lines);
  std::string out;
  while (!lines.empty()) {
    const size_t end = lines.find('\n');
    std::string_view line = lines.substr(0, end);
    lines.remove_prefix(end == std::string_view::npos ? lines.size() : end + 1);
    if (line.empty()) continue;
    auto one = format == ExportFormat::kCef ? toCef(line) : toSyslog(line, hostname);
    if (!one) return one.status();
    out += format == ExportFormat::kCef ? *one + "\n" : octetCounted(*one);
  }
  return out;
}

}  // namespace trellis::audit
