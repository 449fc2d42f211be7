// One hook's conversation on a worker channel: the INVOKE, the CALLs served meanwhile (the
// bridge loop) and the RESULT. Every frame the worker sends is checked before it is used.
#include <atomic>
#include <string>

#include "worker/host_side/invocation.h"
#include "worker/host_side/worker_process.h"

namespace trellis::kernel::worker {
namespace {
std::atomic<uint64_t> g_next_invoke{1};
}  // namespace

uint64_t nextInvokeId() {
  return g_next_invoke.fetch_add(1, std::memory_order_relaxed);
}

void sendInvoke(FrameChannel& chan, InvokeOp op, uint64_t id, const FrameWriter& payload) {
  // Only an oversized payload fails to queue; the host builds none (a request body is
  // bounded far below kMaxFramePayload), and a failed send shows as a closed channel next.
  (void)chan.send(FrameType::kInvoke, static_cast<uint16_t>(op), id, payload);
}

Outcome converse(WorkerProcess& proc, FrameChannel& chan, uint64_t id, Invocation& inv,
                 std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  Outcome out;
  inv.proc = &proc;
  auto end = [&](Outcome::Kind kind, const std::string& why) {
    proc.kill(why);
    out.kind = kind;
    return out;
  };
  for (;;) {
    Frame f;
    Status s = chan.read(f, Clock::now() + timeout);
    if (!s) {
      if (s.code() == StatusCode::kTimeout) {
        out.unread = chan.unsent();
        return end(Outcome::kTimeout, timeoutReason(out.unread, timeout));
      }
      return end(Outcome::kCrashed, channelFailure(s));
    }
    if (f.type == FrameType::kCall) {
      FrameWriter reply;
      if (std::string why = answerCall(inv, f, reply); !why.empty()) {
        return end(Outcome::kCrashed, why);
      }
      (void)chan.send(FrameType::kReply, f.op, f.id, reply);  // flushed by the next read
      continue;
    }
    auto status = takeResult(inv, f, id);
    if (!status) return end(Outcome::kCrashed, status.status().message());
    out.status = *status;
    return out;
  }
}

std::string timeoutReason(bool unread, std::chrono::milliseconds timeout) {
  // Frames still queued at the deadline: the worker stopped reading its channel (the
  // request, or the replies to its CALLs, never reached it), which is not the same fault as
  // a hook that read its request and never answered.
  return (unread ? "did not read its requests within " : "gave no answer within ") +
         std::to_string(timeout.count()) + " ms";
}

std::string channelFailure(const Status& s) {
  if (s.code() == StatusCode::kInvalid) return "protocol violation: " + s.message();
  return "its channel closed";
}

std::string answerCall(Invocation& inv, const Frame& call, FrameWriter& reply) {
  if (!serveCall(inv, call, reply)) {
    return "protocol violation: a CALL that does not decode (op " + std::to_string(call.op) + ")";
  }
  if (inv.replay_diverged) {
    return "protocol violation: its on_init registered other callbacks than the first worker's";
  }
  return {};
}

Result<int32_t> takeResult(Invocation& inv, const Frame& f, uint64_t id) {
  if (f.type != FrameType::kResult || f.id != id) {
    return Status::invalid("protocol violation: a frame it was never asked for (type " +
                           std::to_string(int(f.type)) + ")");
  }
  FrameReader r(f.payload);
  std::string_view effects = r.str();
  int32_t status = r.i32();
  if (!r.ok() || !r.atEnd() || !applyEffects(inv, effects)) {
    return Status::invalid("protocol violation: a RESULT that does not decode");
  }
  return status;
}

}  // namespace trellis::kernel::worker
