// The installer's trust store: the pinned root.json and the highest index version accepted
// so far, in a state folder (default var/marketplace/). It turns what a Source serves into
// a VerifiedIndex, or refuses it with marketplace/client's messages.
//
// First use: with --root FILE the admin pins a root obtained out of band; without it, the
// source's own root.json is pinned (trust on first use) and a notice names its keys. From
// then on the pinned root is the only anchor: a new root is accepted only through
// updateRoot() (signed by the old threshold, one version at a time, from
// roots/<N>.root.json), and an index older than one seen before is refused as a rollback.
//
//   TrustStore trust("var/marketplace");
//   std::vector<std::string> notices;
//   auto index = trust.refresh(*source, std::time(nullptr), {}, &notices);
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "cli/install/source.h"
#include "trellis/marketplace/index.h"

namespace trellis::cli::install {

inline constexpr uint64_t kMaxRootBytes = 1 << 20;
inline constexpr uint64_t kMaxTimestampBytes = 64 << 10;

// The metadata bytes as fetched and verified, for `trellis mirror export`.
struct MetadataFiles {
  std::string root;  // the pinned (possibly just rotated) root
  std::string timestamp;
  std::string index;
};

class TrustStore {
 public:
  explicit TrustStore(std::filesystem::path state_dir) : dir_(std::move(state_dir)) {}

  // Pins (first use) or loads the root, follows root rotations the source offers, then
  // fetches and verifies timestamp.json and index.json and records the index version.
  // `root_file`: a root to pin on first use instead of the source's (refused if a
  // different root is already pinned). Notices (pinning, rotation) go to `notices`.
  Result<marketplace::VerifiedIndex> refresh(const Source& source, marketplace::UnixSeconds now,
                                             const std::optional<std::filesystem::path>& root_file,
                                             std::vector<std::string>* notices,
                                             MetadataFiles* files = nullptr);

  std::filesystem::path rootFile() const { return dir_ / "root.json"; }
  std::filesystem::path lastVersionFile() const { return dir_ / "last_index_version"; }
  // 0 when nothing was accepted yet.
  Result<uint64_t> lastIndexVersion() const;

 private:
  Result<marketplace::Root> pinnedRoot(const Source& source,
                                       const std::optional<std::filesystem::path>& root_file,
                                       std::vector<std::string>* notices);
  std::filesystem::path dir_;
};

}  // namespace trellis::cli::install
