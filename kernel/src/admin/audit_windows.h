// Repeated events aggregated so a spraying client cannot flood the audit trail: one record
// per (who, where) pair per minute — (claimed key id, source address) for authentication
// failures, (tenant, route) for policy denials — which carries how many events that pair
// had in the minute before. Memory is bounded: past `max_buckets` pairs, expired ones are
// dropped. Thread-safe.
//
//   if (auto previous = windows.shouldRecord(key_id, peer.address)) audit(…, *previous);
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace trellis::kernel::admin {

class AuditWindows {
 public:
  explicit AuditWindows(size_t max_buckets = 10'000) : max_buckets_(max_buckets) {}
  // Counts one event; returns the previous window's count when this event opens a new
  // window (so a record is due), nullopt when it only adds to the open one.
  std::optional<uint64_t> shouldRecord(const std::string& key_id, const std::string& source);

 private:
  struct Window {
    std::chrono::steady_clock::time_point start;
    uint64_t count = 0;
  };
  const size_t max_buckets_;
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Window> windows_;
};

// A name for a presented credential that identifies it in the trail without revealing it:
// "sha256:" and the first 12 hex digits of its hash ("" for none).
std::string credentialFingerprint(std::string_view credential);

}  // namespace trellis::kernel::admin
