#include "storage/internal/kv_overlay.h"

#include <mutex>
#include <shared_mutex>

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

// snapshot() and forget() hold the lock for kSliceKeys entries at a time and let waiting
// threads in between, so a publish (a commit) or a read waits out one slice, not the
// whole overlay. A snapshot taken in slices is still one the applier may write: each
// entry is copied with the stamp it has then, every change published before the snapshot
// began is in it or superseded by a newer value (which the log also holds), and forget()
// keeps whatever changed since.
KvOverlay::Snapshot KvOverlay::snapshot() const {
  Snapshot s;
  std::optional<Key> last;  // the last key copied; map nodes never move, but may go
  for (bool more = true; more; mu_.letWaitersIn()) {
    std::shared_lock lock(mu_);
    auto it = last ? entries_.upper_bound(View(last->first, last->second)) : entries_.begin();
    for (size_t n = 0; n < kSliceKeys && it != entries_.end(); ++n, ++it) {
      s.changes.push_back(
          {it->first.first, it->first.second, it->second.value, it->second.version});
      s.stamps.push_back(it->second.stamp);
    }
    more = it != entries_.end();
    if (more) last = Key(s.changes.back().plugin, s.changes.back().key);
  }
  return s;
}

void KvOverlay::forget(const Snapshot& applied) {
  mu_.inSlices<std::unique_lock>(applied.changes.size(), kSliceKeys, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const KvChange& c = applied.changes[i];
      auto it = entries_.find(View(c.plugin, c.key));
      if (it != entries_.end() && it->second.stamp == applied.stamps[i]) entries_.erase(it);
    }
  });
}

size_t KvOverlay::size() const {
  std::shared_lock lock(mu_);
  return entries_.size();
}

}  // namespace trellis::kernel::storage::internal
