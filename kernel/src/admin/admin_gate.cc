#include "admin/admin_gate.h"

#include <spdlog/spdlog.h>

#include <memory>

#include "auth/cert_identity.h"
#include "runtime/bearer.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/http/problem.h"
#include "trellis/kernel/http/request_id.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/util/json.h"

namespace trellis::kernel::admin {
namespace bhttp = boost::beast::http;

namespace {

http::Response unauthorized(const http::Request& req, std::string_view detail) {
  auto res = http::problem(401, "Unauthorized", detail, {}, &req);
  res.set(bhttp::field::www_authenticate, "Bearer realm=\"trellis-admin\"");
  return res;
}

std::string traceIdOf(const http::Request& req) {
  auto parent = req.find("traceparent");
  if (parent != req.end()) {
    auto state = req.find("tracestate");
    auto trace = services::TraceContext::restore(
        parent->value(), state == req.end() ? std::string_view() : state->value());
    if (trace) return std::string(trace->traceId());
  }
  return std::string(services::TraceContext::root().traceId());
}

std::string outcomeOf(unsigned status) {
  if (status < 400) return "success";
  if (status == 401 || status == 403) return "denied";
  return "failure";
}

}  // namespace

AdminGate::AdminGate(AdminPrincipals& principals, AuditStream& audit,
                     metrics::MetricsRegistry& metrics)
    : principals_(principals), audit_(audit) {
  auth_failures_ = &metrics
                        .counter("trellis_admin_auth_failures_total",
                                 "Admin API calls refused for a missing, unknown or revoked "
                                 "token",
                                 {})
                        .labels({});
  role_denials_ = &metrics
                       .counter("trellis_admin_role_denials_total",
                                "Admin API calls refused because the principal's role does "
                                "not allow the route",
                                {})
                       .labels({});
}

void AdminGate::auditAuthFailure(const std::string& claimed, const std::string& source,
                                 const std::string& reason) {
  auto previous = failures_.shouldRecord(claimed, source);
  if (!previous) return;  // counted; reported with the next window's first failure
  AuditRecord r;
  r.type = "event";
  r.principal = claimed.empty() ? "unknown" : claimed;
  r.action = "admin.auth_failure";
  r.resource = "admin-api";
  r.outcome = "denied";
  r.parameters = "{\"source\":";
  util::appendJsonString(r.parameters, source);
  r.parameters += ",\"reason\":";
  util::appendJsonString(r.parameters, reason);
  r.parameters += ",\"failures_in_previous_minute\":" + std::to_string(*previous) + "}";
  (void)audit_.write(std::move(r), false);
}

std::optional<Principal> AdminGate::authenticate(const http::Request& req, const http::Peer& peer,
                                                 http::Response* refusal) {
  if (peer.certificate && req.find(bhttp::field::authorization) == req.end()) {
    // No token: the client certificate the listener verified is the credential.
    auto who = principals_.authenticateCertificate(auth::presented(*peer.certificate));
    if (who) return *who;
    auth_failures_->add(1);
    spdlog::info("admin listener: client certificate from {} refused: {} ({})", peer.address,
                 who.status().message(), auth::describeCertificate(*peer.certificate));
    auditAuthFailure("cert:" + peer.certificate->sha256.substr(0, 16), peer.address,
                     who.status().message());
    *refusal = unauthorized(
        req, who.status().message() + "; present Authorization: Bearer <admin token> instead");
    return std::nullopt;
  }
  const std::string_view presented = runtime::bearerCredential(req);
  auto who = principals_.authenticate(presented);
  if (who) return *who;
  auth_failures_->add(1);
  const bool revoked = who.status().code() == StatusCode::kPermissionDenied;
  std::string claimed = AdminPrincipals::claimedId(presented);
  auditAuthFailure(claimed.empty() ? credentialFingerprint(presented) : claimed, peer.address,
                   revoked             ? who.status().message()
                   : presented.empty() ? "no token"
                                       : "unknown token");
  *refusal = unauthorized(req, revoked ? who.status().message()
                                       : "the admin API needs Authorization: Bearer <admin token>");
  return std::nullopt;
}

std::optional<http::Response> AdminGate::screen(const http::Request& req, const http::Peer& peer) {
  http::Response refusal;
  if (authenticate(req, peer, &refusal)) return std::nullopt;
  return refusal;
}

std::optional<AdminGate::Admitted> AdminGate::admit(const http::Request& req, std::string_view path,
                                                    const http::Peer& peer, http::Respond respond,
                                                    std::optional<Requirement> need) {
  http::Response refusal;
  auto principal = authenticate(req, peer, &refusal);
  if (!principal) {
    respond(std::move(refusal));
    return std::nullopt;
  }
  const std::string method(req.method_string());
  const Requirement requirement = need ? *need : kernelRouteRequirement(method, path);
  const bool audited = path != "/metrics";

  AuditRecord record;
  record.type = "admin.request";
  record.principal = principal->id;
  record.name = principal->name;
  record.role = std::string(roleName(principal->role));
  record.action = method + " " + std::string(path);
  record.resource = std::string(path);
  record.parameters = redactedParameters(req.body());
  if (auto q = req.target().find('?'); q != std::string_view::npos) {
    // The query joins the parameters (as text: it may name a tenant, never a secret here).
    record.parameters.pop_back();
    record.parameters += std::string(record.parameters.size() > 1 ? "," : "") + "\"query\":";
    util::appendJsonString(record.parameters, req.target().substr(q + 1));
    record.parameters += "}";
  }
  record.request_id = http::newRequestId();
  record.trace_id = traceIdOf(req);

  if (!satisfies(principal->role, requirement)) {
    role_denials_->add(1);
    auto res = http::problem(403, "Forbidden",
                             "admin principal " + principal->name + " has role " + record.role +
                                 "; " + record.action + " needs " + std::string(requirement.label),
                             {}, &req);
    res.set("X-Request-Id", record.request_id);
    if (audited) {  // one request and one response record, as for every call
      record.outcome = "denied";
      (void)audit_.write(record, false);
      record.type = "admin.response";
      record.status = 403;
      record.parameters = "{}";
      (void)audit_.write(record, false);
    }
    respond(std::move(res));
    return std::nullopt;
  }
  if (!audited) return Admitted{std::move(respond), *principal, record.request_id, record.trace_id};

  record.outcome = "pending";
  if (Status s = audit_.write(record, true); !s) {
    auto res = http::problem(503, "Service Unavailable", s.message(), {}, &req);
    res.set("X-Request-Id", record.request_id);
    respond(std::move(res));
    return std::nullopt;
  }
  // The response record: same request id, the status the caller sees.
  Admitted admitted{{}, *principal, record.request_id, record.trace_id};
  auto shared = std::make_shared<AuditRecord>(std::move(record));
  admitted.respond =
      http::Respond([this, shared, respond = std::move(respond)](http::Response res) {
        shared->type = "admin.response";
        shared->status = static_cast<int>(res.result_int());
        shared->outcome = outcomeOf(res.result_int());
        shared->parameters = "{}";
        res.set("X-Request-Id", shared->request_id);
        (void)audit_.write(*shared, false);
        respond(std::move(res));
      });
  return admitted;
}

}  // namespace trellis::kernel::admin
