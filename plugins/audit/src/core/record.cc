#include "core/record.h"

#include <Poco/JSON/Parser.h>
#include <openssl/rand.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/canonical_json.h"
#include "core/ed25519.h"
#include "core/json_reader.h"

namespace trellis::audit {
namespace {

std::string memberString(const Poco::JSON::Object::Ptr& o, const std::string& name) {
  if (!o || !o->has(name)) return "";
  auto v = o->get(name);
  if (v.isEmpty()) return "";
  return v.isString() ? v.extract<std::string>() : v.convert<std::string>();
}

int64_t memberInt(const Poco::JSON::Object::Ptr& o, const std::string& name) {
  if (!o || !o->has(name)) return 0;
  try {
    return o->get(name).convert<int64_t>();
  } catch (const Poco::Exception&) {
    return 0;
  }
}

// Replaces, at any depth, the values of members named in `sensitive` with their digest.
Poco::Dynamic::Var redact(const Poco::Dynamic::Var& v, std::string_view key,
                          const std::vector<std::string>& sensitive) {
  if (v.type() == typeid(Poco::JSON::Object::Ptr)) {
    auto in = v.extract<Poco::JSON::Object::Ptr>();
    Poco::JSON::Object::Ptr out = new Poco::JSON::Object();
    for (const auto& [k, val] : *in) {
      bool hide = false;
      for (const auto& s : sensitive) hide = hide || s == k;
      if (hide && !val.isEmpty()) {
        std::string plain;
        if (val.isString()) {
          plain = val.extract<std::string>();
        } else {
          appendCanonical(plain, val);
        }
        out->set(k, sensitiveDigest(key, plain));
      } else {
        out->set(k, redact(val, key, sensitive));
      }
    }
    return out;
  }
  if (v.type() == typeid(Poco::JSON::Array::Ptr)) {
    auto in = v.extract<Poco::JSON::Array::Ptr>();
    Poco::JSON::Array::Ptr out = new Poco::JSON::Array();
    for (size_t i = 0; i < in->size(); ++i) {
      out->add(redact(in->get(static_cast<unsigned>(i)), key, sensitive));
    }
    return out;
  }
  return v;
}

}  // namespace

namespace {

// 10 random bytes for a UUID from a per-thread pool, refilled 4 KiB at a time: one
// RAND_bytes call per record cost about a tenth of an append.
void uuidRandom(unsigned char* out) {
  constexpr size_t kPool = 4096 - 4096 % 10;
  thread_local unsigned char pool[kPool];
  thread_local size_t used = kPool;
  if (used == kPool) {
    if (RAND_bytes(pool, static_cast<int>(kPool)) != 1) std::abort();
    used = 0;
  }
  std::memcpy(out, pool + used, 10);
  std::memset(pool + used, 0, 10);  // each byte is handed out once
  used += 10;
}

}  // namespace

std::string uuidV7(int64_t unix_ms) {
  unsigned char b[16];
  uuidRandom(b + 6);
  const auto ms = static_cast<uint64_t>(unix_ms);
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(ms >> (40 - 8 * i));
  b[6] = static_cast<unsigned char>(0x70 | (b[6] & 0x0f));  // version 7
  b[8] = static_cast<unsigned char>(0x80 | (b[8] & 0x3f));  // variant 10
  std::string hex = toHex(std::string_view(reinterpret_cast<char*>(b), sizeof b));
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20);
}

std::string rfc3339Utc(int64_t unix_ms) {
  const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t daysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

}  // namespace

std::optional<int64_t> recordTimeMs(std::string_view line) {
  // Canonical JSON escapes every quote inside a string, so `"time":"` is a member wherever
  // it occurs; the last one is the top-level one (nested objects sort before it).
  constexpr std::string_view kNeedle = "\"time\":\"";
  const size_t at = line.rfind(kNeedle);
  if (at == std::string_view::npos) return std::nullopt;
  // "2026-12-04T05:18:34.123Z" (rfc3339Utc)
  const std::string_view quoted = line.substr(at + kNeedle.size(), 25);
  if (quoted.size() != 25 || quoted[24] != '"') return std::nullopt;
  const std::string_view t = quoted.substr(0, 24);
  if (t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':' || t[19] != '.' ||
      t[23] != 'Z') {
    return std::nullopt;
  }
  auto field = [&](size_t pos, size_t len) -> std::optional<uint64_t> {
    uint64_t n = 0;
    const char* end = t.data() + pos + len;
    auto [p, ec] = std::from_chars(t.data() + pos, end, n);
    if (ec != std::errc() || p != end) return std::nullopt;
    return n;
  };
  auto y = field(0, 4), mo = field(5, 2), d = field(8, 2), h = field(11, 2), mi = field(14, 2),
       s = field(17, 2), ms = field(20, 3);
  if (!y || !mo || !d || !h || !mi || !s || !ms || *mo < 1 || *mo > 12 || *d < 1 || *d > 31) {
    return std::nullopt;
  }
  const int64_t days = daysFromCivil(static_cast<int64_t>(*y), static_cast<unsigned>(*mo),
                                     static_cast<unsigned>(*d));
  return ((days * 24 + static_cast<int64_t>(*h)) * 60 + static_cast<int64_t>(*mi)) * 60'000 +
         static_cast<int64_t>(*s) * 1000 + static_cast<int64_t>(*ms);
}

namespace {

Status tooBig(size_t size) {
  return Status::invalid("audit record of " + std::to_string(size) +
                         " bytes is over the limit of " + std::to_string(kMaxRecordBytes));
}

// A string member, or null (""); false (deferred) for any other type.
bool readString(JsonReader& r, std::string& field) {
  r.skipSpace();
  if (r.peek() == '"') return r.string(&field);
  if (r.peek() == 'n') {
    field.clear();
    return r.value(nullptr, nullptr, 2) != JsonKind::kInvalid;
  }
  return r.defer();
}

bool readInt(JsonReader& r, int64_t& field) {
  r.skipSpace();
  if (r.peek() == 'n') {
    field = 0;
    return r.value(nullptr, nullptr, 2) != JsonKind::kInvalid;
  }
  if (r.peek() != '-' && (r.peek() < '0' || r.peek() > '9')) return r.defer();
  long long v = 0;
  if (!r.int64(&v)) return false;
  field = v;
  return true;
}

// Reads the members of an object, calling member(name) positioned at each value.
template <typename Fn>
bool readMembers(JsonReader& r, Fn member) {
  if (!r.consume('{')) return r.fail("expected an object");
  if (r.consume('}')) return true;
  std::string name;
  for (;;) {
    r.skipSpace();
    if (!r.string(&name)) return false;
    if (r.lastStringHadNul()) return r.defer();
    if (!r.consume(':')) return r.fail("expected ':' after a member name");
    if (!member(name)) return false;
    if (r.consume(',')) continue;
    if (r.consume('}')) return true;
    return r.fail("expected ',' or '}' in an object");
  }
}

bool readActor(JsonReader& r, IncomingRecord& in) {
  in.actor_name.clear();
  in.actor_principal.clear();
  in.actor_role.clear();
  r.skipSpace();
  if (r.peek() != '{') return r.value(nullptr, nullptr, 2) != JsonKind::kInvalid;
  return readMembers(r, [&](const std::string& name) {
    if (name == "name") return readString(r, in.actor_name);
    if (name == "principal") return readString(r, in.actor_principal);
    if (name == "role") return readString(r, in.actor_role);
    return r.value(nullptr, nullptr, 3) != JsonKind::kInvalid;
  });
}

bool readRecord(JsonReader& r, std::string_view json, IncomingRecord& in) {
  return readMembers(r, [&](const std::string& name) {
    if (name == "tenant") return readString(r, in.tenant);
    if (name == "type") return readString(r, in.type);
    if (name == "action") return readString(r, in.action);
    if (name == "resource") return readString(r, in.resource);
    if (name == "outcome") return readString(r, in.outcome);
    if (name == "request_id") return readString(r, in.request_id);
    if (name == "trace_id") return readString(r, in.trace_id);
    if (name == "seq") return readInt(r, in.kernel_seq);
    if (name == "status") return readInt(r, in.status);
    if (name == "actor") return readActor(r, in);
    if (name == "parameters") {
      r.skipSpace();
      const size_t begin = r.offset();
      const JsonKind kind = r.value(nullptr, nullptr, 2);
      if (kind == JsonKind::kInvalid) return false;
      in.parameters = kind == JsonKind::kNull ? std::string()
                                              : std::string(json.substr(begin, r.offset() - begin));
      return true;
    }
    return r.value(nullptr, nullptr, 2) != JsonKind::kInvalid;
  });
}

}  // namespace

Result<IncomingRecord> IncomingRecord::parse(std::string_view json) {
  if (json.size() > kMaxRecordBytes) return tooBig(json.size());
  JsonReader r(json);
  IncomingRecord in;
  r.skipSpace();
  bool ok;
  if (r.peek() == '{') {
    ok = readRecord(r, json, in);
  } else {
    ok = r.value(nullptr, nullptr) != JsonKind::kInvalid;
    if (ok && r.atEnd()) return Status::invalid("an audit record is a JSON object");
  }
  // Poco's parser reads a byte 0xff as the end of its input: what follows it there is
  // Poco's to judge.
  if (ok && !r.atEnd()) ok = r.peek() == '\xff' ? r.defer() : r.fail("more after the record's end");
  if (ok) return in;
  if (r.deferred()) return parseReference(json);
  return Status::invalid("audit record is not JSON: " + r.error());
}

Result<IncomingRecord> IncomingRecord::parseReference(std::string_view json) {
  if (json.size() > kMaxRecordBytes) return tooBig(json.size());
  try {
    Poco::JSON::Parser parser;
    auto v = parser.parse(std::string(json));
    if (v.type() != typeid(Poco::JSON::Object::Ptr)) {
      return Status::invalid("an audit record is a JSON object");
    }
    IncomingRecord in;
    in.object = v.extract<Poco::JSON::Object::Ptr>();
    in.tenant = memberString(in.object, "tenant");
    return in;
  } catch (const Poco::Exception& e) {
    return Status::invalid("audit record is not JSON: " + e.displayText());
  }
}

std::string sensitiveDigest(std::string_view key, std::string_view value) {
  return "hmac-sha256:" + toHex(hmacSha256(key, value));
}

namespace {

// What a record line takes from its input: everything but the parameters and what
// RecordContext gives.
struct LineFields {
  std::string_view tenant, type, action, resource, outcome, request_id, trace_id;
  std::string_view actor_name, actor_principal, actor_role;
  int64_t kernel_seq = 0;
  int64_t status = 0;
};

// The canonical line: members in byte order, written directly instead of through a tree.
// `resource` is listed sensitive: its digest replaces it, once per listing. `parameters`
// appends the canonical parameters object.
template <typename AppendParameters>
std::string writeLine(const LineFields& f, const RecordContext& ctx, size_t extra,
                      AppendParameters&& parameters) {
  std::string resource_digest;
  std::string_view resource = f.resource;
  if (ctx.sensitive) {
    for (const auto& s : *ctx.sensitive) {
      if (s != "resource") continue;
      resource_digest = sensitiveDigest(ctx.hmac_key, resource);
      resource = resource_digest;
    }
  }
  char num[24];
  auto number = [&num](auto v) {
    return std::string_view(num,
                            static_cast<size_t>(std::to_chars(num, num + sizeof num, v).ptr - num));
  };
  std::string out;
  out.reserve(384 + extra + f.action.size() + f.resource.size());
  out += '{';
  auto str = [&out](std::string_view name, std::string_view value) {
    out += '"';
    out += name;
    out += "\":";
    appendJsonString(out, value);
    out += ',';
  };
  str("action", f.action);
  out += "\"actor\":{";
  str("name", f.actor_name);
  str("principal", f.actor_principal);
  out += "\"role\":";
  appendJsonString(out, f.actor_role);
  out += "},";
  str("event_id", ctx.event_id);
  if (!ctx.hmac_key_id.empty()) str("hmac_key", ctx.hmac_key_id);
  out += "\"kernel_seq\":";
  out += number(f.kernel_seq);
  out += ',';
  str("outcome", f.outcome);
  out += "\"parameters\":";
  parameters(out);
  out += ',';
  str("prev", toHex(ctx.prev));
  str("request_id", f.request_id);
  str("resource", resource);
  out += "\"seq\":";
  out += number(ctx.seq);
  out += ",\"status\":";
  out += number(f.status);
  out += ',';
  str("tenant", f.tenant);
  str("time", rfc3339Utc(ctx.time_ms));
  str("trace_id", f.trace_id);
  out += "\"type\":";
  appendJsonString(out, f.type);
  out += '}';
  return out;
}

}  // namespace

std::string buildRecordReference(const IncomingRecord& in, const RecordContext& ctx) {
  const auto& o = in.object;
  auto in_actor = o->has("actor") && o->get("actor").type() == typeid(Poco::JSON::Object::Ptr)
                      ? o->getObject("actor")
                      : Poco::JSON::Object::Ptr();
  Poco::Dynamic::Var parameters =
      o->has("parameters") ? o->get("parameters") : Poco::Dynamic::Var();
  if (parameters.isEmpty()) parameters = Poco::JSON::Object::Ptr(new Poco::JSON::Object());
  if (ctx.sensitive && !ctx.sensitive->empty()) {
    parameters = redact(parameters, ctx.hmac_key, *ctx.sensitive);
  }
  const std::string type = memberString(o, "type"), action = memberString(o, "action"),
                    resource = memberString(o, "resource"), outcome = memberString(o, "outcome"),
                    request_id = memberString(o, "request_id"),
                    trace_id = memberString(o, "trace_id"),
                    actor_name = memberString(in_actor, "name"),
                    actor_principal = memberString(in_actor, "principal"),
                    actor_role = memberString(in_actor, "role");
  const LineFields f{.tenant = in.tenant,
                     .type = type,
                     .action = action,
                     .resource = resource,
                     .outcome = outcome,
                     .request_id = request_id,
                     .trace_id = trace_id,
                     .actor_name = actor_name,
                     .actor_principal = actor_principal,
                     .actor_role = actor_role,
                     .kernel_seq = memberInt(o, "seq"),
                     .status = memberInt(o, "status")};
  return writeLine(f, ctx, 128, [&](std::string& out) { appendCanonical(out, parameters); });
}

std::string buildRecord(const IncomingRecord& in, const RecordContext& ctx) {
  if (in.object) return buildRecordReference(in, ctx);
  const LineFields f{.tenant = in.tenant,
                     .type = in.type,
                     .action = in.action,
                     .resource = in.resource,
                     .outcome = in.outcome,
                     .request_id = in.request_id,
                     .trace_id = in.trace_id,
                     .actor_name = in.actor_name,
                     .actor_principal = in.actor_principal,
                     .actor_role = in.actor_role,
                     .kernel_seq = in.kernel_seq,
                     .status = in.status};
  const bool redact = ctx.sensitive && !ctx.sensitive->empty();
  return writeLine(f, ctx, in.parameters.size(), [&](std::string& out) {
    if (in.parameters.empty()) {
      out += "{}";
      return;
    }
    JsonReader r(in.parameters);
    const JsonRedaction redaction{ctx.hmac_key, ctx.sensitive};
    // The text was checked when it was read: this pass cannot fail.
    r.value(&out, redact ? &redaction : nullptr, 2);
  });
}

std::string Checkpoint::signedBody() const {
  return "trellis-audit checkpoint v1\n" + origin + "\n" + std::to_string(size) + "\n" +
         toHex(root) + "\n" + toHex(chain) + "\n" + std::to_string(time_ms) + "\n";
}

std::string Checkpoint::toJson() const {
  std::string out = "{\"chain\":\"" + toHex(chain) + "\",\"key_id\":";
  appendJsonString(out, key_id);
  out += ",\"origin\":";
  appendJsonString(out, origin);
  out += ",\"root\":\"" + toHex(root) + "\",\"signature\":\"" + toBase64(signature) +
         "\",\"size\":" + std::to_string(size) + ",\"time\":\"" + rfc3339Utc(time_ms) +
         "\",\"time_ms\":" + std::to_string(time_ms) + "}";
  return out;
}

Result<Checkpoint> Checkpoint::fromJson(std::string_view json) {
  try {
    Poco::JSON::Parser parser;
    auto v = parser.parse(std::string(json));
    if (v.type() != typeid(Poco::JSON::Object::Ptr)) {
      return Status::invalid("a checkpoint is a JSON object");
    }
    auto o = v.extract<Poco::JSON::Object::Ptr>();
    Checkpoint cp;
    cp.origin = memberString(o, "origin");
    cp.key_id = memberString(o, "key_id");
    cp.size = o->getValue<uint64_t>("size");
    cp.time_ms = o->getValue<int64_t>("time_ms");
    auto root = hashFromHex(memberString(o, "root"));
    auto chain = hashFromHex(memberString(o, "chain"));
    auto sig = fromBase64(memberString(o, "signature"));
    if (!root || !chain) return Status::invalid("a checkpoint's root and chain are 64 hex digits");
    if (!sig) return Status::invalid("a checkpoint's signature is base64");
    cp.root = *root;
    cp.chain = *chain;
    cp.signature = *sig;
    return cp;
  } catch (const Poco::Exception& e) {
    return Status::invalid("not a checkpoint: " + e.displayText());
  }
}

std::string keyId(std::string_view public_key) {
  return toHex(view(sha256(public_key))).substr(0, 16);
}

std::string originOf(std::string_view tenant) {
  return "trellis-audit/" + std::string(tenant.empty() ? "_system" : tenant);
}

bool verifyCheckpoint(const Checkpoint& cp, std::string_view public_key) {
  return ed25519Verify(public_key, cp.signedBody(), cp.signature);
}

}  // namespace trellis::audit
