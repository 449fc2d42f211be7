// A strict reader for the zip archives that carry plugin packages. Every byte is treated
// as hostile: the central directory is parsed with explicit bounds, cross-checked against
// each local header, and refused (with a message naming the entry) on anything a package
// never needs: encryption, ZIP64, methods other than store/deflate, symlinks and special
// files, unsafe or duplicate names, folder entries with content, overlapping entries, and sizes or
// compression ratios beyond the limits. Reading an entry inflates at most its declared
// size (a lying header cannot make it inflate more) and checks the CRC.
//
// Poco::Zip's own reader is not used for untrusted input because it keys entries by name
// (duplicates vanish silently) and trusts local headers.
//
//   auto zip = ZipReader::open(std::move(bytes), ZipLimits{});
//   for (const ZipEntry& e : zip->entries()) auto data = zip->read(e);
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::marketplace {

struct ZipLimits {
  uint64_t max_archive_bytes = 256ull << 20;  // the download / file itself
  uint64_t max_entries = 4096;                // files in the archive
  uint64_t max_entry_bytes = 256ull << 20;    // one file, uncompressed
  uint64_t max_total_bytes = 512ull << 20;    // all files, uncompressed
  uint64_t max_ratio = 200;                   // uncompressed / compressed, per entry ...
  uint64_t ratio_applies_above = 1ull << 20;  // ... once it inflates past this many bytes
};

struct ZipEntry {
  std::string name;        // "lib/x.so"; a folder entry ends in '/' ("lib/")
  bool directory = false;  // a folder entry: no content, created on extraction
  uint16_t method = 0;     // 0 stored, 8 deflated
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t header_offset = 0;  // where the entry's local header starts in the archive
  uint64_t data_offset = 0;    // where its (compressed) bytes start
};

// Why `name` is not a safe relative path inside a package ("it contains \"..\"", …), or
// nullopt when it is: relative, '/'-separated, normalized, no backslash or control
// characters, no drive letter.
std::optional<std::string> unsafeEntryNameReason(std::string_view name);

class ZipReader {
 public:
  static Result<ZipReader> open(std::string archive, const ZipLimits& limits = {});

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(std::string_view name) const;
  // The entry's bytes, inflated and CRC-checked.
  Result<std::string> read(const ZipEntry& entry) const;
  const std::string& bytes() const { return archive_; }

 private:
  ZipReader(std::string archive, std::vector<ZipEntry> entries)
      : archive_(std::move(archive)), entries_(std::move(entries)) {}

  std::string archive_;
  std::vector<ZipEntry> entries_;
};

}  // namespace trellis::marketplace
