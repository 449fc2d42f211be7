#include "seal/share_token.h"

#include <openssl/sha.h>

#include <charconv>
#include <vector>

#include "crypto/encoding.h"

namespace trellis::secrets {
namespace {

constexpr std::string_view kPrefix = "tss1";

std::string checksum(std::string_view body) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest);
  return toHex(std::string_view(reinterpret_cast<const char*>(digest), 2));
}

std::vector<std::string_view> splitDashes(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '-') {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return parts;
}

int parseInt(std::string_view s, int base) {
  int v = -1;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  return (ec == std::errc() && end == s.data() + s.size() && !s.empty()) ? v : -1;
}

}  // namespace

std::string rootCheck(const SecureBuffer& root) {
  return toHex(hmacSha256(root.view(), "trellis-secrets root check").substr(0, 4));
}

SecureBuffer encodeShare(const ShareToken& token) {
  std::string index = toHex(std::string(1, static_cast<char>(token.share.x)));
  std::string body = std::string(kPrefix) + "-" + std::to_string(token.threshold) + "-" + index +
                     "-" + token.root_check + "-" + toHex(token.share.y.view());
  SecureBuffer out(body + "-" + checksum(body));
  cleanse(body);
  return out;
}

Result<ShareToken> decodeShare(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.remove_suffix(1);
  }
  auto parts = splitDashes(text);
  if (parts.size() != 6 || parts[0] != kPrefix) {
    return Status::invalid(
        "this is not an unseal share: shares look like tss1-<threshold>-<index>-<check>-<hex>-"
        "<checksum>");
  }
  const std::string_view body = text.substr(0, text.size() - parts[5].size() - 1);
  if (!equalConstantTime(checksum(body), parts[5])) {
    return Status::invalid("the share's checksum does not match: it was mistyped or cut short");
  }
  ShareToken token;
  token.threshold = parseInt(parts[1], 10);
  const int index = parseInt(parts[2], 16);
  if (token.threshold < 2 || token.threshold > shamir::kMaxShares) {
    return Status::invalid("the share names an impossible threshold");
  }
  if (index < 1 || index > shamir::kMaxShares || parts[2].size() != 2) {
    return Status::invalid("the share names an impossible index");
  }
  if (parts[3].size() != 8 || !fromHex(parts[3])) {
    return Status::invalid("the share's root check is not 8 hex digits");
  }
  auto y = fromHex(parts[4]);
  if (!y || y->size() != 32) return Status::invalid("the share's bytes are not 64 hex digits");
  token.root_check = std::string(parts[3]);
  token.share.x = static_cast<uint8_t>(index);
  token.share.y = SecureBuffer(*y);
  cleanse(*y);
  return token;
}

}  // namespace trellis::secrets
