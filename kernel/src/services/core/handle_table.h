// The kernel's table of plugin-held handles (trellis_handle in the ABI): the only way a
// host object outlives a host call. A plugin holds integers, never pointers, so a handle it
// forges, keeps after release, passes to another plugin or uses under another tenant's ctx
// finds nothing and the call answers INVALID — no use-after-free, no cross-tenant access.
// Each entry is tagged with its owner (plugin instance + tenant) and kind; a plugin's
// leftovers are reclaimed when it stops.
//
//   HandleTable handles;
//   auto h = handles.open({plugin, "acme"}, HandleKind::kBlobWriter,
//                         std::make_shared<BlobWriter>(...));
//   auto writer = handles.get<BlobWriter>({plugin, "acme"}, HandleKind::kBlobWriter, *h);
//   handles.close({plugin, "acme"}, *h);   // the object is destroyed once no call uses it
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "trellis/status.hpp"

namespace trellis::kernel::services {

// What a handle refers to; a handle of one kind is INVALID where another is expected.
enum class HandleKind : uint8_t { kHttpResponse = 1, kBlobWriter, kBlobReader, kStream, kScript };

// Base of every object behind a handle; its destructor releases what it holds (an aborted
// blob write removes its temp file, an HTTP response returns its connection, a stream
// closes its socket).
class HandleObject {
 public:
  virtual ~HandleObject() = default;
};

// Who may use a handle: the plugin instance (an upgraded version is another owner) and the
// tenant of the ctx that opened it ("" for tenant-less calls).
struct HandleOwner {
  const void* plugin = nullptr;
  std::string_view tenant;
};

class HandleTable {
 public:
  // Open handles one (plugin, tenant) may hold at once, so a leaking plugin cannot grow the
  // host without bound.
  static constexpr size_t kMaxPerOwner = 1024;

  // A new handle for `object`; QUOTA_EXCEEDED past kMaxPerOwner.
  Result<uint64_t> open(HandleOwner owner, HandleKind kind, std::shared_ptr<HandleObject> object);

  // The object, if `handle` is open, of `kind`, and held by `owner`; INVALID otherwise. The
  // returned reference keeps the object alive through the caller's use even if another
  // thread closes the handle meanwhile.
  template <typename T>
  Result<std::shared_ptr<T>> get(HandleOwner owner, HandleKind kind, uint64_t handle) const {
    auto object = find(owner, kind, handle);
    if (!object) return object.status();
    return std::static_pointer_cast<T>(std::move(*object));
  }

  // Releases `handle` (INVALID as for get); the object is destroyed after its last use.
  Status close(HandleOwner owner, uint64_t handle);
  // Removes and returns the object behind `handle` in one step, for calls that finish the
  // handle (a blob commit): a concurrent close or take then finds nothing.
  Result<std::shared_ptr<HandleObject>> take(HandleOwner owner, HandleKind kind, uint64_t handle);

  // Releases every handle `plugin` still holds (it is stopping); returns how many.
  size_t releaseAll(const void* plugin);

  size_t size() const;

 private:
  struct Entry {
    const void* plugin;
    std::string tenant;
    HandleKind kind;
    std::shared_ptr<HandleObject> object;
  };
  Result<std::shared_ptr<HandleObject>> find(HandleOwner owner, HandleKind kind,
                                             uint64_t handle) const;
  void uncount(const void* plugin, std::string_view tenant);  // with mu_ held
  static bool ownedBy(const Entry& e, HandleOwner owner) {
    return e.plugin == owner.plugin && e.tenant == owner.tenant;
  }

  mutable std::mutex mu_;
  uint64_t next_ = 0;  // handles are never reused within a process run
  std::unordered_map<uint64_t, Entry> entries_;
  std::unordered_map<std::string, size_t> per_owner_;  // plugin address + tenant -> count
};

}  // namespace trellis::kernel::services
