#include "audit/audit.h"

#include <string>

#include "crypto/encoding.h"

namespace trellis::secrets {

void auditOperation(const Context& ctx, const Seal& seal, std::string_view action,
                    std::string_view engine, std::string_view name, std::string_view details_json) {
  std::string resource(engine);
  resource += "/";
  Status s = seal.withRoot([&](const SecureBuffer& root, std::string_view) {
    const std::string tenant_key =
        hmacSha256(root.view(), "trellis-secrets audit|" + std::string(ctx.tenant()));
    resource += "hmac-sha256:" + toHex(hmacSha256(tenant_key, name));
    return Status::ok();
  });
  if (!s) resource += "(sealed)";
  Status emitted = ctx.auditEmit(action, resource, details_json);
  if (!emitted)
    ctx.warn("secrets: audit record " + std::string(action) + " refused: " + emitted.message());
}

}  // namespace trellis::secrets
