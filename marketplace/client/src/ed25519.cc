#include "trellis/marketplace/ed25519.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>

#include "file_io.h"
#include "trellis/marketplace/encoding.h"

namespace trellis::marketplace {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxPemBytes = size_t{64} << 10;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;

// The newest OpenSSL error as text, and the queue cleared so it does not leak into the
// next call's diagnosis.
std::string opensslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

// A string whose bytes are wiped before its memory is released (PEM text of a private key).
struct SecretText {
  std::string text;
  ~SecretText() {
    if (!text.empty()) OPENSSL_cleanse(text.data(), text.size());
  }
};

}  // namespace

void PrivateKey::Free::operator()(EVP_PKEY* p) const {
  EVP_PKEY_free(p);
}

Result<PublicKey> PublicKey::fromRaw(std::string_view raw) {
  if (raw.size() != kEd25519PublicKeyBytes) {
    return Status::invalid("an Ed25519 public key is 32 bytes, got " + std::to_string(raw.size()));
  }
  return PublicKey{std::string(raw)};
}

Result<PublicKey> PublicKey::fromBase64(std::string_view text) {
  auto raw = base64Decode(text);
  if (!raw) return Status::invalid("public key: " + raw.status().message());
  auto key = fromRaw(*raw);
  if (!key) return Status::invalid("public key: " + key.status().message());
  return key;
}

std::string PublicKey::base64() const {
  return base64Encode(raw);
}

std::string PublicKey::keyId() const {
  return sha256Hex(raw).substr(0, 16);
}

Result<PrivateKey> PrivateKey::adopt(std::unique_ptr<EVP_PKEY, Free> key) {
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519) {
    return Status::invalid("not an Ed25519 key (found " +
                           std::string(EVP_PKEY_get0_type_name(key.get())
                                           ? EVP_PKEY_get0_type_name(key.get())
                                           : "an unknown type") +
                           ")");
  }
  std::string raw(kEd25519PublicKeyBytes, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), reinterpret_cast<unsigned char*>(raw.data()), &len) !=
          1 ||
      len != kEd25519PublicKeyBytes) {
    return Status::internal("cannot read the public half of the key: " + opensslError());
  }
  return PrivateKey(std::move(key), PublicKey{std::move(raw)});
}

Result<PrivateKey> PrivateKey::generate() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1) {
    return Status::internal("cannot set up Ed25519 key generation: " + opensslError());
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return Status::internal("Ed25519 key generation failed: " + opensslError());
  }
  return adopt(std::unique_ptr<EVP_PKEY, Free>(raw));
}

Result<PrivateKey> PrivateKey::fromPem(std::string_view pem) {
  if (pem.size() > kMaxPemBytes)
    return Status::invalid("private key file is too large to be a key");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Status::internal("out of memory");
  if (pem.find("ENCRYPTED") != std::string_view::npos) {
    return Status::invalid("encrypted private keys are not supported (use trellis keygen)");
  }
  // A callback that supplies no passphrase: OpenSSL's default would prompt on the tty.
  pem_password_cb* no_passphrase = [](char*, int, int, void*) { return 0; };
  EVP_PKEY* raw = PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr);
  if (!raw) {
    ERR_clear_error();  // OpenSSL's text would say no more than "no start line"
    return Status::invalid("not a PEM private key");
  }
  return adopt(std::unique_ptr<EVP_PKEY, Free>(raw));
}

Result<PrivateKey> PrivateKey::loadPem(const fs::path& file) {
  const std::string name = file.string();
  struct stat st {};
  if (::stat(name.c_str(), &st) != 0) {
    int e = errno;
    if (e == ENOENT) return Status::notFound(name + ": no such file");
    return Status::invalid(name + ": cannot open: " + internal::errnoText(e));
  }
  if (S_ISREG(st.st_mode) && (st.st_mode & 077)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::permissionDenied(name + ": private key is readable by others (mode " + mode +
                                    "); run chmod 600 " + name);
  }
  auto text = internal::readFileCapped(file, kMaxPemBytes);
  if (!text) return text.status();
  SecretText pem{std::move(*text)};
  auto key = fromPem(pem.text);
  if (!key) return Status(key.status().code(), name + ": " + key.status().message());
  return key;
}

Status PrivateKey::writePem(const fs::path& file) const {
  const std::string name = file.string();
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Status::internal("cannot encode the private key: " + opensslError());
  }
  SecretText pem;
  {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    pem.text.assign(data, static_cast<size_t>(len));
    OPENSSL_cleanse(data, static_cast<size_t>(len));
  }

  Status s = internal::writeFileAtomically(file, pem.text, 0600, /*replace=*/false);
  if (s.code() == StatusCode::kConflict) {
    return Status::conflict(name + " already exists; refusing to overwrite a key");
  }
  return s;
}

Result<std::string> PrivateKey::sign(std::string_view message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  // Ed25519 hashes internally: the digest argument must be NULL (one-shot API only).
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    return Status::internal("cannot set up signing: " + opensslError());
  }
  std::string sig(kEd25519SignatureBytes, '\0');
  size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      len != kEd25519SignatureBytes) {
    return Status::internal("signing failed: " + opensslError());
  }
  return sig;
}

Status verifySignature(const PublicKey& key, std::string_view message, std::string_view signature) {
  if (signature.size() != kEd25519SignatureBytes) {
    return Status::invalid("malformed signature: an Ed25519 signature is 64 bytes, got " +
                           std::to_string(signature.size()));
  }
  if (key.raw.size() != kEd25519PublicKeyBytes) {
    return Status::invalid("malformed public key: an Ed25519 public key is 32 bytes, got " +
                           std::to_string(key.raw.size()));
  }
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> pkey(
      EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                  reinterpret_cast<const unsigned char*>(key.raw.data()),
                                  key.raw.size()),
      EVP_PKEY_free);
  if (!pkey) return Status::invalid("malformed public key: " + opensslError());
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) {
    return Status::internal("cannot set up verification: " + opensslError());
  }
  int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                            signature.size(),
                            reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();
  if (rc != 1) {
    return Status::invalid("signature does not verify with key " + key.keyId() +
                           ": the signed data was changed or another key signed it");
  }
  return Status::ok();
}

}  // namespace trellis::marketplace
