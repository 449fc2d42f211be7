#include "metadata.h"

#include "records.h"
#include "trellis/marketplace/encoding.h"

namespace trellis::registry {
namespace {

using Poco::JSON::Object;

constexpr std::string_view kMetaKey = "meta/signed";
constexpr int kCasAttempts = 16;

}  // namespace

struct Metadata::Current {
  uint64_t index_version = 0;
  std::string index_sha256;
  uint64_t index_length = 0;
  int64_t index_expires = 0;
  uint64_t timestamp_version = 0;
  int64_t timestamp_expires = 0;
  std::string timestamp;
  uint64_t kv_version = Kv::kAbsent;

  Object::Ptr toJson() const {
    Object::Ptr o = new Object;
    o->set("index_version", static_cast<Poco::UInt64>(index_version));
    o->set("index_sha256", index_sha256);
    o->set("index_length", static_cast<Poco::UInt64>(index_length));
    o->set("index_expires", static_cast<Poco::Int64>(index_expires));
    o->set("timestamp_version", static_cast<Poco::UInt64>(timestamp_version));
    o->set("timestamp_expires", static_cast<Poco::Int64>(timestamp_expires));
    o->set("timestamp", timestamp);
    return o;
  }
  static Result<Current> load(const Store& store) {
    auto stored = store.getJson(kMetaKey);
    if (!stored) {
      if (stored.status().code() == StatusCode::kNotFound) return Current{};
      return stored.status();
    }
    const Object& o = *stored->value;
    try {
      Current c;
      c.index_version = o.getValue<Poco::UInt64>("index_version");
      c.index_sha256 = o.getValue<std::string>("index_sha256");
      c.index_length = o.getValue<Poco::UInt64>("index_length");
      c.index_expires = o.getValue<Poco::Int64>("index_expires");
      c.timestamp_version = o.getValue<Poco::UInt64>("timestamp_version");
      c.timestamp_expires = o.getValue<Poco::Int64>("timestamp_expires");
      c.timestamp = o.getValue<std::string>("timestamp");
      c.kv_version = stored->version;
      return c;
    } catch (const Poco::Exception& e) {
      return Status::internal("stored metadata pointer is corrupt: " + e.displayText());
    }
  }
};

Result<marketplace::Index> Metadata::build(const Store& store) const {
  marketplace::Index index;
  Status s = store.forEach("ns/", [&](std::string_view key, std::string_view value) {
    auto stored = parseStoredJson(key, value);
    if (!stored) return stored.status();
    std::string ns(key.substr(3));
    auto keys = decodeKeys(ns, *stored);
    if (!keys) return keys.status();
    index.namespaces[ns] = std::move(*keys);
    return Status::ok();
  });
  if (!s) return s;
  s = store.forEach("pkg/", [&](std::string_view key, std::string_view value) {
    auto stored = parseStoredJson(key, value);
    if (!stored) return stored.status();
    auto v = decodeVersion(*stored);
    if (!v) return v.status();
    index.packages[v->id][v->version] = std::move(v->record);
    return Status::ok();
  });
  if (!s) return s;
  return index;
}

Result<Metadata::Current> Metadata::refresh(const Store& store, marketplace::UnixSeconds now,
                                            bool force) const {
  const marketplace::PrivateKey& index_key =
      config_.index_key ? *config_.index_key : *config_.timestamp_key;
  for (int attempt = 0; attempt < kCasAttempts; ++attempt) {
    auto cur = Current::load(store);
    if (!cur) return cur.status();
    const bool index_stale = force || cur->index_version == 0 ||
                             cur->index_expires - now < config_.index_expiry_seconds / 2;
    const bool ts_stale =
        index_stale || cur->timestamp_expires - now < config_.timestamp_expiry_seconds / 2;
    if (!ts_stale) return cur;

    Current next = *cur;
    std::string index_bytes;
    if (index_stale) {
      auto index = build(store);
      if (!index) return index.status();
      index->version = cur->index_version + 1;
      index->expires = now + config_.index_expiry_seconds;
      auto signed_index = marketplace::signIndex(*index, {&index_key});
      if (!signed_index) return signed_index.status();
      index_bytes = std::move(*signed_index);
      if (auto put = store.putBlob(index_bytes); !put) return put.status();
      next.index_version = index->version;
      next.index_sha256 = marketplace::sha256Hex(index_bytes);
      next.index_length = index_bytes.size();
      next.index_expires = index->expires;
    } else {
      auto bytes = store.getBlob(cur->index_sha256, cur->index_length);
      if (!bytes) return bytes.status();
      index_bytes = std::move(*bytes);
    }
    next.timestamp_version = cur->timestamp_version + 1;
    next.timestamp_expires = now + config_.timestamp_expiry_seconds;
    auto ts = marketplace::signTimestamp(index_bytes, next.timestamp_version,
                                         next.timestamp_expires, {config_.timestamp_key.get()});
    if (!ts) return ts.status();
    next.timestamp = std::move(*ts);

    auto put = store.putJson(kMetaKey, next.toJson(), cur->kv_version);
    if (!put) {
      if (put.status().code() == StatusCode::kConflict) continue;  // someone else moved it
      return put.status();
    }
    next.kv_version = *put;
    // The previous index is no longer named by any timestamp.
    if (index_stale && cur->index_version != 0 && cur->index_sha256 != next.index_sha256) {
      (void)store.removeBlob(cur->index_sha256, cur->index_length);
    }
    return next;
  }
  return Status::unavailable("the signed index is being updated concurrently; retry");
}

Result<uint64_t> Metadata::republish(const Store& store, marketplace::UnixSeconds now) const {
  auto cur = refresh(store, now, /*force=*/true);
  if (!cur) return cur.status();
  return cur->index_version;
}

Result<std::string> Metadata::timestamp(const Store& store, marketplace::UnixSeconds now) const {
  auto cur = refresh(store, now, /*force=*/false);
  if (!cur) return cur.status();
  return cur->timestamp;
}

Result<std::string> Metadata::index(const Store& store, marketplace::UnixSeconds now) const {
  // The index blob of a pointer read a moment ago may already be replaced and removed.
  for (int attempt = 0; attempt < kCasAttempts; ++attempt) {
    auto cur = refresh(store, now, /*force=*/false);
    if (!cur) return cur.status();
    auto bytes = store.getBlob(cur->index_sha256, cur->index_length);
    if (bytes || bytes.status().code() != StatusCode::kNotFound) return bytes;
  }
  return Status::unavailable("the signed index is being updated concurrently; retry");
}

}  // namespace trellis::registry
