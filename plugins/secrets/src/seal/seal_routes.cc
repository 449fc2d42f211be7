#include "seal/seal_routes.h"

#include <Poco/JSON/Array.h>

#include "http/json_io.h"

namespace trellis::secrets {
namespace {

using http::Object;

constexpr std::string_view kPrefix = "/v1/x/trellis/secrets/";
// The root key's check value, which init records in the plugin's own storage (admin routes
// run outside every tenant), shared by every host on one database. Public: it names the key.
constexpr std::string_view kRootCheckKey = "seal/root-check";

// Tells the seal which root key the store was initialized with, if any.
Status learnStoreRoot(Seal& seal, Context& ctx) {
  if (seal.status().initialized) return Status::ok();  // the record is written once, never changed
  auto stored = ctx.kv().get(kRootCheckKey);
  if (stored) seal.knowStoreRoot(stored->value);
  if (stored || stored.status().code() == StatusCode::kNotFound) return Status::ok();
  return stored.status();
}

Object::Ptr statusJson(const SealStatus& s) {
  Object::Ptr o = new Object;
  o->set("sealed", s.sealed);
  o->set("initialized", s.initialized);
  o->set("threshold", s.threshold);
  o->set("progress", s.progress);
  o->set("root_check", s.root_check);
  return o;
}

Status init(Seal& seal, Context& ctx, const Request& req, Response& res) {
  auto body = http::parseObject(req.body());
  if (!body) return http::sendProblem(res, body.status());
  auto shares = http::optionalUint(*body, "shares", shamir::kMaxShares);
  if (!shares) return http::sendProblem(res, shares.status());
  auto threshold = http::optionalUint(*body, "threshold", shamir::kMaxShares);
  if (!threshold) return http::sendProblem(res, threshold.status());
  if (!shares->has_value() || !threshold->has_value()) {
    return res.problem(400,
                       "init needs \"shares\" and \"threshold\", e.g. {\"shares\":5,"
                       "\"threshold\":3}");
  }
  if (Status s = learnStoreRoot(seal, ctx); !s) return http::sendProblem(res, s);
  auto made = seal.init(static_cast<int>(**shares), static_cast<int>(**threshold),
                        [&ctx](std::string_view check) -> Status {
                          auto put = ctx.kv().put(kRootCheckKey, check, Kv::kAbsent);
                          if (put || put.status().code() != StatusCode::kConflict) {
                            return put.status();
                          }
                          return Status::conflict(
                              "the secrets store was initialized meanwhile (on another host?); "
                              "its shares were shown there");
                        });
  if (!made) return http::sendProblem(res, made.status());
  Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
  for (const SecureBuffer& s : *made) list->add(std::string(s.view()));
  Object::Ptr o = new Object;
  o->set("shares", list);
  o->set("threshold", **threshold);
  o->set("root_check", seal.status().root_check);
  o->set("sealed", true);
  ctx.info("secrets: initialized with " + std::to_string(**shares) + " shares, threshold " +
           std::to_string(**threshold) + "; root key " + seal.status().root_check);
  std::string text = http::stringify(o);
  Status sent = res.json(200, text);
  cleanse(text);
  return sent;
}

Status unseal(Seal& seal, Context& ctx, const Request& req, Response& res) {
  auto body = http::parseObject(req.body());
  if (!body) return http::sendProblem(res, body.status());
  auto reset = http::optionalBool(*body, "reset");
  if (!reset) return http::sendProblem(res, reset.status());
  if (reset->value_or(false)) return http::sendJson(res, 200, statusJson(seal.reset()));
  if (!(*body)->has("key") || !(*body)->get("key").isString()) {
    return res.problem(400, "unseal needs {\"key\":\"<one share>\"} or {\"reset\":true}");
  }
  if (Status s = learnStoreRoot(seal, ctx); !s) return http::sendProblem(res, s);
  std::string share = (*body)->getValue<std::string>("key");
  auto status = seal.unseal(share);
  cleanse(share);
  if (!status) return http::sendProblem(res, status.status());
  if (!status->sealed) ctx.info("secrets: unsealed with root key " + status->root_check);
  return http::sendJson(res, 200, statusJson(*status));
}

}  // namespace

Status addSealRoutes(InitContext& ctx, Seal& seal) {
  auto path = [](std::string_view tail) { return std::string(kPrefix) + std::string(tail); };
  Status s = ctx.adminRoute(
      "POST", path("init"), "admin",
      [&seal](Context& c, const Request& q, Response& r) { return init(seal, c, q, r); });
  if (s) {
    s = ctx.adminRoute(
        "POST", path("unseal"), "operator",
        [&seal](Context& c, const Request& q, Response& r) { return unseal(seal, c, q, r); });
  }
  if (s) {
    s = ctx.adminRoute("POST", path("seal"), "operator",
                       [&seal](Context& c, const Request&, Response& r) {
                         seal.seal();
                         c.info("secrets: sealed; the root key is wiped from memory");
                         return http::sendJson(r, 200, statusJson(seal.status()));
                       });
  }
  if (s) {
    s = ctx.adminRoute("GET", path("status"), "operator",
                       [&seal](Context& c, const Request&, Response& r) {
                         if (Status s = learnStoreRoot(seal, c); !s) {
                           return http::sendProblem(r, s);
                         }
                         return http::sendJson(r, 200, statusJson(seal.status()));
                       });
  }
  return s;
}

Handler unsealedOnly(const Seal& seal, Handler h) {
  return [&seal, h = std::move(h)](Context& c, const Request& q, Response& r) {
    if (seal.sealed()) return r.problem(503, kSealedMessage);
    return h(c, q, r);
  };
}

}  // namespace trellis::secrets
