// A durable log of numbered segment files: each append is one record, made durable with
// one pwrite and one fdatasync before it returns; old segments are dropped whole (an
// unlink). Under the KV redo log (kv_redo_log.h) and the usage journal
// (services/usage/usage_journal.h), which give the payloads their meaning.
//
// Files, for a log named by `prefix`:
//   <prefix>.<n>     segments, n = 1, 2, …; appends go to the newest only
//   <prefix>.lock    flock()ed while a process has the log open: one writer only
//
// A record: the log's magic (4 bytes), payload length, sequence number (+1 per record,
// across segments), CRC-32C of those and the payload, then the payload. Integers are
// little-endian. A segment can grow by zero-filled 1 MiB chunks written ahead of its
// records (Format::write_ahead): an fdatasync of bytes over written blocks leaves the
// file's size alone, so it flushes data only, where one that grows the file writes the
// inode too, a second I/O round trip (ext4 on the development VM: 80 against 120 us).
// Zeros after the last record are a clean end. Reading stops at the first record that is torn,
// damaged, out of sequence or refused by the owner's check: at the end of the newest segment that
// is a record never acknowledged, cut off at open; anywhere else the log was damaged, and the open
// fails naming the file.
//
//   auto opened = SegmentLog::open(dir / "usage.db-log", {kMagic, kMaxPayload, "usage log"},
//                                  [&](const SegmentLog::Location& at, uint64_t seq,
//                                      std::string_view payload) { ...; return ""; });
//   auto where = opened->log->append(payload);   // durable when OK
//   opened->log->dropThrough(opened->log->rotate().value());
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::kernel::storage::internal {

uint32_t crc32c(uint32_t crc, std::string_view bytes);

// One whole record: header and payload.
std::string encodeFrame(uint32_t magic, uint64_t seq, std::string_view payload);
void appendFrame(std::string& out, uint32_t magic, uint64_t seq, std::string_view payload);

struct Frame {
  uint64_t seq = 0;
  size_t offset = 0;         // of the record's header in the segment
  std::string_view payload;  // into the parsed bytes
};
// "" to accept a frame whose checksum holds, else why it still cannot be one of the log's.
using FrameCheck = std::function<std::string(const Frame&)>;

// The records of one segment's bytes, in order, up to the first that is torn, damaged,
// refused by `check`, or not numbered `next_seq` (then +1 each; 0: the first may have any
// number, a log whose older segments are gone).
struct ParsedFrames {
  std::vector<Frame> frames;
  size_t valid_bytes = 0;  // where the valid records end
  size_t zero_bytes = 0;   // zeros after them: space written ahead
  uint64_t next_seq = 0;   // the number the record after the last valid one must have
  std::string stopped_by;  // empty when only zeros, or nothing, follow; else why it stopped
};
ParsedFrames parseFrames(std::string_view bytes, uint32_t magic, uint64_t max_payload_bytes,
                         uint64_t next_seq, const FrameCheck& check = {});

class SegmentLog {
 public:
  struct Format {
    uint32_t magic = 0;
    uint64_t max_payload_bytes = 0;
    std::string what;  // names the log in messages: "redo log"
    // Zero-filled chunks ahead of the records: for logs whose appends wait on fdatasync
    // (it then flushes data only), at the cost of writing each byte twice.
    bool write_ahead = true;
  };
  // Where a record's payload is.
  struct Location {
    uint64_t segment = 0;
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };
  // Each valid record as open reads it, in order: "" to accept it, else why it is damaged.
  using Visitor = std::function<std::string(const Location&, uint64_t seq, std::string_view)>;
  struct Opened {
    std::unique_ptr<SegmentLog> log;
    uint64_t last_replayed_segment = 0;  // the newest segment that existed; 0 if none
  };

  // Opens the log, visits every record, and starts a new segment for the appends to come.
  // UNAVAILABLE if another process has it open, if a segment other than the newest is
  // damaged, or on an I/O error; the message names the file.
  static Result<Opened> open(std::filesystem::path prefix, Format format, const Visitor& visit);
  // The logs in `dir` with a non-empty segment (a clean close leaves none): their prefixes.
  static Result<std::set<std::filesystem::path>> prefixesWithRecords(
      const std::filesystem::path& dir);
  // Deletes every segment and the lock file.
  static Status removeAll(const std::filesystem::path& prefix);

  ~SegmentLog();
  SegmentLog(const SegmentLog&) = delete;
  SegmentLog& operator=(const SegmentLog&) = delete;

  // Appends one record and makes it durable. On failure nothing of it will be read back:
  // the segment is cut back to its last record; if even that fails, every later append is
  // refused (UNAVAILABLE) until the log is opened again. Not thread-safe: one writer.
  Result<Location> append(std::string_view payload);
  // Appends the records in order with one write and one fdatasync: all of them or none.
  Result<std::vector<Location>> appendAll(std::span<const std::string_view> payloads);
  // Closes the current segment and starts the next; returns the closed one's number.
  // Everything appended so far is in segments <= that number. Not concurrent with append.
  Result<uint64_t> rotate();
  // Deletes segments up to and including `segment`, never the current one. A failure is
  // left for the next open to find.
  void dropThrough(uint64_t segment);
  // The payload at `at` (one append returned it, or open visited it). Safe beside append.
  Result<std::string> read(const Location& at) const;

  uint64_t currentSegment() const { return segment_; }
  uint64_t bytesInSegment() const { return end_; }

 private:
  SegmentLog(std::filesystem::path prefix, Format format, int lock_fd);
  Status startSegment(uint64_t number);
  std::string segmentPath(uint64_t n) const;

  const std::filesystem::path prefix_;
  const Format format_;
  int lock_fd_ = -1;
  int fd_ = -1;             // the current segment
  uint64_t segment_ = 0;    // its number
  uint64_t end_ = 0;        // where the next record goes
  uint64_t allocated_ = 0;  // bytes of it written: zeros after end_
  uint64_t next_seq_ = 1;   // the next record's number
  std::string broken_;      // why appends are refused, once a failure could not be undone
};

}  // namespace trellis::kernel::storage::internal
