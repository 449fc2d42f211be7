#include "admin/admin_principals.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "trellis/kernel/util/file.h"
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

Result<std::unique_ptr<AdminPrincipals>> AdminPrincipals::open(fs::path file,
                                                               std::string bootstrap_token) {
  auto store = std::unique_ptr<AdminPrincipals>(new AdminPrincipals());
  store->file_ = std::move(file);
  store->bootstrap_token_ = std::move(bootstrap_token);
  std::error_code ec;
  if (!fs::exists(store->file_, ec)) return store;
  const std::string where = store->file_.string();
  std::ifstream in(store->file_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  try {
    auto root = Poco::JSON::Parser().parse(text.str()).extract<Object::Ptr>();
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
      store->id_by_hash_[e.sha256_hex] = e.principal.id;
      store->by_id_[e.principal.id] = std::move(e);
    }
  } catch (const Poco::Exception& e) {
    return Status::invalid(where + ": not valid JSON: " + e.displayText());
  }
  return store;
}

Status AdminPrincipals::persistLocked() const {
  Poco::JSON::Array::Ptr list = new Poco::JSON::Array;
  for (const auto& [id, e] : by_id_) {
    Object::Ptr o = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    o->set("id", id);
    o->set("name", e.principal.name);
    o->set("role", std::string(roleName(e.principal.role)));
    o->set("sha256", e.sha256_hex);
    o->set("created_at_ms", e.principal.created_at_ms);
    if (e.principal.revoked_at_ms) o->set("revoked_at_ms", *e.principal.revoked_at_ms);
    list->add(o);
  }
  Object root;
  root.set("principals", list);
  std::ostringstream out;
  root.stringify(out, 1);
  out << "\n";
  return util::writeFileAtomically(file_, out.str(), 0600);
}

Result<AdminPrincipals::Created> AdminPrincipals::create(const std::string& name, Role role) {
  if (!isValidName(name) || name == "bootstrap") {
    return Status::invalid(
        "admin name must be 1-64 of A-Z a-z 0-9 . _ @ - (and not \"bootstrap\")");
  }
  std::unique_lock lock(mu_);
  for (const auto& [id, e] : by_id_) {
    if (e.principal.name == name && !e.principal.revoked_at_ms) {
      return Status::conflict("an admin principal named \"" + name + "\" exists (id " + id +
                              "); revoke it first");
    }
  }
  Created made;
  made.principal.id = tenants::randomHexId(kIdBytes);
  made.principal.name = name;
  made.principal.role = role;
  made.principal.created_at_ms = nowMs();
  made.token =
      std::string(kTokenPrefix) + made.principal.id + "_" + tenants::randomHexId(kSecretBytes);
  Entry e{made.principal, tenants::sha256Hex(made.token)};
  by_id_[made.principal.id] = e;
  id_by_hash_[e.sha256_hex] = made.principal.id;
  if (Status s = persistLocked(); !s) {  // not durable: not created
    id_by_hash_.erase(e.sha256_hex);
    by_id_.erase(made.principal.id);
    return s;
  }
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
  std::unique_lock lock(mu_);
  Entry* found = nullptr;
  if (auto it = by_id_.find(id_or_name); it != by_id_.end()) found = &it->second;
  for (auto& [id, e] : by_id_) {
    if (!found && e.principal.name == id_or_name && !e.principal.revoked_at_ms) found = &e;
  }
  if (!found) return Status::notFound("no admin principal \"" + id_or_name + "\"");
  if (revoked) *revoked = found->principal;
  if (found->principal.revoked_at_ms) return false;
  found->principal.revoked_at_ms = nowMs();
  if (Status s = persistLocked(); !s) {
    found->principal.revoked_at_ms.reset();
    return s;
  }
  if (revoked) *revoked = found->principal;
  return true;
}

Result<Principal> AdminPrincipals::authenticate(std::string_view token) const {
  if (token.size() == bootstrap_token_.size() &&
      CRYPTO_memcmp(token.data(), bootstrap_token_.data(), token.size()) == 0) {
    return Principal{"bootstrap", "bootstrap", Role::kAdmin, 0, std::nullopt};
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

}  // namespace trellis::kernel::admin
