#include "services/usage/usage_journal.h"

#include <soci/soci.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "storage/internal/byte_codec.h"
#include "trellis/tenants/admission.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::services::usage {
using tenants::sql::exec;

namespace {

using storage::internal::ByteReader;
using storage::internal::SegmentLog;

constexpr uint32_t kMagic = 0x47535554;  // "TUSG" little-endian
constexpr size_t kHeaderBytes = 28;      // first seq, count, first and last ms
// A segment is closed past kSegmentBytes, so it exceeds it by one record at most.
constexpr uint64_t kMaxPayloadBytes = 64 << 20;
// The writer starts a new log file past this size; pruning deletes whole files.
constexpr uint64_t kFileBytes = 8 << 20;

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
// become segment rows in the transaction that opens the file, and those then move to the
// log (moveSegmentRows), so no unacknowledged record is lost and sequence numbers are
// unchanged.
void convertRecordRows(soci::session& sql) {
  int tables = 0;
  sql << "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'usage_records'",
      soci::into(tables);
  if (tables == 0) return;
  long long seq = 0, at = 0, next = 0, first = 0;
  std::string json;
  Segment seg;
  exec(sql,
       "CREATE TABLE IF NOT EXISTS usage_segments(first_seq INTEGER PRIMARY KEY, "
       "last_seq INTEGER NOT NULL, first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, "
       "bytes INTEGER NOT NULL, records TEXT NOT NULL)");
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

std::string encodeSegment(uint64_t first, const Segment& g) {
  std::string out;
  out.reserve(kHeaderBytes + g.text.size());
  storage::internal::putU64(out, first);
  storage::internal::putU32(out, g.count);
  storage::internal::putU64(out, static_cast<uint64_t>(g.first_ms));
  storage::internal::putU64(out, static_cast<uint64_t>(g.last_ms));
  return out += g.text;
}

}  // namespace

uint32_t appendLines(std::string& out, std::string_view text, uint64_t skip, uint64_t max) {
  const std::string_view rest = text.substr(lineStart(text, skip));
  uint64_t taken = 0;
  out.append(rest.substr(0, lineStart(rest, max, &taken)));
  return static_cast<uint32_t>(taken);
}

Result<std::unique_ptr<UsageJournal>> UsageJournal::open(const std::filesystem::path& file) {
  auto db = storage::SqliteDatabase::open(file, {.create = true}, createSchema);
  if (!db) return Status::unavailable("usage journal: " + db.status().message());
  std::unique_ptr<UsageJournal> j(new UsageJournal(std::move(*db)));
  Status s = j->db_->read([&j](storage::SqliteConnection& conn) {
    soci::session& sql = conn.sql;
    sql << "SELECT value FROM usage_meta WHERE name = 'secret'", soci::into(j->secret_);
    sql << "SELECT value FROM usage_meta WHERE name = 'journal_id'", soci::into(j->id_);
    std::string pruned = "0";
    soci::indicator found = soci::i_null;
    sql << "SELECT value FROM usage_meta WHERE name = 'pruned'", soci::into(pruned, found);
    j->pruned_ = std::stoull(pruned);
    // Sequence numbers never repeat, even after pruning everything: cursors name them.
    long long acked = 0;
    sql << "SELECT COALESCE(MAX(acked), 0) FROM usage_cursors", soci::into(acked);
    j->head_ = std::max(j->pruned_, static_cast<uint64_t>(acked));
    return Status::ok();
  });
  if (!s) return Status::unavailable("usage journal " + file.string() + ": " + s.message());
  if (j->secret_.size() != 64) return Status::internal("usage journal: the cursor secret is bad");
  if (s = j->openLog(file); !s) return s;
  if (s = j->moveSegmentRows(); !s) {
    return Status::unavailable("usage journal " + file.string() + ": " + s.message());
  }
  return j;
}

// Indexes the log's segments that are not pruned, and deletes the files only pruned ones
// fill.
Status UsageJournal::openLog(const std::filesystem::path& file) {
  uint64_t expected = 0;  // the next segment's first seq; 0 before the first
  uint64_t last_segment_file = 0;
  auto opened = SegmentLog::open(
      file.string() + "-log",
      // No appender waits on the fdatasync (the writer thread does), so no zeros ahead.
      {kMagic, kMaxPayloadBytes, "usage log", /*write_ahead=*/false},
      [&](const SegmentLog::Location& at, uint64_t, std::string_view payload) -> std::string {
        ByteReader r(payload);
        uint64_t first = 0, first_ms = 0, last_ms = 0;
        uint32_t count = 0;
        if (!r.u64(first) || !r.u32(count) || !r.u64(first_ms) || !r.u64(last_ms) || count == 0 ||
            first == 0) {
          return "a usage segment with a bad header";
        }
        if (expected != 0 && first != expected) {
          return "usage records from " + std::to_string(first) + " where " +
                 std::to_string(expected) + " was due";
        }
        expected = first + count;
        last_segment_file = at.segment;
        log_head_ = first + count - 1;
        const SegmentInfo info{first,
                               first + count - 1,
                               static_cast<int64_t>(first_ms),
                               static_cast<int64_t>(last_ms),
                               r.rest().size() - count,
                               at};
        head_ = std::max(head_, info.last);
        if (info.last > pruned_) {
          bytes_ += info.bytes;
          segments_.push_back(info);
        }
        return "";
      });
  if (!opened) return opened.status();
  log_ = std::move(opened->log);
  log_->dropThrough(segments_.empty() ? last_segment_file : segments_.front().at.segment - 1);
  return Status::ok();
}

// Segment rows an earlier version kept in usage.db move to the log, then the table goes.
// Rows the log already holds (a crash between the two steps) are not written twice.
Status UsageJournal::moveSegmentRows() {
  int tables = 0;
  Status s = db_->read([&](storage::SqliteConnection& conn) {
    conn.sql << "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
                "name = 'usage_segments'",
        soci::into(tables);
    return Status::ok();
  });
  if (!s || tables == 0) return s;
  std::vector<std::pair<uint64_t, Segment>> rows;
  s = db_->read([&](storage::SqliteConnection& conn) {
    auto row = conn.statements.use(
        "SELECT first_seq, last_seq, first_ms, last_ms, records FROM usage_segments "
        "WHERE last_seq > :h ORDER BY first_seq");
    row.bind(sqlInt(log_head_));
    while (row.step()) {
      Segment g;
      g.text = row.bytes(4);
      g.count = static_cast<uint32_t>(row.int64(1) - row.int64(0) + 1);
      g.first_ms = row.int64(2);
      g.last_ms = row.int64(3);
      rows.emplace_back(static_cast<uint64_t>(row.int64(0)), std::move(g));
    }
    return Status::ok();
  });
  if (!s) return s;
  for (const auto& [first, g] : rows) {
    auto written = write(first, {g});
    if (!written) return written.status();
  }
  return db_->write([](storage::SqliteConnection& conn) {
    exec(conn.sql, "DROP TABLE usage_segments");
    return Status::ok();
  });
}

// Appends `segments` as log records, numbered from `first`, and indexes them.
Result<std::vector<UsageJournal::SegmentInfo>> UsageJournal::write(
    uint64_t first, const std::vector<Segment>& segments) {
  std::vector<std::string> payloads;
  std::vector<SegmentInfo> added;
  uint64_t seq = first;
  for (const Segment& g : segments) {
    if (g.count == 0) continue;
    payloads.push_back(encodeSegment(seq, g));
    added.push_back({seq, seq + g.count - 1, g.first_ms, g.last_ms, recordBytes(g), {}});
    seq += g.count;
  }
  if (payloads.empty()) return added;
  if (log_->bytesInSegment() >= kFileBytes) {
    if (auto closed = log_->rotate(); !closed) return closed.status();
  }
  const std::vector<std::string_view> views(payloads.begin(), payloads.end());
  auto where = log_->appendAll(views);
  if (!where) return where.status();
  std::unique_lock lock(segments_mu_);
  for (size_t i = 0; i < added.size(); ++i) {
    added[i].at = (*where)[i];
    segments_.push_back(added[i]);
    bytes_ += added[i].bytes;
    head_ = std::max(head_, added[i].last);
    log_head_ = added[i].last;
  }
  return added;
}

Result<uint64_t> UsageJournal::append(const std::vector<Segment>& segments) {
  auto written = write(head_ + 1, segments);
  if (!written) return written.status();
  return head_;
}

Result<std::string> UsageJournal::textOf(const SegmentInfo& g) const {
  auto payload = log_->read(g.at);
  if (!payload) return payload.status();
  payload->erase(0, kHeaderBytes);  // in place: a segment is up to a writer batch of lines
  return std::move(*payload);
}

Result<Lines> UsageJournal::read(uint64_t after, size_t limit) const {
  Lines out;
  std::shared_lock lock(segments_mu_);
  // From the segment holding after + 1 on.
  auto it = std::partition_point(segments_.begin(), segments_.end(),
                                 [after](const SegmentInfo& g) { return g.last <= after; });
  for (; out.count < limit && it != segments_.end(); ++it) {
    auto text = textOf(*it);
    if (!text) return text.status();
    const uint64_t skip = after >= it->first ? after + 1 - it->first : 0;
    const uint32_t taken = appendLines(out.text, *text, skip, limit - out.count);
    out.count += taken;
    if (taken > 0) out.last = it->first + skip + taken - 1;
  }
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

Status UsageJournal::setAcked(const Cursors& acks) {
  if (acks.empty()) return Status::ok();
  return db_->write([&](storage::SqliteConnection& conn) {
    for (const auto& [subscriber, seq] : acks) saveCursor(conn, subscriber, seq);
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
  auto text = textOf(*it);
  if (!text) return text.status();
  const size_t start = lineStart(*text, skip);
  b.bytes -= std::min<uint64_t>(b.bytes, start - skip);
  const std::string_view line = std::string_view(*text).substr(start);
  b.oldest_ms = timeOfLine(line.substr(0, line.find('\n')), it->first_ms);
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
  // Saved first: a segment pruned stays pruned after a restart, though its file may stay
  // until every segment in it is.
  const std::string pruned = std::to_string(segments_[n - 1].last);
  Status s = db_->write([&](storage::SqliteConnection& conn) {
    conn.statements
        .use(
            "INSERT INTO usage_meta(name, value) VALUES('pruned', :p) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value")
        .bind(pruned)
        .run();
    return Status::ok();
  });
  if (!s) return s;
  pruned_ = segments_[n - 1].last;
  std::unique_lock lock(segments_mu_);
  const uint64_t last_file = segments_[n - 1].at.segment;
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<std::ptrdiff_t>(n));
  bytes_ -= std::min(bytes_, bytes);
  if (!segments_.empty()) {
    log_->dropThrough(segments_.front().at.segment - 1);
  } else if (last_file == log_->currentSegment()) {
    // Everything is pruned, the current file too: the next appends start another.
    if (log_->rotate()) log_->dropThrough(last_file);
  } else {
    log_->dropThrough(last_file);
  }
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
