// plugins.lock: what the installer put in a plugin folder, so an install can be repeated
// exactly elsewhere (`trellis plugin install` with no argument installs the locked set) and
// so `remove` knows which installed packages depend on which.
//
//   {"schema": 1, "packages": {"acme/hello": {"version": "1.2.0", "sha256": "<archive>",
//     "keyid": "<publisher key>", "publisher_root": "<namespace's first key>",
//     "dir": "acme.hello@1.2.0", "requested": true,
//     "dependencies": {"acme/db": "^1.0.0"}}}}
//
// Written atomically (temp file + rename), so a crash leaves the old lock or the new one.
// The lock is the commit point of every change to the plugin folder: before a folder is
// moved in or deleted, it is listed in "pending"; a pending folder the lock's packages do
// not name is not installed (trellisd skips it, the next run deletes it), and one they name
// is. So the lock alone says what is installed, whenever the installer is interrupted.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "trellis/marketplace/index.h"
#include "trellis/status.hpp"

namespace trellis::cli::install {

struct LockedPackage {
  std::string version;
  std::string sha256;      // of the archive, as the index named it
  std::string keyid;       // publisher key that signed it
  std::string dir;         // folder name inside the plugin directory
  bool requested = false;  // asked for by name, not only pulled in as a dependency
  std::map<std::string, std::string> dependencies;  // id -> range
  // The namespace's first publisher key when this was installed (trust on first use of
  // the publisher): a later index whose chain starts elsewhere is refused.
  std::string publisher_root;
};

struct LockFile {
  std::map<std::string, LockedPackage> packages;
  // Folders (names inside the plugin folder) an unfinished change may have left.
  std::vector<std::string> pending;

  // A missing file is an empty lock; a malformed one is INVALID naming the file.
  static Result<LockFile> load(const std::filesystem::path& file);
  Status save(const std::filesystem::path& file) const;

  // Installed packages whose dependencies name `id`.
  std::vector<std::string> dependentsOf(const std::string& id) const;
};

// The first key of `id`'s namespace in `index`, "" if the namespace has none.
std::string publisherRoot(const marketplace::Index& index, const std::string& id);

// Refuses an index in which a namespace of a locked package now starts its key chain with
// another key than the lock recorded: a registry, or a stolen index key, handing the
// namespace to someone else. PERMISSION_DENIED names the namespace and both keys.
Status checkPublisherRoots(const marketplace::Index& index, const LockFile& lock);

// "acme.hello@1.2.0": the folder a package is extracted to (ids hold no '.' or '@').
std::string packageDirName(const std::string& id, const std::string& version);
// Whether `dir` is such a name (so it can never name a path outside the plugin folder).
bool isPackageDirName(const std::string& dir);

}  // namespace trellis::cli::install
