#include "packages.h"

#include <Poco/JSON/Array.h>

#include <algorithm>
#include <charconv>
#include <map>

#include "names.h"
#include "publisher_keys.h"
#include "semver.h"
#include "trellis/marketplace/package.h"
#include "trellis/plugin.h"

namespace trellis::registry {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr int kCasAttempts = 16;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// "pkg/<ns>/<name>/<version>" -> "<ns>/<name>".
std::string idOfKey(std::string_view key) {
  key.remove_prefix(4);
  return std::string(key.substr(0, key.rfind('/')));
}

void sortByPrecedence(std::vector<VersionEntry>& versions) {
  std::sort(versions.begin(), versions.end(), [](const VersionEntry& a, const VersionEntry& b) {
    auto va = Semver::parse(a.version), vb = Semver::parse(b.version);
    if (!va || !vb) return a.version < b.version;  // stored versions were checked at publish
    return compareSemver(*va, *vb) < 0;
  });
}

// The highest version that is not yanked, or the highest one if all are.
const VersionEntry& latest(const std::vector<VersionEntry>& sorted) {
  for (auto it = sorted.rbegin(); it != sorted.rend(); ++it) {
    if (!it->record.yanked) return *it;
  }
  return sorted.back();
}

Result<uint64_t> parseCount(std::string_view text) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return Status::internal("stored download count is corrupt");
  }
  return n;
}

// The summary's manifest checks beyond what PackageArchive::open already enforced.
Status checkManifest(const marketplace::PackageInfo& info, const marketplace::PackageRecord& rec) {
  if (auto v = Semver::parse(info.version); !v) {
    return Status::invalid("trellis-plugin.json: " + v.status().message());
  }
  if (rec.runtime == "native") {
    if (!rec.abi)
      return Status::invalid("trellis-plugin.json: a native plugin must declare \"abi\"");
    if (rec.abi->first != TRELLIS_ABI_MAJOR) {
      return Status::invalid("trellis-plugin.json: abi major " + std::to_string(rec.abi->first) +
                             " is not supported (this registry accepts ABI major " +
                             std::to_string(TRELLIS_ABI_MAJOR) + ")");
    }
    if (std::find(rec.platforms.begin(), rec.platforms.end(), "lua") != rec.platforms.end()) {
      return Status::invalid("trellis-plugin.json: a native plugin's entry cannot be \"lua\"");
    }
  } else if (rec.platforms != std::vector<std::string>{"lua"}) {
    return Status::invalid("trellis-plugin.json: a lua plugin's entry must be {\"lua\": …}");
  }
  if (rec.platforms.empty()) {
    return Status::invalid("trellis-plugin.json: \"entry\" names no platform");
  }
  return Status::ok();
}

Status noSuchVersion(const std::string& id, const std::string& version) {
  std::string message = "no version ";
  message.append(version).append(" of ").append(id);
  return Status::notFound(std::move(message));
}

Result<std::vector<std::string>> allIds(const Store& store) {
  std::vector<std::string> ids;
  Status s = store.forEach("pkg/", [&](std::string_view key, std::string_view) {
    std::string id = idOfKey(key);
    if (ids.empty() || ids.back() != id) ids.push_back(std::move(id));
    return Status::ok();
  });
  if (!s) return s;
  return ids;
}

}  // namespace

Status Packages::verify(const Store& store, const Caller& caller,
                        const marketplace::PackageArchive& pkg) const {
  const marketplace::PackageInfo& info = pkg.info();
  const std::string ns(namespaceOf(info.id));
  if (Status s = caller.mayActFor(ns); !s) {
    return Status::permissionDenied("cannot publish " + info.id + ": " + s.message());
  }
  auto keys = namespaceKeys(store, ns);
  if (!keys) {
    if (keys.status().code() == StatusCode::kNotFound) {
      return Status::invalid("the package is signed by key " + info.signature.keyid +
                             ", which is not registered: namespace \"" + ns + "\" has no keys");
    }
    return keys.status();
  }
  auto key = signingKey(*keys, ns, info.signature.keyid);
  if (!key) return key.status();
  // Signature over the canonical manifest, every file's hash, nothing unlisted or missing.
  if (Status s = pkg.verify({key->key}); !s) return Status::invalid(s.message());
  return Status::ok();
}

Result<VersionEntry> Packages::publish(const Store& store, const Caller& caller,
                                       const std::string& archive,
                                       const std::vector<std::string>& tags, UnixSeconds now,
                                       bool dry_run) const {
  marketplace::ZipLimits limits;
  limits.max_archive_bytes = config_.max_package_bytes;
  limits.max_total_bytes = config_.max_unpacked_bytes;
  limits.max_entry_bytes = std::min(limits.max_entry_bytes, config_.max_unpacked_bytes);
  auto pkg = marketplace::PackageArchive::fromBytes(archive, limits);
  if (!pkg) return Status::invalid("the upload is not a valid package: " + pkg.status().message());
  const marketplace::PackageInfo& info = pkg->info();

  auto record = marketplace::summarizePackage(*pkg, now);
  if (!record) return Status::invalid(record.status().message());
  if (Status s = checkManifest(info, *record); !s) return s;
  if (Status s = verify(store, caller, *pkg); !s) return s;

  auto existing = versions(store, info.id);
  if (existing) {
    const Semver mine = Semver::parse(info.version).value();  // checked by checkManifest
    for (const auto& v : *existing) {
      if (v.version == info.version) {
        return Status::conflict(info.id + " " + info.version +
                                " is already published; published versions are immutable");
      }
      // 1.0.0+a and 1.0.0+b have the same precedence: a resolver could not tell them apart.
      auto theirs = Semver::parse(v.version);
      if (theirs && compareSemver(mine, *theirs) == 0) {
        return Status::conflict(info.id + " " + info.version + " differs from the published " +
                                v.version + " only in build metadata");
      }
    }
  } else if (existing.status().code() == StatusCode::kNotFound) {
    auto ids = allIds(store);
    if (!ids) return ids.status();
    if (auto clash = confusableId(info.id, *ids)) {
      return Status::conflict("the name " + info.id + " is too close to the existing package " +
                              *clash + " (confusable names are refused)");
    }
  } else {
    return existing.status();
  }

  VersionEntry entry;
  entry.id = info.id;
  entry.version = info.version;
  entry.record = std::move(*record);
  entry.description = info.manifest->optValue<std::string>("description", "");
  entry.tags = tags;
  if (dry_run) return entry;

  // The archive first, then the record: a record never names bytes that are not there.
  if (auto put = store.putBlob(archive); !put) return put.status();
  auto created =
      store.putJson(versionKey(entry.id, entry.version), encodeVersion(entry), Kv::kAbsent);
  if (!created) {
    if (created.status().code() != StatusCode::kConflict) return created.status();
    // A concurrent publish of the same id@version won. Its archive may be these very bytes
    // (then the blob is shared); otherwise ours is named by nothing and goes.
    auto winner = version(store, entry.id, entry.version);
    if (winner && winner->record.sha256 != entry.record.sha256) {
      (void)store.removeBlob(entry.record.sha256, entry.record.length);
    }
    return Status::conflict(entry.id + " " + entry.version +
                            " is already published; published versions are immutable");
  }
  return entry;
}

Result<std::vector<VersionEntry>> Packages::versions(const Store& store,
                                                     const std::string& id) const {
  std::vector<VersionEntry> out;
  Status s = store.forEach(versionsPrefix(id), [&](std::string_view key, std::string_view value) {
    auto stored = parseStoredJson(key, value);
    if (!stored) return stored.status();
    auto v = decodeVersion(*stored);
    if (!v) return v.status();
    out.push_back(std::move(*v));
    return Status::ok();
  });
  if (!s) return s;
  if (out.empty()) return Status::notFound("no package " + id);
  sortByPrecedence(out);
  return out;
}

Result<VersionEntry> Packages::version(const Store& store, const std::string& id,
                                       const std::string& version) const {
  auto stored = store.getJson(versionKey(id, version));
  if (!stored) {
    if (stored.status().code() == StatusCode::kNotFound) {
      return noSuchVersion(id, version);
    }
    return stored.status();
  }
  return decodeVersion(stored->value);
}

uint64_t Packages::downloads(const Store& store, const std::string& id,
                             const std::string& version) const {
  auto e = store.kv().get(downloadsKey(id, version));
  if (!e) return 0;
  auto n = parseCount(e->value);
  return n ? *n : 0;
}

Result<std::string> Packages::download(const Store& store, const VersionEntry& v) const {
  auto bytes = store.getBlob(v.record.sha256, v.record.length);
  if (!bytes) return bytes.status();
  // Compare-and-set, so concurrent downloads are all counted.
  const std::string key = downloadsKey(v.id, v.version);
  for (int attempt = 0; attempt < kCasAttempts; ++attempt) {
    auto cur = store.kv().get(key);
    uint64_t count = 0, expected = Kv::kAbsent;
    if (cur) {
      auto n = parseCount(cur->value);
      if (!n) return n.status();
      count = *n;
      expected = cur->version;
    } else if (cur.status().code() != StatusCode::kNotFound) {
      return cur.status();
    }
    auto put = store.kv().put(key, std::to_string(count + 1), expected);
    if (put) break;
    if (put.status().code() != StatusCode::kConflict) return put.status();
  }
  return bytes;
}

Object::Ptr Packages::summary(const Store& store, const std::vector<VersionEntry>& versions,
                              bool with_versions) const {
  const VersionEntry& top = latest(versions);
  Object::Ptr o = new Object;
  o->set("id", top.id);
  o->set("description", top.description);
  Array::Ptr tags = new Array;
  for (const auto& t : top.tags) tags->add(t);
  o->set("tags", tags);
  o->set("latest", top.version);
  uint64_t total = 0;
  Array::Ptr list = new Array;
  for (const auto& v : versions) {
    uint64_t n = downloads(store, v.id, v.version);
    total += n;
    if (with_versions) list->add(versionJson(v, n));
  }
  o->set("downloads", static_cast<Poco::UInt64>(total));
  if (with_versions) o->set("versions", list);
  return o;
}

Result<Object::Ptr> Packages::search(const Store& store, const std::string& q,
                                     const std::string& tag) const {
  std::map<std::string, std::vector<VersionEntry>> by_id;
  Status s = store.forEach("pkg/", [&](std::string_view key, std::string_view value) {
    auto stored = parseStoredJson(key, value);
    if (!stored) return stored.status();
    auto v = decodeVersion(*stored);
    if (!v) return v.status();
    by_id[v->id].push_back(std::move(*v));
    return Status::ok();
  });
  if (!s) return s;
  const std::string needle = lower(q);
  Array::Ptr found = new Array;
  for (auto& [id, versions] : by_id) {
    sortByPrecedence(versions);
    const VersionEntry& top = latest(versions);
    if (!needle.empty() && lower(id).find(needle) == std::string::npos &&
        lower(top.description).find(needle) == std::string::npos) {
      continue;
    }
    if (!tag.empty() && std::find(top.tags.begin(), top.tags.end(), tag) == top.tags.end()) {
      continue;
    }
    found->add(summary(store, versions, false));
  }
  Object::Ptr o = new Object;
  o->set("packages", found);
  return o;
}

Result<VersionEntry> Packages::setYanked(const Store& store, const std::string& id,
                                         const std::string& version, bool yanked,
                                         const std::string& reason) const {
  for (int attempt = 0; attempt < kCasAttempts; ++attempt) {
    auto stored = store.getJson(versionKey(id, version));
    if (!stored) {
      if (stored.status().code() == StatusCode::kNotFound) {
        return noSuchVersion(id, version);
      }
      return stored.status();
    }
    auto v = decodeVersion(stored->value);
    if (!v) return v.status();
    if (v->record.yanked == yanked) {
      std::string message = id;
      message.append(" ").append(version).append(yanked ? " is already yanked" : " is not yanked");
      return Status::conflict(std::move(message));
    }
    v->record.yanked = yanked;
    v->record.yanked_reason = yanked ? reason : "";
    auto put = store.putJson(versionKey(id, version), encodeVersion(*v), stored->version);
    if (put) return v;
    if (put.status().code() != StatusCode::kConflict) return put.status();
  }
  return Status::unavailable(id + " " + version + " is being changed concurrently; retry");
}

}  // namespace trellis::registry
