#include "worker/protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>

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

Status readExact(int fd, char* dst, size_t n, std::chrono::steady_clock::time_point deadline) {
  while (n > 0) {
    ssize_t got = ::recv(fd, dst, n, MSG_DONTWAIT);
    if (got > 0) {
      dst += got;
      n -= static_cast<size_t>(got);
      continue;
    }
    if (got == 0) return Status::unavailable("the worker closed its channel");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Status::unavailable("reading the worker channel failed");
    }
    if (Status s = waitReadable(fd, deadline); !s) return s;
  }
  return Status::ok();
}

}  // namespace

Status writeFrame(int fd, FrameType type, uint16_t op, uint64_t id, std::string_view payload) {
  if (payload.size() > kMaxFramePayload) {
    return Status::invalid("frame of " + std::to_string(payload.size()) +
                           " bytes exceeds the worker protocol's limit");
  }
  FrameHeader h{static_cast<uint32_t>(payload.size()), static_cast<uint16_t>(type), op, id};
  iovec iov[2] = {{&h, sizeof h}, {const_cast<char*>(payload.data()), payload.size()}};
  size_t total = sizeof h + payload.size(), sent = 0;
  while (sent < total) {
    // Skip what was already sent of the two pieces.
    iovec parts[2];
    int count = 0;
    size_t skip = sent;
    for (auto& piece : iov) {
      if (skip >= piece.iov_len) {
        skip -= piece.iov_len;
        continue;
      }
      parts[count++] = {static_cast<char*>(piece.iov_base) + skip, piece.iov_len - skip};
      skip = 0;
    }
    msghdr msg{};
    msg.msg_iov = parts;
    msg.msg_iovlen = static_cast<size_t>(count);
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::unavailable("the worker channel is closed");
    }
    sent += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status readFrame(int fd, Frame& out, std::chrono::steady_clock::time_point deadline) {
  FrameHeader h{};
  if (Status s = readExact(fd, reinterpret_cast<char*>(&h), sizeof h, deadline); !s) return s;
  if (!knownType(h.type)) {
    return Status::invalid("frame of unknown type " + std::to_string(h.type));
  }
  if (h.length > kMaxFramePayload) {
    return Status::invalid("frame of " + std::to_string(h.length) +
                           " bytes exceeds the worker protocol's limit");
  }
  out.type = static_cast<FrameType>(h.type);
  out.op = h.op;
  out.id = h.id;
  out.payload.resize(h.length);
  return readExact(fd, out.payload.data(), h.length, deadline);
}

}  // namespace trellis::kernel::worker
