// The package zip reader (marketplace/client/src/zip.cc) and the package reader on top of it:
// every byte of a downloaded archive is hostile. Properties of an archive the reader accepts:
// entry names are safe and unique and find() returns them; every entry's bytes lie inside
// the archive, after its local header, and no two entries overlap; a folder entry is empty;
// reading an entry yields exactly its declared size.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "trellis/marketplace/package.h"
#include "trellis/marketplace/zip.h"

using trellis::marketplace::ZipEntry;
using trellis::marketplace::ZipLimits;
using trellis::marketplace::ZipReader;

namespace {

// Small limits, so the fuzzer reaches them with small inputs.
ZipLimits fuzzLimits() {
  ZipLimits limits;
  limits.max_entries = 64;
  limits.max_entry_bytes = 1 << 20;
  limits.max_total_bytes = 2 << 20;
  limits.ratio_applies_above = 64 << 10;
  return limits;
}

void checkEntries(const ZipReader& zip) {
  const std::vector<ZipEntry>& entries = zip.entries();
  std::set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [header, end of data)
  for (const ZipEntry& e : entries) {
    std::string name = e.directory ? e.name.substr(0, e.name.size() - 1) : e.name;
    FUZZ_CHECK(!trellis::marketplace::unsafeEntryNameReason(name), "accepted name " + e.name);
    FUZZ_CHECK(names.insert(name).second, "accepted duplicate name " + e.name);
    FUZZ_CHECK(zip.find(e.name) == &e, "find() misses " + e.name);
    FUZZ_CHECK(e.header_offset < e.data_offset && e.data_offset <= zip.bytes().size() &&
                   e.compressed_size <= zip.bytes().size() - e.data_offset,
               "entry " + e.name + " lies outside the archive");
    FUZZ_CHECK(!e.directory || e.uncompressed_size == 0, "folder entry with content " + e.name);
    spans.emplace_back(e.header_offset, e.data_offset + e.compressed_size);
    auto bytes = zip.read(e);
    if (bytes) {
      FUZZ_CHECK(bytes->size() == e.uncompressed_size,
                 "entry " + e.name + " read " + std::to_string(bytes->size()) + " bytes of " +
                     std::to_string(e.uncompressed_size));
    }
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    FUZZ_CHECK(spans[i - 1].second <= spans[i].first, "accepted overlapping entries");
  }
}

// The keys that signed the seed packages in corpus/zip, so mutants of them reach the
// signature and file-hash checks.
const std::vector<trellis::marketplace::PublicKey>& seedKeys() {
  static const std::vector<trellis::marketplace::PublicKey> keys = [] {
    std::vector<trellis::marketplace::PublicKey> out;
    for (const char* b64 : {"iT/mpR+kWHfESGgGyBPRNLiJnWH7GTpHQ75S18Trxy0=",
                            "omp12qmLlwpB0f6o7iYHhoW76907fDnje8yYaUbj2VY="}) {
      out.push_back(*trellis::marketplace::PublicKey::fromBase64(b64));
    }
    return out;
  }();
  return keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (auto zip = ZipReader::open(bytes, fuzzLimits())) checkEntries(*zip);
  // The package layer: manifest and signature file read from the archive, then verified.
  auto pkg = trellis::marketplace::PackageArchive::fromBytes(std::move(bytes), fuzzLimits());
  if (pkg) (void)pkg->verify(seedKeys());
  return 0;
}
