#include "kv/kv_routes.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <charconv>

#include "audit/audit.h"
#include "http/json_io.h"
#include "http/times.h"
#include "seal/seal_routes.h"

namespace trellis::secrets::kv {
namespace {

using http::Object;
using Poco::JSON::Array;

constexpr std::string_view kBase = "/secrets/v1/kv/";

using http::answerFailure;

Object::Ptr versionJson(const SecretRecord& r, uint64_t version) {
  Object::Ptr o = new Object;
  const SecretVersion& v = r.versions.at(version);
  o->set("created_time", http::rfc3339(v.created_ms));
  Object::Ptr custom = new Object;
  for (const auto& [k, val] : r.custom_metadata) custom->set(k, val);
  o->set("custom_metadata", custom);
  o->set("deletion_time", http::rfc3339(v.deleted_ms));
  o->set("destroyed", v.destroyed);
  o->set("version", version);
  return o;
}

Object::Ptr wrapData(const Object::Ptr& inner) {
  Object::Ptr o = new Object;
  o->set("data", inner);
  return o;
}

// {"versions":[1,2,…]}: whole numbers >= 1.
Result<std::vector<uint64_t>> versionsOf(const Object::Ptr& body) {
  const std::string wanted = "\"versions\" must be a list of version numbers, e.g. [1,2]";
  if (!body->has("versions")) return std::vector<uint64_t>();
  Array::Ptr list = body->getArray("versions");
  if (!list) return Status::invalid(wanted);
  std::vector<uint64_t> out;
  for (size_t i = 0; i < list->size(); ++i) {
    Poco::Dynamic::Var v = list->get(static_cast<unsigned>(i));
    if (!v.isInteger() || v.isBoolean() || v.convert<int64_t>() < 1) return Status::invalid(wanted);
    out.push_back(v.convert<uint64_t>());
  }
  return out;
}

Result<uint64_t> versionParam(const Request& req) {
  auto text = req.queryParam("version");
  if (!text || text->empty()) return uint64_t{0};
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || end != text->data() + text->size()) {
    return Status::invalid("the \"version\" query parameter must be a whole number");
  }
  return v;
}

class Routes {
 public:
  Routes(const Seal& seal, const KvEngine& engine) : seal_(seal), engine_(engine) {}

  Status writeData(Context& ctx, const Request& req, Response& res) const {
    const std::string path(req.pathParam("path").value_or(""));
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    Object::Ptr data = (*body)->getObject("data");
    if (!data) return res.problem(400, "the body needs \"data\": a JSON object of the secret");
    std::optional<uint64_t> cas;
    if (Object::Ptr options = (*body)->getObject("options")) {
      auto c = http::optionalUint(options, "cas", UINT64_MAX >> 11);
      if (!c) {
        return res.problem(400,
                           "\"options.cas\" must be a whole number: 0 to create only, or "
                           "the current version");
      }
      cas = *c;
    } else if ((*body)->has("options")) {
      return res.problem(400, "\"options\" must be a JSON object, e.g. {\"cas\":0}");
    }
    std::string data_json = http::stringify(data);
    auto written = engine_.write(ctx, path, data_json, cas);
    cleanse(data_json);
    if (!written) return answerFailure(ctx, res, written.status());
    auditOperation(ctx, seal_, "secret.kv.write", "kv", path,
                   "{\"version\":" + std::to_string(written->current) + "}");
    return http::sendJson(res, 200, wrapData(versionJson(*written, written->current)));
  }

  Status readData(Context& ctx, const Request& req, Response& res) const {
    const std::string path(req.pathParam("path").value_or(""));
    auto version = versionParam(req);
    if (!version) return http::sendProblem(res, version.status());
    auto read = engine_.read(ctx, path, *version);
    if (!read) return answerFailure(ctx, res, read.status());
    auditOperation(ctx, seal_, "secret.kv.read", "kv", path,
                   "{\"version\":" + std::to_string(read->version) + "}");
    Object::Ptr inner = new Object;
    inner->set("metadata", versionJson(read->record, read->version));
    if (read->data_json.empty()) {
      inner->set("data", Poco::Dynamic::Var());
      return http::sendJson(res, 404, wrapData(inner));  // deleted or destroyed, as Vault
    }
    auto data = http::parseObject(read->data_json.view());
    if (!data)
      return answerFailure(ctx, res, Status::internal("a stored secret is not a JSON object"));
    inner->set("data", *data);
    std::string text = http::stringify(wrapData(inner));
    Status sent = res.json(200, text);
    cleanse(text);
    return sent;
  }

  Status deleteLatest(Context& ctx, const Request& req, Response& res) const {
    const std::string path(req.pathParam("path").value_or(""));
    return versionsChange(ctx, res, path, "secret.kv.delete", engine_.remove(ctx, path, {}));
  }

  Status changeVersions(Context& ctx, const Request& req, Response& res,
                        std::string_view action) const {
    const std::string path(req.pathParam("path").value_or(""));
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    auto versions = versionsOf(*body);
    if (!versions) return http::sendProblem(res, versions.status());
    Status s;
    if (action == "delete") {
      if (versions->empty()) return res.problem(400, "\"versions\" must list at least one version");
      s = engine_.remove(ctx, path, *versions);
    } else if (action == "undelete") {
      s = engine_.undelete(ctx, path, *versions);
    } else {
      s = engine_.destroy(ctx, path, *versions);
    }
    return versionsChange(ctx, res, path, "secret.kv." + std::string(action), s);
  }

  Status readMetadata(Context& ctx, const Request& req, Response& res) const {
    const std::string path(req.pathParam("path").value_or(""));
    if (req.queryParam("list").value_or("") == "true") return list(ctx, res, path);
    auto record = engine_.metadata(ctx, path);
    if (!record) return answerFailure(ctx, res, record.status());
    Object::Ptr o = new Object;
    o->set("cas_required", record->cas_required);
    o->set("created_time", http::rfc3339(record->created_ms));
    o->set("current_version", record->current);
    Object::Ptr custom = new Object;
    for (const auto& [k, v] : record->custom_metadata) custom->set(k, v);
    o->set("custom_metadata", custom);
    o->set("delete_version_after", "0s");
    o->set("max_versions", record->max_versions);
    o->set("oldest_version", record->oldest());
    o->set("updated_time", http::rfc3339(record->updated_ms));
    Object::Ptr versions = new Object;
    for (const auto& [n, v] : record->versions) {
      Object::Ptr e = new Object;
      e->set("created_time", http::rfc3339(v.created_ms));
      e->set("deletion_time", http::rfc3339(v.deleted_ms));
      e->set("destroyed", v.destroyed);
      versions->set(std::to_string(n), e);
    }
    o->set("versions", versions);
    auditOperation(ctx, seal_, "secret.kv.metadata.read", "kv", path);
    return http::sendJson(res, 200, wrapData(o));
  }

  Status list(Context& ctx, Response& res, std::string_view folder) const {
    auto names = engine_.list(ctx, folder);
    if (!names) return answerFailure(ctx, res, names.status());
    Array::Ptr keys = new Array;
    for (const auto& n : *names) keys->add(n);
    Object::Ptr o = new Object;
    o->set("keys", keys);
    auditOperation(ctx, seal_, "secret.kv.list", "kv", folder);
    return http::sendJson(res, 200, wrapData(o));
  }

  Status writeMetadata(Context& ctx, const Request& req, Response& res) const {
    const std::string path(req.pathParam("path").value_or(""));
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    KvEngine::MetadataUpdate update;
    auto max = http::optionalUint(*body, "max_versions", kMaxMaxVersions);
    if (!max) return http::sendProblem(res, max.status());
    if (*max) update.max_versions = static_cast<uint32_t>(**max);
    auto cas_required = http::optionalBool(*body, "cas_required");
    if (!cas_required) return http::sendProblem(res, cas_required.status());
    update.cas_required = *cas_required;
    if ((*body)->has("custom_metadata")) {
      Object::Ptr custom = (*body)->getObject("custom_metadata");
      if (!custom) return res.problem(400, "\"custom_metadata\" must be an object of strings");
      std::map<std::string, std::string> values;
      for (const auto& name : custom->getNames()) {
        if (!custom->get(name).isString()) {
          return res.problem(400, "\"custom_metadata\" must be an object of strings; \"" + name +
                                      "\" is not a string");
        }
        values[name] = custom->getValue<std::string>(name);
      }
      update.custom_metadata = std::move(values);
    }
    return versionsChange(ctx, res, path, "secret.kv.metadata.write",
                          engine_.updateMetadata(ctx, path, update));
  }

  Status deleteMetadata(Context& ctx, const Request& req, Response& res) const {
    const std::string path(req.pathParam("path").value_or(""));
    return versionsChange(ctx, res, path, "secret.kv.metadata.delete",
                          engine_.removeAll(ctx, path));
  }

 private:
  Status versionsChange(Context& ctx, Response& res, std::string_view path,
                        const std::string& action, const Status& s) const {
    if (!s) return answerFailure(ctx, res, s);
    auditOperation(ctx, seal_, action, "kv", path);
    return res.status(204);
  }

  const Seal& seal_;
  const KvEngine& engine_;
};

}  // namespace

Status addKvRoutes(InitContext& ctx, const Seal& seal, const KvEngine& engine) {
  // Shared by the handlers, which the host keeps until the plugin is destroyed.
  auto routes = std::make_shared<const Routes>(seal, engine);
  auto guard = [&seal](Handler h) { return unsealedOnly(seal, std::move(h)); };
  using Method = Status (Routes::*)(Context&, const Request&, Response&) const;
  auto bind = [&](Method fn) { return unsealedMember(seal, routes, fn); };
  const std::pair<const char*, const char*> methods[] = {
      {"GET", "data/{path...}"},     {"POST", "data/{path...}"},
      {"PUT", "data/{path...}"},     {"DELETE", "data/{path...}"},
      {"GET", "metadata/{path...}"}, {"POST", "metadata/{path...}"},
      {"PUT", "metadata/{path...}"}, {"DELETE", "metadata/{path...}"}};
  const Method handlers[] = {&Routes::readData,      &Routes::writeData,     &Routes::writeData,
                             &Routes::deleteLatest,  &Routes::readMetadata,  &Routes::writeMetadata,
                             &Routes::writeMetadata, &Routes::deleteMetadata};
  for (size_t i = 0; i < std::size(handlers); ++i) {
    const std::string pattern = std::string(kBase) + methods[i].second;
    if (Status s = ctx.route(methods[i].first, pattern, bind(handlers[i])); !s) return s;
  }
  for (std::string action : {"delete", "undelete", "destroy"}) {
    Status s = ctx.route("POST", std::string(kBase) + action + "/{path...}",
                         guard([routes, action](Context& c, const Request& q, Response& r) {
                           return routes->changeVersions(c, q, r, action);
                         }));
    if (!s) return s;
  }
  return ctx.route("GET", std::string(kBase) + "metadata",
                   guard([routes](Context& c, const Request& q, Response& r) {
                     if (q.queryParam("list").value_or("") != "true") {
                       return r.problem(400, "the top folder can only be listed: add ?list=true");
                     }
                     return routes->list(c, r, "");
                   }));
}

}  // namespace trellis::secrets::kv
