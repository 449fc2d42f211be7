#include "storage/internal/kv_redo_log.h"

#include <string>
#include <utility>

#include "storage/internal/byte_codec.h"
#include "trellis/kernel/storage/kv_store.h"

namespace trellis::kernel::storage::internal {
namespace {

constexpr uint32_t kMagic = 0x52564b54;  // "TKVR" little-endian
// A batch holds at most GroupCommit's max_batch writes of a key and a 1 MiB value each;
// anything longer cannot be a record.
constexpr uint64_t kMaxPayloadBytes = 256 * (kMaxValueBytes + 2 * kMaxKeyBytes + 64);
constexpr uint8_t kPut = 1, kRemove = 2;
constexpr std::string_view kSuffix = "-redo";

SegmentLog::Format format() {
  return {kMagic, kMaxPayloadBytes, "redo log"};
}

std::filesystem::path prefixOf(const std::filesystem::path& db_file) {
  return db_file.string() + std::string(kSuffix);
}

}  // namespace

std::string encodeBatch(std::span<const KvChange> changes) {
  std::string out;
  putU32(out, static_cast<uint32_t>(changes.size()));
  for (const KvChange& c : changes) {
    out.push_back(static_cast<char>(c.value ? kPut : kRemove));
    putBytes(out, c.plugin);
    putBytes(out, c.key);
    if (c.value) putBytes(out, *c.value);
    putU64(out, c.version);
  }
  return out;
}

Result<std::vector<KvChange>> decodeBatch(std::string_view payload) {
  ByteReader r(payload);
  uint32_t count = 0;
  if (!r.u32(count)) return Status::invalid("batch: no change count");
  std::vector<KvChange> out;
  for (uint32_t i = 0; i < count; ++i) {
    const std::string at = "batch change " + std::to_string(i) + ": ";
    KvChange c;
    uint8_t kind = 0;
    if (!r.u8(kind) || (kind != kPut && kind != kRemove)) return Status::invalid(at + "bad kind");
    if (!r.bytes(c.plugin, 256) || c.plugin.empty()) return Status::invalid(at + "bad plugin");
    if (!r.bytes(c.key, kMaxKeyBytes) || c.key.empty()) return Status::invalid(at + "bad key");
    if (kind == kPut) {
      c.value.emplace();
      if (!r.bytes(*c.value, kMaxValueBytes)) return Status::invalid(at + "bad value");
    }
    if (!r.u64(c.version)) return Status::invalid(at + "no version");
    if ((kind == kPut) != (c.version != 0)) return Status::invalid(at + "bad version");
    out.push_back(std::move(c));
  }
  if (!r.done()) return Status::invalid("batch: bytes after the last change");
  return out;
}

std::string encodeRecord(uint64_t seq, std::span<const KvChange> changes) {
  return encodeFrame(kMagic, seq, encodeBatch(changes));
}

ParsedSegment parseSegment(std::string_view bytes, uint64_t next_seq) {
  ParsedSegment out;
  const ParsedFrames p =
      parseFrames(bytes, kMagic, kMaxPayloadBytes, next_seq, [&out](const Frame& f) {
        auto batch = decodeBatch(f.payload);
        if (!batch) return batch.status().message();
        out.batches.push_back(std::move(*batch));
        return std::string();
      });
  out.valid_bytes = p.valid_bytes;
  out.zero_bytes = p.zero_bytes;
  out.next_seq = p.next_seq;
  out.stopped_by = p.stopped_by;
  return out;
}

Result<KvRedoLog::Opened> KvRedoLog::open(const std::filesystem::path& db_file) {
  Opened opened;
  auto log = SegmentLog::open(prefixOf(db_file), format(),
                              [&](const SegmentLog::Location&, uint64_t, std::string_view payload) {
                                auto batch = decodeBatch(payload);
                                if (!batch) return batch.status().message();
                                opened.unapplied.push_back(std::move(*batch));
                                return std::string();
                              });
  if (!log) return log.status();
  opened.log.reset(new KvRedoLog(std::move(log->log)));
  opened.last_replayed_segment = log->last_replayed_segment;
  return opened;
}

Result<std::set<std::filesystem::path>> KvRedoLog::databasesWithRecords(
    const std::filesystem::path& dir) {
  auto logs = SegmentLog::prefixesWithRecords(dir);
  if (!logs) return logs.status();
  std::set<std::filesystem::path> out;
  for (const auto& prefix : *logs) {
    const std::string p = prefix.string();
    if (p.ends_with(kSuffix)) out.insert(p.substr(0, p.size() - kSuffix.size()));
  }
  return out;
}

Status KvRedoLog::removeAll(const std::filesystem::path& db_file) {
  return SegmentLog::removeAll(prefixOf(db_file));
}

Status KvRedoLog::append(std::span<const KvChange> batch) {
  auto at = log_->append(encodeBatch(batch));
  return at ? Status::ok() : at.status();
}

}  // namespace trellis::kernel::storage::internal
