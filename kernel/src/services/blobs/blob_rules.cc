#include "services/blobs/blob_rules.h"

#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace trellis::kernel::services::blobs {
namespace {

bool isMetadataKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

}  // namespace

Status validateKey(std::string_view key) {
  if (key.empty()) return Status::invalid("key: is empty");
  if (key.size() > kMaxKeyBytes) {
    return Status::invalid("key: is " + std::to_string(key.size()) + " bytes; the limit is " +
                           std::to_string(kMaxKeyBytes));
  }
  if (key.find('\0') != std::string_view::npos) return Status::invalid("key: contains a NUL byte");
  // Keys never become paths, but they often mirror them (backups, exports): a ".." or "."
  // segment means something different to whoever copies the objects out, so refuse it.
  size_t start = 0;
  while (start <= key.size()) {
    size_t end = key.find('/', start);
    if (end == std::string_view::npos) end = key.size();
    std::string_view segment = key.substr(start, end - start);
    if (segment == ".." || segment == ".") {
      return Status::invalid("key: contains a \"" + std::string(segment) + "\" segment");
    }
    start = end + 1;
  }
  return Status::ok();
}

Status validateWriteOptions(const WriteOptions& options) {
  const std::string& ct = options.content_type;
  if (ct.empty() || ct.size() > kMaxContentTypeBytes) {
    return Status::invalid("content_type: must be 1 to " + std::to_string(kMaxContentTypeBytes) +
                           " bytes");
  }
  if (!std::all_of(ct.begin(), ct.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
    return Status::invalid("content_type: must be printable ASCII");
  }
  if (options.metadata.size() > kMaxMetadataEntries) {
    return Status::invalid("metadata: has " + std::to_string(options.metadata.size()) +
                           " entries; the limit is " + std::to_string(kMaxMetadataEntries));
  }
  size_t total = 0;
  for (size_t i = 0; i < options.metadata.size(); ++i) {
    const auto& [k, v] = options.metadata[i];
    if (k.empty() || k.size() > 64 || !std::all_of(k.begin(), k.end(), isMetadataKeyChar)) {
      return Status::invalid("metadata: key \"" + k.substr(0, 64) +
                             "\" must be 1 to 64 of [a-z0-9._-]");
    }
    if (i > 0 && options.metadata[i - 1].first >= k) {
      return Status::invalid("metadata: keys must be sorted and unique (\"" + k + "\")");
    }
    if (std::any_of(v.begin(), v.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
      return Status::invalid("metadata: value of \"" + k + "\" contains a control character");
    }
    total += k.size() + v.size();
  }
  if (total > kMaxMetadataBytes) {
    return Status::invalid("metadata: is " + std::to_string(total) + " bytes; the limit is " +
                           std::to_string(kMaxMetadataBytes));
  }
  return Status::ok();
}

namespace internal {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 is unavailable in OpenSSL");
  }
}

void Sha256::update(std::string_view bytes) {
  EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size());
}

std::string Sha256::hexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_.get(), digest, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 0x0f]);
  }
  return out;
}

std::string encodeMetadata(const Metadata& metadata) {
  std::string out;
  for (const auto& [k, v] : metadata) out += k + "=" + v + "\n";
  return out;
}

Metadata decodeMetadata(std::string_view stored) {
  Metadata out;
  while (!stored.empty()) {
    size_t nl = stored.find('\n');
    std::string_view line = stored.substr(0, nl);
    size_t eq = line.find('=');
    if (eq != std::string_view::npos) {
      out.emplace_back(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
    }
    if (nl == std::string_view::npos) break;
    stored.remove_prefix(nl + 1);
  }
  return out;
}

std::string newObjectId() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("RAND_bytes failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0x0f]);
  }
  return out;
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status checkQuota(const std::optional<uint64_t>& max, uint64_t used, int64_t delta) {
  if (delta <= 0 || !max) return Status::ok();
  const uint64_t grow = static_cast<uint64_t>(delta);
  if (used <= *max && grow <= *max - used) return Status::ok();
  return Status::quotaExceeded("storage quota of " + std::to_string(*max) +
                               " bytes exceeded: using " + std::to_string(used) +
                               ", this object needs " + std::to_string(grow) + " more");
}

}  // namespace internal
}  // namespace trellis::kernel::services::blobs
