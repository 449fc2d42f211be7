// The durable usage journal: an append-only table of usage records in one SQLite file
// (<data_dir>/usage.db), each with a sequence number, plus every subscriber's acknowledged
// position. Writes go through SqliteDatabase (WAL, synchronous=FULL, group commit): an
// append returns once its batch is on disk. One writer (the usage stream's writer thread)
// appends and prunes; subscribers read concurrently on reader connections.
//
//   auto j = UsageJournal::open(data_dir / "usage.db");
//   auto last = (*j)->append({{now_ms, "acme", json}});          // seq of the last row
//   auto rows = (*j)->read(/*after=*/acked, /*limit=*/500);
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "trellis/kernel/storage/sqlite_database.h"
#include "trellis/status.hpp"

namespace trellis::kernel::services::usage {

class UsageJournal {
 public:
  struct Row {
    int64_t at_ms = 0;
    std::string tenant;
    std::string json;
  };
  struct Entry {
    uint64_t seq = 0;
    int64_t at_ms = 0;
    std::string json;
  };
  struct Backlog {
    uint64_t records = 0;
    uint64_t bytes = 0;
    int64_t oldest_ms = 0;  // 0 when empty
  };

  // Creates the file (0600) and its tables if needed, and the host secret that signs
  // cursors (kept in the file, so cursors survive restarts but not a new journal).
  static Result<std::unique_ptr<UsageJournal>> open(const std::filesystem::path& file);

  // Appends `rows` in order in one transaction; returns the last sequence number.
  Result<uint64_t> append(const std::vector<Row>& rows);
  // Up to `limit` entries with seq > `after`, in order.
  Result<std::vector<Entry>> read(uint64_t after, size_t limit) const;

  // The acknowledged position of each subscriber that ever acknowledged or subscribed.
  Result<std::map<std::string, uint64_t>> cursors() const;
  Status setAcked(const std::string& subscriber, uint64_t seq);
  // What is retained after `after`. `everything`: the caller knows nothing at or before
  // `after` is retained, so the totals come from memory without a scan.
  Result<Backlog> backlog(uint64_t after, bool everything = false) const;

  // Pruning; each returns how many rows went. `upTo`: rows with seq <= up_to.
  Result<uint64_t> dropUpTo(uint64_t up_to);
  // Rows older than `at_ms`, taken as the prefix of seq before the first younger row.
  Result<uint64_t> dropOlderThan(int64_t at_ms);
  // The oldest rows, until at most `max_bytes` remain.
  Result<uint64_t> dropToSize(uint64_t max_bytes);

  uint64_t head() const { return head_; }                // last appended seq (0: none yet)
  uint64_t retainedBytes() const { return bytes_; }      // sum of retained record sizes
  const std::string& secret() const { return secret_; }  // 32 random bytes, as hex
  const std::string& journalId() const { return id_; }   // random; names this journal

 private:
  explicit UsageJournal(std::unique_ptr<storage::SqliteDatabase> db) : db_(std::move(db)) {}

  std::unique_ptr<storage::SqliteDatabase> db_;
  uint64_t head_ = 0;   // writer thread only after open
  uint64_t bytes_ = 0;  // writer thread only after open
  std::string secret_;
  std::string id_;
};

}  // namespace trellis::kernel::services::usage
