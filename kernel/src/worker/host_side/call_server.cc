// Serves the host calls a plugin makes in its worker: each CALL is decoded (every length
// checked by FrameReader), run through the real host table under the live ctx of the hook
// that is running, and answered with status, message and outputs. Nothing the worker sends
// is used as a pointer or a size to allocate up front.
#include <algorithm>
#include <string>

#include "lua/lua_plugin.h"
#include "runtime/call_context.h"
#include "runtime/plugin_instance.h"
#include "services/core/handle_table.h"
#include "services/core/host_call.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/metrics/registry.h"
#include "worker/host_side/invocation.h"
#include "worker/host_side/worker_process.h"

namespace trellis::kernel::worker {
namespace {

trellis_str str(std::string_view s) {
  return trellis_str{s.data(), s.size()};
}
std::string_view view(trellis_str s) {
  return s.ptr ? std::string_view(s.ptr, s.len) : std::string_view();
}

// Room kept in a REPLY for status, message and framing.
constexpr size_t kReplyBudget = kMaxFramePayload - 64 * 1024;

// Takes a plugin-owned buffer's bytes into the reply and releases it.
void takeBuf(FrameWriter& out, trellis_buf& buf) {
  out.str(std::string_view(buf.ptr ? buf.ptr : "", buf.len));
  runtime::hostApi()->buf_free(&buf);
}

// A worker uses only the egress streams it opened itself. A stream of the same plugin and
// tenant opened by another worker (a dedicated one, or the one before a restart) is
// answered as the handle table answers a handle that is not the caller's.
// Streams and scripts are adopted by the worker process that opened them: another worker,
// even of the same plugin and tenant, must not use them.
bool foreignHandle(const Invocation& inv, trellis_ctx* ctx, uint64_t handle,
                   services::HandleKind kind) {
  if (inv.proc && inv.proc->holds(handle)) return false;
  services::HandleTable* handles = ctx->plugin->services().handles;
  if (!handles) return false;
  return static_cast<bool>(
      handles->get<services::HandleObject>(services::ownerOf(ctx), kind, handle));
}

bool foreignStream(const Invocation& inv, trellis_ctx* ctx, uint64_t handle) {
  return foreignHandle(inv, ctx, handle, services::HandleKind::kStream);
}

trellis_status refuseForeign(trellis_ctx* ctx, uint64_t handle, const char* what = "a stream") {
  return services::fail(ctx, Status::invalid("handle " + std::to_string(handle) + " is not " +
                                             what + " this worker opened"));
}

// Hands a handle the host just opened for this worker to its process (closed when the
// worker ends); false, with the handle closed and the refusal recorded, if it already has.
bool adoptHandle(const Invocation& inv, trellis_ctx* ctx, uint64_t h, const char* call) {
  services::HandleTable* handles = ctx->plugin->services().handles;
  const void* plugin = ctx->plugin;
  std::string tenant(services::ownerOf(ctx).tenant);
  auto close = [handles, plugin, tenant, h] {
    if (handles) (void)handles->close({plugin, tenant}, h);
  };
  if (inv.proc && inv.proc->adopt(h, close)) return true;
  close();  // the worker died meanwhile: nobody is left to use or close it
  services::fail(ctx, Status::unavailable(std::string("the worker ended during ") + call));
  return false;
}

struct Listing {
  FrameWriter entries;
  uint32_t count = 0;
  bool too_large = false;
};

}  // namespace

bool applyEffects(Invocation& inv, std::string_view effects) {
  const trellis_host_api* api = runtime::hostApi();
  FrameReader r(effects);
  const trellis_ctx* c = inv.ctx;
  while (r.ok() && !r.atEnd()) {
    auto kind = static_cast<Effect>(r.u8());
    switch (kind) {
      case Effect::kLog: {
        int32_t level = r.i32();
        std::string_view msg = r.str();
        if (r.ok() && c) api->log(c, level, str(msg));
        break;
      }
      case Effect::kSetError: {
        std::string_view msg = r.str();
        if (r.ok() && c) api->set_error(c, str(msg));
        break;
      }
      case Effect::kMetricRecord: {
        uint32_t id = r.u32();
        double v = r.f64();
        if (r.ok() && c) api->metric_record(c, id, v);
        break;
      }
      case Effect::kResStatus: {
        int32_t s = r.i32();
        if (r.ok() && c) api->res_set_status(c, inv.res, s);
        break;
      }
      case Effect::kResHeader: {
        std::string_view n = r.str(), v = r.str();
        if (r.ok() && c) api->res_add_header(c, inv.res, str(n), str(v));
        break;
      }
      case Effect::kResBody: {
        std::string_view b = r.str();
        if (r.ok() && c) api->res_set_body(c, inv.res, str(b));
        break;
      }
      case Effect::kResAppend: {
        std::string_view b = r.str();
        if (r.ok() && c) api->res_append_body(c, inv.res, str(b));
        break;
      }
      case Effect::kResProblem: {
        int32_t s = r.i32();
        std::string_view d = r.str();
        if (r.ok() && c) api->res_problem(c, inv.res, s, str(d));
        break;
      }
      case Effect::kServiceReply: {
        std::string_view b = r.str();
        if (r.ok() && c) api->service_reply(c, inv.reply, str(b));
        break;
      }
      case Effect::kQuotaExceeded: {
        if (c) {
          (void)services::refuseQuota(inv.ctx, "max_host_calls", inv.ctx->max_host_calls,
                                      "host call quota of " +
                                          std::to_string(inv.ctx->max_host_calls) +
                                          " calls per request exceeded");
        }
        break;
      }
      case Effect::kHostCalls: {
        // Calls the worker answered itself count as the kernel's own do.
        uint64_t calls = r.u64();
        if (r.ok() && c) inv.ctx->host_calls = std::max(inv.ctx->host_calls, calls);
        break;
      }
      case Effect::kLuaFailure: {
        // Only the Lua adapter sends it, and only for its own plugin's counter.
        uint8_t cause = r.u8();
        if (!r.ok() || cause >= lua::kLuaFailureCauses) return false;
        if (!c || !inv.ctx->plugin) break;
        const runtime::PluginInstance& p = *inv.ctx->plugin;
        if (p.manifest().runtime != "lua") return false;
        if (metrics::MetricsRegistry* m = p.services().metrics) {
          lua::luaFailureCounter(*m, p.id(), cause)->add(1);
        }
        break;
      }
      default: return false;
    }
  }
  return r.ok();
}

bool serveCall(Invocation& inv, const Frame& call, FrameWriter& reply) {
  const trellis_host_api* api = runtime::hostApi();
  FrameReader r(call.payload);
  if (!applyEffects(inv, r.str()) || !r.ok()) return false;
  trellis_ctx* ctx = inv.ctx;
  FrameWriter out;  // op-specific outputs, after status and message
  trellis_status s = TRELLIS_INVALID;
  auto op = static_cast<CallOp>(call.op);
  if (!ctx) {
    // on_destroy has no ctx: nothing may be asked for.
    reply.i32(TRELLIS_INVALID).str("no live ctx");
    return true;
  }
  switch (op) {
    case CallOp::kConfigGet: {
      std::string_view path = r.str();
      if (!r.ok()) return false;
      trellis_str v{};
      s = api->config_get(ctx, str(path), &v);
      if (s == TRELLIS_OK) out.str(view(v));
      break;
    }
    case CallOp::kRouteAdd:
    case CallOp::kEventSubscribe:
    case CallOp::kServiceProvide:
    case CallOp::kJobHandler:
    case CallOp::kMetricDefine: {
      uint64_t value = 0;
      bool malformed = false;
      s = registerCallback(inv, op, r, &value, &malformed);
      if (malformed) return false;
      if (s == TRELLIS_OK && op == CallOp::kMetricDefine) out.u64(value);
      break;
    }
    case CallOp::kReqQueryParam: {
      std::string_view name = r.str();
      if (!r.ok()) return false;
      trellis_str v{};
      s = inv.req ? api->req_query_param(ctx, inv.req, str(name), &v) : TRELLIS_INVALID;
      if (s == TRELLIS_OK) out.str(view(v));
      break;
    }
    case CallOp::kKvGet: {
      std::string_view key = r.str();
      if (!r.ok()) return false;
      trellis_buf value{};
      uint64_t version = 0;
      s = api->kv_get(ctx, str(key), &value, &version);
      if (s == TRELLIS_OK) {
        takeBuf(out, value);
        out.u64(version);
      }
      break;
    }
    case CallOp::kKvPut: {
      std::string_view key = r.str(), value = r.str();
      uint64_t expected = r.u64();
      if (!r.ok()) return false;
      uint64_t version = 0;
      s = api->kv_put(ctx, str(key), str(value), expected, &version);
      if (s == TRELLIS_OK) out.u64(version);
      break;
    }
    case CallOp::kKvDelete: {
      std::string_view key = r.str();
      uint64_t expected = r.u64();
      if (!r.ok()) return false;
      s = api->kv_delete(ctx, str(key), expected);
      break;
    }
    case CallOp::kKvList: {
      std::string_view prefix = r.str(), after = r.str();
      uint32_t limit = r.u32();
      if (!r.ok()) return false;
      Listing listing;
      auto visit = [](void* user, trellis_str k, trellis_str v, uint64_t version) -> int {
        auto* l = static_cast<Listing*>(user);
        if (l->entries.size() + k.len + v.len + 16 > kReplyBudget) {
          l->too_large = true;
          return 1;
        }
        l->entries.str(view(k)).str(view(v)).u64(version);
        ++l->count;
        return 0;
      };
      s = api->kv_list(ctx, str(prefix), str(after), limit, visit, &listing);
      if (s == TRELLIS_OK && listing.too_large) {
        s = TRELLIS_INTERNAL;
        ctx->error = "this listing is too large to reach a worker process; use a smaller limit";
      }
      if (s == TRELLIS_OK) out.u32(listing.count).bytes(listing.entries.data());
      break;
    }
    case CallOp::kEventPublish: {
      std::string_view topic = r.str(), payload = r.str();
      if (!r.ok()) return false;
      s = api->event_publish(ctx, str(topic), str(payload));
      break;
    }
    case CallOp::kTenantInfo:
    case CallOp::kTenantKeysList: {
      trellis_buf buf{};
      s = op == CallOp::kTenantInfo ? api->tenant_info(ctx, &buf)
                                    : api->tenant_keys_list(ctx, &buf);
      if (s == TRELLIS_OK) {
        takeBuf(out, buf);
      } else {
        api->buf_free(&buf);
      }
      break;
    }
    case CallOp::kTenantKeyCreate:
    case CallOp::kTenantKeyRotate: {
      uint64_t ttl = r.u64();
      if (!r.ok()) return false;
      trellis_buf buf{};
      s = op == CallOp::kTenantKeyCreate ? api->tenant_key_create(ctx, ttl, &buf)
                                         : api->tenant_key_rotate(ctx, ttl, &buf);
      if (s == TRELLIS_OK) {
        takeBuf(out, buf);
      } else {
        api->buf_free(&buf);
      }
      break;
    }
    case CallOp::kTenantKeyRevoke: {
      std::string_view id = r.str();
      if (!r.ok()) return false;
      s = api->tenant_key_revoke(ctx, str(id));
      break;
    }
    case CallOp::kHandleClose: {
      uint64_t h = r.u64();
      if (!r.ok()) return false;
      if (foreignStream(inv, ctx, h)) {
        s = refuseForeign(ctx, h);
        break;
      }
      if (foreignHandle(inv, ctx, h, services::HandleKind::kScript)) {
        s = refuseForeign(ctx, h, "a script");
        break;
      }
      s = api->handle_close(ctx, h);
      if (s == TRELLIS_OK && inv.proc) inv.proc->forget(h);
      break;
    }
    case CallOp::kStreamConnect: {
      trellis_stream_options options{};
      options.struct_size = r.u32();
      options.url = str(r.str());
      options.connect_timeout_ms = r.u32();
      options.io_timeout_ms = r.u32();
      if (!r.ok()) return false;
      // The plugin's own struct_size, as the host would have seen it in process.
      options.struct_size = std::min<uint32_t>(options.struct_size, sizeof options);
      trellis_handle h = 0;
      s = api->stream_connect(ctx, &options, &h);
      if (s != TRELLIS_OK) break;
      if (!adoptHandle(inv, ctx, h, "stream_connect")) {
        s = TRELLIS_UNAVAILABLE;
        break;
      }
      out.u64(h);
      break;
    }
    case CallOp::kScriptLoad: {
      std::string_view source = r.str();
      const bool has_options = r.u8() != 0;
      trellis_script_options options{};
      if (has_options) {
        options.struct_size = r.u32();
        options.name = str(r.str());
        options.max_instructions = r.u64();
        options.max_memory_bytes = r.u64();
        options.max_wall_ms = r.u32();
      }
      if (!r.ok()) return false;
      // The plugin's own struct_size, as the host would have seen it in process.
      options.struct_size = std::min<uint32_t>(options.struct_size, sizeof options);
      trellis_handle h = 0;
      s = api->script_load(ctx, str(source), has_options ? &options : nullptr, &h);
      if (s != TRELLIS_OK) break;
      if (!adoptHandle(inv, ctx, h, "script_load")) {
        s = TRELLIS_UNAVAILABLE;
        break;
      }
      out.u64(h);
      break;
    }
    case CallOp::kScriptCall: {
      uint64_t h = r.u64();
      std::string_view function = r.str(), input = r.str();
      if (!r.ok()) return false;
      if (foreignHandle(inv, ctx, h, services::HandleKind::kScript)) {
        s = refuseForeign(ctx, h, "a script");
        break;
      }
      trellis_buf buf{};
      s = api->script_call(ctx, h, str(function), str(input), &buf);
      if (s == TRELLIS_OK) {
        takeBuf(out, buf);
      } else {
        api->buf_free(&buf);
      }
      break;
    }
    case CallOp::kKeyWrap:
    case CallOp::kKeyUnwrap: {
      std::string_view label = r.str(), input = r.str();
      if (!r.ok()) return false;
      trellis_buf buf{};
      s = op == CallOp::kKeyWrap ? api->key_wrap(ctx, str(label), str(input), &buf)
                                 : api->key_unwrap(ctx, str(label), str(input), &buf);
      if (s == TRELLIS_OK) {
        takeBuf(out, buf);
      } else {
        api->buf_free(&buf);
      }
      break;
    }
    case CallOp::kStreamWrite: {
      uint64_t h = r.u64();
      std::string_view chunk = r.str();
      if (!r.ok() || chunk.size() > kMaxStreamChunk) return false;
      if (foreignStream(inv, ctx, h)) {
        s = refuseForeign(ctx, h);
        break;
      }
      s = api->stream_write(ctx, h, str(chunk));
      break;
    }
    case CallOp::kStreamRead: {
      uint64_t h = r.u64();
      uint64_t cap = r.u64();
      if (!r.ok() || cap > kMaxStreamChunk) return false;
      if (foreignStream(inv, ctx, h)) {
        s = refuseForeign(ctx, h);
        break;
      }
      std::string buf(cap, '\0');
      size_t len = 0;
      s = api->stream_read(ctx, h, buf.data(), buf.size(), &len);
      if (s == TRELLIS_OK) out.str(std::string_view(buf.data(), std::min(len, buf.size())));
      break;
    }
    case CallOp::kServiceCall: {
      std::string_view service = r.str(), method = r.str(), request = r.str();
      if (!r.ok()) return false;
      trellis_buf buf{};
      s = api->service_call(ctx, str(service), str(method), str(request), &buf);
      if (s == TRELLIS_OK) {
        takeBuf(out, buf);
      } else {
        api->buf_free(&buf);
      }
      break;
    }
    case CallOp::kJobSchedule: {
      trellis_job_spec spec{};
      spec.struct_size = r.u32();
      spec.kind = r.i32();
      spec.name = str(r.str());
      spec.delay_ms = r.u64();
      spec.interval_ms = r.u64();
      spec.cron = str(r.str());
      spec.payload = str(r.str());
      spec.flags = r.u32();
      spec.max_attempts = r.u32();
      spec.budget_ms = r.u32();
      if (!r.ok()) return false;
      // The plugin's own struct_size, as the host would have seen it in process.
      spec.struct_size = std::min<uint32_t>(spec.struct_size, sizeof(trellis_job_spec));
      s = api->job_schedule(ctx, &spec);
      break;
    }
    case CallOp::kJobCancel: {
      std::string_view name = r.str();
      if (!r.ok()) return false;
      s = api->job_cancel(ctx, str(name));
      break;
    }
    case CallOp::kHttpSend: {
      trellis_http_request req{};
      req.struct_size = r.u32();
      req.method = str(r.str());
      req.url = str(r.str());
      uint32_t count = r.u32();
      if (!r.ok() || count > r.remaining() / 8) return false;
      std::vector<trellis_str> headers;
      headers.reserve(size_t{count} * 2);
      for (uint32_t i = 0; i < count * 2; ++i) headers.push_back(str(r.str()));
      req.headers = headers.data();
      req.header_count = count;
      req.body = str(r.str());
      req.connect_timeout_ms = r.u32();
      req.first_byte_timeout_ms = r.u32();
      req.total_timeout_ms = r.u32();
      req.max_redirects = r.u32();
      req.max_response_bytes = r.u64();
      if (!r.ok()) return false;
      req.struct_size = std::min<uint32_t>(req.struct_size, sizeof(trellis_http_request));
      trellis_handle h = 0;
      s = api->http_send(ctx, &req, &h);
      if (s == TRELLIS_OK) out.u64(h);
      break;
    }
    case CallOp::kHttpResponseStatus: {
      uint64_t h = r.u64();
      if (!r.ok()) return false;
      int32_t status = 0;
      s = api->http_response_status(ctx, h, &status);
      if (s == TRELLIS_OK) out.u64(static_cast<uint64_t>(status));
      break;
    }
    case CallOp::kHttpResponseHeaders: {
      uint64_t h = r.u64();
      if (!r.ok()) return false;
      Listing listing;
      auto visit = [](void* user, trellis_str n, trellis_str v) -> int {
        auto* l = static_cast<Listing*>(user);
        if (l->entries.size() + n.len + v.len + 8 > kReplyBudget) {
          l->too_large = true;
          return 1;
        }
        l->entries.str(view(n)).str(view(v));
        ++l->count;
        return 0;
      };
      s = api->http_response_headers(ctx, h, visit, &listing);
      if (s == TRELLIS_OK) out.u32(listing.count).bytes(listing.entries.data());
      break;
    }
    case CallOp::kHttpResponseRead:
    case CallOp::kBlobRead: {
      uint64_t h = r.u64();
      uint64_t cap = r.u64();
      if (!r.ok()) return false;
      // The worker's cap is honoured only up to what one frame may carry.
      std::string buf(std::min<uint64_t>(cap, kReplyBudget / 2), '\0');
      size_t len = 0;
      s = op == CallOp::kBlobRead ? api->blob_read(ctx, h, buf.data(), buf.size(), &len)
                                  : api->http_response_read(ctx, h, buf.data(), buf.size(), &len);
      if (s == TRELLIS_OK) out.str(std::string_view(buf.data(), std::min(len, buf.size())));
      break;
    }
    case CallOp::kBlobOpenWrite: {
      std::string_view key = r.str();
      bool has_options = r.u8() != 0;
      trellis_blob_write_options options{};
      options.struct_size = sizeof options;
      if (has_options) {
        options.content_type = str(r.str());
        options.metadata_json = str(r.str());
      }
      if (!r.ok()) return false;
      trellis_handle h = 0;
      s = api->blob_open_write(ctx, str(key), has_options ? &options : nullptr, &h);
      if (s == TRELLIS_OK) out.u64(h);
      break;
    }
    case CallOp::kBlobWrite: {
      uint64_t h = r.u64();
      std::string_view chunk = r.str();
      if (!r.ok()) return false;
      s = api->blob_write(ctx, h, str(chunk));
      break;
    }
    case CallOp::kBlobCommit: {
      uint64_t h = r.u64();
      bool wants_head = r.u8() != 0;
      if (!r.ok()) return false;
      trellis_buf head{};
      s = api->blob_commit(ctx, h, wants_head ? &head : nullptr);
      if (s == TRELLIS_OK) {
        takeBuf(out, head);
      } else {
        api->buf_free(&head);
      }
      break;
    }
    case CallOp::kBlobOpenRead: {
      std::string_view key = r.str();
      uint64_t offset = r.u64(), length = r.u64();
      if (!r.ok()) return false;
      trellis_handle h = 0;
      s = api->blob_open_read(ctx, str(key), offset, length, &h);
      if (s == TRELLIS_OK) out.u64(h);
      break;
    }
    case CallOp::kBlobHead: {
      std::string_view key = r.str();
      if (!r.ok()) return false;
      trellis_buf head{};
      s = api->blob_head(ctx, str(key), &head);
      if (s == TRELLIS_OK) {
        takeBuf(out, head);
      } else {
        api->buf_free(&head);
      }
      break;
    }
    case CallOp::kBlobDelete: {
      std::string_view key = r.str();
      if (!r.ok()) return false;
      s = api->blob_delete(ctx, str(key));
      break;
    }
    case CallOp::kBlobList: {
      std::string_view prefix = r.str(), after = r.str();
      uint32_t limit = r.u32();
      if (!r.ok()) return false;
      trellis_buf buf{};
      s = api->blob_list(ctx, str(prefix), str(after), limit, &buf);
      if (s == TRELLIS_OK) {
        takeBuf(out, buf);
      } else {
        api->buf_free(&buf);
      }
      break;
    }
    case CallOp::kAuditEmit: {
      std::string_view action = r.str(), resource = r.str(), details = r.str();
      if (!r.ok()) return false;
      s = api->audit_emit(ctx, str(action), str(resource), str(details));
      break;
    }
    case CallOp::kUsageAck: {
      std::string_view cursor = r.str();
      if (!r.ok()) return false;
      s = api->usage_ack(ctx, str(cursor));
      break;
    }
    case CallOp::kUsageEmit: {
      std::string_view record = r.str();
      if (!r.ok()) return false;
      s = api->usage_emit(ctx, str(record));
      break;
    }
    default: return false;  // an op this host never offered
  }
  if (out.size() > kReplyBudget) {
    s = TRELLIS_INTERNAL;
    ctx->error = "this answer is too large to reach a worker process";
    out.clear();
  }
  reply.i32(s).str(s == TRELLIS_OK ? std::string_view() : std::string_view(ctx->error));
  reply.bytes(out.data());
  return true;
}

}  // namespace trellis::kernel::worker
