#include "admin/admin_principals.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "auth/cert_identity.h"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/identity.h"

namespace trellis::kernel::admin {
namespace fs = std::filesystem;
using Poco::JSON::Object;

namespace {

constexpr std::string_view kTokenPrefix = "tadm_";
constexpr size_t kIdBytes = 8;       // 16 hex digits
constexpr size_t kSecretBytes = 32;  // 256 bits

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool isValidName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '@' || c == '-';
  });
}

bool isHexId(std::string_view s) {
  return s.size() == kIdBytes * 2 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

std::string AdminPrincipals::claimedId(std::string_view token) {
  if (!token.starts_with(kTokenPrefix)) return "";
  std::string_view rest = token.substr(kTokenPrefix.size());
  std::string_view id = rest.substr(0, rest.find('_'));
  return isHexId(id) ? std::string(id) : "";
}

Result<AdminPrincipals::Table> AdminPrincipals::parse(const std::optional<std::string>& text,
                                                      const std::string& where) {
  Table table;
  if (!text) return table;
  try {
    auto root = Poco::JSON::Parser().parse(*text).extract<Object::Ptr>();
    auto list = root->getArray("principals");
    if (!list) return Status::invalid(where + ": expected {\"principals\": [...]}");
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string at = where + ": principals[" + std::to_string(i) + "]";
      auto o = list->getObject(static_cast<unsigned>(i));
      if (!o) return Status::invalid(at + " is not an object");
      Entry e;
      e.principal.id = o->optValue<std::string>("id", "");
      e.principal.name = o->optValue<std::string>("name", "");
      auto role = parseRole(o->optValue<std::string>("role", ""));
      e.sha256_hex = o->optValue<std::string>("sha256", "");
      if (!isHexId(e.principal.id) || !isValidName(e.principal.name) || !role ||
          !tenants::parseSha256Hex(e.sha256_hex)) {
        return Status::invalid(at + " needs id (16 hex), name, role and sha256 (64 hex)");
      }
      e.principal.role = *role;
      e.principal.created_at_ms = o->optValue<int64_t>("created_at_ms", 0);
      if (o->has("revoked_at_ms"))
        e.principal.revoked_at_ms = o->getValue<int64_t>("revoked_at_ms");
      if (o->has("certificate")) {
        auto selector = auth::selectorFromJson(o->getObject("certificate"));
        if (!selector) return Status::invalid(at + ".certificate: " + selector.status().message());
        e.principal.certificate = std::move(*selector);
      }
      table[e.principal.id] = std::move(e);
    }
  } catch (const Poco::Exception& e) {
    return Status::invalid(where + ": not valid JSON: " + e.displayText());
  }
  return table;
}

std::string AdminPrincipals::serialize(const Table& table) {
  Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
  for (const auto& [id, e] : table) {
    Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    o->set("id", id);
    o->set("name", e.principal.name);
    o->set("role", std::string(roleName(e.principal.role)));
    o->set("sha256", e.sha256_hex);
    o->set("created_at_ms", e.principal.created_at_ms);
    if (e.principal.revoked_at_ms) o->set("revoked_at_ms", *e.principal.revoked_at_ms);
    if (e.principal.certificate)
      o->set("certificate", auth::selectorJson(*e.principal.certificate));
    list->add(o);
  }
  Object root;
  root.set("principals", list);
  std::ostringstream out;
  root.stringify(out, 1);
  out << "\n";
  return out.str();
}

Result<std::unique_ptr<AdminPrincipals>> AdminPrincipals::open(std::unique_ptr<SharedDocument> doc,
                                                               std::string bootstrap_token) {
  auto store = std::unique_ptr<AdminPrincipals>(new AdminPrincipals());
  store->bootstrap_token_ = std::move(bootstrap_token);
  auto now = doc->read();
  if (!now) return now.status();
  auto table = parse(now->text, doc->where());
  if (!table) return table.status();
  store->adopt(std::move(*table), now->version);
  store->doc_ = std::move(doc);
  store->doc_->watch(now->version, [self = store.get()](const SharedDocument::Snapshot& s) {
    auto table = parse(s.text, self->doc_->where());
    if (!table) {  // keep serving the last good one
      spdlog::error("admin principals: {}", table.status().message());
      return;
    }
    self->adopt(std::move(*table), s.version);
  });
  return store;
}

void AdminPrincipals::adopt(Table table, int64_t version) {
  std::unique_lock lock(mu_);
  if (version <= version_) return;  // a poll that read before this host's own write
  id_by_hash_.clear();
  id_by_cert_.clear();
  for (const auto& [id, e] : table) {
    id_by_hash_[e.sha256_hex] = id;
    if (!e.principal.certificate) continue;
    // An unrevoked principal wins the selector over revoked ones.
    auto [it, inserted] = id_by_cert_.try_emplace(e.principal.certificate->lookup(), id);
    if (!inserted && !e.principal.revoked_at_ms) it->second = id;
  }
  by_id_ = std::move(table);
  version_ = version;
}

Status AdminPrincipals::edit(const std::function<Status(Table&)>& change) {
  Table written;
  auto done = doc_->update([&](const std::optional<std::string>& text) -> Result<std::string> {
    auto table = parse(text, doc_->where());
    if (!table) return table.status();
    if (Status s = change(*table); !s) return s;
    written = *table;
    return serialize(*table);
  });
  if (!done) return done.status();  // not durable: not done
  adopt(std::move(written), done->version);
  return Status::ok();
}

Result<size_t> AdminPrincipals::importFile(const fs::path& legacy) {
  std::error_code ec;
  if (!fs::exists(legacy, ec)) return size_t{0};
  auto old = SharedDocument::file(legacy)->read();
  if (!old) return old.status();
  auto from = parse(old->text, legacy.string());
  if (!from) return from.status();
  size_t added = 0;
  Status s = edit([&](Table& table) {
    added = 0;
    for (const auto& [id, e] : *from) {
      auto [it, inserted] = table.try_emplace(id, e);
      if (inserted) ++added;
      if (e.principal.revoked_at_ms && !it->second.principal.revoked_at_ms) {
        it->second.principal.revoked_at_ms = e.principal.revoked_at_ms;
      }
    }
    return Status::ok();
  });
  if (!s) return s;
  fs::rename(legacy, fs::path(legacy) += ".imported", ec);
  if (ec) return Status::unavailable("cannot rename " + legacy.string() + ": " + ec.message());
  return added;
}

Result<AdminPrincipals::Created> AdminPrincipals::create(const std::string& name, Role role) {
  if (!isValidName(name) || name == "bootstrap") {
    return Status::invalid(
        "admin name must be 1-64 of A-Z a-z 0-9 . _ @ - (and not \"bootstrap\")");
  }
  Created made;
  made.principal.id = tenants::randomHexId(kIdBytes);
  made.principal.name = name;
  made.principal.role = role;
  made.principal.created_at_ms = nowMs();
  made.token =
      std::string(kTokenPrefix) + made.principal.id + "_" + tenants::randomHexId(kSecretBytes);
  const Entry entry{made.principal, tenants::sha256Hex(made.token)};
  Status s = edit([&](Table& table) {
    for (const auto& [id, e] : table) {
      if (e.principal.name == name && !e.principal.revoked_at_ms) {
        return Status::conflict("an admin principal named \"" + name + "\" exists (id " + id +
                                "); revoke it first");
      }
    }
    table[entry.principal.id] = entry;
    return Status::ok();
  });
  if (!s) return s;
  return made;
}

std::vector<Principal> AdminPrincipals::list() const {
  std::shared_lock lock(mu_);
  std::vector<Principal> out;
  for (const auto& [id, e] : by_id_) out.push_back(e.principal);
  std::sort(out.begin(), out.end(), [](const Principal& a, const Principal& b) {
    return a.created_at_ms < b.created_at_ms;
  });
  return out;
}

Result<bool> AdminPrincipals::revoke(const std::string& id_or_name, Principal* revoked) {
  if (id_or_name == "bootstrap") {
    return Status::invalid(
        "the bootstrap principal is the token in admin.token_file; replace that file and "
        "restart to change it");
  }
  {
    // Already revoked here: nothing to write (the document only ever gains revocations).
    std::shared_lock lock(mu_);
    auto it = by_id_.find(id_or_name);
    if (it != by_id_.end() && it->second.principal.revoked_at_ms) {
      if (revoked) *revoked = it->second.principal;
      return false;
    }
  }
  bool changed = false;
  Status s = edit([&](Table& table) {
    Entry* found = nullptr;
    if (auto it = table.find(id_or_name); it != table.end()) found = &it->second;
    for (auto& [id, e] : table) {
      if (!found && e.principal.name == id_or_name && !e.principal.revoked_at_ms) found = &e;
    }
    if (!found) return Status::notFound("no admin principal \"" + id_or_name + "\"");
    changed = !found->principal.revoked_at_ms;
    if (changed) found->principal.revoked_at_ms = nowMs();
    if (revoked) *revoked = found->principal;
    return Status::ok();
  });
  if (!s) return s;
  return changed;
}

Result<Principal> AdminPrincipals::authenticate(std::string_view token) const {
  if (token.size() == bootstrap_token_.size() &&
      CRYPTO_memcmp(token.data(), bootstrap_token_.data(), token.size()) == 0) {
    return Principal{"bootstrap", "bootstrap", Role::kAdmin, 0, std::nullopt, std::nullopt};
  }
  if (token.empty()) return Status::notFound("no admin token presented");
  const std::string hash = tenants::sha256Hex(token);
  std::shared_lock lock(mu_);
  auto it = id_by_hash_.find(hash);
  if (it == id_by_hash_.end()) return Status::notFound("unknown admin token");
  const Principal& p = by_id_.at(it->second).principal;
  if (p.revoked_at_ms) {
    return Status::permissionDenied("the token of admin principal " + p.name + " (" + p.id +
                                    ") was revoked");
  }
  return p;
}

Result<Principal> AdminPrincipals::bindCertificate(const std::string& id_or_name,
                                                   std::optional<tenants::CertSelector> selector) {
  if (id_or_name == "bootstrap") {
    return Status::invalid(
        "the bootstrap principal is the token in admin.token_file; bind a "
        "certificate to a named principal (trellis admin-token create)");
  }
  Principal bound;
  Status s = edit([&](Table& table) {
    Entry* found = nullptr;
    if (auto it = table.find(id_or_name); it != table.end()) found = &it->second;
    for (auto& [id, e] : table) {
      if (!found && e.principal.name == id_or_name && !e.principal.revoked_at_ms) found = &e;
    }
    if (!found || found->principal.revoked_at_ms) {
      return Status::notFound("no active admin principal \"" + id_or_name + "\"");
    }
    if (selector) {
      for (const auto& [id, e] : table) {
        if (&e != found && !e.principal.revoked_at_ms && e.principal.certificate &&
            e.principal.certificate->lookup() == selector->lookup()) {
          return Status::conflict("admin principal " + e.principal.name + " (" + id +
                                  ") is already bound to " + selector->describe());
        }
      }
    }
    found->principal.certificate = selector;
    bound = found->principal;
    return Status::ok();
  });
  if (!s) return s;
  return bound;
}

Result<Principal> AdminPrincipals::authenticateCertificate(
    const tenants::PresentedCertificate& cert) const {
  const auto lookups = tenants::lookupsOf(cert);
  std::shared_lock lock(mu_);
  for (const auto& lookup : lookups) {
    if (!lookup) continue;
    auto it = id_by_cert_.find(*lookup);
    if (it == id_by_cert_.end()) continue;
    const Principal& p = by_id_.at(it->second).principal;
    if (p.revoked_at_ms) {
      return Status::permissionDenied("admin principal " + p.name + " (" + p.id +
                                      "), bound to this client certificate, was revoked");
    }
    return p;
  }
  return Status::notFound("the client certificate is bound to no admin principal");
}

}  // namespace trellis::kernel::admin
