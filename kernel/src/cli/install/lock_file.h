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

}  // namespace trellis::cli::install
