#include "trellis/tenants/cert_selector.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace trellis::tenants {
namespace {

// Longer than any name or ID a sane certificate carries; bounds the work per request.
constexpr size_t kMaxDnBytes = 1024;
constexpr size_t kMaxSpiffeBytes = 2048;  // the SPIFFE ID specification's limit

bool isControl(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

Sha256Digest digestOf(CertSelectorKind kind, std::string_view value, std::string_view issuer) {
  // Kind and a separator no value can contain (values have no control characters) keep the
  // three kinds' digests apart.
  std::string in(certSelectorKindName(kind));
  in.push_back('\n');
  in.append(value);
  in.push_back('\n');
  in.append(issuer);
  return sha256Digest(in);
}

// Trims spaces that RFC 2253 does not escape ("\ " at either end is part of the value).
std::string_view trimmed(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ' && !(s.size() >= 2 && s[s.size() - 2] == '\\')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

std::string_view certSelectorKindName(CertSelectorKind kind) {
  switch (kind) {
    case CertSelectorKind::kPin: return "pin";
    case CertSelectorKind::kSpiffe: return "spiffe";
    case CertSelectorKind::kSubject: return "subject";
  }
  return "unknown";
}

std::optional<CertSelectorKind> parseCertSelectorKind(std::string_view name) {
  for (auto k : {CertSelectorKind::kPin, CertSelectorKind::kSpiffe, CertSelectorKind::kSubject}) {
    if (certSelectorKindName(k) == name) return k;
  }
  return std::nullopt;
}

Sha256Digest CertSelector::lookup() const {
  return digestOf(kind, value, issuer);
}

std::string CertSelector::describe() const {
  std::string out(certSelectorKindName(kind));
  out += " \"" + value + "\"";
  if (kind == CertSelectorKind::kSubject) out += " issuer \"" + issuer + "\"";
  return out;
}

Result<CertSelector> parsePinSelector(std::string_view pin) {
  std::string hex;
  for (size_t i = 0; i < pin.size(); ++i) {
    // Colons only between byte pairs, as fingerprints are printed.
    if (pin[i] == ':' && i % 3 == 2) continue;
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(pin[i]))));
  }
  if (hex.size() > 64 || !parseSha256Hex(hex) ||
      (pin.find(':') != std::string_view::npos && pin.size() != 95)) {
    return Status::invalid(
        "pin must be the certificate's SHA-256: 64 hex digits, optionally colon-separated "
        "(openssl x509 -noout -fingerprint -sha256)");
  }
  return CertSelector{CertSelectorKind::kPin, hex, ""};
}

// spiffe://<trust domain>[/<segment>]*: trust domain [a-z0-9._-]+, segments
// [A-Za-z0-9._-]+ other than "." and "..", no query, fragment, port, user or trailing slash.
Result<CertSelector> parseSpiffeSelector(std::string_view id) {
  constexpr std::string_view kScheme = "spiffe://";
  auto bad = [&](const std::string& why) {
    return Status::invalid("SPIFFE ID \"" + std::string(id.substr(0, 128)) +
                           "\" is invalid: " + why);
  };
  if (id.size() > kMaxSpiffeBytes) {
    return Status::invalid("SPIFFE ID is longer than " + std::to_string(kMaxSpiffeBytes) +
                           " bytes");
  }
  if (std::any_of(id.begin(), id.end(), isControl)) {
    return Status::invalid("SPIFFE ID contains control characters");
  }
  if (!id.starts_with(kScheme)) return bad("expected spiffe://<trust domain>/<path>");
  std::string_view rest = id.substr(kScheme.size());
  size_t slash = rest.find('/');
  std::string_view domain = rest.substr(0, slash);
  if (domain.empty()) return bad("the trust domain is empty");
  for (char c : domain) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_')) {
      return bad("the trust domain may hold only a-z 0-9 . - _ (no port, user or upper case)");
    }
  }
  if (slash != std::string_view::npos) {
    std::string_view path = rest.substr(slash);
    if (path.back() == '/') return bad("the path must not end with '/'");
    for (size_t begin = 1; begin <= path.size();) {
      size_t end = std::min(path.find('/', begin), path.size());
      std::string_view seg = path.substr(begin, end - begin);
      if (seg.empty()) return bad("the path has an empty segment");
      if (seg == "." || seg == "..") return bad("the path has a \".\" or \"..\" segment");
      for (char c : seg) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
          return bad("path segments may hold only A-Z a-z 0-9 . - _ (no query or fragment)");
        }
      }
      begin = end + 1;
    }
  }
  return CertSelector{CertSelectorKind::kSpiffe, std::string(id), ""};
}

Result<std::string> normalizeDn(std::string_view dn) {
  if (dn.size() > kMaxDnBytes) {
    return Status::invalid("distinguished name is longer than " + std::to_string(kMaxDnBytes) +
                           " bytes");
  }
  if (std::any_of(dn.begin(), dn.end(), isControl)) {
    return Status::invalid("distinguished name contains control characters");
  }
  dn = trimmed(dn);
  if (dn.empty()) return Status::invalid("distinguished name is empty");
  if (dn.front() == '/') {
    return Status::invalid("distinguished name \"" + std::string(dn.substr(0, 128)) +
                           "\" is in OpenSSL's /-separated form; give it in RFC 2253 form "
                           "(openssl x509 -noout -subject -nameopt RFC2253), e.g. "
                           "\"CN=billing,O=Acme\"");
  }
  // Split at unescaped ',' and '+' (RDN and multi-valued RDN separators), keeping which.
  std::string out;
  size_t begin = 0;
  for (size_t i = 0; i <= dn.size(); ++i) {
    if (i < dn.size() && dn[i] == '\\') {
      if (i + 1 >= dn.size()) return Status::invalid("distinguished name ends with a lone '\\'");
      ++i;
      continue;
    }
    if (i < dn.size() && dn[i] != ',' && dn[i] != '+') continue;
    std::string_view attr = trimmed(dn.substr(begin, i - begin));
    size_t eq = attr.find('=');
    if (eq == std::string_view::npos) {
      return Status::invalid("distinguished name \"" + std::string(dn.substr(0, 128)) + "\": \"" +
                             std::string(attr.substr(0, 64)) +
                             "\" is not type=value (e.g. CN=billing,O=Acme)");
    }
    std::string_view type = trimmed(attr.substr(0, eq));
    std::string_view value = trimmed(attr.substr(eq + 1));
    if (type.empty() || !std::all_of(type.begin(), type.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
        })) {
      return Status::invalid("distinguished name \"" + std::string(dn.substr(0, 128)) +
                             "\": attribute type \"" + std::string(type.substr(0, 64)) +
                             "\" is invalid");
    }
    for (char c : type)
      out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    out.push_back('=');
    out.append(value);
    if (i < dn.size()) out.push_back(dn[i]);
    begin = i + 1;
  }
  return out;
}

Result<CertSelector> parseSubjectSelector(std::string_view subject, std::string_view issuer) {
  auto s = normalizeDn(subject);
  if (!s) return Status::invalid("subject: " + s.status().message());
  auto i = normalizeDn(issuer);
  if (!i) return Status::invalid("issuer: " + i.status().message());
  return CertSelector{CertSelectorKind::kSubject, std::move(*s), std::move(*i)};
}

std::array<std::optional<Sha256Digest>, 3> lookupsOf(const PresentedCertificate& cert) {
  std::array<std::optional<Sha256Digest>, 3> out;
  if (parseSha256Hex(cert.sha256)) out[0] = digestOf(CertSelectorKind::kPin, cert.sha256, "");
  if (!cert.spiffe_id.empty()) out[1] = digestOf(CertSelectorKind::kSpiffe, cert.spiffe_id, "");
  auto subject = normalizeDn(cert.subject);
  auto issuer = normalizeDn(cert.issuer);
  if (subject && issuer) out[2] = digestOf(CertSelectorKind::kSubject, *subject, *issuer);
  return out;
}

}  // namespace trellis::tenants
