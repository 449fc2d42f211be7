// Retention of one audit log: how long records stay online, the legal hold that stops
// purging, and what is kept of purged records so that the log stays verifiable.
//
// A purge removes a prefix of the log that ends at a signed checkpoint (a sealed segment
// boundary) and is older than the retention: the record lines go (they hold the personal
// data), their RFC 6962 leaf hashes and the chain head at the boundary stay (32 bytes a
// record). Roots, proofs and the chain of the records after it still check, and an
// evidence pack carries the kept hashes as purged.json.
//
//   RetentionPolicy p = RetentionPolicy::fromJson(stored).value();
//   uint64_t through = purgeBoundary(log.checkpoints(), log.purged(), now_ms - p.keep_s * 1000);
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/hash.h"
#include "core/record.h"
#include "trellis/status.hpp"

namespace trellis::audit {

inline constexpr int64_t kDaySeconds = 24 * 60 * 60;
inline constexpr int64_t kDefaultKeepSeconds = 365 * kDaySeconds;  // 12 months online
inline constexpr int64_t kMaxKeepSeconds = 7 * 365 * kDaySeconds + 2 * kDaySeconds;  // 7 years

// "30s", "15m", "12h", "365d" -> seconds. INVALID naming the text otherwise.
Result<int64_t> parseDuration(std::string_view text);
// Seconds as the largest whole unit: 86400 -> "1d", 90 -> "90s".
std::string formatDuration(int64_t seconds);

struct RetentionPolicy {
  int64_t keep_s = kDefaultKeepSeconds;
  bool hold = false;        // legal hold: nothing is purged while it is set
  std::string hold_reason;  // e.g. a case number; required to set a hold
  int64_t hold_since_ms = 0;

  std::string toJson() const;  // canonical JSON (stored and served)
  static Result<RetentionPolicy> fromJson(std::string_view json);
};

// What a log keeps of its purged prefix: records 1..through are gone, `chain` is the chain
// head after record `through` (what the checkpoint at that size signs), `leaves` their
// leaf hashes in order. `recorded_as` is the seq of the record that reports the purge
// (0 until it is written).
struct PurgedPrefix {
  uint64_t through = 0;
  Hash chain = kZeroHash;
  uint64_t recorded_as = 0;
  std::vector<Hash> leaves;

  // {"chain","leaves":[hex…],"through"}: purged.json of an evidence pack.
  std::string toJson() const;
  // The stored form without the leaves (they are kept in chunks of their own).
  std::string baseJson() const;
  // Either form; a pack's file must hold exactly `through` leaves.
  static Result<PurgedPrefix> fromJson(std::string_view json, bool with_leaves);
};

// The largest checkpoint size past `purged` whose checkpoint was signed before `cutoff_ms`
// (so every record it covers is older), or `purged` if there is none.
uint64_t purgeBoundary(const std::vector<Checkpoint>& checkpoints, uint64_t purged,
                       int64_t cutoff_ms);

// Leaf hashes as one string of hex (64 digits each), and back; nullopt for bad hex.
std::string leavesToHex(const std::vector<Hash>& leaves, size_t from, size_t to);
std::optional<std::vector<Hash>> leavesFromHex(std::string_view hex);

}  // namespace trellis::audit
