#include "auth/token_verifier.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <sstream>

#include "trellis/kernel/services/egress_client.h"
#include "trellis/kernel/services/egress_policy.h"

namespace trellis::kernel::auth {
namespace {

using Clock = std::chrono::steady_clock;

int64_t systemNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::string> readJwksFile(const std::filesystem::path& file) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  if (ec) return Status::unavailable("cannot read " + file.string() + ": " + ec.message());
  if (size > kMaxJwksBytes) {
    return Status::invalid(file.string() + " is larger than " + std::to_string(kMaxJwksBytes) +
                           " bytes");
  }
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) return Status::unavailable("cannot read " + file.string());
  return text.str();
}

// The kernel's egress client fetching one issuer's set: verified TLS, bounded time and size,
// no redirects.
TokenVerifier::Fetch httpsFetch(std::shared_ptr<services::egress::EgressClient> client) {
  return [client](const config::JwtIssuerConfig& c) -> Result<std::string> {
    namespace egress = services::egress;
    auto url = egress::parseUrl(c.jwks_uri);
    if (!url) return url.status();
    auto rule = egress::parseRule(url->origin());
    if (!rule) return rule.status();
    egress::Policy policy;
    policy.manifest = {*rule};
    policy.operator_configured = true;
    egress::Request req;
    req.url = c.jwks_uri;
    req.headers = {{"Accept", "application/jwk-set+json, application/json"}};
    req.timeouts = {.connect = std::chrono::seconds(5),
                    .first_byte = std::chrono::seconds(5),
                    .total = std::chrono::seconds(10)};
    req.max_response_bytes = kMaxJwksBytes;
    auto res = client->send(req, policy);
    if (!res) return res.status();
    if (res->status != 200) {
      return Status::unavailable(url->redacted() + " answered HTTP " + std::to_string(res->status));
    }
    return std::move(res->body);
  };
}

std::string describeSet(const JwkSet& set) {
  std::string kids;
  for (const auto& k : set.keys) {
    kids += (kids.empty() ? "" : ", ") + (k.kid.empty() ? std::string("(no kid)") : k.kid);
  }
  return std::to_string(set.keys.size()) + " key(s): " + kids;
}

}  // namespace

struct TokenVerifier::Issuer {
  config::JwtIssuerConfig config;
  ClaimRules rules;
  Fetch fetch;                         // jwks_uri issuers
  std::shared_ptr<const JwkSet> keys;  // atomic_load/atomic_store only
  // Guarded by mu_.
  Clock::time_point next_refresh{};
  Clock::time_point last_attempt{};
  bool attempted = false;
};

TokenVerifier::TokenVerifier(Options options) : options_(std::move(options)) {
  if (!options_.now) options_.now = systemNow;
}

TokenVerifier::~TokenVerifier() {
  if (refresher_.joinable()) {
    refresher_.request_stop();
    wake_.notify_all();
    refresher_.join();
  }
}

Result<std::unique_ptr<TokenVerifier>> TokenVerifier::create(
    std::vector<config::JwtIssuerConfig> issuers, Options options) {
  std::unique_ptr<TokenVerifier> v(new TokenVerifier(std::move(options)));
  std::map<std::string, std::shared_ptr<services::egress::EgressClient>> clients;  // by ca_file
  for (auto& c : issuers) {
    auto issuer = std::make_unique<Issuer>();
    issuer->rules = {.issuer = c.issuer,
                     .audience = c.audience,
                     .tenant_claim = c.tenant_claim,
                     .principal_claim = c.principal_claim,
                     .clock_skew = std::min(c.clock_skew, kMaxClockSkew)};
    if (!c.jwks_uri.empty()) {
      if (v->options_.fetch) {
        issuer->fetch = v->options_.fetch;
      } else {
        auto& client = clients[c.ca_file.string()];
        if (!client) {
          services::egress::EgressClient::Options client_options;
          client_options.ca_file = c.ca_file.string();
          client_options.user_agent = "trellis-jwks";
          auto made = services::egress::EgressClient::create(client_options);
          if (!made) {
            return Status::invalid("auth.jwt issuer " + c.issuer + ": " + made.status().message());
          }
          client = std::move(*made);
        }
        issuer->fetch = httpsFetch(client);
      }
    }
    issuer->config = std::move(c);
    v->issuers_.push_back(std::move(issuer));
  }
  // Files load now: a start with a broken key file should fail loudly, not refuse every token.
  for (auto& issuer : v->issuers_) {
    if (issuer->config.jwks_file.empty()) continue;
    if (Status s = v->refreshOne(*issuer); !s) {
      return Status::invalid("auth.jwt issuer " + issuer->config.issuer + ": " + s.message());
    }
  }
  if (v->options_.background && !v->issuers_.empty()) {
    v->refresher_ = std::jthread([raw = v.get()](std::stop_token stop) { raw->run(stop); });
  }
  return v;
}

Status TokenVerifier::refreshOne(Issuer& issuer) {
  const auto& c = issuer.config;
  Result<std::string> text = c.jwks_file.empty() ? issuer.fetch(c) : readJwksFile(c.jwks_file);
  Status failure;
  if (text) {
    auto set = parseJwks(*text);
    if (set) {
      auto next = std::make_shared<const JwkSet>(std::move(*set));
      auto previous = std::atomic_load(&issuer.keys);
      if (!previous || describeSet(*previous) != describeSet(*next)) {
        spdlog::info("jwt: issuer {}: loaded {}", c.issuer, describeSet(*next));
      }
      std::atomic_store(&issuer.keys, std::move(next));
      std::lock_guard lock(mu_);
      issuer.next_refresh = Clock::now() + c.jwks_refresh;
      return Status::ok();
    }
    failure = set.status();
  } else {
    failure = text.status();
  }
  const bool have = std::atomic_load(&issuer.keys) != nullptr;
  spdlog::warn(
      "jwt: issuer {}: key set not {}{}: {}", c.issuer, c.jwks_file.empty() ? "fetched" : "loaded",
      have ? " (keeping the last good set)" : " (tokens refused until it is)", failure.message());
  // Retry sooner than a full refresh period, but no sooner than refetches are allowed.
  std::lock_guard lock(mu_);
  issuer.next_refresh =
      Clock::now() + std::max<std::chrono::seconds>(
                         c.jwks_min_refetch,
                         std::min<std::chrono::seconds>(c.jwks_refresh, std::chrono::seconds(30)));
  return failure;
}

Status TokenVerifier::refresh() {
  Status first;
  for (auto& issuer : issuers_) {
    {
      std::lock_guard lock(mu_);
      issuer->last_attempt = Clock::now();
      issuer->attempted = true;
    }
    Status s = refreshOne(*issuer);
    if (!s && first) first = s;
  }
  return first;
}

uint64_t TokenVerifier::loads() const {
  uint64_t n = 0;
  for (const auto& issuer : issuers_) n += std::atomic_load(&issuer->keys) ? 1 : 0;
  return n;
}

void TokenVerifier::requestRefetch(Issuer& issuer) const {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  if (issuer.attempted && now - issuer.last_attempt < issuer.config.jwks_min_refetch) return;
  if (issuer.next_refresh <= now) return;  // already due
  issuer.next_refresh = now;
  woken_ = true;
  wake_.notify_all();
}

void TokenVerifier::run(std::stop_token stop) {
  std::unique_lock lock(mu_);
  while (!stop.stop_requested()) {
    const auto now = Clock::now();
    Issuer* due = nullptr;
    auto earliest = Clock::time_point::max();
    for (auto& issuer : issuers_) {
      if (issuer->next_refresh <= now) {
        due = issuer.get();
        break;
      }
      earliest = std::min(earliest, issuer->next_refresh);
    }
    if (due) {
      due->last_attempt = now;
      due->attempted = true;
      // Until refreshOne reschedules it, the issuer is not due again.
      due->next_refresh = now + due->config.jwks_refresh;
      lock.unlock();
      (void)refreshOne(*due);
      lock.lock();
      continue;
    }
    wake_.wait_until(lock, stop, earliest, [this] { return woken_; });
    woken_ = false;
  }
}

std::string_view refusalName(TokenRefusal r) {
  switch (r) {
    case TokenRefusal::kMalformed: return "malformed";
    case TokenRefusal::kIssuer: return "issuer";
    case TokenRefusal::kNoKeys: return "no_keys";
    case TokenRefusal::kAlgorithm: return "algorithm";
    case TokenRefusal::kUnknownKid: return "unknown_kid";
    case TokenRefusal::kSignature: return "signature";
    case TokenRefusal::kClaims: return "claims";
    case TokenRefusal::kTenant: return "tenant";
  }
  return "malformed";
}

Result<VerifiedToken> TokenVerifier::verify(std::string_view token, TokenRefusal* why) const {
  TokenRefusal ignored;
  TokenRefusal& reason = why ? *why : ignored;
  auto decoded = decodeJwt(token);
  if (!decoded) {
    reason = TokenRefusal::kMalformed;
    return decoded.status();
  }
  const std::string iss = unverifiedIssuer(*decoded);
  Issuer* issuer = nullptr;
  for (const auto& i : issuers_) {
    if (i->config.issuer == iss) issuer = i.get();
  }
  if (!issuer) {
    reason = TokenRefusal::kIssuer;
    std::string shown = iss.substr(0, 128);
    for (char& ch : shown) ch = (ch >= 0x20 && ch < 0x7f) ? ch : '?';
    return Status::permissionDenied(iss.empty()
                                        ? "token has no string iss"
                                        : "iss \"" + shown + "\" is not a configured issuer");
  }
  auto keys = std::atomic_load(&issuer->keys);
  if (!keys) {
    reason = TokenRefusal::kNoKeys;
    requestRefetch(*issuer);
    return Status::unavailable("issuer " + issuer->config.issuer + ": no key set loaded yet");
  }
  JwtRefusal refusal;
  auto verified = verifyJwt(*decoded, *keys, issuer->rules, options_.now(), &refusal);
  if (verified) return verified;
  if (refusal.failure == JwtFailure::kUnknownKid && !decoded->kid.empty()) {
    requestRefetch(*issuer);  // perhaps the issuer rotated its keys
  }
  switch (refusal.failure) {
    case JwtFailure::kNone:
    case JwtFailure::kMalformed: reason = TokenRefusal::kMalformed; break;
    case JwtFailure::kAlgorithm: reason = TokenRefusal::kAlgorithm; break;
    case JwtFailure::kUnknownKid: reason = TokenRefusal::kUnknownKid; break;
    case JwtFailure::kSignature: reason = TokenRefusal::kSignature; break;
    case JwtFailure::kClaims: reason = TokenRefusal::kClaims; break;
  }
  return verified;
}

}  // namespace trellis::kernel::auth
