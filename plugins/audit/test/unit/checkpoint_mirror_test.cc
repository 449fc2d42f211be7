// The checkpoint mirror on a real temporary directory: layout, mode, idempotence, a differing
// file kept as evidence, symlinks not followed, unsafe log names and config validation.
#include "core/checkpoint_mirror.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace trellis::audit {
namespace {

namespace fs = std::filesystem;

class AuditCheckpointMirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cpmirror-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  fs::path dir_;
};

TEST_F(AuditCheckpointMirrorTest, WritesTheCheckpointAtLogAndPaddedSizeWithMode0644) {
  auto m = CheckpointMirror::open(dir_.string());
  ASSERT_TRUE(m) << m.status().message();
  ASSERT_TRUE(m->write("acme", 12, "{\"size\":12}"));
  const fs::path file = dir_ / "acme" / "00000000000000000012.json";
  EXPECT_EQ(slurp(file), "{\"size\":12}");
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  EXPECT_TRUE(m->has("acme", 12));
  EXPECT_FALSE(m->has("acme", 13));
  // Writing the same checkpoint again is fine, and leaves no temp files behind.
  EXPECT_TRUE(m->write("acme", 12, "{\"size\":12}"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "acme"), fs::directory_iterator()), 1);
}

TEST_F(AuditCheckpointMirrorTest, KeepsADifferingExistingFileAsEvidence) {
  auto m = CheckpointMirror::open(dir_.string());
  ASSERT_TRUE(m);
  fs::create_directory(dir_ / "_system");
  const fs::path file = dir_ / "_system" / "00000000000000000003.json";
  std::ofstream(file) << "forged";
  Status s = m->write("_system", 3, "{\"size\":3}");
  EXPECT_EQ(s.code(), StatusCode::kConflict);
  EXPECT_NE(s.message().find(file.string()), std::string::npos) << s.message();
  EXPECT_EQ(slurp(file), "forged");
}

TEST_F(AuditCheckpointMirrorTest, DoesNotFollowASymlinkAtTheFinalPath) {
  auto m = CheckpointMirror::open(dir_.string());
  ASSERT_TRUE(m);
  fs::create_directory(dir_ / "acme");
  const fs::path target = dir_ / "elsewhere";
  std::ofstream(target) << "{\"size\":1}";
  fs::create_symlink(target, dir_ / "acme" / "00000000000000000001.json");
  EXPECT_FALSE(m->write("acme", 1, "{\"size\":1}"));
  EXPECT_EQ(slurp(target), "{\"size\":1}");
}

TEST_F(AuditCheckpointMirrorTest, RefusesLogNamesThatLeaveTheDirectory) {
  // The mirror one level down, so "../x" would land in this test's own directory (not in
  // the shared temporary directory, where anything may be called x).
  fs::create_directory(dir_ / "mirror");
  auto m = CheckpointMirror::open((dir_ / "mirror").string());
  ASSERT_TRUE(m);
  EXPECT_EQ(m->write("../x", 1, "{}").code(), StatusCode::kInvalid);
  EXPECT_EQ(m->write("a/b", 1, "{}").code(), StatusCode::kInvalid);
  EXPECT_EQ(m->write("..", 1, "{}").code(), StatusCode::kInvalid);
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

TEST_F(AuditCheckpointMirrorTest, OpenNamesTheConfigKeyWhenTheDirectoryIsUnusable) {
  for (const std::string& bad : {std::string("relative/dir"), (dir_ / "missing").string()}) {
    auto m = CheckpointMirror::open(bad);
    ASSERT_FALSE(m) << bad;
    EXPECT_NE(m.status().message().find("checkpoint_mirror_dir"), std::string::npos);
  }
  std::ofstream(dir_ / "file") << "x";
  auto m = CheckpointMirror::open((dir_ / "file").string());
  ASSERT_FALSE(m);
  EXPECT_NE(m.status().message().find("not a directory"), std::string::npos);
}

TEST_F(AuditCheckpointMirrorTest, ReportsAFailureWhenTheLogDirectoryCannotBeMade) {
  auto m = CheckpointMirror::open(dir_.string());
  ASSERT_TRUE(m);
  // A file where the log's subdirectory belongs fails even for root (chmod would not).
  std::ofstream(dir_ / "acme") << "x";
  EXPECT_EQ(m->write("acme", 1, "{}").code(), StatusCode::kUnavailable);
  fs::remove(dir_ / "acme");
  EXPECT_TRUE(m->write("acme", 1, "{}"));
}

}  // namespace
}  // namespace trellis::audit
