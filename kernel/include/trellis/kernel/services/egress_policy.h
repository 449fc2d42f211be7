// Which outbound HTTP requests and byte streams a plugin may make, decided before and while
// dialling.
//
// A destination rule is `scheme://host[:port]`: scheme http, https, tcp or tls; host an
// exact name, `*.example.com` (any subdomain, not the apex), `*` (any public host) or an IP
// literal ([v6] bracketed); port a number or `*` (default for http(s): the scheme's; tcp://
// and tls:// rules must name one). A rule allows its own scheme only: an https rule never
// allows a tls:// stream. The plugin's manifest lists the rules it needs; a tenant's grant
// (or, for a system plugin's tenant-less calls, the operator's list) may narrow them per
// plugin (a request must then match both). Names are resolved by the kernel, and every
// address it is about to dial is checked: loopback, private (RFC 1918, CGNAT), link-local
// (169.254.0.0/16, the cloud metadata service included), unique-local and link-local IPv6,
// multicast, 0.0.0.0/8 and the like are refused unless the *grant* holds a rule whose host
// is that very address.
//
//   auto url = parseUrl("https://api.example.com/v1/items?page=2");
//   Policy p{.manifest = {*parseRule("https://*.example.com")}};
//   if (Status s = checkDestination(*url, p); !s) ...  // PERMISSION_DENIED, names the rule
//   if (Status s = checkAddress(addr, *url, p); !s) ... // after resolving, per address
#pragma once

#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::kernel::services::egress {

struct Url {
  std::string scheme;  // "http", "https", or "tcp" / "tls" for a byte stream
  std::string host;    // lowercase name, dotted-quad IPv4 or IPv6 (no brackets)
  uint16_t port = 0;
  std::string target;  // path and query, "/" at least ("/" for tcp:// and tls://)
  bool host_is_ip = false;

  bool tls() const { return scheme == "https" || scheme == "tls"; }
  // tcp:// or tls://: a byte stream, not HTTP.
  bool stream() const { return scheme == "tcp" || scheme == "tls"; }
  // scheme://host:port — how logs, metrics and refusals name a destination.
  std::string origin() const;
  // origin + path without the query string: safe for logs.
  std::string redacted() const;
};

// Absolute http(s) URLs, and tcp://host:port or tls://host:port (port required; nothing
// after it but an optional "/"). INVALID naming the problem ("url: ..."): other schemes, no
// host, userinfo (user@host), a port outside 1..65535, characters a host cannot hold,
// percent-encoded hosts, and IPv4 written in any form but canonical dotted decimal
// (2130706433, 0x7f.1, 0177.0.0.1, 127.1), which resolvers read as addresses.
Result<Url> parseUrl(std::string_view text);

// `relative` (a Location header) resolved against `base`; never a tcp:// or tls:// URL.
Result<Url> resolveReference(const Url& base, std::string_view relative);

struct Rule {
  std::string text;  // as written, for messages
  std::string scheme;
  std::string host;              // "*", "*.suffix" (stored with the leading "*."), a name or an IP
  std::optional<uint16_t> port;  // unset = any
  std::optional<boost::asio::ip::address> ip;  // host is an IP literal

  bool matches(const Url& url) const;
};

// INVALID naming the rule for anything but the form above.
Result<Rule> parseRule(std::string_view text);
Result<std::vector<Rule>> parseRules(const std::vector<std::string>& texts);

struct Policy {
  std::vector<Rule> manifest{};
  std::optional<std::vector<Rule>> grant{};  // unset: the tenant did not narrow the manifest
  std::string tenant{};                      // for messages
  // A system plugin's tenant-less call: `grant` is the operator's list for this plugin
  // (plugins.enabled[].egress), and messages name that list instead of a tenant's grant.
  std::string system_plugin{};
  // The kernel's own requests to a URL the operator configured (a JWKS endpoint on an
  // internal identity provider): any address the name resolves to may be dialled.
  bool operator_configured = false;
};

// PERMISSION_DENIED "egress: <origin> is not allowed by the manifest's egress rules
// [rules]" / "... by tenant t's egress grant [rules]" unless both allow the URL.
Status checkDestination(const Url& url, const Policy& policy);

// What makes `address` special: "loopback", "private", "link-local" (169.254.169.254 is
// one), "unique-local", "unspecified", "multicast", "reserved"...; empty for a public one.
std::string_view specialRange(const boost::asio::ip::address& address);

// PERMISSION_DENIED naming the address, its range and the rule when `address`, which
// `url`'s host resolved to, is special and no grant rule names it (with the URL's scheme
// and port).
Status checkAddress(const boost::asio::ip::address& address, const Url& url, const Policy& policy);

}  // namespace trellis::kernel::services::egress
