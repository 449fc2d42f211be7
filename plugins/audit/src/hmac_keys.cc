#include "hmac_keys.h"

#include <openssl/crypto.h>

#include <algorithm>

#include "core/canonical_json.h"
#include "core/hash.h"
#include "core/record.h"

namespace trellis::audit {

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

HmacKeyring::LogKeys& HmacKeyring::of(std::string_view tenant) {
  auto it = logs_.find(tenant);
  if (it == logs_.end()) {
    it = logs_.emplace(std::string(tenant), LogKeys{}).first;
    it->second.wanted = !tenant.empty();  // the system log has no tenant to act for
  }
  return it->second;
}

const KeyBytes& HmacKeyring::own(std::string_view tenant, LogKeys& keys) {
  if (!keys.own) {
    // HKDF-Expand (RFC 5869) with the random master as the PRK: one block, T(1).
    std::string info =
        "trellis-audit hmac own v1|" + std::string(tenant.empty() ? "_system" : tenant);
    info += '\x01';
    const Hash derived = hmacSha256(master_ ? master_->view() : std::string_view(), info);
    keys.own = std::make_unique<KeyBytes>(std::string(view(derived)));
  }
  return *keys.own;
}

HmacKeyring::Current HmacKeyring::current(std::string_view tenant) {
  LogKeys& keys = of(tenant);
  if (keys.current) return {keys.current_id, keys.current->view()};
  return {kOwnKeyId, own(tenant, keys).view()};
}

Result<HmacKeyring::Current> HmacKeyring::byId(std::string_view tenant, std::string_view id) {
  LogKeys& keys = of(tenant);
  const std::string log = tenant.empty() ? "_system" : std::string(tenant);
  if (id == kOwnKeyId) return Current{kOwnKeyId, own(tenant, keys).view()};
  for (const auto& [generation, secret] : keys.secrets) {
    if (id != secretsId(generation)) continue;
    if (!secret.plain) {
      return Status::unavailable("HMAC key " + std::string(id) + " of log " + log +
                                 " is stored wrapped but not open yet: secrets.v1 is sealed or "
                                 "unreachable (it opens once secrets is unsealed)");
    }
    return Current{id, secret.plain->view()};
  }
  std::string known(kOwnKeyId);
  for (const auto& [generation, secret] : keys.secrets) known += ", " + secretsId(generation);
  return Status::notFound("log " + log + " has no HMAC key \"" + std::string(id.substr(0, 64)) +
                          "\" (its keys: " + known + ")");
}

void HmacKeyring::setOwn(std::string_view tenant, std::string raw) {
  of(tenant).own = std::make_unique<KeyBytes>(std::move(raw));
}

void HmacKeyring::addWrapped(std::string_view tenant, uint32_t generation, std::string wrapped) {
  LogKeys& keys = of(tenant);
  Secret& secret = keys.secrets[generation];
  if (secret.plain) return;  // open already: the stored form is the one it came from
  secret.wrapped = std::move(wrapped);
  if (!tenant.empty()) keys.wanted = true;  // to be opened
}

void HmacKeyring::open(std::string_view tenant, uint32_t generation, std::string plain) {
  LogKeys& keys = of(tenant);
  keys.secrets[generation].plain = std::make_unique<KeyBytes>(std::move(plain));
  pickCurrent(keys);
  keys.wanted = false;
  keys.failures = 0;
  keys.retry_at_ms = 0;
  keys.last_error.clear();
}

void HmacKeyring::pickCurrent(LogKeys& keys) {
  keys.current = nullptr;
  keys.current_id = std::string(kOwnKeyId);
  for (auto it = keys.secrets.rbegin(); it != keys.secrets.rend(); ++it) {
    if (!it->second.plain) continue;
    keys.current = it->second.plain.get();
    keys.current_id = secretsId(it->first);
    return;
  }
}

void HmacKeyring::want(std::string_view tenant) {
  if (!tenant.empty()) of(tenant);
}

std::vector<KeyTask> HmacKeyring::due(int64_t now_ms) const {
  std::vector<KeyTask> out;
  for (const auto& [tenant, keys] : logs_) {
    if (!keys.wanted || keys.retry_at_ms > now_ms) continue;
    KeyTask task{tenant, 1, {}};
    if (!keys.secrets.empty()) {
      const auto& [generation, newest] = *keys.secrets.rbegin();
      task.generation = generation;
      task.wrapped = newest.wrapped;  // the newest generation, opened (made once ever)
    }
    out.push_back(std::move(task));
  }
  return out;
}

void HmacKeyring::failed(std::string_view tenant, int64_t now_ms, int64_t retry_ms,
                         std::string message) {
  LogKeys& keys = of(tenant);
  keys.failures = std::min<uint32_t>(keys.failures + 1, 30);
  const int64_t hour = 3'600'000;
  int64_t wait = std::max<int64_t>(retry_ms, 1);
  for (uint32_t i = 1; i < keys.failures && wait < hour; ++i) wait *= 2;
  keys.retry_at_ms = now_ms + std::min(wait, hour);
  keys.last_error = std::move(message);
}

std::string HmacKeyring::keysJson(std::string_view tenant) {
  LogKeys& keys = of(tenant);
  std::string out = "{\"current\":";
  appendJsonString(out, keys.current_id);
  out += ",\"keys\":[{\"id\":\"own\",\"state\":\"open\"}";
  for (const auto& [generation, secret] : keys.secrets) {
    out += ",{\"id\":\"" + secretsId(generation) + "\",\"state\":\"" +
           (secret.plain ? "open" : "wrapped") + "\"}";
  }
  out += "],\"log\":";
  appendJsonString(out, tenant.empty() ? "_system" : tenant);
  out += ",\"provisioning\":{\"failures\":" + std::to_string(keys.failures) + ",\"last_error\":";
  appendJsonString(out, keys.last_error);
  out += ",\"retry_at\":";
  if (keys.retry_at_ms > 0 && keys.wanted) {
    out += "\"" + rfc3339Utc(keys.retry_at_ms) + "\"";
  } else {
    out += "null";
  }
  out += ",\"wanted\":" + std::string(keys.wanted ? "true" : "false") + "}}";
  return out;
}

}  // namespace trellis::audit
