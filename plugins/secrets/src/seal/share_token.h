// The text form of one unseal share, which operators keep and type back in:
//
//   tss1-<threshold>-<index>-<root check>-<64 hex share bytes>-<checksum>
//   tss1-3-02-1a2b3c4d-9f0e…-7c21
//
// The threshold and the root key's check value travel with every share, so a host can
// unseal from the shares alone, report progress, and tell a share of another root key or
// a mistyped one (the checksum) from a wrong one (the check value after combining).
#pragma once

#include <string>
#include <string_view>

#include "crypto/secure_buffer.h"
#include "crypto/shamir.h"
#include "trellis/status.hpp"

namespace trellis::secrets {

struct ShareToken {
  int threshold = 0;
  std::string root_check;  // 8 hex digits, see rootCheck()
  shamir::Share share;
};

// The wiped-on-destruction text of a share.
SecureBuffer encodeShare(const ShareToken& token);
// INVALID naming what is wrong; the message never repeats the share.
Result<ShareToken> decodeShare(std::string_view text);

// A public fingerprint of a root key (8 hex digits of an HMAC under it): names the key in
// messages and tells shares of different keys apart without revealing anything usable.
std::string rootCheck(const SecureBuffer& root);

}  // namespace trellis::secrets
