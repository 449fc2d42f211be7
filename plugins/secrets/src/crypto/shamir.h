// Shamir's secret sharing over GF(2^8) (the AES field, x^8 + x^4 + x^3 + x + 1): each byte
// of the secret is the constant term of its own random polynomial of degree threshold-1,
// and share i holds every polynomial's value at x = i. Any `threshold` shares give the
// secret back by Lagrange interpolation at 0; fewer give an unrelated value.
//
//   auto shares = shamir::split(root, 5, 3);       // five shares, any three recover
//   auto back = shamir::combine({s[0], s[2], s[4]});
#pragma once

#include <cstdint>
#include <vector>

#include "crypto/secure_buffer.h"
#include "trellis/status.hpp"

namespace trellis::secrets::shamir {

inline constexpr int kMaxShares = 255;

struct Share {
  uint8_t x = 0;  // 1..255; 0 would be the secret itself
  SecureBuffer y;
};

// INVALID unless 2 <= threshold <= shares <= 255 and the secret is not empty.
Result<std::vector<Share>> split(const SecureBuffer& secret, int shares, int threshold);
// INVALID for no shares, an x of 0, the same x twice or shares of different lengths. With
// fewer shares than the threshold the result is wrong, not an error: callers verify it.
Result<SecureBuffer> combine(const std::vector<Share>& shares);

// Field arithmetic, exposed for tests. Constant time: no table lookups keyed by secrets.
uint8_t mul(uint8_t a, uint8_t b);
uint8_t inverse(uint8_t a);  // inverse(0) == 0

}  // namespace trellis::secrets::shamir
