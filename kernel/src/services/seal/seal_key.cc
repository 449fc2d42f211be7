#include "services/seal/seal_key.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "auth/jwt.h"
#include "storage/internal/hex.h"

namespace trellis::kernel::services::seal {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;
constexpr size_t kIdHexChars = 16;
// Room for the file's 64 hex characters and a newline; anything longer is not a key file.
constexpr size_t kMaxFileBytes = 128;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

std::string hmacSha256(std::string_view key, std::string_view data) {
  std::string out(32, '\0');
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), bytes(data), data.size(),
            reinterpret_cast<unsigned char*>(out.data()), &len) ||
      len != out.size()) {
    return {};
  }
  return out;
}

// The associated data: the header (version and key id) and each binding field with its
// length in front, so no two bindings share an encoding ("a|b" + "c" vs "a" + "b|c").
std::string associatedData(std::string_view header, const Binding& b) {
  std::string aad(header);
  for (std::string_view field : {b.plugin, b.tenant, b.label}) {
    const uint32_t n = static_cast<uint32_t>(field.size());
    for (int shift = 24; shift >= 0; shift -= 8) aad.push_back(static_cast<char>(n >> shift));
    aad.append(field);
  }
  return aad;
}

std::string describe(const Binding& b) {
  return "plugin " + std::string(b.plugin) + ", " +
         (b.tenant.empty() ? std::string("the system (no tenant)")
                           : "tenant " + std::string(b.tenant)) +
         ", label \"" + std::string(b.label.substr(0, 64)) + "\"";
}

Status checkLabel(std::string_view label) {
  if (label.empty() || label.size() > kMaxLabelBytes) {
    return Status::invalid("a seal label must be 1 to " + std::to_string(kMaxLabelBytes) +
                           " bytes, not " + std::to_string(label.size()));
  }
  return Status::ok();
}

bool isHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<SealKey>> SealKey::loadFile(const std::filesystem::path& file) {
  const std::string name = "seal key file " + file.string() + " (server.seal_key_file)";
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::invalid("cannot read " + name + ": " + std::strerror(errno));
  struct stat st {};
  std::string text(kMaxFileBytes + 1, '\0');
  ssize_t got = -1;
  if (::fstat(fd, &st) == 0) got = ::read(fd, text.data(), text.size());
  const int read_errno = errno;
  ::close(fd);
  if (got < 0) return Status::invalid("cannot read " + name + ": " + std::strerror(read_errno));
  if (!S_ISREG(st.st_mode)) return Status::invalid(name + " is not a regular file");
  // As ssh does for private keys: a key others can read is no longer the operator's alone.
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    wipe(text);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::invalid(name + " is accessible by group or others (mode " + mode +
                           "): chmod 600 it");
  }
  text.resize(static_cast<size_t>(got));
  std::string_view hex(text);
  if (hex.ends_with('\n')) hex.remove_suffix(1);
  if (hex.size() != 2 * kKeyBytes || !isHex(hex)) {
    // Counted without the one newline allowed; a long file by its size (it was not all read).
    const std::string problem =
        got > static_cast<ssize_t>(kMaxFileBytes) ? "holds " + std::to_string(st.st_size) + " bytes"
        : hex.size() != 2 * kKeyBytes ? "holds " + std::to_string(hex.size()) + " characters"
                                      : std::string("holds a character that is not a hex digit");
    wipe(text);
    return Status::invalid(name + " " + problem +
                           "; it must hold 32 random bytes as 64 hex characters (make one with "
                           "`openssl rand -hex 32 > seal.key && chmod 600 seal.key`)");
  }
  std::string lower(hex);
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
  std::string root = storage::internal::fromHex(lower);
  wipe(lower);
  wipe(text);
  auto key = fromBytes(root);
  wipe(root);
  return key;
}

Result<std::unique_ptr<SealKey>> SealKey::fromBytes(std::string_view root) {
  if (root.size() != kKeyBytes) return Status::invalid("a seal key is 32 bytes");
  std::unique_ptr<SealKey> key(new SealKey());
  // HKDF-SHA256 (RFC 5869) with one output block: extract, then expand T(1).
  std::string prk = hmacSha256("trellis seal v1", root);
  key->aead_key_ = hmacSha256(prk, std::string("trellis seal v1 aes-256-gcm\x01"));
  wipe(prk);
  const std::string id = hmacSha256(root, "trellis seal key id v1");
  if (key->aead_key_.size() != kKeyBytes || id.empty()) {
    return Status::internal("HMAC-SHA256 failed while deriving the seal key");
  }
  key->id_ = storage::internal::toHex(id).substr(0, kIdHexChars);
  return std::move(key);
}

SealKey::~SealKey() {
  wipe(aead_key_);
}

Result<std::string> SealKey::wrap(const Binding& b, std::string_view plaintext) const {
  if (Status s = checkLabel(b.label); !s) return s;
  if (plaintext.empty() || plaintext.size() > kMaxPlaintextBytes) {
    return Status::invalid("key_wrap takes 1 to " + std::to_string(kMaxPlaintextBytes) +
                           " bytes of plaintext, not " + std::to_string(plaintext.size()));
  }
  const std::string header = std::string(kPrefix) + id_ + ":";
  const std::string aad = associatedData(header, b);
  std::string box(kNonceBytes + plaintext.size() + kTagBytes, '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(box.data());
  auto* body = nonce + kNonceBytes;
  if (RAND_bytes(nonce, kNonceBytes) != 1) return Status::internal("no randomness for a nonce");
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes(aead_key_), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), body, &len, bytes(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), body + plaintext.size(), &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes),
                          body + plaintext.size()) != 1) {
    return Status::internal("AES-256-GCM encryption failed");
  }
  return header + auth::base64UrlEncode(box);
}

Result<std::string> SealKey::unwrap(const Binding& b, std::string_view sealed) const {
  if (Status s = checkLabel(b.label); !s) return s;
  constexpr size_t kMaxSealedBytes = 2 * kMaxPlaintextBytes;
  if (sealed.size() > kMaxSealedBytes) {
    return Status::invalid("a sealed value is at most " + std::to_string(kMaxSealedBytes) +
                           " bytes, not " + std::to_string(sealed.size()));
  }
  if (!sealed.starts_with(kPrefix)) {
    if (sealed.starts_with("tseal:")) {
      return Status::invalid(
          "the value is sealed in a format this host does not read (" +
          std::string(sealed.substr(0, std::min<size_t>(sealed.find(':', 6), 16))) +
          "); this host reads tseal:v1");
    }
    return Status::invalid("not a sealed value (a sealed value starts with tseal:v1:)");
  }
  const std::string_view rest = sealed.substr(kPrefix.size());
  const size_t colon = rest.find(':');
  if (colon != kIdHexChars || !isHex(rest.substr(0, colon))) {
    return Status::invalid("a damaged sealed value: no seal key id after tseal:v1:");
  }
  const std::string_view id = rest.substr(0, colon);
  if (id != id_) {
    return Status::invalid("the value was sealed under seal key " + std::string(id) +
                           ", but this host's seal key is " + id_ +
                           ": server.seal_key_file is not the file it was sealed with");
  }
  auto box = auth::base64UrlDecode(rest.substr(colon + 1));
  if (!box || box->size() < kNonceBytes + kTagBytes) {
    return Status::invalid(
        "a damaged sealed value: its body is not base64url of nonce, "
        "ciphertext and tag");
  }
  const std::string header(sealed.substr(0, kPrefix.size() + colon + 1));
  const std::string aad = associatedData(header, b);
  const size_t text_len = box->size() - kNonceBytes - kTagBytes;
  const auto* nonce = bytes(*box);
  const auto* body = nonce + kNonceBytes;
  unsigned char tag[kTagBytes];
  std::memcpy(tag, body + text_len, kTagBytes);
  std::string out(text_len, '\0');
  auto* dst = reinterpret_cast<unsigned char*>(out.data());
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes(aead_key_), nonce) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes(aad), static_cast<int>(aad.size())) != 1 ||
      (text_len > 0 &&
       EVP_DecryptUpdate(ctx.get(), dst, &len, body, static_cast<int>(text_len)) != 1) ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes), tag) != 1) {
    wipe(out);
    return Status::internal("AES-256-GCM decryption failed");
  }
  // Final checks the tag: what was decrypted so far is dropped unless it authenticates.
  if (EVP_DecryptFinal_ex(ctx.get(), dst + text_len, &len) != 1) {
    wipe(out);
    return Status::invalid("the sealed value does not open for " + describe(b) +
                           ": it was sealed for another plugin, tenant or label, or altered");
  }
  return out;
}

}  // namespace trellis::kernel::services::seal
