// SystemDb on PostgreSQL: the same SQL as SQLite (system_db.cc) on a dedicated session,
// plus the change counter that lets hosts sharing the database notice each other's writes.
#include <stdexcept>

#include "system_db.h"

namespace trellis::tenants::internal {

Result<std::unique_ptr<SystemDb>> SystemDb::openPostgres(const PostgresUrl& url) {
  std::unique_ptr<SystemDb> db(new SystemDb("BEGIN"));
  db->after_begin_ = "UPDATE registry_version SET version = version + 1 WHERE id = 1";
  db->postgres_ = url;
  try {
    connectPostgres(db->sql_, url);
  } catch (const std::exception& e) {
    return Status::unavailable("cannot connect to PostgreSQL at " + url.endpoint() + " (database " +
                               url.database + ", user " + url.user +
                               ") for the tenant registry: " + scrubbed(e.what(), url.password));
  }
  return db;
}

sql::WriteTransaction SystemDb::readTransaction() {
  reconnectIfBroken();
  return sql::WriteTransaction(
      sql_, postgres_ ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN");
}

std::optional<int64_t> SystemDb::changeVersion() {
  if (!postgres_) return std::nullopt;
  long long version = 0;
  sql::Query(sql_, "SELECT version FROM registry_version WHERE id = 1").into(version).run();
  return version;
}

void SystemDb::reconnectIfBroken() {
  if (!postgres_) return;
  if (isHealthyPostgresSession(sql_)) {
    // libpq notices a server that went away only when a statement fails: ask cheaply
    // once, rather than failing the caller's first statement after a restart.
    try {
      sql::exec(sql_, "SELECT 1");
      return;
    } catch (const std::exception&) {
      // fall through: reconnect
    }
  }
  sql_.close();
  try {
    connectPostgres(sql_, *postgres_);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot connect to PostgreSQL at " + postgres_->endpoint() + ": " +
                             scrubbed(e.what(), postgres_->password));
  }
}

}  // namespace trellis::tenants::internal
