// What both blob backends share: streaming SHA-256, the stored form of user metadata,
// object ids and the clock, so SQLite files and PostgreSQL describe objects alike.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "trellis/kernel/services/blob_store.h"

namespace trellis::kernel::services::blobs::internal {

// SHA-256 over a stream of chunks.
class Sha256 {
 public:
  Sha256();
  void update(std::string_view bytes);
  std::string hexDigest();  // finishes; call once

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

// "k=v\n" per entry (validated keys hold no '=', values no control characters).
std::string encodeMetadata(const Metadata& metadata);
Metadata decodeMetadata(std::string_view stored);

// 32 random hex digits: names an upload and the object it becomes.
std::string newObjectId();
int64_t nowMs();

// "storage quota of M bytes exceeded: ..." when growing by `delta` from `used` exceeds
// `max` (unset = unlimited); OK otherwise, and always OK for delta <= 0.
Status checkQuota(const std::optional<uint64_t>& max, uint64_t used, int64_t delta);

}  // namespace trellis::kernel::services::blobs::internal
