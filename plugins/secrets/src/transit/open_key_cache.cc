#include "transit/open_key_cache.h"

namespace trellis::secrets::transit {

std::string OpenKeyCache::id(std::string_view tenant, std::string_view name) {
  std::string out(tenant);
  out += '\0';  // tenant ids and key names hold no NUL
  out += name;
  return out;
}

std::shared_ptr<const OpenKey> OpenKeyCache::find(std::string_view tenant, std::string_view name,
                                                  std::string_view stored, uint64_t epoch) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id(tenant, name));
  if (it == entries_.end() || it->second.epoch != epoch || it->second.stored != stored) {
    return nullptr;
  }
  return it->second.key;
}

void OpenKeyCache::put(std::string_view tenant, std::string_view name, std::string stored,
                       uint64_t epoch, std::shared_ptr<const OpenKey> key, const Seal& seal) {
  std::lock_guard lock(mu_);
  // seal() moves the epoch before it clears: checked under mu_, a key opened before a
  // seal is either cleared by it or never stored.
  if (seal.epoch() != epoch) return;
  if (entries_.size() >= kMaxEntries) entries_.clear();
  entries_[id(tenant, name)] = Entry{std::move(stored), epoch, std::move(key)};
}

void OpenKeyCache::clear() {
  std::lock_guard lock(mu_);
  entries_.clear();
}

}  // namespace trellis::secrets::transit
