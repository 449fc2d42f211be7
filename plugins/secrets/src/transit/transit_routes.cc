#include "transit/transit_routes.h"

#include <Poco/JSON/Array.h>

#include "audit/audit.h"
#include "crypto/aead.h"
#include "crypto/encoding.h"
#include "http/json_io.h"
#include "http/sole_member.h"
#include "seal/seal_routes.h"

namespace trellis::secrets::transit {
namespace {

using http::Object;
using Poco::JSON::Array;

constexpr std::string_view kBase = "/secrets/v1/transit/";
constexpr size_t kMaxBatch = 1000;

using http::answerFailure;

Object::Ptr policyJson(std::string_view name, const KeyPolicy& p) {
  Object::Ptr o = new Object;
  o->set("name", std::string(name));
  o->set("type", "aes256-gcm96");
  o->set("latest_version", p.latest);
  o->set("min_decryption_version", p.min_decryption_version);
  o->set("min_encryption_version", 0);
  o->set("deletion_allowed", p.deletion_allowed);
  o->set("exportable", false);
  if (!p.owner.empty()) o->set("owner_plugin", p.owner);  // not in Vault: no plugins there
  Object::Ptr keys = new Object;
  for (const auto& [v, ms] : p.version_created_ms) keys->set(std::to_string(v), ms / 1000);
  o->set("keys", keys);
  Object::Ptr wrap = new Object;
  wrap->set("data", o);
  return wrap;
}

// One item of encrypt/decrypt/rewrap: the value of its input member in, the value of its
// answer's member out.
struct ItemOp {
  std::string_view action;  // of the audit record
  std::string_view input;   // "plaintext" or "ciphertext"
  std::string_view output;  // the answer's member
  bool versioned;           // the answer names key_version too
  bool reveals;             // the answer holds plaintext: wiped once sent
  Result<std::string> (*fn)(const OpenKey&, std::string_view input);
};

Result<std::string> stringMember(const Object::Ptr& item, const std::string& name) {
  if (!item->has(name) || !item->get(name).isString()) {
    return Status::invalid("\"" + name + "\" is missing or not a string");
  }
  return item->getValue<std::string>(name);
}

Result<std::string> encryptValue(const OpenKey& key, std::string_view b64) {
  auto plain = fromBase64(b64);
  if (!plain) return Status::invalid("\"plaintext\" must be base64");
  auto ct = key.encrypt(*plain);
  cleanse(*plain);
  return ct;
}

Result<std::string> decryptValue(const OpenKey& key, std::string_view ciphertext) {
  auto plain = key.decrypt(ciphertext);
  if (!plain) return plain.status();
  return toBase64(plain->view());
}

Result<std::string> rewrapValue(const OpenKey& key, std::string_view ciphertext) {
  auto plain = key.decrypt(ciphertext);
  if (!plain) return plain.status();
  return key.encrypt(plain->view());
}

constexpr ItemOp kEncrypt{
    "secret.transit.encrypt", "plaintext", "ciphertext", true, false, encryptValue};
constexpr ItemOp kDecrypt{
    "secret.transit.decrypt", "ciphertext", "plaintext", false, true, decryptValue};
constexpr ItemOp kRewrap{
    "secret.transit.rewrap", "ciphertext", "ciphertext", true, false, rewrapValue};

// An item's answer, written directly: its values are base64 or "trellis:v<N>:<base64>",
// which hold nothing JSON escapes.
void appendItem(std::string& out, const ItemOp& op, std::string_view value, uint32_t version) {
  out += "{\"";
  out += op.output;
  out += "\":\"";
  out += value;
  out += '"';
  if (op.versioned) {
    out += ",\"key_version\":";
    out += std::to_string(version);
  }
  out += '}';
}

class Routes {
 public:
  Routes(const Seal& seal, const TransitEngine& engine) : seal_(seal), engine_(engine) {}

  Status create(Context& ctx, const Request& req, Response& res) const {
    const std::string name(req.pathParam("name").value_or(""));
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    if ((*body)->has("type") && (*body)->optValue<std::string>("type", "") != "aes256-gcm96") {
      return res.problem(400, "\"type\" must be aes256-gcm96, the only type offered");
    }
    if ((*body)->optValue<bool>("exportable", false)) {
      return res.problem(400, "transit keys are never exportable");
    }
    auto p = engine_.create(ctx, name);
    if (!p) return answerFailure(ctx, res, p.status());
    auditOperation(ctx, seal_, "secret.transit.create", "transit", name);
    return http::sendJson(res, 200, policyJson(name, *p));
  }

  Status read(Context& ctx, const Request& req, Response& res) const {
    const std::string name(req.pathParam("name").value_or(""));
    auto p = engine_.policy(ctx, name);
    if (!p) return answerFailure(ctx, res, p.status());
    return http::sendJson(res, 200, policyJson(name, *p));
  }

  Status remove(Context& ctx, const Request& req, Response& res) const {
    const std::string name(req.pathParam("name").value_or(""));
    if (Status s = engine_.remove(ctx, name); !s) return answerFailure(ctx, res, s);
    auditOperation(ctx, seal_, "secret.transit.delete", "transit", name);
    return res.status(204);
  }

  Status rotate(Context& ctx, const Request& req, Response& res) const {
    const std::string name(req.pathParam("name").value_or(""));
    auto p = engine_.rotate(ctx, name);
    if (!p) return answerFailure(ctx, res, p.status());
    auditOperation(ctx, seal_, "secret.transit.rotate", "transit", name,
                   "{\"version\":" + std::to_string(p->latest) + "}");
    return http::sendJson(res, 200, policyJson(name, *p));
  }

  Status configure(Context& ctx, const Request& req, Response& res) const {
    const std::string name(req.pathParam("name").value_or(""));
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    auto min = http::optionalUint(*body, "min_decryption_version", UINT32_MAX);
    if (!min) return http::sendProblem(res, min.status());
    auto del = http::optionalBool(*body, "deletion_allowed");
    if (!del) return http::sendProblem(res, del.status());
    std::optional<uint32_t> min32;
    if (*min) min32 = static_cast<uint32_t>(**min);
    auto p = engine_.configure(ctx, name, min32, *del);
    if (!p) return answerFailure(ctx, res, p.status());
    auditOperation(ctx, seal_, "secret.transit.config", "transit", name);
    return http::sendJson(res, 200, policyJson(name, *p));
  }

  // The single-item body most clients send, {"<input>":"…"}, is read without a JSON tree
  // (http/sole_member.h); every other body goes through the full parser.
  Status items(Context& ctx, const Request& req, Response& res, const ItemOp& op) const {
    const std::string name(req.pathParam("name").value_or(""));
    const std::string_view raw = req.body();
    const std::optional<std::string_view> sole = http::soleStringMember(raw, op.input);
    Object::Ptr body;
    if (!sole) {
      auto parsed = http::parseObject(raw);
      if (!parsed) return http::sendProblem(res, parsed.status());
      body = *parsed;
    }
    auto opened = engine_.open(ctx, name);
    if (!opened) return answerFailure(ctx, res, opened.status());
    const OpenKey& key = **opened;
    std::string text = "{\"data\":";
    size_t count = 1;
    if (body && body->has("batch_input")) {
      Array::Ptr batch = body->getArray("batch_input");
      if (!batch || batch->size() == 0 || batch->size() > kMaxBatch) {
        return res.problem(400, "\"batch_input\" must be a list of 1 to 1000 objects");
      }
      count = batch->size();
      text += "{\"batch_results\":[";
      for (size_t i = 0; i < batch->size(); ++i) {
        Object::Ptr item = batch->getObject(static_cast<unsigned>(i));
        if (!item) {
          cleanse(text);
          return res.problem(400, "every \"batch_input\" item must be an object");
        }
        if (i) text += ',';
        auto input = stringMember(item, std::string(op.input));
        auto r = input ? op.fn(key, *input) : Result<std::string>(input.status());
        if (input) cleanse(*input);
        if (r) {
          appendItem(text, op, *r, key.policy().latest);
          if (op.reveals) cleanse(*r);
        } else {
          Object::Ptr e = new Object;
          e->set("error", r.status().message());
          text += http::stringify(e);
        }
      }
      text += "]}";
    } else {
      std::string copy;  // the value, when the full parser read the body
      std::string_view input;
      if (sole) {
        input = *sole;
      } else {
        auto member = stringMember(body, std::string(op.input));
        if (!member) return answerFailure(ctx, res, member.status());
        copy = std::move(*member);
        input = copy;
      }
      auto r = op.fn(key, input);
      cleanse(copy);
      if (!r) return answerFailure(ctx, res, r.status());
      appendItem(text, op, *r, key.policy().latest);
      if (op.reveals) cleanse(*r);
    }
    text += '}';
    auditEmit(ctx, op.action, key.auditResource(), "{\"items\":" + std::to_string(count) + "}");
    Status sent = res.json(200, text);
    if (op.reveals) cleanse(text);
    return sent;
  }

  Status datakey(Context& ctx, const Request& req, Response& res) const {
    const std::string name(req.pathParam("name").value_or(""));
    const std::string mode(req.pathParam("mode").value_or(""));
    if (mode != "plaintext" && mode != "wrapped") {
      return res.problem(400,
                         "a data key is asked for as datakey/plaintext/<key> or "
                         "datakey/wrapped/<key>");
    }
    auto body = http::parseObject(req.body());
    if (!body) return http::sendProblem(res, body.status());
    auto bits = http::optionalUint(*body, "bits", 512);
    if (!bits) return http::sendProblem(res, bits.status());
    const uint64_t b = bits->value_or(256);
    if (b != 128 && b != 256 && b != 512)
      return res.problem(400, "\"bits\" must be 128, 256 or 512");
    auto key = engine_.open(ctx, name);
    if (!key) return answerFailure(ctx, res, key.status());
    SecureBuffer dk = randomBytes(b / 8);
    auto ct = (*key)->encrypt(dk.view());
    if (!ct) return answerFailure(ctx, res, ct.status());
    Object::Ptr data = new Object;
    data->set("ciphertext", *ct);
    data->set("key_version", (*key)->policy().latest);
    if (mode == "plaintext") data->set("plaintext", toBase64(dk.view()));
    auditEmit(ctx, "secret.transit.datakey", (*key)->auditResource());
    Object::Ptr wrap = new Object;
    wrap->set("data", data);
    std::string text = http::stringify(wrap);
    Status sent = res.json(200, text);
    cleanse(text);
    return sent;
  }

 private:
  const Seal& seal_;
  const TransitEngine& engine_;
};

}  // namespace

Status addTransitRoutes(InitContext& ctx, const Seal& seal, const TransitEngine& engine) {
  auto routes = std::make_shared<const Routes>(seal, engine);
  auto guard = [&seal](Handler h) { return unsealedOnly(seal, std::move(h)); };
  using Method = Status (Routes::*)(Context&, const Request&, Response&) const;
  auto bind = [&](Method fn) { return unsealedMember(seal, routes, fn); };
  auto items = [&](const ItemOp& op) {
    return guard([routes, &op](Context& c, const Request& q, Response& r) {
      return routes->items(c, q, r, op);
    });
  };
  const std::string base(kBase);
  Status s = ctx.route("POST", base + "keys/{name}", bind(&Routes::create));
  if (s) s = ctx.route("GET", base + "keys/{name}", bind(&Routes::read));
  if (s) s = ctx.route("DELETE", base + "keys/{name}", bind(&Routes::remove));
  if (s) s = ctx.route("POST", base + "keys/{name}/rotate", bind(&Routes::rotate));
  if (s) s = ctx.route("POST", base + "keys/{name}/config", bind(&Routes::configure));
  if (s) s = ctx.route("POST", base + "encrypt/{name}", items(kEncrypt));
  if (s) s = ctx.route("POST", base + "decrypt/{name}", items(kDecrypt));
  if (s) s = ctx.route("POST", base + "rewrap/{name}", items(kRewrap));
  if (s) s = ctx.route("POST", base + "datakey/{mode}/{name}", bind(&Routes::datakey));
  return s;
}

}  // namespace trellis::secrets::transit
