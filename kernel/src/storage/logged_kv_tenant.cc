#include "storage/internal/logged_kv_tenant.h"

#include <algorithm>
#include <utility>

#include "storage/internal/kv_keys.h"

namespace trellis::kernel::storage::internal {
namespace {

// The applier starts when this many keys wait in memory, the segment holds this many
// bytes or the last apply started this long ago, and otherwise once the tenant has been
// idle for a moment (SqliteKvStore). Large batches: keys written at random touch most
// B-tree leaves whatever the batch size, so pages written per key fall as the batch grows
// (4,096 to 32,768 keys took the applier from 12% to 6% of trellisd's CPU in the kv
// benchmark). The interval keeps the file at most about a second behind the log, which
// bounds the replay after a crash under a steady write rate.
constexpr size_t kApplyEntries = 32768;
constexpr uint64_t kApplyBytes = 16 * 1024 * 1024;
constexpr int64_t kApplyIntervalMs = 1000;

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uint64_t chargedBytes(const std::string& key, const std::optional<std::string>& value) {
  return value ? key.size() + value->size() : 0;
}

// Writes `changes` in order into the open transaction and moves the usage row by what
// they add and free, measured against the rows themselves: replaying a change twice
// leaves the same rows and the same usage.
Status applyChanges(SqliteConnection& c, const std::vector<KvChange>& changes) {
  long long delta = 0;
  for (const KvChange& ch : changes) {
    long long old_bytes = 0;
    {
      auto q = c.statements.use(
          "SELECT length(key) + length(value) FROM kv WHERE plugin = :p AND key = CAST(:k AS "
          "BLOB)");
      q.bind(ch.plugin).bind(ch.key);
      if (q.step()) old_bytes = q.int64(0);
    }
    if (ch.value) {
      c.statements
          .use(
              "INSERT INTO kv(plugin, key, value, version) "
              "VALUES(:p, CAST(:k AS BLOB), CAST(:v AS BLOB), :n) "
              "ON CONFLICT(plugin, key) DO UPDATE SET value = excluded.value, "
              "version = excluded.version")
          .bind(ch.plugin)
          .bind(ch.key)
          .bind(*ch.value)
          .bind(static_cast<long long>(ch.version))
          .run();
    } else {
      c.statements.use("DELETE FROM kv WHERE plugin = :p AND key = CAST(:k AS BLOB)")
          .bind(ch.plugin)
          .bind(ch.key)
          .run();
    }
    delta += static_cast<long long>(chargedBytes(ch.key, ch.value)) - old_bytes;
  }
  if (delta != 0) c.statements.use("UPDATE usage SET bytes = bytes + :d").bind(delta).run();
  return Status::ok();
}

}  // namespace

struct LoggedKvTenant::Write {
  Scope scope;
  std::string key;
  std::optional<std::string> value;  // nullopt: a remove
  uint64_t expected_version;
  uint64_t next = 0;  // the version written, once decided
};

LoggedKvTenant::LoggedKvTenant(std::unique_ptr<SqliteDatabase> db)
    : db_(std::move(db)),
      commit_([this](std::span<GroupCommit::Write* const> batch) { runBatch(batch); },
              {.max_batch = 256, .max_leaders = 1}) {}

LoggedKvTenant::~LoggedKvTenant() {
  // Whatever fails here is replayed at the next open.
  if (log_) (void)apply();
}

Result<std::shared_ptr<LoggedKvTenant>> LoggedKvTenant::open(const std::filesystem::path& db_file,
                                                             bool create,
                                                             const SqliteDatabase::Schema& schema,
                                                             std::function<void()> before_append) {
  // A log without its database is what a crash in the middle of removing a tenant leaves;
  // a tenant created under the same id must not replay it.
  std::error_code ec;
  if (create && !std::filesystem::exists(db_file, ec) && !ec) {
    if (Status s = KvRedoLog::removeAll(db_file); !s) return s;
  }
  auto db = SqliteDatabase::open(db_file, {.create = create}, schema);
  if (!db) return db.status();
  auto opened = KvRedoLog::open(db_file);
  if (!opened) return opened.status();
  std::shared_ptr<LoggedKvTenant> t(new LoggedKvTenant(std::move(*db)));
  if (!opened->unapplied.empty()) {
    Status s = t->db_->write([&](SqliteConnection& c) {
      for (const auto& batch : opened->unapplied) {
        if (Status a = applyChanges(c, batch); !a) return a;
      }
      return Status::ok();
    });
    if (!s)
      return Status::unavailable("cannot replay the redo log of " + db_file.string() + ": " +
                                 s.message());
  }
  opened->log->dropThrough(opened->last_replayed_segment);
  t->log_ = std::move(opened->log);
  t->before_append_ = std::move(before_append);
  t->last_apply_ms_ = nowMs();  // the file is complete as of now
  long long used = 0;
  Status s = t->db_->read([&](SqliteConnection& c) {
    auto q = c.statements.use("SELECT bytes FROM usage");
    if (q.step()) used = q.int64(0);
    return Status::ok();
  });
  if (!s) return s;
  t->used_ = static_cast<uint64_t>(std::max(used, 0LL));
  return t;
}

Result<KvEntry> LoggedKvTenant::get(const std::string& plugin, const std::string& key) {
  if (auto e = overlay_.find(plugin, key)) {
    if (!e->value) return Status::notFound("no such key");
    return KvEntry{key, std::move(*e->value), e->version};
  }
  if (auto hit = cache_.find(plugin, key)) {
    if (!hit->value) return Status::notFound("no such key");
    return KvEntry{key, std::move(*hit->value), hit->version};
  }
  const uint64_t ticket = cache_.ticket();  // before the read: see KvReadCache::fill
  std::optional<std::string> value;         // none: SQLite has no such key
  uint64_t version = 0;
  Status s = db_->read([&](SqliteConnection& c) {
    auto q = c.statements.use(
        "SELECT value, version FROM kv WHERE plugin = :p AND key = CAST(:k AS BLOB)");
    q.bind(plugin).bind(key);
    if (q.step()) {
      value = q.bytes(0);
      version = static_cast<uint64_t>(q.int64(1));
    }
    return Status::ok();
  });
  if (!s) return s;
  cache_.fill(ticket, plugin, key, value, version);
  if (!value) return Status::notFound("no such key");
  return KvEntry{key, std::move(*value), version};
}

Result<std::vector<KvEntry>> LoggedKvTenant::list(const std::string& plugin,
                                                  std::string_view prefix,
                                                  std::string_view start_after, uint32_t limit) {
  const std::string lower(prefix), after(start_after);
  const std::optional<std::string> upper = prefixSuccessor(prefix);
  const size_t n = limit == 0 || limit > kMaxListLimit ? kMaxListLimit : limit;
  // The overlay first: an entry forgotten after this is in SQLite before the read below.
  const auto newer = overlay_.range(plugin, lower, upper, after);
  // Each overlay entry hides at most one row, so n + that many rows cover the answer.
  const long long rows = static_cast<long long>(n + newer.size());
  std::map<std::string, KvEntry> merged;
  Status s = db_->read([&](SqliteConnection& c) {
    std::string sql =
        "SELECT key, value, version FROM kv WHERE plugin = :p AND key >= CAST(:lo AS BLOB)";
    if (!after.empty()) sql += " AND key > CAST(:after AS BLOB)";
    if (upper) sql += " AND key < CAST(:hi AS BLOB)";
    sql += " ORDER BY key LIMIT :n";
    auto q = c.statements.use(sql);
    q.bind(plugin).bind(lower);
    if (!after.empty()) q.bind(after);
    if (upper) q.bind(*upper);
    q.bind(rows);
    while (q.step()) {
      std::string key = q.bytes(0);
      merged.emplace(key, KvEntry{key, q.bytes(1), static_cast<uint64_t>(q.int64(2))});
    }
    return Status::ok();
  });
  if (!s) return s;
  for (const auto& [key, e] : newer) {
    if (e.value) {
      merged.insert_or_assign(key, KvEntry{key, *e.value, e.version});
    } else {
      merged.erase(key);
    }
  }
  std::vector<KvEntry> out;
  for (auto& [key, e] : merged) {
    if (out.size() == n) break;
    out.push_back(std::move(e));
  }
  return out;
}

Result<uint64_t> LoggedKvTenant::put(const Scope& scope, std::string key, std::string value,
                                     uint64_t expected_version) {
  Write w{scope, std::move(key), std::move(value), expected_version};
  Status s = commit_.submit([this, &w](soci::session&) { return decide(w); });
  if (!s) return s;
  return w.next;
}

void LoggedKvTenant::putAsync(const Scope& scope, std::string key, std::string value,
                              uint64_t expected_version, KvStore::PutDone done) {
  auto w =
      std::make_shared<Write>(Write{scope, std::move(key), std::move(value), expected_version});
  commit_.submitAsync([this, w](soci::session&) { return decide(*w); },
                      [w, done = std::move(done)](Status s) {
                        if (!s) return done(s);
                        done(w->next);
                      },
                      shared_from_this());
}

Status LoggedKvTenant::remove(const Scope& scope, std::string key, uint64_t expected_version) {
  Write w{scope, std::move(key), std::nullopt, expected_version};
  return commit_.submit([this, &w](soci::session&) { return decide(w); });
}

std::pair<uint64_t, uint64_t> LoggedKvTenant::current(const std::string& plugin,
                                                      const std::string& key) {
  if (auto it = pending_at_.find({plugin, key}); it != pending_at_.end()) {
    const KvChange& c = pending_[it->second];
    return {c.value ? c.version : kAbsent, chargedBytes(key, c.value)};
  }
  if (auto e = overlay_.find(plugin, key)) {
    return {e->value ? e->version : kAbsent, chargedBytes(key, e->value)};
  }
  if (auto hit = cache_.stat(plugin, key)) {
    if (!hit->present) return {kAbsent, 0};
    return {hit->version, key.size() + hit->value_bytes};
  }
  auto q = leader_conn_->statements.use(
      "SELECT version, length(key) + length(value) FROM kv "
      "WHERE plugin = :p AND key = CAST(:k AS BLOB)");
  q.bind(plugin).bind(key);
  if (!q.step()) return {kAbsent, 0};
  return {static_cast<uint64_t>(q.int64(0)), static_cast<uint64_t>(q.int64(1))};
}

Status LoggedKvTenant::decide(Write& w) {
  const std::string& plugin = w.scope.plugin;
  auto [version, old_bytes] = current(plugin, w.key);
  if (!w.value && version == kAbsent) return Status::notFound("no such key");
  if (w.expected_version != kAnyVersion && w.expected_version != version) {
    return conflict(w.expected_version, version);
  }
  const long long delta =
      static_cast<long long>(chargedBytes(w.key, w.value)) - static_cast<long long>(old_bytes);
  // Only growth is checked: shrinking must stay possible for a tenant that is over a
  // quota lowered after the data was written.
  if (delta > 0 && w.scope.max_storage_bytes) {
    const long long total = static_cast<long long>(used_.load()) + pending_delta_;
    const uint64_t used = static_cast<uint64_t>(std::max(total, 0LL));
    const uint64_t max = *w.scope.max_storage_bytes;
    if (used > max || static_cast<uint64_t>(delta) > max - used) {
      return Status::quotaExceeded("storage quota of " + std::to_string(max) +
                                   " bytes exceeded: using " + std::to_string(used) +
                                   ", this write needs " + std::to_string(delta) + " more");
    }
  }
  w.next = w.value ? version + 1 : 0;
  pending_at_[{plugin, w.key}] = pending_.size();
  pending_.push_back(KvChange{plugin, w.key, w.value, w.next});
  pending_delta_ += delta;
  return Status::ok();
}

void LoggedKvTenant::runBatch(std::span<GroupCommit::Write* const> batch) {
  pending_.clear();
  pending_at_.clear();
  pending_delta_ = 0;
  Status read = db_->read([&](SqliteConnection& c) {
    leader_conn_ = &c;
    for (GroupCommit::Write* w : batch) {
      try {
        w->status = (*w->work)(c.sql);
      } catch (const std::exception& e) {
        w->status = Status::unavailable(e.what());  // a read failed; nothing was decided
      }
    }
    leader_conn_ = nullptr;
    return Status::ok();
  });
  if (!read) {
    for (GroupCommit::Write* w : batch) w->status = read;
    return;
  }
  if (pending_.empty()) return;
  if (before_append_) before_append_();
  std::lock_guard lock(log_mu_);
  if (Status s = log_->append(pending_); !s) {
    for (GroupCommit::Write* w : batch) {
      if (w->status) w->status = s;
    }
    return;
  }
  overlay_.publish(pending_);
  used_ =
      static_cast<uint64_t>(std::max(static_cast<long long>(used_.load()) + pending_delta_, 0LL));
  last_write_ms_ = nowMs();
  if (overlay_.size() >= kApplyEntries || log_->bytesInSegment() >= kApplyBytes ||
      last_write_ms_ - last_apply_ms_ >= kApplyIntervalMs) {
    maybeScheduleApply();
  }
}

void LoggedKvTenant::maybeScheduleApply() {
  if (apply_scheduled_.exchange(true)) return;
  CommitPool::instance().post([self = shared_from_this()] { (void)self->apply(); });
}

Status LoggedKvTenant::apply() {
  std::lock_guard applying(apply_mu_);
  apply_scheduled_ = false;
  last_apply_ms_ = nowMs();
  if (overlay_.size() == 0) return Status::ok();
  uint64_t closed = 0;
  {
    std::lock_guard lock(log_mu_);
    auto r = log_->rotate();
    if (!r) return r.status();
    closed = *r;
  }
  // Everything in segments <= closed is in the overlay now (published under log_mu_).
  const KvOverlay::Snapshot snap = overlay_.snapshot();
  Status s = db_->write([&](SqliteConnection& c) { return applyChanges(c, snap.changes); });
  if (!s) return s;
  cache_.applied(snap.changes);  // before forget: a read must find them in one or the other
  overlay_.forget(snap);
  std::lock_guard lock(log_mu_);
  log_->dropThrough(closed);
  return Status::ok();
}

void LoggedKvTenant::applyIfIdle(std::chrono::milliseconds idle) {
  if (overlay_.size() == 0 || nowMs() - last_write_ms_.load() < idle.count()) return;
  (void)apply();
}

}  // namespace trellis::kernel::storage::internal
