#include "trellis/kernel/tls/server_context.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <boost/asio/ssl/error.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "trellis/kernel/tls/verify_error.h"

namespace trellis::kernel::tls {
namespace {

namespace ssl = boost::asio::ssl;

// What OpenSSL queued about the last failure, oldest first; clears the queue. OpenSSL's
// reasons name files and structures, never key material.
std::string takeOpensslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// True if the queue says a key and a certificate do not belong together.
bool keyMismatchQueued() {
  unsigned long e = 0;
  const char* file = nullptr;
  int line = 0;
  for (int i = 0; (e = ERR_peek_error_line(&file, &line)) != 0 && i < 32; ++i) {
    if (ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                           ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH)) {
      return true;
    }
    ERR_get_error();
  }
  return false;
}

// A readable file, or why not, before OpenSSL gets to say "system library".
Status checkReadable(const std::filesystem::path& file, const std::string& what) {
  FILE* f = std::fopen(file.c_str(), "rb");
  if (f == nullptr) {
    return Status::invalid(what + ": cannot read " + file.string() + ": " + std::strerror(errno));
  }
  std::fclose(f);
  return Status::ok();
}

// Refuses to prompt on the terminal for the pass phrase of an encrypted key.
int noPassphrase(char*, int, int, void*) {
  return 0;
}

constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

// Only http/1.1: a client that offers ALPN without it gets no_application_protocol rather
// than a connection it would then misread.
int selectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpnHttp11, sizeof kAlpnHttp11, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

std::string nameToString(const X509_NAME* name) {
  if (name == nullptr) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return "";
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data, n > 0 ? static_cast<size_t>(n) : 0);
  BIO_free(bio);
  return out;
}

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 15];
  }
  return out;
}

// The names of the certificate a client's chain failed on, kept on the SSL object until the
// handshake's end (the peer certificate is not kept when verification fails), so the log can
// say which certificate was refused.
void freeRefusedNames(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<std::string*>(ptr);
}

int refusedNamesIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, freeRefusedNames);
  return index;
}

int rememberRefusal(int preverify_ok, X509_STORE_CTX* store) {
  if (preverify_ok == 1) return 1;
  auto* s =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  if (s != nullptr && cert != nullptr && SSL_get_ex_data(s, refusedNamesIndex()) == nullptr) {
    SSL_set_ex_data(
        s, refusedNamesIndex(),
        new std::string("subject \"" + nameToString(X509_get_subject_name(cert)) + "\", issuer \"" +
                        nameToString(X509_get_issuer_name(cert)) + "\""));
  }
  return 0;
}

// client_crl: every CRL in the PEM file joins the verify store, and each client's certificate
// is checked against its issuer's CRL. No CRL of the issuer, or one past its nextUpdate,
// refuses the certificate: a stale list cannot say who is still good (fail closed).
Status loadCrls(SSL_CTX* c, const std::filesystem::path& file, const std::string& where) {
  if (Status s = checkReadable(file, where); !s) return s;
  BIO* bio = BIO_new_file(file.c_str(), "r");
  if (bio == nullptr) {
    return Status::invalid(where + ": cannot read " + file.string() + ": " + takeOpensslErrors());
  }
  X509_STORE* store = SSL_CTX_get_cert_store(c);
  size_t loaded = 0;
  while (X509_CRL* crl = PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr)) {
    const int added = X509_STORE_add_crl(store, crl);
    X509_CRL_free(crl);
    if (added != 1) {
      BIO_free(bio);
      return Status::invalid(where + ": cannot use a CRL of " + file.string() + ": " +
                             takeOpensslErrors());
    }
    ++loaded;
  }
  BIO_free(bio);
  // The loop ends at the end of the file ("no start line") or at something that is not a CRL.
  const unsigned long err = ERR_peek_last_error();
  const bool at_end = ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE;
  if (err != 0 && !at_end) {
    return Status::invalid(where + ": " + file.string() + " holds something that is not a PEM " +
                           "CRL: " + takeOpensslErrors());
  }
  ERR_clear_error();
  if (loaded == 0) return Status::invalid(where + ": no CRL in " + file.string());
  X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  return Status::ok();
}

std::string fileStamp(const std::filesystem::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return p.string() + ":missing;";
  return p.string() + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ";";
}

}  // namespace

struct Generation::Entry {
  Entry() : ctx(ssl::context::tls_server) {}
  ssl::context ctx;
  X509* leaf = nullptr;  // owned by ctx
};

Generation::Generation() = default;
Generation::~Generation() = default;

ssl::context& Generation::context() {
  return entries_.front()->ctx;
}

namespace {

// Runs on the default context while the ClientHello is read: moves the handshake to the
// context whose certificate covers the requested name. No name or no match: the default.
int selectCertificate(SSL* s, int*, void* arg) {
  const char* name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_OK;
  auto& entries = *static_cast<std::vector<std::unique_ptr<Generation::Entry>>*>(arg);
  for (size_t i = 0; i < entries.size(); ++i) {
    if (X509_check_host(entries[i]->leaf, name, 0, 0, nullptr) == 1) {
      if (i > 0) SSL_set_SSL_CTX(s, entries[i]->ctx.native_handle());
      break;
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

ServerContext::ServerContext(ServerTlsOptions options, std::string name)
    : options_(std::move(options)), name_(std::move(name)) {}

ServerContext::~ServerContext() {
  {
    std::lock_guard lock(watch_mu_);
    stopping_ = true;
  }
  watch_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

Result<std::shared_ptr<ServerContext>> ServerContext::create(ServerTlsOptions options,
                                                             std::string name) {
  if (!options.enabled()) return Status::invalid(name + ".tls: no certificates configured");
  if (options.client_auth != ClientAuth::kOff && options.client_ca.empty()) {
    return Status::invalid(name + ".tls.client_ca: required when client_auth is not off");
  }
  std::shared_ptr<ServerContext> ctx(new ServerContext(std::move(options), std::move(name)));
  ctx->files_seen_ = ctx->fingerprintFiles();
  auto gen = ctx->load(nullptr);
  if (!gen) return gen.status();
  std::atomic_store(&ctx->current_, std::move(*gen));
  return ctx;
}

std::shared_ptr<Generation> ServerContext::current() const {
  return std::atomic_load(&current_);
}

Result<std::shared_ptr<Generation>> ServerContext::load(const Generation* previous) {
  ERR_clear_error();
  auto gen = std::make_shared<Generation>();
  gen->number_ = ++loads_;
  const std::string where = name_ + ".tls";
  const std::string sid_context = "trellis-" + name_;
  for (size_t i = 0; i < options_.certificates.size(); ++i) {
    const CertificateFiles& files = options_.certificates[i];
    const std::string item = where + ".certificates[" + std::to_string(i) + "]";
    if (Status s = checkReadable(files.cert, item + ".cert"); !s) return s;
    if (Status s = checkReadable(files.key, item + ".key"); !s) return s;

    auto entry = std::make_unique<Generation::Entry>();
    SSL_CTX* c = entry->ctx.native_handle();
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
    // No renegotiation (a client-driven CPU sink); the server's suite order is no better
    // than a modern client's, so the client's preference stands.
    SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_default_passwd_cb(c, noPassphrase);
    if (SSL_CTX_set_cipher_list(c, options_.ciphers.c_str()) != 1) {
      return Status::invalid(where + ".ciphers: no usable cipher in \"" + options_.ciphers +
                             "\": " + takeOpensslErrors());
    }
    if (SSL_CTX_set_ciphersuites(c, options_.ciphersuites.c_str()) != 1) {
      return Status::invalid(where + ".ciphersuites: no usable suite in \"" +
                             options_.ciphersuites + "\": " + takeOpensslErrors());
    }
    if (SSL_CTX_use_certificate_chain_file(c, files.cert.c_str()) != 1) {
      return Status::invalid(item + ".cert: cannot load a PEM certificate chain from " +
                             files.cert.string() + ": " + takeOpensslErrors());
    }
    if (SSL_CTX_use_PrivateKey_file(c, files.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      std::string why = keyMismatchQueued()
                            ? "the key does not match the certificate in " + files.cert.string()
                            : takeOpensslErrors();
      ERR_clear_error();
      return Status::invalid(item + ".key: cannot use the private key in " + files.key.string() +
                             ": " + why);
    }
    if (SSL_CTX_check_private_key(c) != 1) {
      ERR_clear_error();
      return Status::invalid(item + ".key: the key in " + files.key.string() +
                             " does not match the certificate in " + files.cert.string());
    }
    entry->leaf = SSL_CTX_get0_certificate(c);
    if (X509_cmp_current_time(X509_get0_notAfter(entry->leaf)) < 0) {
      spdlog::warn("{}: the certificate in {} has expired; clients that verify will refuse it",
                   item, files.cert.string());
    }
    SSL_CTX_set_alpn_select_cb(c, selectAlpn, nullptr);
    // Resumption: the server-side cache (for session IDs) and tickets (on by default).
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(c, reinterpret_cast<const unsigned char*>(sid_context.data()),
                                   static_cast<unsigned int>(sid_context.size()));
    if (options_.client_auth != ClientAuth::kOff) {
      if (Status s = checkReadable(options_.client_ca, where + ".client_ca"); !s) return s;
      if (SSL_CTX_load_verify_locations(c, options_.client_ca.c_str(), nullptr) != 1) {
        return Status::invalid(where + ".client_ca: cannot load CA certificates from " +
                               options_.client_ca.string() + ": " + takeOpensslErrors());
      }
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options_.client_ca.c_str());
      if (names == nullptr) {
        ERR_clear_error();
        return Status::invalid(where + ".client_ca: no certificate in " +
                               options_.client_ca.string());
      }
      SSL_CTX_set_client_CA_list(c, names);
      if (!options_.client_crl.empty()) {
        if (Status s = loadCrls(c, options_.client_crl, where + ".client_crl"); !s) return s;
      }
      int mode = SSL_VERIFY_PEER;
      if (options_.client_auth == ClientAuth::kRequired) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
      SSL_CTX_set_verify(c, mode, rememberRefusal);
      SSL_CTX_set_verify_depth(c, 8);  // bounds the work an oversized chain can cause
    }
    gen->entries_.push_back(std::move(entry));
  }
  SSL_CTX* first = gen->entries_.front()->ctx.native_handle();
  if (gen->entries_.size() > 1) {
    SSL_CTX_set_tlsext_servername_callback(first, selectCertificate);
    SSL_CTX_set_tlsext_servername_arg(first, &gen->entries_);
  }
  // Tickets are sealed with the default context's keys; carrying them over keeps sessions
  // issued before a reload resumable after it.
  if (previous != nullptr) {
    unsigned char keys[80];
    SSL_CTX* old = previous->entries_.front()->ctx.native_handle();
    if (SSL_CTX_get_tlsext_ticket_keys(old, keys, sizeof keys) == 1) {
      SSL_CTX_set_tlsext_ticket_keys(first, keys, sizeof keys);
    }
    OPENSSL_cleanse(keys, sizeof keys);
  }
  return gen;
}

Status ServerContext::reload() {
  std::lock_guard lock(reload_mu_);
  auto gen = load(current().get());
  if (!gen) {
    spdlog::error("{} listener: TLS reload failed, still serving the previous certificates: {}",
                  name_, gen.status().message());
    return gen.status();
  }
  std::atomic_store(&current_, std::move(*gen));
  spdlog::info("{} listener: TLS certificates reloaded (generation {})", name_,
               current()->number());
  return Status::ok();
}

std::string ServerContext::fingerprintFiles() const {
  std::string out;
  for (const auto& c : options_.certificates) out += fileStamp(c.cert) + fileStamp(c.key);
  if (options_.client_auth != ClientAuth::kOff) out += fileStamp(options_.client_ca);
  if (!options_.client_crl.empty()) out += fileStamp(options_.client_crl);
  return out;
}

void ServerContext::watch() {
  if (options_.reload_check.count() == 0 || watcher_.joinable()) return;
  watcher_ = std::thread([this] { watchLoop(); });
}

void ServerContext::watchLoop() {
  std::unique_lock lock(watch_mu_);
  while (!watch_cv_.wait_for(lock, options_.reload_check, [this] { return stopping_; })) {
    lock.unlock();
    std::string seen = fingerprintFiles();
    if (seen != files_seen_) {
      files_seen_ = seen;
      spdlog::info("{} listener: TLS files changed; reloading", name_);
      (void)reload();
    }
    lock.lock();
  }
}

std::shared_ptr<const PeerIdentity> peerIdentity(SSL* s) {
  X509* cert = SSL_get0_peer_certificate(s);
  if (cert == nullptr || SSL_get_verify_result(s) != X509_V_OK) return nullptr;
  auto id = std::make_shared<PeerIdentity>();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) == 1) id->sha256 = hex(md, len);
  id->subject = nameToString(X509_get_subject_name(cert));
  id->issuer = nameToString(X509_get_issuer_name(cert));
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
      if (gn->type != GEN_URI) continue;
      const ASN1_IA5STRING* uri = gn->d.uniformResourceIdentifier;
      std::string value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                        static_cast<size_t>(ASN1_STRING_length(uri)));
      if (id->spiffe_id.empty() && value.starts_with("spiffe://")) id->spiffe_id = value;
      id->uris.push_back(std::move(value));
    }
    GENERAL_NAMES_free(sans);
  }
  return id;
}

std::string handshakeFailureReason(SSL* s, const boost::system::error_code& ec,
                                   bool* client_certificate) {
  *client_certificate = false;
  const long verdict = s == nullptr ? X509_V_OK : SSL_get_verify_result(s);
  if (verdict != X509_V_OK) {
    *client_certificate = true;
    const std::string why = verifyErrorWords(verdict, "");
    std::string out =
        "client certificate " + why + " (" + X509_verify_cert_error_string(verdict) + ")";
    if (auto* names = static_cast<std::string*>(SSL_get_ex_data(s, refusedNamesIndex()))) {
      out += ": " + *names;
    }
    return out;
  }
  if (ec.category() == boost::asio::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned long>(ec.value())) ==
          SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    *client_certificate = true;
    return "no client certificate, and this listener requires one";
  }
  return ec.message();
}

}  // namespace trellis::kernel::tls
