// RFC 3339 times as Vault shows them ("2026-12-03T07:45:16.123Z"); "" for 0.
#pragma once

#include <cstdint>
#include <string>

namespace trellis::secrets::http {

std::string rfc3339(uint64_t unix_ms);

}  // namespace trellis::secrets::http
