// Test signing keys for JWT tests: RSA 2048, EC P-256 and Ed25519 keys made with OpenSSL,
// their public JWKs, and compact JWS tokens signed with them (ES256 in JOSE r || s form).
//
//   auto key = TestKey::make("EdDSA", "k1");
//   std::string jwks = "{\"keys\":[" + key.jwk() + "]}";
//   std::string token = key.token(R"({"iss":"https://idp.test/","exp":...})");
#pragma once

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>
#include <string>
#include <string_view>

#include "auth/jwt.h"

namespace trellis::test {

using kernel::auth::base64UrlEncode;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

inline std::string bnBytes(const EVP_PKEY* key, const char* param, size_t pad = 0) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(key, param, &bn), 1);
  std::string out(pad ? pad : static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return out;
}

// A signing key of one alg, and its public JWK.
struct TestKey {
  std::string alg;
  std::string kid;
  PkeyPtr key;

  static TestKey make(const std::string& alg, const std::string& kid) {
    EVP_PKEY* k = alg == "RS256"   ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                  : alg == "ES256" ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
                                   : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    EXPECT_NE(k, nullptr);
    return {alg, kid, PkeyPtr(k)};
  }

  std::string jwk(bool with_kid = true) const {
    std::string head = "{";
    if (with_kid) head += "\"kid\":\"" + kid + "\",";
    if (alg == "RS256") {
      return head + "\"kty\":\"RSA\",\"n\":\"" +
             base64UrlEncode(bnBytes(key.get(), OSSL_PKEY_PARAM_RSA_N)) + "\",\"e\":\"" +
             base64UrlEncode(bnBytes(key.get(), OSSL_PKEY_PARAM_RSA_E)) + "\"}";
    }
    if (alg == "ES256") {
      return head + "\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" +
             base64UrlEncode(bnBytes(key.get(), OSSL_PKEY_PARAM_EC_PUB_X, 32)) + "\",\"y\":\"" +
             base64UrlEncode(bnBytes(key.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 32)) + "\"}";
    }
    unsigned char raw[32];
    size_t len = sizeof raw;
    EXPECT_EQ(EVP_PKEY_get_raw_public_key(key.get(), raw, &len), 1);
    return head + "\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" +
           base64UrlEncode(std::string(reinterpret_cast<char*>(raw), len)) + "\"}";
  }

  std::string publicPem() const {
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, key.get());
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<size_t>(n));
    BIO_free(bio);
    return pem;
  }

  std::string sign(std::string_view input) const {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    const EVP_MD* digest = alg == "EdDSA" ? nullptr : EVP_sha256();
    EXPECT_EQ(EVP_DigestSignInit(md.get(), nullptr, digest, nullptr, key.get()), 1);
    size_t len = 0;
    const auto* in = reinterpret_cast<const unsigned char*>(input.data());
    EXPECT_EQ(EVP_DigestSign(md.get(), nullptr, &len, in, input.size()), 1);
    std::string sig(len, '\0');
    EXPECT_EQ(EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                             input.size()),
              1);
    sig.resize(len);
    if (alg != "ES256") return sig;
    // DER -> JOSE r || s.
    const auto* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
    ECDSA_SIG_free(es);
    return raw;
  }

  // header.payload.signature with this key's alg and kid.
  std::string token(const std::string& claims) const {
    std::string header = "{\"alg\":\"" + alg + "\",\"typ\":\"JWT\",\"kid\":\"" + kid + "\"}";
    std::string input = base64UrlEncode(header) + "." + base64UrlEncode(claims);
    return input + "." + base64UrlEncode(sign(input));
  }
};

}  // namespace trellis::test
