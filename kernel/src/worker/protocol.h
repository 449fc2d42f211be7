// The framed protocol between trellisd and a plugin worker process (trellis-worker), one
// codec shared by both sides. A frame is a 16-byte header {payload length, type, op, call
// id} followed by a flat payload of fixed-width integers and length-prefixed byte strings.
// Nothing in a frame is a pointer; every length is checked against the bytes that arrived
// and against kMaxFramePayload before anything is read, so a compromised worker can only
// make its own frames fail to decode.
//
//   FrameChannel chan(fd);
//   FrameWriter w;
//   w.u32(index).str(method).str(path);
//   chan.send(FrameType::kInvoke, InvokeOp::kRoute, call_id, w);
//   Frame f;
//   if (Status s = chan.read(f, deadline); !s) ...   // writes what is queued as it waits
//   FrameReader r(f.payload);
//   uint32_t index = r.u32(); std::string_view m = r.str();
//   if (!r.ok()) ... // truncated or oversized field: a protocol violation
//
// One channel (a SOCK_STREAM socketpair) carries one conversation at a time: the host sends
// an INVOKE and reads frames until the RESULT with the same id, serving every CALL the
// plugin makes meanwhile with a REPLY (the bridge loop). The host may pipeline several
// INVOKEs on a channel; the worker runs them one after another, in order, so their
// conversations follow each other on it. Effect-only host calls (log, set_error,
// metric_record, the response setters, service_reply) are batched by the worker and travel
// at the front of the next CALL or RESULT.
//
// A route's request (its ctx block, method, path, query, body, headers and path params)
// usually does not travel in its INVOKE: the host writes it into a slot of the channel's
// snapshot region, a sealed memfd the worker maps read-only, and the INVOKE (kRouteShared)
// carries only {offset, length}. The worker decodes the slot with a FrameReader, exactly as
// it would an inline payload, after checking the slot lies inside its mapping; the slot is
// the host's again once the RESULT is read (or the worker is dead). A snapshot that does
// not fit goes inline (kRoute), as before.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::worker {

// A frame larger than this is a protocol violation; the channel is dropped.
constexpr uint32_t kMaxFramePayload = 16u * 1024 * 1024 + 64 * 1024;
// Egress stream bytes cross the channel in pieces of at most this many bytes: a larger
// stream_write is sent as several CALLs, a stream_read asks for at most this much. A
// piece larger than this in a stream CALL is a protocol violation.
constexpr uint32_t kMaxStreamChunk = 1u * 1024 * 1024;
// The protocol spoken; the worker names it in HELLO and the host refuses any other.
constexpr uint32_t kProtocolVersion = 2;

enum class FrameType : uint16_t {
  kHello = 1,     // worker -> host, once per channel: protocol, descriptor id/version/ABI
  kInvoke = 2,    // host -> worker: run a plugin hook (op: InvokeOp)
  kResult = 3,    // worker -> host: the hook returned (same id as its INVOKE)
  kCall = 4,      // worker -> host: a host-table call made by the plugin (op: CallOp)
  kReply = 5,     // host -> worker: the answer to a CALL (same id)
  kShutdown = 6,  // host -> worker: exit now
  kRefused = 7,   // worker -> host, instead of HELLO: why it cannot run the library
};

enum class InvokeOp : uint16_t {
  kInit = 1,
  kStart = 2,
  kStop = 3,
  kDestroy = 4,
  kRoute = 5,
  kEvent = 6,
  kService = 7,
  kJob = 8,
  // A route whose snapshot is in the channel's region: u32 index, u64 offset, u32 length;
  // the slot holds what follows the index in a kRoute payload.
  kRouteShared = 9,
};

// Host-table slots that need the host's answer. Everything else is answered in the worker
// (clock, ctx getters, request getters from the snapshot) or batched (Effect).
enum class CallOp : uint16_t {
  kConfigGet = 1,
  kRouteAdd,
  kReqQueryParam,
  kKvGet,
  kKvPut,
  kKvDelete,
  kKvList,
  kEventPublish,
  kEventSubscribe,
  kMetricDefine,
  kTenantInfo,
  kTenantKeysList,
  kTenantKeyCreate,
  kTenantKeyRotate,
  kTenantKeyRevoke,
  kHandleClose,
  kServiceProvide,
  kServiceCall,
  kJobHandler,
  kJobSchedule,
  kJobCancel,
  kHttpSend,
  kHttpResponseStatus,
  kHttpResponseHeaders,
  kHttpResponseRead,
  kBlobOpenWrite,
  kBlobWrite,
  kBlobCommit,
  kBlobOpenRead,
  kBlobRead,
  kBlobHead,
  kBlobDelete,
  kBlobList,
  kAuditEmit,
  kUsageAck,
  kUsageEmit,
  kStreamConnect,
  kStreamWrite,
  kStreamRead,
  kScriptLoad,
  kScriptCall,
  kKeyWrap,
  kKeyUnwrap,
  kLast = kKeyUnwrap,
};

// Wire values are fixed: a test fixture playing a hostile worker forges them.
static_assert(static_cast<uint16_t>(CallOp::kStreamConnect) == 37 &&
              static_cast<uint16_t>(CallOp::kStreamWrite) == 38 &&
              static_cast<uint16_t>(CallOp::kStreamRead) == 39 &&
              static_cast<uint16_t>(CallOp::kScriptLoad) == 40 &&
              static_cast<uint16_t>(CallOp::kScriptCall) == 41 &&
              static_cast<uint16_t>(CallOp::kKeyWrap) == 42 &&
              static_cast<uint16_t>(CallOp::kKeyUnwrap) == 43);

// Batched effect-only calls, replayed by the host in order before it serves the frame
// that carries them.
enum class Effect : uint8_t {
  kLog = 1,             // i32 level, str msg
  kSetError = 2,        // str msg
  kMetricRecord = 3,    // u32 id, f64 value
  kResStatus = 4,       // i32 status
  kResHeader = 5,       // str name, str value
  kResBody = 6,         // str body
  kResAppend = 7,       // str chunk
  kResProblem = 8,      // i32 status, str detail
  kServiceReply = 9,    // str bytes
  kQuotaExceeded = 10,  // the worker refused a call: the request's max_host_calls is spent
  kHostCalls = 11,      // u64: the request's host calls when the hook returned (last effect)
  kLuaFailure = 12,     // u8 cause (0 error, 1 instructions, 2 memory, 3 wall_time): a Lua
                        // plugin's call failed; counted in trellis_lua_plugin_failures_total
};

struct FrameHeader {
  uint32_t length;  // payload bytes after the header
  uint16_t type;
  uint16_t op;
  uint64_t id;
};
static_assert(sizeof(FrameHeader) == 16);

// The most unparsed bytes a FrameChannel::flush() reads ahead from a peer while it cannot
// write: two whole frames. A peer that sends more without reading is left to fill its own
// socket; the flush then ends at its deadline.
constexpr size_t kMaxReadAhead = 2 * (sizeof(FrameHeader) + kMaxFramePayload);

class FrameWriter {
 public:
  FrameWriter& u8(uint8_t v) { return raw(&v, 1); }
  FrameWriter& u32(uint32_t v) { return raw(&v, 4); }
  FrameWriter& i32(int32_t v) { return raw(&v, 4); }
  FrameWriter& u64(uint64_t v) { return raw(&v, 8); }
  FrameWriter& f64(double v) { return raw(&v, 8); }
  FrameWriter& str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    return raw(s.data(), s.size());
  }
  FrameWriter& bytes(std::string_view s) { return raw(s.data(), s.size()); }
  const std::string& data() const { return buf_; }
  std::string& data() { return buf_; }
  size_t size() const { return buf_.size(); }
  void clear() { buf_.clear(); }

 private:
  FrameWriter& raw(const void* p, size_t n) {
    buf_.append(static_cast<const char*>(p), n);
    return *this;
  }
  std::string buf_;
};

// FrameWriter's encoding, counting bytes only: sizes a snapshot before it is placed.
class SizeWriter {
 public:
  SizeWriter& u8(uint8_t) { return add(1); }
  SizeWriter& u32(uint32_t) { return add(4); }
  SizeWriter& i32(int32_t) { return add(4); }
  SizeWriter& u64(uint64_t) { return add(8); }
  SizeWriter& f64(double) { return add(8); }
  SizeWriter& str(std::string_view s) { return add(4 + s.size()); }
  size_t size() const { return n_; }

 private:
  SizeWriter& add(size_t n) {
    n_ += n;
    return *this;
  }
  size_t n_ = 0;
};

// FrameWriter's encoding into memory the caller sized with SizeWriter (a snapshot slot):
// the bytes are written once, where the worker reads them. Writing past `size` is a bug
// of the caller; it stops at the end and latches !ok() instead of overrunning.
class SpanWriter {
 public:
  SpanWriter(char* at, size_t size) : p_(at), left_(size) {}
  SpanWriter& u8(uint8_t v) { return raw(&v, 1); }
  SpanWriter& u32(uint32_t v) { return raw(&v, 4); }
  SpanWriter& i32(int32_t v) { return raw(&v, 4); }
  SpanWriter& u64(uint64_t v) { return raw(&v, 8); }
  SpanWriter& f64(double v) { return raw(&v, 8); }
  SpanWriter& str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    return raw(s.data(), s.size());
  }
  bool ok() const { return ok_; }

 private:
  SpanWriter& raw(const void* v, size_t n) {
    if (n > left_) {
      ok_ = false;
      left_ = 0;
      return *this;
    }
    if (n) std::memcpy(p_, v, n);
    p_ += n;
    left_ -= n;
    return *this;
  }
  char* p_;
  size_t left_;
  bool ok_ = true;
};

// Reads fields in order; any read past the end latches !ok() and yields zeros/empties, so
// decoding code checks ok() once at the end instead of after every field.
class FrameReader {
 public:
  explicit FrameReader(std::string_view payload) : p_(payload) {}
  uint8_t u8() { return fixed<uint8_t>(); }
  uint32_t u32() { return fixed<uint32_t>(); }
  int32_t i32() { return fixed<int32_t>(); }
  uint64_t u64() { return fixed<uint64_t>(); }
  double f64() { return fixed<double>(); }
  std::string_view str() {
    uint32_t n = u32();
    if (!ok_ || n > p_.size() - pos_) {
      ok_ = false;
      return {};
    }
    std::string_view s = p_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  bool ok() const { return ok_; }
  bool atEnd() const { return pos_ == p_.size(); }
  size_t remaining() const { return ok_ ? p_.size() - pos_ : 0; }

 private:
  template <typename T>
  T fixed() {
    T v{};
    if (!ok_ || sizeof(T) > p_.size() - pos_) {
      ok_ = false;
      return v;
    }
    std::memcpy(&v, p_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string_view p_;
  size_t pos_ = 0;
  bool ok_ = true;
};

struct Frame {
  FrameType type{};
  uint16_t op = 0;
  uint64_t id = 0;
  std::string payload;
};

// Writes one frame at once (a FrameChannel sent and flushed): for the worker's first frame.
// UNAVAILABLE if the peer is gone; INVALID if the payload exceeds kMaxFramePayload.
Status writeFrame(int fd, FrameType type, uint16_t op, uint64_t id, std::string_view payload);
inline Status writeFrame(int fd, FrameType type, uint16_t op, uint64_t id, const FrameWriter& w) {
  return writeFrame(fd, type, op, id, std::string_view(w.data()));
}

// One end of a channel with buffered I/O, for a conversation of many frames: read() parses
// frames out of large recv()s, so frames that arrive together (pipelined INVOKEs, a batch of
// RESULTs) cost one system call and one wake-up; send() queues a frame and flush() writes
// everything queued in one sendmsg. read() writes what is queued while it waits, so a queued
// frame is never held back from a peer that waits for it. One thread at a time.
//
// No write waits on the peer without reading it and without bound: both ends may write
// frames larger than the socket buffers at once (a large inline INVOKE while the worker
// writes a large RESULT), and each must read for the other's write to finish. read() waits
// for the peer to become readable or writable, writing what it can, until its deadline: a
// peer that stops reading costs a read its deadline, as one that stops answering does.
// flush() reads what the peer sends meanwhile into the receive buffer (at most
// kMaxReadAhead unparsed bytes) and stops at its deadline, leaving the rest queued.
class FrameChannel {
 public:
  explicit FrameChannel(int fd = -1) : fd_(fd) {}
  int fd() const { return fd_; }

  // The next frame. While it waits, it writes what is queued as the socket takes it; it
  // may return with some still queued, for the next read or flush. `deadline` bounds the
  // wait for its bytes and for the peer to read (time_point::max() = forever):
  // TIMEOUT past it, UNAVAILABLE on EOF or a socket error, INVALID for an unknown type or a
  // length over kMaxFramePayload (checked before anything is allocated; nothing more is
  // read from such a channel).
  Status read(Frame& out, std::chrono::steady_clock::time_point deadline);
  // read() without waiting, for a channel an event loop watches: true with the next frame,
  // false when its bytes have not all arrived (nothing lost: the rest is parsed later),
  // UNAVAILABLE or INVALID as read() says. Writes nothing.
  Result<bool> tryRead(Frame& out);
  // INVALID if the payload exceeds kMaxFramePayload (nothing is queued).
  Status send(FrameType type, uint16_t op, uint64_t id, std::string_view payload);
  Status send(FrameType type, uint16_t op, uint64_t id, const FrameWriter& w) {
    return send(type, op, id, std::string_view(w.data()));
  }
  // Writes everything queued, reading what the peer sends while the socket is full (see
  // above). UNAVAILABLE if the peer is gone; TIMEOUT at `deadline` with the rest still
  // queued, in order, for the next flush or read (a deadline already past: write what the
  // socket takes now, never wait).
  Status flush(std::chrono::steady_clock::time_point deadline =
                   std::chrono::steady_clock::time_point::max());
  // Whether a whole frame is already buffered (read() would not wait for it).
  bool frameBuffered() const;
  // Whether frames are queued that the socket has not taken yet.
  bool unsent() const { return out_pos_ < out_.size(); }
  // When the oldest frame still queued was queued (time_point::max() if none).
  std::chrono::steady_clock::time_point queuedSince() const { return queued_since_; }

 private:
  // Waits for bytes to read, writing what is queued (the peer may be waiting for it) as the
  // socket takes it.
  Status awaitBytes(std::chrono::steady_clock::time_point deadline);
  // Writes what the socket takes without waiting; UNAVAILABLE if the peer is gone.
  Status sendQueued();
  // Forgets what is queued once all of it is sent.
  void dropSent();
  // Takes what has arrived into the receive buffer without waiting; false at EOF or error.
  bool takeArrived();
  // The next frame if all of it is buffered (true); else false with `need` set to the bytes
  // it takes from in_pos_. INVALID for a bad header.
  Result<bool> takeBuffered(Frame& out, size_t& need);
  // Makes room in the receive buffer for `need` bytes from in_pos_ and at least a chunk.
  void makeRoom(size_t need);
  // One recv() of at most `max` bytes into the buffer's free room, without waiting: true if
  // bytes came, false if none had arrived, UNAVAILABLE at EOF or on a socket error.
  Result<bool> receive(size_t max = SIZE_MAX);

  int fd_;
  std::string in_;  // receive buffer: bytes [in_pos_, in_end_) are not parsed yet
  size_t in_pos_ = 0;
  size_t in_end_ = 0;
  std::string out_;  // frames queued: bytes [out_pos_, out_.size()) are not sent yet
  size_t out_pos_ = 0;
  bool peer_closed_ = false;  // a flush saw EOF: it reads no more (read() sees it itself)
  std::chrono::steady_clock::time_point queued_since_ =
      std::chrono::steady_clock::time_point::max();
};

}  // namespace trellis::kernel::worker
