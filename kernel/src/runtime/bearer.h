// The credential of "Authorization: Bearer <credential>" (scheme case-insensitive, per
// RFC 6750), shared by the data plane (tenant keys) and the admin plane (admin token).
#pragma once

#include <cctype>
#include <string_view>

#include "trellis/kernel/http/message.h"

namespace trellis::kernel::runtime {

// "" when the header is absent or uses another scheme.
inline std::string_view bearerCredential(const http::Request& req) {
  auto it = req.find(boost::beast::http::field::authorization);
  if (it == req.end()) return {};
  std::string_view v = it->value();
  constexpr std::string_view kScheme = "bearer ";
  if (v.size() <= kScheme.size()) return {};
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(v[i])) != kScheme[i]) return {};
  }
  v.remove_prefix(kScheme.size());
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return v;
}

}  // namespace trellis::kernel::runtime
