#include "sink.h"

#include <openssl/rand.h>

#include <cstdio>

#include "core/canonical_json.h"
#include "core/hash.h"

namespace trellis::audit {
namespace {

constexpr std::string_view kSigningKey = "key/ed25519";

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

Status AuditSink::load(const Context& ctx) {
  std::lock_guard lock(mu_);
  const Kv kv = ctx.kv();
  auto stored = kv.get(kSigningKey);
  if (stored) {
    auto seed = fromHex(stored->value);
    auto key = seed ? Ed25519Key::fromSeed(*seed) : Result<Ed25519Key>(Status::invalid("hex"));
    if (!key) return Status::internal("the stored checkpoint key is damaged");
    key_ = std::make_unique<Ed25519Key>(std::move(key).value());
  } else if (stored.status().code() == StatusCode::kNotFound) {
    auto key = Ed25519Key::generate();
    if (!key) return key.status();
    auto put = kv.put(kSigningKey, toHex(key->privateSeed()), TRELLIS_KV_ABSENT);
    if (!put) return put.status();
    key_ = std::make_unique<Ed25519Key>(std::move(key).value());
    ctx.info("audit: created the checkpoint signing key " + keyId(key_->publicKey()));
  } else {
    return stored.status();
  }
  if (Status s = listAll(kv, "hmac/",
                         [&](std::string_view k, std::string_view v) {
                           auto raw = fromHex(v);
                           if (!raw) return Status::internal("damaged HMAC key " + std::string(k));
                           hmac_keys_[tenantOfLog(k.substr(5))] = *raw;
                           return Status::ok();
                         });
      !s) {
    return s;
  }
  if (Status s =
          listAll(kv, "rec/",
                  [&](std::string_view k, std::string_view v) {
                    const auto slash = k.find('/', 4);
                    return logOf(tenantOfLog(k.substr(4, slash - 4))).restore(std::string(v));
                  });
      !s) {
    return s;
  }
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
  for (const auto& [name, log] : logs_) records += log.size();
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

Result<std::string> AuditSink::hmacKey(const Context& ctx, std::string_view tenant) {
  if (auto it = hmac_keys_.find(tenant); it != hmac_keys_.end()) return it->second;
  std::string key(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), 32) != 1) {
    return Status::internal("no randomness for an HMAC key");
  }
  auto put = ctx.kv().put("hmac/" + logName(tenant), toHex(key), TRELLIS_KV_ABSENT);
  if (!put) return put.status();
  hmac_keys_[std::string(tenant)] = key;
  return key;
}

Result<std::string> AuditSink::write(const Context& ctx, std::string_view record_json,
                                     int64_t now_ms) {
  auto in = IncomingRecord::parse(record_json);
  if (!in) return in.status();
  std::lock_guard lock(mu_);
  auto key = hmacKey(ctx, in->tenant);
  if (!key) return Status::unavailable("cannot keep the log's HMAC key: " + key.status().message());
  TenantLog& log = logOf(in->tenant);
  std::string line = log.prepare(*in, now_ms, *key, options_.sensitive);
  // Absent-only: a record number is never written twice, whatever happens in between.
  auto put = ctx.kv().put(recordKey(in->tenant, log.size() + 1), line, TRELLIS_KV_ABSENT);
  if (!put) return Status::unavailable("record not stored: " + put.status().message());
  const uint64_t seq = log.size() + 1;
  log.commit(std::move(line));
  if (Status s = maybeCheckpoint(ctx, log, now_ms, false); !s) {
    // The record is stored; the checkpoint comes with the next record or read.
    ctx.warn("audit: checkpoint of " + logName(in->tenant) + " not stored: " + s.message());
  }
  return "{\"log\":\"" + logName(in->tenant) + "\",\"seq\":" + std::to_string(seq) + "}";
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
  return Status::ok();
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

std::string AuditSink::recordsJsonl(std::string_view tenant, uint64_t from_seq,
                                    uint64_t limit) const {
  std::lock_guard lock(mu_);
  std::string out;
  const TenantLog* log = findLog(tenant);
  if (!log) return out;
  for (uint64_t i = from_seq == 0 ? 0 : from_seq - 1; i < log->size() && limit > 0; ++i, --limit) {
    out += log->line(i);
    out += '\n';
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
           ",\"checkpointed_size\":" + std::to_string(log.checkpointedSize()) + "}";
  }
  return out + "]}";
}

std::string AuditSink::publicPem() const {
  std::lock_guard lock(mu_);
  return key_->publicPem();
}

Result<std::string> AuditSink::hmacOf(const Context& ctx, std::string_view tenant,
                                      std::string_view value) {
  std::lock_guard lock(mu_);
  auto key = hmacKey(ctx, tenant);
  if (!key) return key.status();
  return sensitiveDigest(*key, value);
}

}  // namespace trellis::audit
