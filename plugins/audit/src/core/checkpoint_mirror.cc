#include "core/checkpoint_mirror.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace trellis::audit {
namespace {

constexpr std::string_view kKey = "checkpoint_mirror_dir";

std::string errnoText() {
  return std::strerror(errno);
}

// Closes a descriptor on every path out.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string padded(uint64_t n) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%020llu", static_cast<unsigned long long>(n));
  return buf;
}

// The kernel validates tenant ids, but a path is built from the name: refuse anything that
// could leave the mirror directory.
bool safeLogName(std::string_view log) {
  return !log.empty() && log.find('/') == std::string_view::npos &&
         log.find("..") == std::string_view::npos && log != ".";
}

Status fsyncDir(const std::string& dir) {
  Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0 || ::fsync(d.fd) != 0) {
    return Status::unavailable("cannot sync directory " + dir + ": " + errnoText());
  }
  return Status::ok();
}

// Reads a regular file without following a symlink; nullopt-like empty status when absent.
Result<std::string> readNoFollow(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
  if (f.fd < 0) {
    if (errno == ENOENT) return Status::notFound(path);
    return Status::unavailable("cannot read " + path + ": " + errnoText());
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(f.fd, buf, sizeof buf);
    if (n < 0) return Status::unavailable("cannot read " + path + ": " + errnoText());
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

Result<CheckpointMirror> CheckpointMirror::open(std::string dir) {
  const std::string key(kKey);
  if (dir.empty() || dir.front() != '/') {
    return Status::invalid(key + " must be an absolute path, got \"" + dir + "\"");
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return Status::invalid(key + " " + dir + " cannot be used: " + errnoText());
  }
  if (!S_ISDIR(st.st_mode)) return Status::invalid(key + " " + dir + " is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return Status::invalid(key + " " + dir + " is not writable: " + errnoText());
  }
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return CheckpointMirror(std::move(dir));
}

std::string CheckpointMirror::pathOf(std::string_view log, uint64_t size) const {
  return dir_ + "/" + std::string(log) + "/" + padded(size) + ".json";
}

bool CheckpointMirror::has(std::string_view log, uint64_t size) const {
  struct stat st {};
  return safeLogName(log) && ::lstat(pathOf(log, size).c_str(), &st) == 0;
}

Status CheckpointMirror::write(std::string_view log, uint64_t size, std::string_view json) const {
  if (!safeLogName(log)) return Status::invalid("unsafe log name for the checkpoint mirror");
  const std::string sub = dir_ + "/" + std::string(log);
  if (::mkdir(sub.c_str(), 0755) == 0) {
    if (Status s = fsyncDir(dir_); !s) return s;
  } else if (errno != EEXIST) {
    return Status::unavailable("cannot create " + sub + ": " + errnoText());
  }
  const std::string path = pathOf(log, size);
  if (auto existing = readNoFollow(path); existing) {
    if (*existing == json) return Status::ok();
    return Status::conflict("checkpoint mirror file " + path +
                            " differs from the signed checkpoint (a fork?); left as it is");
  } else if (existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  std::string tmp = sub + "/.tmp-" + padded(size) + "-XXXXXX";
  Fd f{::mkstemp(tmp.data())};
  if (f.fd < 0) return Status::unavailable("cannot write in " + sub + ": " + errnoText());
  auto fail = [&](std::string what) {
    const std::string msg = what + " " + tmp + ": " + errnoText();
    ::unlink(tmp.c_str());
    return Status::unavailable(msg);
  };
  if (::fchmod(f.fd, 0644) != 0) return fail("cannot chmod");
  for (size_t done = 0; done < json.size();) {
    const ssize_t n = ::write(f.fd, json.data() + done, json.size() - done);
    if (n < 0) return fail("cannot write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(f.fd) != 0) return fail("cannot sync");
  // link() never replaces an existing path nor follows a symlink at it: a file that appeared
  // meanwhile is kept and compared, never overwritten.
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    if (err == EEXIST) return write(log, size, json);
    errno = err;
    return Status::unavailable("cannot write " + path + ": " + errnoText());
  }
  ::unlink(tmp.c_str());
  return fsyncDir(sub);
}

}  // namespace trellis::audit
