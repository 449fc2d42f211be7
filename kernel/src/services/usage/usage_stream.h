// The usage stream: every usage record the kernel produces (one per data-plane request,
// plus what plugins emit) goes from the request thread, as its line of JSON, into a bounded
// in-memory queue; a writer thread gives each its event id and appends them as segments
// to the durable journal (usage_journal.h) at least
// every flush_interval, so a crash (kill -9) loses at most that much. Each subscribed
// system plugin gets its own delivery thread that reads the journal from the plugin's
// acknowledged cursor and hands it batches in journal order (so in order per tenant), at
// least once: an unacknowledged batch is delivered again after redeliver_after, after the
// plugin returns an error, or after a restart. The newest records also stay in memory, so a
// subscriber that keeps up is served without reading the journal back.
//
// An acknowledgement takes effect at once (nothing up to it is delivered again while the
// host runs); the writer saves the acknowledgements of each flush_interval together, in
// one transaction: after a crash, records acknowledged in that last interval may be
// delivered again, which at least once allows. Subscribers acknowledge every batch; a
// transaction and an fsync of their own per batch cost as much as the rest of the subscriber.
//
// Cursors are opaque to plugins: "u1.<seq>.<mac>", the MAC an HMAC-SHA256 over the
// journal, the subscriber and the position with a secret kept in the journal. A forged or
// altered cursor, another subscriber's, one already acknowledged (replayed) or one beyond
// what was delivered is refused (INVALID, with the reason).
//
// Retention: acknowledged records are pruned; unacknowledged ones are kept up to max_bytes
// and max_age. Past warn_fraction of either a subscriber's backlog is reported
// (trellis_usage_backlog_bytes / _age_seconds and a warning log) long before anything is
// dropped; a drop is counted (trellis_usage_dropped_records_total) and logged as an error.
//
//   auto stream = UsageStream::open(data_dir / "usage.db", options, metrics);
//   stream->record(record);   // hot path: the JSON line, then a lock and a push
//   stream->bind(plugin);                // plugin->usage_fn set in on_init
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "services/usage/usage_journal.h"
#include "services/usage/usage_record.h"
#include "trellis/kernel/config/config.h"
#include "trellis/plugin.h"
#include "trellis/status.hpp"

namespace trellis::kernel::metrics {
class MetricsRegistry;
class Counter;
template <class Child>
class Family;
class Gauge;
}  // namespace trellis::kernel::metrics
namespace trellis::kernel::runtime {
class PluginInstance;
}

namespace trellis::kernel::services::usage {

class UsageStream {
 public:
  static Result<std::unique_ptr<UsageStream>> open(const std::filesystem::path& file,
                                                   const config::UsageConfig& options,
                                                   metrics::MetricsRegistry& metrics);
  ~UsageStream();  // stop()
  UsageStream(const UsageStream&) = delete;
  UsageStream& operator=(const UsageStream&) = delete;

  // Queues the record as its line of JSON (the event id is assigned later, off the request
  // thread). Never blocks on disk; a full queue drops the record, counted and logged.
  void record(const UsageRecord& r);

  // Starts delivery to `p` (which set usage_fn in on_init) from its acknowledged cursor;
  // unbind() stops it, waiting for a batch in progress.
  void bind(runtime::PluginInstance& p);
  void unbind(runtime::PluginInstance& p);
  // Acknowledges everything up to `cursor` for subscriber `p`; durable within flush_interval.
  Status ack(const runtime::PluginInstance& p, std::string_view cursor);

  // Writes what is queued and stops the writer. Subscribers must be unbound first.
  void stop();

 private:
  struct Subscriber;
  // A record waiting for the writer: its time and its JSON line after the event id.
  struct Queued {
    int64_t time_ms = 0;
    std::string rest;
  };
  // A segment just made durable, kept in memory for subscribers that keep up.
  struct Recent {
    uint64_t first = 0;  // seq of its first record
    uint32_t count = 0;
    std::string text;
  };
  UsageStream(std::unique_ptr<UsageJournal> journal, const config::UsageConfig& options,
              metrics::MetricsRegistry& metrics);
  void writeLoop();
  void toSegments(std::deque<Queued>& taken, std::vector<Segment>& out) const;
  void keepRecent(std::vector<Segment>& written, uint64_t head);
  Status saveUnsavedAcks();
  bool takeRecent(uint64_t after, Lines& out) const;  // needs mu_
  void deliverLoop(Subscriber& s);
  void retain();
  std::string sign(const std::string& subscriber, uint64_t seq) const;
  Result<uint64_t> verify(const std::string& subscriber, std::string_view cursor) const;

  const std::unique_ptr<UsageJournal> journal_;
  const config::UsageConfig options_;
  metrics::MetricsRegistry& metrics_;
  metrics::Counter& dropped_queue_;
  metrics::Counter& dropped_retention_;
  metrics::Family<metrics::Counter>& refused_cursors_;
  metrics::Family<metrics::Gauge>& backlog_bytes_;
  metrics::Family<metrics::Gauge>& backlog_age_;
  metrics::Gauge& journal_bytes_;

  // The queue between request threads and the writer.
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Queued> queue_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point last_queue_warning_{};
  std::thread writer_;

  // Subscribers and the journal head they wait for.
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> head_{0};
  std::deque<Recent> recent_;  // the newest segments, consecutive, ending at head_
  size_t recent_records_ = 0;
  size_t recent_bytes_ = 0;
  std::map<std::string, std::unique_ptr<Subscriber>, std::less<>> subscribers_;
  Cursors unsaved_acks_;  // acknowledged, not yet in the journal: the writer saves them
  std::map<std::string, std::chrono::steady_clock::time_point> last_warning_;  // writer only
};

}  // namespace trellis::kernel::services::usage
