// One tenant's audit log in memory: the record lines in order, their hash chain and
// Merkle tree, and the checkpoints signed over it. After a retention purge the lines of
// records 1..purged() are gone; their leaf hashes stay in the tree (core/retention.h). The plugin
// makes a line with prepare(), stores it durably, and only then commit()s it; restore() rebuilds
// the log from storage.
//
//   TenantLog log("acme");
//   std::string line = log.prepare(incoming, now_ms, hmac_key, sensitive);
//   if (store(line)) log.commit(line);
//   Checkpoint cp = log.checkpoint(signing_key, now_ms);
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/ed25519.h"
#include "core/merkle.h"
#include "core/record.h"
#include "core/retention.h"

namespace trellis::audit {

class TenantLog {
 public:
  explicit TenantLog(std::string tenant) : tenant_(std::move(tenant)) {}

  const std::string& tenant() const { return tenant_; }
  uint64_t size() const { return purged_ + lines_.size(); }
  // Records 1..purged() were purged: their lines are gone.
  uint64_t purged() const { return purged_; }
  // The line at `index` (seq index + 1); index >= purged().
  const std::string& line(uint64_t index) const { return lines_[index - purged_]; }
  const Hash& chainHead() const { return chain_; }
  const MerkleTree& tree() const { return tree_; }
  const std::vector<Checkpoint>& checkpoints() const { return checkpoints_; }
  uint64_t checkpointedSize() const { return checkpoints_.empty() ? 0 : checkpoints_.back().size; }
  // The time (Unix ms) of the oldest record no checkpoint covers yet; nullopt when every
  // record is signed. 0 (long ago) if that record's line is gone or has no time.
  std::optional<int64_t> unsignedSinceMs() const;

  // The line record number size()+1 would be; changes nothing.
  // `hmac_key_id` names `hmac_key` in the line ("" leaves it out).
  std::string prepare(const IncomingRecord& in, int64_t time_ms, std::string_view hmac_key,
                      const std::vector<std::string>& sensitive,
                      std::string_view hmac_key_id = {}) const;
  // Appends a line prepare() made (and that is now stored, or about to be: see rollback).
  void commit(std::string line);
  // Forgets the lines from record size+1 on, committed but then not stored
  // (purged() <= size <= size()).
  void rollback(uint64_t size);
  // Appends a stored line read back at start-up; INVALID if its seq or prev does not
  // continue the log (storage was altered behind the plugin's back).
  Status restore(std::string line);

  // Signs the log's current state (size, root, chain head); keeps nothing.
  Checkpoint makeCheckpoint(const Ed25519Key& key, int64_t time_ms) const;
  // makeCheckpoint() and keep it.
  const Checkpoint& checkpoint(const Ed25519Key& key, int64_t time_ms);
  void restoreCheckpoint(Checkpoint cp) { checkpoints_.push_back(std::move(cp)); }

  // Starts an empty log after a purge: the kept leaf hashes and chain head of records
  // 1..prefix.through. INVALID unless the log is empty and the leaves are all there.
  Status restorePurged(const PurgedPrefix& prefix);
  // Drops the lines of records purged()+1..through (through <= size()); the tree and
  // chain stay as they are.
  void purge(uint64_t through);

 private:
  std::string tenant_;
  uint64_t purged_ = 0;
  std::vector<std::string> lines_;  // records purged_+1 .. size()
  Hash chain_ = kZeroHash;          // SHA-256 of the last line
  Hash purged_chain_ = kZeroHash;   // the chain head after record purged_
  MerkleTree tree_;
  std::vector<Checkpoint> checkpoints_;
};

}  // namespace trellis::audit
