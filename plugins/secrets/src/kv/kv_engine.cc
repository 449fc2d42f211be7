#include "kv/kv_engine.h"

#include <algorithm>

#include "crypto/encoding.h"
#include "keys/envelope.h"
#include "keys/keyring.h"

namespace trellis::secrets::kv {
namespace {

constexpr std::string_view kPrefix = KvEngine::kStoragePrefix;
constexpr int kAttempts = 8;
// The KV store keeps values up to 1 MiB; leave room for the entry's own framing.
constexpr size_t kMaxRecordBytes = 1000 * 1000;

std::string storageKey(std::string_view path) {
  return std::string(kPrefix) + std::string(path);
}

std::string versionAad(std::string_view tenant, std::string_view path, uint64_t version) {
  return associatedData(
      {{"tenant", tenant}, {"engine", "kv"}, {"path", path}, {"version", std::to_string(version)}});
}

Status needVersions(const std::vector<uint64_t>& versions) {
  if (versions.empty()) return Status::invalid("\"versions\" must list at least one version");
  return Status::ok();
}

Status noSecret(std::string_view path) {
  return Status::notFound("no secret at " + std::string(path));
}

}  // namespace

Status checkPath(std::string_view path) {
  if (path.empty()) return Status::invalid("the secret path is empty");
  if (path.size() > kMaxPathBytes) {
    return Status::invalid("the secret path is " + std::to_string(path.size()) +
                           " bytes; at most 512 are allowed");
  }
  size_t start = 0;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i < path.size() && static_cast<unsigned char>(path[i]) < 0x20) {
      return Status::invalid("the secret path holds a control character");
    }
    if (i == path.size() || path[i] == '/') {
      std::string_view seg = path.substr(start, i - start);
      if (seg.empty()) return Status::invalid("the secret path has an empty segment");
      if (seg == "." || seg == "..") {
        return Status::invalid("the secret path may not hold \".\" or \"..\" segments");
      }
      start = i + 1;
    }
  }
  return Status::ok();
}

Result<SecretRecord> KvEngine::update(const Context& ctx, std::string_view path,
                                      const Change& change) const {
  if (Status s = checkPath(path); !s) return s;
  Kv store = ctx.kv();
  const std::string key = storageKey(path);
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto entry = store.get(key);
    if (!entry && entry.status().code() != StatusCode::kNotFound) return entry.status();
    SecretRecord record;
    if (entry) {
      auto parsed = parse(entry->value);
      if (!parsed) return parsed.status();
      record = std::move(*parsed);
    }
    if (Status s = change(record, entry.isOk()); !s) return s;
    record.updated_ms = ctx.nowUnixMs();
    if (!entry) record.created_ms = record.updated_ms;
    std::string stored = serialize(record);
    if (stored.size() > kMaxRecordBytes) {
      return Status::quotaExceeded(
          "the secret's kept versions together would take " + std::to_string(stored.size()) +
          " bytes; at most 1000000 fit: lower max_versions or destroy old versions");
    }
    auto put = store.put(key, stored, entry ? entry->version : Kv::kAbsent);
    if (put) return record;
    if (put.status().code() != StatusCode::kConflict) return put.status();
  }
  return Status::unavailable("the secret at " + std::string(path) +
                             " changed concurrently too often; retry");
}

Result<SecretRecord> KvEngine::write(const Context& ctx, std::string_view path,
                                     std::string_view data_json,
                                     std::optional<uint64_t> cas) const {
  if (data_json.size() > kMaxDataBytes) {
    return Status::quotaExceeded("the secret's data is " + std::to_string(data_json.size()) +
                                 " bytes; at most 65536 are allowed");
  }
  auto ring = Keyring::open(ctx, seal_, /*create=*/true);
  if (!ring) return ring.status();
  return update(ctx, path, [&](SecretRecord& r, bool exists) -> Status {
    if (r.cas_required && !cas) {
      return Status::invalid("the secret at " + std::string(path) +
                             " requires check-and-set: pass options.cas");
    }
    if (cas && *cas != (exists ? r.current : 0)) {
      return Status::conflict("check-and-set parameter did not match the current version: cas is " +
                              std::to_string(*cas) + ", the current version is " +
                              std::to_string(exists ? r.current : 0));
    }
    const uint64_t version = r.current + 1;
    if (Status s = kek_uses_.take(ctx, seal_, *ring); !s) return s;
    auto env = envelope::seal(*ring, data_json, versionAad(ctx.tenant(), path, version));
    if (!env) return env.status();
    r.current = version;
    r.versions[version] = SecretVersion{ctx.nowUnixMs(), 0, false, std::move(*env)};
    const uint32_t keep = r.max_versions ? r.max_versions : kDefaultMaxVersions;
    while (r.versions.size() > keep) r.versions.erase(r.versions.begin());
    return Status::ok();
  });
}

Result<uint64_t> KvEngine::rewrapOlder(const Context& ctx, std::string_view storage_key,
                                       Keyring& ring) const {
  const std::string_view path = storage_key.substr(kPrefix.size());
  uint64_t count = 0;
  auto written = update(ctx, path, [&](SecretRecord& r, bool exists) -> Status {
    count = 0;
    // NOT_FOUND writes nothing: gone meanwhile, or nothing older to re-wrap.
    if (!exists) return Status::notFound("gone");
    for (auto& [version, v] : r.versions) {
      if (v.destroyed || v.value.kek_version >= ring.current().version) continue;
      if (Status s = kek_uses_.take(ctx, seal_, ring); !s) return s;
      auto env = envelope::rewrap(ring, v.value, versionAad(ctx.tenant(), path, version));
      if (!env) return env.status();
      v.value = std::move(*env);
      ++count;
    }
    return count ? Status::ok() : Status::notFound("nothing older");
  });
  if (!written && written.status().code() != StatusCode::kNotFound) return written.status();
  return count;
}

Result<ReadResult> KvEngine::read(const Context& ctx, std::string_view path,
                                  uint64_t version) const {
  if (Status s = checkPath(path); !s) return s;
  if (seal_.status().sealed) return Status::unavailable(std::string(kSealedMessage));
  auto entry = ctx.kv().get(storageKey(path));
  if (!entry) {
    return entry.status().code() == StatusCode::kNotFound ? noSecret(path) : entry.status();
  }
  auto record = parse(entry->value);
  if (!record) return record.status();
  ReadResult out;
  out.version = version ? version : record->current;
  auto it = record->versions.find(out.version);
  if (it == record->versions.end()) {
    return Status::notFound("the secret at " + std::string(path) + " has no version " +
                            std::to_string(out.version));
  }
  if (it->second.deleted_ms == 0 && !it->second.destroyed) {
    auto ring = Keyring::open(ctx, seal_, /*create=*/false);
    if (!ring) return ring.status();
    auto plain =
        envelope::open(*ring, it->second.value, versionAad(ctx.tenant(), path, out.version));
    if (!plain)
      return Status::internal("version " + std::to_string(out.version) + " of " +
                              std::string(path) + " does not decrypt: " + plain.status().message());
    out.data_json = std::move(*plain);
  }
  out.record = std::move(*record);
  return out;
}

Status KvEngine::remove(const Context& ctx, std::string_view path,
                        std::vector<uint64_t> versions) const {
  auto r = update(ctx, path, [&](SecretRecord& rec, bool exists) -> Status {
    if (!exists) return noSecret(path);
    if (versions.empty()) versions.push_back(rec.current);
    const uint64_t now = ctx.nowUnixMs();
    for (uint64_t v : versions) {
      auto it = rec.versions.find(v);
      if (it != rec.versions.end() && it->second.deleted_ms == 0) it->second.deleted_ms = now;
    }
    return Status::ok();
  });
  return r.status();
}

Status KvEngine::undelete(const Context& ctx, std::string_view path,
                          const std::vector<uint64_t>& versions) const {
  if (Status s = needVersions(versions); !s) return s;
  auto r = update(ctx, path, [&](SecretRecord& rec, bool exists) -> Status {
    if (!exists) return noSecret(path);
    for (uint64_t v : versions) {
      auto it = rec.versions.find(v);
      if (it != rec.versions.end() && !it->second.destroyed) it->second.deleted_ms = 0;
    }
    return Status::ok();
  });
  return r.status();
}

Status KvEngine::destroy(const Context& ctx, std::string_view path,
                         const std::vector<uint64_t>& versions) const {
  if (Status s = needVersions(versions); !s) return s;
  auto r = update(ctx, path, [&](SecretRecord& rec, bool exists) -> Status {
    if (!exists) return noSecret(path);
    for (uint64_t v : versions) {
      auto it = rec.versions.find(v);
      if (it == rec.versions.end()) continue;
      it->second.destroyed = true;
      it->second.value = {};
    }
    return Status::ok();
  });
  return r.status();
}

Result<SecretRecord> KvEngine::metadata(const Context& ctx, std::string_view path) const {
  if (Status s = checkPath(path); !s) return s;
  if (seal_.status().sealed) return Status::unavailable(std::string(kSealedMessage));
  auto entry = ctx.kv().get(storageKey(path));
  if (!entry) {
    return entry.status().code() == StatusCode::kNotFound ? noSecret(path) : entry.status();
  }
  return parse(entry->value);
}

Status KvEngine::updateMetadata(const Context& ctx, std::string_view path,
                                const MetadataUpdate& update_with) const {
  if (seal_.status().sealed) return Status::unavailable(std::string(kSealedMessage));
  if (update_with.max_versions && *update_with.max_versions > kMaxMaxVersions) {
    return Status::invalid("\"max_versions\" may be at most 100");
  }
  auto r = update(ctx, path, [&](SecretRecord& rec, bool) -> Status {
    if (update_with.max_versions) rec.max_versions = *update_with.max_versions;
    if (update_with.cas_required) rec.cas_required = *update_with.cas_required;
    if (update_with.custom_metadata) rec.custom_metadata = *update_with.custom_metadata;
    const uint32_t keep = rec.max_versions ? rec.max_versions : kDefaultMaxVersions;
    while (rec.versions.size() > keep) rec.versions.erase(rec.versions.begin());
    return Status::ok();
  });
  return r.status();
}

Status KvEngine::removeAll(const Context& ctx, std::string_view path) const {
  if (Status s = checkPath(path); !s) return s;
  if (seal_.status().sealed) return Status::unavailable(std::string(kSealedMessage));
  Status s = ctx.kv().remove(storageKey(path));
  return s.code() == StatusCode::kNotFound ? noSecret(path) : s;
}

Result<std::vector<std::string>> KvEngine::list(const Context& ctx, std::string_view folder) const {
  while (!folder.empty() && folder.back() == '/') folder.remove_suffix(1);
  if (!folder.empty()) {
    if (Status s = checkPath(folder); !s) return s;
  }
  if (seal_.status().sealed) return Status::unavailable(std::string(kSealedMessage));
  const std::string prefix = storageKey(folder) + (folder.empty() ? "" : "/");
  std::vector<std::string> names;
  std::string after;
  Kv store = ctx.kv();
  for (;;) {
    std::string next;
    Status s = store.list(prefix, after, 1, [&](std::string_view key, std::string_view, uint64_t) {
      std::string_view rest = key.substr(prefix.size());
      const size_t slash = rest.find('/');
      if (slash == std::string_view::npos) {
        names.emplace_back(rest);
        next = std::string(key);
      } else {
        names.emplace_back(rest.substr(0, slash + 1));
        // Skip the whole folder: no UTF-8 key byte sorts after 0xff.
        next = prefix + std::string(rest.substr(0, slash + 1)) + "\xff";
      }
      return true;
    });
    if (!s) return s;
    if (next.empty()) break;
    after = std::move(next);
  }
  if (names.empty()) return Status::notFound("no secrets under " + std::string(folder) + "/");
  return names;
}

}  // namespace trellis::secrets::kv
