// The evidence pack's tar archives: what the plugin writes reads back (also with GNU tar,
// when it is installed), and hostile archives are refused with the entry at fault named.
#include "core/tar.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace trellis::audit {
namespace {

using ::testing::HasSubstr;

std::string refusal(const std::string& archive) {
  auto r = readTar(archive);
  return r ? "accepted" : r.status().message();
}

// Sets a header field and recomputes the checksum, as a forger would.
void setField(std::string& archive, size_t header_at, size_t offset, const std::string& value) {
  std::memcpy(archive.data() + header_at + offset, value.data(), value.size());
  uint64_t sum = 0;
  for (size_t i = 0; i < 512; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(archive[header_at + i]);
  }
  std::snprintf(archive.data() + header_at + 148, 8, "%06llo",
                static_cast<unsigned long long>(sum));
  archive[header_at + 155] = ' ';
}

TEST(AuditTarTest, WhatIsWrittenReadsBack) {
  const std::string big(1500, 'x');
  auto archive =
      tarArchive({{"records.jsonl", "a\nb\n"}, {"empty", ""}, {"big.bin", big}}, 1700000000);
  EXPECT_EQ(archive.size() % 512, 0u);
  auto files = readTar(archive);
  ASSERT_TRUE(files) << files.status().message();
  EXPECT_EQ(files->size(), 3u);
  EXPECT_EQ(files->at("records.jsonl"), "a\nb\n");
  EXPECT_EQ(files->at("empty"), "");
  EXPECT_EQ(files->at("big.bin"), big);
}

TEST(AuditTarTest, GnuTarReadsItToo) {
  if (std::system("command -v tar >/dev/null 2>&1") != 0) GTEST_SKIP() << "no tar";
  const std::string path = ::testing::TempDir() + "/audit-tar-test.tar";
  std::ofstream(path, std::ios::binary) << tarArchive({{"a.txt", "hello\n"}}, 0);
  FILE* p = popen(("tar -xOf " + path + " a.txt").c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[64] = {};
  const size_t n = fread(buf, 1, sizeof buf, p);
  EXPECT_EQ(pclose(p), 0);
  EXPECT_EQ(std::string(buf, n), "hello\n");
}

TEST(AuditTarTest, HostileArchivesAreRefusedNamingTheEntry) {
  const std::string good = tarArchive({{"records.jsonl", "x"}}, 0);
  EXPECT_THAT(refusal("not a tar archive at all"), HasSubstr("not a complete tar archive"));
  EXPECT_THAT(refusal(good.substr(0, 700)), HasSubstr("not a complete tar archive"));
  std::string damaged = good;
  damaged[600] = 'y';  // content: fine
  EXPECT_EQ(refusal(damaged), "accepted");
  damaged[10] = 'Q';  // the name, without fixing the checksum
  EXPECT_THAT(refusal(damaged), HasSubstr("bad header checksum"));

  std::string traversal = good;
  setField(traversal, 0, 0, std::string("../etc/passwd\0", 14));
  EXPECT_THAT(refusal(traversal), HasSubstr("not a plain file name"));
  std::string symlink = good;
  setField(symlink, 0, 156, "2");
  EXPECT_THAT(refusal(symlink), HasSubstr("not a regular file"));
  std::string huge = good;
  setField(huge, 0, 124, "77777777777");
  EXPECT_THAT(refusal(huge), HasSubstr("past the end of the archive"));
  std::string garbage_size = good;
  setField(garbage_size, 0, 124, "12x45678901");
  EXPECT_THAT(refusal(garbage_size), HasSubstr("bad size field"));
  std::string prefixed = good;
  setField(prefixed, 0, 345, "dir");
  EXPECT_THAT(refusal(prefixed), HasSubstr("not a plain file name"));

  EXPECT_THAT(refusal(tarArchive({{"a", "1"}, {"a", "2"}}, 0)), HasSubstr("appears twice"));
  std::vector<std::pair<std::string, std::string>> many;
  for (size_t i = 0; i <= kMaxTarEntries; ++i) many.emplace_back("f" + std::to_string(i), "");
  EXPECT_THAT(refusal(tarArchive(many, 0)), HasSubstr("more than 64 files"));
}

}  // namespace
}  // namespace trellis::audit
