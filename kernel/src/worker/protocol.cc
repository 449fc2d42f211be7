#include "worker/protocol.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace trellis::kernel::worker {
namespace {

bool knownType(uint16_t t) {
  return t >= static_cast<uint16_t>(FrameType::kHello) &&
         t <= static_cast<uint16_t>(FrameType::kRefused);
}

// Waits until `fd` reports one of `events` (or an error or hang-up, in `revents`; POLLNVAL
// if it cannot be polled): false once the deadline passes. A deadline already past polls
// once, without waiting.
bool waitFor(int fd, short events, std::chrono::steady_clock::time_point deadline, short& revents) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline != std::chrono::steady_clock::time_point::max()) {
      auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30));
    }
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) {
      revents = p.revents;
      return true;
    }
    if (n == 0 && timeout_ms >= 0 && std::chrono::steady_clock::now() >= deadline) return false;
    if (n < 0 && errno != EINTR && errno != EAGAIN) {
      revents = POLLNVAL;  // the channel cannot be waited on: it is unusable
      return true;
    }
  }
}

Status checkHeader(const FrameHeader& h) {
  if (!knownType(h.type)) return Status::invalid("frame of unknown type " + std::to_string(h.type));
  if (h.length > kMaxFramePayload) {
    return Status::invalid("frame of " + std::to_string(h.length) +
                           " bytes exceeds the worker protocol's limit");
  }
  return Status::ok();
}

// A receive buffer grows to hold the frame being read; one that grew past this for a large
// frame is given back once it is empty.
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kKeptBuffer = 1024 * 1024;

}  // namespace

Status writeFrame(int fd, FrameType type, uint16_t op, uint64_t id, std::string_view payload) {
  if (payload.size() > kMaxFramePayload) {
    return Status::invalid("frame of " + std::to_string(payload.size()) +
                           " bytes exceeds the worker protocol's limit");
  }
  // Blocking, and reading nothing: bytes read here would be lost with no channel to hold
  // them. A first frame is small and its peer reads it before it sends anything.
  FrameHeader h{static_cast<uint32_t>(payload.size()), static_cast<uint16_t>(type), op, id};
  std::string bytes(reinterpret_cast<const char*>(&h), sizeof h);
  bytes.append(payload);
  for (std::string_view rest = bytes; !rest.empty();) {
    ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::unavailable("the worker channel is closed");
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return Status::ok();
}

bool FrameChannel::frameBuffered() const {
  const size_t have = in_end_ - in_pos_;
  if (have < sizeof(FrameHeader)) return false;
  FrameHeader h;
  std::memcpy(&h, in_.data() + in_pos_, sizeof h);
  return have - sizeof h >= h.length;
}

Result<bool> FrameChannel::takeBuffered(Frame& out, size_t& need) {
  need = sizeof(FrameHeader);
  if (in_end_ - in_pos_ < sizeof(FrameHeader)) return false;
  FrameHeader h;
  std::memcpy(&h, in_.data() + in_pos_, sizeof h);
  if (Status s = checkHeader(h); !s) return s;
  need += h.length;
  if (in_end_ - in_pos_ < need) return false;
  out.type = static_cast<FrameType>(h.type);
  out.op = h.op;
  out.id = h.id;
  out.payload.assign(in_.data() + in_pos_ + sizeof h, h.length);
  in_pos_ += need;
  if (in_pos_ == in_end_) {
    in_pos_ = in_end_ = 0;
    if (in_.size() > kKeptBuffer) std::string(kReadChunk, '\0').swap(in_);
  }
  return true;
}

void FrameChannel::makeRoom(size_t need) {
  if (in_pos_ > 0) {
    std::memmove(in_.data(), in_.data() + in_pos_, in_end_ - in_pos_);
    in_end_ -= in_pos_;
    in_pos_ = 0;
  }
  if (in_.size() < std::max(need, kReadChunk)) in_.resize(std::max(need, kReadChunk));
}

Status FrameChannel::read(Frame& out, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    size_t need = 0;
    auto got_frame = takeBuffered(out, need);
    if (!got_frame) return got_frame.status();
    if (*got_frame) return Status::ok();
    // More bytes are needed: make room for the whole frame, then take what has arrived.
    if (in_.empty()) {
      // Nothing is allocated before the first bytes arrive: a worker's idle channel threads
      // would otherwise each take a malloc arena, counted against its RLIMIT_AS.
      if (Status s = awaitBytes(deadline); !s) return s;
    }
    makeRoom(need);
    auto got = receive();
    if (!got) return got.status();
    if (!*got) {
      if (Status s = awaitBytes(deadline); !s) return s;
    }
  }
}

Result<bool> FrameChannel::tryRead(Frame& out) {
  for (;;) {
    size_t need = 0;
    auto got_frame = takeBuffered(out, need);
    if (!got_frame || *got_frame) return got_frame;
    makeRoom(need);
    auto got = receive();
    if (!got || !*got) return got;
  }
}

Result<bool> FrameChannel::receive(size_t max) {
  const size_t room = std::min(in_.size() - in_end_, max);
  for (;;) {
    ssize_t got = ::recv(fd_, in_.data() + in_end_, room, MSG_DONTWAIT);
    if (got > 0) {
      in_end_ += static_cast<size_t>(got);
      return true;
    }
    if (got == 0) return Status::unavailable("the worker closed its channel");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    return Status::unavailable("reading the worker channel failed");
  }
}

Status FrameChannel::awaitBytes(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    if (Status s = sendQueued(); !s) return s;
    const short events = out_.empty() ? POLLIN : POLLIN | POLLOUT;
    short revents = 0;
    if (!waitFor(fd_, events, deadline, revents)) {
      return Status::timeout(out_.empty() ? "the worker did not answer in time"
                                          : "the worker did not read its channel in time");
    }
    if (revents & POLLNVAL) return Status::unavailable("poll on the worker channel failed");
    // Readable, closed or failed: the recv that follows tells which. Else writable.
    if (revents & ~POLLOUT) return Status::ok();
  }
}

Status FrameChannel::send(FrameType type, uint16_t op, uint64_t id, std::string_view payload) {
  if (payload.size() > kMaxFramePayload) {
    return Status::invalid("frame of " + std::to_string(payload.size()) +
                           " bytes exceeds the worker protocol's limit");
  }
  if (out_.empty()) queued_since_ = std::chrono::steady_clock::now();
  FrameHeader h{static_cast<uint32_t>(payload.size()), static_cast<uint16_t>(type), op, id};
  out_.append(reinterpret_cast<const char*>(&h), sizeof h).append(payload);
  return Status::ok();
}

Status FrameChannel::flush(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    if (Status s = sendQueued(); !s || out_.empty()) return s;
    // The peer's socket is full. It may itself be blocked writing to this end, reading
    // nothing until its write is done: take what it sends meanwhile (up to kMaxReadAhead
    // unparsed bytes; a peer past that, or gone, is only waited for).
    const bool take = !peer_closed_ && in_end_ - in_pos_ < kMaxReadAhead;
    short revents = 0;
    if (std::chrono::steady_clock::now() >= deadline ||
        !waitFor(fd_, take ? POLLIN | POLLOUT : POLLOUT, deadline, revents)) {
      return Status::timeout("the worker did not read its channel in time");
    }
    if (revents & POLLNVAL) return Status::unavailable("poll on the worker channel failed");
    if (take && (revents & (POLLIN | POLLHUP | POLLERR)) && !takeArrived()) peer_closed_ = true;
  }
}

Status FrameChannel::sendQueued() {
  while (out_pos_ < out_.size()) {
    ssize_t n =
        ::send(fd_, out_.data() + out_pos_, out_.size() - out_pos_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      out_pos_ += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::ok();
    out_pos_ = out_.size();  // nothing more reaches this peer
    dropSent();
    return Status::unavailable("the worker channel is closed");
  }
  dropSent();
  return Status::ok();
}

void FrameChannel::dropSent() {
  if (out_pos_ < out_.size()) return;
  out_.clear();
  out_pos_ = 0;
  if (out_.capacity() > kKeptBuffer) out_.shrink_to_fit();
  queued_since_ = std::chrono::steady_clock::time_point::max();
}

bool FrameChannel::takeArrived() {
  if (in_pos_ == in_end_) in_pos_ = in_end_ = 0;
  if (in_.size() - in_end_ < kReadChunk) {
    if (in_pos_ > 0) {
      std::memmove(in_.data(), in_.data() + in_pos_, in_end_ - in_pos_);
      in_end_ -= in_pos_;
      in_pos_ = 0;
    }
    if (in_.size() - in_end_ < kReadChunk) in_.resize(in_end_ + kReadChunk);
  }
  return receive(kMaxReadAhead - (in_end_ - in_pos_)).isOk();  // fails only at EOF or error
}

}  // namespace trellis::kernel::worker
