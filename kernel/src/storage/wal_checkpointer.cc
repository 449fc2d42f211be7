#include "storage/internal/wal_checkpointer.h"

#include <sqlite3.h>

#include <utility>

#include "trellis/kernel/storage/group_commit.h"

namespace trellis::kernel::storage::internal {

WalCheckpointer::WalCheckpointer(sqlite3* writer, std::filesystem::path file)
    : writer_(writer), file_(std::move(file)) {}

WalCheckpointer::~WalCheckpointer() {
  close();
}

std::shared_ptr<WalCheckpointer> WalCheckpointer::attach(sqlite3* writer,
                                                         std::filesystem::path file) {
  std::shared_ptr<WalCheckpointer> c(new WalCheckpointer(writer, std::move(file)));
  // Replaces the automatic checkpoint of the writer (wal_autocheckpoint is this hook).
  sqlite3_wal_hook(writer, &WalCheckpointer::onCommit, c.get());
  return c;
}

void WalCheckpointer::close() {
  std::lock_guard run(run_mu_);  // waits for a checkpoint in progress
  {
    std::lock_guard lock(state_mu_);
    if (closed_) return;
    closed_ = true;
  }
  sqlite3_wal_hook(writer_, nullptr, nullptr);
  if (conn_) sqlite3_close_v2(conn_);
  conn_ = nullptr;
}

// Runs on the writer's thread, inside its COMMIT, after the WAL was fsync'd.
int WalCheckpointer::onCommit(void* self, sqlite3* db, const char* schema, int wal_pages) {
  auto* me = static_cast<WalCheckpointer*>(self);
  bool finish = false, queue = false;
  {
    std::lock_guard lock(me->state_mu_);
    // The storage thread copied most of the WAL, but writes went on meanwhile: copy the
    // few pages they added here, between two batches, so that the checkpoint is complete
    // and the next batch writes the WAL from its start again. Past kInlineAtPages the
    // storage thread is behind (or readers hold old snapshots): copy now, as SQLite would
    // by itself, so the WAL cannot grow without bound.
    finish = std::exchange(me->copied_, false) || wal_pages >= kInlineAtPages;
    queue = !finish && wal_pages >= kQueueAtPages && !me->queued_ && !me->closed_;
    if (queue) me->queued_ = true;
  }
  if (finish) sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  if (queue) CommitPool::instance().post([c = me->shared_from_this()] { c->checkpoint(); });
  return SQLITE_OK;
}

void WalCheckpointer::checkpoint() {
  std::lock_guard run(run_mu_);
  {
    std::lock_guard lock(state_mu_);
    queued_ = false;  // commits from now on may queue the next one
    if (closed_) return;
  }
  if (!conn_) {
    if (sqlite3_open_v2(file_.c_str(), &conn_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      sqlite3_close_v2(conn_);
      conn_ = nullptr;
      return;  // the next report tries again; the writer's inline checkpoint bounds the WAL
    }
    // FULL: the checkpoint fsyncs the WAL before copying and the database after.
    sqlite3_exec(conn_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr);
  }
  // PASSIVE: copies what no reader still needs, without taking the write lock. Writes that
  // came meanwhile are copied by another pass while they are few; after the last pass the
  // writer copies the rest between two batches (onCommit).
  int previous = -1;
  for (int pass = 0; pass < kPasses; ++pass) {
    int wal_pages = 0, copied = 0;
    if (sqlite3_wal_checkpoint_v2(conn_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &wal_pages, &copied) !=
            SQLITE_OK ||
        copied == wal_pages || copied == previous) {
      break;
    }
    previous = copied;
  }
  std::lock_guard lock(state_mu_);
  copied_ = true;
}

}  // namespace trellis::kernel::storage::internal
