#include "auth/cert_identity.h"

#include <algorithm>
#include <vector>

namespace trellis::kernel::auth {
using Outcome = tenants::Resolution::Outcome;

tenants::PresentedCertificate presented(const tls::PeerIdentity& id) {
  return {id.sha256, id.spiffe_id, id.subject, id.issuer};
}

tenants::Resolution resolveCertificateTenant(const tenants::TenantRegistry& registry,
                                             const tls::PeerIdentity& id, std::string* refusal) {
  tenants::Resolution who = registry.resolveCertificate(presented(id));
  switch (who.outcome) {
    case Outcome::kOk: break;
    case Outcome::kSuspended: break;  // the data plane answers 403 as for a key
    case Outcome::kRevokedKey:
      *refusal = "the client certificate's tenant credential was revoked";
      break;
    case Outcome::kExpiredKey:
      *refusal = "the client certificate's tenant credential has expired";
      break;
    case Outcome::kUnknownKey:
      *refusal =
          "the client certificate verified but is not mapped to a tenant: present an API key "
          "(Authorization: Bearer <key>) or ask the operator to map it (trellis tenant cert add)";
      break;
  }
  return who;
}

std::string describeCertificate(const tls::PeerIdentity& id) {
  std::string out = "subject \"" + id.subject + "\", issuer \"" + id.issuer + "\"";
  if (!id.spiffe_id.empty()) out += ", SPIFFE ID " + id.spiffe_id;
  out += ", sha256 " + id.sha256;
  return out;
}

Result<tenants::CertSelector> selectorFromJson(const Poco::JSON::Object::Ptr& o,
                                               std::initializer_list<std::string_view> extra) {
  constexpr std::string_view kShape =
      "expected exactly one of {\"spiffe\": id}, {\"subject\": dn, \"issuer\": dn} or "
      "{\"pin\": sha256}";
  if (!o) return Status::invalid(std::string(kShape));
  std::vector<std::string> names;
  o->getNames(names);
  for (const auto& n : names) {
    if (n != "spiffe" && n != "subject" && n != "issuer" && n != "pin" &&
        std::find(extra.begin(), extra.end(), n) == extra.end()) {
      return Status::invalid("unknown field \"" + n + "\": " + std::string(kShape));
    }
  }
  auto text = [&](const char* name) -> Result<std::string> {
    const auto& v = o->get(name);
    if (!v.isString()) return Status::invalid(std::string(name) + ": expected a string");
    return v.extract<std::string>();
  };
  const int kinds =
      int{o->has("spiffe")} + int{o->has("pin")} + int{o->has("subject") || o->has("issuer")};
  if (kinds != 1) return Status::invalid(std::string(kShape));
  if (o->has("spiffe")) {
    auto id = text("spiffe");
    if (!id) return id.status();
    return tenants::parseSpiffeSelector(*id);
  }
  if (o->has("pin")) {
    auto pin = text("pin");
    if (!pin) return pin.status();
    return tenants::parsePinSelector(*pin);
  }
  if (!o->has("subject") || !o->has("issuer")) {
    return Status::invalid(
        "subject and issuer go together: the issuer's name keeps another "
        "CA's certificate with the same subject out");
  }
  auto subject = text("subject");
  if (!subject) return subject.status();
  auto issuer = text("issuer");
  if (!issuer) return issuer.status();
  return tenants::parseSubjectSelector(*subject, *issuer);
}

Poco::JSON::Object::Ptr selectorJson(const tenants::CertSelector& s) {
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
  switch (s.kind) {
    case tenants::CertSelectorKind::kPin: o->set("pin", s.value); break;
    case tenants::CertSelectorKind::kSpiffe: o->set("spiffe", s.value); break;
    case tenants::CertSelectorKind::kSubject:
      o->set("subject", s.value);
      o->set("issuer", s.issuer);
      break;
  }
  return o;
}

}  // namespace trellis::kernel::auth
