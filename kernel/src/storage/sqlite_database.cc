#include "trellis/kernel/storage/sqlite_database.h"

#include <fcntl.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include "storage/internal/wal_checkpointer.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::storage {
namespace {

using tenants::sql::exec;
using tenants::sql::Query;

constexpr int kBusyTimeoutMs = 5000;

sqlite_api::sqlite3* handleOf(soci::session& sql) {
  return static_cast<soci::sqlite3_session_backend*>(sql.get_backend())->conn_;
}

std::string connectString(const std::filesystem::path& file) {
  return "db=\"" + file.string() + "\" timeout=" + std::to_string(kBusyTimeoutMs / 1000);
}

// True when an error inside the batch means the database, not the write, failed: the
// disk is full, I/O failed, or SQLite already rolled the transaction back. Then no write
// of the batch can be trusted to commit, so the batch fails as a whole.
bool failsTheBatch(soci::session& sql, const std::exception& e) {
  if (sqlite_api::sqlite3_get_autocommit(handleOf(sql)) != 0) return true;
  int code = 0;
  if (const auto* err = dynamic_cast<const soci::sqlite3_soci_error*>(&e)) {
    code = err->result();
  } else if (const auto* err = dynamic_cast<const SqliteError*>(&e)) {
    code = err->code();
  } else {
    return false;
  }
  switch (code & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOMEM:
    case SQLITE_CANTOPEN: return true;
    default: return false;
  }
}

void rollbackQuietly(soci::session& sql) noexcept {
  try {
    exec(sql, "ROLLBACK");
  } catch (const std::exception&) {
    // Already rolled back by SQLite (or the connection is failing); the next BEGIN
    // reports whatever is still wrong.
  }
}

void failAll(std::span<GroupCommit::Write* const> batch, const Status& status) {
  for (GroupCommit::Write* w : batch) w->status = status;
}

}  // namespace

SqliteDatabase::SqliteDatabase(std::filesystem::path file, Options options)
    : file_(std::move(file)),
      options_(options),
      commit_([this](std::span<GroupCommit::Write* const> batch) { runBatch(batch); },
              {.max_batch = options.max_batch, .max_leaders = 1}) {}

SqliteDatabase::~SqliteDatabase() {
  if (checkpointer_) checkpointer_->close();
}

Result<std::unique_ptr<SqliteDatabase>> SqliteDatabase::open(const std::filesystem::path& file,
                                                             Options options,
                                                             const Schema& schema) {
  try {
    // Data is private to the server's user: create the file 0600 before SQLite does (it
    // would use the umask), and SQLite gives -wal/-shm the same mode.
    int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC | (options.create ? O_CREAT : 0), 0600);
    if (fd < 0 && !options.create && errno == ENOENT) {
      return Status::notFound("no database " + file.string());
    }
    if (fd < 0) {
      throw std::system_error(errno, std::generic_category(), options.create ? "create" : "open");
    }
    ::close(fd);
    std::unique_ptr<SqliteDatabase> db(new SqliteDatabase(file, options));
    soci::session& sql = db->writer_;
    sql.open(soci::sqlite3, connectString(file));
    // The same C struct: SOCI only declares SQLite's API inside its own namespace.
    db->writer_statements_ =
        std::make_unique<SqliteStatements>(reinterpret_cast<::sqlite3*>(handleOf(sql)));
    if (options.page_size != 0) exec(sql, "PRAGMA page_size=" + std::to_string(options.page_size));
    std::string mode;
    Query(sql, "PRAGMA journal_mode=WAL").into(mode).run();
    if (mode != "wal") throw std::runtime_error("cannot enable WAL (journal_mode=" + mode + ")");
    // FULL: every COMMIT fsyncs the WAL before it returns, so acknowledged is durable.
    exec(sql, "PRAGMA synchronous=FULL");
    exec(sql, "PRAGMA busy_timeout=" + std::to_string(kBusyTimeoutMs));
    db->checkpointer_ =
        internal::WalCheckpointer::attach(reinterpret_cast<::sqlite3*>(handleOf(sql)), file);
    tenants::sql::WriteTransaction tx(sql);
    schema(sql);
    tx.commit();
    return db;
  } catch (const std::exception& e) {
    return Status::unavailable("cannot open " + file.string() + ": " + e.what());
  }
}

Status SqliteDatabase::write(const Work& work) {
  return commit_.submit([&](soci::session& sql) {
    SqliteConnection c{sql, *writer_statements_};
    return work(c);
  });
}

void SqliteDatabase::writeAsync(Work work, GroupCommit::Done done,
                                std::shared_ptr<const void> owner) {
  commit_.submitAsync(
      [this, work = std::move(work)](soci::session& sql) {
        SqliteConnection c{sql, *writer_statements_};
        return work(c);
      },
      std::move(done), std::move(owner));
}

void SqliteDatabase::runBatch(std::span<GroupCommit::Write* const> batch) {
  if (runWrites(batch, /*savepoints=*/false) == BatchRun::kNeedsSavepoints) {
    runWrites(batch, /*savepoints=*/true);
  }
}

// Most writes either succeed or fail before changing a row (a compare-and-set conflict, a
// quota refusal), so a batch first runs without savepoints: two fewer statements per
// write for the one serial thread. A write that fails after changing rows, or throws,
// sends the whole batch back to run again with a savepoint per write.
SqliteDatabase::BatchRun SqliteDatabase::runWrites(std::span<GroupCommit::Write* const> batch,
                                                   bool savepoints) {
  soci::session& sql = writer_;
  SqliteStatements& statements = *writer_statements_;
  auto* handle = handleOf(sql);
  try {
    // IMMEDIATE: the write lock up front, so each write's read-check-write is atomic
    // against other processes on the file too (they wait up to the busy timeout).
    statements.exec("BEGIN IMMEDIATE");
  } catch (const std::exception& e) {
    rollbackQuietly(sql);
    failAll(batch,
            Status::unavailable(std::string("cannot start a write transaction: ") + e.what()));
    return BatchRun::kDone;
  }
  for (GroupCommit::Write* w : batch) {
    const auto changes_before = sqlite_api::sqlite3_total_changes64(handle);
    bool threw = false;
    try {
      if (savepoints) statements.exec("SAVEPOINT w");
      w->status = (*w->work)(sql);
    } catch (const std::exception& e) {
      if (failsTheBatch(sql, e)) {
        rollbackQuietly(sql);
        failAll(batch, Status::unavailable(std::string("write batch rolled back: ") + e.what()));
        return BatchRun::kDone;
      }
      w->status = Status::unavailable(e.what());
      threw = true;
    }
    if (!savepoints) {
      if (!w->status && (threw || sqlite_api::sqlite3_total_changes64(handle) != changes_before)) {
        rollbackQuietly(sql);
        return BatchRun::kNeedsSavepoints;
      }
      continue;
    }
    try {
      if (!w->status) statements.exec("ROLLBACK TO w");
      statements.exec("RELEASE w");
    } catch (const std::exception& e) {
      rollbackQuietly(sql);
      failAll(batch, Status::unavailable(std::string("write batch rolled back: ") + e.what()));
      return BatchRun::kDone;
    }
  }
  try {
    statements.exec("COMMIT");  // appends the batch to the WAL and fsyncs it once
  } catch (const std::exception& e) {
    rollbackQuietly(sql);
    failAll(batch, Status::unavailable(std::string("commit failed, nothing of this batch was "
                                                   "written: ") +
                                       e.what()));
  }
  return BatchRun::kDone;
}

SqliteDatabase::Reader SqliteDatabase::openReader() const {
  Reader r;
  r.sql = std::make_unique<soci::session>(soci::sqlite3, connectString(file_));
  exec(*r.sql, "PRAGMA busy_timeout=" + std::to_string(kBusyTimeoutMs));
  exec(*r.sql, "PRAGMA query_only=1");
  // No memory map (mmap_size stays 0): the file grows with every checkpoint, and each
  // growth made every reader unmap and map it again (TLB shootdowns on every core, then a
  // page fault per page touched), which cost more CPU per read than a pread per page
  // (bench/kv_commit_bench: 68 -> 50 us of CPU per write at 32 writers).
  r.statements = std::make_unique<SqliteStatements>(reinterpret_cast<::sqlite3*>(handleOf(*r.sql)));
  return r;
}

Status SqliteDatabase::read(const Work& work) {
  Reader reader;
  {
    std::lock_guard lock(readers_mu_);
    if (!idle_readers_.empty()) {
      reader = std::move(idle_readers_.back());
      idle_readers_.pop_back();
    }
  }
  try {
    if (!reader.sql) reader = openReader();
    SqliteConnection c{*reader.sql, *reader.statements};
    Status s = work(c);
    std::lock_guard lock(readers_mu_);
    if (idle_readers_.size() < options_.max_idle_readers) {
      idle_readers_.push_back(std::move(reader));
    }
    return s;
  } catch (const std::exception& e) {
    return Status::unavailable(e.what());  // the reader is dropped, not reused
  }
}

}  // namespace trellis::kernel::storage
