// Recently read and applied values of one tenant's SQLite file, so a hot key is answered
// without a SQLite read (a transaction: two fcntl locks, a statement, a B-tree seek; ~3 us,
// the largest part of a transit encrypt's storage cost). Keys SQLite does not hold are kept
// too (as absent): a first write reads its key twice, once for the plugin's read and once
// for the compare-and-set decision. Least recently used entries go first past a byte budget.
//
// Coherent because trellisd is the file's only writer (the redo log's lock file) and every
// change reaches SQLite through LoggedKvTenant::apply, which tells the cache after SQLite
// has it (applied). A reader that missed takes a ticket *before* reading SQLite and keeps
// what it read only if no apply finished since (fill), so a value read from an older
// snapshot never replaces a newer one. Reads still look in the overlay first: the cache
// holds only what SQLite holds.
//
//   if (auto hit = cache.find(plugin, key)) return *hit;   // hit->value: nullopt if absent
//   const uint64_t ticket = cache.ticket();
//   ... read (value, version) from SQLite, value nullopt when there is no row ...
//   cache.fill(ticket, plugin, key, value, version);
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "storage/internal/kv_redo_log.h"
#include "storage/internal/slice_mutex.h"

namespace trellis::kernel::storage::internal {

class KvReadCache {
 public:
  struct Value {
    std::optional<std::string> value;  // nullopt: SQLite has no such key
    uint64_t version = 0;
  };
  // Values larger than this are not kept: one would push out hundreds of small hot keys.
  static constexpr size_t kMaxValueBytes = 64 * 1024;
  // applied() takes the lock for this many keys at a time.
  static constexpr size_t kSliceKeys = 512;

  explicit KvReadCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  std::optional<Value> find(std::string_view plugin, std::string_view key);
  // The version and value size of a kept entry, without copying the value: what a
  // compare-and-set decision needs.
  struct Stat {
    bool present = false;
    uint64_t version = 0;
    size_t value_bytes = 0;
  };
  std::optional<Stat> stat(std::string_view plugin, std::string_view key);
  uint64_t ticket() const;
  // Keeps a value read from SQLite, unless an apply finished after `ticket` was taken.
  void fill(uint64_t ticket, std::string_view plugin, std::string_view key,
            std::optional<std::string> value, uint64_t version);
  // After SQLite committed `changes`: their new values replace cached ones, removed keys are
  // kept as absent.
  void applied(std::span<const KvChange> changes);
  size_t bytes() const;

 private:
  struct Node {
    std::string id;  // plugin, NUL, key: plugin ids hold no NUL
    Value value;
  };
  static std::string idOf(std::string_view plugin, std::string_view key);
  static size_t costOf(const Node& n) {
    return n.id.size() + (n.value.value ? n.value.value->size() : 0) + 64;
  }
  // The entry of `id`, made the most recently used; null if none.
  const Node* touchLocked(const std::string& id);
  void storeLocked(std::string id, std::optional<std::string> value, uint64_t version);
  void eraseLocked(const std::string& id);

  const size_t max_bytes_;
  mutable SliceMutex mu_;
  uint64_t applies_ = 0;  // guarded by mu_
  size_t bytes_ = 0;      // guarded by mu_
  std::list<Node> lru_;   // most recent first; guarded by mu_
  std::unordered_map<std::string_view, std::list<Node>::iterator> index_;  // into lru_ ids
};

}  // namespace trellis::kernel::storage::internal
