// `trellis tenant cert …`: client certificates as tenant credentials (mTLS), through the
// admin API's /v1/tenants/{id}/certs routes.
//
//   trellis tenant cert add acme --spiffe spiffe://acme.test/ns/prod/sa/billing --expires 90d
//   trellis tenant cert add acme --subject "CN=billing,O=Acme" --issuer "CN=Acme CA"
//   trellis tenant cert add acme --pin 3f:a1:...  (openssl x509 -noout -fingerprint -sha256)
//   trellis tenant cert list acme
//   trellis tenant cert revoke acme 1a2b3c4d
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "cli/admin_client.h"
#include "trellis/status.hpp"

namespace trellis::cli {

// --expires: an RFC 3339 UTC time ("2027-01-31T00:00:00Z") or a lifetime from now ("90d",
// "12h", "30m", "45s"), as milliseconds since the epoch. INVALID with the accepted forms.
Result<int64_t> parseExpiry(std::string_view text, int64_t now_ms);

// The selector flags as an admin API body ({"spiffe"} | {"subject","issuer"} | {"pin"}),
// checked here so a typo is named before anything is sent; exits with status 2 on bad input.
// `what` names the command in the message.
std::string selectorBody(const std::string& what, const std::string& spiffe,
                         const std::string& subject, const std::string& issuer,
                         const std::string& pin, const std::string& expires = "");

// Adds --spiffe, --subject, --issuer and --pin to `cmd`, mutually exclusive but for
// --subject with --issuer.
void addSelectorOptions(CLI::App* cmd, std::string& spiffe, std::string& subject,
                        std::string& issuer, std::string& pin);

class TenantCertCommands {
 public:
  // Registers `cert add|list|revoke` under the `tenant` subcommand.
  TenantCertCommands(CLI::App& tenant, const AdminClient& admin, const bool& json);
  // True if one of ours was parsed (and has run).
  bool run();

 private:
  const AdminClient& admin_;
  const bool& json_;
  CLI::App* add_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* revoke_ = nullptr;
  std::string tenant_, cert_id_, spiffe_, subject_, issuer_, pin_, expires_;
};

}  // namespace trellis::cli
