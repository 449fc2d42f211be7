#include "services/stream/stream_abi.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstddef>

#include "runtime/plugin_instance.h"
#include "services/core/host_call.h"
#include "services/egress/egress_gate.h"
#include "services/stream/stream_service.h"

namespace trellis::kernel::services {
namespace {

using stream::StreamService;

// Owned by (plugin, tenant) like an HTTP response. The table hands out shared references,
// so a close while a call is using the stream destroys it (closing the socket) only after
// that call; Stream itself runs one operation at a time. Its destructor may run when the
// plugin stops (HandleTable::releaseAll), so it touches nothing but the stream and the log.
struct StreamHandle final : HandleObject {
  StreamHandle(StreamService& s, std::unique_ptr<stream::Stream> st, std::string t, std::string p)
      : service(s), stream(std::move(st)), tenant(std::move(t)), plugin(std::move(p)) {}
  ~StreamHandle() override {
    const std::string destination = stream->url().origin();
    stream.reset();  // close_notify and close before the line that says so
    spdlog::info("stream tenant={} plugin={} closed {} ({} bytes out, {} bytes in)", tenant, plugin,
                 destination, bytes_out.load(), bytes_in.load());
  }

  StreamService& service;
  std::unique_ptr<stream::Stream> stream;
  const std::string tenant;  // label: the tenant id or "_system"
  const std::string plugin;
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> bytes_in{0};
};

Result<std::shared_ptr<StreamHandle>> streamOf(trellis_ctx* ctx, trellis_handle h) {
  HandleTable* handles = ctx->plugin->services().handles;
  if (!handles) return Status::unavailable("this host holds no handles");
  return handles->get<StreamHandle>(ownerOf(ctx), HandleKind::kStream, h);
}

}  // namespace

trellis_status streamConnect(const trellis_ctx* c, const trellis_stream_options* options,
                             trellis_handle* handle) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = egress::enterEgress(c, "stream_connect", &refused);
  if (!ctx) return refused;
  StreamService* service = ctx->plugin->services().streams;
  if (!service || !ctx->plugin->services().handles) {
    return fail(ctx, Status::unavailable("this host opens no egress streams"));
  }
  if (Status s = egress::refuseOnEventLoop("stream_connect"); !s) return fail(ctx, s);
  if (!options || !handle) return fail(ctx, Status::invalid("stream_connect needs options"));
  if (options->struct_size < offsetof(trellis_stream_options, io_timeout_ms) + 4) {
    return fail(ctx, Status::invalid("options: struct_size is too small"));
  }
  stream::Timeouts timeouts;
  if (options->connect_timeout_ms) {
    timeouts.connect = std::chrono::milliseconds(options->connect_timeout_ms);
  }
  if (options->io_timeout_ms) timeouts.io = std::chrono::milliseconds(options->io_timeout_ms);
  const std::string url(view(options->url));
  auto policy = egress::policyOf(ctx);
  if (!policy) return fail(ctx, policy.status());
  const std::string tenant = egress::tenantLabel(ctx);
  auto s =
      service->connect(tenant, ctx->plugin->id(), url, *policy, timeouts, egress::limitsOf(ctx));
  if (!s) {
    auto parsed = egress::parseUrl(url);
    return egress::refuse(ctx, s.status(), parsed ? parsed->origin() : std::string("invalid"));
  }
  ctx->usage.egress_calls += 1;
  auto h = ctx->plugin->services().handles->open(
      ownerOf(ctx), HandleKind::kStream,
      std::make_shared<StreamHandle>(*service, std::move(*s), tenant, ctx->plugin->id()));
  if (!h) return fail(ctx, h.status());
  *handle = *h;
  return TRELLIS_OK;
}

trellis_status streamWrite(const trellis_ctx* c, trellis_handle handle, trellis_str bytes) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = egress::enterEgress(c, "stream_write", &refused);
  if (!ctx) return refused;
  if (Status s = egress::refuseOnEventLoop("stream_write"); !s) return fail(ctx, s);
  if (bytes.len > 0 && !bytes.ptr) return fail(ctx, Status::invalid("stream_write: bytes is NULL"));
  auto h = streamOf(ctx, handle);
  if (!h) return fail(ctx, h.status());
  StreamHandle& sh = **h;
  size_t written = 0;
  Status s = sh.service.write(*sh.stream, sh.tenant, sh.plugin, view(bytes), egress::limitsOf(ctx),
                              &written);
  sh.bytes_out += written;
  ctx->usage.egress_bytes += written;
  if (!s) return egress::refuse(ctx, s, sh.stream->url().origin());
  return TRELLIS_OK;
}

trellis_status streamRead(const trellis_ctx* c, trellis_handle handle, char* buf, size_t cap,
                          size_t* len) {
  trellis_status refused = TRELLIS_OK;
  trellis_ctx* ctx = egress::enterEgress(c, "stream_read", &refused);
  if (!ctx) return refused;
  if (Status s = egress::refuseOnEventLoop("stream_read"); !s) return fail(ctx, s);
  if (!len || (!buf && cap > 0)) return fail(ctx, Status::invalid("stream_read needs buf and len"));
  *len = 0;
  auto h = streamOf(ctx, handle);
  if (!h) return fail(ctx, h.status());
  StreamHandle& sh = **h;
  auto n = sh.service.read(*sh.stream, sh.tenant, sh.plugin, buf, cap, egress::limitsOf(ctx));
  if (!n) return fail(ctx, n.status());
  sh.bytes_in += *n;
  ctx->usage.egress_bytes += *n;
  *len = *n;
  return TRELLIS_OK;
}

}  // namespace trellis::kernel::services
