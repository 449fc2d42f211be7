// trellis/registry — the marketplace registry as a Trellis plugin, built only on the SDK's
// C++ wrapper and marketplace/client. One catalogue, stored in the KV of the one tenant the
// config names; registry tokens (X-Registry-Token) decide who may change it. The HTTP API
// is specified in docs/marketplace.md ("Registry HTTP API"); running one is described in
// marketplace/registry/README.md.
#include <Poco/JSON/Array.h>

#include <memory>
#include <optional>
#include <string>
#include <trellis/plugin.hpp>

#include "config.h"
#include "http.h"
#include "metadata.h"
#include "packages.h"
#include "publisher_keys.h"
#include "records.h"
#include "store.h"
#include "tokens.h"
#include "trellis/marketplace/encoding.h"

namespace trellis::registry {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr std::string_view kTokenHeader = "X-Registry-Token";
constexpr size_t kMaxReasonBytes = 500;
constexpr size_t kMaxDescriptionBytes = 200;
constexpr size_t kMaxTags = 10;

UnixSeconds nowOf(const Context& ctx) {
  return static_cast<UnixSeconds>(ctx.nowUnixMs() / 1000);
}

bool isTag(std::string_view t) {
  return !t.empty() && t.size() <= 32 && isIdPart(t);
}

// "a,b" -> {"a","b"}; nullopt if a tag is malformed or there are too many.
std::optional<std::vector<std::string>> parseTags(std::string_view text) {
  std::vector<std::string> tags;
  if (text.empty()) return tags;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != ',') continue;
    std::string_view t = text.substr(start, i - start);
    if (!isTag(t)) return std::nullopt;
    if (std::find(tags.begin(), tags.end(), t) == tags.end()) tags.emplace_back(t);
    start = i + 1;
  }
  if (tags.size() > kMaxTags) return std::nullopt;
  return tags;
}

// A boolean query parameter: absent or empty is false.
std::optional<bool> parseFlag(std::string_view text) {
  if (text.empty() || text == "false" || text == "0") return false;
  if (text == "true" || text == "1") return true;
  return std::nullopt;
}

class Registry : public Plugin {
 public:
  Status init(InitContext& ctx) override {
    auto parsed = RegistryConfig::parse(ctx.config("").value_or("{}"));
    if (!parsed) return parsed.status();
    config_ = std::make_unique<RegistryConfig>(std::move(*parsed));
    auto root = config_->signedRoot();
    if (!root)
      return Status::invalid("trellis/registry: cannot sign root.json: " + root.status().message());
    root_ = std::move(*root);
    tokens_ = std::make_unique<Tokens>(config_->admin_token_sha256);
    packages_ = std::make_unique<Packages>(*config_);
    metadata_ = std::make_unique<Metadata>(*config_);

    using R = Registry;
    const std::tuple<const char*, const char*, Api> routes[] = {
        {"GET", "/root.json", &R::getRoot},
        {"GET", "/timestamp.json", &R::getTimestamp},
        {"GET", "/index.json", &R::getIndex},
        {"GET", "/packages", &R::search},
        {"POST", "/packages", &R::publish},
        {"GET", "/packages/{ns}/{name}", &R::packageInfo},
        {"GET", "/packages/{ns}/{name}/versions", &R::listVersions},
        {"GET", "/packages/{ns}/{name}/versions/{version}", &R::versionInfo},
        {"GET", "/packages/{ns}/{name}/versions/{version}/download", &R::download},
        {"POST", "/packages/{ns}/{name}/versions/{version}/yank", &R::yank},
        {"POST", "/packages/{ns}/{name}/versions/{version}/unyank", &R::unyank},
        {"GET", "/namespaces/{ns}", &R::getNamespace},
        {"POST", "/namespaces/{ns}/keys", &R::addKey},
        {"POST", "/namespaces/{ns}/keys/{keyid}/revoke", &R::revoke},
        {"POST", "/tokens", &R::createToken},
        {"GET", "/tokens", &R::listTokens},
        {"DELETE", "/tokens/{id}", &R::deleteToken},
    };
    for (const auto& [method, pattern, fn] : routes) {
      if (Status s = route(ctx, method, pattern, fn); !s) return s;
    }
    // Clients refuse every index once root.json has expired, and only the operator can
    // sign a new root: say so early and loudly.
    const UnixSeconds left = config_->root_expires - nowOf(ctx);
    if (left < 30 * 86'400) {
      ctx.warn("root.json " + std::string(left <= 0 ? "expired" : "expires") + " at " +
               std::to_string(config_->root_expires) +
               ": clients refuse an expired root; raise root_version and root_expires");
    }
    // Key ids only: the keys themselves never reach a log.
    ctx.info("registry serving tenant \"" + config_->tenant + "\"; timestamp key " +
             config_->timestamp_key->keyId() + ", " + std::to_string(config_->root_keys.size()) +
             " root key(s), root version " + std::to_string(config_->root_version));
    return Status::ok();
  }

 private:
  using Api = Status (Registry::*)(Context&, const Request&, Response&, const Store&);

  Status route(InitContext& ctx, std::string_view method, std::string_view pattern, Api fn) {
    return ctx.route(method, "/registry/v1" + std::string(pattern),
                     [this, fn](Context& c, const Request& q, Response& r) -> Status {
                       // One catalogue: the host scopes storage by tenant, so only the
                       // configured tenant's requests see it.
                       if (c.tenant() != config_->tenant) {
                         return problem(r, 403,
                                        "this registry serves tenant \"" + config_->tenant +
                                            "\"; call it with an API key of that tenant");
                       }
                       Store store(c.kv(), config_->chunk_bytes);
                       return (this->*fn)(c, q, r, store);
                     });
  }

  // The caller behind X-Registry-Token; nullopt after answering 401 or 403.
  std::optional<Caller> authenticate(Context& ctx, const Request& req, Response& res,
                                     const Store& store, Status& answered) const {
    auto token = req.header(kTokenHeader);
    if (!token || token->empty()) {
      answered = problem(res, 401, "this needs a registry token in the X-Registry-Token header");
      return std::nullopt;
    }
    auto caller = tokens_->authenticate(store, *token, nowOf(ctx));
    if (!caller) {
      answered = answerFailure(res, caller.status());
      return std::nullopt;
    }
    return *caller;
  }

  // The id from {ns}/{name}; nullopt after answering 400.
  static std::optional<std::string> pathId(const Request& req, Response& res, Status& answered) {
    std::string ns(req.pathParam("ns").value_or(""));
    std::string name(req.pathParam("name").value_or(""));
    if (!isIdPart(ns) || !isIdPart(name)) {
      answered = problem(res, 400, "\"" + ns + "/" + name + "\" is not a valid plugin id");
      return std::nullopt;
    }
    return ns + "/" + name;
  }

  // After a change: re-sign the index. The change itself is stored either way; if signing
  // fails it appears with the next change or refresh, so the caller is not told to retry.
  std::optional<uint64_t> republish(Context& ctx, const Store& store) const {
    auto version = metadata_->republish(store, nowOf(ctx));
    if (!version) {
      ctx.warn("index not re-signed after a change: " + version.status().message());
      return std::nullopt;
    }
    return *version;
  }

  // ---- signed metadata ----

  Status getRoot(Context&, const Request&, Response& res, const Store&) {
    return res.json(200, root_);
  }
  Status getTimestamp(Context& ctx, const Request&, Response& res, const Store& store) {
    auto bytes = metadata_->timestamp(store, nowOf(ctx));
    return bytes ? res.json(200, *bytes) : answerFailure(res, bytes.status());
  }
  Status getIndex(Context& ctx, const Request&, Response& res, const Store& store) {
    auto bytes = metadata_->index(store, nowOf(ctx));
    return bytes ? res.json(200, *bytes) : answerFailure(res, bytes.status());
  }

  // ---- packages ----

  Status search(Context&, const Request& req, Response& res, const Store& store) {
    auto found = packages_->search(store, std::string(req.queryParam("q").value_or("")),
                                   std::string(req.queryParam("tag").value_or("")));
    return found ? replyJson(res, 200, *found) : answerFailure(res, found.status());
  }

  Status publish(Context& ctx, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto caller = authenticate(ctx, req, res, store, answered);
    if (!caller) return answered;
    if (req.body().size() > config_->max_package_bytes) {
      return problem(res, 413,
                     "the package is " + std::to_string(req.body().size()) +
                         " bytes; this registry accepts at most " +
                         std::to_string(config_->max_package_bytes));
    }
    auto tags = parseTags(req.queryParam("tags").value_or(""));
    if (!tags) {
      return problem(res, 400, "tags must be at most 10 comma-separated [a-z0-9][a-z0-9-]{0,31}");
    }
    auto dry_run = parseFlag(req.queryParam("dry_run").value_or(""));
    if (!dry_run) return problem(res, 400, "dry_run must be true, false, 1 or 0");
    auto entry =
        packages_->publish(store, *caller, std::string(req.body()), *tags, nowOf(ctx), *dry_run);
    if (!entry) {
      ctx.info(std::string(*dry_run ? "dry-run " : "") +
               "publish refused: " + entry.status().message());
      return answerFailure(res, entry.status());
    }
    if (*dry_run) {
      // Every check passed and nothing was stored: no index version to name.
      Object::Ptr body = versionJson(*entry, 0);
      body->set("dry_run", true);
      return replyJson(res, 200, body);
    }
    auto index_version = republish(ctx, store);
    ctx.info("published " + entry->id + " " + entry->version + " (sha256 " + entry->record.sha256 +
             ", key " + entry->record.keyid + ")");
    Object::Ptr body = versionJson(*entry, 0);
    if (index_version) body->set("index_version", static_cast<Poco::UInt64>(*index_version));
    return replyJson(res, 201, body);
  }

  Status packageInfo(Context&, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto id = pathId(req, res, answered);
    if (!id) return answered;
    auto versions = packages_->versions(store, *id);
    if (!versions) return answerFailure(res, versions.status());
    return replyJson(res, 200, packages_->summary(store, *versions, true));
  }

  Status listVersions(Context&, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto id = pathId(req, res, answered);
    if (!id) return answered;
    auto versions = packages_->versions(store, *id);
    if (!versions) return answerFailure(res, versions.status());
    Object::Ptr body = new Object;
    body->set("id", *id);
    body->set("versions", packages_->summary(store, *versions, true)->getArray("versions"));
    return replyJson(res, 200, body);
  }

  // The version named by the path; nullopt after answering.
  std::optional<VersionEntry> pathVersion(const Request& req, Response& res, const Store& store,
                                          Status& answered) const {
    auto id = pathId(req, res, answered);
    if (!id) return std::nullopt;
    auto v = packages_->version(store, *id, std::string(req.pathParam("version").value_or("")));
    if (!v) {
      answered = answerFailure(res, v.status());
      return std::nullopt;
    }
    return *v;
  }

  Status versionInfo(Context&, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto v = pathVersion(req, res, store, answered);
    if (!v) return answered;
    return replyJson(res, 200, versionJson(*v, packages_->downloads(store, v->id, v->version)));
  }

  Status download(Context&, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto v = pathVersion(req, res, store, answered);
    if (!v) return answered;
    auto bytes = packages_->download(store, *v);
    if (!bytes) return answerFailure(res, bytes.status());
    if (auto s = res.status(200); !s) return s;
    if (auto s = res.header("Content-Type", "application/zip"); !s) return s;
    if (auto s = res.header("X-Checksum-Sha256", v->record.sha256); !s) return s;
    return res.body(*bytes);
  }

  Status yank(Context& ctx, const Request& req, Response& res, const Store& store) {
    return setYanked(ctx, req, res, store, true);
  }
  Status unyank(Context& ctx, const Request& req, Response& res, const Store& store) {
    return setYanked(ctx, req, res, store, false);
  }

  Status setYanked(Context& ctx, const Request& req, Response& res, const Store& store,
                   bool yanked) {
    Status answered;
    auto caller = authenticate(ctx, req, res, store, answered);
    if (!caller) return answered;
    auto id = pathId(req, res, answered);
    if (!id) return answered;
    if (Status s = caller->mayActFor(req.pathParam("ns").value_or("")); !s) {
      return answerFailure(res, s);
    }
    auto body = jsonBody(req, res, answered);
    if (!body) return answered;
    auto reason = stringMember(**body, "reason");
    if (!reason || reason->empty() || reason->size() > kMaxReasonBytes) {
      return problem(res, 400, "\"reason\" is required: a string of 1 to 500 bytes");
    }
    const std::string version(req.pathParam("version").value_or(""));
    auto v = packages_->setYanked(store, *id, version, yanked, *reason);
    if (!v) return answerFailure(res, v.status());
    republish(ctx, store);
    ctx.info(std::string(yanked ? "yanked " : "unyanked ") + *id + " " + version + ": " + *reason);
    return replyJson(res, 200, versionJson(*v, packages_->downloads(store, v->id, v->version)));
  }

  // ---- namespaces and keys ----

  static std::optional<std::string> pathNamespace(const Request& req, Response& res,
                                                  Status& answered) {
    std::string ns(req.pathParam("ns").value_or(""));
    if (!isIdPart(ns)) {
      answered = problem(res, 400, "\"" + ns + "\" is not a valid namespace");
      return std::nullopt;
    }
    return ns;
  }

  Status getNamespace(Context&, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto ns = pathNamespace(req, res, answered);
    if (!ns) return answered;
    auto keys = namespaceKeys(store, *ns);
    if (!keys) return answerFailure(res, keys.status());
    Array::Ptr list = new Array;
    for (const auto& k : *keys) list->add(keyJson(*ns, k));
    Object::Ptr body = new Object;
    body->set("namespace", *ns);
    body->set("keys", list);
    return replyJson(res, 200, body);
  }

  Status addKey(Context& ctx, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto caller = authenticate(ctx, req, res, store, answered);
    if (!caller) return answered;
    auto ns = pathNamespace(req, res, answered);
    if (!ns) return answered;
    auto body = jsonBody(req, res, answered);
    if (!body) return answered;
    auto public_text = stringMember(**body, "public");
    if (!public_text) return problem(res, 400, "\"public\" is required: the base64 public key");
    auto key = marketplace::PublicKey::fromBase64(*public_text);
    if (!key) return problem(res, 400, "public: " + key.status().message());

    Result<PublisherKey> added = Status::internal("unset");
    auto signed_by = stringMember(**body, "signed_by");
    if (!signed_by) {
      if (Status s = caller->mustBeAdmin(); !s) {
        return answerFailure(
            res, Status::permissionDenied("a namespace's first key is registered with the "
                                          "registry admin token; later keys need signed_by and "
                                          "rotation_sig"));
      }
      added = addFirstKey(store, *ns, *key, nowOf(ctx));
    } else {
      if (Status s = caller->mayActFor(*ns); !s) return answerFailure(res, s);
      auto sig_text = stringMember(**body, "rotation_sig");
      if (!sig_text) return problem(res, 400, "\"rotation_sig\" is required with signed_by");
      auto sig = marketplace::base64Decode(*sig_text);
      if (!sig) return problem(res, 400, "rotation_sig: " + sig.status().message());
      added = addRotatedKey(store, *ns, *key, *signed_by, *sig, nowOf(ctx));
    }
    if (!added) return answerFailure(res, added.status());
    republish(ctx, store);
    ctx.info("namespace " + *ns + ": registered key " + added->keyid +
             (added->signed_by.empty() ? " (first key)" : " signed by " + added->signed_by));
    return replyJson(res, 201, keyJson(*ns, *added));
  }

  Status revoke(Context& ctx, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto caller = authenticate(ctx, req, res, store, answered);
    if (!caller) return answered;
    auto ns = pathNamespace(req, res, answered);
    if (!ns) return answered;
    if (Status s = caller->mayActFor(*ns); !s) return answerFailure(res, s);
    auto body = jsonBody(req, res, answered);
    if (!body) return answered;
    auto reason = stringMember(**body, "reason");
    if (!reason || reason->empty() || reason->size() > kMaxReasonBytes) {
      return problem(res, 400, "\"reason\" is required: a string of 1 to 500 bytes");
    }
    const UnixSeconds now = nowOf(ctx);
    std::optional<UnixSeconds> at;
    if ((*body)->has("at")) {
      Poco::Dynamic::Var v = (*body)->get("at");
      if (!v.isInteger() || v.convert<Poco::Int64>() > now || v.convert<Poco::Int64>() < 0) {
        return problem(res, 400, "\"at\" must be Unix seconds, not in the future");
      }
      at = v.convert<Poco::Int64>();
    }
    const std::string keyid(req.pathParam("keyid").value_or(""));
    auto revoked = revokeKey(store, *ns, keyid, *reason, at, now);
    if (!revoked) return answerFailure(res, revoked.status());
    republish(ctx, store);
    ctx.info("namespace " + *ns + ": revoked key " + keyid + " at " +
             std::to_string(revoked->revoked->at) + ": " + *reason);
    return replyJson(res, 200, keyJson(*ns, *revoked));
  }

  // ---- publish tokens ----

  Status createToken(Context& ctx, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto caller = authenticate(ctx, req, res, store, answered);
    if (!caller) return answered;
    if (Status s = caller->mustBeAdmin(); !s) return answerFailure(res, s);
    auto body = jsonBody(req, res, answered);
    if (!body) return answered;
    auto ns = stringMember(**body, "namespace");
    if (!ns || !isIdPart(*ns)) {
      return problem(res, 400, "\"namespace\" is required: [a-z0-9][a-z0-9-]{0,62}");
    }
    Poco::Dynamic::Var ttl =
        (*body)->has("ttl_seconds") ? (*body)->get("ttl_seconds") : Poco::Dynamic::Var();
    if (!ttl.isInteger() || ttl.convert<Poco::Int64>() < 1 ||
        ttl.convert<Poco::Int64>() > config_->max_token_ttl_seconds) {
      return problem(res, 400,
                     "\"ttl_seconds\" is required: an integer from 1 to " +
                         std::to_string(config_->max_token_ttl_seconds));
    }
    std::string description = stringMember(**body, "description").value_or("");
    if (description.size() > kMaxDescriptionBytes) {
      return problem(res, 400, "\"description\" is longer than 200 bytes");
    }
    auto created = tokens_->create(store, *ns, ttl.convert<Poco::Int64>(), description, nowOf(ctx));
    if (!created) return answerFailure(res, created.status());
    ctx.info("created publish token " + (*created)->getValue<std::string>("id") +
             " for namespace " + *ns);
    if (auto s = res.header("Cache-Control", "no-store"); !s) return s;
    return replyJson(res, 201, *created);
  }

  Status listTokens(Context& ctx, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto caller = authenticate(ctx, req, res, store, answered);
    if (!caller) return answered;
    if (Status s = caller->mustBeAdmin(); !s) return answerFailure(res, s);
    auto list = tokens_->list(store, nowOf(ctx));
    return list ? replyJson(res, 200, *list) : answerFailure(res, list.status());
  }

  Status deleteToken(Context& ctx, const Request& req, Response& res, const Store& store) {
    Status answered;
    auto caller = authenticate(ctx, req, res, store, answered);
    if (!caller) return answered;
    if (Status s = caller->mustBeAdmin(); !s) return answerFailure(res, s);
    const std::string id(req.pathParam("id").value_or(""));
    if (Status s = tokens_->revoke(store, id); !s) return answerFailure(res, s);
    ctx.info("revoked publish token " + id);
    return res.status(204);
  }

  std::unique_ptr<RegistryConfig> config_;
  std::string root_;
  std::unique_ptr<Tokens> tokens_;
  std::unique_ptr<Packages> packages_;
  std::unique_ptr<Metadata> metadata_;
};

}  // namespace
}  // namespace trellis::registry

TRELLIS_PLUGIN(trellis::registry::Registry, "trellis/registry", "1.0.0")
