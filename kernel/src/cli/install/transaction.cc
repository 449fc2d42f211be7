#include "cli/install/transaction.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>

#include "trellis/kernel/plugin/install_lock.h"

namespace trellis::cli::install {
namespace fs = std::filesystem;

namespace {

std::string errnoText(int e) {
  char buf[256];
  return strerror_r(e, buf, sizeof buf);
}

// Hidden names the installer creates: ".<name>.tmp-<random>" (extraction, staging, a
// folder being deleted). Nothing else in a plugin folder looks like that.
bool isInstallerTemp(const std::string& name) {
  return name.size() > 1 && name.front() == '.' && name.find(".tmp-") != std::string::npos;
}

std::string idOfDir(const std::string& dir) {
  std::string id = dir.substr(0, dir.find('@'));
  id[id.find('.')] = '/';
  return id;
}

}  // namespace

Status removePendingDir(const fs::path& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) return Status::unavailable(dir.string() + ": cannot delete: " + ec.message());
  return Status::ok();
}

FolderLock::FolderLock(FolderLock&& other) noexcept : fd_(other.fd_) {
  other.fd_ = -1;
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

Result<FolderLock> lockPluginDir(const fs::path& plugin_dir) {
  std::error_code ec;
  fs::create_directories(plugin_dir, ec);
  if (ec) return Status::unavailable(plugin_dir.string() + ": cannot create: " + ec.message());
  int fd = ::open(plugin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::unavailable(plugin_dir.string() + ": " + errnoText(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    ::close(fd);
    if (e == EWOULDBLOCK) {
      return Status::conflict("another trellis plugin install, upgrade or remove is changing " +
                              plugin_dir.string() + "; try again when it has finished");
    }
    return Status::unavailable(plugin_dir.string() + ": cannot lock: " + errnoText(e));
  }
  return FolderLock(fd);
}

StagedPackages::StagedPackages(StagedPackages&& other) noexcept
    : plugin_dir_(std::move(other.plugin_dir_)),
      root_(std::exchange(other.root_, {})),
      dirs_(std::move(other.dirs_)) {}

StagedPackages::~StagedPackages() {
  discard();
}

void StagedPackages::discard() {
  if (root_.empty()) return;
  std::error_code ec;
  fs::remove_all(root_, ec);
  root_.clear();
}

Result<std::vector<fs::path>> StagedPackages::place() {
  std::vector<fs::path> placed;
  for (const auto& dir : dirs_) {
    const fs::path dest = plugin_dir_ / dir;
    // RENAME_NOREPLACE: a folder that appeared meanwhile is never replaced.
    if (::renameat2(AT_FDCWD, (root_ / dir).c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) !=
        0) {
      const int e = errno;
      for (const auto& p : placed) (void)removePendingDir(p);  // ours, and still pending
      return Status::unavailable(dest.string() + ": cannot move into place: " + errnoText(e));
    }
    placed.push_back(dest);
  }
  return placed;
}

Result<StagedPackages> stagePackages(const fs::path& plugin_dir,
                                     const std::vector<const FetchedPackage*>& packages) {
  std::error_code ec;
  fs::create_directories(plugin_dir, ec);
  if (ec) return Status::unavailable(plugin_dir.string() + ": cannot create: " + ec.message());
  std::string tmpl = (plugin_dir / ".staging.tmp-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    return Status::unavailable(plugin_dir.string() +
                               ": cannot create a staging folder: " + errnoText(errno));
  }
  StagedPackages staged(plugin_dir, tmpl);
  for (const FetchedPackage* p : packages) {
    // Folder names come from the index: only a plugin id and a semantic version, so they
    // can never name a path outside the plugin folder.
    if (!kernel::plugin::isValidPluginId(p->id) || !kernel::plugin::Version::parse(p->version)) {
      return Status::invalid("\"" + p->id + "@" + p->version + "\" is not a plugin id and version");
    }
    const std::string dir = packageDirName(p->id, p->version);
    if (fs::exists(plugin_dir / dir, ec)) {
      return Status::conflict(p->id + "@" + p->version + ": " + (plugin_dir / dir).string() +
                              " already exists");
    }
    if (Status s = p->archive.extractTo(staged.root_ / dir); !s) {
      return Status(s.code(), p->id + "@" + p->version + ": " + s.message());
    }
    staged.dirs_.push_back(dir);
  }
  return staged;
}

Result<std::vector<std::string>> recoverInterrupted(const fs::path& plugin_dir, LockFile& lock,
                                                    const fs::path& lock_file) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(plugin_dir, ec)) {
    if (!isInstallerTemp(entry.path().filename().string())) continue;
    fs::remove_all(entry.path(), ec);
    if (ec) {
      return Status::unavailable(entry.path().string() +
                                 ": cannot delete what an interrupted "
                                 "install left: " +
                                 ec.message());
    }
  }
  if (lock.pending.empty()) return std::vector<std::string>{};
  std::set<std::string> named;
  for (const auto& [id, p] : lock.packages) named.insert(p.dir);
  std::vector<std::string> undone;
  for (const auto& dir : lock.pending) {
    if (named.count(dir) || !fs::exists(plugin_dir / dir, ec)) continue;
    // Deleted in place: trellisd skips a pending folder, whole or half deleted.
    if (Status s = removePendingDir(plugin_dir / dir); !s) return s;
    undone.push_back(idOfDir(dir));
  }
  lock.pending.clear();
  if (Status s = lock.save(lock_file); !s) return s;
  return undone;
}

void testHook(const char* step) {
  static const char* hook = std::getenv("TRELLIS_TEST_INSTALL_HOOK");
  if (hook == nullptr) return;
  const std::string h = hook, s = step;
  if (h == s + ":kill") ::raise(SIGKILL);
  if (h == s + ":stop") ::raise(SIGSTOP);
}

}  // namespace trellis::cli::install
