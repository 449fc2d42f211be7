#include "services/usage/usage_journal.h"

#include <soci/soci.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "trellis/tenants/admission.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::services::usage {
using tenants::sql::exec;

namespace {

constexpr const char* kInsertSegment =
    "INSERT INTO usage_segments(first_seq, last_seq, first_ms, last_ms, bytes, records) "
    "VALUES(:f, :l, :a, :z, :b, :r)";

long long sqlInt(uint64_t v) {
  return static_cast<long long>(v);
}

// Record bytes of a segment: its lines without their newlines.
uint64_t recordBytes(const Segment& s) {
  return s.text.size() - s.count;
}

// Journals written before segments kept one row per record (usage_records): their rows
// become segments in the transaction that opens the file, so no unacknowledged record is
// lost and sequence numbers are unchanged.
void convertRecordRows(soci::session& sql) {
  int tables = 0;
  sql << "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'usage_records'",
      soci::into(tables);
  if (tables == 0) return;
  long long seq = 0, at = 0, next = 0, first = 0;
  std::string json;
  Segment seg;
  auto flush = [&] {
    if (seg.count == 0) return;
    const long long last = first + seg.count - 1, bytes = sqlInt(recordBytes(seg));
    const long long first_ms = seg.first_ms, last_ms = seg.last_ms;
    sql << kInsertSegment, soci::use(first), soci::use(last), soci::use(first_ms),
        soci::use(last_ms), soci::use(bytes), soci::use(seg.text);
    seg = {};
  };
  soci::statement st = (sql.prepare << "SELECT seq, at_ms, record FROM usage_records ORDER BY seq",
                        soci::into(seq), soci::into(at), soci::into(json));
  st.execute();
  while (st.fetch()) {
    if (seg.count > 0 && (seq != next || seg.text.size() >= kSegmentBytes)) flush();
    if (seg.count == 0) {
      first = seq;
      seg.first_ms = at;
    }
    seg.text.append(json).push_back('\n');
    ++seg.count;
    seg.last_ms = at;
    next = seq + 1;
  }
  flush();
  exec(sql, "DROP TABLE usage_records");
}

void createSchema(soci::session& sql) {
  exec(sql,
       "CREATE TABLE IF NOT EXISTS usage_segments(first_seq INTEGER PRIMARY KEY, "
       "last_seq INTEGER NOT NULL, first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, "
       "bytes INTEGER NOT NULL, records TEXT NOT NULL)");
  exec(sql,
       "CREATE TABLE IF NOT EXISTS usage_cursors(subscriber TEXT PRIMARY KEY, "
       "acked INTEGER NOT NULL, updated_ms INTEGER NOT NULL)");
  exec(sql, "CREATE TABLE IF NOT EXISTS usage_meta(name TEXT PRIMARY KEY, value TEXT NOT NULL)");
  const std::string secret = tenants::randomHexId(32), id = tenants::randomHexId(8);
  sql << "INSERT OR IGNORE INTO usage_meta(name, value) VALUES('secret', :s)", soci::use(secret);
  sql << "INSERT OR IGNORE INTO usage_meta(name, value) VALUES('journal_id', :s)", soci::use(id);
  convertRecordRows(sql);
}

long long nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Where line `n` of `text` starts (text.size() if it has fewer lines); `passed`, if given,
// counts the whole lines before that point.
size_t lineStart(std::string_view text, uint64_t n, uint64_t* passed = nullptr) {
  size_t at = 0;
  uint64_t lines = 0;
  for (; lines < n && at < text.size(); ++lines) {
    const void* nl = std::memchr(text.data() + at, '\n', text.size() - at);
    if (!nl) {
      at = text.size();
      break;
    }
    at = static_cast<size_t>(static_cast<const char*>(nl) - text.data()) + 1;
  }
  if (passed) *passed = lines;
  return at;
}

// The record time a usage line carries ("time_ms", written by the kernel), or `fallback`.
int64_t timeOfLine(std::string_view line, int64_t fallback) {
  constexpr std::string_view kField = ",\"time_ms\":";
  const size_t at = line.substr(0, std::min<size_t>(line.size(), 160)).find(kField);
  if (at == std::string_view::npos) return fallback;
  int64_t ms = 0;
  const char* begin = line.data() + at + kField.size();
  auto [end, ec] = std::from_chars(begin, line.data() + line.size(), ms);
  return ec == std::errc() && end != begin ? ms : fallback;
}

// Moves a subscriber's cursor forward: two acknowledgements racing keep the larger.
void saveCursor(storage::SqliteConnection& conn, const std::string& subscriber, uint64_t seq) {
  conn.statements
      .use(
          "INSERT INTO usage_cursors(subscriber, acked, updated_ms) VALUES(:s, :a, :u) "
          "ON CONFLICT(subscriber) DO UPDATE SET acked = MAX(acked, excluded.acked), "
          "updated_ms = excluded.updated_ms")
      .bind(subscriber)
      .bind(sqlInt(seq))
      .bind(nowMs())
      .run();
}

}  // namespace

uint32_t appendLines(std::string& out, std::string_view text, uint64_t skip, uint64_t max) {
  const std::string_view rest = text.substr(lineStart(text, skip));
  uint64_t taken = 0;
  out.append(rest.substr(0, lineStart(rest, max, &taken)));
  return static_cast<uint32_t>(taken);
}

Result<std::unique_ptr<UsageJournal>> UsageJournal::open(const std::filesystem::path& file) {
  auto db = storage::SqliteDatabase::open(
      file, {.create = true, .max_batch = 64, .page_size = 65536}, createSchema);
  if (!db) return Status::unavailable("usage journal: " + db.status().message());
  std::unique_ptr<UsageJournal> j(new UsageJournal(std::move(*db)));
  Status s = j->db_->read([&j](storage::SqliteConnection& conn) {
    soci::session& sql = conn.sql;
    sql << "SELECT value FROM usage_meta WHERE name = 'secret'", soci::into(j->secret_);
    sql << "SELECT value FROM usage_meta WHERE name = 'journal_id'", soci::into(j->id_);
    auto rows = conn.statements.use(
        "SELECT first_seq, last_seq, first_ms, last_ms, bytes FROM usage_segments "
        "ORDER BY first_seq");
    while (rows.step()) {
      const SegmentInfo info{static_cast<uint64_t>(rows.int64(0)),
                             static_cast<uint64_t>(rows.int64(1)), rows.int64(2), rows.int64(3),
                             static_cast<uint64_t>(rows.int64(4))};
      j->bytes_ += info.bytes;
      j->head_ = std::max(j->head_, info.last);
      j->segments_.push_back(info);
    }
    // Sequence numbers never repeat, even after pruning everything: cursors name them.
    long long acked = 0;
    sql << "SELECT COALESCE(MAX(acked), 0) FROM usage_cursors", soci::into(acked);
    j->head_ = std::max(j->head_, static_cast<uint64_t>(acked));
    return Status::ok();
  });
  if (!s) return Status::unavailable("usage journal " + file.string() + ": " + s.message());
  if (j->secret_.size() != 64) return Status::internal("usage journal: the cursor secret is bad");
  return j;
}

Result<uint64_t> UsageJournal::append(const std::vector<Segment>& segments, const Cursors& acks) {
  std::vector<SegmentInfo> added;
  Status s = db_->write([&](storage::SqliteConnection& conn) {
    added.clear();
    for (const auto& [subscriber, seq] : acks) saveCursor(conn, subscriber, seq);
    uint64_t seq = head_;
    for (const Segment& g : segments) {
      if (g.count == 0) continue;
      const SegmentInfo info{seq + 1, seq + g.count, g.first_ms, g.last_ms, recordBytes(g)};
      conn.statements.use(kInsertSegment)
          .bind(sqlInt(info.first))
          .bind(sqlInt(info.last))
          .bind(static_cast<long long>(info.first_ms))
          .bind(static_cast<long long>(info.last_ms))
          .bind(sqlInt(info.bytes))
          .bind(g.text)
          .run();
      added.push_back(info);
      seq = info.last;
    }
    return Status::ok();
  });
  if (!s) return s;
  for (const SegmentInfo& info : added) {
    segments_.push_back(info);
    bytes_ += info.bytes;
    head_ = info.last;
  }
  return head_;
}

Result<Lines> UsageJournal::read(uint64_t after, size_t limit) const {
  Lines out;
  Status s = db_->read([&](storage::SqliteConnection& conn) {
    out = {};
    // From the segment holding after + 1 (the last one starting at or before it) on.
    auto rows = conn.statements.use(
        "SELECT first_seq, last_seq, records FROM usage_segments WHERE first_seq >= "
        "COALESCE((SELECT MAX(first_seq) FROM usage_segments WHERE first_seq <= :a), 0) "
        "ORDER BY first_seq");
    rows.bind(sqlInt(after + 1));
    while (out.count < limit && rows.step()) {
      const auto first = static_cast<uint64_t>(rows.int64(0));
      if (static_cast<uint64_t>(rows.int64(1)) <= after) continue;
      const uint64_t skip = after >= first ? after + 1 - first : 0;
      const uint32_t taken = appendLines(out.text, rows.bytes(2), skip, limit - out.count);
      out.count += taken;
      if (taken > 0) out.last = first + skip + taken - 1;
    }
    return Status::ok();
  });
  if (!s) return s;
  return out;
}

Result<Cursors> UsageJournal::cursors() const {
  Cursors out;
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
  return db_->write([&](storage::SqliteConnection& conn) {
    saveCursor(conn, subscriber, seq);
    return Status::ok();
  });
}

Result<UsageJournal::Backlog> UsageJournal::backlog(uint64_t after) const {
  // Segments are contiguous (only prefixes are dropped), so the first one with a record
  // after `after` starts the backlog.
  auto it = std::find_if(segments_.begin(), segments_.end(),
                         [after](const SegmentInfo& g) { return g.last > after; });
  if (it == segments_.end()) return Backlog{};
  Backlog b{head_ - std::max(after, it->first - 1), 0, it->first_ms};
  for (auto g = it; g != segments_.end(); ++g) b.bytes += g->bytes;
  if (after < it->first) return b;
  // `after` falls inside this segment: its earlier lines are not in the backlog.
  const uint64_t skip = after + 1 - it->first;
  Status s = db_->read([&](storage::SqliteConnection& conn) {
    auto row = conn.statements.use("SELECT records FROM usage_segments WHERE first_seq = :f");
    row.bind(sqlInt(it->first));
    if (!row.step()) return Status::ok();
    const std::string text = row.bytes(0);
    const size_t start = lineStart(text, skip);
    b.bytes -= std::min<uint64_t>(b.bytes, start - skip);
    const std::string_view line = std::string_view(text).substr(start);
    b.oldest_ms = timeOfLine(line.substr(0, line.find('\n')), it->first_ms);
    return Status::ok();
  });
  if (!s) return s;
  return b;
}

Result<uint64_t> UsageJournal::dropUpTo(uint64_t up_to) {
  size_t n = 0;
  uint64_t records = 0, bytes = 0;
  for (; n < segments_.size() && segments_[n].last <= up_to; ++n) {
    records += segments_[n].last - segments_[n].first + 1;
    bytes += segments_[n].bytes;
  }
  if (n == 0) return uint64_t{0};
  const long long through = sqlInt(segments_[n - 1].first);
  Status s = db_->write([&](storage::SqliteConnection& conn) {
    conn.statements.use("DELETE FROM usage_segments WHERE first_seq <= :f").bind(through).run();
    return Status::ok();
  });
  if (!s) return s;
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<std::ptrdiff_t>(n));
  bytes_ -= std::min(bytes_, bytes);
  return records;
}

Result<uint64_t> UsageJournal::dropOlderThan(int64_t at_ms) {
  // Records are appended in time order (to the millisecond; the writer takes them from one
  // queue), so the old segments are a prefix.
  auto young = std::find_if(segments_.begin(), segments_.end(),
                            [at_ms](const SegmentInfo& g) { return g.last_ms >= at_ms; });
  return dropUpTo(young == segments_.end() ? head_ : young->first - 1);
}

Result<uint64_t> UsageJournal::dropToSize(uint64_t max_bytes) {
  if (bytes_ <= max_bytes) return uint64_t{0};
  // The newest segments that fit in max_bytes stay.
  const uint64_t excess = bytes_ - max_bytes;
  uint64_t freed = 0, cut = 0;
  for (auto g = segments_.begin(); g != segments_.end() && freed < excess; ++g) {
    freed += g->bytes;
    cut = g->last;
  }
  return dropUpTo(cut);
}

}  // namespace trellis::kernel::services::usage
