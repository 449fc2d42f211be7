#include "services/trace/trace_context.h"

#include <random>

namespace trellis::kernel::services {
namespace {

constexpr size_t kVersion00Size = 55;  // "00-" 32 "-" 16 "-" 2
constexpr size_t kMaxTracestate = 512;
constexpr size_t kMaxTracestateMembers = 32;

bool isLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool allZero(std::string_view s) {
  return s.find_first_not_of('0') == std::string_view::npos;
}

// Appends `n` (16 or 32) random lowercase hex digits, never all zeros (the spec forbids
// zero ids). Ids must be unique, not secret: a per-thread generator seeded from the OS keeps
// a span id to a few nanoseconds, which matters on the service-call path.
void appendRandomHex(std::string& out, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  thread_local std::mt19937_64 gen{(static_cast<uint64_t>(std::random_device{}()) << 32) ^
                                   std::random_device{}()};
  const size_t at = out.size();
  out.resize(at + n);
  do {
    for (size_t i = 0; i < n; i += 16) {
      uint64_t bits = gen();
      for (size_t j = 0; j < 16; ++j, bits >>= 4) out[at + i + j] = kHex[bits & 0xf];
    }
  } while (allZero(std::string_view(out).substr(at)));
}

// "00-<trace id>-<a new span id>-<flags>", built in place (one allocation per request);
// an empty `trace_id` gets a new one too.
std::string withNewSpan(std::string_view trace_id, std::string_view flags) {
  std::string out;
  out.reserve(kVersion00Size);
  out.append("00-");
  if (trace_id.empty()) {
    appendRandomHex(out, 32);
  } else {
    out.append(trace_id);
  }
  out.push_back('-');
  appendRandomHex(out, 16);
  out.append("-").append(flags);
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// key = simple-key / multi-tenant-key; simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" /
// "-"/ "*" / "/"); multi-tenant-key = tenant-id "@" system-id.
bool validKey(std::string_view key) {
  auto part = [](std::string_view p, bool digit_first_ok, size_t max) {
    if (p.empty() || p.size() > max) return false;
    char f = p.front();
    if (!((f >= 'a' && f <= 'z') || (digit_first_ok && f >= '0' && f <= '9'))) return false;
    for (char c : p) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' ||
            c == '/')) {
        return false;
      }
    }
    return true;
  };
  size_t at = key.find('@');
  if (at == std::string_view::npos) return part(key, false, 256);
  return part(key.substr(0, at), true, 241) && part(key.substr(at + 1), false, 14);
}

// value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
bool validValue(std::string_view v) {
  if (v.empty() || v.size() > 256 || v.back() == ' ') return false;
  for (char c : v) {
    if (c < 0x20 || c > 0x7e || c == ',' || c == '=') return false;
  }
  return true;
}

}  // namespace

bool TraceContext::validTraceparent(std::string_view v) {
  // version 00 is exactly 55 characters; a later version may append "-<more>" fields.
  if (v.size() < kVersion00Size) return false;
  std::string_view version = v.substr(0, 2);
  if (!isLowerHex(version) || version == "ff") return false;
  if (version == "00" && v.size() != kVersion00Size) return false;
  if (v.size() > kVersion00Size && v[kVersion00Size] != '-') return false;
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  std::string_view trace_id = v.substr(3, 32), span_id = v.substr(36, 16), flags = v.substr(53, 2);
  return isLowerHex(trace_id) && !allZero(trace_id) && isLowerHex(span_id) && !allZero(span_id) &&
         isLowerHex(flags);
}

bool TraceContext::validTracestate(std::string_view v) {
  if (v.size() > kMaxTracestate) return false;
  size_t members = 0;
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view member = trim(v.substr(0, comma));
    v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
    if (member.empty()) continue;  // empty list members are allowed and ignored
    size_t eq = member.find('=');
    if (eq == std::string_view::npos || !validKey(member.substr(0, eq)) ||
        !validValue(member.substr(eq + 1)) || ++members > kMaxTracestateMembers) {
      return false;
    }
  }
  return true;
}

TraceContext TraceContext::root() {
  return TraceContext(withNewSpan("", "00"), "");
}

TraceContext TraceContext::fromHeaders(std::string_view traceparent, std::string_view tracestate) {
  traceparent = trim(traceparent);
  if (!validTraceparent(traceparent)) return root();
  // Only the fields of version 00 are understood; a later version is read as 00 (as the
  // spec asks) and forwarded as 00.
  std::string flags(traceparent.substr(53, 2));
  flags = (std::stoi(flags, nullptr, 16) & 0x01) ? "01" : "00";
  std::string state(validTracestate(tracestate) ? trim(tracestate) : std::string_view());
  return TraceContext(withNewSpan(traceparent.substr(3, 32), flags), std::move(state));
}

std::optional<TraceContext> TraceContext::restore(std::string_view traceparent,
                                                  std::string_view tracestate) {
  if (traceparent.size() != kVersion00Size || !traceparent.starts_with("00-") ||
      !validTraceparent(traceparent)) {
    return std::nullopt;
  }
  return TraceContext(std::string(traceparent),
                      validTracestate(tracestate) ? std::string(tracestate) : std::string());
}

TraceContext TraceContext::child() const {
  return TraceContext(withNewSpan(traceId(), traceparent_.substr(53, 2)), tracestate_);
}

}  // namespace trellis::kernel::services
