#include "core/tenant_log.h"

#include <Poco/JSON/Parser.h>

namespace trellis::audit {

std::string TenantLog::prepare(const IncomingRecord& in, int64_t time_ms, std::string_view hmac_key,
                               const std::vector<std::string>& sensitive,
                               std::string_view hmac_key_id) const {
  RecordContext ctx;
  ctx.seq = size() + 1;
  ctx.time_ms = time_ms;
  ctx.event_id = uuidV7(time_ms);
  ctx.prev = chain_;
  ctx.hmac_key = hmac_key;
  ctx.hmac_key_id = hmac_key_id;
  ctx.sensitive = &sensitive;
  return buildRecord(in, ctx);
}

void TenantLog::commit(std::string line) {
  chain_ = sha256(line);
  tree_.append(line);
  lines_.push_back(std::move(line));
}

Status TenantLog::restore(std::string line) {
  try {
    Poco::JSON::Parser parser;
    auto o = parser.parse(line).extract<Poco::JSON::Object::Ptr>();
    const auto seq = o->getValue<uint64_t>("seq");
    const auto prev = o->getValue<std::string>("prev");
    if (seq != size() + 1 || prev != toHex(chain_)) {
      return Status::invalid("stored record " + std::to_string(size() + 1) + " of log " +
                             originOf(tenant_) + " does not continue the chain (seq " +
                             std::to_string(seq) + ")");
    }
  } catch (const Poco::Exception& e) {
    return Status::invalid("stored record " + std::to_string(size() + 1) + " of log " +
                           originOf(tenant_) + " is not a record: " + e.displayText());
  }
  commit(std::move(line));
  return Status::ok();
}

void TenantLog::rollback(uint64_t size) {
  if (size < purged_ || size >= this->size()) return;
  lines_.resize(size - purged_);
  tree_.truncate(size);
  chain_ = lines_.empty() ? purged_chain_ : sha256(lines_.back());
}

Status TenantLog::restorePurged(const PurgedPrefix& prefix) {
  if (size() != 0 || prefix.leaves.size() != prefix.through) {
    return Status::invalid("the purged prefix of log " + originOf(tenant_) + " holds " +
                           std::to_string(prefix.leaves.size()) + " leaf hashes for " +
                           std::to_string(prefix.through) + " records");
  }
  for (const Hash& leaf : prefix.leaves) tree_.appendLeafHash(leaf);
  chain_ = prefix.chain;
  purged_chain_ = prefix.chain;
  purged_ = prefix.through;
  return Status::ok();
}

void TenantLog::purge(uint64_t through) {
  if (through <= purged_ || through > size()) return;
  purged_chain_ = sha256(line(through - 1));
  lines_.erase(lines_.begin(), lines_.begin() + static_cast<std::ptrdiff_t>(through - purged_));
  purged_ = through;
}

std::optional<int64_t> TenantLog::unsignedSinceMs() const {
  const uint64_t first = checkpointedSize();  // index of the first unsigned record
  if (first >= size()) return std::nullopt;
  if (first < purged_) return 0;
  return recordTimeMs(line(first)).value_or(0);
}

const Checkpoint& TenantLog::checkpoint(const Ed25519Key& key, int64_t time_ms) {
  checkpoints_.push_back(makeCheckpoint(key, time_ms));
  return checkpoints_.back();
}

Checkpoint TenantLog::makeCheckpoint(const Ed25519Key& key, int64_t time_ms) const {
  Checkpoint cp;
  cp.origin = originOf(tenant_);
  cp.size = size();
  cp.root = *tree_.root(cp.size);
  cp.chain = chain_;
  cp.time_ms = time_ms;
  cp.key_id = keyId(key.publicKey());
  cp.signature = key.sign(cp.signedBody());
  return cp;
}

}  // namespace trellis::audit
