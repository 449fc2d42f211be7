// Method + path-pattern routing with `{param}` segments and a trailing `{rest...}`.
// Built once, then read concurrently without locks (the kernel swaps whole tables).
//
// Matching works on the raw (still percent-encoded) path, segment by segment:
// - a literal segment matches the same bytes only ("/h%65llo" does not match "/hello");
// - `{name}` matches exactly one non-empty segment;
// - a trailing `{name...}` matches ONE OR MORE remaining segments and captures them raw,
//   slashes included ("/files/{p...}" matches "/files/a/b" with p == "a/b", not "/files");
// - paths that are not absolute, hold an empty segment ("//", a trailing '/') or a dot
//   segment ("." or "..", also spelled with %2e) never match anything;
// - anything from '?' on is ignored, so a request target can be passed as is.
//
//   Router r;
//   r.add("GET", "/hello/{name}", 7);
//   auto m = r.match("GET", "/hello/ann");   // m->target == 7, m->param("name") == "ann"
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::kernel::http {

struct RouteMatch {
  size_t target = 0;  // the value given to add()
  // Raw (still percent-encoded) parameter values, views into the matched path.
  std::vector<std::pair<std::string_view, std::string_view>> params;

  std::optional<std::string_view> param(std::string_view name) const;
};

class Router {
 public:
  // Fails with INVALID for a malformed pattern (must start with '/', params non-empty
  // and unique, `{x...}` only last) and CONFLICT when the same method and an equivalent
  // pattern (same shape, whatever the parameter names) are already registered.
  // Method "*" matches any method.
  Status add(std::string_view method, std::string_view pattern, size_t target);

  // Which targets a caller may reach; the others are as if never added (a tenant's plugins).
  using Visible = std::function<bool(size_t target)>;

  // Literal segments win over parameters, parameters over a trailing rest, comparing
  // segments left to right (the first segment where two patterns differ decides); between
  // equally specific patterns an exact method wins, then GET for HEAD (RFC 9110 §9.3.2: HEAD
  // works wherever GET does), then "*". nullopt if no visible route matches.
  std::optional<RouteMatch> match(std::string_view method, std::string_view path,
                                  const Visible& visible = {}) const;

  // True if some visible route matches the path with another method (for 405 vs 404).
  bool matchesOtherMethod(std::string_view method, std::string_view path,
                          const Visible& visible = {}) const;

 private:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;  // "{name}" kept verbatim
    bool rest = false;
    size_t target = 0;
  };
  std::vector<Route> routes_;
};

// Percent-decodes a path segment or query component ('+' is a space only when
// `plus_is_space`). nullopt for malformed escapes and for a decoded NUL.
std::optional<std::string> percentDecode(std::string_view s, bool plus_is_space = false);

// First value of `name` in a raw query string ("a=1&b=2", a leading '?' is skipped),
// percent-decoded with '+' as a space. "a" and "a=" give "". Pairs that fail to decode are
// skipped. nullopt if absent.
std::optional<std::string> queryParam(std::string_view query, std::string_view name);

}  // namespace trellis::kernel::http
