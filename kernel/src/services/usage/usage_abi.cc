#include "services/usage/usage_abi.h"

#include <Poco/JSON/Parser.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "services/core/host_call.h"
#include "services/trace/trace_context.h"
#include "services/usage/usage_stream.h"

namespace trellis::kernel::services {
namespace {

usage::UsageStream* streamOf(trellis_ctx* ctx) {
  return ctx->plugin->services().usage;
}

// Only a plugin the operator made a system plugin sees other tenants' usage.
// Only a plugin the operator made a system plugin (manifest "scope": "system" plus the
// operator's grant) sees other tenants' usage.
bool systemScope(const trellis_ctx* ctx) {
  return ctx->plugin->isSystemPlugin();
}

}  // namespace

trellis_status usageSubscribe(const trellis_ctx* c, trellis_usage_fn fn, void* user) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx) return TRELLIS_INVALID;
  if (ctx->phase != runtime::Phase::kInit) {
    return fail(ctx, Status::invalid("usage_subscribe outside on_init"));
  }
  if (!systemScope(ctx)) {
    ctx->plugin->denied_calls.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("plugin={} denied: usage_subscribe without system scope", ctx->plugin->id());
    return fail(ctx, Status::permissionDenied(
                         "usage_subscribe needs system scope: the manifest must ask for "
                         "\"scope\": \"system\" and the operator must grant it"));
  }
  if (!streamOf(ctx)) return fail(ctx, Status::unavailable("this host keeps no usage stream"));
  if (!fn) return fail(ctx, Status::invalid("usage_subscribe needs a handler"));
  if (ctx->plugin->usage_fn) return fail(ctx, Status::conflict("already subscribed to usage"));
  ctx->plugin->usage_fn = fn;
  ctx->plugin->usage_user = user;
  return TRELLIS_OK;
}

trellis_status usageAck(const trellis_ctx* c, trellis_str cursor) {
  if (trellis_status s = admitCall(c); s != TRELLIS_OK) return s;
  trellis_ctx* ctx = live(c);
  if (!ctx) return TRELLIS_INVALID;
  usage::UsageStream* stream = streamOf(ctx);
  if (!stream) return fail(ctx, Status::unavailable("this host keeps no usage stream"));
  Status s = stream->ack(*ctx->plugin, view(cursor));
  if (!s) {
    spdlog::warn("plugin={} usage_ack refused: {}", ctx->plugin->id(), s.message());
    return fail(ctx, s);
  }
  return TRELLIS_OK;
}

trellis_status usageEmit(const trellis_ctx* c, trellis_str record_json) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = enter(c, "usage.emit", "usage_emit", Tenant::kRequired, &refused);
  if (!ctx) return refused;
  usage::UsageStream* stream = streamOf(ctx);
  if (!stream) return fail(ctx, Status::unavailable("this host keeps no usage stream"));
  const std::string_view json = view(record_json);
  if (json.size() > kMaxUsageEmitBytes) {
    return fail(ctx, Status::invalid("usage_emit: the record is " + std::to_string(json.size()) +
                                     " bytes; at most " + std::to_string(kMaxUsageEmitBytes) +
                                     " are allowed"));
  }
  std::string compact;  // one line: records travel as JSON lines
  try {
    Poco::JSON::Parser parser;
    auto parsed = parser.parse(std::string(json));
    if (parsed.type() != typeid(Poco::JSON::Object::Ptr)) {
      return fail(ctx, Status::invalid("usage_emit: the record must be a JSON object"));
    }
    std::ostringstream out;
    parsed.extract<Poco::JSON::Object::Ptr>()->stringify(out, 0);
    compact = out.str();
  } catch (const std::exception& e) {
    return fail(
        ctx, Status::invalid(std::string("usage_emit: the record is not valid JSON: ") + e.what()));
  }
  usage::UsageRecord r;
  r.kind = "plugin";
  r.time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  r.tenant = ctx->tenant->id;
  r.key_id = ctx->principal;
  r.plugin = ctx->plugin->id();
  r.request_id = ctx->request_id;
  if (ctx->trace) r.trace_id = ctx->trace->traceId();
  r.emitted = compact;
  stream->record(r);
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
