#include "services/usage/usage_journal.h"

#include <soci/soci.h>

#include "trellis/tenants/admission.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::services::usage {
using tenants::sql::exec;

namespace {

void createSchema(soci::session& sql) {
  exec(sql,
       "CREATE TABLE IF NOT EXISTS usage_records(seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, "
       "tenant TEXT NOT NULL, bytes INTEGER NOT NULL, record TEXT NOT NULL)");
  exec(sql,
       "CREATE TABLE IF NOT EXISTS usage_cursors(subscriber TEXT PRIMARY KEY, "
       "acked INTEGER NOT NULL, updated_ms INTEGER NOT NULL)");
  exec(sql, "CREATE TABLE IF NOT EXISTS usage_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)");
  const std::string secret = tenants::randomHexId(32), id = tenants::randomHexId(8);
  sql << "INSERT OR IGNORE INTO usage_meta(name, value) VALUES('secret', :s)", soci::use(secret);
  sql << "INSERT OR IGNORE INTO usage_meta(name, value) VALUES('journal_id', :s)", soci::use(id);
}

long long nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<std::unique_ptr<UsageJournal>> UsageJournal::open(const std::filesystem::path& file) {
  auto db = storage::SqliteDatabase::open(
      file, {.create = true, .max_batch = 64, .page_size = 65536}, createSchema);
  if (!db) return Status::unavailable("usage journal: " + db.status().message());
  std::unique_ptr<UsageJournal> j(new UsageJournal(std::move(*db)));
  Status s = j->db_->read([&j](storage::SqliteConnection& conn) {
    soci::session& sql = conn.sql;
    sql << "SELECT value FROM usage_meta WHERE name = 'secret'", soci::into(j->secret_);
    sql << "SELECT value FROM usage_meta WHERE name = 'journal_id'", soci::into(j->id_);
    long long head = 0, bytes = 0;
    sql << "SELECT COALESCE(MAX(seq), 0), COALESCE(SUM(bytes), 0) FROM usage_records",
        soci::into(head), soci::into(bytes);
    // Sequence numbers never repeat, even after pruning everything: cursors name them.
    long long acked = 0;
    sql << "SELECT COALESCE(MAX(acked), 0) FROM usage_cursors", soci::into(acked);
    j->head_ = static_cast<uint64_t>(std::max(head, acked));
    j->bytes_ = static_cast<uint64_t>(bytes);
    return Status::ok();
  });
  if (!s) return Status::unavailable("usage journal " + file.string() + ": " + s.message());
  if (j->secret_.size() != 64) return Status::internal("usage journal: the cursor secret is bad");
  return j;
}

Result<uint64_t> UsageJournal::append(const std::vector<Row>& rows) {
  if (rows.empty()) return head_;
  uint64_t seq = head_, bytes = 0;
  // One compiled statement, the rows' bytes bound in place: this runs for every record
  // the server answers, on the writer thread that shares the cores with the event loops.
  Status s = db_->write([&](storage::SqliteConnection& conn) {
    seq = head_;
    bytes = 0;
    for (const Row& r : rows) {
      conn.statements
          .use(
              "INSERT INTO usage_records(seq, at_ms, tenant, bytes, record) "
              "VALUES(:s, :a, :t, :b, :r)")
          .bind(static_cast<long long>(++seq))
          .bind(static_cast<long long>(r.at_ms))
          .bind(r.tenant)
          .bind(static_cast<long long>(r.json.size()))
          .bind(r.json)
          .run();
      bytes += r.json.size();
    }
    return Status::ok();
  });
  if (!s) return s;
  head_ = seq;
  bytes_ += bytes;
  return head_;
}

Result<std::vector<UsageJournal::Entry>> UsageJournal::read(uint64_t after, size_t limit) const {
  std::vector<Entry> out;
  Status s = db_->read([&](storage::SqliteConnection& conn) {
    soci::session& sql = conn.sql;
    long long seq = 0, at = 0;
    std::string json;
    const long long from = static_cast<long long>(after), n = static_cast<long long>(limit);
    soci::statement st =
        (sql.prepare << "SELECT seq, at_ms, record FROM usage_records "
                        "WHERE seq > :f ORDER BY seq LIMIT :n",
         soci::into(seq), soci::into(at), soci::into(json), soci::use(from), soci::use(n));
    st.execute();
    while (st.fetch()) out.push_back({static_cast<uint64_t>(seq), at, json});
    return Status::ok();
  });
  if (!s) return s;
  return out;
}

Result<std::map<std::string, uint64_t>> UsageJournal::cursors() const {
  std::map<std::string, uint64_t> out;
  Status s = db_->read([&](storage::SqliteConnection& conn) {
    soci::session& sql = conn.sql;
    std::string name;
    long long acked = 0;
    soci::statement st = (sql.prepare << "SELECT subscriber, acked FROM usage_cursors",
                          soci::into(name), soci::into(acked));
    st.execute();
    while (st.fetch()) out[name] = static_cast<uint64_t>(acked);
    return Status::ok();
  });
  if (!s) return s;
  return out;
}

Status UsageJournal::setAcked(const std::string& subscriber, uint64_t seq) {
  const long long acked = static_cast<long long>(seq), now = nowMs();
  return db_->write([&](storage::SqliteConnection& conn) {
    soci::session& sql = conn.sql;
    // Never backwards: two acks racing keep the larger.
    sql << "INSERT INTO usage_cursors(subscriber, acked, updated_ms) VALUES(:s, :a, :u) "
           "ON CONFLICT(subscriber) DO UPDATE SET acked = MAX(acked, excluded.acked), "
           "updated_ms = excluded.updated_ms",
        soci::use(subscriber), soci::use(acked), soci::use(now);
    return Status::ok();
  });
}

Result<UsageJournal::Backlog> UsageJournal::backlog(uint64_t after, bool everything) const {
  Backlog b;
  Status s = db_->read([&](storage::SqliteConnection& conn) {
    soci::session& sql = conn.sql;
    long long n = 0, bytes = 0, oldest = 0;
    soci::indicator none = soci::i_ok;
    const long long from = static_cast<long long>(after);
    sql << "SELECT at_ms FROM usage_records WHERE seq > :f ORDER BY seq LIMIT 1",
        soci::into(oldest, none), soci::use(from);
    if (!sql.got_data() || none != soci::i_ok) oldest = 0;
    if (everything) {
      b = {head_ - std::min(head_, after), bytes_, oldest};
      return Status::ok();
    }
    sql << "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM usage_records WHERE seq > :f",
        soci::into(n), soci::into(bytes), soci::use(from);
    b = {static_cast<uint64_t>(n), static_cast<uint64_t>(bytes), oldest};
    return Status::ok();
  });
  if (!s) return s;
  return b;
}

Result<uint64_t> UsageJournal::dropUpTo(uint64_t up_to) {
  uint64_t rows = 0, bytes = 0;
  Status s = db_->write([&](storage::SqliteConnection& conn) {
    rows = bytes = 0;
    // RETURNING: the DELETE reads each row once, so no second scan counts what went.
    long long size = 0;
    soci::statement st =
        (conn.sql.prepare << "DELETE FROM usage_records WHERE seq <= :v RETURNING bytes",
         soci::into(size), soci::use(static_cast<long long>(up_to)));
    st.execute();
    while (st.fetch()) {
      ++rows;
      bytes += static_cast<uint64_t>(size);
    }
    return Status::ok();
  });
  if (!s) return s;
  bytes_ -= std::min(bytes_, bytes);
  return rows;
}

Result<uint64_t> UsageJournal::dropOlderThan(int64_t at_ms) {
  // Rows are appended in time order (to the millisecond; the writer takes them from one
  // queue), so the old ones are a prefix of seq: found from the first row, not by a scan
  // of the whole journal (at_ms has no index).
  long long first_young = 0;
  soci::indicator none = soci::i_ok;
  Status s = db_->read([&](storage::SqliteConnection& conn) {
    conn.sql << "SELECT seq FROM usage_records WHERE at_ms >= :v ORDER BY seq LIMIT 1",
        soci::into(first_young, none), soci::use(static_cast<long long>(at_ms));
    if (!conn.sql.got_data() || none != soci::i_ok) first_young = 0;
    return Status::ok();
  });
  if (!s) return s;
  const uint64_t up_to = first_young > 0 ? static_cast<uint64_t>(first_young) - 1 : head_;
  return dropUpTo(up_to);
}

Result<uint64_t> UsageJournal::dropToSize(uint64_t max_bytes) {
  if (bytes_ <= max_bytes) return uint64_t{0};
  // The newest rows that fit in max_bytes stay; find the first of them.
  uint64_t excess = bytes_ - max_bytes;
  long long cut = 0;
  Status s = db_->read([&](storage::SqliteConnection& conn) {
    soci::session& sql = conn.sql;
    long long seq = 0, size = 0;
    uint64_t freed = 0;
    soci::statement st = (sql.prepare << "SELECT seq, bytes FROM usage_records ORDER BY seq",
                          soci::into(seq), soci::into(size));
    st.execute();
    while (freed < excess && st.fetch()) {
      freed += static_cast<uint64_t>(size);
      cut = seq;
    }
    return Status::ok();
  });
  if (!s) return s;
  return dropUpTo(static_cast<uint64_t>(cut));
}

}  // namespace trellis::kernel::services::usage
