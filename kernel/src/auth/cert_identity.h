// Client certificates as identities: the bridge between what a listener verified (a
// tls::PeerIdentity) and the certificate selectors of the tenant registry and the admin
// principals. On the data plane, a request without an Authorization header on a connection
// that presented a verified certificate is resolved here; its principal is "cert:<id>".
// The admin API's and CLI's selector bodies ({"spiffe"} | {"subject","issuer"} | {"pin"})
// are parsed here too, so both planes accept the same thing.
//
//   std::string why;
//   tenants::Resolution who = auth::resolveCertificateTenant(registry, *peer.certificate, &why);
//   if (who.outcome != kOk) -> 401 with `why`
//   auto sel = auth::selectorFromJson(body);   // INVALID naming the problem
#pragma once

#include <Poco/JSON/Object.h>

#include <string>

#include "trellis/kernel/tls/server_options.h"
#include "trellis/status.hpp"
#include "trellis/tenants/cert_selector.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::auth {

// A view of `id` for the selectors; valid while `id` lives.
tenants::PresentedCertificate presented(const tls::PeerIdentity& id);

// The tenant a verified certificate names. For anything but kOk, `refusal` says why in words
// fit for the caller (it names no tenant and no other credential).
tenants::Resolution resolveCertificateTenant(const tenants::TenantRegistry& registry,
                                             const tls::PeerIdentity& id, std::string* refusal);

// The certificate for logs: subject, issuer, SPIFFE ID and pin. Public data, never keys.
std::string describeCertificate(const tls::PeerIdentity& id);

// Exactly one of {"spiffe": id}, {"subject": dn, "issuer": dn}, {"pin": sha256}; `extra`
// names further members the caller accepts (ignored here). INVALID with the reason.
Result<tenants::CertSelector> selectorFromJson(const Poco::JSON::Object::Ptr& o,
                                               std::initializer_list<std::string_view> extra = {});
// The same shape back, for listings.
Poco::JSON::Object::Ptr selectorJson(const tenants::CertSelector& s);

}  // namespace trellis::kernel::auth
