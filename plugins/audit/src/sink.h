// The audit sink: every tenant's log (and the system log) in memory, backed by the
// plugin's own system storage, with the checkpoint policy. The plugin object wires it to
// audit.v1 "write" and to the read routes; this class knows nothing of HTTP.
//
// Storage (the plugin's system KV scope, which no tenant sees):
//   key/ed25519.sealed     seed of the checkpoint signing key, sealed under the host's seal
//                          key (key_wrap, label "key/ed25519"); on a host without one:
//   key/ed25519            its hex seed (sealed and deleted at the first start with a seal key)
//   key/hmac-own.sealed    master of the own HMAC keys (hmac_keys.h), made at activation,
//                          sealed (label "key/hmac-own"); on a host without a seal key:
//   key/hmac-own           its hex master (likewise sealed later)
//   hmac/<log>             hex own HMAC key of a log from before key/hmac-own
//   hmacw/<log>/<n:010>    secrets key generation n of the log, wrapped by secrets.v1 (never
//                          the plain key)
//   rec/<log>/<seq:020>    one record line
//   blk/<log>/<seq:020>    the lines of records seq, seq+1, … written together (writeBatch)
//   cp/<log>/<size:020>    one checkpoint (JSON)
//   ret/<log>              the log's retention policy, if not the default (JSON)
//   purged/<log>           what a retention purge kept: through, chain head (JSON)
//   leaf/<log>/<seq:020>   the leaf hashes of purged records from seq on (hex, in chunks)
// where <log> is the tenant id, or "_system" for records about no tenant.
//
//   AuditSink sink(options);
//   if (Status s = sink.load(ctx); !s) return s;        // on_init
//   Status s = sink.write(ctx, record_json, now_ms);    // OK only once the line is stored
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/checkpoint_mirror.h"
#include "core/ed25519.h"
#include "core/retention.h"
#include "core/tenant_log.h"
#include "hmac_keys.h"
#include "trellis/plugin.hpp"

namespace trellis::audit {

struct SinkOptions {
  uint64_t checkpoint_every = 1000;              // records between checkpoints
  int64_t checkpoint_interval_ms = 60000;        // or this long, whichever comes first
  std::vector<std::string> sensitive;            // parameter member names HMAC'd
  int64_t default_keep_s = kDefaultKeepSeconds;  // retention of a log without its own
  int64_t min_keep_s = 30 * kDaySeconds;         // no log may keep its records for less
  std::optional<CheckpointMirror> mirror;        // the operator's second place for checkpoints
};

struct PurgeOutcome {
  uint64_t purged_through = 0;  // records 1..this are purged now
  uint64_t records = 0;         // how many this purge removed
  uint64_t recorded_as = 0;     // the seq of the record reporting it (0: nothing purged)
};

// The log name in storage and URLs: the tenant, or "_system".
std::string logName(std::string_view tenant);

class AuditSink {
 public:
  explicit AuditSink(SinkOptions options) : options_(std::move(options)) {}

  // Reads key, HMAC keys, records and checkpoints back; creates the key on first start.
  Status load(const Context& ctx);
  // Appends one record the kernel (or a plugin through it) sent. OK once durable.
  Result<std::string> write(const Context& ctx, std::string_view record_json, int64_t now_ms);
  // Appends records (JSON Lines) with one durable write per log and block: all of them,
  // or, on an error, a prefix of each log's (the caller sends the batch again).
  Result<std::string> writeBatch(const Context& ctx, std::string_view records_jsonl,
                                 int64_t now_ms);
  // Signs a checkpoint of `tenant`'s log now if it grew since the last one (force) or the
  // policy says so; stores it. Returns the newest checkpoint, if any.
  Result<std::optional<Checkpoint>> checkpoint(const Context& ctx, std::string_view tenant,
                                               int64_t now_ms, bool force);
  // The checkpoint timer (the plugin's `checkpoint-timer` job): signs every log whose oldest
  // unsigned record is at least checkpoint_interval_ms old, so that a tail followed by
  // silence is signed (and mirrored) without waiting for the log's next record or read.
  // Logs with nothing unsigned are left alone. Each log is signed under the lock, as an
  // append signs it; a log whose checkpoint is not stored is tried again at the next run.
  // Returns the logs signed; the first failure, after every due log had its turn.
  struct TimerRun {
    std::vector<std::string> signed_logs;  // log names
    Status first_failure = Status::ok();
  };
  TimerRun signOverdue(const Context& ctx, int64_t now_ms);

  // Reads, all under the sink's lock.
  std::string recordsJsonl(std::string_view tenant, uint64_t from_seq, uint64_t limit) const;
  // The records of `tenant`'s log from seq `from_seq` on, skipping purged ones: the seq of
  // the first line (`first`, from_seq or past it) and up to `limit` lines, "\n" after each.
  struct RecordRange {
    uint64_t first = 0;
    uint64_t count = 0;
    std::string lines;
  };
  RecordRange records(std::string_view tenant, uint64_t from_seq, uint64_t limit) const;
  std::string checkpointsJsonl(std::string_view tenant) const;
  Result<std::string> inclusionJson(std::string_view tenant, uint64_t seq,
                                    std::optional<uint64_t> size) const;
  Result<std::string> consistencyJson(std::string_view tenant, uint64_t from,
                                      std::optional<uint64_t> to) const;
  std::string logsJson() const;
  std::string publicPem() const;
  // Whether the plugin's own keys are sealed, for an operator or auditor to check:
  // {"keys_sealed", "reason", "key_id", "unsealed": [storage names stored as hex]}.
  std::string keysStatusJson() const;
  // The digest `value` has under the log's HMAC key `key_id` ("" = the current key), and
  // that key's id. NOT_FOUND / UNAVAILABLE as HmacKeyring::byId.
  struct Digest {
    std::string key_id;
    std::string digest;
  };
  Result<Digest> hmacOf(std::string_view tenant, std::string_view value,
                        std::string_view key_id = {});
  std::string hmacKeysJson(std::string_view tenant);

  // Provisioning of secrets-backed HMAC keys (hmac_provisioner.h), never on the append path.
  std::vector<KeyTask> keyTasks(int64_t now_ms) const;
  void keyFailed(std::string_view tenant, int64_t now_ms, int64_t retry_ms, std::string message);
  // Stores a new generation's wrapped key (absent-only) and opens it (true). If another host
  // stored that generation first, keeps theirs (wrapped) for the next pass to open, drops
  // `plain` (false).
  Result<bool> storeKey(const Context& ctx, std::string_view tenant, uint32_t generation,
                        std::string wrapped, std::string plain);
  void openKey(const Context& ctx, std::string_view tenant, uint32_t generation, std::string plain);

  // Retention (core/retention.h). Each change is itself a record in the log it concerns.
  std::string retentionJson(std::string_view tenant) const;
  Result<std::string> setRetention(const Context& ctx, std::string_view tenant, int64_t keep_s,
                                   int64_t now_ms);
  // Sets (a reason) or releases (nullopt) the log's legal hold.
  Result<std::string> setLegalHold(const Context& ctx, std::string_view tenant,
                                   std::optional<std::string> reason, int64_t now_ms);
  // Purges the sealed segments older than the log's retention. CONFLICT under legal hold.
  // `scheduled` marks the purge record as the plugin's own (the purge job's) doing.
  Result<PurgeOutcome> purge(const Context& ctx, std::string_view tenant, int64_t now_ms,
                             bool scheduled = false);
  // purged.json of an evidence pack: what the log keeps of its purged records.
  std::string purgedJson(std::string_view tenant) const;
  std::vector<std::string> logNames() const;
  uint64_t logSize(std::string_view tenant) const;  // records ever appended (0: no log)
  // The log's evidence pack as one tar archive (core/verify.h lists its files), taken
  // under the lock so that records, checkpoints and proofs agree.
  std::string evidencePack(std::string_view tenant, int64_t now_ms) const;

  // A record of the plugin's own about `tenant`'s log (rule changes): type, action and
  // parameters (a JSON object), the actor the ctx's principal. Returns its seq.
  Result<uint64_t> recordOwn(const Context& ctx, std::string_view tenant, std::string_view type,
                             std::string_view action, std::string parameters_json, int64_t now_ms);

  // Review rules (review_rules.h) see each record once it is durable: while observing,
  // every line stored waits here until takeAppended() hands it over, in log order. Off,
  // appends copy nothing.
  struct Appended {
    std::string tenant;
    std::string line;
  };
  void observe(bool on) { observe_.store(on, std::memory_order_relaxed); }
  std::vector<Appended> takeAppended();
  bool hasAppended() const;

 private:
  TenantLog& logOf(std::string_view tenant);
  const TenantLog* findLog(std::string_view tenant) const;
  // The key records of `tenant` are HMAC'd with now, and its id ("" without sensitive fields).
  HmacKeyring::Current hmacKey(std::string_view tenant);
  // The admin API's "POST /v1/tenants" request record: the new tenant wants its key.
  void noticeTenantCreation(const IncomingRecord& in);
  Status loadHmacKeys(const Context& ctx);
  // The plugin's own 32-byte secret `name` (also its seal label), read, or made with `make`
  // and stored: sealed (<name>.sealed) when the host has a seal key, else hex (<name>) with
  // keys_unsealed_ set. A hex one from before is sealed once the host can (sealed copy
  // written, then the hex deleted: a kill between the two leaves both, and the next start
  // finishes). A sealed one that does not open fails: a new key would fork the log.
  Result<std::string> ownSecret(const Context& ctx, std::string_view name, std::string_view what,
                                const std::function<Result<std::string>()>& make);
  // Opens a generation (lock held) and records the switch in the log.
  void useKey(const Context& ctx, std::string_view tenant, uint32_t generation, std::string plain);
  Status maybeCheckpoint(const Context& ctx, TenantLog& log, int64_t now_ms, bool force);
  // A durable write of `log` failed: storage may hold a line memory lacks (a commit whose
  // answer was lost). Before the log's next append, resync() reads such lines back.
  void markUnsure(const TenantLog& log) { unsure_.insert(logName(log.tenant())); }
  // Restores the lines stored past the log's end after a failed write, and records for each
  // that its writer was told "not stored" (an audit.sink record naming its seq). OK when the
  // log's memory and storage agree again; UNAVAILABLE (log still unsure) otherwise.
  Status resync(const Context& ctx, TenantLog& log, int64_t now_ms);
  // The seq of a line resync() found that `in` is the redelivery of (the kernel sends a record
  // it was told was not stored again, in degrade mode), or 0.
  uint64_t alreadyStored(const IncomingRecord& in);
  // write() with the lock held; returns the new record's seq.
  Result<uint64_t> append(const Context& ctx, const IncomingRecord& in, int64_t now_ms);
  // A record of the plugin's own about `tenant`'s log (retention changes, purges).
  Result<uint64_t> appendOwn(const Context& ctx, std::string_view tenant, std::string_view action,
                             std::string parameters_json, int64_t now_ms,
                             std::string_view type = "audit.retention");
  RetentionPolicy policyOf(std::string_view tenant) const;
  Status storePolicy(const Context& ctx, std::string_view tenant, const RetentionPolicy& p);
  // load(): the purged prefixes, before the records that follow them.
  Status loadPurged(const Kv& kv);
  Status loadRecords(const Kv& kv);
  // writeBatch() for one log, with the lock held.
  Status appendBlock(const Context& ctx, std::string_view tenant,
                     const std::vector<IncomingRecord>& records, int64_t now_ms);
  // Writes the purge record a crash left unwritten (purged/<log> with recorded_as 0).
  Status finishPurgeRecord(const Context& ctx, TenantLog& log, int64_t now_ms);
  // Steps 1-3 of a purge (sink.cc), with the lock held.
  Result<PurgeOutcome> purgeThrough(const Context& ctx, TenantLog& log,
                                    const RetentionPolicy& policy, uint64_t through, int64_t now_ms,
                                    bool scheduled);
  static PurgedPrefix purgedPrefixOf(const TenantLog& log);
  Status deletePurgedRecords(const Context& ctx, std::string_view tenant, uint64_t through);
  // Copies every checkpoint of `log` the mirror lacks; never fails the caller.
  void mirrorCheckpoints(const Context& ctx, const TenantLog& log);

  SinkOptions options_;
  mutable std::mutex mu_;
  std::unique_ptr<Ed25519Key> key_;
  std::map<std::string, TenantLog, std::less<>> logs_;
  HmacKeyring hmac_keys_;
  std::map<std::string, RetentionPolicy, std::less<>> policies_;  // logs with their own
  bool mirror_failing_ = false;  // warn once per outage, not once per record
  bool keys_unsealed_ = false;   // load(): the host has no seal key, own keys stored as hex
  std::vector<std::string> legacy_hex_keys_;             // load(): hmac/<log> keys from before 0.2
  std::map<std::string, size_t, std::less<>> mirrored_;  // per log: checkpoints mirrored
  std::set<std::string, std::less<>> unsure_;            // logs whose last durable write failed
  // Per log: lines resync() found stored although their write failed, by what the kernel's
  // redelivery of the same record would carry.
  struct Landed {
    int64_t kernel_seq = 0;
    std::string type, action, request_id;
    uint64_t seq = 0;
  };
  std::map<std::string, std::vector<Landed>, std::less<>> landed_;
  // Per log: seqs of such lines whose audit.record.stored_after_failure note is not stored yet.
  std::map<std::string, std::vector<uint64_t>, std::less<>> unnoted_;
  std::atomic<bool> observe_{false};
  std::vector<Appended> appended_;  // guarded by mu_; filled only while observing
};

}  // namespace trellis::audit
