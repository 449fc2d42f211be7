// Key rules both KV backends share, so SQLite and PostgreSQL refuse and order keys alike.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "trellis/kernel/storage/kv_store.h"

namespace trellis::kernel::storage::internal {

// The smallest byte string greater than every string starting with `prefix`, or nullopt
// when there is none (empty prefix, or all bytes 0xff).
inline std::optional<std::string> prefixSuccessor(std::string_view prefix) {
  std::string s(prefix);
  while (!s.empty() && static_cast<unsigned char>(s.back()) == 0xff) s.pop_back();
  if (s.empty()) return std::nullopt;
  s.back() = static_cast<char>(static_cast<unsigned char>(s.back()) + 1);
  return s;
}

inline Status validateKey(std::string_view key) {
  if (key.empty()) return Status::invalid("key is empty");
  if (key.size() > kMaxKeyBytes) {
    return Status::invalid("key is " + std::to_string(key.size()) + " bytes; the limit is " +
                           std::to_string(kMaxKeyBytes));
  }
  return Status::ok();
}

// The answer to a compare-and-set that found another version than it expected.
inline Status conflict(uint64_t expected, uint64_t current) {
  auto describe = [](uint64_t v) {
    return v == kAbsent ? std::string("absent") : "version " + std::to_string(v);
  };
  return Status::conflict("expected " + describe(expected) + ", found " + describe(current));
}

// A put's key and value, before any storage is touched.
inline Status validatePut(std::string_view key, std::string_view value) {
  if (auto s = validateKey(key); !s) return s;
  if (value.size() > kMaxValueBytes) {
    return Status::invalid("value is " + std::to_string(value.size()) + " bytes; the limit is " +
                           std::to_string(kMaxValueBytes));
  }
  return Status::ok();
}

}  // namespace trellis::kernel::storage::internal
