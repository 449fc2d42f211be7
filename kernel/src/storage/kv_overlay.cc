#include "storage/internal/kv_overlay.h"

#include <mutex>

namespace trellis::kernel::storage::internal {

std::optional<KvOverlay::Entry> KvOverlay::find(std::string_view plugin,
                                                std::string_view key) const {
  std::shared_lock lock(mu_);
  auto it = entries_.find(View(plugin, key));
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::pair<std::string, KvOverlay::Entry>> KvOverlay::range(
    std::string_view plugin, std::string_view lower, const std::optional<std::string>& upper,
    std::string_view after) const {
  std::vector<std::pair<std::string, Entry>> out;
  std::shared_lock lock(mu_);
  for (auto it = entries_.lower_bound(View(plugin, lower));
       it != entries_.end() && it->first.first == plugin; ++it) {
    const std::string& key = it->first.second;
    if (upper && key >= *upper) break;
    if (!after.empty() && key <= after) continue;
    out.emplace_back(key, it->second);
  }
  return out;
}

void KvOverlay::publish(std::span<const KvChange> batch) {
  std::unique_lock lock(mu_);
  const uint64_t stamp = ++stamps_;
  for (const KvChange& c : batch) {
    Entry& e = entries_[Key(c.plugin, c.key)];
    e.value = c.value;
    e.version = c.version;
    e.stamp = stamp;
  }
}

KvOverlay::Snapshot KvOverlay::snapshot() const {
  Snapshot s;
  std::shared_lock lock(mu_);
  s.changes.reserve(entries_.size());
  s.stamps.reserve(entries_.size());
  for (const auto& [k, e] : entries_) {
    s.changes.push_back({k.first, k.second, e.value, e.version});
    s.stamps.push_back(e.stamp);
  }
  return s;
}

void KvOverlay::forget(const Snapshot& applied) {
  std::unique_lock lock(mu_);
  for (size_t i = 0; i < applied.changes.size(); ++i) {
    const KvChange& c = applied.changes[i];
    auto it = entries_.find(View(c.plugin, c.key));
    if (it != entries_.end() && it->second.stamp == applied.stamps[i]) entries_.erase(it);
  }
}

size_t KvOverlay::size() const {
  std::shared_lock lock(mu_);
  return entries_.size();
}

}  // namespace trellis::kernel::storage::internal
