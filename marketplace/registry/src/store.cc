#include "store.h"

#include "trellis/marketplace/canonical_json.h"
#include "trellis/marketplace/encoding.h"

namespace trellis::registry {
namespace {

std::string chunkKey(std::string_view sha256, uint64_t n) {
  return "blob/" + std::string(sha256) + "/" + std::to_string(n);
}

}  // namespace

Result<Poco::JSON::Object::Ptr> parseStoredJson(std::string_view key, std::string_view value) {
  auto parsed = marketplace::parseJsonStrict(value);
  if (!parsed || parsed->type() != typeid(Poco::JSON::Object::Ptr)) {
    return Status::internal("stored value " + std::string(key) + " is not a JSON object");
  }
  return parsed->extract<Poco::JSON::Object::Ptr>();
}

Result<JsonEntry> Store::getJson(std::string_view key) const {
  auto e = kv_.get(key);
  if (!e) return e.status();
  auto parsed = parseStoredJson(key, e->value);
  if (!parsed) return parsed.status();
  return JsonEntry{*parsed, e->version};
}

Result<uint64_t> Store::putJson(std::string_view key, const Poco::JSON::Object::Ptr& value,
                                uint64_t expected_version) const {
  auto text = marketplace::canonicalJson(value);
  if (!text)
    return Status::internal("cannot encode " + std::string(key) + ": " + text.status().message());
  return kv_.put(key, *text, expected_version);
}

Status Store::remove(std::string_view key) const {
  Status s = kv_.remove(key);
  return s.code() == StatusCode::kNotFound ? Status::ok() : s;
}

Status Store::forEach(
    std::string_view prefix,
    const std::function<Status(std::string_view key, std::string_view value)>& fn) const {
  std::string after;
  for (;;) {
    size_t seen = 0;
    Status inner = Status::ok();
    Status s = kv_.list(prefix, after, 0, [&](std::string_view k, std::string_view v, uint64_t) {
      ++seen;
      after.assign(k);
      inner = fn(k, v);
      return inner.isOk();
    });
    if (!s) return s;
    if (!inner) return inner;
    if (seen == 0) return Status::ok();
  }
}

Result<uint64_t> Store::putBlob(std::string_view bytes) const {
  const std::string sha = marketplace::sha256Hex(bytes);
  const uint64_t chunks = chunkCount(bytes.size());
  for (uint64_t n = 0; n < chunks; ++n) {
    auto put = kv_.put(chunkKey(sha, n), bytes.substr(n * chunk_bytes_, chunk_bytes_));
    if (!put) return put.status();
  }
  return chunks;
}

Status Store::readBlob(std::string_view sha256, uint64_t size,
                       const std::function<Status(std::string_view chunk)>& fn) const {
  uint64_t total = 0;
  for (uint64_t n = 0; n < chunkCount(size); ++n) {
    auto e = kv_.get(chunkKey(sha256, n));
    if (!e) return e.status();
    total += e->value.size();
    if (total > size) break;
    if (Status s = fn(e->value); !s) return s;
  }
  if (total != size) {
    return Status::internal("stored blob " + std::string(sha256) + " has " + std::to_string(total) +
                            " bytes, expected " + std::to_string(size));
  }
  return Status::ok();
}

Result<std::string> Store::getBlob(std::string_view sha256, uint64_t size) const {
  std::string out;
  out.reserve(size);
  if (Status s = readBlob(sha256, size,
                          [&](std::string_view c) {
                            out.append(c);
                            return Status::ok();
                          });
      !s) {
    return s;
  }
  if (marketplace::sha256Hex(out) != sha256) {
    return Status::internal("stored blob " + std::string(sha256) + " does not match its hash");
  }
  return out;
}

Status Store::removeBlob(std::string_view sha256, uint64_t size) const {
  for (uint64_t n = 0; n < chunkCount(size); ++n) {
    if (Status s = remove(chunkKey(sha256, n)); !s) return s;
  }
  return Status::ok();
}

}  // namespace trellis::registry
