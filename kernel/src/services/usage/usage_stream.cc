#include "services/usage/usage_stream.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <utility>

#include "runtime/call_context.h"
#include "trellis/kernel/metrics/registry.h"

namespace trellis::kernel::services::usage {
using Clock = std::chrono::steady_clock;

struct UsageStream::Subscriber {
  runtime::PluginInstance* plugin = nullptr;
  std::string id;
  trellis_usage_fn fn = nullptr;
  void* user = nullptr;
  // Guarded by UsageStream::mu_.
  uint64_t acked = 0;                         // durable
  uint64_t delivered = 0;                     // the next batch starts after this
  uint64_t issued = 0;                        // the highest cursor handed out since bind
  Clock::time_point progress = Clock::now();  // last delivery or ack that moved
  bool stop = false;
  std::thread thread;
};

namespace {

int64_t unixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[p[i] >> 4]);
    out.push_back(kHex[p[i] & 15]);
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<UsageStream>> UsageStream::open(const std::filesystem::path& file,
                                                       const config::UsageConfig& options,
                                                       metrics::MetricsRegistry& metrics) {
  auto journal = UsageJournal::open(file);
  if (!journal) return journal.status();
  return std::unique_ptr<UsageStream>(new UsageStream(std::move(*journal), options, metrics));
}

UsageStream::UsageStream(std::unique_ptr<UsageJournal> journal, const config::UsageConfig& options,
                         metrics::MetricsRegistry& metrics)
    : journal_(std::move(journal)),
      options_(options),
      metrics_(metrics),
      dropped_queue_(metrics
                         .counter("trellis_usage_dropped_records_total",
                                  "Usage records lost: queue full, or past retention unread",
                                  {"reason"})
                         .labels({"queue_full"})),
      dropped_retention_(metrics.counter("trellis_usage_dropped_records_total", "", {"reason"})
                             .labels({"retention"})),
      refused_cursors_(metrics.counter("trellis_usage_cursor_refusals_total",
                                       "Usage acknowledgements refused", {"reason"})),
      backlog_bytes_(metrics.gauge("trellis_usage_backlog_bytes",
                                   "Usage records retained but not acknowledged, per subscriber",
                                   {"subscriber"})),
      backlog_age_(metrics.gauge("trellis_usage_backlog_age_seconds",
                                 "Age of the oldest unacknowledged usage record, per subscriber",
                                 {"subscriber"})),
      journal_bytes_(
          metrics.gauge("trellis_usage_journal_bytes", "Bytes of usage records the journal retains")
              .labels({})) {
  head_ = journal_->head();
  metrics.gauge("trellis_usage_retention_max_bytes", "usage.max_bytes")
      .labels({})
      .set(static_cast<double>(options_.max_bytes));
  metrics.gauge("trellis_usage_retention_max_age_seconds", "usage.max_age_seconds")
      .labels({})
      .set(static_cast<double>(options_.max_age.count()));
  writer_ = std::thread([this] { writeLoop(); });
}

UsageStream::~UsageStream() {
  stop();
  // Subscribers still bound (a start-up that failed half-way) stop delivering too.
  std::map<std::string, std::unique_ptr<Subscriber>, std::less<>> left;
  {
    std::lock_guard lock(mu_);
    left.swap(subscribers_);
    for (auto& [_, s] : left) s->stop = true;
    cv_.notify_all();
  }
  for (auto& [_, s] : left) {
    if (s->thread.joinable()) s->thread.join();
  }
}

void UsageStream::record(const UsageRecord& r) {
  Queued q{r.time_ms, toJsonAfterEventId(r)};  // serialized before the lock is taken
  std::lock_guard lock(queue_mu_);
  if (queue_.size() >= options_.queue_records) {
    dropped_queue_.add(1);
    const auto now = Clock::now();
    if (now - last_queue_warning_ > std::chrono::seconds(10)) {
      last_queue_warning_ = now;
      spdlog::error(
          "usage: the queue to the journal is full ({} records): records are being dropped; "
          "the disk under usage.db is too slow or failing",
          options_.queue_records);
    }
    return;
  }
  queue_.push_back(std::move(q));
  if (queue_.size() == options_.batch_records) queue_cv_.notify_one();
}

// Gives each taken record its event id and joins them into segments of at most about
// kSegmentBytes. The ids' random bits come from one RAND_bytes call per segment.
void UsageStream::toSegments(std::deque<Queued>& taken, std::vector<Segment>& out) const {
  std::vector<unsigned char> random;
  while (!taken.empty()) {
    Segment seg;
    size_t n = 0, bytes = 0;
    while (n < taken.size() && (n == 0 || bytes < kSegmentBytes)) bytes += taken[n++].rest.size();
    random.resize(n * kEventIdRandomBytes);
    if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) {
      throw std::runtime_error("RAND_bytes failed");
    }
    seg.text.reserve(bytes + n * 52);
    for (size_t i = 0; i < n; ++i) {
      const Queued& q = taken[i];
      seg.text.append("{\"event_id\":\"");
      appendEventId(seg.text, q.time_ms, random.data() + i * kEventIdRandomBytes);
      seg.text.push_back('"');
      seg.text.append(q.rest).push_back('\n');
    }
    seg.count = static_cast<uint32_t>(n);
    seg.first_ms = taken.front().time_ms;
    seg.last_ms = taken[n - 1].time_ms;
    out.push_back(std::move(seg));
    taken.erase(taken.begin(), taken.begin() + static_cast<std::ptrdiff_t>(n));
  }
}

void UsageStream::writeLoop() {
  std::vector<Segment> pending;  // serialized, not yet durable
  auto last_retain = Clock::now();
  auto last_acks_saved = Clock::now();
  for (;;) {
    std::deque<Queued> taken;
    bool stopping = false;
    {
      std::unique_lock lock(queue_mu_);
      queue_cv_.wait_for(lock, options_.flush_interval,
                         [this] { return stopping_ || queue_.size() >= options_.batch_records; });
      taken.swap(queue_);
      stopping = stopping_;
    }
    toSegments(taken, pending);
    if (stopping || Clock::now() - last_acks_saved >= options_.flush_interval) {
      (void)saveUnsavedAcks();  // it logs a failure, and keeps the acknowledgements
      last_acks_saved = Clock::now();
    }
    if (!pending.empty()) {
      auto head = journal_->append(pending);
      if (head) {
        keepRecent(pending, *head);
        pending.clear();
      } else {
        size_t records = 0;
        for (const Segment& g : pending) records += g.count;
        spdlog::error("usage: cannot write {} records to the journal ({}); retrying", records,
                      head.status().message());
        // Bounded like the queue: the oldest segments go first, counted.
        while (pending.size() > 1 && records - pending.front().count >= options_.queue_records) {
          records -= pending.front().count;
          dropped_queue_.add(static_cast<double>(pending.front().count));
          pending.erase(pending.begin());
        }
        if (stopping) break;  // the disk failed at shutdown: what is left is lost, and said so
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
    }
    if (stopping && pending.empty()) {
      std::lock_guard lock(queue_mu_);
      if (queue_.empty()) break;
    }
    if (Clock::now() - last_retain >= options_.retention_check) {
      retain();
      last_retain = Clock::now();
    }
  }
}

// Publishes segments just made durable (the last record is `head`) and keeps the newest of
// them in memory, within bounds: about two batches of records, at most kRecentBytes.
void UsageStream::keepRecent(std::vector<Segment>& written, uint64_t head) {
  constexpr size_t kRecentBytes = 16 << 20;
  const size_t keep_records = 2 * options_.batch_records;
  std::lock_guard lock(mu_);
  uint64_t seq = head;
  for (const Segment& g : written) seq -= g.count;
  for (Segment& g : written) {
    recent_records_ += g.count;
    recent_bytes_ += g.text.size();
    recent_.push_back({seq + 1, g.count, std::move(g.text)});
    seq += g.count;
  }
  while (recent_.size() > 1 && (recent_records_ - recent_.front().count >= keep_records ||
                                recent_bytes_ > kRecentBytes)) {
    recent_records_ -= recent_.front().count;
    recent_bytes_ -= recent_.front().text.size();
    recent_.pop_front();
  }
  head_ = head;
  cv_.notify_all();
}

// Saves the acknowledgements made since the last save, in one transaction. After a failure
// they are kept for the next save, unless a later acknowledgement came since.
Status UsageStream::saveUnsavedAcks() {
  Cursors acks;
  {
    std::lock_guard lock(mu_);
    acks.swap(unsaved_acks_);
  }
  Status s = journal_->setAcked(acks);
  if (!s) {
    std::lock_guard lock(mu_);
    for (const auto& [subscriber, seq] : acks) {
      uint64_t& unsaved = unsaved_acks_[subscriber];
      unsaved = std::max(unsaved, seq);
    }
    spdlog::error("usage: cannot save subscribers' cursors ({}); retrying", s.message());
  }
  return s;
}

bool UsageStream::takeRecent(uint64_t after, Lines& out) const {
  if (recent_.empty() || after + 1 < recent_.front().first || after >= head_.load()) {
    return false;
  }
  for (const Recent& g : recent_) {
    if (out.count >= options_.batch_records) break;
    if (g.first + g.count <= after + 1) continue;  // wholly at or before `after`
    const uint64_t skip = after >= g.first ? after + 1 - g.first : 0;
    const uint64_t room = options_.batch_records - out.count;
    uint32_t taken = g.count;
    if (skip == 0 && g.count <= room) {
      out.text += g.text;  // the whole segment: no line to look for
    } else {
      taken = appendLines(out.text, g.text, skip, room);
    }
    out.count += taken;
    if (taken > 0) out.last = g.first + skip + taken - 1;
  }
  return out.count > 0;
}

// Prunes what every subscriber acknowledged, reports each backlog, and enforces the limits.
void UsageStream::retain() {
  auto cursors = journal_->cursors();
  if (!cursors) {
    spdlog::error("usage: cannot read subscriber cursors: {}", cursors.status().message());
    return;
  }
  uint64_t min_acked = UINT64_MAX;
  if (!cursors->empty()) {
    for (const auto& [_, acked] : *cursors) min_acked = std::min(min_acked, acked);
    (void)journal_->dropUpTo(min_acked);
  }
  const int64_t now = unixMs();
  const auto max_age_ms = static_cast<int64_t>(options_.max_age.count()) * 1000;
  for (const auto& [subscriber, acked] : *cursors) {
    auto b = journal_->backlog(acked);
    if (!b) continue;
    const double age_s = b->oldest_ms ? static_cast<double>(now - b->oldest_ms) / 1000.0 : 0.0;
    backlog_bytes_.labels({subscriber}).set(static_cast<double>(b->bytes));
    backlog_age_.labels({subscriber}).set(age_s);
    const bool near_size = static_cast<double>(b->bytes) >=
                           options_.warn_fraction * static_cast<double>(options_.max_bytes);
    const bool near_age =
        age_s * 1000.0 >= options_.warn_fraction * static_cast<double>(max_age_ms);
    auto& last = last_warning_[subscriber];
    if ((near_size || near_age) && Clock::now() - last >= std::chrono::minutes(1)) {
      last = Clock::now();
      spdlog::warn(
          "usage: subscriber {} has {} unacknowledged records ({} bytes, oldest {:.0f} s old); "
          "retention is usage.max_bytes={} and usage.max_age_seconds={}: records past either "
          "limit will be dropped",
          subscriber, b->records, b->bytes, age_s, options_.max_bytes, options_.max_age.count());
    }
  }
  // The limits: what goes now is lost to a subscriber that has not read it.
  uint64_t dropped = 0;
  if (auto n = journal_->dropOlderThan(now - max_age_ms)) dropped += *n;
  if (auto n = journal_->dropToSize(options_.max_bytes)) dropped += *n;
  if (dropped > 0) {
    if (!cursors->empty()) {
      dropped_retention_.add(static_cast<double>(dropped));
      spdlog::error(
          "usage: dropped {} unacknowledged records past retention (usage.max_bytes={}, "
          "usage.max_age_seconds={}); a subscriber has not kept up",
          dropped, options_.max_bytes, options_.max_age.count());
    } else {
      spdlog::info("usage: pruned {} records past retention; no plugin subscribes", dropped);
    }
  }
  journal_bytes_.set(static_cast<double>(journal_->retainedBytes()));
}

void UsageStream::stop() {
  {
    std::lock_guard lock(queue_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  // Acknowledgements since the writer's last save (subscribers are unbound by now).
  if (!saveUnsavedAcks()) {
    spdlog::error("usage: subscribers' last records will be delivered again after the restart");
  }
}

void UsageStream::bind(runtime::PluginInstance& p) {
  if (!p.usage_fn) return;
  // An upgrade starts the new version before the old one stops: the old one's delivery
  // ends here, and the new one continues from the cursor.
  std::unique_ptr<Subscriber> previous;
  {
    std::lock_guard lock(mu_);
    if (auto it = subscribers_.find(p.id()); it != subscribers_.end()) {
      previous = std::move(it->second);
      previous->stop = true;
      subscribers_.erase(it);
      cv_.notify_all();
    }
  }
  if (previous && previous->thread.joinable()) previous->thread.join();
  auto cursors = journal_->cursors();
  uint64_t acked = previous ? previous->acked : 0;
  if (cursors) {
    if (auto it = cursors->find(p.id()); it != cursors->end()) acked = std::max(acked, it->second);
  }
  {
    // Acknowledged by an earlier binding and not saved yet (a quick disable and enable).
    std::lock_guard lock(mu_);
    if (auto it = unsaved_acks_.find(p.id()); it != unsaved_acks_.end()) {
      acked = std::max(acked, it->second);
    }
  }
  if (!cursors || !cursors->contains(p.id())) {
    // Known from now on: retention keeps what it has not read, even while it is down.
    if (Status s = journal_->setAcked({{p.id(), acked}}); !s) {
      spdlog::error("usage: cannot record subscriber {}: {}", p.id(), s.message());
    }
  }
  auto s = std::make_unique<Subscriber>();
  s->plugin = &p;
  s->id = p.id();
  s->fn = p.usage_fn;
  s->user = p.usage_user;
  s->acked = s->delivered = s->issued = acked;
  Subscriber& ref = *s;
  {
    std::lock_guard lock(mu_);
    subscribers_[p.id()] = std::move(s);
    ref.thread = std::thread([this, &ref] { deliverLoop(ref); });
  }
  spdlog::info("usage: plugin {} subscribed; delivering after record {} (journal head {})", p.id(),
               acked, head_.load());
}

void UsageStream::unbind(runtime::PluginInstance& p) {
  std::unique_ptr<Subscriber> s;
  {
    std::lock_guard lock(mu_);
    auto it = subscribers_.find(p.id());
    if (it == subscribers_.end() || it->second->plugin != &p) return;
    s = std::move(it->second);
    subscribers_.erase(it);
    s->stop = true;
    cv_.notify_all();
  }
  // Joined outside the lock: a batch in progress may acknowledge (and finds no subscriber,
  // so its cursor is delivered again to the next version: at least once).
  if (s->thread.joinable()) s->thread.join();
}

void UsageStream::deliverLoop(Subscriber& s) {
  auto backoff = std::chrono::milliseconds(0);
  std::unique_lock lock(mu_);
  while (!s.stop) {
    if (backoff.count() > 0) {
      cv_.wait_for(lock, backoff, [&s] { return s.stop; });
      if (s.stop) break;
    }
    const auto now = Clock::now();
    const bool window_full = s.delivered - s.acked >= options_.max_unacked;
    if (s.delivered > s.acked && now - s.progress >= options_.redeliver_after) {
      // Delivered but not acknowledged in time: at least once means again.
      spdlog::info("usage: subscriber {} acknowledged nothing after {} for {} ms; redelivering",
                   s.id, s.acked, options_.redeliver_after.count());
      s.delivered = s.acked;
      s.progress = now;
    }
    if (head_.load() <= s.delivered || window_full) {
      cv_.wait_for(lock, std::chrono::milliseconds(200));
      continue;
    }
    const uint64_t from = s.delivered;
    const uint64_t head = head_.load();
    Result<Lines> batch = Lines{};
    const bool recent = takeRecent(from, *batch);
    lock.unlock();
    if (!recent) batch = journal_->read(from, options_.batch_records);
    trellis_status status = TRELLIS_UNAVAILABLE;
    std::string error;
    if (!batch) {
      error = batch.status().message();
    } else if (batch->count > 0) {
      const uint64_t last = batch->last;
      const std::string cursor = sign(s.id, last);
      {
        std::lock_guard l(mu_);
        s.issued = std::max(s.issued, last);
      }
      trellis_ctx call;
      call.plugin = s.plugin;
      call.phase = runtime::Phase::kEvent;
      {
        runtime::CallScope scope(&call);
        try {
          status = s.fn(s.user, &call, {batch->text.data(), batch->text.size()}, batch->count,
                        {cursor.data(), cursor.size()});
        } catch (...) {
          status = TRELLIS_INTERNAL;
          call.error = "exception escaped the usage handler";
        }
      }
      error = call.error;
      lock.lock();
      if (status == TRELLIS_OK) {
        if (s.delivered == from) s.delivered = last;
        s.progress = Clock::now();
        backoff = std::chrono::milliseconds(0);
      }
      lock.unlock();
    } else {
      // Everything up to `head` was pruned under us (retention, already counted): what is
      // gone cannot be delivered, so the cursor moves past it.
      status = TRELLIS_OK;
      (void)journal_->setAcked({{s.id, head}});
      std::lock_guard l(mu_);
      s.acked = std::max(s.acked, head);
      s.delivered = std::max(s.delivered, s.acked);
    }
    lock.lock();
    if (status != TRELLIS_OK) {
      backoff = std::clamp(backoff * 2, std::chrono::milliseconds(250),
                           std::chrono::milliseconds(30'000));
      spdlog::warn(
          "usage: subscriber {} did not take records after {} ({}); retrying in {} ms", s.id, from,
          error.empty() ? statusCodeName(static_cast<StatusCode>(status)) : error, backoff.count());
      s.delivered = s.acked;
    }
  }
}

Status UsageStream::ack(const runtime::PluginInstance& p, std::string_view cursor) {
  auto seq = verify(p.id(), cursor);
  if (!seq) {
    refused_cursors_.labels({"forged"}).add(1);
    return seq.status();
  }
  {
    std::lock_guard lock(mu_);
    auto it = subscribers_.find(p.id());
    if (it == subscribers_.end()) {
      refused_cursors_.labels({"not_subscribed"}).add(1);
      return Status::invalid("plugin " + p.id() + " does not subscribe to the usage stream");
    }
    const Subscriber& s = *it->second;
    if (*seq <= s.acked) {
      refused_cursors_.labels({"replayed"}).add(1);
      return Status::invalid("usage cursor for record " + std::to_string(*seq) +
                             " was already acknowledged (acknowledged up to " +
                             std::to_string(s.acked) + "): a replayed cursor");
    }
    if (*seq > s.issued) {
      refused_cursors_.labels({"out_of_range"}).add(1);
      return Status::invalid("usage cursor for record " + std::to_string(*seq) +
                             " is beyond what was delivered since the plugin started (up to " +
                             std::to_string(s.issued) + ")");
    }
  }
  std::lock_guard lock(mu_);
  if (auto it = subscribers_.find(p.id()); it != subscribers_.end()) {
    Subscriber& s = *it->second;
    s.acked = std::max(s.acked, *seq);
    s.delivered = std::max(s.delivered, s.acked);
    s.progress = Clock::now();
  }
  uint64_t& unsaved = unsaved_acks_[p.id()];
  unsaved = std::max(unsaved, *seq);
  cv_.notify_all();
  return Status::ok();
}

std::string UsageStream::sign(const std::string& subscriber, uint64_t seq) const {
  const std::string seq_text = std::to_string(seq);
  const std::string message = journal_->journalId() + '\n' + subscriber + '\n' + seq_text;
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t len = 0;
  const std::string& key = journal_->secret();
  EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, sizeof mac,
            &len);
  return "u1." + seq_text + "." + hex(mac, 16);
}

Result<uint64_t> UsageStream::verify(const std::string& subscriber, std::string_view cursor) const {
  const Status bad =
      Status::invalid("usage cursor is not one this host issued to " + subscriber +
                      " (forged, altered, another subscriber's, or from another journal)");
  if (cursor.size() > 64 || !cursor.starts_with("u1.")) return bad;
  const std::string_view rest = cursor.substr(3);
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot > 20) return bad;
  uint64_t seq = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + dot, seq);
  if (ec != std::errc() || end != rest.data() + dot) return bad;
  const std::string expected = sign(subscriber, seq);
  if (expected.size() != cursor.size() ||
      CRYPTO_memcmp(expected.data(), cursor.data(), cursor.size()) != 0) {
    return bad;
  }
  return seq;
}

}  // namespace trellis::kernel::services::usage
