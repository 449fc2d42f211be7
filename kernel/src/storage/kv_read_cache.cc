#include "storage/internal/kv_read_cache.h"

#include <mutex>

namespace trellis::kernel::storage::internal {

std::string KvReadCache::idOf(std::string_view plugin, std::string_view key) {
  std::string id;
  id.reserve(plugin.size() + 1 + key.size());
  id.append(plugin);
  id.push_back('\0');
  id.append(key);
  return id;
}

std::optional<KvReadCache::Value> KvReadCache::find(std::string_view plugin, std::string_view key) {
  std::lock_guard lock(mu_);
  const Node* n = touchLocked(idOf(plugin, key));
  if (!n) return std::nullopt;
  return n->value;
}

std::optional<KvReadCache::Stat> KvReadCache::stat(std::string_view plugin, std::string_view key) {
  std::lock_guard lock(mu_);
  const Node* n = touchLocked(idOf(plugin, key));
  if (!n) return std::nullopt;
  const auto& v = n->value.value;
  return Stat{v.has_value(), n->value.version, v ? v->size() : 0};
}

const KvReadCache::Node* KvReadCache::touchLocked(const std::string& id) {
  auto it = index_.find(id);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);  // the most recently used now
  return &*it->second;
}

uint64_t KvReadCache::ticket() const {
  std::lock_guard lock(mu_);
  return applies_;
}

void KvReadCache::fill(uint64_t ticket, std::string_view plugin, std::string_view key,
                       std::optional<std::string> value, uint64_t version) {
  if (value && value->size() > kMaxValueBytes) return;
  std::string id = idOf(plugin, key);
  std::lock_guard lock(mu_);
  if (ticket != applies_) return;  // SQLite changed since the read began: it may be stale
  storeLocked(std::move(id), std::move(value), version);
}

void KvReadCache::applied(std::span<const KvChange> changes) {
  // In slices, each counted as an apply, with waiting readers let in between: a request's
  // read waits out one slice, not tens of thousands of keys.
  mu_.inSlices<std::unique_lock>(changes.size(), kSliceKeys, [&](size_t begin, size_t end) {
    ++applies_;
    for (const KvChange& c : changes.subspan(begin, end - begin)) {
      std::string id = idOf(c.plugin, c.key);
      if (c.value && c.value->size() > kMaxValueBytes) {
        eraseLocked(id);
      } else {
        storeLocked(std::move(id), c.value, c.version);
      }
    }
  });
}

size_t KvReadCache::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

void KvReadCache::storeLocked(std::string id, std::optional<std::string> value, uint64_t version) {
  eraseLocked(id);
  lru_.push_front(Node{std::move(id), Value{std::move(value), version}});
  index_.emplace(lru_.front().id, lru_.begin());
  bytes_ += costOf(lru_.front());
  while (bytes_ > max_bytes_ && !lru_.empty()) eraseLocked(lru_.back().id);
}

void KvReadCache::eraseLocked(const std::string& id) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  auto node = it->second;
  bytes_ -= costOf(*node);
  index_.erase(it);
  lru_.erase(node);
}

}  // namespace trellis::kernel::storage::internal
