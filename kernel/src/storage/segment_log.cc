#include "storage/internal/segment_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <system_error>
#include <utility>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "storage/internal/byte_codec.h"

namespace trellis::kernel::storage::internal {
namespace {

constexpr size_t kHeaderBytes = 20;  // magic, length, sequence, CRC
constexpr uint64_t kChunkBytes = 1 << 20;

// CRC-32C (Castagnoli): the log needs to tell a torn or stale record from a whole one,
// not to resist an attacker (who could rewrite the files anyway). The table is the
// fallback; x86-64 computes it with SSE 4.2's crc32 instruction, 8 bytes at a time (the
// table took 7% of trellisd's CPU when usage records streamed at 30 MB/s).
const std::array<uint32_t, 256>& crcTable() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82f63b78u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

bool allZero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

// A segment's file name, "<prefix name>.N": the prefix's name and N.
std::optional<std::pair<std::string, uint64_t>> parseSegmentName(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0) return std::nullopt;
  const std::string digits = name.substr(dot + 1);
  if (digits.empty() || digits.size() > 19 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;  // the lock file, or not a segment
  }
  return std::pair{name.substr(0, dot), std::stoull(digits)};
}

// The numbers of the segments of `prefix`, ascending.
Result<std::vector<uint64_t>> listSegments(const std::filesystem::path& prefix) {
  const std::string name = prefix.filename().string();
  std::vector<uint64_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(prefix.parent_path(), ec)) {
    auto segment = parseSegmentName(entry.path().filename().string());
    if (segment && segment->first == name) out.push_back(segment->second);
  }
  if (ec) {
    return Status::unavailable("cannot list " + prefix.parent_path().string() + ": " +
                               ec.message());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status errnoStatus(const std::string& what, int err) {
  return Status::unavailable(what + ": " + std::strerror(err));
}

Result<std::string> readWhole(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errnoStatus("cannot open " + path, errno);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return errnoStatus("cannot read " + path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Writes all of `bytes` at `offset`; 0 or the errno.
int writeAt(int fd, std::string_view bytes, uint64_t offset) {
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::pwrite(fd, bytes.data() + written, bytes.size() - written,
                               static_cast<off_t>(offset + written));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    written += static_cast<size_t>(n);
  }
  return 0;
}

Status syncDirectory(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errnoStatus("cannot open " + dir.string(), errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return errnoStatus("cannot sync " + dir.string(), err);
  return Status::ok();
}

Status truncateTo(const std::string& path, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errnoStatus("cannot open " + path, errno);
  const bool ok = ::ftruncate(fd, static_cast<off_t>(size)) == 0 && ::fdatasync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return errnoStatus("cannot cut the torn end off " + path, err);
  return Status::ok();
}

}  // namespace

#if defined(__x86_64__)
namespace {
__attribute__((target("sse4.2"))) uint32_t crc32cSse42(uint32_t crc, std::string_view bytes) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  uint64_t c = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word = 0;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  auto c32 = static_cast<uint32_t>(c);
  for (; n > 0; ++p, --n) c32 = _mm_crc32_u8(c32, static_cast<unsigned char>(*p));
  return ~c32;
}
}  // namespace
#endif

uint32_t crc32c(uint32_t crc, std::string_view bytes) {
#if defined(__x86_64__)
  static const bool sse42 = __builtin_cpu_supports("sse4.2");
  if (sse42) return crc32cSse42(crc, bytes);
#endif
  const auto& t = crcTable();
  crc = ~crc;
  for (unsigned char b : bytes) crc = t[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void appendFrame(std::string& out, uint32_t magic, uint64_t seq, std::string_view payload) {
  const size_t start = out.size();
  putU32(out, magic);
  putU32(out, static_cast<uint32_t>(payload.size()));
  putU64(out, seq);
  // The CRC covers the length and the number, so a stale record cannot pass as the next.
  putU32(out, crc32c(crc32c(0, std::string_view(out).substr(start + 4, 12)), payload));
  out += payload;
}

std::string encodeFrame(uint32_t magic, uint64_t seq, std::string_view payload) {
  std::string out;
  out.reserve(kHeaderBytes + payload.size());
  appendFrame(out, magic, seq, payload);
  return out;
}

ParsedFrames parseFrames(std::string_view bytes, uint32_t magic, uint64_t max_payload_bytes,
                         uint64_t next_seq, const FrameCheck& check) {
  ParsedFrames p;
  p.next_seq = next_seq;
  size_t at = 0;
  while (at < bytes.size()) {
    const std::string_view rest = bytes.substr(at);
    if (allZero(rest)) {
      p.zero_bytes = rest.size();
      break;
    }
    ByteReader header(rest);
    uint32_t found = 0, length = 0, crc = 0;
    uint64_t seq = 0;
    if (!header.u32(found) || !header.u32(length) || !header.u64(seq) || !header.u32(crc)) {
      p.stopped_by = "a torn record header at byte " + std::to_string(at);
      break;
    }
    if (found != magic) {
      p.stopped_by = "no record at byte " + std::to_string(at);
      break;
    }
    if (length > max_payload_bytes || length > rest.size() - kHeaderBytes) {
      p.stopped_by = "a torn record at byte " + std::to_string(at);
      break;
    }
    const Frame frame{seq, at, rest.substr(kHeaderBytes, length)};
    if (crc32c(crc32c(0, rest.substr(4, 12)), frame.payload) != crc) {
      p.stopped_by = "a damaged record at byte " + std::to_string(at);
      break;
    }
    if (p.next_seq != 0 && seq != p.next_seq) {
      p.stopped_by = "record " + std::to_string(seq) + " where " + std::to_string(p.next_seq) +
                     " was due, at byte " + std::to_string(at);
      break;
    }
    if (check) {
      if (std::string why = check(frame); !why.empty()) {
        p.stopped_by = why + " at byte " + std::to_string(at);
        break;
      }
    }
    p.frames.push_back(frame);
    p.next_seq = seq + 1;
    at += kHeaderBytes + length;
  }
  p.valid_bytes = at;
  return p;
}

SegmentLog::SegmentLog(std::filesystem::path prefix, Format format, int lock_fd)
    : prefix_(std::move(prefix)), format_(std::move(format)), lock_fd_(lock_fd) {}

SegmentLog::~SegmentLog() {
  if (fd_ >= 0) {
    // The zeros written ahead are not needed any more (nor harmful if a crash keeps them).
    (void)::ftruncate(fd_, static_cast<off_t>(end_));
    ::close(fd_);
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::string SegmentLog::segmentPath(uint64_t n) const {
  return prefix_.string() + "." + std::to_string(n);
}

Result<SegmentLog::Opened> SegmentLog::open(std::filesystem::path prefix, Format format,
                                            const Visitor& visit) {
  const std::string lock_file = prefix.string() + ".lock";
  int lock_fd = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) return errnoStatus("cannot open " + lock_file, errno);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd);
    if (err == EWOULDBLOCK) {
      return Status::unavailable(format.what + " " + prefix.string() +
                                 " is in use by another process (its lock file is held)");
    }
    return errnoStatus("cannot lock " + lock_file, err);
  }
  Opened opened;
  opened.log.reset(new SegmentLog(std::move(prefix), std::move(format), lock_fd));
  SegmentLog& log = *opened.log;
  auto segments = listSegments(log.prefix_);
  if (!segments) return segments.status();
  uint64_t next_seq = 0;
  for (size_t i = 0; i < segments->size(); ++i) {
    const uint64_t number = (*segments)[i];
    const std::string path = log.segmentPath(number);
    auto bytes = readWhole(path);
    if (!bytes) return bytes.status();
    FrameCheck check;
    if (visit) {
      check = [&](const Frame& f) {
        return visit(Location{number, f.offset + kHeaderBytes, f.payload.size()}, f.seq, f.payload);
      };
    }
    ParsedFrames p =
        parseFrames(*bytes, log.format_.magic, log.format_.max_payload_bytes, next_seq, check);
    const bool newest = i + 1 == segments->size();
    if (!p.stopped_by.empty() && !newest) {
      return Status::unavailable(log.format_.what + " " + path + " is damaged: " + p.stopped_by);
    }
    // A torn tail (a record never acknowledged) is cut off, so this segment reads clean
    // once a newer one follows it.
    if (!p.stopped_by.empty()) {
      if (Status s = truncateTo(path, p.valid_bytes); !s) return s;
    }
    next_seq = p.next_seq;
    opened.last_replayed_segment = number;
  }
  if (Status s = log.startSegment(segments->empty() ? 1 : segments->back() + 1); !s) return s;
  log.next_seq_ = next_seq == 0 ? 1 : next_seq;
  return opened;
}

Result<std::set<std::filesystem::path>> SegmentLog::prefixesWithRecords(
    const std::filesystem::path& dir) {
  std::set<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    auto segment = parseSegmentName(entry.path().filename().string());
    std::error_code size_ec;
    if (segment && entry.file_size(size_ec) > 0 && !size_ec) out.insert(dir / segment->first);
  }
  if (ec) return Status::unavailable("cannot list " + dir.string() + ": " + ec.message());
  return out;
}

Status SegmentLog::removeAll(const std::filesystem::path& prefix) {
  auto segments = listSegments(prefix);
  if (!segments) return segments.status();
  std::vector<std::string> paths;
  for (uint64_t n : *segments) paths.push_back(prefix.string() + "." + std::to_string(n));
  paths.push_back(prefix.string() + ".lock");
  for (const auto& p : paths) {
    std::error_code ec;
    std::filesystem::remove(p, ec);
    if (ec) return Status::unavailable("cannot delete " + p + ": " + ec.message());
  }
  return Status::ok();
}

Status SegmentLog::startSegment(uint64_t number) {
  const std::string path = segmentPath(number);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errnoStatus("cannot create " + path, errno);
  // The new name must be durable before a record in it is acknowledged.
  if (Status s = syncDirectory(prefix_.parent_path()); !s) {
    ::close(fd);
    ::unlink(path.c_str());
    return s;
  }
  if (fd_ >= 0) {
    (void)::ftruncate(fd_, static_cast<off_t>(end_));  // the zeros written ahead
    ::close(fd_);
  }
  fd_ = fd;
  segment_ = number;
  end_ = 0;
  allocated_ = 0;
  return Status::ok();
}

Result<SegmentLog::Location> SegmentLog::append(std::string_view payload) {
  auto at = appendAll({&payload, 1});
  if (!at) return at.status();
  return at->front();
}

Result<std::vector<SegmentLog::Location>> SegmentLog::appendAll(
    std::span<const std::string_view> payloads) {
  if (!broken_.empty()) return Status::unavailable(broken_);
  std::string records;
  size_t total = 0;
  for (std::string_view payload : payloads) total += kHeaderBytes + payload.size();
  records.reserve(total);
  std::vector<Location> where;
  uint64_t seq = next_seq_;
  for (std::string_view payload : payloads) {
    where.push_back({segment_, end_ + records.size() + kHeaderBytes, payload.size()});
    appendFrame(records, format_.magic, seq++, payload);
  }
  const uint64_t end = end_ + records.size();
  int err = 0;
  if (format_.write_ahead && end > allocated_) {
    // Zeros first, then the records over them: the one fdatasync below covers both.
    static const std::string zeros(kChunkBytes, '\0');
    const uint64_t target = (end + kChunkBytes - 1) / kChunkBytes * kChunkBytes;
    for (uint64_t at = allocated_; err == 0 && at < target; at += kChunkBytes) {
      err = writeAt(fd_, zeros, at);
    }
    if (err == 0) allocated_ = target;
  }
  if (err == 0) err = writeAt(fd_, records, end_);
  if (err == 0 && ::fdatasync(fd_) != 0) err = errno;
  if (err == 0) {
    end_ = end;
    next_seq_ = seq;
    return where;
  }
  // Cut the segment back, so no reader finds these records: their callers hear it failed.
  const Status failed = errnoStatus("cannot append to " + segmentPath(segment_), err);
  allocated_ = end_;
  if (::ftruncate(fd_, static_cast<off_t>(end_)) != 0 || ::fdatasync(fd_) != 0) {
    broken_ = failed.message() + ", and cannot cut it back (" + std::strerror(errno) +
              "); writes are refused until trellisd opens it again";
  }
  return failed;
}

Result<uint64_t> SegmentLog::rotate() {
  const uint64_t closed = segment_;
  if (Status s = startSegment(closed + 1); !s) return s;
  return closed;
}

void SegmentLog::dropThrough(uint64_t segment) {
  auto segments = listSegments(prefix_);
  if (!segments) return;
  for (uint64_t n : *segments) {
    if (n > segment || n == segment_) break;
    ::unlink(segmentPath(n).c_str());
  }
}

Result<std::string> SegmentLog::read(const Location& at) const {
  const std::string path = segmentPath(at.segment);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errnoStatus("cannot open " + path, errno);
  std::string out(at.bytes, '\0');
  size_t done = 0;
  int err = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(at.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  if (err != 0) return errnoStatus("cannot read " + path, err);
  return out;
}

}  // namespace trellis::kernel::storage::internal
