#include "trellis/tenants/identity.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <memory>
#include <optional>

namespace trellis::tenants {
namespace {

constexpr size_t kDigestBytes = std::tuple_size_v<Sha256Digest>;

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool isValidTenantId(std::string_view id) {
  if (id.empty() || id.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(id.front())) return false;
  return std::all_of(id.begin() + 1, id.end(), [&](char c) { return alnum(c) || c == '-'; });
}

// SHA-256 runs on every data-plane request. OpenSSL 3 looks the algorithm up on each
// EVP_sha256() use and allocates a context per EVP_Digest(); fetching it once and keeping
// one context per thread takes the cost from ~500 ns to the hash itself.
Sha256Digest sha256Digest(std::string_view data) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                                 &EVP_MD_CTX_free);
  Sha256Digest out{};
  unsigned int len = 0;
  // SHA-256 over memory cannot fail short of a broken OpenSSL, which we treat as fatal
  // rather than as "no tenant".
  if (md == nullptr || ctx == nullptr || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 || len != kDigestBytes) {
    std::abort();
  }
  return out;
}

std::optional<Sha256Digest> parseSha256Hex(std::string_view hex) {
  if (hex.size() != 2 * kDigestBytes) return std::nullopt;
  Sha256Digest raw{};
  for (size_t i = 0; i < kDigestBytes; ++i) {
    int hi = hexValue(hex[2 * i]);
    int lo = hexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    raw[i] = static_cast<unsigned char>((hi << 4) | lo);
  }
  return raw;
}

std::string sha256Hex(std::string_view data) {
  return sha256HexOf(sha256Digest(data));
}

std::string sha256HexOf(const Sha256Digest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * kDigestBytes);
  for (unsigned char b : d) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0x0f]);
  }
  return out;
}

}  // namespace trellis::tenants
