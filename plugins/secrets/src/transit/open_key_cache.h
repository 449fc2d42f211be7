// Transit keys already unwrapped, so that a request does not unwrap the tenant's keyring
// and each key version again. An entry serves only while the stored key is byte for byte
// what it was opened from (a rotation, config change, delete or re-creation on any host
// changes those bytes) and the store has not been sealed since; Seal::onSeal wipes all.
//
//   if (auto key = cache.find(tenant, name, stored_bytes, seal.epoch())) return key;
//   auto key = std::make_shared<const OpenKey>(...unwrap...);
//   cache.put(tenant, name, stored_bytes, epoch_before_unwrap, key, seal);
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "seal/seal.h"

namespace trellis::secrets::transit {

class OpenKey;

class OpenKeyCache {
 public:
  static constexpr size_t kMaxEntries = 1024;

  std::shared_ptr<const OpenKey> find(std::string_view tenant, std::string_view name,
                                      std::string_view stored, uint64_t epoch) const;
  // Keeps `key`, opened from `stored` under seal epoch `epoch`, unless the store was sealed
  // since (then it is dropped at once). Past kMaxEntries the cache starts over.
  void put(std::string_view tenant, std::string_view name, std::string stored, uint64_t epoch,
           std::shared_ptr<const OpenKey> key, const Seal& seal);
  void clear();

 private:
  struct Entry {
    std::string stored;
    uint64_t epoch = 0;
    std::shared_ptr<const OpenKey> key;
  };
  static std::string id(std::string_view tenant, std::string_view name);

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace trellis::secrets::transit
