// Named admin principals: who may call the admin API, with which role. Besides the
// bootstrap token (the principal "bootstrap", role admin, from admin.token_file), the
// operator creates one token per person or automation with `trellis admin-token create`.
// Only the SHA-256 of each token is stored (a 256-bit random secret needs no slow hash,
// as with tenant API keys), in a SharedDocument: <data_dir>/admin-principals.json on one
// host, PostgreSQL when hosts share it (so a token created or revoked on one host counts on
// every host, within a second). The token itself is shown once, at creation.
//
// A token reads "tadm_<id>_<secret>": the id part names the principal in audit records of
// failed attempts without revealing anything that authenticates.
//
//   auto store = AdminPrincipals::open(SharedDocument::file(data_dir / "admin-principals.json"),
//                                      bootstrap_token);
//   auto made = (*store)->create("alice", Role::kOperator);   // made->token: show once
//   auto who = (*store)->authenticate(presented);            // Principal or why not
//
// A principal may also be bound to a client certificate (a pin, a SPIFFE ID, or subject and
// issuer): a certificate the admin listener verified then authenticates as that principal
// when the request carries no Authorization header.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "admin/admin_roles.h"
#include "admin/shared_document.h"
#include "trellis/status.hpp"
#include "trellis/tenants/cert_selector.h"

namespace trellis::kernel::admin {

struct Principal {
  std::string id;    // "bootstrap" or 16 hex digits
  std::string name;  // "alice", "ci-deploy"; "bootstrap" for the bootstrap token
  Role role = Role::kAdmin;
  int64_t created_at_ms = 0;
  std::optional<int64_t> revoked_at_ms;
  std::optional<tenants::CertSelector> certificate;  // bound client certificate, if any
};

class AdminPrincipals {
 public:
  // A document never written means no named principals yet; a damaged one refuses to
  // start. Changes other hosts make are picked up as the document reports them.
  static Result<std::unique_ptr<AdminPrincipals>> open(std::unique_ptr<SharedDocument> doc,
                                                       std::string bootstrap_token);
  // Moving to a shared document: adds the principals of `legacy` (this host's file from
  // before) that the document lacks, keeps revocations from either, then renames the file
  // to <file>.imported. The number of principals added; 0 if there is no such file.
  Result<size_t> importFile(const std::filesystem::path& legacy);

  struct Created {
    Principal principal;
    std::string token;  // the only time it exists outside the caller's hands
  };
  // Name: 1-64 of [A-Za-z0-9._@-]. CONFLICT if an unrevoked principal has that name.
  Result<Created> create(const std::string& name, Role role);
  std::vector<Principal> list() const;
  // NOT_FOUND for an unknown id or name; `false` if it was already revoked.
  Result<bool> revoke(const std::string& id_or_name, Principal* revoked = nullptr);

  // Who presents `token`. PERMISSION_DENIED names a revoked principal; UNAUTHENTICATED-
  // like failures are NOT_FOUND. Constant-time in the secret (hash lookup). Thread-safe.
  Result<Principal> authenticate(std::string_view token) const;

  // Binds a client certificate to the principal (nullopt: unbinds). NOT_FOUND for an unknown
  // or revoked principal; CONFLICT if another unrevoked principal has the same selector.
  Result<Principal> bindCertificate(const std::string& id_or_name,
                                    std::optional<tenants::CertSelector> selector);
  // Who a verified client certificate is: the principal bound by its pin, else its SPIFFE
  // ID, else its subject and issuer. NOT_FOUND if none; PERMISSION_DENIED names a revoked
  // principal. Thread-safe.
  Result<Principal> authenticateCertificate(const tenants::PresentedCertificate& cert) const;

  // The principal id a presented token claims ("tadm_<id>_…"), for aggregating failures;
  // "" if it does not look like one of ours.
  static std::string claimedId(std::string_view token);

 private:
  struct Entry {
    Principal principal;
    std::string sha256_hex;
  };
  using Table = std::map<std::string, Entry>;  // by principal id

  static Result<Table> parse(const std::optional<std::string>& text, const std::string& where);
  static std::string serialize(const Table& table);
  // Applies `change` to the latest document and writes it; then serves what was written.
  Status edit(const std::function<Status(Table&)>& change);
  void adopt(Table table, int64_t version);

  std::string bootstrap_token_;
  mutable std::shared_mutex mu_;
  Table by_id_;
  std::map<std::string, std::string> id_by_hash_;
  std::map<tenants::Sha256Digest, std::string> id_by_cert_;  // selector lookup -> principal id
  int64_t version_ = -1;                                     // of the document by_id_ came from
  std::unique_ptr<SharedDocument> doc_;  // last: its watcher stops before the rest goes
};

}  // namespace trellis::kernel::admin
