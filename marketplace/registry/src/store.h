// The registry's storage on the host KV (scoped by the host to the registry tenant and this
// plugin). Values are capped at 1 MiB by the host, so archives and the signed index are
// stored as content-addressed chunks: "blob/<sha256>/<n>" (n = 0, 1, …), each at most
// chunk_bytes. Content addressing makes concurrent writers of the same bytes harmless:
// they write identical chunks.
//
// Keys (documented in marketplace/registry/README.md):
//   ns/<ns>                          namespace key chain (index fragment)
//   pkg/<ns>/<name>/<version>        a published version (immutable once written)
//   dl/<ns>/<name>/<version>         download count
//   tok/<sha256 of token>            publish token (the token itself is never stored)
//   meta/signed                      current index + timestamp pointer
//   blob/<sha256>/<n>                archive and index chunks
//
//   Store store(ctx.kv(), 512 * 1024);
//   if (auto s = store.putBlob(bytes); !s) return s;
//   auto bytes = store.getBlob(sha, size);
#pragma once

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "trellis/plugin.hpp"
#include "trellis/status.hpp"

namespace trellis::registry {

struct JsonEntry {
  Poco::JSON::Object::Ptr value;
  uint64_t version = 0;  // KV version, for compare-and-set
};

// A stored value as a JSON object; INTERNAL if it is not one (corruption).
Result<Poco::JSON::Object::Ptr> parseStoredJson(std::string_view key, std::string_view value);

class Store {
 public:
  Store(Kv kv, size_t chunk_bytes) : kv_(kv), chunk_bytes_(chunk_bytes) {}

  // NOT_FOUND if absent; INTERNAL if the stored value is not a JSON object (corruption).
  Result<JsonEntry> getJson(std::string_view key) const;
  // Canonical JSON; expected_version as Kv::put (Kv::kAbsent: create only).
  Result<uint64_t> putJson(std::string_view key, const Poco::JSON::Object::Ptr& value,
                           uint64_t expected_version) const;
  Status remove(std::string_view key) const;
  // Every entry under `prefix`, in key order, across as many list calls as needed. `fn` must
  // not call the store (the host is inside its listing).
  Status forEach(
      std::string_view prefix,
      const std::function<Status(std::string_view key, std::string_view value)>& fn) const;

  // Writes `bytes` as chunks under blob/<sha256hex(bytes)>/; returns the chunk count.
  Result<uint64_t> putBlob(std::string_view bytes) const;
  // Concatenates the chunks of `sha256` and checks size and hash (storage is trusted less
  // than nothing: a mismatch is INTERNAL, never served).
  Result<std::string> getBlob(std::string_view sha256, uint64_t size) const;
  // Calls fn with each chunk in order (for streaming a download into a response).
  Status readBlob(std::string_view sha256, uint64_t size,
                  const std::function<Status(std::string_view chunk)>& fn) const;
  Status removeBlob(std::string_view sha256, uint64_t size) const;

  uint64_t chunkCount(uint64_t size) const { return (size + chunk_bytes_ - 1) / chunk_bytes_; }
  const Kv& kv() const { return kv_; }

 private:
  Kv kv_;
  size_t chunk_bytes_;
};

}  // namespace trellis::registry
