#include "sink.h"

#include <Poco/JSON/Parser.h>
#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <utility>

#include "core/canonical_json.h"
#include "core/hash.h"
#include "core/tar.h"
#include "core/verify.h"

namespace trellis::audit {
namespace {

constexpr std::string_view kSigningKey = "key/ed25519";
constexpr std::string_view kHmacMaster = "key/hmac-own";

std::string padded(uint64_t n) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%020llu", static_cast<unsigned long long>(n));
  return buf;
}

std::string recordKey(std::string_view tenant, uint64_t seq) {
  return "rec/" + logName(tenant) + "/" + padded(seq);
}
std::string checkpointKey(std::string_view tenant, uint64_t size) {
  return "cp/" + logName(tenant) + "/" + padded(size);
}
std::string policyKey(std::string_view tenant) {
  return "ret/" + logName(tenant);
}
std::string purgedKey(std::string_view tenant) {
  return "purged/" + logName(tenant);
}
std::string blockKey(std::string_view tenant, uint64_t first_seq) {
  return "blk/" + logName(tenant) + "/" + padded(first_seq);
}
// A block of records is one KV value: at most about this much (the KV limit is 1 MiB and
// a record at most kMaxRecordBytes).
constexpr size_t kBlockBytes = 512 * 1024;
std::string wrappedKeyKey(std::string_view tenant, uint32_t generation) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%010u", generation);
  return "hmacw/" + logName(tenant) + "/" + buf;
}
std::string leafKey(std::string_view tenant, uint64_t first_seq) {
  return "leaf/" + logName(tenant) + "/" + padded(first_seq);
}
// Leaf hashes per stored chunk: 512 KiB of hex, half the KV value limit.
constexpr uint64_t kLeavesPerChunk = 8192;

// "<log>/<seq:020>" after a key's prefix: the log and the number.
std::pair<std::string_view, uint64_t> logAndNumber(std::string_view rest) {
  const auto slash = rest.rfind('/');
  uint64_t n = 0;
  if (slash != std::string_view::npos) {
    std::from_chars(rest.data() + slash + 1, rest.data() + rest.size(), n);
  }
  return {rest.substr(0, slash), n};
}

std::string tenantOfLog(std::string_view log) {
  return log == "_system" ? std::string() : std::string(log);
}

// Visits every entry under `prefix`, in key order, a page at a time.
Status listAll(const Kv& kv, std::string_view prefix,
               const std::function<Status(std::string_view, std::string_view)>& fn) {
  std::string after;
  for (;;) {
    size_t seen = 0;
    Status inner = Status::ok();
    Status s = kv.list(prefix, after, 1000, [&](std::string_view k, std::string_view v, uint64_t) {
      ++seen;
      after = std::string(k);
      inner = fn(k, v);
      return inner.isOk();
    });
    if (!s) return s;
    if (!inner) return inner;
    if (seen < 1000) return Status::ok();
  }
}

std::string hashes(const std::vector<Hash>& proof) {
  std::string out = "[";
  for (size_t i = 0; i < proof.size(); ++i) out += (i ? ",\"" : "\"") + toHex(proof[i]) + "\"";
  return out + "]";
}

}  // namespace

std::string logName(std::string_view tenant) {
  return tenant.empty() ? "_system" : std::string(tenant);
}

Result<std::string> AuditSink::ownSecret(const Context& ctx, std::string_view name,
                                         std::string_view what,
                                         const std::function<Result<std::string>()>& make) {
  const Kv kv = ctx.kv();
  const std::string sealed_name = std::string(name) + ".sealed";
  auto sealed = kv.get(sealed_name);
  if (!sealed && sealed.status().code() != StatusCode::kNotFound) return sealed.status();
  auto hex = kv.get(name);
  if (!hex && hex.status().code() != StatusCode::kNotFound) return hex.status();
  if (sealed) {
    auto raw = ctx.unwrapKey(name, sealed->value);
    if (!raw) {
      const StatusCode code = raw.status().code();
      const bool no_key = code == StatusCode::kUnavailable || code == StatusCode::kUnimplemented;
      return Status(code, "the " + std::string(what) + " is stored sealed (" + sealed_name +
                              ") and " +
                              (no_key ? "this host cannot open it: " : "does not open: ") +
                              raw.status().message() +
                              ". Set server.seal_key_file to the seal key file it was sealed "
                              "with; no new key is made, it would fork the log's " +
                              (name == kSigningKey ? "signatures" : "HMACs"));
    }
    if (raw->size() != 32) {
      wipe(*raw);
      return Status::internal("the sealed " + std::string(what) + " (" + sealed_name +
                              ") is not 32 bytes");
    }
    if (hex) {
      // A start killed between sealing and deleting the hex copy: finish it.
      wipe(hex->value);
      Status removed = kv.remove(name);
      if (!removed && removed.code() != StatusCode::kNotFound) return removed;
    }
    return std::move(*raw);
  }
  std::string raw;
  if (hex) {
    auto bytes = fromHex(hex->value);
    wipe(hex->value);
    if (!bytes || bytes->size() != 32) {
      return Status::internal("the stored " + std::string(what) + " (" + std::string(name) +
                              ") is damaged");
    }
    raw = std::move(*bytes);
  } else {
    auto made = make();
    if (!made) return made.status();
    raw = std::move(*made);
  }
  auto wrapped = ctx.wrapKey(name, raw);
  if (!wrapped) {
    const StatusCode code = wrapped.status().code();
    if (code != StatusCode::kUnavailable && code != StatusCode::kUnimplemented) {
      wipe(raw);
      return Status(code,
                    "cannot seal the " + std::string(what) + ": " + wrapped.status().message());
    }
    // No seal key on this host: stored as hex, as before the seal service (load() warns).
    keys_unsealed_ = true;
    if (hex) return raw;
    std::string text = toHex(raw);
    auto put = kv.put(name, text, TRELLIS_KV_ABSENT);
    wipe(text);
    if (put) return raw;
    wipe(raw);
    if (put.status().code() != StatusCode::kConflict) return put.status();
    return ownSecret(ctx, name, what, make);  // another host made it first: theirs
  }
  // Sealed copy first, hex deleted after: a kill between the two leaves both, never none.
  auto put = kv.put(sealed_name, *wrapped, TRELLIS_KV_ABSENT);
  if (!put) {
    wipe(raw);
    if (put.status().code() != StatusCode::kConflict) return put.status();
    return ownSecret(ctx, name, what, make);  // another host sealed it first: theirs
  }
  if (hex) {
    Status removed = kv.remove(name);
    if (!removed && removed.code() != StatusCode::kNotFound) return removed;
    ctx.info("audit: sealed the " + std::string(what) + " (" + sealed_name +
             ") and deleted its unsealed copy");
  }
  return raw;
}

Status AuditSink::load(const Context& ctx) {
  std::lock_guard lock(mu_);
  const Kv kv = ctx.kv();
  keys_unsealed_ = false;
  bool created = false;
  auto seed = ownSecret(ctx, kSigningKey, "checkpoint signing key", [&]() -> Result<std::string> {
    auto key = Ed25519Key::generate();
    if (!key) return key.status();
    created = true;
    return key->privateSeed();
  });
  if (!seed) return seed.status();
  auto key = Ed25519Key::fromSeed(*seed);
  wipe(*seed);
  if (!key) return Status::internal("the stored checkpoint signing key is damaged");
  key_ = std::make_unique<Ed25519Key>(std::move(key).value());
  if (created) ctx.info("audit: created the checkpoint signing key " + keyId(key_->publicKey()));
  if (Status s = loadHmacKeys(ctx); !s) return s;
  if (keys_unsealed_) {
    ctx.warn(
        "audit: the checkpoint signing key and the own HMAC master key are stored unsealed "
        "(hex in the plugin's storage): whoever reads the database can forge checkpoints and "
        "compute the HMACs of sensitive fields. Set server.seal_key_file (docs/operations.md, "
        "\"The seal key\") and restart: the keys are then sealed and the hex copies deleted");
  }
  if (Status s = listAll(kv, "ret/",
                         [&](std::string_view k, std::string_view v) {
                           auto p = RetentionPolicy::fromJson(v);
                           if (!p)
                             return Status::internal(std::string(k) + ": " + p.status().message());
                           policies_[tenantOfLog(k.substr(4))] = *p;
                           return Status::ok();
                         });
      !s) {
    return s;
  }
  if (Status s = loadPurged(kv); !s) return s;
  if (Status s = loadRecords(kv); !s) return s;
  // Every tenant with a log wants its secrets-backed key (made, or opened, off this path).
  for (const auto& [tenant, log] : logs_) hmac_keys_.want(tenant);
  if (Status s = listAll(kv, "cp/",
                         [&](std::string_view k, std::string_view v) {
                           const auto slash = k.find('/', 3);
                           auto cp = Checkpoint::fromJson(v);
                           if (!cp) return cp.status();
                           logOf(tenantOfLog(k.substr(3, slash - 3))).restoreCheckpoint(*cp);
                           return Status::ok();
                         });
      !s) {
    return s;
  }
  uint64_t records = 0;
  for (auto& [name, log] : logs_) {
    records += log.size();
    if (Status s = finishPurgeRecord(ctx, log, static_cast<int64_t>(ctx.nowUnixMs())); !s) return s;
    mirrorCheckpoints(ctx, log);  // catch up what a mirror outage or a crash left out
  }
  ctx.info("audit: loaded " + std::to_string(records) + " records in " +
           std::to_string(logs_.size()) + " logs");
  return Status::ok();
}

TenantLog& AuditSink::logOf(std::string_view tenant) {
  auto it = logs_.find(tenant);
  if (it == logs_.end())
    it = logs_.emplace(std::string(tenant), TenantLog(std::string(tenant))).first;
  return it->second;
}

const TenantLog* AuditSink::findLog(std::string_view tenant) const {
  auto it = logs_.find(tenant);
  return it == logs_.end() ? nullptr : &it->second;
}

Status AuditSink::loadHmacKeys(const Context& ctx) {
  const Kv kv = ctx.kv();
  // Made at activation, so that no append ever has to write a key.
  auto master = ownSecret(ctx, kHmacMaster, "own HMAC master key", []() -> Result<std::string> {
    std::string raw(32, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), 32) != 1) {
      return Status::internal("no randomness for the own HMAC master key");
    }
    return raw;
  });
  if (!master) return master.status();
  hmac_keys_.setMaster(std::move(*master));
  legacy_hex_keys_.clear();
  if (Status s = listAll(kv, "hmac/",
                         [&](std::string_view k, std::string_view v) {
                           auto own = fromHex(v);
                           if (!own) return Status::internal("damaged HMAC key " + std::string(k));
                           legacy_hex_keys_.emplace_back(k);
                           hmac_keys_.setOwn(tenantOfLog(k.substr(5)), std::move(*own));
                           return Status::ok();
                         });
      !s) {
    return s;
  }
  return listAll(kv, "hmacw/", [&](std::string_view k, std::string_view v) {
    auto [log_name, generation] = logAndNumber(k.substr(6));
    if (generation == 0 || generation > UINT32_MAX) {
      return Status::internal("damaged wrapped HMAC key name " + std::string(k));
    }
    hmac_keys_.addWrapped(tenantOfLog(log_name), static_cast<uint32_t>(generation), std::string(v));
    return Status::ok();
  });
}

HmacKeyring::Current AuditSink::hmacKey(std::string_view tenant) {
  HmacKeyring::Current key = hmac_keys_.current(tenant);
  if (options_.sensitive.empty()) key.id = {};  // nothing is HMAC'd: no key to name
  return key;
}

void AuditSink::noticeTenantCreation(const IncomingRecord& in) {
  // Most system records stop at the first comparison; only this one is parsed again. (The
  // kernel's own records always take the one-pass reading: in.object stays null.)
  if (in.action != "POST /v1/tenants" || in.type != "admin.request" || in.parameters.empty()) {
    return;
  }
  try {
    auto parameters = Poco::JSON::Parser().parse(in.parameters).extract<Poco::JSON::Object::Ptr>();
    if (parameters->has("id") && parameters->get("id").isString()) {
      hmac_keys_.want(parameters->getValue<std::string>("id"));
    }
  } catch (const Poco::Exception&) {
    // Not the shape the admin API records: nothing to notice.
  }
}

Result<std::string> AuditSink::write(const Context& ctx, std::string_view record_json,
                                     int64_t now_ms) {
  auto in = IncomingRecord::parse(record_json);
  if (!in) return in.status();
  std::lock_guard lock(mu_);
  auto seq = append(ctx, *in, now_ms);
  if (!seq) return seq.status();
  return "{\"log\":\"" + logName(in->tenant) + "\",\"seq\":" + std::to_string(*seq) + "}";
}

Status AuditSink::resync(const Context& ctx, TenantLog& log, int64_t now_ms) {
  if (unsure_.empty() && unnoted_.empty()) return Status::ok();  // every append: no lookup
  const std::string name = logName(log.tenant());
  auto unsure = unsure_.find(name);
  if (unsure == unsure_.end()) {
    auto notes = unnoted_.find(name);
    if (notes == unnoted_.end() || notes->second.empty()) return Status::ok();
    unsure = unsure_.insert(name).first;  // nothing more to read back; the notes follow
  }
  const Kv kv = ctx.kv();
  std::vector<uint64_t> found;  // seqs stored although their writer was told otherwise
  for (;;) {
    const uint64_t next = log.size() + 1;
    auto value = kv.get(recordKey(log.tenant(), next));
    if (!value && value.status().code() == StatusCode::kNotFound) {
      value = kv.get(blockKey(log.tenant(), next));
    }
    if (!value && value.status().code() == StatusCode::kNotFound) break;
    if (!value) {
      return Status::unavailable(
          "log " + name + " cannot be read back after a failed write: " + value.status().message());
    }
    for (size_t start = 0; start <= value->value.size();) {
      size_t end = value->value.find('\n', start);
      if (end == std::string::npos) end = value->value.size();
      std::string line = value->value.substr(start, end - start);
      start = end + 1;
      Landed landed;
      try {
        auto o = Poco::JSON::Parser().parse(line).extract<Poco::JSON::Object::Ptr>();
        landed = {o->optValue<int64_t>("kernel_seq", 0), o->optValue<std::string>("type", ""),
                  o->optValue<std::string>("action", ""),
                  o->optValue<std::string>("request_id", ""), log.size() + 1};
      } catch (const Poco::Exception&) {
        // restore() below names the problem.
      }
      if (Status s = log.restore(std::move(line)); !s) return s;
      if (observe_.load(std::memory_order_relaxed)) {
        appended_.push_back({log.tenant(), log.line(log.size() - 1)});
      }
      found.push_back(log.size());
      if (landed.kernel_seq != 0) landed_[name].push_back(std::move(landed));
    }
  }
  unsure_.erase(unsure);
  std::vector<uint64_t>& notes = unnoted_[name];
  notes.insert(notes.end(), found.begin(), found.end());
  // Taken out first: the note's own append comes back through here.
  std::vector<uint64_t> pending = std::exchange(notes, {});
  for (size_t i = 0; i < pending.size(); ++i) {
    const uint64_t seq = pending[i];
    auto noted = appendOwn(ctx, log.tenant(), "audit.record.stored_after_failure",
                           "{\"seq\":" + std::to_string(seq) + "}", now_ms, "audit.sink");
    if (!noted) {
      std::vector<uint64_t>& left = unnoted_[name];
      left.insert(left.begin(), pending.begin() + static_cast<std::ptrdiff_t>(i), pending.end());
      return noted.status();
    }
    ctx.warn("audit: record " + std::to_string(seq) + " of log " + name +
             " was stored although its write reported a failure (the answer was lost): it is "
             "kept, and record " +
             std::to_string(*noted) + " says so");
  }
  unnoted_.erase(name);
  return Status::ok();
}

uint64_t AuditSink::alreadyStored(const IncomingRecord& in) {
  if (in.kernel_seq == 0) return 0;
  auto it = landed_.find(logName(in.tenant));
  if (it == landed_.end()) return 0;
  auto& landed = it->second;
  for (auto l = landed.begin(); l != landed.end(); ++l) {
    if (l->kernel_seq == in.kernel_seq && l->type == in.type && l->action == in.action &&
        l->request_id == in.request_id) {
      const uint64_t seq = l->seq;
      landed.erase(l);
      if (landed.empty()) landed_.erase(it);
      return seq;
    }
  }
  return 0;
}

Result<uint64_t> AuditSink::append(const Context& ctx, const IncomingRecord& in, int64_t now_ms) {
  if (in.tenant.empty()) noticeTenantCreation(in);
  TenantLog& log = logOf(in.tenant);
  if (Status s = resync(ctx, log, now_ms); !s) {
    return Status::unavailable("record not stored: " + s.message());
  }
  // The kernel sending again a record that did land: the truth is the stored one.
  if (const uint64_t seq = alreadyStored(in)) return seq;
  const HmacKeyring::Current key = hmacKey(in.tenant);
  std::string line = log.prepare(in, now_ms, key.key, options_.sensitive, key.id);
  // Absent-only: a record number is never written twice, whatever happens in between.
  const uint64_t seq = log.size() + 1;
  auto put = ctx.kv().put(recordKey(in.tenant, seq), line, TRELLIS_KV_ABSENT);
  if (!put) {
    markUnsure(log);
    return Status::unavailable("record not stored: " + put.status().message());
  }
  if (observe_.load(std::memory_order_relaxed)) appended_.push_back({in.tenant, line});
  log.commit(std::move(line));
  if (Status s = maybeCheckpoint(ctx, log, now_ms, false); !s) {
    // The record is stored; the checkpoint comes with the next record or read.
    ctx.warn("audit: checkpoint of " + logName(in.tenant) + " not stored: " + s.message());
  }
  return seq;
}

Result<std::string> AuditSink::writeBatch(const Context& ctx, std::string_view records_jsonl,
                                          int64_t now_ms) {
  // Parsed first, all of them: a bad line refuses the batch before anything is stored.
  std::map<std::string, std::vector<IncomingRecord>, std::less<>> by_log;
  size_t line_no = 0, count = 0;
  for (size_t start = 0; start < records_jsonl.size();) {
    size_t end = records_jsonl.find('\n', start);
    if (end == std::string_view::npos) end = records_jsonl.size();
    const auto text = records_jsonl.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (text.empty()) continue;
    auto in = IncomingRecord::parse(text);
    if (!in)
      return Status::invalid("line " + std::to_string(line_no) + ": " + in.status().message());
    by_log[in->tenant].push_back(std::move(*in));
    ++count;
  }
  std::lock_guard lock(mu_);
  for (const auto& [tenant, records] : by_log) {
    if (Status s = appendBlock(ctx, tenant, records, now_ms); !s) return s;
  }
  return "{\"records\":" + std::to_string(count) + "}";
}

Status AuditSink::appendBlock(const Context& ctx, std::string_view tenant,
                              const std::vector<IncomingRecord>& records, int64_t now_ms) {
  TenantLog& log = logOf(tenant);
  if (Status s = resync(ctx, log, now_ms); !s) {
    return Status::unavailable("records of log " + logName(tenant) + " not stored: " + s.message());
  }
  const HmacKeyring::Current key = hmacKey(tenant);
  // Lines are chained in memory as they are made, and stored a block at a time (one
  // durable write per block); a block that is not stored is rolled back, with what follows.
  const bool observing = observe_.load(std::memory_order_relaxed);
  size_t next = 0;
  while (next < records.size()) {
    const uint64_t first = log.size() + 1;
    const size_t block_start = next;
    std::string block;
    for (; next < records.size() && block.size() < kBlockBytes; ++next) {
      std::string line = log.prepare(records[next], now_ms, key.key, options_.sensitive, key.id);
      if (!block.empty()) block += '\n';
      block += line;
      log.commit(std::move(line));
    }
    auto put = ctx.kv().put(blockKey(tenant, first), block, TRELLIS_KV_ABSENT);
    if (!put) {
      log.rollback(first - 1);
      markUnsure(log);
      return Status::unavailable("records " + std::to_string(first) + ".. of log " +
                                 logName(tenant) + " not stored: " + put.status().message());
    }
    if (observing) {
      for (size_t i = block_start; i < next; ++i) {
        appended_.push_back({std::string(tenant), log.line(first - 1 + (i - block_start))});
      }
    }
  }
  if (Status s = maybeCheckpoint(ctx, log, now_ms, false); !s) {
    ctx.warn("audit: checkpoint of " + logName(tenant) + " not stored: " + s.message());
  }
  return Status::ok();
}

Status AuditSink::loadRecords(const Kv& kv) {
  // Single records (rec/) and blocks (blk/) of each log, merged by first seq.
  std::map<std::pair<std::string, uint64_t>, std::string> stored;
  for (std::string_view prefix : {"rec/", "blk/"}) {
    if (Status s = listAll(kv, prefix,
                           [&](std::string_view k, std::string_view v) {
                             auto [log_name, first] = logAndNumber(k.substr(4));
                             stored.emplace(std::pair{tenantOfLog(log_name), first}, v);
                             return Status::ok();
                           });
        !s) {
      return s;
    }
  }
  for (auto& [at, value] : stored) {
    TenantLog& log = logOf(at.first);
    uint64_t seq = at.second;
    for (size_t start = 0; start <= value.size(); ++seq) {
      size_t end = value.find('\n', start);
      if (end == std::string::npos) end = value.size();
      // Lines a purge that stopped before its deletes left behind are not the log's.
      if (seq > log.purged()) {
        if (Status s = log.restore(value.substr(start, end - start)); !s) return s;
      }
      start = end + 1;
    }
  }
  return Status::ok();
}

Result<uint64_t> AuditSink::recordOwn(const Context& ctx, std::string_view tenant,
                                      std::string_view type, std::string_view action,
                                      std::string parameters_json, int64_t now_ms) {
  std::lock_guard lock(mu_);
  return appendOwn(ctx, tenant, action, std::move(parameters_json), now_ms, type);
}

std::vector<AuditSink::Appended> AuditSink::takeAppended() {
  std::lock_guard lock(mu_);
  return std::exchange(appended_, {});
}

bool AuditSink::hasAppended() const {
  std::lock_guard lock(mu_);
  return !appended_.empty();
}

Result<uint64_t> AuditSink::appendOwn(const Context& ctx, std::string_view tenant,
                                      std::string_view action, std::string parameters_json,
                                      int64_t now_ms, std::string_view type) {
  std::string json = "{\"type\":";
  appendJsonString(json, type);
  json += ",\"action\":";
  appendJsonString(json, action);
  json += ",\"tenant\":";
  appendJsonString(json, tenant);
  json += ",\"resource\":";
  appendJsonString(json, "audit/logs/" + logName(tenant));
  json += ",\"outcome\":\"success\",\"actor\":{\"name\":";
  appendJsonString(json, ctx.principal().empty() ? "trellis/audit" : ctx.principal());
  json += ",\"principal\":";
  appendJsonString(json, ctx.principal());
  json += "},\"parameters\":" + parameters_json + "}";
  auto in = IncomingRecord::parse(json);
  if (!in) return in.status();
  return append(ctx, *in, now_ms);
}

Status AuditSink::maybeCheckpoint(const Context& ctx, TenantLog& log, int64_t now_ms, bool force) {
  const uint64_t signed_size = log.checkpointedSize();
  if (log.size() == 0 || log.size() == signed_size) return Status::ok();
  const int64_t last = log.checkpoints().empty() ? 0 : log.checkpoints().back().time_ms;
  const bool due = force || log.size() - signed_size >= options_.checkpoint_every ||
                   now_ms - last >= options_.checkpoint_interval_ms;
  if (!due) return Status::ok();
  Checkpoint cp = log.makeCheckpoint(*key_, now_ms);
  auto put =
      ctx.kv().put(checkpointKey(log.tenant(), cp.size), cp.toJson(), TRELLIS_KV_ANY_VERSION);
  if (!put) return put.status();
  log.restoreCheckpoint(std::move(cp));
  mirrorCheckpoints(ctx, log);
  return Status::ok();
}

void AuditSink::mirrorCheckpoints(const Context& ctx, const TenantLog& log) {
  if (!options_.mirror) return;
  const CheckpointMirror& mirror = *options_.mirror;
  const std::string name = logName(log.tenant());
  // Each checkpoint's file is written or compared once per process; a failure stops here and
  // the next call resumes from the same checkpoint.
  size_t& done = mirrored_[name];
  const auto& cps = log.checkpoints();
  for (; done < cps.size(); ++done) {
    Status s = mirror.write(name, cps[done].size, cps[done].toJson());
    if (s.code() == StatusCode::kConflict) {
      ctx.error("audit: " + s.message());  // evidence, left in place
    } else if (!s) {
      if (!mirror_failing_) {
        ctx.warn("audit: checkpoint mirror " + mirror.dir() + " not written (" + s.message() +
                 "); retrying at each checkpoint");
      }
      mirror_failing_ = true;
      return;
    }
  }
  if (mirror_failing_) ctx.info("audit: checkpoint mirror " + mirror.dir() + " caught up");
  mirror_failing_ = false;
}

Result<std::optional<Checkpoint>> AuditSink::checkpoint(const Context& ctx, std::string_view tenant,
                                                        int64_t now_ms, bool force) {
  std::lock_guard lock(mu_);
  auto it = logs_.find(tenant);
  if (it == logs_.end()) return std::optional<Checkpoint>();
  if (Status s = maybeCheckpoint(ctx, it->second, now_ms, force); !s) return s;
  if (it->second.checkpoints().empty()) return std::optional<Checkpoint>();
  return std::optional<Checkpoint>(it->second.checkpoints().back());
}

AuditSink::TimerRun AuditSink::signOverdue(const Context& ctx, int64_t now_ms) {
  auto overdue = [&](const TenantLog& log) {
    const auto since = log.unsignedSinceMs();
    return since && now_ms - *since >= options_.checkpoint_interval_ms;
  };
  // The due logs are found in one pass and signed one lock at a time, so that appends to
  // other logs wait for one signature, never for the whole run.
  std::vector<std::string> due;
  {
    std::lock_guard lock(mu_);
    for (const auto& [tenant, log] : logs_) {
      if (overdue(log)) due.push_back(tenant);
    }
  }
  TimerRun run;
  for (const std::string& tenant : due) {
    std::lock_guard lock(mu_);
    auto it = logs_.find(tenant);
    // An append or a read may have signed it in between: then nothing is due any more.
    if (it == logs_.end() || !overdue(it->second)) continue;
    if (Status s = maybeCheckpoint(ctx, it->second, now_ms, /*force=*/true); !s) {
      if (run.first_failure) run.first_failure = s;
      ctx.warn("audit: checkpoint of " + logName(tenant) + " not stored: " + s.message());
      continue;
    }
    run.signed_logs.push_back(logName(tenant));
  }
  return run;
}

std::string AuditSink::recordsJsonl(std::string_view tenant, uint64_t from_seq,
                                    uint64_t limit) const {
  return records(tenant, from_seq, limit).lines;
}

AuditSink::RecordRange AuditSink::records(std::string_view tenant, uint64_t from_seq,
                                          uint64_t limit) const {
  std::lock_guard lock(mu_);
  RecordRange out;
  const TenantLog* log = findLog(tenant);
  if (!log) return out;
  const uint64_t first = std::max<uint64_t>(from_seq == 0 ? 0 : from_seq - 1, log->purged());
  out.first = first + 1;
  for (uint64_t i = first; i < log->size() && out.count < limit; ++i, ++out.count) {
    out.lines += log->line(i);
    out.lines += '\n';
  }
  return out;
}

std::string AuditSink::checkpointsJsonl(std::string_view tenant) const {
  std::lock_guard lock(mu_);
  std::string out;
  if (const TenantLog* log = findLog(tenant)) {
    for (const auto& cp : log->checkpoints()) out += cp.toJson() + "\n";
  }
  return out;
}

Result<std::string> AuditSink::inclusionJson(std::string_view tenant, uint64_t seq,
                                             std::optional<uint64_t> size) const {
  std::lock_guard lock(mu_);
  const TenantLog* log = findLog(tenant);
  if (!log || seq == 0 || seq > log->size()) {
    return Status::notFound("no record " + std::to_string(seq) + " in log " + logName(tenant));
  }
  const uint64_t n = size.value_or(log->checkpointedSize());
  if (n == 0) return Status::conflict("no checkpoint covers the log yet; pass size=");
  auto proof = log->tree().inclusionProof(seq - 1, n);
  if (!proof) return proof.status();
  std::string cp = "null";
  for (const auto& c : log->checkpoints()) {
    if (c.size == n) cp = c.toJson();
  }
  return "{\"log\":\"" + logName(tenant) + "\",\"seq\":" + std::to_string(seq) +
         ",\"leaf_index\":" + std::to_string(seq - 1) + ",\"tree_size\":" + std::to_string(n) +
         ",\"leaf_hash\":\"" + toHex(log->tree().leaf(seq - 1)) + "\",\"root\":\"" +
         toHex(*log->tree().root(n)) + "\",\"proof\":" + hashes(*proof) + ",\"checkpoint\":" + cp +
         "}";
}

Result<std::string> AuditSink::consistencyJson(std::string_view tenant, uint64_t from,
                                               std::optional<uint64_t> to) const {
  std::lock_guard lock(mu_);
  const TenantLog* log = findLog(tenant);
  if (!log) return Status::notFound("no log " + logName(tenant));
  const uint64_t n = to.value_or(log->checkpointedSize());
  auto proof = log->tree().consistencyProof(from, n);
  if (!proof) return proof.status();
  return "{\"log\":\"" + logName(tenant) + "\",\"from\":" + std::to_string(from) +
         ",\"to\":" + std::to_string(n) + ",\"from_root\":\"" + toHex(*log->tree().root(from)) +
         "\",\"to_root\":\"" + toHex(*log->tree().root(n)) + "\",\"proof\":" + hashes(*proof) + "}";
}

std::string AuditSink::logsJson() const {
  std::lock_guard lock(mu_);
  std::string out = "{\"key_id\":\"" + keyId(key_->publicKey()) + "\",\"logs\":[";
  bool first = true;
  for (const auto& [tenant, log] : logs_) {
    out += first ? "" : ",";
    first = false;
    out += "{\"log\":";
    appendJsonString(out, logName(tenant));
    out += ",\"size\":" + std::to_string(log.size()) +
           ",\"checkpointed_size\":" + std::to_string(log.checkpointedSize()) +
           ",\"purged_through\":" + std::to_string(log.purged()) + "}";
  }
  return out + "]}";
}

std::string AuditSink::keysStatusJson() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> unsealed;
  if (keys_unsealed_) {
    unsealed = {std::string(kSigningKey), std::string(kHmacMaster)};
  }
  unsealed.insert(unsealed.end(), legacy_hex_keys_.begin(), legacy_hex_keys_.end());
  std::string reason;
  if (keys_unsealed_) {
    reason =
        "this host has no seal key (server.seal_key_file): the checkpoint signing key and the "
        "own HMAC master key are stored as hex in the plugin's storage";
  } else {
    reason =
        "the checkpoint signing key and the own HMAC master key are sealed under this host's "
        "seal key (server.seal_key_file)";
  }
  if (!legacy_hex_keys_.empty()) {
    reason += "; " + std::to_string(legacy_hex_keys_.size()) +
              " own HMAC key(s) of logs from before 0.2 (hmac/<log>) are stored as hex";
  }
  std::string out = "{\"keys_sealed\":";
  out += unsealed.empty() ? "true" : "false";
  out += ",\"reason\":";
  appendJsonString(out, reason);
  out += ",\"key_id\":\"" + keyId(key_->publicKey()) + "\",\"unsealed\":[";
  for (size_t i = 0; i < unsealed.size(); ++i) {
    if (i > 0) out += ",";
    appendJsonString(out, unsealed[i]);
  }
  return out + "]}";
}

std::string AuditSink::publicPem() const {
  std::lock_guard lock(mu_);
  return key_->publicPem();
}

Result<AuditSink::Digest> AuditSink::hmacOf(std::string_view tenant, std::string_view value,
                                            std::string_view key_id) {
  std::lock_guard lock(mu_);
  HmacKeyring::Current key = hmac_keys_.current(tenant);
  if (!key_id.empty()) {
    auto found = hmac_keys_.byId(tenant, key_id);
    if (!found) return found.status();
    key = *found;
  }
  return Digest{std::string(key.id), sensitiveDigest(key.key, value)};
}

std::string AuditSink::hmacKeysJson(std::string_view tenant) {
  std::lock_guard lock(mu_);
  return hmac_keys_.keysJson(tenant);
}

std::vector<KeyTask> AuditSink::keyTasks(int64_t now_ms) const {
  std::lock_guard lock(mu_);
  return hmac_keys_.due(now_ms);
}

void AuditSink::keyFailed(std::string_view tenant, int64_t now_ms, int64_t retry_ms,
                          std::string message) {
  std::lock_guard lock(mu_);
  hmac_keys_.failed(tenant, now_ms, retry_ms, std::move(message));
}

Result<bool> AuditSink::storeKey(const Context& ctx, std::string_view tenant, uint32_t generation,
                                 std::string wrapped, std::string plain) {
  std::lock_guard lock(mu_);
  const Kv kv = ctx.kv();
  const std::string name = wrappedKeyKey(tenant, generation);
  auto put = kv.put(name, wrapped, TRELLIS_KV_ABSENT);
  if (!put) {
    wipe(plain);
    if (put.status().code() != StatusCode::kConflict) return put.status();
    auto stored = kv.get(name);  // another host's: opened by the next pass
    if (!stored) return stored.status();
    hmac_keys_.addWrapped(tenant, generation, std::move(stored->value));
    return false;
  }
  hmac_keys_.addWrapped(tenant, generation, std::move(wrapped));
  useKey(ctx, tenant, generation, std::move(plain));
  return true;
}

void AuditSink::openKey(const Context& ctx, std::string_view tenant, uint32_t generation,
                        std::string plain) {
  std::lock_guard lock(mu_);
  useKey(ctx, tenant, generation, std::move(plain));
}

void AuditSink::useKey(const Context& ctx, std::string_view tenant, uint32_t generation,
                       std::string plain) {
  hmac_keys_.open(tenant, generation, std::move(plain));
  // The switch is a record of the log: what follows it names the new key.
  const int64_t now_ms = static_cast<int64_t>(ctx.nowUnixMs());
  auto seq = appendOwn(ctx, tenant, "audit.hmac_key.use",
                       "{\"key\":\"" + HmacKeyring::secretsId(generation) + "\"}", now_ms,
                       "audit.hmac_key");
  if (!seq)
    ctx.warn("audit: the HMAC key switch of log " + logName(tenant) +
             " is not recorded: " + seq.status().message());
}

Status AuditSink::loadPurged(const Kv& kv) {
  std::map<std::string, PurgedPrefix, std::less<>> prefixes;
  if (Status s = listAll(kv, "purged/",
                         [&](std::string_view k, std::string_view v) {
                           auto p = PurgedPrefix::fromJson(v, false);
                           if (!p)
                             return Status::internal(std::string(k) + ": " + p.status().message());
                           prefixes[tenantOfLog(k.substr(7))] = *p;
                           return Status::ok();
                         });
      !s) {
    return s;
  }
  if (prefixes.empty()) return Status::ok();
  if (Status s = listAll(kv, "leaf/",
                         [&](std::string_view k, std::string_view v) {
                           auto [log_name, first] = logAndNumber(k.substr(5));
                           auto it = prefixes.find(tenantOfLog(log_name));
                           // Chunks past the prefix: a purge that stopped before its commit.
                           if (it == prefixes.end() || first > it->second.through) {
                             return Status::ok();
                           }
                           auto leaves = leavesFromHex(v);
                           if (!leaves || first != it->second.leaves.size() + 1) {
                             return Status::internal("damaged leaf hashes " + std::string(k));
                           }
                           auto& kept = it->second.leaves;
                           const size_t take =
                               std::min<uint64_t>(leaves->size(), it->second.through - kept.size());
                           kept.insert(kept.end(), leaves->begin(), leaves->begin() + take);
                           return Status::ok();
                         });
      !s) {
    return s;
  }
  for (auto& [tenant, prefix] : prefixes) {
    if (Status s = logOf(tenant).restorePurged(prefix); !s) return Status::internal(s.message());
  }
  return Status::ok();
}

Status AuditSink::finishPurgeRecord(const Context& ctx, TenantLog& log, int64_t now_ms) {
  if (log.purged() == 0) return Status::ok();
  const Kv kv = ctx.kv();
  auto stored = kv.get(purgedKey(log.tenant()));
  if (!stored) return stored.status();
  auto prefix = PurgedPrefix::fromJson(stored->value, false);
  if (!prefix) return prefix.status();
  if (prefix->recorded_as != 0) return Status::ok();
  auto seq = appendOwn(
      ctx, log.tenant(), "audit.purge",
      "{\"purged_through\":" + std::to_string(prefix->through) + ",\"recovered\":true}", now_ms);
  if (!seq) return seq.status();
  prefix->recorded_as = *seq;
  auto put = kv.put(purgedKey(log.tenant()), prefix->baseJson(), TRELLIS_KV_ANY_VERSION);
  if (!put) return put.status();
  return maybeCheckpoint(ctx, log, now_ms, true);
}

RetentionPolicy AuditSink::policyOf(std::string_view tenant) const {
  if (auto it = policies_.find(tenant); it != policies_.end()) return it->second;
  RetentionPolicy p;
  p.keep_s = options_.default_keep_s;
  return p;
}

Status AuditSink::storePolicy(const Context& ctx, std::string_view tenant,
                              const RetentionPolicy& p) {
  auto put = ctx.kv().put(policyKey(tenant), p.toJson(), TRELLIS_KV_ANY_VERSION);
  if (!put) return Status::unavailable("retention not stored: " + put.status().message());
  policies_[std::string(tenant)] = p;
  return Status::ok();
}

std::string AuditSink::retentionJson(std::string_view tenant) const {
  std::lock_guard lock(mu_);
  const RetentionPolicy p = policyOf(tenant);
  const TenantLog* log = findLog(tenant);
  std::string out = "{\"log\":";
  appendJsonString(out, logName(tenant));
  out += ",\"keep\":\"" + formatDuration(p.keep_s) + "\",\"keep_s\":" + std::to_string(p.keep_s) +
         ",\"legal_hold\":";
  if (p.hold) {
    out += "{\"reason\":";
    appendJsonString(out, p.hold_reason);
    out += ",\"since\":\"" + rfc3339Utc(p.hold_since_ms) + "\"}";
  } else {
    out += "null";
  }
  out += ",\"size\":" + std::to_string(log ? log->size() : 0) +
         ",\"purged_through\":" + std::to_string(log ? log->purged() : 0) + "}";
  return out;
}

Result<std::string> AuditSink::setRetention(const Context& ctx, std::string_view tenant,
                                            int64_t keep_s, int64_t now_ms) {
  if (keep_s < options_.min_keep_s || keep_s > kMaxKeepSeconds) {
    return Status::invalid("retention " + formatDuration(keep_s) + " is outside " +
                           formatDuration(options_.min_keep_s) + " (min_retention) .. " +
                           formatDuration(kMaxKeepSeconds));
  }
  {
    std::lock_guard lock(mu_);
    RetentionPolicy p = policyOf(tenant);
    const int64_t before = p.keep_s;
    p.keep_s = keep_s;
    if (Status s = storePolicy(ctx, tenant, p); !s) return s;
    auto seq = appendOwn(ctx, tenant, "audit.retention.set",
                         "{\"keep\":\"" + formatDuration(keep_s) + "\",\"previous\":\"" +
                             formatDuration(before) + "\"}",
                         now_ms);
    if (!seq) return seq.status();
  }
  return retentionJson(tenant);
}

Result<std::string> AuditSink::setLegalHold(const Context& ctx, std::string_view tenant,
                                            std::optional<std::string> reason, int64_t now_ms) {
  {
    std::lock_guard lock(mu_);
    RetentionPolicy p = policyOf(tenant);
    std::string parameters = "{\"reason\":";
    appendJsonString(parameters, reason ? *reason : p.hold_reason);
    parameters += "}";
    p.hold = reason.has_value();
    p.hold_reason = reason.value_or("");
    p.hold_since_ms = reason ? now_ms : 0;
    if (Status s = storePolicy(ctx, tenant, p); !s) return s;
    auto seq = appendOwn(ctx, tenant, reason ? "audit.legal_hold.set" : "audit.legal_hold.release",
                         parameters, now_ms);
    if (!seq) return seq.status();
  }
  return retentionJson(tenant);
}

Result<PurgeOutcome> AuditSink::purge(const Context& ctx, std::string_view tenant, int64_t now_ms,
                                      bool scheduled) {
  PurgeOutcome outcome;
  {
    std::lock_guard lock(mu_);
    auto it = logs_.find(tenant);
    if (it == logs_.end()) return outcome;
    TenantLog& log = it->second;
    const RetentionPolicy policy = policyOf(tenant);
    outcome.purged_through = log.purged();
    if (policy.hold) {
      return Status::conflict("log " + logName(tenant) + " is under legal hold since " +
                              rfc3339Utc(policy.hold_since_ms) + " (" + policy.hold_reason +
                              "): nothing is purged until the hold is released");
    }
    const uint64_t through =
        purgeBoundary(log.checkpoints(), log.purged(), now_ms - policy.keep_s * 1000);
    if (through > log.purged()) {
      auto done = purgeThrough(ctx, log, policy, through, now_ms, scheduled);
      if (!done) return done.status();
      outcome = *done;
    }
  }
  // The lines themselves, outside the lock: nothing reads them any more. This also
  // deletes what a purge interrupted by a crash left behind.
  if (outcome.purged_through > 0) {
    if (Status s = deletePurgedRecords(ctx, tenant, outcome.purged_through); !s) return s;
  }
  return outcome;
}

Result<PurgeOutcome> AuditSink::purgeThrough(const Context& ctx, TenantLog& log,
                                             const RetentionPolicy& policy, uint64_t through,
                                             int64_t now_ms, bool scheduled) {
  const std::string_view tenant = log.tenant();
  PurgeOutcome outcome;
  // 1. The leaf hashes of the records to purge, in chunks (rewritable: a purge that
  //    stopped before step 2 left nothing that counts).
  const Kv kv = ctx.kv();
  for (uint64_t first = log.purged() + 1; first <= through; first += kLeavesPerChunk) {
    const uint64_t last = std::min(through, first + kLeavesPerChunk - 1);
    std::string hex;
    hex.reserve((last - first + 1) * 64);
    for (uint64_t seq = first; seq <= last; ++seq) hex += toHex(log.tree().leaf(seq - 1));
    auto put = kv.put(leafKey(tenant, first), hex, TRELLIS_KV_ANY_VERSION);
    if (!put) return Status::unavailable("purge not started: " + put.status().message());
  }
  // 2. The commit point: from here on the log starts after `through`.
  PurgedPrefix prefix;
  prefix.through = through;
  for (const Checkpoint& cp : log.checkpoints()) {
    if (cp.size == through) prefix.chain = cp.chain;
  }
  auto put = kv.put(purgedKey(tenant), prefix.baseJson(), TRELLIS_KV_ANY_VERSION);
  if (!put) return Status::unavailable("purge not committed: " + put.status().message());
  outcome.records = through - log.purged();
  log.purge(through);
  outcome.purged_through = through;
  // 3. The purge is a record of the log, signed at once.
  auto seq = appendOwn(ctx, tenant, "audit.purge",
                       "{\"keep\":\"" + formatDuration(policy.keep_s) +
                           "\",\"purged_through\":" + std::to_string(through) +
                           ",\"records\":" + std::to_string(outcome.records) +
                           (scheduled ? ",\"scheduled\":true}" : "}"),
                       now_ms);
  if (!seq) {  // finishPurgeRecord() writes it at the next start
    return Status::unavailable("records 1.." + std::to_string(through) +
                               " are purged, but the purge record is not stored yet (it is "
                               "written at the next start): " +
                               seq.status().message());
  }
  outcome.recorded_as = *seq;
  prefix.recorded_as = *seq;
  if (auto again = kv.put(purgedKey(tenant), prefix.baseJson(), TRELLIS_KV_ANY_VERSION); !again) {
    return again.status();
  }
  if (Status s = maybeCheckpoint(ctx, log, now_ms, true); !s) return s;
  return outcome;
}

Status AuditSink::deletePurgedRecords(const Context& ctx, std::string_view tenant,
                                      uint64_t through) {
  const Kv kv = ctx.kv();
  std::vector<std::string> doomed;
  for (std::string_view kind : {"rec/", "blk/"}) {
    bool past = false;  // keys come in seq order: stop at the first one kept
    Status listed = listAll(
        kv, std::string(kind) + logName(tenant) + "/", [&](std::string_view k, std::string_view v) {
          // The seq of the entry's last line: a block goes only when all of it may.
          const uint64_t last = logAndNumber(k.substr(4)).second +
                                static_cast<uint64_t>(std::count(v.begin(), v.end(), '\n'));
          past = last > through;
          if (past) return Status::conflict("past the purged records");
          doomed.emplace_back(k);
          return Status::ok();
        });
    if (!listed && !past) return listed;
  }
  for (const auto& key : doomed) {
    Status s = kv.remove(key);
    if (!s && s.code() != StatusCode::kNotFound) return s;
  }
  return Status::ok();
}

PurgedPrefix AuditSink::purgedPrefixOf(const TenantLog& log) {
  PurgedPrefix prefix;
  prefix.through = log.purged();
  for (uint64_t i = 0; i < prefix.through; ++i) prefix.leaves.push_back(log.tree().leaf(i));
  for (const Checkpoint& cp : log.checkpoints()) {
    if (cp.size == prefix.through) prefix.chain = cp.chain;
  }
  return prefix;
}

std::string AuditSink::purgedJson(std::string_view tenant) const {
  std::lock_guard lock(mu_);
  const TenantLog* log = findLog(tenant);
  return log ? purgedPrefixOf(*log).toJson() : PurgedPrefix().toJson();
}

std::string AuditSink::evidencePack(std::string_view tenant, int64_t now_ms) const {
  std::vector<std::string> records, checkpoints;
  std::string proofs, purged, pem, key_id;
  {
    std::lock_guard lock(mu_);
    pem = key_->publicPem();
    key_id = keyId(key_->publicKey());
    if (const TenantLog* log = findLog(tenant)) {
      if (log->purged() > 0) purged = purgedPrefixOf(*log).toJson();
      for (uint64_t i = log->purged(); i < log->size(); ++i) records.push_back(log->line(i));
      uint64_t previous = 0;
      for (const Checkpoint& cp : log->checkpoints()) {
        checkpoints.push_back(cp.toJson());
        if (previous > 0 && previous < cp.size) {
          auto proof = log->tree().consistencyProof(previous, cp.size);
          proofs += "{\"from\":" + std::to_string(previous) + ",\"proof\":" + hashes(*proof) +
                    ",\"to\":" + std::to_string(cp.size) + "}\n";
        }
        previous = cp.size;
      }
    }
  }
  auto joined = [](const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  };
  // The server's own run of the verifier, for the auditor to compare with theirs.
  const VerifyReport report =
      verifyEvidence(records, checkpoints, pem, std::nullopt,
                     purged.empty() ? std::nullopt : std::optional<std::string>(purged));
  std::string verification;
  for (const auto& note : report.notes) verification += "  " + note + "\n";
  verification += report.message + "\n";

  std::vector<std::pair<std::string, std::string>> files = {
      {"records.jsonl", joined(records)},
      {"checkpoints.jsonl", joined(checkpoints)},
      {"public-key.pem", pem},
      {"proofs.jsonl", proofs},
      {"verification.txt", verification}};
  if (!purged.empty()) files.emplace_back("purged.json", purged);
  std::string manifest = "{\"exported_at\":\"" + rfc3339Utc(now_ms) + "\",\"files\":{";
  for (size_t i = 0; i < files.size(); ++i) {
    manifest +=
        (i ? ",\"" : "\"") + files[i].first + "\":\"" + toHex(sha256(files[i].second)) + "\"";
  }
  manifest += "},\"key_id\":\"" + key_id + "\",\"log\":";
  appendJsonString(manifest, logName(tenant));
  manifest += ",\"records\":" + std::to_string(records.size()) + "}\n";
  files.emplace_back("manifest.json", manifest);
  return tarArchive(files, now_ms / 1000);
}

uint64_t AuditSink::logSize(std::string_view tenant) const {
  std::lock_guard lock(mu_);
  const TenantLog* log = findLog(tenant);
  return log ? log->size() : 0;
}

std::vector<std::string> AuditSink::logNames() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [tenant, log] : logs_) out.push_back(tenant);
  return out;
}

}  // namespace trellis::audit
