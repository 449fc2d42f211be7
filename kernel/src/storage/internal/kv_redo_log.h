// The redo log of one tenant's KV database: each group-commit batch of KV changes is
// appended as one record and made durable with one fdatasync, before any caller is
// answered. The B-tree in SQLite is brought up to date later, in large batches, from the
// changes kept in memory; on open, whatever the log still holds is replayed into it.
// One pwrite and one fdatasync per batch, where SQLite's own WAL costs two pwrites per
// page written plus the fdatasync (bench/README.md, "Durable writes").
//
// Files, beside the database `<tenant>.db`: a segment log (segment_log.h) named
// `<tenant>.db-redo`: segments `<tenant>.db-redo.<n>` and the lock `<tenant>.db-redo.lock`
// (the log decides compare-and-set for the tenant, so only one process may have it open).
// A record's payload is one batch (encodeBatch, magic "TKVR").
//
//   auto opened = KvRedoLog::open("/data/tenants/acme.db");
//   for (auto& batch : opened->unapplied) apply(batch);   // then SQLite is durable:
//   opened->log->dropThrough(opened->last_replayed_segment);
//   Status s = opened->log->append(changes);                // durable when OK
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/internal/segment_log.h"
#include "trellis/status.hpp"

namespace trellis::kernel::storage::internal {

struct KvChange {
  std::string plugin;
  std::string key;
  std::optional<std::string> value;  // nullopt: the key was removed
  uint64_t version = 0;              // the entry's version after the change; 0 if removed

  bool operator==(const KvChange&) const = default;
};

// One batch's payload. decodeBatch refuses anything encodeBatch cannot have written,
// naming what is wrong.
std::string encodeBatch(std::span<const KvChange> changes);
Result<std::vector<KvChange>> decodeBatch(std::string_view payload);

// One whole record (header and payload) for `changes` with sequence number `seq`.
std::string encodeRecord(uint64_t seq, std::span<const KvChange> changes);

// The batches of one segment's bytes (parseFrames, with each payload decoded), up to the
// first record that is torn, damaged, does not decode or is not numbered `next_seq`.
struct ParsedSegment {
  std::vector<std::vector<KvChange>> batches;
  size_t valid_bytes = 0;
  size_t zero_bytes = 0;   // zeros after the last valid record: space written ahead
  uint64_t next_seq = 0;   // the number the record after the last valid one must have
  std::string stopped_by;  // empty when only zeros, or nothing, follow; else why it stopped
};
// next_seq 0: the first record may have any number (a log whose older segments are gone).
ParsedSegment parseSegment(std::string_view bytes, uint64_t next_seq);

class KvRedoLog {
 public:
  struct Opened {
    std::unique_ptr<KvRedoLog> log;
    // Batches the segments held, oldest first: not known to be in the database yet.
    std::vector<std::vector<KvChange>> unapplied;
    uint64_t last_replayed_segment = 0;  // 0 when there were none
  };
  // Opens the log of `db_file`, replays nothing itself, and starts a new segment for the
  // appends to come. UNAVAILABLE if another process has it open, if a segment other than
  // the newest is damaged, or on an I/O error; the message names the file.
  static Result<Opened> open(const std::filesystem::path& db_file);
  // The database files in `dir` whose logs hold records (a clean close leaves one empty
  // segment): what a crash left to replay.
  static Result<std::set<std::filesystem::path>> databasesWithRecords(
      const std::filesystem::path& dir);
  // Deletes every segment and the lock file of `db_file` (the tenant is being removed).
  static Status removeAll(const std::filesystem::path& db_file);

  // Appends one batch and makes it durable. On failure nothing of it will be replayed:
  // the segment is cut back to its last record; if even that fails, every later append
  // is refused (UNAVAILABLE) until the log is opened again. Not thread-safe: one leader.
  Status append(std::span<const KvChange> batch);
  // Closes the current segment and starts the next; returns the closed one's number.
  // Everything appended so far is in segments <= that number. Not concurrent with append.
  Result<uint64_t> rotate() { return log_->rotate(); }
  // Deletes segments up to and including `segment` (their changes are durable in the
  // database). Never the current one. Failures are left for the next open to replay.
  void dropThrough(uint64_t segment) { log_->dropThrough(segment); }

  uint64_t currentSegment() const { return log_->currentSegment(); }
  uint64_t bytesInSegment() const { return log_->bytesInSegment(); }

 private:
  explicit KvRedoLog(std::unique_ptr<SegmentLog> log) : log_(std::move(log)) {}

  std::unique_ptr<SegmentLog> log_;
};

}  // namespace trellis::kernel::storage::internal
