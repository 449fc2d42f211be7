// Keeps SQLite's WAL checkpoints off the commit path. By default the connection that
// commits also checkpoints once the WAL passes 1000 pages: it copies every page back into
// the database and fsyncs both files while the next batch of writers waits. Here the
// writer only reports its WAL size after each commit (sqlite3_wal_hook); a storage thread
// then runs a PASSIVE checkpoint on a connection of its own, beside the writer and the
// readers. Since writes go on meanwhile, the writer copies the few pages they added after
// its next commit; the checkpoint is then complete and the next batch starts the WAL over.
//
// Durability does not change: a checkpoint only copies what the WAL already holds, and
// with synchronous=FULL it fsyncs the WAL before and the database after.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>

struct sqlite3;

namespace trellis::kernel::storage::internal {

class WalCheckpointer : public std::enable_shared_from_this<WalCheckpointer> {
 public:
  // Checkpoints `file`, which `writer` (an open connection in WAL mode) writes: installs
  // the writer's WAL hook, which holds a pointer to this until close().
  static std::shared_ptr<WalCheckpointer> attach(sqlite3* writer, std::filesystem::path file);
  ~WalCheckpointer();

  // Waits for a checkpoint in progress, closes the checkpoint connection and removes the
  // hook; the writer must still be open. Later reports are ignored.
  void close();

  // WAL size, in pages, past which a checkpoint is queued; and past which the writer
  // checkpoints itself, if the storage thread cannot keep up (bounds the WAL file).
  static constexpr int kQueueAtPages = 1000;
  static constexpr int kInlineAtPages = 16000;
  static constexpr int kPasses = 4;  // of one background checkpoint, at most

 private:
  WalCheckpointer(sqlite3* writer, std::filesystem::path file);
  static int onCommit(void* self, sqlite3* db, const char* schema, int wal_pages);
  void checkpoint();

  sqlite3* const writer_;
  const std::filesystem::path file_;
  std::mutex run_mu_;        // held for a whole checkpoint, so close() waits for it
  sqlite3* conn_ = nullptr;  // the checkpoint connection, opened on first use; run_mu_
  std::mutex state_mu_;      // the flags: the writer's hook must not wait for a checkpoint
  bool queued_ = false;      // a checkpoint waits on a storage thread
  bool copied_ = false;      // one finished there: the writer copies what came after it
  bool closed_ = false;
};

}  // namespace trellis::kernel::storage::internal
