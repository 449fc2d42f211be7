// How the installer changes a plugin folder so that an interruption at any point (kill -9,
// power loss, a full or read-only disk) leaves it meaning either the old set of plugins or
// the new one. plugins.lock is the commit point (lock_file.h):
//
//   auto held = lockPluginDir(dir);                  // one installer per folder at a time
//   auto undone = recoverInterrupted(dir, lock, lock_file);   // finish what a crash left
//   auto staged = stagePackages(dir, packages);      // hidden: trellisd never looks there
//   lock.pending = staged->dirs();  lock.save(lock_file);     // 1. say what may appear
//   staged->place();                                 // 2. folders appear, not yet installed
//   lock.packages[...] = ...;  lock.save(lock_file); // 3. commit: now they are installed
//   removePendingDir(old);  lock.pending.clear();  lock.save(lock_file);  // 4. tidy up
//
// Before step 3 the next run removes the new folders (rollback); after it, the old ones.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "cli/install/installer.h"
#include "cli/install/lock_file.h"

namespace trellis::cli::install {

// An exclusive lock on a plugin folder for the life of the object (flock on the folder).
class FolderLock {
 public:
  FolderLock(FolderLock&& other) noexcept;
  FolderLock& operator=(FolderLock&&) = delete;
  ~FolderLock();

 private:
  friend Result<FolderLock> lockPluginDir(const std::filesystem::path& plugin_dir);
  explicit FolderLock(int fd) : fd_(fd) {}
  int fd_;
};
// Creates the folder if needed. CONFLICT if another install, upgrade or remove holds it.
Result<FolderLock> lockPluginDir(const std::filesystem::path& plugin_dir);

// Packages extracted into a hidden folder inside the plugin folder, not yet in place.
// What was not placed is deleted with the object.
class StagedPackages {
 public:
  StagedPackages(StagedPackages&& other) noexcept;
  StagedPackages& operator=(StagedPackages&&) = delete;
  ~StagedPackages();

  // The folder names the packages will have in the plugin folder, in the given order.
  const std::vector<std::string>& dirs() const { return dirs_; }
  // Renames each folder into place (each appears complete or not at all); the paths. On a
  // failure the folders placed so far are deleted again.
  Result<std::vector<std::filesystem::path>> place();
  // Deletes what was not placed now (the destructor does too, but exit() skips it).
  void discard();

 private:
  friend Result<StagedPackages> stagePackages(const std::filesystem::path&,
                                              const std::vector<const FetchedPackage*>&);
  StagedPackages(std::filesystem::path plugin_dir, std::filesystem::path root)
      : plugin_dir_(std::move(plugin_dir)), root_(std::move(root)) {}
  std::filesystem::path plugin_dir_;
  std::filesystem::path root_;  // "" once moved from
  std::vector<std::string> dirs_;
};
// Extracts each package into plugin_dir/.staging.tmp-XXXXXX/<ns.name@version>; CONFLICT if
// its folder already exists in the plugin folder. Nothing visible is written.
Result<StagedPackages> stagePackages(const std::filesystem::path& plugin_dir,
                                     const std::vector<const FetchedPackage*>& packages);

// Deletes a folder listed in the lock's pending folders (trellisd skips such a folder,
// whole or half deleted, unless the lock names it).
Status removePendingDir(const std::filesystem::path& dir);

// Finishes what an interrupted install, upgrade or remove left in plugin_dir, as the lock
// says: hidden temp folders are deleted, and so is every pending folder the lock does not
// name; then the lock is saved without pending folders. Returns the ids whose uncommitted
// folders were deleted (a running trellisd may still serve them).
Result<std::vector<std::string>> recoverInterrupted(const std::filesystem::path& plugin_dir,
                                                    LockFile& lock,
                                                    const std::filesystem::path& lock_file);

// Tests only: TRELLIS_TEST_INSTALL_HOOK=<step>:kill makes the CLI SIGKILL itself when it
// reaches `step`, and <step>:stop makes it SIGSTOP itself there (a test then changes the
// file system and sends SIGCONT), so crash and disk-full tests hit exact steps.
void testHook(const char* step);

}  // namespace trellis::cli::install
