// The data plane's check of signed bearer tokens against the configured issuers
// (auth.jwt.issuers). verify() never blocks and never does I/O: it reads the issuer's current
// key set (an immutable snapshot) and at most asks the background refresher to fetch again.
//
// Key sets come from the issuer's jwks_uri over HTTPS (the kernel's egress client: verified
// TLS, timeouts, a size cap) or from a jwks_file. A background thread refreshes each set every
// jwks_refresh, and sooner when a token names a kid the set does not hold (rotation) — at most
// once per jwks_min_refetch per issuer, so a flood of made-up kids cannot hammer the identity
// provider. A fetch that fails, times out or returns garbage keeps the last good set (logged).
// A jwks_file is read at create() (a bad one stops the start); a jwks_uri is fetched in the
// background, and tokens of that issuer are refused until the first fetch succeeds.
//
//   auto v = TokenVerifier::create(cfg.auth.jwt_issuers);
//   auto who = (*v)->verify(credential);   // who->tenant, who->principal
//   if (!who) spdlog::info("token refused: {}", who.status().message());
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "auth/jwt.h"
#include "trellis/kernel/config/config.h"
#include "trellis/status.hpp"

namespace trellis::kernel::auth {

// Why a signed token was refused: the label of trellis_jwt_refusals_total{reason}. kTenant
// is the data plane's: a valid token naming a tenant that does not exist or is suspended.
enum class TokenRefusal {
  kMalformed,
  kIssuer,
  kNoKeys,
  kAlgorithm,
  kUnknownKid,
  kSignature,
  kClaims,
  kTenant
};
inline constexpr size_t kTokenRefusalCount = 8;
std::string_view refusalName(TokenRefusal r);  // "malformed", "issuer", "no_keys", …

class TokenVerifier {
 public:
  // The JWKS document of an issuer with a jwks_uri, or why it could not be had.
  using Fetch = std::function<Result<std::string>(const config::JwtIssuerConfig&)>;

  struct Options {
    Fetch fetch;                   // empty: HTTPS through the egress client
    std::function<int64_t()> now;  // seconds since the epoch; empty: the system clock
    bool background = true;        // false: no refresher thread (tests drive refresh())
  };

  // INVALID naming the issuer when a jwks_file cannot be read or parsed, or an HTTPS client
  // cannot be made (bad ca_file).
  static Result<std::unique_ptr<TokenVerifier>> create(std::vector<config::JwtIssuerConfig> issuers,
                                                       Options options);
  static Result<std::unique_ptr<TokenVerifier>> create(
      std::vector<config::JwtIssuerConfig> issuers) {
    return create(std::move(issuers), Options{});
  }
  ~TokenVerifier();
  TokenVerifier(const TokenVerifier&) = delete;
  TokenVerifier& operator=(const TokenVerifier&) = delete;

  // The tenant and principal of a valid token; PERMISSION_DENIED or INVALID with a reason
  // for the log (never token or key material), and the kind of refusal in *why (if given).
  // Thread-safe, lock-free on the good path.
  Result<VerifiedToken> verify(std::string_view token, TokenRefusal* why = nullptr) const;

  // Fetches (or re-reads) every issuer's set now, in the caller's thread. For tests and
  // for the refresher; keeps the last good set on failure and returns the first failure.
  Status refresh();

  // Key sets loaded or fetched successfully so far, all issuers (for tests and metrics).
  uint64_t loads() const;

 private:
  struct Issuer;
  explicit TokenVerifier(Options options);
  Status refreshOne(Issuer& issuer);
  void run(std::stop_token stop);
  void requestRefetch(Issuer& issuer) const;

  Options options_;
  std::vector<std::unique_ptr<Issuer>> issuers_;
  mutable std::mutex mu_;  // refresh schedule only; key sets are swapped atomically
  mutable std::condition_variable_any wake_;
  mutable bool woken_ = false;
  std::jthread refresher_;
};

}  // namespace trellis::kernel::auth
