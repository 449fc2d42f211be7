// Internal to the host side: one hook running in a worker, and the serving of the host
// calls the plugin makes meanwhile (call_server.cc).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "trellis/plugin.h"
#include "trellis/status.hpp"
#include "worker/protocol.h"

namespace trellis::kernel::worker {

class WorkerPlugin;
class WorkerProcess;

// What a CALL may act on: the ctx of the hook being run (live on this thread) and the
// request, response or service reply of that hook, if it has one.
struct Invocation {
  WorkerPlugin* owner = nullptr;
  // The worker the hook runs in: the egress streams it opens are its own (closed when it
  // ends) and it may use no other's. Set by invoke().
  WorkerProcess* proc = nullptr;
  trellis_ctx* ctx = nullptr;  // null only for on_destroy, which gets no ctx
  const trellis_request* req = nullptr;
  trellis_response* res = nullptr;
  trellis_service_reply* reply = nullptr;
  // A restarted (or dedicated) worker runs on_init again: its registrations must repeat
  // the first worker's, in order, and are answered from the record instead of the kernel.
  bool replay = false;
  size_t replay_pos = 0;
  bool replay_diverged = false;
};

// How one hook run in a worker ended (conversation.cc).
struct Outcome {
  enum Kind { kOk, kCrashed, kTimeout, kBusy, kUnavailable } kind = kOk;
  int32_t status = TRELLIS_INTERNAL;  // the hook's, when kOk
  std::string why;
  // kTimeout only: the worker had stopped reading what was sent to it (frames were still
  // queued at the deadline), rather than reading its request and giving no answer.
  bool unread = false;
};

// A fresh conversation id (never 0, never reused by this trellisd).
uint64_t nextInvokeId();

// Queues one INVOKE on `chan`: sent with the next flush, or by the read that waits for its
// answer. Several may be queued before the first is conversed (pipelined): the worker runs
// them one after another in the order sent.
void sendInvoke(FrameChannel& chan, InvokeOp op, uint64_t id, const FrameWriter& payload);

// Reads the frames of conversation `id` until its RESULT, serving every CALL the plugin
// makes meanwhile, and applies the RESULT's effects. Each frame must come within `timeout`
// of the previous one. A worker that fails, hangs, stops reading or breaks the protocol is
// killed; the outcome then says which (kCrashed or kTimeout, with `unread` for a worker that
// stopped reading; `why` its end reason is read by the caller).
Outcome converse(WorkerProcess& proc, FrameChannel& chan, uint64_t id, Invocation& inv,
                 std::chrono::milliseconds timeout);

// Why a worker is killed when its answer did not come within `timeout`: `unread` when
// frames sent to it were still queued (it stopped reading its channel).
std::string timeoutReason(bool unread, std::chrono::milliseconds timeout);
// Why a worker is killed when reading its channel failed with `s` (not a timeout): a
// protocol violation (INVALID) or a closed channel.
std::string channelFailure(const Status& s);

// Serves CALL `call` into `reply`: "" when served, else why it breaks the protocol (it does
// not decode, or a replayed on_init diverged).
std::string answerCall(Invocation& inv, const Frame& call, FrameWriter& reply);

// The RESULT of conversation `id`, its effects applied: the hook's status, or INVALID saying
// how the frame breaks the protocol (another frame, or one that does not decode).
Result<int32_t> takeResult(Invocation& inv, const Frame& f, uint64_t id);

// Replays a batch of effect-only calls in order; false if the batch is malformed.
bool applyEffects(Invocation& inv, std::string_view effects);

// Serves one CALL: fills `reply` with status, message and the op's outputs. False if the
// frame does not decode (a protocol violation: the worker is killed).
bool serveCall(Invocation& inv, const Frame& call, FrameWriter& reply);

// Registration calls (route_add, event_subscribe, service_provide, job_handler,
// metric_define), which need the WorkerPlugin; defined in worker_plugin.cc.
trellis_status registerCallback(Invocation& inv, CallOp op, FrameReader& args, uint64_t* out,
                                bool* malformed);

}  // namespace trellis::kernel::worker
