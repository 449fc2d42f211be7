// The durable usage journal: usage records in one SQLite file (<data_dir>/usage.db), each
// with a sequence number, plus every subscriber's acknowledged position. Records are stored
// as segments: one row holds a run of consecutive records as JSON lines, so an append costs
// one row per writer batch, not one per request, and a delivery is a slice of a row.
// Writes go through SqliteDatabase (WAL, synchronous=FULL, group commit): an append returns
// once it is on disk. One writer (the usage stream's writer thread) appends and prunes;
// subscribers read concurrently on reader connections. Pruning drops whole segments.
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
#include <string>
#include <string_view>
#include <vector>

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
  // cursors (kept in the file, so cursors survive restarts but not a new journal). A
  // journal of the one-row-per-record format is converted in the same transaction.
  static Result<std::unique_ptr<UsageJournal>> open(const std::filesystem::path& file);

  // Appends the segments in order, and moves the subscribers' cursors in `acks` forward
  // (never back), in one transaction; returns the last sequence number.
  Result<uint64_t> append(const std::vector<Segment>& segments, const Cursors& acks = {});
  // Up to `limit` records with seq > `after`, in order.
  Result<Lines> read(uint64_t after, size_t limit) const;

  // The acknowledged position of each subscriber that ever acknowledged or subscribed.
  Result<Cursors> cursors() const;
  Status setAcked(const std::string& subscriber, uint64_t seq);
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
  // What the writer knows of a stored segment without reading its records.
  struct SegmentInfo {
    uint64_t first = 0, last = 0;  // sequence numbers
    int64_t first_ms = 0, last_ms = 0;
    uint64_t bytes = 0;
  };
  explicit UsageJournal(std::unique_ptr<storage::SqliteDatabase> db) : db_(std::move(db)) {}

  std::unique_ptr<storage::SqliteDatabase> db_;
  // The writer thread's alone after open (append, backlog and the drops run on it).
  uint64_t head_ = 0;
  uint64_t bytes_ = 0;
  std::deque<SegmentInfo> segments_;  // in order; contiguous, since only prefixes are dropped
  std::string secret_;
  std::string id_;
};

}  // namespace trellis::kernel::services::usage
