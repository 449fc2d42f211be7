// The steps of an install that touch archives. Everything is downloaded and verified first
// (fetchVerified); only then is anything written, as transaction.h describes.
//
//   auto pkg = fetchVerified(*source, index, planned, thisHost(), progress);
//   if (!pkg) refuse(pkg.status());          // nothing written
//   auto staged = stagePackages(plugin_dir, packages);   // transaction.h
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "cli/install/resolve.h"
#include "cli/install/source.h"
#include "cli/install/trust.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/marketplace/index.h"
#include "trellis/marketplace/package.h"

namespace trellis::cli::install {

struct FetchedPackage {
  std::string id;
  std::string version;
  marketplace::PackageRecord record;
  marketplace::PackageArchive archive;
  kernel::plugin::Manifest manifest;
};

// Downloads id@version (never more than its indexed length) and checks, in order: the
// archive's structure (the strict zip reader: no path escapes, symlinks, bombs), the
// index's SHA-256 and length, the publisher signature by a key of the namespace's verified
// chain that was not revoked, every file against the manifest, the kernel's manifest
// parser. Nothing is written.
Result<FetchedPackage> fetchArchive(const Source& source, const marketplace::VerifiedIndex& index,
                                    const std::string& id, const std::string& version,
                                    const ProgressFn& progress = {},
                                    const marketplace::ZipLimits& limits = {});
// fetchArchive, then that the package's own manifest runs on `host`.
Result<FetchedPackage> fetchVerified(const Source& source, const marketplace::VerifiedIndex& index,
                                     const std::string& id, const std::string& version,
                                     const HostFacts& host, const ProgressFn& progress = {},
                                     const marketplace::ZipLimits& limits = {});

struct MirrorReport {
  size_t archives = 0;
  uint64_t bytes = 0;
};
// Writes a mirror folder: the verified metadata, the root rotation chain the source has,
// and every archive of the index, each verified as fetchArchive does. The folder appears
// complete or not at all (`out` must not exist).
Result<MirrorReport> exportMirror(const Source& source, const marketplace::VerifiedIndex& index,
                                  const MetadataFiles& metadata, const std::filesystem::path& out,
                                  const ProgressFn& progress = {});

}  // namespace trellis::cli::install
