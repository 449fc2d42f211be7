#include "trellis/kernel/services/egress_policy.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace trellis::kernel::services::egress {
namespace {

namespace ip = boost::asio::ip;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool isHttp(std::string_view scheme) {
  return scheme == "http" || scheme == "https";
}
bool isStream(std::string_view scheme) {
  return scheme == "tcp" || scheme == "tls";
}

uint16_t defaultPort(const std::string& scheme) {
  return scheme == "https" ? 443 : 80;
}

Result<uint16_t> parsePort(std::string_view text, const char* field) {
  if (text.empty() || text.size() > 5 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Status::invalid(std::string(field) + ": port \"" + std::string(text) +
                           "\" is not a number");
  }
  const unsigned long n = std::stoul(std::string(text));
  if (n == 0 || n > 65535) {
    return Status::invalid(std::string(field) + ": port " + std::string(text) +
                           " is outside 1..65535");
  }
  return static_cast<uint16_t>(n);
}

// A host that a resolver would read as an IPv4 address must be canonical dotted decimal:
// inet_aton also accepts 2130706433, 0x7f.1, 0177.0.0.1 and 127.1, the classic ways to
// smuggle a loopback address past a name check.
bool looksNumeric(std::string_view host) {
  const size_t dot = host.rfind('.');
  std::string_view last = dot == std::string_view::npos ? host : host.substr(dot + 1);
  return !last.empty() && std::isdigit(static_cast<unsigned char>(last[0]));
}

bool isCanonicalIpv4(std::string_view host) {
  int labels = 0;
  size_t start = 0;
  while (start <= host.size()) {
    size_t end = host.find('.', start);
    if (end == std::string_view::npos) end = host.size();
    std::string_view label = host.substr(start, end - start);
    if (label.empty() || label.size() > 3 || (label.size() > 1 && label[0] == '0') ||
        !std::all_of(label.begin(), label.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoi(std::string(label)) > 255) {
      return false;
    }
    ++labels;
    start = end + 1;
  }
  return labels == 4;
}

// Host of a URL or a rule (wildcards are the rule parser's business). Lowercases; drops one
// trailing dot. `field` names the input in refusals.
Result<std::string> parseHost(std::string_view raw, const char* field, bool* is_ip) {
  *is_ip = false;
  if (raw.empty()) return Status::invalid(std::string(field) + ": has no host");
  if (raw.front() == '[') {
    if (raw.back() != ']') return Status::invalid(std::string(field) + ": unclosed [ in host");
    boost::system::error_code ec;
    auto v6 = ip::make_address_v6(std::string(raw.substr(1, raw.size() - 2)), ec);
    if (ec) {
      return Status::invalid(std::string(field) + ": \"" + std::string(raw) +
                             "\" is not an IPv6 address");
    }
    *is_ip = true;
    return v6.to_string();
  }
  if (raw.find('%') != std::string_view::npos) {
    return Status::invalid(std::string(field) + ": percent-encoded hosts are not allowed");
  }
  std::string host = lower(raw);
  if (host.size() > 1 && host.back() == '.') host.pop_back();
  if (host.size() > 253) return Status::invalid(std::string(field) + ": host is too long");
  for (char c : host) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-')) {
      return Status::invalid(std::string(field) + ": host \"" + host +
                             "\" holds a character a host name cannot");
    }
  }
  if (host.front() == '.' || host.find("..") != std::string::npos) {
    return Status::invalid(std::string(field) + ": host \"" + host + "\" has an empty label");
  }
  if (looksNumeric(host)) {
    if (!isCanonicalIpv4(host)) {
      return Status::invalid(std::string(field) + ": host \"" + host +
                             "\" is not a canonical dotted-decimal IPv4 address (numeric, "
                             "octal and hex forms are refused)");
    }
    *is_ip = true;
  }
  return host;
}

// Splits "host[:port]" (with [v6]); port empty if absent.
void splitHostPort(std::string_view authority, std::string_view* host, std::string_view* port,
                   bool* has_port) {
  *has_port = false;
  size_t colon = std::string_view::npos;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close != std::string_view::npos && close + 1 < authority.size() &&
        authority[close + 1] == ':') {
      colon = close + 1;
    }
  } else {
    colon = authority.rfind(':');
  }
  if (colon == std::string_view::npos) {
    *host = authority;
    *port = {};
    return;
  }
  *has_port = true;
  *host = authority.substr(0, colon);
  *port = authority.substr(colon + 1);
}

std::string hostForUrl(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

ip::address unmapped(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  }
  return a;
}

std::string listRules(const std::vector<Rule>& rules) {
  if (rules.empty()) return "(none)";
  std::string out;
  for (const auto& r : rules) out += (out.empty() ? "" : ", ") + r.text;
  return out;
}

std::string_view specialV4(uint32_t a) {
  struct Net {
    uint32_t base;
    int bits;
    std::string_view name;
  };
  static constexpr std::array<Net, 15> kNets{{
      {0x00000000, 8, "unspecified (0.0.0.0/8)"},
      {0x0a000000, 8, "private"},
      {0x64400000, 10, "shared (CGNAT)"},
      {0x7f000000, 8, "loopback"},
      {0xa9fe0000, 16, "link-local"},
      {0xac100000, 12, "private"},
      {0xc0000000, 24, "reserved"},
      {0xc0000200, 24, "documentation"},
      {0xc0586300, 24, "reserved"},
      {0xc0a80000, 16, "private"},
      {0xc6120000, 15, "benchmarking"},
      {0xc6336400, 24, "documentation"},
      {0xcb007100, 24, "documentation"},
      {0xe0000000, 4, "multicast"},
      {0xf0000000, 4, "reserved"},
  }};
  for (const auto& n : kNets) {
    const uint32_t mask = n.bits == 0 ? 0 : ~uint32_t{0} << (32 - n.bits);
    if ((a & mask) == n.base) return n.name;
  }
  return {};
}

}  // namespace

std::string Url::origin() const {
  return scheme + "://" + hostForUrl(host) + ":" + std::to_string(port);
}

std::string Url::redacted() const {
  return origin() + target.substr(0, target.find('?'));
}

Result<Url> parseUrl(std::string_view text) {
  const size_t sep = text.find("://");
  if (sep == std::string_view::npos) {
    return Status::invalid(
        "url: must be an absolute http:// or https:// URL (tcp://host:port or tls://host:port "
        "for a stream)");
  }
  Url url;
  url.scheme = lower(text.substr(0, sep));
  if (!isHttp(url.scheme) && !isStream(url.scheme)) {
    return Status::invalid("url: scheme \"" + url.scheme + "\" is not http, https, tcp or tls");
  }
  std::string_view rest = text.substr(sep + 3);
  const size_t path_at = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path_at);
  std::string_view target = path_at == std::string_view::npos ? "" : rest.substr(path_at);
  if (authority.find('@') != std::string_view::npos) {
    return Status::invalid(url.stream() ? "url: userinfo (user@host) is not allowed"
                                        : "url: userinfo (user@host) is not allowed; send "
                                          "credentials in a header");
  }
  std::string_view host, port;
  bool has_port = false;
  splitHostPort(authority, &host, &port, &has_port);
  auto h = parseHost(host, "url", &url.host_is_ip);
  if (!h) return h.status();
  url.host = std::move(*h);
  if (url.stream()) {
    // A byte stream has no default port and nothing after the authority to carry.
    if (!has_port) return Status::invalid("url: tcp:// and tls:// need a port");
    if (!target.empty() && target != "/") {
      return Status::invalid("url: a " + url.scheme +
                             ":// URL names host:port only (no path, query or fragment)");
    }
  } else {
    url.port = defaultPort(url.scheme);
  }
  if (has_port) {
    auto p = parsePort(port, "url");
    if (!p) return p.status();
    url.port = *p;
  }
  target = target.substr(0, target.find('#'));
  for (char c : target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Status::invalid("url: the path holds a space or control character");
    }
  }
  url.target =
      target.empty() ? "/" : (target[0] == '?' ? "/" + std::string(target) : std::string(target));
  return url;
}

Result<Url> resolveReference(const Url& base, std::string_view relative) {
  if (relative.find("://") != std::string_view::npos) {
    auto url = parseUrl(relative);
    if (url && url->stream()) {
      return Status::invalid("url: a redirect to " + url->scheme + ":// is not followed");
    }
    return url;
  }
  if (relative.substr(0, 2) == "//") return parseUrl(base.scheme + ":" + std::string(relative));
  std::string target;
  if (!relative.empty() && relative[0] == '/') {
    target = std::string(relative);
  } else {
    const std::string path = base.target.substr(0, base.target.find('?'));
    target = path.substr(0, path.rfind('/') + 1) + std::string(relative);
  }
  return parseUrl(base.scheme + "://" + hostForUrl(base.host) + ":" + std::to_string(base.port) +
                  target);
}

bool Rule::matches(const Url& url) const {
  if (url.scheme != scheme) return false;
  if (port && *port != url.port) return false;
  if (host == "*") return true;
  if (host.rfind("*.", 0) == 0) {
    const std::string_view suffix = std::string_view(host).substr(1);  // ".example.com"
    return !url.host_is_ip && url.host.size() > suffix.size() &&
           url.host.compare(url.host.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  if (ip) {
    boost::system::error_code ec;
    auto a = ip::make_address(url.host, ec);
    return !ec && unmapped(a) == *ip;
  }
  return url.host == host;
}

Result<Rule> parseRule(std::string_view text) {
  const std::string field = "egress rule \"" + std::string(text) + "\"";
  Rule rule;
  rule.text = std::string(text);
  const size_t sep = text.find("://");
  if (sep == std::string_view::npos) {
    return Status::invalid(field + ": expected scheme://host[:port]");
  }
  rule.scheme = lower(text.substr(0, sep));
  if (!isHttp(rule.scheme) && !isStream(rule.scheme)) {
    return Status::invalid(field + ": scheme must be http, https, tcp or tls");
  }
  std::string_view authority = text.substr(sep + 3);
  if (!authority.empty() && authority.back() == '/') authority.remove_suffix(1);
  if (authority.find_first_of("/?#@") != std::string_view::npos) {
    return Status::invalid(field +
                           ": a rule names scheme://host[:port] only (no path, query "
                           "or userinfo)");
  }
  std::string_view host, port;
  bool has_port = false;
  splitHostPort(authority, &host, &port, &has_port);
  if (!has_port && isStream(rule.scheme)) {
    return Status::invalid(field + ": tcp:// and tls:// rules need a port (a number or *)");
  } else if (!has_port) {
    rule.port = defaultPort(rule.scheme);
  } else if (port != "*") {
    auto p = parsePort(port, field.c_str());
    if (!p) return p.status();
    rule.port = *p;
  }
  if (host == "*") {
    rule.host = "*";
    return rule;
  }
  const bool wildcard = host.substr(0, 2) == "*.";
  bool is_ip = false;
  auto h = parseHost(wildcard ? host.substr(2) : host, field.c_str(), &is_ip);
  if (!h) return h.status();
  if (wildcard && (is_ip || h->find('.') == std::string::npos)) {
    return Status::invalid(field + ": a wildcard needs a domain of two labels or more");
  }
  rule.host = wildcard ? "*." + *h : *h;
  if (is_ip) rule.ip = unmapped(ip::make_address(*h));
  return rule;
}

Result<std::vector<Rule>> parseRules(const std::vector<std::string>& texts) {
  std::vector<Rule> out;
  for (const auto& t : texts) {
    auto r = parseRule(t);
    if (!r) return r.status();
    out.push_back(std::move(*r));
  }
  return out;
}

Status checkDestination(const Url& url, const Policy& policy) {
  auto allows = [&](const std::vector<Rule>& rules) {
    return std::any_of(rules.begin(), rules.end(), [&](const Rule& r) { return r.matches(url); });
  };
  if (!allows(policy.manifest)) {
    return Status::permissionDenied("egress: " + url.origin() +
                                    " is not allowed by the plugin's manifest egress rules [" +
                                    listRules(policy.manifest) + "]");
  }
  if (policy.grant && !allows(*policy.grant)) {
    const std::string grant = policy.system_plugin.empty()
                                  ? "tenant " + policy.tenant + "'s egress grant"
                                  : "the operator's egress list for system plugin " +
                                        policy.system_plugin + " (plugins.enabled[].egress)";
    return Status::permissionDenied("egress: " + url.origin() + " is not allowed by " + grant +
                                    " [" + listRules(*policy.grant) + "]");
  }
  return Status::ok();
}

std::string_view specialRange(const ip::address& address) {
  const ip::address a = unmapped(address);
  if (a.is_v4()) return specialV4(a.to_v4().to_uint());
  const auto v6 = a.to_v6();
  const auto b = v6.to_bytes();
  if (v6.is_unspecified()) return "unspecified";
  if (v6.is_loopback()) return "loopback";
  if (v6.is_multicast()) return "multicast";
  if (v6.is_link_local()) return "link-local";
  if (v6.is_site_local()) return "site-local";
  if ((b[0] & 0xfe) == 0xfc) return "unique-local";
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return "documentation";
  // NAT64 (64:ff9b::/96) and v4-compatible (::/96) forms can carry any IPv4 address.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) return "NAT64";
  if (std::all_of(b.begin(), b.begin() + 12, [](unsigned char x) { return x == 0; })) {
    return "IPv4-compatible";
  }
  if (b[0] == 0x01 && b[1] == 0x00 &&
      std::all_of(b.begin() + 2, b.begin() + 8, [](auto x) { return x == 0; })) {
    return "discard";
  }
  return {};
}

Status checkAddress(const ip::address& address, const Url& url, const Policy& policy) {
  const std::string_view range = specialRange(address);
  if (range.empty() || policy.operator_configured) return Status::ok();
  const ip::address a = unmapped(address);
  if (policy.grant) {
    for (const auto& r : *policy.grant) {
      if (r.ip && *r.ip == a && r.scheme == url.scheme && (!r.port || *r.port == url.port)) {
        return Status::ok();
      }
    }
  }
  const std::string ip = a.to_string();
  const std::string example = url.scheme + "://" + hostForUrl(ip) + ":" + std::to_string(url.port);
  if (!policy.system_plugin.empty()) {
    return Status::permissionDenied("egress: " + url.host + " resolved to " + ip + ", a " +
                                    std::string(range) + " address; only a rule naming it (e.g. " +
                                    example + ") in the operator's egress list for system plugin " +
                                    policy.system_plugin +
                                    " (plugins.enabled[].egress) may reach it");
  }
  return Status::permissionDenied(
      "egress: " + url.host + " resolved to " + ip + ", a " + std::string(range) +
      " address; only a tenant egress grant rule naming it (e.g. " + example + ") may reach it");
}

}  // namespace trellis::kernel::services::egress
