// A second copy of every signed checkpoint in a directory the operator chooses (config
// checkpoint_mirror_dir), so a checkpoint outlives the plugin's own storage: an auditor can
// compare the two places. Layout: <dir>/<log>/<size:020>.json, the same JSON as stored.
// Files are written atomically (temp file, fsync, rename, fsync of the directory), mode 0644,
// never through a symlink, and an existing file with other content is left alone (a fork).
//
//   auto mirror = CheckpointMirror::open("/var/lib/trellis/cp-mirror");  // on_init
//   if (!mirror) return mirror.status();
//   Status s = mirror->write("acme", 12, checkpoint_json);  // kConflict: a differing file
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::audit {

class CheckpointMirror {
 public:
  // Checks that `dir` is absolute, a directory and writable; the error names the config key.
  static Result<CheckpointMirror> open(std::string dir);

  // OK once the file holds `json` (written now or already there). kConflict when a file with
  // different content is there: evidence of a fork, which is never overwritten.
  Status write(std::string_view log, uint64_t size, std::string_view json) const;
  // Whether the checkpoint's file exists already (any content): catch-up skips those.
  bool has(std::string_view log, uint64_t size) const;

  std::string pathOf(std::string_view log, uint64_t size) const;
  const std::string& dir() const { return dir_; }

 private:
  explicit CheckpointMirror(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace trellis::audit
