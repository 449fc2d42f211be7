#include "hmac_provisioner.h"

#include <optional>
#include <string>

#include "core/hash.h"
#include "hmac_keys.h"

namespace trellis::audit {
namespace {

bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// The string member `name` of secrets.v1's flat JSON answer, whose strings hold base64 and
// "trellis:vN:" only. Read in place into one reserved buffer, so that the plain key is in no
// copy this code cannot wipe (a JSON parser's tree would be one).
std::optional<std::string> member(std::string_view json, std::string_view name) {
  const std::string quoted = "\"" + std::string(name) + "\"";
  size_t i = json.find(quoted);
  if (i == std::string_view::npos) return std::nullopt;
  i += quoted.size();
  while (i < json.size() && isSpace(json[i])) ++i;
  if (i >= json.size() || json[i++] != ':') return std::nullopt;
  while (i < json.size() && isSpace(json[i])) ++i;
  if (i >= json.size() || json[i++] != '"') return std::nullopt;
  std::string out;
  out.reserve(json.size() - i);
  for (; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '"') return out;
    if (c == '\\' && i + 1 < json.size() && json[i + 1] == '/') {  // Poco writes "/" as "\/"
      out += '/';
      ++i;
      continue;
    }
    if (c == '\\') break;  // no other escape belongs in base64
    out += c;
  }
  wipe(out);
  return std::nullopt;
}

bool isCiphertext(std::string_view text) {
  if (text.empty() || text.size() > 4096) return false;
  for (char c : text) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || c == '=' || c == ':';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

Status HmacProvisioner::run(Context& ctx) {
  const auto now = [&ctx] { return static_cast<int64_t>(ctx.nowUnixMs()); };
  const std::vector<KeyTask> tasks = sink_.keyTasks(now());
  if (tasks.empty() || !secretsReady(ctx)) return Status::ok();
  for (const KeyTask& task : tasks) provision(ctx, task);
  return Status::ok();
}

bool HmacProvisioner::secretsReady(Context& ctx) {
  auto status = ctx.call(kService, "status", "{}");
  std::string why;
  if (status) {
    if (status->find("\"sealed\":true") != std::string::npos) why = "secrets.v1 is sealed";
  } else if (status.status().code() != StatusCode::kNotFound) {  // NOT_FOUND: an older secrets
    why = status.status().message();
  }
  if (!why.empty()) {
    if (!said_unavailable_) {
      ctx.info("audit: HMAC keys stay the plugin's own for now: " + why);
      said_unavailable_ = true;
    }
    return false;
  }
  if (said_unavailable_) ctx.info("audit: secrets.v1 answers; provisioning HMAC keys from it");
  said_unavailable_ = false;
  return true;
}

void HmacProvisioner::provision(Context& ctx, const KeyTask& task) {
  const bool make = task.wrapped.empty();
  std::string wrapped = task.wrapped;
  std::string plain;
  const std::string key_member = "\"key\":\"" + std::string(kTransitKey) + "\"";
  Status s = ctx.actForTenant(
      task.tenant,
      make ? "audit: make this tenant's audit HMAC key with secrets.v1"
           : "audit: open this tenant's audit HMAC key with secrets.v1",
      [&](Context& tenant) -> Status {
        if (make) {
          auto ensured = tenant.call(kService, "ensure_key", "{" + key_member + "}");
          if (!ensured) return ensured.status();
          // secrets answers whose key it is: a tenant's own could be deleted under the wrapped
          // HMAC keys (only a key secrets made for this plugin is kept from the tenant).
          if (auto owner = member(*ensured, "owner_plugin"); owner && owner->empty()) {
            ctx.warn("audit: the transit key " + std::string(kTransitKey) + " of tenant " +
                     task.tenant +
                     " is the tenant's own (made by the tenant, or before secrets recorded "
                     "owners): the tenant can delete it, and the HMAC keys wrapped under it "
                     "would then not open after a restart");
          }
          auto made = tenant.call(kService, "datakey", "{" + key_member + ",\"mode\":\"wrapped\"}");
          if (!made) return made.status();
          auto ct = member(*made, "ciphertext");
          if (!ct) return Status::internal("secrets.v1 datakey answered without a ciphertext");
          wrapped = std::move(*ct);
        }
        if (!isCiphertext(wrapped)) {
          return Status::internal("the stored wrapped HMAC key is not a secrets.v1 ciphertext");
        }
        auto opened = tenant.call(kService, "decrypt",
                                  "{\"ciphertext\":\"" + wrapped + "\"," + key_member + "}");
        if (!opened) return opened.status();
        auto b64 = member(*opened, "plaintext");
        wipe(*opened);
        if (!b64) return Status::internal("secrets.v1 decrypt answered without a plaintext");
        auto raw = fromBase64(*b64);
        wipe(*b64);
        if (!raw || raw->size() != 32) {
          if (raw) wipe(*raw);
          return Status::internal("the HMAC data key from secrets.v1 is not 32 bytes");
        }
        plain = std::move(*raw);
        return Status::ok();
      });
  const int64_t now_ms = static_cast<int64_t>(ctx.nowUnixMs());
  bool opened = false;
  if (s && make) {
    auto stored = sink_.storeKey(ctx, task.tenant, task.generation, wrapped, std::move(plain));
    if (stored) opened = *stored;
    s = stored.status();
  } else if (s) {
    sink_.openKey(ctx, task.tenant, task.generation, std::move(plain));
    opened = true;
  }
  wipe(plain);
  if (!s) {
    ctx.warn("audit: HMAC key of tenant " + task.tenant + " from secrets.v1 not ready (" +
             s.message() + "); its records keep the current key, retried later");
    sink_.keyFailed(task.tenant, now_ms, retry_ms_, s.message());
    return;
  }
  if (opened) {
    ctx.info("audit: log " + task.tenant + " now HMACs sensitive fields with key " +
             HmacKeyring::secretsId(task.generation));
  }
}

}  // namespace trellis::audit
