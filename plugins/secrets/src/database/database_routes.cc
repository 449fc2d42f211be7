#include "database/database_routes.h"

#include <Poco/JSON/Array.h>

#include <charconv>
#include <memory>

#include "audit/audit.h"
#include "crypto/secure_buffer.h"
#include "http/json_io.h"
#include "http/times.h"
#include "seal/seal_routes.h"

namespace trellis::secrets::database {
namespace {

using http::Object;
using Poco::JSON::Array;

constexpr std::string_view kBase = "/secrets/v1/";

Result<std::string> requiredString(const Object::Ptr& o, const std::string& name) {
  if (!o->has(name) || !o->get(name).isString()) {
    return Status::invalid("\"" + name + "\" is required and must be a string");
  }
  return o->getValue<std::string>(name);
}

// A list of strings, or one string (Vault takes both for statements and allowed_roles).
Result<std::vector<std::string>> stringList(const Object::Ptr& o, const std::string& name) {
  std::vector<std::string> out;
  if (!o->has(name) || o->isNull(name)) return out;
  const auto v = o->get(name);
  const std::string wanted = "\"" + name + "\" must be a string or a list of strings";
  if (v.isString()) {
    out.push_back(v.convert<std::string>());
    return out;
  }
  Array::Ptr a = o->getArray(name);
  if (!a || a->size() > 64) return Status::invalid(wanted + " (at most 64)");
  for (size_t i = 0; i < a->size(); ++i) {
    if (!a->get(static_cast<unsigned>(i)).isString()) return Status::invalid(wanted);
    out.push_back(a->getElement<std::string>(static_cast<unsigned>(i)));
  }
  return out;
}

// Seconds, as a whole number or a string "90", "90s", "15m", "1h", "2d".
Result<std::optional<uint64_t>> duration(const Object::Ptr& o, const std::string& name) {
  if (!o->has(name) || o->isNull(name)) return std::optional<uint64_t>();
  const auto v = o->get(name);
  const std::string wanted = "\"" + name +
                             "\" must be seconds: a whole number, or a string like \"90s\", "
                             "\"15m\", \"1h\", \"2d\"";
  if (v.isString()) {
    const std::string s = v.convert<std::string>();
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || n > kMaxTtlS) return Status::invalid(wanted);
    const std::string_view unit(end, static_cast<size_t>(s.data() + s.size() - end));
    uint64_t mult = 0;
    if (unit.empty() || unit == "s") mult = 1;
    if (unit == "m") mult = 60;
    if (unit == "h") mult = 3600;
    if (unit == "d") mult = 86400;
    if (mult == 0) return Status::invalid(wanted);
    return std::optional<uint64_t>(n * mult);
  }
  auto n = http::optionalUint(o, name, kMaxTtlS);
  if (!n) return Status::invalid(wanted);
  return *n;
}

Array::Ptr array(const std::vector<std::string>& v) {
  Array::Ptr a = new Array;
  for (const auto& s : v) a->add(s);
  return a;
}

Object::Ptr wrapData(const Object::Ptr& data) {
  Object::Ptr o = new Object;
  o->set("data", data);
  return o;
}

Object::Ptr leaseJson(const Lease& l, uint64_t now) {
  Object::Ptr o = new Object;
  o->set("lease_id", l.id);
  o->set("lease_duration", l.expire_ms > now ? (l.expire_ms - now) / 1000 : 0);
  o->set("renewable", l.expire_ms < l.max_expire_ms);
  return o;
}

class Routes {
 public:
  Routes(const Seal& seal, const DatabaseEngine& engine) : seal_(seal), engine_(engine) {}

  Status writeConfig(Context& ctx, const Request& req, Response& res) const {
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    ConnectionInput in;
    in.name = std::string(req.pathParam("name").value_or(""));
    auto url = requiredString(*body, "connection_url");
    if (!url) return http::sendProblem(res, url.status());
    auto user = requiredString(*body, "username");
    if (!user) return http::sendProblem(res, user.status());
    in.connection_url = *url;
    in.username = *user;
    if ((*body)->has("password")) {
      auto pw = requiredString(*body, "password");
      if (!pw) return http::sendProblem(res, pw.status());
      in.password = std::move(*pw);
    }
    if ((*body)->has("allowed_roles")) {
      auto roles = stringList(*body, "allowed_roles");
      if (!roles) return http::sendProblem(res, roles.status());
      in.allowed_roles = std::move(*roles);
    }
    auto verify = http::optionalBool(*body, "verify_connection");
    if (!verify) return http::sendProblem(res, verify.status());
    in.verify_connection = verify->value_or(true);
    if ((*body)->has("plugin_name") &&
        (*body)->optValue<std::string>("plugin_name", "") != "postgresql-database-plugin") {
      return res.problem(400, "\"plugin_name\" must be postgresql-database-plugin, the only one");
    }
    auto view = engine_.writeConfig(ctx, std::move(in));
    if (!view) return http::answerFailure(ctx, res, view.status());
    auditOperation(ctx, seal_, "secret.database.config.write", "database/config", view->name);
    return configAnswer(res, *view);
  }

  Status readConfig(Context& ctx, const Request& req, Response& res) const {
    auto view = engine_.readConfig(ctx, req.pathParam("name").value_or(""));
    if (!view) return http::answerFailure(ctx, res, view.status());
    return configAnswer(res, *view);
  }

  Status deleteConfig(Context& ctx, const Request& req, Response& res) const {
    const std::string name(req.pathParam("name").value_or(""));
    if (Status s = engine_.deleteConfig(ctx, name); !s) return http::answerFailure(ctx, res, s);
    auditOperation(ctx, seal_, "secret.database.config.delete", "database/config", name);
    return res.status(204);
  }

  Status listConfigs(Context& ctx, const Request&, Response& res) const {
    return listAnswer(ctx, res, DatabaseEngine::kConfigPrefix);
  }
  Status listRoles(Context& ctx, const Request&, Response& res) const {
    return listAnswer(ctx, res, DatabaseEngine::kRolePrefix);
  }

  Status writeRole(Context& ctx, const Request& req, Response& res) const {
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    RoleConfig role;
    role.name = std::string(req.pathParam("name").value_or(""));
    auto db = requiredString(*body, "db_name");
    if (!db) return http::sendProblem(res, db.status());
    role.db_name = *db;
    for (auto [field, target] : {std::pair<const char*, std::vector<std::string>*>{
                                     "creation_statements", &role.creation_statements},
                                 {"revocation_statements", &role.revocation_statements},
                                 {"renew_statements", &role.renew_statements}}) {
      auto list = stringList(*body, field);
      if (!list) return http::sendProblem(res, list.status());
      *target = std::move(*list);
    }
    auto ttl = duration(*body, "default_ttl");
    if (!ttl) return http::sendProblem(res, ttl.status());
    auto max = duration(*body, "max_ttl");
    if (!max) return http::sendProblem(res, max.status());
    role.default_ttl_s = ttl->value_or(kDefaultTtlS);
    role.max_ttl_s = max->value_or(std::max(kDefaultMaxTtlS, role.default_ttl_s));
    if (Status s = engine_.writeRole(ctx, role); !s) return http::answerFailure(ctx, res, s);
    auditOperation(ctx, seal_, "secret.database.role.write", "database/roles", role.name);
    return res.status(204);
  }

  Status readRole(Context& ctx, const Request& req, Response& res) const {
    auto role = engine_.readRole(ctx, req.pathParam("name").value_or(""));
    if (!role) return http::answerFailure(ctx, res, role.status());
    Object::Ptr d = new Object;
    d->set("db_name", role->db_name);
    d->set("creation_statements", array(role->creation_statements));
    d->set("revocation_statements", array(role->revocation_statements));
    d->set("renew_statements", array(role->renew_statements));
    d->set("default_ttl", role->default_ttl_s);
    d->set("max_ttl", role->max_ttl_s);
    return http::sendJson(res, 200, wrapData(d));
  }

  Status deleteRole(Context& ctx, const Request& req, Response& res) const {
    const std::string name(req.pathParam("name").value_or(""));
    if (Status s = engine_.deleteRole(ctx, name); !s) return http::answerFailure(ctx, res, s);
    auditOperation(ctx, seal_, "secret.database.role.delete", "database/roles", name);
    return res.status(204);
  }

  Status creds(Context& ctx, const Request& req, Response& res) const {
    const std::string role(req.pathParam("name").value_or(""));
    auto issued = engine_.issue(ctx, role);
    if (!issued) return http::answerFailure(ctx, res, issued.status());
    auditOperation(ctx, seal_, "secret.database.creds", "database/roles", role,
                   "{\"ttl\":" + std::to_string(issued->lease.default_ttl_s) + "}");
    Object::Ptr answer = leaseJson(issued->lease, issued->lease.issued_ms);
    Object::Ptr d = new Object;
    d->set("username", issued->lease.username);
    d->set("password", issued->password);
    answer->set("data", d);
    std::string text = http::stringify(answer);
    cleanse(issued->password);
    Status sent = res.json(200, text);
    cleanse(text);
    return sent;
  }

  Status lookup(Context& ctx, const Request& req, Response& res) const {
    auto id = leaseId(req);
    if (!id) return http::sendProblem(res, id.status());
    auto lease = engine_.lookup(ctx, *id);
    if (!lease) return http::answerFailure(ctx, res, lease.status());
    const uint64_t now = ctx.nowUnixMs();
    Object::Ptr d = new Object;
    d->set("id", lease->id);
    d->set("issue_time", http::rfc3339(lease->issued_ms));
    d->set("expire_time", http::rfc3339(lease->expire_ms));
    d->set("ttl", lease->expire_ms > now ? (lease->expire_ms - now) / 1000 : 0);
    d->set("renewable", lease->expire_ms < lease->max_expire_ms);
    return http::sendJson(res, 200, wrapData(d));
  }

  Status renew(Context& ctx, const Request& req, Response& res) const {
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    auto id = requiredString(*body, "lease_id");
    if (!id) return http::sendProblem(res, id.status());
    auto inc = duration(*body, "increment");
    if (!inc) return http::sendProblem(res, inc.status());
    auto lease = engine_.renew(ctx, *id, inc->value_or(0));
    if (!lease) return http::answerFailure(ctx, res, lease.status());
    const uint64_t now = ctx.nowUnixMs();
    auditOperation(
        ctx, seal_, "secret.lease.renew", "lease", *id,
        "{\"ttl\":" + std::to_string((lease->expire_ms - std::min(now, lease->expire_ms)) / 1000) +
            "}");
    return http::sendJson(res, 200, leaseJson(*lease, now));
  }

  Status revoke(Context& ctx, const Request& req, Response& res) const {
    auto id = leaseId(req);
    if (!id) return http::sendProblem(res, id.status());
    if (Status s = engine_.revoke(ctx, *id); !s) return http::answerFailure(ctx, res, s);
    auditOperation(ctx, seal_, "secret.lease.revoke", "lease", *id);
    return res.status(204);
  }

  Status revokePrefix(Context& ctx, const Request& req, Response& res) const {
    const std::string prefix(req.pathParam("prefix").value_or(""));
    auto n = engine_.revokePrefix(ctx, prefix);
    if (!n) return http::answerFailure(ctx, res, n.status());
    auditOperation(ctx, seal_, "secret.lease.revoke_prefix", "lease", prefix,
                   "{\"revoked\":" + std::to_string(*n) + "}");
    Object::Ptr d = new Object;
    d->set("revoked", *n);
    return http::sendJson(res, 200, wrapData(d));
  }

 private:
  static Result<std::string> leaseId(const Request& req) {
    auto body = http::parseObject(req.body());
    if (!body) return body.status();
    return requiredString(*body, "lease_id");
  }

  Status configAnswer(Response& res, const ConnectionView& v) const {
    Object::Ptr d = new Object;
    d->set("plugin_name", "postgresql-database-plugin");
    Object::Ptr details = new Object;
    details->set("connection_url", v.connection_url);
    details->set("username", v.username);
    d->set("connection_details", details);
    d->set("allowed_roles", array(v.allowed_roles));
    d->set("updated_time", http::rfc3339(v.updated_ms));
    return http::sendJson(res, 200, wrapData(d));
  }

  Status listAnswer(Context& ctx, Response& res, std::string_view prefix) const {
    auto names = engine_.list(ctx, prefix);
    if (!names) return http::answerFailure(ctx, res, names.status());
    Object::Ptr d = new Object;
    d->set("keys", array(*names));
    return http::sendJson(res, 200, wrapData(d));
  }

  const Seal& seal_;
  const DatabaseEngine& engine_;
};

}  // namespace

Status addDatabaseRoutes(InitContext& ctx, const Seal& seal, const DatabaseEngine& engine) {
  auto routes = std::make_shared<const Routes>(seal, engine);
  using Method = Status (Routes::*)(Context&, const Request&, Response&) const;
  auto bind = [&](Method fn) { return unsealedMember(seal, routes, fn); };
  const std::string db = std::string(kBase) + "database/";
  const std::string leases = std::string(kBase) + "sys/leases/";
  Status s = ctx.route("POST", db + "config/{name}", bind(&Routes::writeConfig));
  if (s) s = ctx.route("GET", db + "config/{name}", bind(&Routes::readConfig));
  if (s) s = ctx.route("DELETE", db + "config/{name}", bind(&Routes::deleteConfig));
  if (s) s = ctx.route("GET", db + "config", bind(&Routes::listConfigs));
  if (s) s = ctx.route("POST", db + "roles/{name}", bind(&Routes::writeRole));
  if (s) s = ctx.route("GET", db + "roles/{name}", bind(&Routes::readRole));
  if (s) s = ctx.route("DELETE", db + "roles/{name}", bind(&Routes::deleteRole));
  if (s) s = ctx.route("GET", db + "roles", bind(&Routes::listRoles));
  if (s) s = ctx.route("GET", db + "creds/{name}", bind(&Routes::creds));
  if (s) s = ctx.route("POST", leases + "lookup", bind(&Routes::lookup));
  if (s) s = ctx.route("POST", leases + "renew", bind(&Routes::renew));
  if (s) s = ctx.route("POST", leases + "revoke", bind(&Routes::revoke));
  if (s) s = ctx.route("POST", leases + "revoke-prefix/{prefix...}", bind(&Routes::revokePrefix));
  return s;
}

}  // namespace trellis::secrets::database
