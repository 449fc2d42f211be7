// The KV changes of one tenant that are durable in its redo log (kv_redo_log.h) but not
// yet in its SQLite database: the newest change per (plugin, key). Reads look here first
// and fall back to SQLite only for keys without an entry, so they see every acknowledged
// write. The applier copies a snapshot into SQLite and then forgets exactly the entries
// that did not change meanwhile; an entry is forgotten only after SQLite has it, so a read
// that finds no entry here and then reads SQLite never misses a write.
//
//   overlay.publish(batch);                       // after the batch's fdatasync
//   if (auto e = overlay.find(plugin, key)) ...   // e->value nullopt: removed
//   auto snap = overlay.snapshot();  apply(snap);  overlay.forget(snap);
//
// Thread-safe: one writer (the batch leader or the applier) at a time, many readers.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/internal/kv_redo_log.h"
#include "storage/internal/slice_mutex.h"

namespace trellis::kernel::storage::internal {

class KvOverlay {
 public:
  struct Entry {
    std::optional<std::string> value;  // nullopt: removed
    uint64_t version = 0;
    uint64_t stamp = 0;  // which publish() wrote it
  };
  // A snapshot: the changes to apply, each with the stamp it had.
  struct Snapshot {
    std::vector<KvChange> changes;
    std::vector<uint64_t> stamps;
  };

  // snapshot() and forget() take the lock for this many entries at a time.
  static constexpr size_t kSliceKeys = 512;

  std::optional<Entry> find(std::string_view plugin, std::string_view key) const;
  // The entries of `plugin` with keys in [lower, upper) (upper nullopt: no bound) and
  // greater than `after`, ascending by bytes.
  std::vector<std::pair<std::string, Entry>> range(std::string_view plugin, std::string_view lower,
                                                   const std::optional<std::string>& upper,
                                                   std::string_view after) const;
  void publish(std::span<const KvChange> batch);
  Snapshot snapshot() const;
  // Drops the snapshot's entries that still carry the snapshot's stamp.
  void forget(const Snapshot& applied);
  size_t size() const;

 private:
  struct Less {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return std::pair<std::string_view, std::string_view>(a.first, a.second) <
             std::pair<std::string_view, std::string_view>(b.first, b.second);
    }
  };
  using Key = std::pair<std::string, std::string>;  // plugin, key
  using View = std::pair<std::string_view, std::string_view>;

  mutable SliceMutex mu_;
  std::map<Key, Entry, Less> entries_;  // guarded by mu_
  uint64_t stamps_ = 0;                 // guarded by mu_
};

}  // namespace trellis::kernel::storage::internal
