// The audit record as the log stores it, and its parts: UUIDv7 event ids, RFC 3339 UTC
// times, HMAC of sensitive fields, and signed checkpoints.
//
// A stored record is one line of canonical JSON (see canonical_json.h):
//   {"action","actor":{"name","principal","role"},"event_id","hmac_key","kernel_seq",
//    "outcome","parameters","prev","request_id","resource","seq","status","tenant","time",
//    "trace_id","type"}
// "hmac_key" (only when the sink HMACs sensitive fields) names the key they were HMAC'd with:
// "own" or "secrets:<n>" (see hmac_keys.h); a record without it used the own key.
// `seq` counts 1, 2, … per tenant log ("" = the system log); `prev` is the hex SHA-256 of
// the previous line (64 zeros for the first), which makes the lines a hash chain; each line
// is also one leaf of the log's RFC 6962 tree.
//
//   auto in = IncomingRecord::parse(kernel_json);            // what audit.v1 write received
//   std::string line = buildRecord(*in, {.seq = 1, .time_ms = now, .event_id = uuidV7(now),
//                                        .prev = kZeroHash, .hmac_key = key,
//                                        .sensitive = {"email"}});
#pragma once

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/hash.h"
#include "trellis/status.hpp"

namespace trellis::audit {

inline constexpr Hash kZeroHash{};
// A record the sink receives is refused above this size (the kernel's own limit is 16 KiB
// of plugin-supplied fields; admin parameters are bounded by the admin body limit).
inline constexpr size_t kMaxRecordBytes = 256 * 1024;

// A version 7 UUID (RFC 9562): 48 bits of Unix milliseconds, then random bits.
std::string uuidV7(int64_t unix_ms);
// "2026-12-04T05:18:34.123Z".
std::string rfc3339Utc(int64_t unix_ms);
// The Unix milliseconds of a stored record's top-level "time" (as rfc3339Utc() wrote it),
// if it has one.
std::optional<int64_t> recordTimeMs(std::string_view line);

// What audit.v1 `write` received, read in one pass (core/json_reader.h): the members the
// stored record takes, with `parameters` kept as received and made canonical (and its
// sensitive members HMAC'd) by buildRecord().
struct IncomingRecord {
  std::string tenant;  // "" = the system log
  std::string type, action, resource, outcome, request_id, trace_id;
  std::string actor_name, actor_principal, actor_role;
  int64_t kernel_seq = 0;
  int64_t status = 0;
  std::string parameters;  // JSON text; "" when absent or null
  // Set instead of the members above for a record only Poco's reading decides (a member
  // of an unexpected type, an integer beyond 64 bits, ...): buildRecord() then takes the
  // reference path, so such records keep the bytes they always had.
  Poco::JSON::Object::Ptr object;

  // INVALID, naming the problem and its byte offset, for anything but a JSON object.
  static Result<IncomingRecord> parse(std::string_view json);
  // The reference reading, with Poco's parser: what parse() must agree with.
  static Result<IncomingRecord> parseReference(std::string_view json);
};

struct RecordContext {
  uint64_t seq = 0;
  int64_t time_ms = 0;
  std::string event_id;
  Hash prev = kZeroHash;
  std::string_view hmac_key;
  std::string_view hmac_key_id;                         // written as "hmac_key" when not empty
  const std::vector<std::string>* sensitive = nullptr;  // member names; may be null
};

// The canonical line for `in` as record number ctx.seq of its log.
std::string buildRecord(const IncomingRecord& in, const RecordContext& ctx);
// The same line built from in.object (parseReference()) through Poco's tree: the
// reference the one-pass path is tested against.
std::string buildRecordReference(const IncomingRecord& in, const RecordContext& ctx);
// "hmac-sha256:<hex>" of `value` under `key`: what a sensitive field is stored as.
std::string sensitiveDigest(std::string_view key, std::string_view value);

// A signed statement that the log `origin` had `size` records with this root and chain head.
struct Checkpoint {
  std::string origin;  // "trellis-audit/<tenant>" ("_system" for the system log)
  uint64_t size = 0;
  Hash root{};
  Hash chain{};  // SHA-256 of line `size` (kZeroHash for size 0)
  int64_t time_ms = 0;
  std::string key_id;     // first 8 bytes of SHA-256(public key), hex
  std::string signature;  // 64 raw bytes, Ed25519 over signedBody()

  // The exact bytes signed: "trellis-audit checkpoint v1\n<origin>\n<size>\n<root hex>\n
  // <chain hex>\n<time_ms>\n".
  std::string signedBody() const;
  std::string toJson() const;  // one canonical JSON line
  static Result<Checkpoint> fromJson(std::string_view json);
};

std::string keyId(std::string_view public_key);
std::string originOf(std::string_view tenant);
bool verifyCheckpoint(const Checkpoint& cp, std::string_view public_key);

}  // namespace trellis::audit
