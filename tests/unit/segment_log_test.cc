// The segment log under the KV redo log and the usage journal (storage/internal/
// segment_log.h): its checksum, several records in one append, and reading a record back
// where the append put it. Torn and damaged records are covered by kv_redo_log_test.cc
// and usage_journal_test.cc, through their owners.
#include "storage/internal/segment_log.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace trellis::kernel::storage::internal {
namespace {

using test::TempDir;

// CRC-32C one bit at a time, straight from the polynomial.
uint32_t referenceCrc32c(std::string_view bytes) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? 0x82f63b78u ^ (crc >> 1) : crc >> 1;
  }
  return ~crc;
}

TEST(SegmentLogTest, Crc32cIsCastagnoliAtEveryLengthAndAlignment) {
  EXPECT_EQ(crc32c(0, "123456789"), 0xe3069283u);  // the check value of CRC-32C
  EXPECT_EQ(crc32c(0, ""), 0u);
  std::mt19937 rng(7);
  std::string bytes(300, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t n = 0; n + offset <= bytes.size(); n += 13) {
      const std::string_view part = std::string_view(bytes).substr(offset, n);
      ASSERT_EQ(crc32c(0, part), referenceCrc32c(part)) << offset << "+" << n;
      // Continued over two calls, as the record header and payload are.
      ASSERT_EQ(crc32c(crc32c(0, part.substr(0, n / 2)), part.substr(n / 2)),
                referenceCrc32c(part));
    }
  }
}

TEST(SegmentLogTest, RecordsAppendedTogetherAreReadBackWhereTheyWerePut) {
  TempDir dir;
  const SegmentLog::Format format{0x54534554, 1 << 20, "test log"};
  const std::vector<std::string> payloads{"first", std::string(70000, 'x'), ""};
  std::vector<SegmentLog::Location> where;
  {
    auto opened = SegmentLog::open(dir / "t", format, {});
    ASSERT_TRUE(opened) << opened.status().message();
    const std::vector<std::string_view> views(payloads.begin(), payloads.end());
    auto at = opened->log->appendAll(views);
    ASSERT_TRUE(at) << at.status().message();
    where = *at;
    ASSERT_EQ(where.size(), 3u);
    for (size_t i = 0; i < where.size(); ++i) EXPECT_EQ(*opened->log->read(where[i]), payloads[i]);
  }
  std::vector<std::string> seen;
  auto opened =
      SegmentLog::open(dir / "t", format,
                       [&](const SegmentLog::Location& at, uint64_t seq, std::string_view payload) {
                         EXPECT_EQ(seq, seen.size() + 1);
                         EXPECT_EQ(at.offset, where[seen.size()].offset);
                         seen.emplace_back(payload);
                         return std::string();
                       });
  ASSERT_TRUE(opened);
  EXPECT_EQ(seen, payloads);
  EXPECT_EQ(*opened->log->read(where[1]), payloads[1]);
}

}  // namespace
}  // namespace trellis::kernel::storage::internal
