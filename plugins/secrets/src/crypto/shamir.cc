#include "crypto/shamir.h"

#include <openssl/crypto.h>

#include <string>

namespace trellis::secrets::shamir {

uint8_t mul(uint8_t a, uint8_t b) {
  uint8_t product = 0;
  for (int i = 0; i < 8; ++i) {
    product ^= static_cast<uint8_t>(-(b & 1) & a);
    // Multiply a by x, reducing by the field polynomial when the top bit falls out.
    const uint8_t carry = static_cast<uint8_t>(-(a >> 7));
    a = static_cast<uint8_t>((a << 1) ^ (carry & 0x1b));
    b >>= 1;
  }
  return product;
}

uint8_t inverse(uint8_t a) {
  // a^254 == a^-1 in GF(2^8): square-and-multiply over the fixed exponent.
  uint8_t result = 1;
  uint8_t base = a;
  for (int bit = 0; bit < 8; ++bit) {
    if ((254 >> bit) & 1) result = mul(result, base);
    base = mul(base, base);
  }
  return result;
}

Result<std::vector<Share>> split(const SecureBuffer& secret, int shares, int threshold) {
  if (secret.empty()) return Status::invalid("nothing to split: the secret is empty");
  if (threshold < 2) return Status::invalid("threshold must be at least 2");
  if (shares < threshold) {
    return Status::invalid("shares (" + std::to_string(shares) +
                           ") must be at least the threshold (" + std::to_string(threshold) + ")");
  }
  if (shares > kMaxShares) return Status::invalid("at most 255 shares");
  // coefficients[k][i]: coefficient of x^(k+1) for byte i.
  std::vector<SecureBuffer> coefficients;
  for (int k = 1; k < threshold; ++k) {
    coefficients.push_back(randomBytes(secret.size()));
    if (coefficients.back().size() != secret.size()) {
      return Status::internal("the random generator failed");
    }
  }
  std::vector<Share> out;
  for (int s = 1; s <= shares; ++s) {
    Share share{static_cast<uint8_t>(s), SecureBuffer(secret.size())};
    for (size_t i = 0; i < secret.size(); ++i) {
      // Horner's rule from the highest coefficient down to the secret byte.
      uint8_t y = 0;
      for (int k = threshold - 2; k >= 0; --k) y = mul(y, share.x) ^ coefficients[k].data()[i];
      share.y.data()[i] = mul(y, share.x) ^ secret.data()[i];
    }
    out.push_back(std::move(share));
  }
  return out;
}

Result<SecureBuffer> combine(const std::vector<Share>& shares) {
  if (shares.empty()) return Status::invalid("no shares to combine");
  const size_t len = shares.front().y.size();
  for (size_t a = 0; a < shares.size(); ++a) {
    if (shares[a].x == 0) return Status::invalid("a share has index 0, which no share has");
    if (shares[a].y.size() != len || len == 0) {
      return Status::invalid("the shares have different lengths: they are not of one secret");
    }
    for (size_t b = a + 1; b < shares.size(); ++b) {
      if (shares[a].x == shares[b].x) {
        return Status::invalid("share " + std::to_string(shares[a].x) + " was given twice");
      }
    }
  }
  SecureBuffer secret(len);
  for (size_t j = 0; j < shares.size(); ++j) {
    // Lagrange basis at 0: prod over m != j of x_m / (x_m - x_j); minus is xor here.
    uint8_t num = 1;
    uint8_t den = 1;
    for (size_t m = 0; m < shares.size(); ++m) {
      if (m == j) continue;
      num = mul(num, shares[m].x);
      den = mul(den, shares[m].x ^ shares[j].x);
    }
    const uint8_t basis = mul(num, inverse(den));
    for (size_t i = 0; i < len; ++i) secret.data()[i] ^= mul(basis, shares[j].y.data()[i]);
  }
  return secret;
}

}  // namespace trellis::secrets::shamir
