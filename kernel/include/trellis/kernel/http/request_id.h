// Request ids: 128 bits from OpenSSL's CSPRNG as 32 hex digits, so an id says nothing about
// how many requests came before it (a tenant cannot count other tenants' traffic) and ids
// from different hosts or restarts do not collide.
//
//   res.set("X-Request-Id", newRequestId());
#pragma once

#include <string>

namespace trellis::kernel::http {

// Thread-safe; draws randomness in batches, so most calls take no lock.
std::string newRequestId();

}  // namespace trellis::kernel::http
