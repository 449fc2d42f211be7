#include "trellis/kernel/util/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace trellis::kernel::util {
namespace fs = std::filesystem;

namespace {
Status ioError(const std::string& what, const fs::path& file) {
  return Status::unavailable("cannot " + what + " " + file.string() + ": " + std::strerror(errno));
}
}  // namespace

Status writeFileAtomically(const fs::path& file, std::string_view content, mode_t mode) {
  std::error_code ec;
  fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  fs::create_directories(dir, ec);
  fs::path tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return ioError("create", tmp);
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return ioError("write", tmp);
    }
    off += static_cast<size_t>(n);
  }
  if (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return ioError("sync", tmp);
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), file.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return ioError("replace", file);
  }
  // The rename itself must survive a crash too.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::ok();
}

}  // namespace trellis::kernel::util
