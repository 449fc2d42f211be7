// SOCI statement helpers shared by the system database (tenant registry) and the kernel's
// SQLite KV store, which links tenants. Header-only so each user links SOCI itself.
//
//   sql::WriteTransaction tx(session);
//   long long n = 0;
//   sql::Query(session, "SELECT COUNT(*) FROM kv WHERE plugin = :p").use(plugin).into(n).run();
//   tx.commit();
//
// SOCI's `session << ...` and `session.prepare << ...` go through helper classes whose
// type info Debian's libsoci does not export, so code using them fails to link under
// -fsanitize=vptr; these helpers use only the plain statement API.
#pragma once

#include <soci/soci.h>

#include <exception>
#include <string>
#include <utility>

namespace trellis::tenants::sql {

// One SQL statement. Bound values are referenced, not copied: they must outlive the Query.
class Query {
 public:
  Query(soci::session& sql, std::string text) : st_(sql), text_(std::move(text)) {}

  template <typename T>
  Query& use(const T& value) {
    st_.exchange(soci::use(value));
    return *this;
  }
  // `ind` = soci::i_null binds NULL.
  template <typename T>
  Query& use(const T& value, soci::indicator& ind) {
    st_.exchange(soci::use(value, ind));
    return *this;
  }
  template <typename T>
  Query& into(T& value) {
    st_.exchange(soci::into(value));
    return *this;
  }
  template <typename T>
  Query& into(T& value, soci::indicator& ind) {
    st_.exchange(soci::into(value, ind));
    return *this;
  }
  // Executes; true if a first row was fetched into the `into` targets.
  bool run() {
    st_.alloc();
    // One-time: PostgreSQL then runs the statement unnamed (PQexecParams), one round trip
    // and no server-side prepared statement left to deallocate; SQLite ignores the hint.
    st_.prepare(text_, soci::details::st_one_time_query);
    st_.define_and_bind();
    return st_.execute(true);
  }
  bool next() { return st_.fetch(); }  // the following row, if any
  // Rows changed by the last run() of an INSERT, UPDATE or DELETE.
  long long affectedRows() { return st_.get_affected_rows(); }

 private:
  soci::statement st_;
  std::string text_;
};

inline void exec(soci::session& sql, const std::string& text) {
  Query(sql, text).run();
}

// BEGIN ... COMMIT, rolled back unless commit() was reached. The default, BEGIN IMMEDIATE,
// takes SQLite's write lock up front, so a read-check-write sequence inside is atomic
// against other connections too; another backend passes its own begin statement, and
// `then` (if given) runs right after it, e.g. to take a row lock that plays the same role.
class WriteTransaction {
 public:
  explicit WriteTransaction(soci::session& sql, const char* begin = "BEGIN IMMEDIATE",
                            const char* then = nullptr)
      : sql_(sql) {
    exec(sql_, begin);
    if (then == nullptr) return;
    try {
      exec(sql_, then);
    } catch (...) {
      rollbackQuietly();  // the destructor does not run for a throwing constructor
      throw;
    }
  }
  ~WriteTransaction() {
    if (open_) rollbackQuietly();
  }
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;
  void commit() {
    exec(sql_, "COMMIT");
    open_ = false;
  }

 private:
  void rollbackQuietly() noexcept {
    try {
      exec(sql_, "ROLLBACK");
    } catch (const std::exception&) {
      // The connection is already failing; the database rolls back on its own when the
      // transaction cannot continue (or the connection drops), and the caller reports the
      // original error.
    }
  }

  soci::session& sql_;
  bool open_ = true;
};

}  // namespace trellis::tenants::sql
