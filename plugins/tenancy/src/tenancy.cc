// trellis/tenancy — tenant self-service, built only on the SDK (ABI 1.1). Every route acts
// on the tenant whose key made the request; the kernel, not this plugin, decides which
// tenant that is and what its plan allows.
//
//   GET    /tenancy/v1/self                      plan, labels, quotas and usage
//   GET    /tenancy/v1/keys                      the tenant's keys (ids and dates)
//   POST   /tenancy/v1/keys?ttl_seconds=N        a new key; the secret is shown once
//   POST   /tenancy/v1/keys/rotate?ttl_seconds=N swaps the calling key for a new one
//   DELETE /tenancy/v1/keys/{id}                 revokes one of the tenant's keys
#include <charconv>
#include <string>
#include <string_view>
#include <trellis/plugin.hpp>

namespace {

using trellis::Context;
using trellis::Request;
using trellis::Response;
using trellis::Status;
using trellis::StatusCode;

// JSON string for host messages, which are UTF-8 text without control characters.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

Status problem(Response& res, int code, std::string_view title, std::string_view detail) {
  if (auto s = res.status(code); !s) return s;
  if (auto s = res.header("Content-Type", "application/problem+json"); !s) return s;
  return res.body("{\"type\":\"about:blank\",\"title\":" + quote(title) +
                  ",\"status\":" + std::to_string(code) + ",\"detail\":" + quote(detail) + "}");
}

// The tenant's own mistakes and limits become 4xx with the host's message (which names the
// quota or key and never holds a secret); a host outage stays an error of ours.
Status answerFailure(Response& res, const Status& failure) {
  switch (failure.code()) {
    case StatusCode::kInvalid: return problem(res, 400, "Bad Request", failure.message());
    case StatusCode::kNotFound: return problem(res, 404, "Not Found", failure.message());
    case StatusCode::kConflict: return problem(res, 409, "Conflict", failure.message());
    case StatusCode::kQuotaExceeded:
    case StatusCode::kPermissionDenied: return problem(res, 403, "Forbidden", failure.message());
    default: return failure;
  }
}

// ttl_seconds from the query: absent = 0 (the plan's longest lifetime).
bool parseTtl(const Request& req, uint64_t& ttl) {
  ttl = 0;
  auto text = req.queryParam("ttl_seconds");
  if (!text) return true;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), ttl);
  return ec == std::errc() && end == text->data() + text->size() && ttl > 0;
}

// A secret in a response must not be cached by anything between us and the tenant.
Status created(Response& res, const std::string& key_json) {
  if (auto s = res.header("Cache-Control", "no-store"); !s) return s;
  return res.json(201, key_json);
}

class Tenancy : public trellis::Plugin {
 public:
  Status init(trellis::InitContext& ctx) override {
    if (!TRELLIS_HOST_HAS(ctx.host(), tenant_key_revoke)) {
      return Status::unimplemented("trellis/tenancy needs a host with ABI 1.1");
    }
    for (auto [method, pattern, fn] : {
             std::tuple{"GET", "/tenancy/v1/self", &Tenancy::self},
             std::tuple{"GET", "/tenancy/v1/keys", &Tenancy::listKeys},
             std::tuple{"POST", "/tenancy/v1/keys", &Tenancy::createKey},
             std::tuple{"POST", "/tenancy/v1/keys/rotate", &Tenancy::rotate},
             std::tuple{"DELETE", "/tenancy/v1/keys/{id}", &Tenancy::revokeKey},
         }) {
      if (auto s = ctx.route(method, pattern, this, fn); !s) return s;
    }
    return Status::ok();
  }

  Status self(Context& ctx, const Request&, Response& res) {
    auto info = ctx.tenantInfo();
    return info ? res.json(200, *info) : answerFailure(res, info.status());
  }

  Status listKeys(Context& ctx, const Request&, Response& res) {
    auto keys = ctx.tenantKeys();
    return keys ? res.json(200, "{\"keys\":" + *keys + "}") : answerFailure(res, keys.status());
  }

  Status createKey(Context& ctx, const Request& req, Response& res) {
    uint64_t ttl = 0;
    if (!parseTtl(req, ttl)) {
      return problem(res, 400, "Bad Request", "ttl_seconds must be a positive integer");
    }
    auto key = ctx.createTenantKey(ttl);
    return key ? created(res, *key) : answerFailure(res, key.status());
  }

  // The kernel swaps the keys in one transaction: never both, never neither.
  Status rotate(Context& ctx, const Request& req, Response& res) {
    uint64_t ttl = 0;
    if (!parseTtl(req, ttl)) {
      return problem(res, 400, "Bad Request", "ttl_seconds must be a positive integer");
    }
    auto key = ctx.rotateTenantKey(ttl);
    return key ? created(res, *key) : answerFailure(res, key.status());
  }

  Status revokeKey(Context& ctx, const Request& req, Response& res) {
    Status s = ctx.revokeTenantKey(req.pathParam("id").value_or(""));
    if (!s) return answerFailure(res, s);
    return res.status(204);
  }
};

}  // namespace

TRELLIS_PLUGIN(Tenancy, "trellis/tenancy", "1.0.0")
