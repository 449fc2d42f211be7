#include "trellis/kernel/storage/sqlite_statements.h"

#include <sqlite3.h>

#include <utility>

namespace trellis::kernel::storage {

SqliteStatements::~SqliteStatements() {
  for (auto& [sql, entry] : cache_) sqlite3_finalize(entry.stmt);
}

SqliteStatements::Use SqliteStatements::use(std::string_view sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    // PERSISTENT: these live as long as the connection, so SQLite keeps them out of its
    // lookaside memory, which is meant for short-lived statements.
    int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      throw SqliteError(std::string(sqlite3_errmsg(db_)) + " (in: " + std::string(sql) + ")",
                        sqlite3_extended_errcode(db_));
    }
    it = cache_.emplace(std::string(sql), Entry{stmt, false}).first;
  }
  if (it->second.in_use) {
    throw std::logic_error("statement already in use: " + std::string(sql));
  }
  it->second.in_use = true;
  return Use(db_, it->second.stmt, &it->second.in_use);
}

SqliteStatements::Use::Use(Use&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      in_use_(other.in_use_),
      next_param_(other.next_param_) {}

SqliteStatements::Use::~Use() {
  if (stmt_ == nullptr) return;
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  *in_use_ = false;
}

void SqliteStatements::Use::check(int rc) const {
  if (rc != SQLITE_OK) throw SqliteError(sqlite3_errmsg(db_), sqlite3_extended_errcode(db_));
}

SqliteStatements::Use& SqliteStatements::Use::bind(std::string_view text) {
  // SQLITE_STATIC: the caller keeps the bytes alive for the whole Use (see the header).
  // A null pointer would bind NULL, not an empty string.
  const char* data = text.data() == nullptr ? "" : text.data();
  check(
      sqlite3_bind_text(stmt_, next_param_++, data, static_cast<int>(text.size()), SQLITE_STATIC));
  return *this;
}

SqliteStatements::Use& SqliteStatements::Use::bind(long long value) {
  check(sqlite3_bind_int64(stmt_, next_param_++, value));
  return *this;
}

bool SqliteStatements::Use::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  throw SqliteError(sqlite3_errmsg(db_), sqlite3_extended_errcode(db_));
}

bool SqliteStatements::Use::isNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

long long SqliteStatements::Use::int64(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

std::string SqliteStatements::Use::bytes(int column) const {
  // Blob first, then bytes: sqlite3_column_bytes after the pointer is the documented order.
  const void* p = sqlite3_column_blob(stmt_, column);
  const int n = sqlite3_column_bytes(stmt_, column);
  return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
}

}  // namespace trellis::kernel::storage
