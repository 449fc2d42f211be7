// One tenant's KV data on SQLite with a redo log in front (kv_redo_log.h): the write path
// of SqliteKvStore.
//
// Writes are group-committed as before, but a batch's leader no longer runs a SQLite
// transaction. It decides each write in order (compare-and-set against the batch so far,
// the overlay, then SQLite; the storage quota against the tenant's total kept in memory),
// appends the batch's changes to the redo log with one pwrite and one fdatasync, publishes
// them to the overlay (kv_overlay.h), and only then answers. Reads look in the overlay
// first, so they see every acknowledged write and nothing else.
//
// The applier brings SQLite up to date: when the overlay or the log segment grows past a
// threshold, or the tenant has been idle for a moment, it starts a new log segment, copies
// the overlay into SQLite in one transaction (synchronous=FULL: durable when it returns),
// forgets what it copied and deletes the older segments. Opening replays what the log
// still holds; closing applies everything, so a closed tenant's file is complete.
//
// Below the overlay, a read cache (kv_read_cache.h) keeps hot values SQLite already has,
// so reads and compare-and-set decisions on them skip SQLite.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "storage/internal/kv_overlay.h"
#include "storage/internal/kv_read_cache.h"
#include "storage/internal/kv_redo_log.h"
#include "trellis/kernel/storage/group_commit.h"
#include "trellis/kernel/storage/kv_store.h"
#include "trellis/kernel/storage/sqlite_database.h"

namespace trellis::kernel::storage::internal {

class LoggedKvTenant : public std::enable_shared_from_this<LoggedKvTenant> {
 public:
  // Opens (or with `create`, creates) the tenant's database and log and replays the log.
  // NOT_FOUND without `create` when there is no database; UNAVAILABLE names the file.
  // `before_append`, if set, runs on the leader before each append (SqliteKvOptions).
  static Result<std::shared_ptr<LoggedKvTenant>> open(const std::filesystem::path& db_file,
                                                      bool create,
                                                      const SqliteDatabase::Schema& schema,
                                                      std::function<void()> before_append = {});
  ~LoggedKvTenant();

  Result<KvEntry> get(const std::string& plugin, const std::string& key);
  Result<std::vector<KvEntry>> list(const std::string& plugin, std::string_view prefix,
                                    std::string_view start_after, uint32_t limit);
  Result<uint64_t> put(const Scope& scope, std::string key, std::string value,
                       uint64_t expected_version);
  void putAsync(const Scope& scope, std::string key, std::string value, uint64_t expected_version,
                KvStore::PutDone done);
  Status remove(const Scope& scope, std::string key, uint64_t expected_version);
  uint64_t storageBytes() const { return used_.load(); }
  static constexpr size_t kReadCacheBytes = 4 * 1024 * 1024;
  GroupCommit::Stats writeStats() const { return commit_.stats(); }

  // Copies the overlay into SQLite now (the applier's work). Thread-safe.
  Status apply();
  // Applies if the tenant has unapplied changes and wrote nothing for `idle`.
  void applyIfIdle(std::chrono::milliseconds idle);

 private:
  struct Write;
  explicit LoggedKvTenant(std::unique_ptr<SqliteDatabase> db);
  void runBatch(std::span<GroupCommit::Write* const> batch);
  Status decide(Write& w);
  // The version of (plugin, key) and the bytes it is charged for, as of the batch so far.
  std::pair<uint64_t, uint64_t> current(const std::string& plugin, const std::string& key);
  void maybeScheduleApply();

  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<KvRedoLog> log_;
  std::function<void()> before_append_;
  KvOverlay overlay_;
  KvReadCache cache_{kReadCacheBytes};
  GroupCommit commit_;
  std::atomic<uint64_t> used_{0};  // key + value bytes of the tenant, overlay included

  // The running batch (one leader at a time): its changes, and where each key last is.
  SqliteConnection* leader_conn_ = nullptr;
  std::vector<KvChange> pending_;
  std::map<std::pair<std::string, std::string>, size_t> pending_at_;
  long long pending_delta_ = 0;

  std::mutex log_mu_;    // append + publish against rotate: a batch is in the overlay
                         // before a rotation can close its segment
  std::mutex apply_mu_;  // one apply at a time
  std::atomic<bool> apply_scheduled_{false};
  std::atomic<int64_t> last_write_ms_{0};
  std::atomic<int64_t> last_apply_ms_{0};  // when the last apply started (steady clock)
};

}  // namespace trellis::kernel::storage::internal
