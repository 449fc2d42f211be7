#include "services/core/handle_table.h"

#include <random>
#include <vector>

namespace trellis::kernel::services {
namespace {

std::string ownerKey(const void* plugin, std::string_view tenant) {
  std::string key(reinterpret_cast<const char*>(&plugin), sizeof(plugin));
  key.append(tenant);
  return key;
}

// Handles start at a random point so a plugin cannot guess another's from its own number,
// and count up so a released number is never handed out again.
uint64_t firstHandle() {
  std::random_device rd;
  return ((static_cast<uint64_t>(rd()) << 20) | 1) & ((uint64_t{1} << 52) - 1);
}

Status invalidHandle(uint64_t handle) {
  return Status::invalid("handle " + std::to_string(handle) +
                         " is not open for this plugin and tenant (released, or never its own)");
}

}  // namespace

Result<uint64_t> HandleTable::open(HandleOwner owner, HandleKind kind,
                                   std::shared_ptr<HandleObject> object) {
  std::lock_guard lock(mu_);
  size_t& count = per_owner_[ownerKey(owner.plugin, owner.tenant)];
  if (count >= kMaxPerOwner) {
    return Status::quotaExceeded("a plugin may hold at most " + std::to_string(kMaxPerOwner) +
                                 " open handles per tenant; close the ones it no longer needs");
  }
  if (next_ == 0) next_ = firstHandle();
  uint64_t handle = next_++;
  entries_.emplace(handle, Entry{owner.plugin, std::string(owner.tenant), kind, std::move(object)});
  ++count;
  return handle;
}

Result<std::shared_ptr<HandleObject>> HandleTable::find(HandleOwner owner, HandleKind kind,
                                                        uint64_t handle) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(handle);
  if (it == entries_.end() || !ownedBy(it->second, owner) || it->second.kind != kind) {
    return invalidHandle(handle);
  }
  return it->second.object;
}

Result<std::shared_ptr<HandleObject>> HandleTable::take(HandleOwner owner, HandleKind kind,
                                                        uint64_t handle) {
  std::shared_ptr<HandleObject> object;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(handle);
    if (it == entries_.end() || !ownedBy(it->second, owner) || it->second.kind != kind) {
      return invalidHandle(handle);
    }
    object = std::move(it->second.object);
    uncount(owner.plugin, owner.tenant);
    entries_.erase(it);
  }
  return object;
}

Status HandleTable::close(HandleOwner owner, uint64_t handle) {
  std::shared_ptr<HandleObject> doomed;  // destroyed outside the lock: it may do I/O
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(handle);
    if (it == entries_.end() || !ownedBy(it->second, owner)) return invalidHandle(handle);
    doomed = std::move(it->second.object);
    uncount(owner.plugin, owner.tenant);
    entries_.erase(it);
  }
  return Status::ok();
}

size_t HandleTable::releaseAll(const void* plugin) {
  std::vector<std::shared_ptr<HandleObject>> doomed;
  {
    std::lock_guard lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second.plugin != plugin) {
        ++it;
        continue;
      }
      uncount(plugin, it->second.tenant);
      doomed.push_back(std::move(it->second.object));
      it = entries_.erase(it);
    }
  }
  return doomed.size();
}

void HandleTable::uncount(const void* plugin, std::string_view tenant) {
  auto it = per_owner_.find(ownerKey(plugin, tenant));
  if (it != per_owner_.end() && --it->second == 0) per_owner_.erase(it);
}

size_t HandleTable::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace trellis::kernel::services
