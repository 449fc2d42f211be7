#include "file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <utility>

namespace trellis::marketplace::internal {
namespace {

namespace fs = std::filesystem;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int close() { return fd_ >= 0 ? ::close(std::exchange(fd_, -1)) : 0; }

 private:
  int fd_;
};

}  // namespace

std::string errnoText(int e) {
  char buf[256];
  // GNU strerror_r returns a pointer to the message (maybe static, maybe in buf).
  return ::strerror_r(e, buf, sizeof buf);
}

fs::path tempSibling(const fs::path& file) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  char suffix[20];
  std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(rng()));
  return dir / ("." + file.filename().string() + ".tmp-" + suffix);
}

Result<std::string> readFileCapped(const fs::path& file, uint64_t max_bytes) {
  const std::string name = file.string();
  Fd fd(::open(name.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    int e = errno;
    if (e == ENOENT) return Status::notFound(name + ": no such file");
    return Status::invalid(name + ": cannot open: " + errnoText(e));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::invalid(name + ": not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Status::invalid(name + ": " + std::to_string(st.st_size) + " bytes; the limit is " +
                           std::to_string(max_bytes));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::invalid(name + ": cannot read: " + errnoText(errno));
    if (n == 0) return Status::invalid(name + ": changed while being read");
    got += static_cast<size_t>(n);
  }
  return out;
}

Status writeFileAtomically(const fs::path& file, std::string_view content, mode_t mode,
                           bool replace) {
  const std::string name = file.string();
  std::error_code ec;
  if (!replace && fs::exists(fs::symlink_status(file, ec))) {
    return Status::conflict(name + " already exists; refusing to overwrite it");
  }
  fs::path tmp = tempSibling(file);
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (fd.get() < 0) return Status::invalid(name + ": cannot create: " + errnoText(errno));
  auto fail = [&](const std::string& what, int e) {
    ::unlink(tmp.c_str());
    return Status::invalid(name + ": " + what + ": " + errnoText(e));
  };
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("cannot write", errno);
    done += static_cast<size_t>(n);
  }
  // The umask may have narrowed `mode`; what the caller asked for is what it gets.
  if (::fchmod(fd.get(), mode) != 0 || ::fsync(fd.get()) != 0) return fail("cannot write", errno);
  if (fd.close() != 0) return fail("cannot write", errno);
  if (replace) {
    if (::rename(tmp.c_str(), name.c_str()) != 0) return fail("cannot create", errno);
  } else {
    if (::link(tmp.c_str(), name.c_str()) != 0) {
      int e = errno;
      ::unlink(tmp.c_str());
      if (e == EEXIST) return Status::conflict(name + " already exists; refusing to overwrite it");
      return Status::invalid(name + ": cannot create: " + errnoText(e));
    }
    ::unlink(tmp.c_str());
  }
  fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0) ::fsync(dfd.get());
  return Status::ok();
}

}  // namespace trellis::marketplace::internal
