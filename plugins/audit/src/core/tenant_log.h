// One tenant's audit log in memory: the record lines in order, their hash chain and
// Merkle tree, and the checkpoints signed over it. The plugin makes a line with prepare(),
// stores it durably, and only then commit()s it; restore() rebuilds the log from storage.
//
//   TenantLog log("acme");
//   std::string line = log.prepare(incoming, now_ms, hmac_key, sensitive);
//   if (store(line)) log.commit(line);
//   Checkpoint cp = log.checkpoint(signing_key, now_ms);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/ed25519.h"
#include "core/merkle.h"
#include "core/record.h"

namespace trellis::audit {

class TenantLog {
 public:
  explicit TenantLog(std::string tenant) : tenant_(std::move(tenant)) {}

  const std::string& tenant() const { return tenant_; }
  uint64_t size() const { return lines_.size(); }
  const std::string& line(uint64_t index) const { return lines_[index]; }
  const Hash& chainHead() const { return chain_; }
  const MerkleTree& tree() const { return tree_; }
  const std::vector<Checkpoint>& checkpoints() const { return checkpoints_; }
  uint64_t checkpointedSize() const { return checkpoints_.empty() ? 0 : checkpoints_.back().size; }

  // The line record number size()+1 would be; changes nothing.
  std::string prepare(const IncomingRecord& in, int64_t time_ms, std::string_view hmac_key,
                      const std::vector<std::string>& sensitive) const;
  // Appends a line prepare() made (and that is now stored).
  void commit(std::string line);
  // Appends a stored line read back at start-up; INVALID if its seq or prev does not
  // continue the log (storage was altered behind the plugin's back).
  Status restore(std::string line);

  // Signs the log's current state (size, root, chain head); keeps nothing.
  Checkpoint makeCheckpoint(const Ed25519Key& key, int64_t time_ms) const;
  // makeCheckpoint() and keep it.
  const Checkpoint& checkpoint(const Ed25519Key& key, int64_t time_ms);
  void restoreCheckpoint(Checkpoint cp) { checkpoints_.push_back(std::move(cp)); }

 private:
  std::string tenant_;
  std::vector<std::string> lines_;
  Hash chain_ = kZeroHash;  // SHA-256 of the last line
  MerkleTree tree_;
  std::vector<Checkpoint> checkpoints_;
};

}  // namespace trellis::audit
