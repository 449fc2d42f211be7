// The durable usage journal: usage records, each with a sequence number, in a segment log
// beside <data_dir>/usage.db (storage/internal/segment_log.h: files usage.db-log.<n>), and
// in usage.db (SQLite) every subscriber's acknowledged position, the secret that signs
// cursors and how far records were pruned. One log record holds a *segment*: a run of
// consecutive usage records as JSON lines (one writer batch, up to about kSegmentBytes),
// so an append is one pwrite and one fdatasync per writer batch, and a delivery is a slice
// of a segment. One writer (the usage stream's writer thread) appends and prunes;
// subscribers read concurrently. Pruning drops whole segments: the pruned position is
// saved, and a log file goes once every segment in it is pruned (an unlink, where rows
// deleted from SQLite were read and written again).
//
//   auto j = UsageJournal::open(data_dir / "usage.db");
//   auto head = (*j)->append({segment});              // seq of the last record
//   auto batch = (*j)->read(/*after=*/acked, /*limit=*/500);
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "storage/internal/segment_log.h"
#include "trellis/kernel/storage/sqlite_database.h"
#include "trellis/status.hpp"

namespace trellis::kernel::services::usage {

// A writer closes a segment once it holds this many bytes.
inline constexpr size_t kSegmentBytes = 1 << 20;

// Consecutive records as JSON lines, each ending in '\n' (a line never holds a raw newline).
struct Segment {
  std::string text;
  uint32_t count = 0;
  int64_t first_ms = 0;  // Unix ms of the first and the last record
  int64_t last_ms = 0;
};

// What a reader gets: up to a limit of records as JSON lines, and the last one's seq.
struct Lines {
  std::string text;
  uint32_t count = 0;
  uint64_t last = 0;
};

// Appends lines [skip, skip + max) of `text` (JSON lines) to `out`; returns how many.
uint32_t appendLines(std::string& out, std::string_view text, uint64_t skip, uint64_t max);

// Subscribers' acknowledged positions, by subscriber.
using Cursors = std::map<std::string, uint64_t>;

class UsageJournal {
 public:
  struct Backlog {
    uint64_t records = 0;
    uint64_t bytes = 0;
    int64_t oldest_ms = 0;  // 0 when empty
  };

  // Creates the file (0600) and its tables if needed, and the host secret that signs
  // cursors (kept in the file, so cursors survive restarts but not a new journal), and
  // opens the log (UNAVAILABLE if another process has it, or if it is damaged; the message
  // names the file). Records that earlier versions kept in usage.db (one row per record,
  // then one row per segment) move to the log, with their sequence numbers.
  static Result<std::unique_ptr<UsageJournal>> open(const std::filesystem::path& file);

  // Appends the segments in order with one fdatasync; returns the last sequence number.
  Result<uint64_t> append(const std::vector<Segment>& segments);
  // Up to `limit` records with seq > `after`, in order.
  Result<Lines> read(uint64_t after, size_t limit) const;

  // The acknowledged position of each subscriber that ever acknowledged or subscribed.
  Result<Cursors> cursors() const;
  // Moves the subscribers' cursors forward (never back), in one transaction.
  Status setAcked(const Cursors& acks);
  // What is retained after `after` (from memory, and one row when `after` falls inside a
  // segment).
  Result<Backlog> backlog(uint64_t after) const;

  // Pruning, by whole segments; each returns how many records went. `upTo`: segments whose
  // records all have seq <= up_to.
  Result<uint64_t> dropUpTo(uint64_t up_to);
  // Segments whose records are all older than `at_ms`: a segment with a younger record
  // stays whole (it spans one writer batch, at most usage.flush_interval_ms and a stall).
  Result<uint64_t> dropOlderThan(int64_t at_ms);
  // The oldest segments, until at most `max_bytes` remain.
  Result<uint64_t> dropToSize(uint64_t max_bytes);

  uint64_t head() const { return head_; }                // last appended seq (0: none yet)
  uint64_t retainedBytes() const { return bytes_; }      // sum of retained record sizes
  const std::string& secret() const { return secret_; }  // 32 random bytes, as hex
  const std::string& journalId() const { return id_; }   // random; names this journal

 private:
  // What the journal knows of a stored segment without reading its records.
  struct SegmentInfo {
    uint64_t first = 0, last = 0;  // sequence numbers
    int64_t first_ms = 0, last_ms = 0;
    uint64_t bytes = 0;                          // record bytes (lines without newlines)
    storage::internal::SegmentLog::Location at;  // its log record
  };
  explicit UsageJournal(std::unique_ptr<storage::SqliteDatabase> db) : db_(std::move(db)) {}
  Status openLog(const std::filesystem::path& file);
  Status moveSegmentRows();
  Result<std::vector<SegmentInfo>> write(uint64_t first, const std::vector<Segment>& segments);
  Result<std::string> textOf(const SegmentInfo& g) const;

  std::unique_ptr<storage::SqliteDatabase> db_;
  std::unique_ptr<storage::internal::SegmentLog> log_;
  // The writer thread's alone after open (append, backlog and the drops run on it).
  uint64_t head_ = 0;
  uint64_t bytes_ = 0;
  uint64_t pruned_ = 0;    // every record up to this one is pruned
  uint64_t log_head_ = 0;  // the last record in the log (head_ also counts cursors)
  std::string secret_;
  std::string id_;
  // Readers look segments up while the writer appends and drops them.
  mutable std::shared_mutex segments_mu_;
  std::deque<SegmentInfo> segments_;  // in order; contiguous, since only prefixes are dropped
};

}  // namespace trellis::kernel::services::usage
