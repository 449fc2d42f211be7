#include "audit/audit.h"

#include <string>

#include "crypto/encoding.h"

namespace trellis::secrets {

std::string auditResource(const Context& ctx, const Seal& seal, std::string_view engine,
                          std::string_view name) {
  std::string resource(engine);
  resource += "/";
  Status s = seal.withRoot([&](const SecureBuffer& root, std::string_view) {
    std::string tenant_key =
        hmacSha256(root.view(), "trellis-secrets audit|" + std::string(ctx.tenant()));
    resource += "hmac-sha256:" + toHex(hmacSha256(tenant_key, name));
    cleanse(tenant_key);
    return Status::ok();
  });
  if (!s) resource += "(sealed)";
  return resource;
}

void auditEmit(const Context& ctx, std::string_view action, std::string_view resource,
               std::string_view details_json) {
  Status emitted = ctx.auditEmit(action, resource, details_json);
  if (!emitted)
    ctx.warn("secrets: audit record " + std::string(action) + " refused: " + emitted.message());
}

void auditOperation(const Context& ctx, const Seal& seal, std::string_view action,
                    std::string_view engine, std::string_view name, std::string_view details_json) {
  auditEmit(ctx, action, auditResource(ctx, seal, engine, name), details_json);
}

}  // namespace trellis::secrets
