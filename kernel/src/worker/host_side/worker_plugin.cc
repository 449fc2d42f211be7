#include "worker/host_side/worker_plugin.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "runtime/call_context.h"
#include "runtime/plugin_call.h"
#include "services/trace/trace_context.h"
#include "trellis/kernel/events/event_bus.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/exec/event_loop.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/metrics/registry.h"
#include "trellis/kernel/plugin/native_library.h"
#include "trellis/kernel/util/json.h"
#include "worker/host_side/invocation.h"

namespace trellis::kernel::worker {

using Clock = std::chrono::steady_clock;
using runtime::Phase;

namespace {

constexpr int kPoisonCrashes = 3;   // crashes after which a request is refused
constexpr int kCrashloopAfter = 5;  // consecutive crashes shown as "crashlooping"
constexpr auto kHealthyAfter = std::chrono::seconds(60);  // resets the backoff
constexpr auto kMaxBackoff = std::chrono::seconds(60);
// Route calls that may wait for a worker; more are answered 503 at once.
constexpr size_t kMaxQueuedRoutes = 1024;
// The largest INVOKE an event loop sends on its lane: far below a socket buffer, so the
// send does not wait for the worker; larger requests are copied by a route thread.
constexpr size_t kMaxLaneInvoke = 16 * 1024;
// Route calls that cross to a worker together, pipelined on one channel: as many as its
// calls take about kBatchTime to run (measured), at most kMaxBatch. Fast calls thus share
// their system calls and wake-ups; slow ones go one per channel, side by side.
constexpr size_t kMaxBatch = 16;
constexpr uint64_t kBatchTimeNs = 200'000;

// A callback the plugin registered, as the kernel holds it: the `user` of a trampoline.
struct Remote {
  WorkerPlugin::Impl* impl;
  uint32_t index;     // the worker's number for it
  std::string route;  // "GET /x/{id}" for routes: part of the poison-request key
};

// One registration of the first worker's on_init; later workers must repeat it.
struct Registration {
  CallOp op;
  std::string a, b;
  int32_t kind = 0;
  uint32_t index = 0;
  uint64_t result = 0;  // metric_define's id
};

// A route call on its way to a worker. Its request waits, on no thread, in its PluginCall
// (suspended off the loop) until `finish` answers it with the handler's status.
struct RouteCall {
  RouteCall(const Remote* r, trellis_ctx* c, const trellis_request* q, trellis_response* s,
            std::function<void(trellis_status)> f)
      : remote(r), ctx(c), req(q), res(s), finish(std::move(f)) {}
  const Remote* remote;
  trellis_ctx* ctx;
  const trellis_request* req;
  trellis_response* res;
  std::function<void(trellis_status)> finish;
  uint64_t id = 0;
  // Its snapshot's slot in the channel's region, while the worker may read it.
  std::optional<uint64_t> slot;
};

// An event loop's own channel to a slot's worker. The loop writes its small route calls'
// INVOKEs and reads the answers itself (the channel is in its reactor), so such a call
// crosses to the worker and back with no other thread: no route thread to wake, no hand-back
// to the loop. A CALL that may block (storage writes, egress, service calls…) is served on
// a route thread meanwhile, never on the loop. Used only by its loop; held while bound.
struct LoopLane {
  explicit LoopLane(boost::asio::io_context& ioc) : loop(ioc), watch(ioc), timer(ioc) {}
  boost::asio::io_context& loop;
  std::shared_ptr<WorkerProcess> proc;          // null while unbound
  int ch = -1;                                  // its channel, held (acquireSpare)
  boost::asio::posix::stream_descriptor watch;  // a duplicate of the channel's fd
  boost::asio::steady_timer timer;              // when the front call's time runs out
  std::deque<RouteCall> flight;                 // sent; answered in this order
  Clock::time_point progress{};                 // the last frame (or send into an idle lane)
  bool reading = false, writing = false, timing = false;  // waits armed
  bool serving = false;  // a CALL of the front call is served off the loop
};

struct Slot {
  std::string tenant;  // "" = shared
  std::mutex mu;       // guards everything below
  std::shared_ptr<WorkerProcess> proc;
  std::shared_ptr<WorkerProcess> spare;  // pre-started, waiting for its on_init
  // The last death already recorded (weak: a raw pointer could match a newer worker
  // allocated where a freed one was).
  std::weak_ptr<WorkerProcess> counted;
  bool restarting = false;  // one thread brings a new worker up at a time
  uint64_t restarts = 0, crashes = 0, consecutive = 0;
  std::string last_crash;
  Clock::time_point not_before{}, healthy_since{};
  metrics::Counter* crash_metric = nullptr;
  metrics::Counter* restart_metric = nullptr;
  metrics::Gauge* crashloop_metric = nullptr;
  metrics::Counter* shared_snapshots = nullptr;  // route requests placed in a region
  metrics::Counter* inline_snapshots = nullptr;  // … and sent in their INVOKE
  metrics::Gauge* snapshot_slots = nullptr;      // slots the worker may still read
  // Route calls from the event loops wait here for the route threads (at most one per
  // channel), which take them in batches: a request waiting for its worker holds no
  // event-loop thread, so a slow or hung worker delays only its own requests, and calls
  // that queue up while the worker is busy cross to it together.
  std::mutex queue_mu;
  std::deque<RouteCall> queued;  // guarded by queue_mu
  size_t draining = 0;           // route threads taking from `queued`; guarded by queue_mu
  // Recent route calls' mean time in the worker; until measured, taken as slow (one call
  // per batch).
  std::atomic<uint64_t> call_ns{kBatchTimeNs};
  // When a route thread last finished a call (or began a batch), in steady-clock ns: the
  // route threads are stuck (a slow or hung call) when this is older than kBatchTime.
  std::atomic<int64_t> progress_ns{0};
  void noteProgress() {
    progress_ns.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }
  bool stalled() const {
    return Clock::now().time_since_epoch().count() - progress_ns.load(std::memory_order_relaxed) >
           static_cast<int64_t>(kBatchTimeNs);
  }
  size_t batchSize() const {
    uint64_t ns = std::max<uint64_t>(1, call_ns.load(std::memory_order_relaxed));
    return std::clamp<size_t>(kBatchTimeNs / ns, 1, kMaxBatch);
  }
  std::unique_ptr<exec::BlockingPool> routes;
  std::mutex lanes_mu;
  std::vector<std::shared_ptr<LoopLane>> lanes;  // one per event loop that used one
};

// 0 after the first crash, then 0.5 s doubling up to a minute.
Clock::duration backoffAfter(uint64_t consecutive) {
  if (consecutive <= 1) return Clock::duration::zero();
  auto ms = std::chrono::milliseconds(500 * (int64_t{1} << std::min<uint64_t>(consecutive - 2, 8)));
  return std::min<Clock::duration>(kMaxBackoff, ms);
}

class RouteSnapshot;

template <typename Writer>
void writeCtx(Writer& w, const trellis_ctx* ctx) {
  w.str(ctx && ctx->tenant ? std::string_view(ctx->tenant->id) : std::string_view());
  w.str(ctx ? ctx->principal : std::string_view());
  bool trace = ctx && ctx->trace;
  w.u8(trace ? 1 : 0);
  w.str(trace ? std::string_view(ctx->trace->traceparent()) : std::string_view());
  w.str(trace ? std::string_view(ctx->trace->tracestate()) : std::string_view());
  bool caller = ctx && ctx->phase == Phase::kService;
  w.u8(caller ? 1 : 0);
  w.str(caller ? ctx->caller : std::string_view());
  w.u64(ctx ? ctx->host_calls : 0).u64(ctx ? ctx->max_host_calls : UINT64_MAX);
}

}  // namespace

struct WorkerPlugin::Impl {
  WorkerPlugin* self = nullptr;
  runtime::PluginInstance* plugin = nullptr;
  std::filesystem::path library;
  WorkerOptions options;
  std::string id, version;
  std::deque<Remote> remotes;               // node-stable: trampolines hold pointers
  std::vector<Registration> registrations;  // written by the first on_init only
  Slot shared;
  std::map<std::string, std::unique_ptr<Slot>, std::less<>> dedicated;
  std::atomic<bool> stopping{false};
  std::mutex poison_mu;
  std::unordered_map<size_t, int> poison;  // request key -> crashes it was in flight for

  Slot& slotFor(const trellis_ctx* ctx) {
    if (ctx && ctx->tenant) {
      if (auto it = dedicated.find(ctx->tenant->id); it != dedicated.end()) return *it->second;
    }
    return shared;
  }
  std::vector<Slot*> slots() {
    std::vector<Slot*> all{&shared};
    for (auto& [t, s] : dedicated) all.push_back(s.get());
    return all;
  }

  Result<std::shared_ptr<WorkerProcess>> spawn() {
    return WorkerProcess::spawn(options, library, plugin->dir());
  }

  // The audit stream records a worker entering its crash loop (once per loop).
  void auditCrashloop(const Slot& slot) {
    events::EventBus* bus = plugin->services().events;
    if (!bus) return;
    std::string payload = "{\"plugin\":";
    util::appendJsonString(payload, id);
    payload += ",\"tenant\":";
    util::appendJsonString(payload, slot.tenant.empty() ? "*" : slot.tenant);
    payload += ",\"crashes_in_a_row\":" + std::to_string(slot.consecutive) + ",\"last_crash\":";
    util::appendJsonString(payload, slot.last_crash);
    payload += "}";
    bus->publish({"", "kernel", "audit.worker_crashloop", std::move(payload)});
  }

  // Records a worker's end once; sets the backoff before the next start.
  void recordDeath(Slot& slot, const std::shared_ptr<WorkerProcess>& proc, const char* kind) {
    std::lock_guard lock(slot.mu);
    if (slot.counted.lock() == proc) return;
    slot.counted = proc;
    auto now = Clock::now();
    if (now - slot.healthy_since > kHealthyAfter) slot.consecutive = 0;
    ++slot.crashes;
    ++slot.consecutive;
    auto backoff = backoffAfter(slot.consecutive);
    slot.not_before = now + backoff;
    slot.last_crash = proc->endReason();
    if (slot.crash_metric) slot.crash_metric->add();
    if (slot.crashloop_metric) slot.crashloop_metric->set(slot.consecutive >= kCrashloopAfter);
    if (slot.consecutive == kCrashloopAfter) auditCrashloop(slot);
    spdlog::error(
        "plugin={} tenant={} worker pid {} {} ({}); {} crash(es) in a row, next start in {} ms", id,
        slot.tenant.empty() ? "*" : slot.tenant, proc->pid(), slot.last_crash, kind,
        slot.consecutive, std::chrono::duration_cast<std::chrono::milliseconds>(backoff).count());
  }

  Outcome invoke(Slot& slot, const std::shared_ptr<WorkerProcess>& proc, InvokeOp op,
                 const FrameWriter& payload, Invocation& inv);
  // After a conversation: a worker that crashed or hung is recorded (once) and `out.why`
  // says how it ended.
  void noteEnd(Slot& slot, const std::shared_ptr<WorkerProcess>& proc, Outcome& out);
  // A live, initialized worker for `slot`, restarting one if the backoff allows.
  Result<std::shared_ptr<WorkerProcess>> ready(Slot& slot);
  // on_init (replayed) and on_start in a fresh worker, outside any kernel hook.
  Status bringUp(Slot& slot, const std::shared_ptr<WorkerProcess>& proc);

  // A route call: queued for the slot's route threads when it comes from an event loop,
  // else (a blocking route, already on a pool thread) run on this thread.
  trellis_status runRoute(const Remote& r, trellis_ctx* ctx, const trellis_request* req,
                          trellis_response* res);
  // A route thread: runs queued calls in batches until none is left.
  void drainRoutes(Slot& slot);
  // Whether another route thread should take `slot`'s queue; true counts it in `draining`
  // (queue_mu held). The caller then starts it with startRouteThread.
  bool needRouteThreadLocked(Slot& slot);
  void startRouteThread(Slot& slot);

  // --- loop lanes (see LoopLane) ---
  // On an event loop: sends `c` on the loop's lane and returns true, or false when the lane
  // cannot take it (no spare channel, no live worker, a large or poisonous request, a lane
  // busy with a slow call): the route threads take it then.
  bool sendOnLane(Slot& slot, RouteCall& c);
  std::shared_ptr<LoopLane> laneOf(Slot& slot, boost::asio::io_context& loop);
  // Binds `lane` to the slot's current worker (after its earlier one ended).
  bool bindLane(Slot& slot, LoopLane& lane);
  void unbindLane(LoopLane& lane);
  // Keeps the waits a lane with calls in flight needs: readable, writable (frames the socket
  // did not take yet), and the front call's deadline.
  void armLane(Slot& slot, const std::shared_ptr<LoopLane>& lane);
  // Reads what the worker sent: CALLs served (or handed off the loop), RESULTs answered.
  void readLane(Slot& slot, const std::shared_ptr<LoopLane>& lane);
  void serveOffLoop(Slot& slot, const std::shared_ptr<LoopLane>& lane, Frame call);
  // The worker died, hung or broke the protocol: it is killed (for `why`) and the lane's
  // flight abandoned as `o` says, a route thread started for the calls queued again.
  void failLane(Slot& slot, LoopLane& lane, Outcome o, const std::string& why);
  // The worker that `flight` was sent to on channel `ch` ended as `o`: the front call is
  // answered from `o`, the calls behind it (which never ran) go back to the front of the
  // queue, in order. True if any did.
  bool abandonFlight(Slot& slot, WorkerProcess& proc, int ch, std::deque<RouteCall>& flight,
                     const Outcome& o);
  // Runs `batch` (route calls of `slot`) pipelined on one channel and answers each; with
  // `refill`, calls queued meanwhile join the pipeline until the queue is empty. Calls the
  // worker never started, because an earlier one ended it, go back to the queue.
  void runBatch(Slot& slot, std::vector<RouteCall>& batch, bool refill);
  // Queues the INVOKE of `c` on channel `ch` of `proc`: its snapshot in the channel's
  // region when it fits there, else inline.
  void sendRoute(Slot& slot, WorkerProcess& proc, int ch, RouteCall& c, const RouteSnapshot& snap);
  // The worker answered `c`: its slot may be reused.
  void giveBack(Slot& slot, WorkerProcess& proc, int ch, RouteCall& c);
  // Answers a call whose request made the worker fail repeatedly (502); false otherwise.
  bool refusePoisoned(RouteCall& c);
  // What the CALLs of route call `c` in `proc` may act on.
  Invocation invocationOf(const RouteCall& c, WorkerProcess& proc) const {
    Invocation inv;
    inv.owner = self;
    inv.proc = &proc;
    inv.ctx = c.ctx;
    inv.req = c.req;
    inv.res = c.res;
    return inv;
  }
  // The answer to a call whose conversation ended as `o` (the request's key counts a crash).
  trellis_status answer(const RouteCall& c, const Outcome& o);
  // Joins every slot's route threads (the calls they still hold end first).
  void stopRouteThreads();
  Outcome runCallback(InvokeOp op, const Remote& r, trellis_ctx* ctx, const FrameWriter& args,
                      trellis_service_reply* reply);
};

Outcome WorkerPlugin::Impl::invoke(Slot& slot, const std::shared_ptr<WorkerProcess>& proc,
                                   InvokeOp op, const FrameWriter& payload, Invocation& inv) {
  int ch = proc->acquire(Clock::now() + options.call_timeout);
  if (ch < 0) {
    Outcome out;
    out.kind = proc->dead() ? Outcome::kCrashed : Outcome::kBusy;
    out.why = proc->dead() ? proc->endReason() : "every channel of the worker stayed busy";
    if (proc->dead()) recordDeath(slot, proc, "crash");
    return out;
  }
  FrameChannel& chan = proc->channel(ch);
  const uint64_t id = nextInvokeId();
  sendInvoke(chan, op, id, payload);
  Outcome out = converse(*proc, chan, id, inv, options.call_timeout);
  proc->release(ch);
  noteEnd(slot, proc, out);
  return out;
}

void WorkerPlugin::Impl::noteEnd(Slot& slot, const std::shared_ptr<WorkerProcess>& proc,
                                 Outcome& out) {
  if (out.kind != Outcome::kCrashed && out.kind != Outcome::kTimeout) return;
  out.why = proc->endReason();
  recordDeath(slot, proc, out.kind == Outcome::kTimeout ? "timeout" : "crash");
}

Status WorkerPlugin::Impl::bringUp(Slot& slot, const std::shared_ptr<WorkerProcess>& proc) {
  for (Phase phase : {Phase::kInit, Phase::kStart}) {
    trellis_ctx ctx;
    ctx.plugin = plugin;
    ctx.phase = phase;
    runtime::CallScope scope(&ctx);
    Invocation inv;
    inv.owner = self;
    inv.ctx = &ctx;
    inv.replay = true;
    FrameWriter w;
    w.u32(0);
    writeCtx(w, &ctx);
    Outcome o =
        invoke(slot, proc, phase == Phase::kInit ? InvokeOp::kInit : InvokeOp::kStart, w, inv);
    if (o.kind != Outcome::kOk) return Status::unavailable("the worker " + o.why);
    if (o.status != TRELLIS_OK) {
      proc->kill(phase == Phase::kInit ? "on_init failed" : "on_start failed");
      return Status::unavailable(std::string(phase == Phase::kInit ? "on_init" : "on_start") +
                                 " returned " +
                                 std::string(statusCodeName(static_cast<StatusCode>(o.status))) +
                                 (ctx.error.empty() ? "" : ": " + ctx.error));
    }
    if (phase == Phase::kInit && inv.replay_pos != registrations.size()) {
      proc->kill("registered fewer callbacks than the first worker");
      return Status::unavailable("its on_init registered fewer callbacks than the first worker");
    }
  }
  return Status::ok();
}

Result<std::shared_ptr<WorkerProcess>> WorkerPlugin::Impl::ready(Slot& slot) {
  // A worker that died while idle (reaped by the death watch) is counted as a crash once,
  // and its backoff applies, as when a call finds it dead.
  std::shared_ptr<WorkerProcess> gone;
  {
    std::lock_guard lock(slot.mu);
    if (slot.proc && slot.proc->dead() && !stopping) gone = slot.proc;
  }
  if (gone) recordDeath(slot, gone, "crash while idle");
  std::unique_lock lock(slot.mu);
  if (slot.proc && !slot.proc->dead()) return slot.proc;
  if (stopping) return Status::unavailable("the plugin is stopping");
  if (slot.restarting) return Status::unavailable("its worker is restarting");
  auto now = Clock::now();
  if (now < slot.not_before) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(slot.not_before - now);
    return Status::unavailable("its worker is restarting (next start in " +
                               std::to_string(ms.count()) + " ms)");
  }
  std::shared_ptr<WorkerProcess> next;
  if (slot.spare && !slot.spare->dead()) {
    next = std::move(slot.spare);
  } else {
    auto fresh = spawn();
    if (!fresh) {
      slot.not_before = now + std::chrono::seconds(1);
      return fresh.status();
    }
    next = std::move(*fresh);
  }
  slot.spare.reset();
  // bringUp serves the CALLs of on_init on this thread; recordDeath must not deadlock.
  slot.restarting = true;
  lock.unlock();
  Status up = bringUp(slot, next);
  lock.lock();
  slot.restarting = false;
  if (!up) {
    if (slot.proc == nullptr || slot.proc->dead()) slot.proc = next;
    bool entered_crashloop = false;
    if (slot.counted.lock() != next) {  // failed without dying: count it here
      slot.counted = next;
      ++slot.crashes;
      ++slot.consecutive;
      slot.not_before = Clock::now() + backoffAfter(slot.consecutive);
      if (slot.crash_metric) slot.crash_metric->add();
      entered_crashloop = slot.consecutive == kCrashloopAfter;
    }
    slot.last_crash = up.message();
    if (entered_crashloop) auditCrashloop(slot);
    if (slot.crashloop_metric) slot.crashloop_metric->set(slot.consecutive >= kCrashloopAfter);
    spdlog::error("plugin={} tenant={} worker restart failed: {}", id,
                  slot.tenant.empty() ? "*" : slot.tenant, up.message());
    return Status::unavailable("its worker could not be restarted");
  }
  if (slot.proc && !slot.proc->dead()) {
    // Another thread restarted it meanwhile; keep theirs, this one goes.
    next->kill("not needed");
    return slot.proc;
  }
  slot.proc = next;
  slot.healthy_since = Clock::now();
  ++slot.restarts;
  if (slot.restart_metric) slot.restart_metric->add();
  spdlog::warn("plugin={} tenant={} worker restarted (pid {}, restart {})", id,
               slot.tenant.empty() ? "*" : slot.tenant, next->pid(), slot.restarts);
  // The next crash is answered by a worker that has already started.
  if (auto spare = spawn()) slot.spare = std::move(*spare);
  return slot.proc;
}

namespace {

// The key a poisonous request is known by: its route and body.
size_t poisonKey(const RouteCall& c) {
  return std::hash<std::string_view>()(c.remote->route) ^
         (std::hash<std::string_view>()(c.req->http->body()) * 1099511628211ull);
}

// A route's request as every request getter in the worker reads it, after the callback
// index: the ctx block, method, path, query, body, headers, path params. Written with a
// SizeWriter (its length), then a SpanWriter (into a region slot) or a FrameWriter (inline).
class RouteSnapshot {
 public:
  explicit RouteSnapshot(const RouteCall& c) : c_(c) {
    for (const auto& [name, raw] : c.req->match->params)
      params_.push_back(http::percentDecode(raw));
    SizeWriter size;
    write(size);
    size_ = size.size();
  }
  size_t size() const { return size_; }
  template <typename Writer>
  void write(Writer& w) const {
    const trellis_request* req = c_.req;
    writeCtx(w, c_.ctx);
    w.str(req->http->method_string()).str(req->path).str(req->query).str(req->http->body());
    size_t headers = 0;
    for (auto it = req->http->begin(); it != req->http->end(); ++it) ++headers;
    w.u32(static_cast<uint32_t>(headers));
    for (const auto& field : *req->http) w.str(field.name_string()).str(field.value());
    const auto& params = req->match->params;
    w.u32(static_cast<uint32_t>(params.size()));
    size_t i = 0;
    for (const auto& entry : params) {
      const auto& decoded = params_[i++];
      w.str(entry.first);
      w.str(decoded ? std::string_view(*decoded) : std::string_view()).u8(decoded ? 1 : 0);
    }
  }

 private:
  const RouteCall& c_;
  std::vector<std::optional<std::string>> params_;
  size_t size_ = 0;
};

trellis_status problem(const RouteCall& c, int32_t status, const std::string& detail) {
  return runtime::hostApi()->res_problem(c.ctx, c.res, status,
                                         trellis_str{detail.data(), detail.size()});
}

}  // namespace

trellis_status WorkerPlugin::Impl::runRoute(const Remote& r, trellis_ctx* ctx,
                                            const trellis_request* req, trellis_response* res) {
  runtime::PluginCall* call = ctx->suspendable;
  Slot& slot = slotFor(ctx);
  if (!call || !call->canSuspend()) {
    trellis_status status = TRELLIS_INTERNAL;
    std::vector<RouteCall> one;
    one.emplace_back(&r, ctx, req, res, [&status](trellis_status s) { status = s; });
    runBatch(slot, one, false);
    return status;
  }
  {
    std::lock_guard lock(slot.queue_mu);
    if (slot.queued.size() >= kMaxQueuedRoutes) {
      return runtime::hostApi()->res_problem(ctx, res, 503,
                                             TRELLIS_STR("the plugin is busy; retry later"));
    }
  }
  RouteCall c(&r, ctx, req, res, call->suspendOffLoop());
  if (sendOnLane(slot, c)) return TRELLIS_OK;  // answered when its `finish` runs
  bool start_thread = false;
  {
    std::lock_guard lock(slot.queue_mu);
    slot.queued.push_back(std::move(c));
    start_thread = needRouteThreadLocked(slot);
  }
  if (start_thread) startRouteThread(slot);
  return TRELLIS_OK;  // answered when its `finish` runs
}

bool WorkerPlugin::Impl::needRouteThreadLocked(Slot& slot) {
  // Another route thread only when more than one batch waits, or when those at work are
  // stuck in slow calls: else the one at work takes this call with its next batch.
  const bool more = slot.queued.size() > slot.batchSize() || slot.stalled();
  if (slot.draining == 0 || (more && slot.draining < static_cast<size_t>(options.channels))) {
    ++slot.draining;
    return true;
  }
  return false;
}

void WorkerPlugin::Impl::startRouteThread(Slot& slot) {
  // Refused only while the plugin stops: the calls are then answered here, at once.
  if (!slot.routes || !slot.routes->trySubmit([this, &slot] { drainRoutes(slot); })) {
    drainRoutes(slot);
  }
}

// --- loop lanes ----------------------------------------------------------------------

namespace {
// CALLs a lane serves on its event loop: they read memory or queue work, as the same calls
// do for a plugin in process. Every other CALL may wait (a storage write's commit, egress,
// another plugin's service) and is served on a route thread.
bool servedOnLoop(uint16_t op) {
  switch (static_cast<CallOp>(op)) {
    case CallOp::kConfigGet:
    case CallOp::kReqQueryParam:
    case CallOp::kKvGet:
    case CallOp::kEventPublish:
    case CallOp::kTenantInfo:
    case CallOp::kUsageEmit:
    case CallOp::kKeyWrap:
    case CallOp::kKeyUnwrap: return true;
    default: return false;
  }
}

Outcome crashed() {
  Outcome o;
  o.kind = Outcome::kCrashed;
  return o;
}
}  // namespace

std::shared_ptr<LoopLane> WorkerPlugin::Impl::laneOf(Slot& slot, boost::asio::io_context& loop) {
  std::lock_guard lock(slot.lanes_mu);
  for (auto& lane : slot.lanes) {
    if (&lane->loop == &loop) return lane;
  }
  return slot.lanes.emplace_back(std::make_shared<LoopLane>(loop));
}

bool WorkerPlugin::Impl::bindLane(Slot& slot, LoopLane& lane) {
  std::shared_ptr<WorkerProcess> proc;
  {
    std::lock_guard lock(slot.mu);
    proc = slot.proc;
  }
  if (!proc || proc->dead()) return false;  // the route threads start the next one
  if (lane.proc == proc) return true;
  if (!lane.flight.empty()) return false;  // still ending with the one before
  unbindLane(lane);
  const int ch = proc->acquireSpare();
  if (ch < 0) return false;
  const int fd = ::dup(proc->fd(ch));
  boost::system::error_code ec;
  if (fd >= 0) lane.watch.assign(fd, ec);
  if (fd < 0 || ec) {
    if (fd >= 0) ::close(fd);
    proc->release(ch);
    return false;
  }
  spdlog::debug("plugin={} tenant={}: an event loop reads worker pid {} on channel {}", id,
                slot.tenant.empty() ? "*" : slot.tenant, proc->pid(), ch);
  lane.proc = std::move(proc);
  lane.ch = ch;
  return true;
}

void WorkerPlugin::Impl::unbindLane(LoopLane& lane) {
  if (!lane.proc) return;
  boost::system::error_code ec;
  lane.watch.close(ec);  // cancels its waits
  lane.timer.cancel();
  lane.proc->release(lane.ch);
  lane.proc.reset();
  lane.ch = -1;
}

bool WorkerPlugin::Impl::sendOnLane(Slot& slot, RouteCall& c) {
  boost::asio::io_context* loop = exec::currentEventLoop();
  if (!loop || stopping) return false;
  std::shared_ptr<LoopLane> lane = laneOf(slot, *loop);
  // Behind a CALL served off the loop, a call that has been quiet for a while (slow or hung)
  // or a long pipeline, the call would wait: the route threads take it, on another channel.
  if (lane->serving || lane->flight.size() >= kMaxBatch) return false;
  if (!lane->flight.empty() &&
      Clock::now() - lane->progress > std::chrono::nanoseconds(kBatchTimeNs)) {
    return false;
  }
  if (!bindLane(slot, *lane)) return false;
  {
    std::lock_guard lock(poison_mu);
    auto it = poison.find(poisonKey(c));
    if (it != poison.end() && it->second >= kPoisonCrashes) return false;  // refused there
  }
  // The loop copies no large request: that is a route thread's work.
  const RouteSnapshot snap(c);
  if (snap.size() > kMaxLaneInvoke) return false;
  FrameChannel& chan = lane->proc->channel(lane->ch);
  if (chan.unsent()) return false;  // the worker is behind in reading: pile nothing more
  sendRoute(slot, *lane->proc, lane->ch, c, snap);
  (void)chan.flush(Clock::now());  // what the socket does not take now waits for writable
  if (lane->flight.empty()) lane->progress = Clock::now();
  lane->flight.push_back(std::move(c));
  armLane(slot, lane);
  return true;
}

void WorkerPlugin::Impl::armLane(Slot& slot, const std::shared_ptr<LoopLane>& lane) {
  if (!lane->proc || lane->flight.empty() || lane->serving) return;
  namespace asio = boost::asio;
  using Wait = asio::posix::stream_descriptor::wait_type;
  if (!lane->reading) {
    lane->reading = true;
    lane->watch.async_wait(Wait::wait_read, [this, &slot, lane](boost::system::error_code ec) {
      lane->reading = false;
      if (!ec) readLane(slot, lane);
    });
  }
  if (!lane->writing && lane->proc->channel(lane->ch).unsent()) {
    lane->writing = true;
    lane->watch.async_wait(Wait::wait_write, [this, &slot, lane](boost::system::error_code ec) {
      lane->writing = false;
      if (ec || !lane->proc) return;
      (void)lane->proc->channel(lane->ch).flush(Clock::now());
      armLane(slot, lane);
    });
  }
  if (!lane->timing) {
    lane->timing = true;
    lane->timer.expires_at(lane->progress + options.call_timeout);
    lane->timer.async_wait([this, &slot, lane](boost::system::error_code ec) {
      lane->timing = false;
      if (ec || !lane->proc || lane->flight.empty()) return;
      if (lane->serving) return;  // the host is at work, not the worker: armed again after
      if (Clock::now() - lane->progress < options.call_timeout) return armLane(slot, lane);
      Outcome o;
      o.kind = Outcome::kTimeout;
      o.unread = lane->proc->channel(lane->ch).unsent();
      failLane(slot, *lane, o, timeoutReason(o.unread, options.call_timeout));
    });
  }
}

void WorkerPlugin::Impl::readLane(Slot& slot, const std::shared_ptr<LoopLane>& lane) {
  while (lane->proc && !lane->flight.empty() && !lane->serving) {
    FrameChannel& chan = lane->proc->channel(lane->ch);
    Frame f;
    auto got = chan.tryRead(f);
    if (!got) return failLane(slot, *lane, crashed(), channelFailure(got.status()));
    if (!*got) break;
    lane->progress = Clock::now();
    RouteCall& c = lane->flight.front();
    runtime::CallScope scope(c.ctx);
    Invocation inv = invocationOf(c, *lane->proc);
    if (f.type == FrameType::kCall) {
      if (!servedOnLoop(f.op)) return serveOffLoop(slot, lane, std::move(f));
      FrameWriter reply;
      if (std::string why = answerCall(inv, f, reply); !why.empty()) {
        return failLane(slot, *lane, crashed(), why);
      }
      (void)chan.send(FrameType::kReply, f.op, f.id, reply);
      (void)chan.flush(Clock::now());
      continue;
    }
    auto status = takeResult(inv, f, c.id);
    if (!status) return failLane(slot, *lane, crashed(), status.status().message());
    giveBack(slot, *lane->proc, lane->ch, c);
    c.finish(*status);
    lane->flight.pop_front();
  }
  armLane(slot, lane);
}

void WorkerPlugin::Impl::serveOffLoop(Slot& slot, const std::shared_ptr<LoopLane>& lane,
                                      Frame call) {
  lane->serving = true;
  auto serve = [this, &slot, lane, call = std::move(call)] {
    auto reply = std::make_shared<FrameWriter>();
    std::string why;
    {
      exec::EventLoopRules rules;           // what the loop would refuse, refused here too
      RouteCall& c = lane->flight.front();  // nothing leaves the flight while serving
      runtime::CallScope scope(c.ctx);
      Invocation inv = invocationOf(c, *lane->proc);
      why = answerCall(inv, call, *reply);
    }
    boost::asio::post(lane->loop, [this, &slot, lane, reply, why, op = call.op, id = call.id] {
      lane->serving = false;
      lane->progress = Clock::now();
      if (!why.empty()) return failLane(slot, *lane, crashed(), why);
      FrameChannel& chan = lane->proc->channel(lane->ch);
      (void)chan.send(FrameType::kReply, op, id, *reply);
      (void)chan.flush(Clock::now());
      readLane(slot, lane);  // the worker may have answered already
    });
  };
  if (!slot.routes || !slot.routes->trySubmit(serve)) serve();  // the plugin is stopping
}

void WorkerPlugin::Impl::failLane(Slot& slot, LoopLane& lane, Outcome o, const std::string& why) {
  std::shared_ptr<WorkerProcess> proc = lane.proc;
  proc->kill(why);
  noteEnd(slot, proc, o);
  std::deque<RouteCall> flight = std::move(lane.flight);
  lane.flight.clear();
  const bool requeued = abandonFlight(slot, *proc, lane.ch, flight, o);
  unbindLane(lane);
  if (!requeued) return;
  bool start_thread = false;
  {
    std::lock_guard lock(slot.queue_mu);
    start_thread = needRouteThreadLocked(slot);
  }
  if (start_thread) startRouteThread(slot);
}

bool WorkerPlugin::Impl::abandonFlight(Slot& slot, WorkerProcess& proc, int ch,
                                       std::deque<RouteCall>& flight, const Outcome& o) {
  // No slot of the channel is read again, neither the front call's nor those behind it.
  const size_t dropped = proc.arena(ch).clear();
  if (slot.snapshot_slots && dropped) slot.snapshot_slots->add(-static_cast<double>(dropped));
  for (RouteCall& c : flight) c.slot.reset();
  RouteCall& front = flight.front();
  {
    runtime::CallScope scope(front.ctx);
    front.finish(answer(front, o));
  }
  flight.pop_front();
  if (flight.empty()) return false;
  // The calls after it never ran: back to the front of the queue, in order, for the next
  // worker.
  std::lock_guard lock(slot.queue_mu);
  while (!flight.empty()) {
    flight.back().id = 0;
    slot.queued.push_front(std::move(flight.back()));
    flight.pop_back();
  }
  return true;
}

void WorkerPlugin::Impl::drainRoutes(Slot& slot) {
  exec::EventLoopRules rules;  // the calls come from event loops: the same rules apply
  for (;;) {
    std::vector<RouteCall> batch;
    {
      std::lock_guard lock(slot.queue_mu);
      if (slot.queued.empty()) {
        --slot.draining;
        return;
      }
      const size_t size = slot.batchSize();
      while (!slot.queued.empty() && batch.size() < size) {
        batch.push_back(std::move(slot.queued.front()));
        slot.queued.pop_front();
      }
    }
    slot.noteProgress();
    runBatch(slot, batch, true);
  }
}

bool WorkerPlugin::Impl::refusePoisoned(RouteCall& c) {
  {
    std::lock_guard lock(poison_mu);
    auto it = poison.find(poisonKey(c));
    if (it == poison.end() || it->second < kPoisonCrashes) return false;
  }
  runtime::CallScope scope(c.ctx);
  c.finish(
      problem(c, 502, "this request made the plugin's worker fail repeatedly; it is not retried"));
  return true;
}

void WorkerPlugin::Impl::runBatch(Slot& slot, std::vector<RouteCall>& batch, bool refill) {
  std::deque<RouteCall> flight;  // sent (or about to be), answered in this order
  for (RouteCall& c : batch) {
    if (!refusePoisoned(c)) flight.push_back(std::move(c));
  }
  if (flight.empty()) return;
  // Answers every call of the flight without reaching the worker.
  auto refuseAll = [&](int32_t status, const std::string& detail) {
    for (RouteCall& c : flight) {
      runtime::CallScope scope(c.ctx);
      c.finish(problem(c, status, detail));
    }
  };
  auto proc = ready(slot);
  if (!proc) return refuseAll(502, "the plugin is unavailable: " + proc.status().message());
  std::shared_ptr<WorkerProcess> worker = std::move(*proc);
  const int ch = worker->acquire(Clock::now() + options.call_timeout);
  if (ch < 0) {
    if (!worker->dead()) return refuseAll(503, "the plugin is busy; retry later");
    recordDeath(slot, worker, "crash");
    return refuseAll(502, "the plugin's worker process failed");
  }
  FrameChannel& chan = worker->channel(ch);
  auto send = [&](RouteCall& c) { sendRoute(slot, *worker, ch, c, RouteSnapshot(c)); };
  for (RouteCall& c : flight) send(c);
  while (!flight.empty()) {
    RouteCall& c = flight.front();
    runtime::CallScope scope(c.ctx);
    Invocation inv = invocationOf(c, *worker);
    const auto started = Clock::now();
    Outcome o = converse(*worker, chan, c.id, inv, options.call_timeout);
    const auto ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count());
    slot.call_ns.store((slot.call_ns.load(std::memory_order_relaxed) * 7 + ns) / 8,
                       std::memory_order_relaxed);
    slot.noteProgress();
    if (o.kind != Outcome::kOk) {
      noteEnd(slot, worker, o);                     // converse killed it
      abandonFlight(slot, *worker, ch, flight, o);  // this thread takes the rest next
      worker->release(ch);
      return;
    }
    giveBack(slot, *worker, ch, c);
    c.finish(o.status);
    flight.pop_front();
    // Calls queued meanwhile join the flight at once, so the worker is never left idle
    // waiting for this thread to come back with the next batch.
    if (!refill) continue;
    std::vector<RouteCall> more;
    {
      std::lock_guard lock(slot.queue_mu);
      const size_t room = slot.batchSize();
      while (!slot.queued.empty() && flight.size() + more.size() < room) {
        more.push_back(std::move(slot.queued.front()));
        slot.queued.pop_front();
      }
    }
    if (more.empty()) continue;
    for (RouteCall& m : more) {
      if (refusePoisoned(m)) continue;
      flight.push_back(std::move(m));
      send(flight.back());
    }
    // Written as far as the socket takes them now: the next read writes the rest while it
    // waits (a worker answering large RESULTs reads these only once it has written them).
    // A failure shows as the channel closed there.
    (void)chan.flush(Clock::now());
  }
  worker->release(ch);
}

void WorkerPlugin::Impl::sendRoute(Slot& slot, WorkerProcess& proc, int ch, RouteCall& c,
                                   const RouteSnapshot& snap) {
  FrameChannel& chan = proc.channel(ch);
  c.id = nextInvokeId();
  char* at = nullptr;
  std::optional<uint64_t> offset;
  if (snap.size() >= options.snapshot_min_bytes && snap.size() <= UINT32_MAX) {
    offset = proc.arena(ch).place(snap.size(), &at);
  }
  if (offset) {
    SpanWriter w(at, snap.size());
    snap.write(w);
    c.slot = offset;
    FrameWriter f;
    f.u32(c.remote->index).u64(*offset).u32(static_cast<uint32_t>(snap.size()));
    sendInvoke(chan, InvokeOp::kRouteShared, c.id, f);
    if (slot.shared_snapshots) slot.shared_snapshots->add();
    if (slot.snapshot_slots) slot.snapshot_slots->add(1);
    return;
  }
  FrameWriter f;
  f.data().reserve(4 + snap.size());
  f.u32(c.remote->index);
  snap.write(f);
  sendInvoke(chan, InvokeOp::kRoute, c.id, f);
  if (slot.inline_snapshots) slot.inline_snapshots->add();
}

void WorkerPlugin::Impl::giveBack(Slot& slot, WorkerProcess& proc, int ch, RouteCall& c) {
  if (!c.slot) return;
  proc.arena(ch).giveBack(*c.slot);
  c.slot.reset();
  if (slot.snapshot_slots) slot.snapshot_slots->add(-1);
}

trellis_status WorkerPlugin::Impl::answer(const RouteCall& c, const Outcome& o) {
  switch (o.kind) {
    case Outcome::kOk: return o.status;
    case Outcome::kTimeout:
      return problem(c, 504,
                     (o.unread ? "the plugin's worker did not read its requests within "
                               : "the plugin did not answer within ") +
                         std::to_string(options.call_timeout.count()) + " ms");
    case Outcome::kBusy: return problem(c, 503, "the plugin is busy; retry later");
    case Outcome::kCrashed:
    case Outcome::kUnavailable: {
      std::lock_guard lock(poison_mu);
      if (poison.size() > 4096) poison.clear();
      ++poison[poisonKey(c)];
      break;
    }
  }
  return problem(c, 502, "the plugin's worker process failed during this request");
}

void WorkerPlugin::Impl::stopRouteThreads() {
  for (Slot* slot : slots()) slot->routes.reset();
}

Outcome WorkerPlugin::Impl::runCallback(InvokeOp op, const Remote& r, trellis_ctx* ctx,
                                        const FrameWriter& args, trellis_service_reply* reply) {
  Slot& slot = slotFor(ctx);
  auto proc = ready(slot);
  if (!proc) return {Outcome::kUnavailable, TRELLIS_UNAVAILABLE, proc.status().message()};
  FrameWriter w;
  w.u32(r.index);
  writeCtx(w, ctx);
  w.bytes(args.data());
  Invocation inv;
  inv.owner = self;
  inv.ctx = ctx;
  inv.reply = reply;
  return invoke(slot, *proc, op, w, inv);
}

namespace {

trellis_status routeTrampoline(void* user, const trellis_ctx* c, const trellis_request* req,
                               trellis_response* res) {
  auto* r = static_cast<Remote*>(user);
  return r->impl->runRoute(*r, const_cast<trellis_ctx*>(c), req, res);
}

trellis_status failed(trellis_ctx* ctx, const Outcome& o) {
  if (o.kind == Outcome::kOk) return o.status;
  ctx->error = "the plugin's worker " + (o.why.empty() ? std::string("failed") : o.why);
  return o.kind == Outcome::kTimeout ? TRELLIS_TIMEOUT : TRELLIS_UNAVAILABLE;
}

void eventTrampoline(void* user, const trellis_ctx* c, trellis_str topic, trellis_str payload) {
  auto* r = static_cast<Remote*>(user);
  FrameWriter w;
  w.str({topic.ptr, topic.len}).str({payload.ptr, payload.len});
  auto* ctx = const_cast<trellis_ctx*>(c);
  Outcome o = r->impl->runCallback(InvokeOp::kEvent, *r, ctx, w, nullptr);
  if (o.kind != Outcome::kOk) {
    spdlog::warn("plugin={} event {} not delivered: worker {}", r->impl->id,
                 std::string_view(topic.ptr, topic.len), o.why);
  }
}

trellis_status serviceTrampoline(void* user, const trellis_ctx* c, trellis_str request,
                                 trellis_service_reply* reply) {
  auto* r = static_cast<Remote*>(user);
  FrameWriter w;
  w.str({request.ptr, request.len});
  auto* ctx = const_cast<trellis_ctx*>(c);
  return failed(ctx, r->impl->runCallback(InvokeOp::kService, *r, ctx, w, reply));
}

trellis_status jobTrampoline(void* user, const trellis_ctx* c, trellis_str name,
                             trellis_str payload) {
  auto* r = static_cast<Remote*>(user);
  FrameWriter w;
  w.str({name.ptr, name.len}).str({payload.ptr, payload.len});
  auto* ctx = const_cast<trellis_ctx*>(c);
  return failed(ctx, r->impl->runCallback(InvokeOp::kJob, *r, ctx, w, nullptr));
}

WorkerPlugin::Impl* implOf(void* state) {
  return static_cast<WorkerPlugin::Impl*>(state);
}

// Runs a lifecycle hook in every slot's worker (shared first).
trellis_status lifecycle(WorkerPlugin::Impl* impl, InvokeOp op, const trellis_ctx* c) {
  auto* ctx = const_cast<trellis_ctx*>(c);
  trellis_status result = TRELLIS_OK;
  bool first = true;
  for (Slot* slot : impl->slots()) {
    std::shared_ptr<WorkerProcess> proc;
    {
      std::lock_guard lock(slot->mu);
      proc = slot->proc;
    }
    if (!proc || proc->dead()) {
      if (op == InvokeOp::kInit || op == InvokeOp::kStart) {
        if (ctx) ctx->error = "the plugin's worker is not running";
        return TRELLIS_UNAVAILABLE;
      }
      continue;
    }
    Invocation inv;
    inv.owner = impl->self;
    inv.ctx = ctx;
    inv.replay = op == InvokeOp::kInit && !first;
    FrameWriter w;
    w.u32(0);
    writeCtx(w, ctx);
    Outcome o = impl->invoke(*slot, proc, op, w, inv);
    if (o.kind != Outcome::kOk) {
      if (ctx) ctx->error = "the plugin's worker " + o.why;
      if (op == InvokeOp::kInit || op == InvokeOp::kStart) return TRELLIS_UNAVAILABLE;
    } else if (o.status != TRELLIS_OK) {
      result = o.status;
      if (op == InvokeOp::kInit || op == InvokeOp::kStart) return result;
    }
    if (op == InvokeOp::kInit && inv.replay && inv.replay_pos != impl->registrations.size()) {
      if (ctx) ctx->error = "a dedicated worker's on_init registered other callbacks";
      return TRELLIS_INTERNAL;
    }
    if (op == InvokeOp::kStart) {
      std::lock_guard lock(slot->mu);
      slot->healthy_since = Clock::now();
    }
    first = false;
  }
  return result;
}

trellis_status onInit(const trellis_host_api*, const trellis_ctx* ctx, void** state) {
  return lifecycle(implOf(*state), InvokeOp::kInit, ctx);
}
trellis_status onStart(void* state, const trellis_ctx* ctx) {
  return lifecycle(implOf(state), InvokeOp::kStart, ctx);
}
void onStop(void* state, const trellis_ctx* ctx) {
  lifecycle(implOf(state), InvokeOp::kStop, ctx);
}
void onDestroy(void* state) {
  WorkerPlugin::Impl* impl = implOf(state);
  lifecycle(impl, InvokeOp::kDestroy, nullptr);
  impl->stopping = true;
  for (Slot* slot : impl->slots()) {
    std::lock_guard lock(slot->mu);
    if (slot->proc) slot->proc->kill("stopped");
    if (slot->spare) slot->spare->kill("stopped");
  }
}

}  // namespace

trellis_status registerCallback(Invocation& inv, CallOp op, FrameReader& r, uint64_t* out,
                                bool* malformed) {
  WorkerPlugin::Impl* impl = implOf(inv.owner->hookState());
  Registration reg;
  reg.op = op;
  switch (op) {
    case CallOp::kRouteAdd:
    case CallOp::kServiceProvide:
      reg.a = std::string(r.str());
      reg.b = std::string(r.str());
      reg.index = r.u32();
      break;
    case CallOp::kEventSubscribe:
      reg.a = std::string(r.str());
      reg.index = r.u32();
      break;
    case CallOp::kJobHandler: reg.index = r.u32(); break;
    case CallOp::kMetricDefine:
      reg.kind = r.i32();
      reg.a = std::string(r.str());
      reg.b = std::string(r.str());
      break;
    default: *malformed = true; return TRELLIS_INVALID;
  }
  if (!r.ok()) {
    *malformed = true;
    return TRELLIS_INVALID;
  }
  trellis_ctx* ctx = inv.ctx;
  if (ctx->phase != Phase::kInit) {
    ctx->error = "registrations are allowed only during on_init";
    return TRELLIS_INVALID;
  }
  if (inv.replay) {
    // A later worker of the same plugin: it must register what the first one did.
    if (inv.replay_pos >= impl->registrations.size()) {
      inv.replay_diverged = true;
      return TRELLIS_INVALID;
    }
    const Registration& first = impl->registrations[inv.replay_pos++];
    if (first.op != reg.op || first.a != reg.a || first.b != reg.b || first.kind != reg.kind ||
        first.index != reg.index) {
      inv.replay_diverged = true;
      return TRELLIS_INVALID;
    }
    *out = first.result;
    return TRELLIS_OK;
  }
  const trellis_host_api* api = runtime::hostApi();
  auto str = [](const std::string& s) { return trellis_str{s.data(), s.size()}; };
  trellis_status s = TRELLIS_INVALID;
  auto remote = [&]() -> Remote* {
    impl->remotes.push_back({impl, reg.index, reg.a + " " + reg.b});
    return &impl->remotes.back();
  };
  switch (op) {
    case CallOp::kRouteAdd:
      s = api->route_add(ctx, str(reg.a), str(reg.b), routeTrampoline, remote());
      break;
    case CallOp::kServiceProvide:
      s = api->service_provide(ctx, str(reg.a), str(reg.b), serviceTrampoline, remote());
      break;
    case CallOp::kEventSubscribe:
      s = api->event_subscribe(ctx, str(reg.a), eventTrampoline, remote());
      break;
    case CallOp::kJobHandler: s = api->job_handler(ctx, jobTrampoline, remote()); break;
    case CallOp::kMetricDefine: {
      trellis_metric_id id = 0;
      s = api->metric_define(ctx, reg.kind, str(reg.a), str(reg.b), &id);
      reg.result = id;
      *out = id;
      break;
    }
    default: break;
  }
  // Only what succeeded is repeated by later workers (their failures would differ).
  if (s == TRELLIS_OK) impl->registrations.push_back(std::move(reg));
  return s;
}

Result<std::unique_ptr<WorkerPlugin>> WorkerPlugin::open(runtime::PluginInstance& plugin,
                                                         const std::filesystem::path& library,
                                                         const WorkerOptions& options,
                                                         std::vector<std::string> dedicated) {
  std::unique_ptr<WorkerPlugin> w(new WorkerPlugin());
  w->impl_ = std::make_unique<Impl>();
  Impl& impl = *w->impl_;
  impl.self = w.get();
  impl.plugin = &plugin;
  impl.library = library;
  impl.options = options;
  const std::string name = library.filename().string();
  // What can be refused without running the library is refused here, with the same
  // messages as in process; the worker reports what only loading it can tell. A Lua
  // plugin's entry was checked by the caller (LuaPlugin::readEntry).
  const bool lua = plugin.manifest().runtime == "lua";
  if (!lua) {
    if (Status s = plugin::NativeLibrary::inspect(library, plugin.manifest()); !s) return s;
  }
  for (auto& t : dedicated) {
    auto slot = std::make_unique<Slot>();
    slot->tenant = t;
    impl.dedicated.emplace(t, std::move(slot));
  }
  metrics::MetricsRegistry* reg = plugin.services().metrics;
  for (Slot* slot : impl.slots()) {
    const auto threads = static_cast<size_t>(options.channels);
    slot->routes = std::make_unique<exec::BlockingPool>(threads, threads);
    auto first = impl.spawn();
    if (!first) return Status(first.status().code(), name + ": " + first.status().message());
    // No spare yet: start-up pays for one process per worker, and the first restart starts
    // the spare that answers the next crash (ready()).
    slot->proc = std::move(*first);
    if (reg) {
      std::vector<std::string> labels = {plugin.id(), slot->tenant.empty() ? "*" : slot->tenant};
      slot->crash_metric = &reg->counter("trellis_worker_crashes_total",
                                         "Plugin worker processes that crashed, hung or broke "
                                         "the protocol",
                                         {"plugin", "tenant"})
                                .labels(labels);
      slot->restart_metric =
          &reg->counter("trellis_worker_restarts_total", "Plugin worker processes restarted",
                        {"plugin", "tenant"})
               .labels(labels);
      slot->crashloop_metric =
          &reg->gauge("trellis_worker_crashlooping",
                      "1 while a plugin worker has crashed 5 or more times in a row",
                      {"plugin", "tenant"})
               .labels(labels);
      auto& snapshots = reg->counter("trellis_worker_snapshots_total",
                                     "Route requests sent to plugin workers, by where their "
                                     "snapshot travelled: a shared-memory slot or the INVOKE",
                                     {"plugin", "tenant", "path"});
      slot->shared_snapshots = &snapshots.labels({plugin.id(), labels[1], "shared"});
      slot->inline_snapshots = &snapshots.labels({plugin.id(), labels[1], "inline"});
      slot->snapshot_slots =
          &reg->gauge("trellis_worker_snapshot_slots",
                      "Shared-memory request snapshots a plugin worker may still read",
                      {"plugin", "tenant"})
               .labels(labels);
    }
  }
  // The library's descriptor must match the manifest, as in process (NativeLibrary).
  const Hello& hello = impl.shared.proc->hello();
  const auto& m = plugin.manifest();
  if (Status abi = plugin::checkAbi(static_cast<uint16_t>(hello.abi_major),
                                    static_cast<uint16_t>(hello.abi_minor));
      !abi || hello.abi_major > 0xffff || hello.abi_minor > 0xffff) {
    return Status::invalid(name + ": " + (abi ? "ABI out of range" : abi.message()));
  }
  // A Lua plugin's descriptor is the adapter's, built for this host's ABI.
  if (!lua && (hello.abi_major != m.abi_major || hello.abi_minor != m.abi_minor)) {
    return Status::invalid(name + ": descriptor says ABI " + std::to_string(hello.abi_major) + "." +
                           std::to_string(hello.abi_minor) + " but manifest says ABI " +
                           std::to_string(m.abi_major) + "." + std::to_string(m.abi_minor));
  }
  if (hello.id != m.id || hello.version != m.version.toString()) {
    return Status::invalid(name + ": descriptor says " + hello.id + "@" + hello.version +
                           " but manifest says " + m.id + "@" + m.version.toString());
  }
  impl.id = hello.id;
  impl.version = hello.version;
  spdlog::info("plugin {} runs in worker pid {} (landlock: {})", impl.id, impl.shared.proc->pid(),
               hello.landlock);
  w->descriptor_ = trellis_plugin{sizeof(trellis_plugin),
                                  static_cast<uint16_t>(hello.abi_major),
                                  static_cast<uint16_t>(hello.abi_minor),
                                  impl.id.c_str(),
                                  impl.version.c_str(),
                                  onInit,
                                  onStart,
                                  onStop,
                                  onDestroy};
  return w;
}

WorkerPlugin::~WorkerPlugin() {
  impl_->stopping = true;
  for (Slot* slot : impl_->slots()) {
    std::lock_guard lock(slot->mu);
    if (slot->proc) slot->proc->kill("stopped");
    if (slot->spare) slot->spare->kill("stopped");
  }
  // Calls still queued end now (502: the plugin is stopping), before what they use goes.
  impl_->stopRouteThreads();
}

std::vector<WorkerReport> WorkerPlugin::report() const {
  std::vector<WorkerReport> out;
  auto now = Clock::now();
  for (Slot* slot : impl_->slots()) {
    std::lock_guard lock(slot->mu);
    WorkerReport r;
    r.tenant = slot->tenant;
    r.restarts = slot->restarts;
    r.crashes = slot->crashes;
    r.last_crash = slot->last_crash;
    bool alive = slot->proc && !slot->proc->dead();
    if (impl_->stopping) {
      r.state = "stopped";
    } else if (alive) {
      r.state = "running";
      r.pid = slot->proc->pid();
    } else {
      r.state = slot->consecutive >= kCrashloopAfter ? "crashlooping" : "restarting";
      if (slot->not_before > now) {
        r.backoff_seconds = std::chrono::duration<double>(slot->not_before - now).count();
      }
    }
    if (slot->proc) r.landlock = slot->proc->hello().landlock;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace trellis::kernel::worker
