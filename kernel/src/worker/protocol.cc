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

// Waits until `fd` is readable or the deadline passes.
Status waitReadable(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline != std::chrono::steady_clock::time_point::max()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return Status::timeout("the worker did not answer in time");
      timeout_ms = static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
    }
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return Status::ok();
    if (n < 0 && errno != EINTR) return Status::unavailable("poll on the worker channel failed");
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
  FrameChannel chan(fd);
  if (Status s = chan.send(type, op, id, payload); !s) return s;
  return chan.flush();
}

bool FrameChannel::frameBuffered() const {
  const size_t have = in_end_ - in_pos_;
  if (have < sizeof(FrameHeader)) return false;
  FrameHeader h;
  std::memcpy(&h, in_.data() + in_pos_, sizeof h);
  return have - sizeof h >= h.length;
}

Status FrameChannel::read(Frame& out, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    size_t need = sizeof(FrameHeader);
    if (in_end_ - in_pos_ >= sizeof(FrameHeader)) {
      FrameHeader h;
      std::memcpy(&h, in_.data() + in_pos_, sizeof h);
      if (Status s = checkHeader(h); !s) return s;
      need += h.length;
      if (in_end_ - in_pos_ >= need) {
        out.type = static_cast<FrameType>(h.type);
        out.op = h.op;
        out.id = h.id;
        out.payload.assign(in_.data() + in_pos_ + sizeof h, h.length);
        in_pos_ += need;
        if (in_pos_ == in_end_) {
          in_pos_ = in_end_ = 0;
          if (in_.size() > kKeptBuffer) std::string(kReadChunk, '\0').swap(in_);
        }
        return Status::ok();
      }
    }
    // More bytes are needed: make room for the whole frame, then take what has arrived.
    if (in_pos_ > 0) {
      std::memmove(in_.data(), in_.data() + in_pos_, in_end_ - in_pos_);
      in_end_ -= in_pos_;
      in_pos_ = 0;
    }
    if (in_.empty()) {
      // Nothing is allocated before the first bytes arrive: a worker's idle channel threads
      // would otherwise each take a malloc arena, counted against its RLIMIT_AS.
      if (Status s = awaitBytes(deadline); !s) return s;
    }
    if (in_.size() < std::max(need, kReadChunk)) in_.resize(std::max(need, kReadChunk));
    ssize_t got = ::recv(fd_, in_.data() + in_end_, in_.size() - in_end_, MSG_DONTWAIT);
    if (got > 0) {
      in_end_ += static_cast<size_t>(got);
      continue;
    }
    if (got == 0) return Status::unavailable("the worker closed its channel");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Status::unavailable("reading the worker channel failed");
    }
    if (Status s = awaitBytes(deadline); !s) return s;
  }
}

Status FrameChannel::awaitBytes(std::chrono::steady_clock::time_point deadline) {
  if (Status s = flush(); !s) return s;
  return waitReadable(fd_, deadline);
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

Status FrameChannel::flush() {
  Status s = Status::ok();
  for (std::string_view rest = out_; !rest.empty();) {
    ssize_t n = ::send(fd_, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s = Status::unavailable("the worker channel is closed");
      break;
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  out_.clear();
  if (out_.capacity() > kKeptBuffer) out_.shrink_to_fit();
  queued_since_ = std::chrono::steady_clock::time_point::max();
  return s;
}

}  // namespace trellis::kernel::worker
