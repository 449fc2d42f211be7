#include "cli/cert_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "cli/output.h"
#include "trellis/tenants/cert_selector.h"

namespace trellis::cli {
namespace {

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string selectorText(const Poco::JSON::Object::Ptr& s) {
  if (s->has("spiffe")) return "spiffe " + s->getValue<std::string>("spiffe");
  if (s->has("pin")) return "pin " + s->getValue<std::string>("pin");
  return "subject \"" + s->getValue<std::string>("subject") + "\" issuer \"" +
         s->getValue<std::string>("issuer") + "\"";
}

void printCert(const std::string& body) {
  auto c = parseObject(body);
  std::printf("certificate credential %s for tenant %s (principal %s): %s\n",
              c->getValue<std::string>("id").c_str(), c->getValue<std::string>("tenant").c_str(),
              c->getValue<std::string>("principal").c_str(),
              selectorText(c->getObject("selector")).c_str());
  if (c->has("expires_at_ms")) {
    std::printf("  expires %s\n", utcTime(c->getValue<int64_t>("expires_at_ms")).c_str());
  }
}

void printCerts(const std::string& body) {
  auto list = parseObject(body)->getArray("certs");
  std::printf("%-10s %-8s %-21s %s\n", "CERT ID", "STATE", "EXPIRES", "SELECTOR");
  const int64_t now = nowMs();
  for (size_t i = 0; i < list->size(); ++i) {
    auto c = list->getObject(static_cast<unsigned>(i));
    const bool expired = c->has("expires_at_ms") && c->getValue<int64_t>("expires_at_ms") <= now;
    std::printf(
        "%-10s %-8s %-21s %s\n", c->getValue<std::string>("id").c_str(),
        c->has("revoked_at_ms") ? "revoked"
        : expired               ? "expired"
                                : "active",
        c->has("expires_at_ms") ? utcTime(c->getValue<int64_t>("expires_at_ms")).c_str() : "never",
        selectorText(c->getObject("selector")).c_str());
  }
}

}  // namespace

Result<int64_t> parseExpiry(std::string_view text, int64_t now_ms) {
  const Status bad = Status::invalid(
      "--expires \"" + std::string(text.substr(0, 64)) +
      "\" is neither an RFC 3339 UTC time (2027-01-31T00:00:00Z) nor a lifetime (90d, 12h, "
      "30m, 45s)");
  if (text.empty() || text.size() > 32) return bad;
  const char unit = text.back();
  if (text.size() >= 2 && (unit == 'd' || unit == 'h' || unit == 'm' || unit == 's')) {
    std::string_view digits = text.substr(0, text.size() - 1);
    if (digits.size() > 9) return bad;  // bounds the arithmetic below
    int64_t n = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return bad;
      n = n * 10 + (c - '0');
    }
    if (n == 0)
      return Status::invalid("--expires: a lifetime must be at least 1" + std::string(1, unit));
    const int64_t seconds = unit == 'd' ? 86400 : unit == 'h' ? 3600 : unit == 'm' ? 60 : 1;
    return now_ms + n * seconds * 1000;
  }
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  char z = 0;
  int used = 0;
  const std::string copy(text);
  if (std::sscanf(copy.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c%n", &y, &mo, &d, &h, &mi, &s, &z,
                  &used) != 7 ||
      z != 'Z' || used != static_cast<int>(copy.size())) {
    return bad;
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  const std::time_t t = timegm(&tm);
  // timegm normalises 2027-02-30 to March; a date that moved was not a date.
  if (tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d || tm.tm_hour != h ||
      tm.tm_min != mi || tm.tm_sec != s) {
    return bad;
  }
  const int64_t ms = static_cast<int64_t>(t) * 1000;
  if (ms <= now_ms) return Status::invalid("--expires " + copy + " is in the past");
  return ms;
}

void addSelectorOptions(CLI::App* cmd, std::string& spiffe, std::string& subject,
                        std::string& issuer, std::string& pin) {
  auto* s = cmd->add_option("--spiffe", spiffe, "SPIFFE ID in the certificate's URI SAN");
  auto* subj = cmd->add_option("--subject", subject, "Subject DN, RFC 2253 (CN=billing,O=Acme)");
  auto* iss = cmd->add_option("--issuer", issuer, "Issuer DN, RFC 2253 (with --subject)");
  auto* p = cmd->add_option("--pin", pin, "SHA-256 of the certificate (64 hex digits)");
  subj->needs(iss);
  iss->needs(subj);
  s->excludes(subj)->excludes(iss)->excludes(p);
  p->excludes(subj)->excludes(iss);
}

std::string selectorBody(const std::string& what, const std::string& spiffe,
                         const std::string& subject, const std::string& issuer,
                         const std::string& pin, const std::string& expires) {
  Result<tenants::CertSelector> selector = Status::invalid(
      what + " needs one of --spiffe <id>, --subject <dn> --issuer <dn>, --pin <sha256>");
  Poco::JSON::Object body;
  if (!spiffe.empty()) {
    selector = tenants::parseSpiffeSelector(spiffe);
    body.set("spiffe", spiffe);
  } else if (!pin.empty()) {
    selector = tenants::parsePinSelector(pin);
    body.set("pin", pin);
  } else if (!subject.empty()) {
    selector = tenants::parseSubjectSelector(subject, issuer);
    body.set("subject", subject);
    body.set("issuer", issuer);
  }
  if (!selector) AdminClient::die(selector.status().message(), kExitUsage);
  if (!expires.empty()) {
    auto at = parseExpiry(expires, nowMs());
    if (!at) AdminClient::die(at.status().message(), kExitUsage);
    body.set("expires_at_ms", *at);
  }
  std::ostringstream out;
  body.stringify(out);
  return out.str();
}

TenantCertCommands::TenantCertCommands(CLI::App& tenant, const AdminClient& admin, const bool& json)
    : admin_(admin), json_(json) {
  auto* cert = tenant.add_subcommand("cert", "Client certificates as tenant credentials (mTLS)");
  cert->require_subcommand(1);
  add_ = cert->add_subcommand("add", "Map a client certificate to a tenant");
  add_->add_option("tenant", tenant_, "tenant id")->required();
  addSelectorOptions(add_, spiffe_, subject_, issuer_, pin_);
  add_->add_option("--expires", expires_,
                   "Expiry: RFC 3339 UTC time or a lifetime (90d, 12h, 30m, 45s); default never");
  list_ = cert->add_subcommand("list", "List a tenant's certificate credentials");
  list_->add_option("tenant", tenant_, "tenant id")->required();
  revoke_ = cert->add_subcommand("revoke", "Revoke a certificate credential");
  revoke_->add_option("tenant", tenant_, "tenant id")->required();
  revoke_->add_option("cert-id", cert_id_, "credential id (from cert list)")->required();
}

bool TenantCertCommands::run() {
  const std::string path = "/v1/tenants/" + tenant_ + "/certs";
  if (add_->parsed()) {
    std::string answer = admin_.call(
        "POST", path, selectorBody("tenant cert add", spiffe_, subject_, issuer_, pin_, expires_));
    json_ ? printStructured(answer) : printCert(answer);
    return true;
  }
  if (list_->parsed()) {
    std::string answer = admin_.call("GET", path);
    json_ ? printStructured(answer) : printCerts(answer);
    return true;
  }
  if (revoke_->parsed()) {
    admin_.call("DELETE", path + "/" + cert_id_);
    if (json_) {
      std::printf("{\"revoked\":\"%s\"}\n", cert_id_.c_str());
    } else {
      std::printf("certificate credential %s of tenant %s revoked\n", cert_id_.c_str(),
                  tenant_.c_str());
    }
    return true;
  }
  return false;
}

}  // namespace trellis::cli
