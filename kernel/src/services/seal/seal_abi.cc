#include "services/seal/seal_abi.h"

#include <openssl/crypto.h>

#include "runtime/plugin_instance.h"
#include "services/core/host_call.h"
#include "services/seal/seal_key.h"

namespace trellis::kernel::services {
namespace {

// The gate both calls share; the key, or nullptr with *refused set.
const seal::SealKey* sealCall(const trellis_ctx* c, const char* call, trellis_str label,
                              trellis_str input, trellis_buf* out, trellis_ctx** ctx,
                              trellis_status* refused) {
  *ctx = enter(c, "seal", call, Tenant::kOptional, refused);
  if (!*ctx) return nullptr;
  if (!out) {
    *refused = fail(*ctx, Status::invalid(std::string(call) + " needs an output buffer"));
    return nullptr;
  }
  *out = trellis_buf{nullptr, 0};
  if ((label.len > 0 && !label.ptr) || (input.len > 0 && !input.ptr)) {
    *refused = fail(*ctx, Status::invalid(std::string(call) + ": label or input is NULL"));
    return nullptr;
  }
  const seal::SealKey* key = (*ctx)->plugin->services().seal;
  if (!key) {
    *refused = fail(*ctx, Status::unavailable("no seal key is configured (server.seal_key_file)"));
    return nullptr;
  }
  return key;
}

seal::Binding bindingOf(const trellis_ctx* ctx, trellis_str label) {
  return {ctx->plugin->id(), ctx->tenant ? std::string_view(ctx->tenant->id) : std::string_view(),
          view(label)};
}

}  // namespace

trellis_status keyWrap(const trellis_ctx* c, trellis_str label, trellis_str plaintext,
                       trellis_buf* out) {
  trellis_ctx* ctx = nullptr;
  trellis_status refused = TRELLIS_OK;
  const seal::SealKey* key = sealCall(c, "key_wrap", label, plaintext, out, &ctx, &refused);
  if (!key) return refused;
  auto sealed = key->wrap(bindingOf(ctx, label), view(plaintext));
  if (!sealed) return fail(ctx, sealed.status());
  fillBuf(out, *sealed);
  return TRELLIS_OK;
}

trellis_status keyUnwrap(const trellis_ctx* c, trellis_str label, trellis_str sealed,
                         trellis_buf* out) {
  trellis_ctx* ctx = nullptr;
  trellis_status refused = TRELLIS_OK;
  const seal::SealKey* key = sealCall(c, "key_unwrap", label, sealed, out, &ctx, &refused);
  if (!key) return refused;
  auto plain = key->unwrap(bindingOf(ctx, label), view(sealed));
  if (!plain) return fail(ctx, plain.status());
  fillBuf(out, *plain);
  OPENSSL_cleanse(plain->data(), plain->size());  // the plugin's copy is the only one left
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
