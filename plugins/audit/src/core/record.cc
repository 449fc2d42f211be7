#include "core/record.h"

#include <Poco/JSON/Parser.h>
#include <openssl/rand.h>

#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/canonical_json.h"
#include "core/ed25519.h"

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

Result<IncomingRecord> IncomingRecord::parse(std::string_view json) {
  if (json.size() > kMaxRecordBytes) {
    return Status::invalid("audit record of " + std::to_string(json.size()) +
                           " bytes is over the limit of " + std::to_string(kMaxRecordBytes));
  }
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

std::string buildRecord(const IncomingRecord& in, const RecordContext& ctx) {
  static const std::vector<std::string> kNone;
  const auto& sensitive = ctx.sensitive ? *ctx.sensitive : kNone;
  const auto& o = in.object;
  auto in_actor = o->has("actor") && o->get("actor").type() == typeid(Poco::JSON::Object::Ptr)
                      ? o->getObject("actor")
                      : Poco::JSON::Object::Ptr();
  Poco::Dynamic::Var parameters =
      o->has("parameters") ? o->get("parameters") : Poco::Dynamic::Var();
  if (parameters.isEmpty()) parameters = Poco::JSON::Object::Ptr(new Poco::JSON::Object());
  if (!sensitive.empty()) parameters = redact(parameters, ctx.hmac_key, sensitive);
  std::string resource = memberString(o, "resource");
  for (const auto& s : sensitive) {
    if (s == "resource") resource = sensitiveDigest(ctx.hmac_key, resource);
  }

  // Members in byte order, written directly: the canonical form without a second tree.
  std::string out;
  out.reserve(512);
  out += '{';
  auto str = [&out](std::string_view name, std::string_view value) {
    out += '"';
    out += name;
    out += "\":";
    appendJsonString(out, value);
    out += ',';
  };
  str("action", memberString(o, "action"));
  out += "\"actor\":{";
  str("name", memberString(in_actor, "name"));
  str("principal", memberString(in_actor, "principal"));
  out += "\"role\":";
  appendJsonString(out, memberString(in_actor, "role"));
  out += "},";
  str("event_id", ctx.event_id);
  out += "\"kernel_seq\":" + std::to_string(memberInt(o, "seq")) + ",";
  str("outcome", memberString(o, "outcome"));
  out += "\"parameters\":";
  appendCanonical(out, parameters);
  out += ',';
  str("prev", toHex(ctx.prev));
  str("request_id", memberString(o, "request_id"));
  str("resource", resource);
  out += "\"seq\":" + std::to_string(ctx.seq) + ",";
  out += "\"status\":" + std::to_string(memberInt(o, "status")) + ",";
  str("tenant", in.tenant);
  str("time", rfc3339Utc(ctx.time_ms));
  str("trace_id", memberString(o, "trace_id"));
  out += "\"type\":";
  appendJsonString(out, memberString(o, "type"));
  out += '}';
  return out;
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
