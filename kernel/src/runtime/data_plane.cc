#include "runtime/data_plane.h"

#include <spdlog/spdlog.h>

#include <string>

#include "auth/cert_identity.h"
#include "auth/jwt.h"
#include "runtime/bearer.h"
#include "runtime/call_context.h"
#include "runtime/plugin_call.h"
#include "runtime/responses.h"
#include "services/usage/usage_stream.h"
#include "trellis/kernel/http/problem.h"
#include "trellis/kernel/http/request_id.h"
#include "trellis/kernel/lua/sandbox.h"

namespace trellis::kernel::runtime {
namespace bhttp = boost::beast::http;
using Clock = std::chrono::steady_clock;

namespace {

void addRateLimitHeaders(http::Response& res, const tenants::Ticket& ticket) {
  if (!ticket.rateLimit()) return;
  const auto& r = *ticket.rateLimit();
  setRateLimitHeaders(res, r.limit, r.remaining, r.reset_seconds);
}

bool isHealthProbe(std::string_view path) {
  return path == "/healthz" || path == "/readyz";
}

std::string_view pathOf(std::string_view target) {
  return target.substr(0, target.find('?'));
}

// A request without an Authorization header on a connection whose client certificate the
// listener verified: the certificate is its credential.
bool certificateCaller(const http::Request& req, const http::Peer& peer) {
  return peer.certificate && req.find(bhttp::field::authorization) == req.end();
}

// The tenant stage's refusal of a request whose key did not resolve to an active tenant.
// `cert_refusal`: why a client certificate did not resolve ("" for other credentials).
http::Response tenantRefusal(const tenants::Resolution& who, const http::Request& req,
                             const std::string& request_id, const std::string& cert_refusal) {
  if (who.outcome == tenants::Resolution::Outcome::kSuspended) {
    return http::problem(403, "Forbidden", "tenant " + who.tenant->id + " is suspended",
                         {{"request_id", request_id}}, &req);
  }
  if (!cert_refusal.empty()) {
    // The certificate is the caller's own: saying which check failed tells it nothing about
    // anyone else, and spares the operator a guess.
    auto res = http::problem(401, "Unauthorized", cert_refusal, {{"request_id", request_id}}, &req);
    res.set(bhttp::field::www_authenticate, "Bearer realm=\"trellis\"");
    return res;
  }
  // Unknown, revoked and expired keys and refused tokens look alike to the caller: the
  // log, not the client, learns which check failed.
  auto res = http::problem(401, "Unauthorized",
                           "a valid tenant key or token is required: Authorization: Bearer <key>",
                           {{"request_id", request_id}}, &req);
  // RFC 6750 §3.1: a credential was presented and is not good.
  res.set(bhttp::field::www_authenticate,
          bearerCredential(req).empty() ? "Bearer realm=\"trellis\""
                                        : "Bearer realm=\"trellis\", error=\"invalid_token\"");
  return res;
}

std::string_view tenantOf(const tenants::Resolution& who) {
  return who.tenant ? std::string_view(who.tenant->id) : std::string_view();
}

// 413/429/507 problem+json naming the quota, its limit, when it resets and the decision id.
// For the rate quota the body names the rate; the RateLimit-* headers speak of the burst
// (the requests allowed at once), as the header fields are defined.
http::Response quotaProblem(const http::Request& req, const tenants::Rejection& r,
                            const tenants::TenantView& tenant, const std::string& request_id) {
  const bool too_large = r.http_status == 413;
  const bool rate = r.quota == "requests_per_second";
  const uint64_t limit = rate ? tenant.quotas.requests_per_second.value_or(r.limit) : r.limit;
  std::string detail =
      "tenant " + tenant.id + " exceeded its " + r.quota + " quota of " + std::to_string(limit);
  if (rate) detail += " (burst " + std::to_string(r.limit) + ")";
  const char* title = too_large              ? "Content Too Large"
                      : r.http_status == 507 ? "Insufficient Storage"
                                             : "Too Many Requests";
  auto res = http::problem(r.http_status, title, detail,
                           {{"quota", r.quota},
                            {"limit", std::to_string(limit), true},
                            {"reset_seconds", std::to_string(r.reset_seconds), true},
                            {"decision_id", r.decision_id},
                            {"request_id", request_id}},
                           &req);
  // Waiting helps only with the rate and concurrency quotas.
  if (rate || r.quota == "max_concurrent") {
    setRateLimitHeaders(res, r.limit, r.remaining, r.reset_seconds);
    res.set(bhttp::field::retry_after, std::to_string(std::max<uint64_t>(1, r.reset_seconds)));
  }
  return res;
}

// A policy's refusal (on_request deny, or fail closed) as problem+json.
http::Response policyRefusal(const http::Request& req, const lua::Verdict& v,
                             const std::string& request_id) {
  auto res =
      http::problem(v.status, bhttp::obsolete_reason(static_cast<bhttp::status>(v.status)),
                    v.reason, {{"decision_id", v.decision_id}, {"request_id", request_id}}, &req);
  res.set("X-Request-Id", request_id);
  return res;
}

// W3C trace context: continues the caller's trace or starts one. The plugin sees the
// validated value in place of whatever the client sent (tracestate dropped if invalid).
services::TraceContext acceptTrace(http::Request& req) {
  auto trace = services::TraceContext::fromHeaders(req["traceparent"], req["tracestate"]);
  req.set("traceparent", trace.traceparent());
  if (trace.tracestate().empty()) {
    req.erase("tracestate");
  } else {
    req.set("tracestate", trace.tracestate());
  }
  return trace;
}

// Every problem+json body names the trace, so a client's error report leads to the logs.
void addTraceId(http::Response& res, std::string_view trace_id) {
  if (!res[bhttp::field::content_type].starts_with("application/problem+json")) return;
  std::string& body = res.body();
  size_t close = body.find_last_not_of(" \t\r\n");
  if (close == std::string::npos || body[close] != '}' || body.find("\"trace_id\"") != body.npos) {
    return;
  }
  body.insert(close, std::string(",\"trace_id\":\"").append(trace_id).append("\""));
  res.prepare_payload();
}

}  // namespace

DataPlane::DataPlane(const ActiveRoutes& routes, const tenants::TenantRegistry& tenants,
                     tenants::Admission& admission, exec::BlockingPool& pool, AccessLog& access_log,
                     metrics::MetricsRegistry& metrics, const std::atomic<bool>& ready,
                     lua::PolicyEngine* policy, services::usage::UsageStream* usage)
    : routes_(routes),
      tenants_(tenants),
      admission_(admission),
      pool_(pool),
      access_log_(access_log),
      ready_(ready),
      latency_(metrics
                   .histogram("trellis_http_request_duration_seconds", "Data-plane request latency",
                              {"plane"})
                   .labels({"data"})),
      pool_rejections_(metrics
                           .counter("trellis_blocking_pool_rejections_total",
                                    "Blocking-route requests refused because the pool was full")
                           .labels({})),
      quota_rejections_(metrics.counter("trellis_quota_rejections_total",
                                        "Requests refused by a tenant quota", {"quota"})),
      policy_(policy),
      usage_(usage) {
  auto& family = metrics.counter("trellis_http_requests_total",
                                 "Data-plane requests by status class", {"plane", "code"});
  const char* classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (size_t i = 0; i < requests_by_class_.size(); ++i) {
    requests_by_class_[i] = &family.labels({"data", classes[i]});
  }
  auto& refusals =
      metrics.counter("trellis_jwt_refusals_total",
                      "Signed bearer tokens refused on the data plane, by reason", {"reason"});
  for (size_t i = 0; i < token_refusals_.size(); ++i) {
    token_refusals_[i] =
        &refusals.labels({std::string(auth::refusalName(static_cast<auth::TokenRefusal>(i)))});
  }
}

// Before the body is read: a request without an active tenant is refused here, so the host
// never reads (or buffers) a body for a client it does not know. handle() resolves the key
// again, so a key revoked while the body arrived is refused too.
std::optional<http::Response> DataPlane::screen(const http::Request& req, const http::Peer& peer) {
  const auto started = Clock::now();
  if (isHealthProbe(pathOf(req.target()))) return std::nullopt;
  std::string token_refusal;
  const tenants::Resolution who = resolveCaller(req, peer, &token_refusal);
  if (who.outcome == tenants::Resolution::Outcome::kOk) return std::nullopt;
  authFailed(who, req, peer, token_refusal);
  const std::string request_id = http::newRequestId();
  auto res = tenantRefusal(who, req, request_id,
                           certificateCaller(req, peer) ? token_refusal : std::string());
  const auto trace = services::TraceContext::fromHeaders(req["traceparent"], req["tracestate"]);
  finish(req, peer, res, request_id, tenantOf(who), nullptr, started, trace,
         {.key_id = who.key_id});
  return res;
}

namespace {

// What keeps a token caller's tenant view and principal alive for the request (the
// Resolution's `snapshot`).
struct TokenCaller {
  std::shared_ptr<const tenants::TenantView> tenant;
  std::string principal;
};

}  // namespace

tenants::Resolution DataPlane::resolveCaller(const http::Request& req, const http::Peer& peer,
                                             std::string* token_refusal) const {
  if (certificateCaller(req, peer)) {
    tenants::Resolution r =
        auth::resolveCertificateTenant(tenants_, *peer.certificate, token_refusal);
    uint64_t left_out = 0;
    if (r.outcome != tenants::Resolution::Outcome::kOk && !token_refusal->empty() &&
        refusal_log_.allow(&left_out)) {
      spdlog::info("data plane: client certificate from {} refused: {} ({}){}", peer.address,
                   *token_refusal, auth::describeCertificate(*peer.certificate),
                   util::leftOut(left_out));
    }
    return r;
  }
  const std::string_view credential = bearerCredential(req);
  if (!tokens_ || !auth::looksLikeJwt(credential)) return tenants_.resolve(credential);
  tenants::Resolution r;  // kUnknownKey until proven otherwise
  auth::TokenRefusal why = auth::TokenRefusal::kTenant;
  auto verified = tokens_->verify(credential, &why);
  if (!verified) {
    *token_refusal = verified.status().message();
  } else if (auto view = tenants_.view(verified->tenant); !view) {
    std::string shown = verified->tenant.substr(0, 64);  // a claim: printable in the log
    for (char& c : shown) c = (c >= 0x20 && c < 0x7f && c != '"') ? c : '?';
    *token_refusal = "token of issuer " + verified->issuer + " names tenant \"" + shown +
                     "\", which does not exist";
  } else if (view->status != tenants::TenantStatus::kActive) {
    // 401 like any refused token: the token is not a credential for a suspended tenant.
    *token_refusal = "token of issuer " + verified->issuer + " names tenant " + view->id +
                     ", which is suspended";
  } else {
    auto caller = std::make_shared<TokenCaller>();
    caller->tenant = std::move(view);
    // Prefixed, so a token's subject can never pass for one of the tenant's key ids.
    caller->principal = "jwt:" + verified->principal;
    r.outcome = tenants::Resolution::Outcome::kOk;
    r.tenant = caller->tenant.get();
    r.key_id = caller->principal;
    r.snapshot = std::move(caller);
    return r;
  }
  token_refusals_[static_cast<size_t>(why)]->add();
  if (uint64_t left_out = 0; refusal_log_.allow(&left_out)) {
    spdlog::info("data plane: bearer token from {} refused: {}{}", peer.address, *token_refusal,
                 util::leftOut(left_out));
  }
  return r;
}

void DataPlane::authFailed(const tenants::Resolution& who, const http::Request& req,
                           const http::Peer& peer, const std::string& token_refusal) const {
  using Outcome = tenants::Resolution::Outcome;
  if (!on_auth_failure_ || who.outcome == Outcome::kSuspended) return;
  if (certificateCaller(req, peer)) {
    // The pin is public (anyone who saw the handshake has the certificate) and names it.
    on_auth_failure_(peer.certificate->sha256, peer, "client certificate: " + token_refusal);
    return;
  }
  if (!token_refusal.empty()) {
    on_auth_failure_(bearerCredential(req), peer, "invalid token: " + token_refusal);
    return;
  }
  on_auth_failure_(bearerCredential(req), peer,
                   who.outcome == Outcome::kExpiredKey   ? "expired key"
                   : who.outcome == Outcome::kRevokedKey ? "revoked key"
                   : bearerCredential(req).empty()       ? "no key"
                                                         : "unknown key");
}

void DataPlane::handle(http::Request& req, const http::Peer& peer, http::Respond respond) {
  const auto started = Clock::now();
  std::string request_id = http::newRequestId();
  std::string_view target = req.target();
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);

  if (isHealthProbe(path)) {
    auto res = healthResponse(req, path == "/healthz" || ready_.load(std::memory_order_relaxed));
    res.set("X-Request-Id", request_id);
    respond(std::move(res));
    return;
  }

  services::TraceContext trace = acceptTrace(req);
  auto reject = [&](http::Response res, std::string_view tenant, std::string_view key_id) {
    finish(req, peer, res, request_id, tenant, nullptr, started, trace, {.key_id = key_id});
    respond(std::move(res));
  };

  // Tenant.
  std::string token_refusal;
  const tenants::Resolution who = resolveCaller(req, peer, &token_refusal);
  if (who.outcome != tenants::Resolution::Outcome::kOk) {
    authFailed(who, req, peer, token_refusal);
    reject(tenantRefusal(who, req, request_id,
                         certificateCaller(req, peer) ? token_refusal : std::string()),
           tenantOf(who), who.key_id);
    return;
  }
  const tenants::TenantView& tenant = *who.tenant;

  // Route. The table stays alive (and with it every plugin it names) until this request has
  // answered, even if hot activation swaps in another meanwhile.
  std::shared_ptr<const RouteTable> table = routes_.load();
  // A plugin's routes exist only for the tenants that enabled it, whatever the method.
  auto enabled = [&tenant, &table](size_t t) {
    return tenant.hasPlugin(table->targets[t].plugin->id());
  };
  auto match = table->router.match(req.method_string(), path, enabled);
  if (!match) {
    bool other = table->router.matchesOtherMethod(req.method_string(), path, enabled);
    reject(other ? http::problem(
                       405, "Method Not Allowed",
                       "no route for " + std::string(req.method_string()) + " " + std::string(path),
                       {{"request_id", request_id}}, &req)
                 : http::problem(404, "Not Found", "no route for " + std::string(path),
                                 {{"request_id", request_id}}, &req),
           tenant.id, who.key_id);
    return;
  }

  // Admission.
  tenants::Ticket ticket = admission_.admit(tenant.id, tenant.quotas, req.body().size());
  if (!ticket.admitted()) {
    const tenants::Rejection& r = ticket.rejection();
    quota_rejections_.labels({r.quota}).add(1);
    auto res = quotaProblem(req, r, tenant, request_id);
    if (policy_ && policy_->active()) {
      auto rc = policyContext(tenant, who.key_id, peer, table->targets[match->target]);
      auto v = policy_->onQuotaExceeded(rc, r);
      if (v.evaluated && !v.failed) {
        if (v.status != 0 || !v.reason.empty()) {
          // The policy's status and message replace the default; the quota facts stay.
          const unsigned status = v.status ? v.status : r.http_status;
          auto custom = http::problem(
              status, bhttp::obsolete_reason(static_cast<bhttp::status>(status)),
              v.reason.empty() ? "tenant " + tenant.id + " exceeded its " + r.quota + " quota"
                               : v.reason,
              {{"quota", r.quota},
               {"limit", std::to_string(r.limit), true},
               {"reset_seconds", std::to_string(r.reset_seconds), true},
               {"decision_id", r.decision_id},
               {"request_id", request_id}},
              &req);
          for (const char* h :
               {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"}) {
            if (res.count(h)) custom.set(h, res[h]);
          }
          res = std::move(custom);
        }
        lua::applyHeaderEdits(v.headers, res.base());
      }
    }
    finish(req, peer, res, request_id, tenant.id, nullptr, started, trace,
           {.key_id = who.key_id, .decision_id = r.decision_id});
    if (r.quota == "requests_per_second") {
      // The client may retry after reset_seconds anyway; answering then, not now, keeps a
      // flooding connection from taking the event loop from other tenants.
      tarpit_.hold(std::move(respond), std::move(res),
                   std::min(std::chrono::milliseconds(1000),
                            std::chrono::milliseconds(1000 * r.reset_seconds)));
    } else {
      respond(std::move(res));
    }
    return;
  }

  // Policy: after admission, before the plugin. Without one, this is one load.
  const RouteTarget& route = table->targets[match->target];
  const bool policy_active = policy_ && policy_->active();
  lua::RequestContext rc;
  std::string decision_id;
  if (policy_active) {
    rc = policyContext(tenant, who.key_id, peer, route);
    auto v = policy_->onRequest(rc, req);
    decision_id = std::move(v.decision_id);
    if (v.action == lua::Verdict::Action::kDeny) {
      if (on_policy_denial_) on_policy_denial_(tenant.id, route.pattern, v, request_id);
      auto res = policyRefusal(req, v, request_id);
      addRateLimitHeaders(res, ticket);
      finish(req, peer, res, request_id, tenant.id, &route, started, trace,
             {.key_id = who.key_id, .decision_id = decision_id});
      respond(std::move(res));
      return;
    }
    if (v.action == lua::Verdict::Action::kModify) lua::applyHeaderEdits(v.headers, req.base());
  }
  // A path parameter that does not decode (a bad %xx, or an encoded NUL, which C code
  // would truncate at) is the client's mistake: 400 before any plugin sees it.
  if (auto bad = undecodablePathParam(*match, req, request_id)) {
    if (policy_active) policyOnResponse(rc, req, *bad);
    addRateLimitHeaders(*bad, ticket);
    finish(req, peer, *bad, request_id, tenant.id, &route, started, trace,
           {.key_id = who.key_id, .decision_id = decision_id});
    respond(std::move(*bad));
    return;
  }

  // Call: inline on the event loop (where kv_put_async may suspend it), or on the blocking
  // pool. `keep_alive` holds the route table (and so the plugin) and the tenant snapshot;
  // the request stays alive until `respond`.
  // The request id and trace move into the call: from here on they are the call's.
  auto call = std::make_shared<PluginCall>(
      PluginCall::Site{&route, &tenant, std::string(who.key_id), &req, std::move(*match), path,
                       query, std::move(request_id), std::move(trace)},
      route.blocking ? nullptr : peer.post,
      std::vector<std::shared_ptr<const void>>{table, who.snapshot});
  // After: policy on_response, metrics, access log, usage record, then the answer. The
  // peer, like the request, stays alive and unchanged until `respond`. `respond` moves in
  // unless a full blocking pool still needs it below.
  auto after = [this, &req, &peer, started, respond = route.blocking ? respond : std::move(respond),
                policy_active, ticket = std::make_shared<tenants::Ticket>(std::move(ticket)),
                decision_id = std::move(decision_id)](PluginCall& call,
                                                      trellis_status status) mutable {
    const PluginCall::Site& site = call.site();
    RequestFacts facts{site.principal, decision_id, call.counters()};
    auto res = answerOf(call, status);
    if (policy_active) {
      policyOnResponse(policyContext(*site.tenant, site.principal, peer, *site.target), req, res);
    }
    addRateLimitHeaders(res, *ticket);
    finish(req, peer, res, site.request_id, site.tenant->id, site.target, started, site.trace,
           facts);
    ticket.reset();  // the concurrency slot frees before the bytes go out
    respond(std::move(res));
  };
  if (!route.blocking) {
    call->run(std::move(after));
    return;
  }
  bool queued =
      pool_.trySubmit([call, after = std::move(after)]() mutable { call->run(std::move(after)); });
  if (!queued) {
    pool_rejections_.add(1);
    const PluginCall::Site& site = call->site();
    auto res = http::problem(503, "Service Unavailable", "the server is at capacity; retry",
                             {{"request_id", site.request_id}}, &req);
    res.set(bhttp::field::retry_after, "1");
    finish(req, peer, res, site.request_id, tenant.id, nullptr, started, site.trace,
           {.key_id = who.key_id});
    respond(std::move(res));
  }
}

std::optional<http::Response> DataPlane::undecodablePathParam(const http::RouteMatch& match,
                                                              const http::Request& req,
                                                              const std::string& request_id) {
  for (const auto& [name, raw] : match.params) {
    if (http::percentDecode(raw)) continue;
    auto res = http::problem(400, "Bad Request",
                             "path parameter " + std::string(name) +
                                 " is not valid percent-encoding or holds a NUL byte",
                             {{"request_id", request_id}}, &req);
    res.set("X-Request-Id", request_id);
    return res;
  }
  return std::nullopt;
}

// The answer a finished plugin call makes: the plugin's response, a quota's refusal the
// plugin passed on, or a problem naming the plugin (its message goes to the log only).
http::Response DataPlane::answerOf(PluginCall& call, trellis_status status) {
  const PluginCall::Site& site = call.site();
  const http::Request& req = *site.req;
  const trellis_ctx& ctx = call.ctx();
  if (status == TRELLIS_OK) {
    http::Response res = std::move(call.response());
    res.keep_alive(req.keep_alive());
    res.set("X-Request-Id", site.request_id);
    return res;
  }
  if (status == TRELLIS_QUOTA_EXCEEDED && ctx.refused_quota) {
    // A tenant quota refused one of the plugin's host calls and the plugin passed it on.
    tenants::Rejection r;
    r.quota = ctx.refused_quota;
    r.http_status = r.quota == "max_storage_bytes" ? 507 : 429;
    r.limit = ctx.refused_limit;
    r.decision_id = tenants::newDecisionId();
    quota_rejections_.labels({r.quota}).add(1);
    auto res = quotaProblem(req, r, *site.tenant, site.request_id);
    res.set("X-Request-Id", site.request_id);
    return res;
  }
  unsigned code = httpStatusFor(status);
  // A 4xx is the client's doing (an unknown item, a refused input): worth a line, not an
  // error an operator is paged for.
  spdlog::log(code < 500 ? spdlog::level::info : spdlog::level::err,
              "plugin={} tenant={} request={} {} {} failed: {}{}", site.target->plugin->id(),
              site.tenant->id, site.request_id, site.target->method, site.target->pattern,
              statusCodeName(static_cast<StatusCode>(status)),
              ctx.error.empty() ? "" : ": " + ctx.error);
  // The plugin's message may hold internals: it goes to the log, never to the client.
  auto res =
      http::problem(code, bhttp::obsolete_reason(static_cast<bhttp::status>(code)),
                    "the plugin " + site.target->plugin->id() + " could not handle the request",
                    {{"request_id", site.request_id}}, &req);
  res.set("X-Request-Id", site.request_id);
  return res;
}

// Policies see who presented the key as "key:<id>" (ids are not secret; keys declared in
// trellis.yaml have ids "cfg…").
lua::RequestContext DataPlane::policyContext(const tenants::TenantView& tenant,
                                             std::string_view key_id, const http::Peer& peer,
                                             const RouteTarget& route) const {
  return lua::RequestContext{&tenant, key_id, route.pattern, peer.address, &admission_};
}

void DataPlane::policyOnResponse(const lua::RequestContext& rc, const http::Request& req,
                                 http::Response& res) {
  auto v = policy_->onResponse(rc, req, res);
  if (v.action == lua::Verdict::Action::kModify) {
    lua::applyHeaderEdits(v.headers, res.base());
  } else if (v.action == lua::Verdict::Action::kDeny) {  // failed closed
    std::string request_id(res["X-Request-Id"]);
    if (on_policy_denial_) on_policy_denial_(rc.tenant->id, rc.route, v, request_id);
    res = policyRefusal(req, v, request_id);
  }
}

void DataPlane::finish(const http::Request& req, const http::Peer& peer, http::Response& res,
                       const std::string& request_id, std::string_view tenant,
                       const RouteTarget* target, Clock::time_point started,
                       const services::TraceContext& trace, const RequestFacts& facts) {
  // Every answer carries the ids, whatever a policy did to the headers. (Mostly it is
  // already there: Beast's set() would free and allocate the field again.)
  if (res.count("X-Request-Id") != 1 || res["X-Request-Id"] != request_id) {
    res.set("X-Request-Id", request_id);
  }
  addTraceId(res, trace.traceId());
  auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
  unsigned status = res.result_int();
  requests_by_class_[status >= 100 && status < 600 ? status / 100 : 0]->add(1);
  latency_.observe(static_cast<double>(micros) / 1e6);
  if (usage_) {
    recordUsage(req, res, request_id, tenant, target, static_cast<uint64_t>(micros), trace, facts);
  }
  if (!access_log_.enabled()) return;
  std::string_view target_str = req.target();
  access_log_.record({request_id, "data", peer.address, tenant, req.method_string(),
                      target_str.substr(0, target_str.find('?')),
                      target ? std::string_view(target->pattern) : std::string_view(),
                      target ? std::string_view(target->plugin->id()) : std::string_view(),
                      trace.traceId(), status, res.body().size(), static_cast<uint64_t>(micros)});
}

}  // namespace trellis::kernel::runtime

namespace trellis::kernel::runtime {

// The usage stage: one record per answer, queued for the journal (no disk on this thread).
void DataPlane::recordUsage(const http::Request& req, const http::Response& res,
                            const std::string& request_id, std::string_view tenant,
                            const RouteTarget* target, uint64_t micros,
                            const services::TraceContext& trace, const RequestFacts& facts) {
  services::usage::UsageRecord r;
  r.time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  r.tenant = tenant;
  r.key_id = facts.key_id;
  if (target) {
    r.plugin = target->plugin->id();
    r.route = target->pattern;
  }
  r.method = req.method_string();
  r.status = res.result_int();
  r.bytes_in = req.body().size();
  r.bytes_out = res.body().size();
  r.duration_us = micros;
  r.counters = facts.counters;
  r.decision_id = facts.decision_id;
  r.trace_id = trace.traceId();
  r.request_id = request_id;
  usage_->record(r);
}

}  // namespace trellis::kernel::runtime
