// Test certificates generated with the OpenSSL API: CAs, leaves with SANs, expired and
// not-yet-valid ones, client certificates. Written as PEM files the listeners and clients read.
#pragma once

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace trellis::test {

namespace fs = std::filesystem;

struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertDeleter {
  void operator()(X509* c) const { X509_free(c); }
};

struct Identity {
  std::unique_ptr<EVP_PKEY, KeyDeleter> key;
  std::unique_ptr<X509, CertDeleter> cert;
  fs::path cert_file, key_file;
};

struct CertSpec {
  std::string cn;
  std::string sans;  // "DNS:localhost,IP:127.0.0.1,URI:spiffe://..."; "" = none
  bool ca = false;
  bool rsa = false;
  long not_before = -3600;  // seconds from now
  long not_after = 86400;
};

inline void addExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  ASSERT_NE(ext, nullptr) << value;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

inline void writePem(const Identity& id) {
  const fs::path tmp_cert = id.cert_file.string() + ".tmp";
  const fs::path tmp_key = id.key_file.string() + ".tmp";
  FILE* f = std::fopen(tmp_cert.c_str(), "w");
  ASSERT_NE(f, nullptr);
  PEM_write_X509(f, id.cert.get());
  std::fclose(f);
  f = std::fopen(tmp_key.c_str(), "w");
  ASSERT_NE(f, nullptr);
  PEM_write_PrivateKey(f, id.key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  // Replaced by rename, as deployment tools do: a reader sees the old file or the new.
  fs::rename(tmp_cert, id.cert_file);
  fs::rename(tmp_key, id.key_file);
}

// Issued by `issuer`, or self-signed when it is null; written to <dir>/<name>.{pem,key}.
inline Identity makeCert(const fs::path& dir, const std::string& name, const CertSpec& spec,
                         const Identity* issuer) {
  static int serial = 1;  // unique within a test binary
  Identity id;
  id.key.reset(spec.rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  id.cert.reset(X509_new());
  X509* x = id.cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), spec.not_before);
  X509_gmtime_adj(X509_getm_notAfter(x), spec.not_after);
  X509_set_pubkey(x, id.key.get());
  X509_NAME* subject = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1, -1, 0);
  X509* issuer_cert = issuer ? issuer->cert.get() : x;
  X509_set_issuer_name(x, X509_get_subject_name(issuer_cert));
  addExt(x, issuer_cert, NID_basic_constraints, spec.ca ? "critical,CA:TRUE" : "CA:FALSE");
  if (spec.ca) addExt(x, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  addExt(x, issuer_cert, NID_subject_key_identifier, "hash");
  if (!spec.sans.empty()) addExt(x, issuer_cert, NID_subject_alt_name, spec.sans);
  X509_sign(x, issuer ? issuer->key.get() : id.key.get(), EVP_sha256());
  id.cert_file = dir / (name + ".pem");
  id.key_file = dir / (name + ".key");
  writePem(id);
  return id;
}

// A CRL of `ca` listing `revoked`, issued an hour ago, its nextUpdate `next_update` seconds
// from now (negative: already stale); written atomically (rename) to `file` as PEM.
inline void writeCrl(const fs::path& file, const Identity& ca,
                     const std::vector<const Identity*>& revoked, long next_update = 86400) {
  X509_CRL* crl = X509_CRL_new();
  X509_CRL_set_version(crl, 1);
  X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca.cert.get()));
  ASN1_TIME* last = X509_gmtime_adj(nullptr, -3600);
  ASN1_TIME* next = X509_gmtime_adj(nullptr, next_update);
  X509_CRL_set1_lastUpdate(crl, last);
  X509_CRL_set1_nextUpdate(crl, next);
  for (const Identity* id : revoked) {
    X509_REVOKED* r = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(id->cert.get()));
    X509_REVOKED_set_revocationDate(r, last);
    X509_CRL_add0_revoked(crl, r);
  }
  X509_CRL_sort(crl);
  X509_CRL_sign(crl, ca.key.get(), EVP_sha256());
  const fs::path tmp = file.string() + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  ASSERT_NE(f, nullptr);
  PEM_write_X509_CRL(f, crl);
  std::fclose(f);
  fs::rename(tmp, file);
  ASN1_TIME_free(last);
  ASN1_TIME_free(next);
  X509_CRL_free(crl);
}

}  // namespace trellis::test
