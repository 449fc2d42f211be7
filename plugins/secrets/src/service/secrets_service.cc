#include "service/secrets_service.h"

#include "audit/audit.h"
#include "crypto/encoding.h"
#include "http/json_io.h"

namespace trellis::secrets {
namespace {

using http::Object;

constexpr std::string_view kRefScheme = "secret://";

Result<std::string> member(const Object::Ptr& o, const std::string& name) {
  if (!o->has(name) || !o->get(name).isString()) {
    return Status::invalid("the request needs \"" + name + "\" (a string)");
  }
  return o->getValue<std::string>(name);
}

std::string reply(const Object::Ptr& o) {
  std::string text = http::stringify(o);
  return text;
}

// secret://<path>#<field>
Result<std::pair<std::string, std::string>> parseRef(std::string_view ref) {
  const std::string form = "a secret reference reads secret://<path>#<field>";
  if (!ref.starts_with(kRefScheme)) return Status::invalid(form);
  ref.remove_prefix(kRefScheme.size());
  const size_t hash = ref.rfind('#');
  if (hash == std::string_view::npos || hash == 0 || hash + 1 == ref.size()) {
    return Status::invalid(form);
  }
  return std::make_pair(std::string(ref.substr(0, hash)), std::string(ref.substr(hash + 1)));
}

class Service {
 public:
  Service(const Seal& seal, const kv::KvEngine& kv, const transit::TransitEngine& transit)
      : seal_(seal), kv_(kv), transit_(transit) {}

  Result<std::string> read(Context& ctx, const Object::Ptr& req) const {
    auto ref = member(req, "ref");
    if (!ref) return ref.status();
    auto parts = parseRef(*ref);
    if (!parts) return parts.status();
    auto got = kv_.read(ctx, parts->first, 0);
    if (!got) return got.status();
    audit(ctx, "secret.kv.read", "kv", parts->first);
    if (got->data_json.empty()) {
      return Status::notFound("the current version of " + parts->first + " is deleted");
    }
    auto data = http::parseObject(got->data_json.view());
    if (!data) return Status::internal("a stored secret is not a JSON object");
    if (!(*data)->has(parts->second)) {
      return Status::notFound("the secret " + parts->first + " has no field \"" + parts->second +
                              "\"");
    }
    Poco::Dynamic::Var v = (*data)->get(parts->second);
    Object::Ptr out = new Object;
    out->set("value", v.isString() ? v.convert<std::string>() : v.toString());
    out->set("version", got->version);
    return reply(out);
  }

  Result<std::string> encrypt(Context& ctx, const Object::Ptr& req) const {
    auto key = openKey(ctx, req);
    if (!key) return key.status();
    auto text = member(req, "plaintext");
    if (!text) return text.status();
    auto plain = fromBase64(*text);
    if (!plain) return Status::invalid("\"plaintext\" must be base64");
    auto ct = (*key)->encrypt(*plain);
    cleanse(*plain);
    if (!ct) return ct.status();
    audit(ctx, "secret.transit.encrypt", "transit", req->getValue<std::string>("key"));
    Object::Ptr out = new Object;
    out->set("ciphertext", *ct);
    return reply(out);
  }

  Result<std::string> decrypt(Context& ctx, const Object::Ptr& req) const {
    auto key = openKey(ctx, req);
    if (!key) return key.status();
    auto ct = member(req, "ciphertext");
    if (!ct) return ct.status();
    auto plain = (*key)->decrypt(*ct);
    if (!plain) return plain.status();
    audit(ctx, "secret.transit.decrypt", "transit", req->getValue<std::string>("key"));
    Object::Ptr out = new Object;
    out->set("plaintext", toBase64(plain->view()));
    return reply(out);
  }

  Result<std::string> datakey(Context& ctx, const Object::Ptr& req) const {
    auto key = openKey(ctx, req);
    if (!key) return key.status();
    const std::string mode = req->optValue<std::string>("mode", "plaintext");
    if (mode != "plaintext" && mode != "wrapped") {
      return Status::invalid("\"mode\" must be plaintext or wrapped");
    }
    SecureBuffer dk = randomBytes(32);
    auto ct = (*key)->encrypt(dk.view());
    if (!ct) return ct.status();
    audit(ctx, "secret.transit.datakey", "transit", req->getValue<std::string>("key"));
    Object::Ptr out = new Object;
    out->set("ciphertext", *ct);
    if (mode == "plaintext") out->set("plaintext", toBase64(dk.view()));
    return reply(out);
  }

  // Makes the caller's transit key when it is missing, so a plugin can provision its own key
  // (the audit plugin's per-tenant HMAC key) without an operator step. Never returns key bytes.
  // A key it makes is the calling plugin's (KeyPolicy::owner): the tenant cannot delete it or
  // change its config. Another plugin's key is refused; a key the tenant made is used as is.
  Result<std::string> ensureKey(Context& ctx, const Object::Ptr& req) const {
    auto name = member(req, "key");
    if (!name) return name.status();
    const std::string caller(ctx.caller());
    bool created = true;
    auto made = transit_.create(ctx, *name, caller);
    if (!made && made.status().code() == StatusCode::kConflict) {
      created = false;  // it was there already (or a concurrent call just made it)
      made = transit_.policy(ctx, *name);
    }
    if (!made) return made.status();
    if (!made->owner.empty() && made->owner != caller) {
      return Status::permissionDenied("the transit key \"" + *name + "\" is owned by the plugin " +
                                      made->owner);
    }
    audit(ctx, "secret.transit.ensure_key", "transit", *name);
    Object::Ptr out = new Object;
    out->set("created", created);
    out->set("latest_version", made->latest);
    out->set("owner_plugin", made->owner);
    return reply(out);
  }

  Result<std::string> hmac(Context& ctx, const Object::Ptr& req) const {
    auto key = openKey(ctx, req);
    if (!key) return key.status();
    auto text = member(req, "input");
    if (!text) return text.status();
    auto input = fromBase64(*text);
    if (!input) return Status::invalid("\"input\" must be base64");
    audit(ctx, "secret.transit.hmac", "transit", req->getValue<std::string>("key"));
    Object::Ptr out = new Object;
    out->set("hmac", (*key)->hmac(*input));
    return reply(out);
  }

 private:
  Result<std::shared_ptr<const transit::OpenKey>> openKey(Context& ctx,
                                                          const Object::Ptr& req) const {
    auto name = member(req, "key");
    if (!name) return name.status();
    return transit_.open(ctx, *name);
  }
  void audit(Context& ctx, std::string_view action, std::string_view engine,
             std::string_view name) const {
    Object::Ptr o = new Object;
    o->set("caller", std::string(ctx.caller()));
    auditOperation(ctx, seal_, action, engine, name, http::stringify(o));
  }

  const Seal& seal_;
  const kv::KvEngine& kv_;
  const transit::TransitEngine& transit_;
};

}  // namespace

Status provideSecretsService(InitContext& ctx, const Seal& seal, const kv::KvEngine& kv,
                             const transit::TransitEngine& transit) {
  // status {} -> {"sealed":bool}: answered while sealed and for no tenant (it reads nothing),
  // so a caller can wait for the unseal without acting for tenants meanwhile.
  Status status = ctx.provide(
      kServiceName, "status", [&seal](Context&, std::string_view) -> Result<std::string> {
        return std::string(seal.status().sealed ? R"({"sealed":true})" : R"({"sealed":false})");
      });
  if (!status) return status;
  auto service = std::make_shared<Service>(seal, kv, transit);
  using Method = Result<std::string> (Service::*)(Context&, const Object::Ptr&) const;
  const std::pair<const char*, Method> methods[] = {
      {"read", &Service::read},       {"encrypt", &Service::encrypt},
      {"decrypt", &Service::decrypt}, {"datakey", &Service::datakey},
      {"hmac", &Service::hmac},       {"ensure_key", &Service::ensureKey}};
  for (const auto& [name, fn] : methods) {
    Status s = ctx.provide(
        kServiceName, name,
        [service, &seal, fn](Context& c, std::string_view request) -> Result<std::string> {
          if (seal.status().sealed) {
            return Status::unavailable(std::string(kSealedMessage));
          }
          auto req = http::parseObject(request);
          if (!req) return req.status();
          return ((*service).*fn)(c, *req);
        });
    if (!s) return s;
  }
  return Status::ok();
}

}  // namespace trellis::secrets
