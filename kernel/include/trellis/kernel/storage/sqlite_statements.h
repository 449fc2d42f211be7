// Prepared statements kept per SQLite connection, for the storage hot paths. SQLite
// compiles every statement text it is given and SOCI prepares each statement anew, so a
// group-committed KV write (savepoint, read, write, usage, release) spent most of the batch
// leader's time in SQLite's compiler; the leader is the one serial part of a batch. Here
// each distinct text is compiled once per connection and then only bound, stepped and reset.
//
//   SqliteStatements stmts(handle);
//   auto q = stmts.use("SELECT version FROM kv WHERE plugin = :p AND key = CAST(:k AS BLOB)");
//   q.bind(plugin).bind(key);            // parameters in order of appearance
//   if (q.step()) version = q.int64(0);
//   stmts.exec("RELEASE w");
//
// Not thread-safe: one cache per connection, used only by the thread holding the connection.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

struct sqlite3;
struct sqlite3_stmt;

namespace trellis::kernel::storage {

// A failed SQLite call; `code()` is its extended result code (SQLITE_FULL, SQLITE_IOERR_*).
class SqliteError : public std::runtime_error {
 public:
  SqliteError(const std::string& what, int code) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

class SqliteStatements {
 public:
  // One use of a cached statement. Bound values are referenced, not copied: they must
  // outlive the Use. Ending the Use resets the statement, so it holds no read snapshot.
  class Use {
   public:
    Use(Use&& other) noexcept;
    Use& operator=(Use&&) = delete;
    ~Use();

    Use& bind(std::string_view text);  // the next parameter, as TEXT
    Use& bind(long long value);        // the next parameter, as INTEGER
    // Runs to the next row: true when one is ready, false when the statement is done.
    // Throws SqliteError.
    bool step();
    void run() {
      while (step()) {
      }
    }
    bool isNull(int column) const;
    long long int64(int column) const;
    std::string bytes(int column) const;  // TEXT or BLOB content

   private:
    friend class SqliteStatements;
    Use(sqlite3* db, sqlite3_stmt* stmt, bool* in_use) : db_(db), stmt_(stmt), in_use_(in_use) {}
    void check(int rc) const;

    sqlite3* db_;
    sqlite3_stmt* stmt_;
    bool* in_use_;
    int next_param_ = 1;
  };

  explicit SqliteStatements(sqlite3* db) : db_(db) {}
  SqliteStatements(const SqliteStatements&) = delete;
  SqliteStatements& operator=(const SqliteStatements&) = delete;
  ~SqliteStatements();  // finalizes every statement; call before the connection closes

  // The statement for `sql`, compiled on first use. Throws SqliteError if it does not
  // compile, std::logic_error if a Use of the same text is still alive (nested use).
  Use use(std::string_view sql);
  void exec(std::string_view sql) { use(sql).run(); }

 private:
  struct Entry {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  sqlite3* db_;
  std::unordered_map<std::string, Entry, Hash, std::equal_to<>> cache_;
};

}  // namespace trellis::kernel::storage
