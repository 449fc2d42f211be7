#include "trellis/kernel/http/router.h"

#include <boost/container/small_vector.hpp>
#include <cstdint>

namespace trellis::kernel::http {
namespace {

// Typical API paths have few segments: keep them on the stack while matching.
using Segments = boost::container::small_vector<std::string_view, 16>;

enum class Kind : uint8_t { kLiteral = 0, kParam = 1, kRest = 2 };

Kind kindOf(std::string_view pattern_segment) {
  if (pattern_segment.empty() || pattern_segment.front() != '{') return Kind::kLiteral;
  return pattern_segment.ends_with("...}") ? Kind::kRest : Kind::kParam;
}

std::string_view paramName(std::string_view pattern_segment) {
  pattern_segment.remove_prefix(1);
  pattern_segment.remove_suffix(pattern_segment.ends_with("...}") ? 4 : 1);
  return pattern_segment;
}

bool isTchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// RFC 3986 pchar without '%': literals are compared byte for byte with the raw path, so a
// literal that would need encoding could never match.
bool isLiteralChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("-._~!$&'()*+,;=:@").find(c) != std::string_view::npos;
}

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "." and "..", also when spelled with %2e, which a plugin decoding the segment would
// otherwise turn into a traversal.
bool isDotSegment(std::string_view s) {
  int dots = 0;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '.') {
      ++i;
    } else if (s.size() - i >= 3 && s[i] == '%' && s[i + 1] == '2' &&
               (s[i + 2] == 'e' || s[i + 2] == 'E')) {
      i += 3;
    } else {
      return false;
    }
    if (++dots > 2) return false;
  }
  return dots > 0;
}

// Splits a raw path ("/a/b", query already removed) into segments; false for paths that
// never match: not absolute, empty segments ("//", trailing '/'), dot segments.
bool splitPath(std::string_view path, Segments& out) {
  if (path.empty() || path.front() != '/') return false;
  if (path.size() == 1) return true;
  size_t start = 1;
  while (true) {
    size_t end = path.find('/', start);
    std::string_view seg = path.substr(start, end == std::string_view::npos ? end : end - start);
    if (seg.empty() || isDotSegment(seg)) return false;
    out.push_back(seg);
    if (end == std::string_view::npos) return true;
    start = end + 1;
  }
}

std::string_view pathOf(std::string_view target) {
  return target.substr(0, target.find('?'));
}

}  // namespace

std::optional<std::string_view> RouteMatch::param(std::string_view name) const {
  for (const auto& [k, v] : params) {
    if (k == name) return v;
  }
  return std::nullopt;
}

Status Router::add(std::string_view method, std::string_view pattern, size_t target) {
  auto invalid = [&](std::string_view why) {
    return Status::invalid("route " + std::string(method) + " " + std::string(pattern) + ": " +
                           std::string(why));
  };
  if (method.empty()) return invalid("empty method");
  if (method != "*") {
    for (char c : method) {
      if (!isTchar(c)) return invalid("method is not an HTTP token");
    }
  }
  if (pattern.empty() || pattern.front() != '/') return invalid("pattern must start with '/'");

  Route route;
  route.method = method;
  route.pattern = pattern;
  route.target = target;
  std::vector<std::string_view> names;
  if (pattern.size() > 1) {
    for (size_t start = 1;;) {
      size_t end = pattern.find('/', start);
      bool last = end == std::string_view::npos;
      std::string_view seg = pattern.substr(start, last ? end : end - start);
      start = end + 1;
      if (seg.empty()) return invalid("empty segment");
      if (route.rest) return invalid("{name...} must be the last segment");
      if (seg.front() == '{') {
        if (seg.back() != '}') return invalid("a parameter must be a whole segment");
        std::string_view name = paramName(seg);
        if (name.empty()) return invalid("empty parameter name");
        for (char c : name) {
          if (!isNameChar(c)) return invalid("parameter names are [A-Za-z0-9_]");
        }
        for (auto n : names) {
          if (n == name) return invalid("duplicate parameter name");
        }
        names.push_back(name);
        route.rest = kindOf(seg) == Kind::kRest;
      } else {
        if (isDotSegment(seg)) return invalid("dot segment");
        for (char c : seg) {
          if (!isLiteralChar(c)) return invalid("literal segments take unencoded pchars only");
        }
      }
      route.segments.emplace_back(seg);
      if (last) break;
    }
  }

  for (const auto& r : routes_) {
    if (r.method != route.method || r.rest != route.rest ||
        r.segments.size() != route.segments.size()) {
      continue;
    }
    bool same = true;
    for (size_t i = 0; i < r.segments.size() && same; ++i) {
      Kind a = kindOf(r.segments[i]), b = kindOf(route.segments[i]);
      same = a == b && (a != Kind::kLiteral || r.segments[i] == route.segments[i]);
    }
    if (same) {
      return Status::conflict("route " + route.method + " " + route.pattern + " conflicts with " +
                              r.pattern);
    }
  }
  routes_.push_back(std::move(route));
  return Status::ok();
}

namespace {

// Whether `segments` (a pattern) matches the path segments.
bool shapeMatches(const std::vector<std::string>& segments, bool rest, const Segments& path) {
  if (rest ? path.size() < segments.size() : path.size() != segments.size()) return false;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (kindOf(segments[i]) == Kind::kLiteral && segments[i] != path[i]) return false;
  }
  return true;
}

// Negative if pattern `a` is more specific than `b` for a path both match: the first
// segment where their kinds differ decides (literal < param < rest).
int compareSpecificity(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    int ka = static_cast<int>(kindOf(a[i])), kb = static_cast<int>(kindOf(b[i]));
    if (ka != kb) return ka - kb;
  }
  return 0;
}

}  // namespace

std::optional<RouteMatch> Router::match(std::string_view method, std::string_view path,
                                        const Visible& visible) const {
  path = pathOf(path);
  Segments segs;
  if (!splitPath(path, segs)) return std::nullopt;

  // How well a route's method fits the request's: 0 not at all, then "*", GET for HEAD, exact.
  auto fit = [method](const Route& r) {
    if (r.method == method) return 3;
    if (method == "HEAD" && r.method == "GET") return 2;
    return r.method == "*" ? 1 : 0;
  };
  const Route* best = nullptr;
  int best_fit = 0;
  for (const auto& r : routes_) {
    int f = fit(r);
    if (f == 0 || !shapeMatches(r.segments, r.rest, segs)) continue;
    if (visible && !visible(r.target)) continue;
    if (best) {
      int c = compareSpecificity(r.segments, best->segments);
      if (c > 0 || (c == 0 && f <= best_fit)) continue;
    }
    best = &r;
    best_fit = f;
  }
  if (!best) return std::nullopt;

  RouteMatch m;
  m.target = best->target;
  for (size_t i = 0; i < best->segments.size(); ++i) {
    Kind k = kindOf(best->segments[i]);
    if (k == Kind::kParam) {
      m.params.emplace_back(paramName(best->segments[i]), segs[i]);
    } else if (k == Kind::kRest) {
      // The rest is the raw remainder, slashes included.
      auto begin = static_cast<size_t>(segs[i].data() - path.data());
      m.params.emplace_back(paramName(best->segments[i]), path.substr(begin));
    }
  }
  return m;
}

bool Router::matchesOtherMethod(std::string_view method, std::string_view path,
                                const Visible& visible) const {
  Segments segs;
  if (!splitPath(pathOf(path), segs)) return false;
  for (const auto& r : routes_) {
    if (r.method != method && r.method != "*" && shapeMatches(r.segments, r.rest, segs) &&
        (!visible || visible(r.target))) {
      return true;
    }
  }
  return false;
}

std::optional<std::string> percentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (s.size() - i < 3) return std::nullopt;
      int hi = hexValue(s[i + 1]), lo = hexValue(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    // A NUL would truncate the value for any C consumer (plugins see {ptr, len}, but a
    // plugin may still hand it to C APIs).
    if (c == '\0') return std::nullopt;
    out += c;
  }
  return out;
}

std::optional<std::string> queryParam(std::string_view query, std::string_view name) {
  if (!query.empty() && query.front() == '?') query.remove_prefix(1);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (key.find_first_of("%+") == std::string_view::npos) {
      if (key != name) continue;
    } else {
      auto decoded = percentDecode(key, true);
      if (!decoded || *decoded != name) continue;
    }
    if (auto v = percentDecode(value, true)) return v;
  }
  return std::nullopt;
}

}  // namespace trellis::kernel::http
