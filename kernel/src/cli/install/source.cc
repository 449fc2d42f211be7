#include "cli/install/source.h"

#include <Poco/Exception.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/URI.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <istream>
#include <mutex>
#include <thread>

#include "cli/http_session.h"

namespace trellis::cli::install {
namespace fs = std::filesystem;
namespace {

constexpr size_t kChunk = 64 * 1024;

std::string tooLarge(const std::string& what, uint64_t max_bytes) {
  return what + " is larger than the " + std::to_string(max_bytes) + "-byte limit";
}

// Reads at most max_bytes + 1 bytes from `in`, so an oversized body is noticed without
// holding it.
template <typename ReadFn>
Result<std::string> readCapped(const std::string& what, uint64_t max_bytes, uint64_t total,
                               const ProgressFn& progress, ReadFn read) {
  std::string out;
  char buf[kChunk];
  for (;;) {
    long n = read(buf, sizeof buf);
    if (n < 0) return Status::unavailable(what + ": read failed: " + std::strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) return Status::invalid(tooLarge(what, max_bytes));
    if (progress) progress(out.size(), total);
  }
  return out;
}

class DirectorySource final : public Source {
 public:
  explicit DirectorySource(fs::path dir) : dir_(std::move(dir)) {}

  Result<std::string> fetch(const std::string& path, uint64_t max_bytes,
                            const ProgressFn& progress) const override {
    const fs::path file = dir_ / path;
    // O_NOFOLLOW: a mirror is a folder of regular files; a symlink in it is refused
    // rather than followed somewhere else on this machine.
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      int e = errno;
      if (e == ENOENT) return Status::notFound(describe() + " has no " + path);
      return Status::unavailable(file.string() + ": " + std::strerror(e));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status::invalid(file.string() + " is not a regular file");
    }
    auto r = readCapped(file.string(), max_bytes, static_cast<uint64_t>(st.st_size), progress,
                        [fd](char* b, size_t n) { return static_cast<long>(::read(fd, b, n)); });
    ::close(fd);
    return r;
  }
  std::string describe() const override { return "mirror " + dir_.string(); }

 private:
  fs::path dir_;
};

// Shuts a connected socket down when a fetch outlives its deadline: that wakes a read
// blocked inside Poco, which then fails, and the fetch reports the deadline.
class Deadline {
 public:
  explicit Deadline(std::chrono::milliseconds budget)
      : at_(std::chrono::steady_clock::now() + budget) {}
  ~Deadline() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (watcher_.joinable()) watcher_.join();
  }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  // From now on, `fd` (which must outlive this object) is cut at the deadline.
  void watch(int fd) {
    watcher_ = std::thread([this, fd] {
      std::unique_lock lock(mu_);
      if (cv_.wait_until(lock, at_, [this] { return done_; })) return;
      expired_ = true;
      ::shutdown(fd, SHUT_RDWR);
    });
  }
  bool expired() const { return expired_; }  // the socket was cut

 private:
  const std::chrono::steady_clock::time_point at_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> expired_{false};
  std::thread watcher_;
};

class HttpSource final : public Source {
 public:
  HttpSource(Poco::URI uri, bool registry, std::string key, HttpTimeouts timeouts)
      : uri_(std::move(uri)), registry_(registry), key_(std::move(key)), timeouts_(timeouts) {}

  Result<std::string> fetch(const std::string& logical, uint64_t max_bytes,
                            const ProgressFn& progress) const override {
    // packages/ns/name/1.2.0.zip -> packages/ns/name/versions/1.2.0/download on a registry.
    std::string path = logical;
    if (registry_ && path.rfind("packages/", 0) == 0 && path.size() > 4 &&
        path.compare(path.size() - 4, 4, ".zip") == 0) {
      auto slash = path.rfind('/');
      path = path.substr(0, slash) + "/versions/" +
             path.substr(slash + 1, path.size() - slash - 5) + "/download";
    }
    std::string base = uri_.getPath();
    if (base.empty() || base.back() != '/') base += '/';
    const std::string what = uri_.toString() + (uri_.getPath().empty() ? "/" : "") + path;
    std::unique_ptr<Poco::Net::HTTPClientSession> session;
    Deadline deadline(timeouts_.total);  // destroyed first: it stops watching the socket
    auto late = [&] {
      return Status::unavailable(
          what + ": did not finish within " + std::to_string(timeouts_.total.count() / 1000) +
          " s (the download deadline; --download-timeout SECONDS changes it)");
    };
    try {
      const auto read_timeout = Poco::Timespan(std::min(timeouts_.read, timeouts_.total).count() *
                                               Poco::Timespan::MILLISECONDS);
      session = openHttpSession(uri_);
      session->setTimeout(read_timeout, read_timeout, read_timeout);
      Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_GET, base + path,
                                 Poco::Net::HTTPMessage::HTTP_1_1);
      if (!key_.empty()) req.set("Authorization", "Bearer " + key_);
      session->sendRequest(req);
      deadline.watch(session->socket().impl()->sockfd());
      Poco::Net::HTTPResponse res;
      std::istream& in = session->receiveResponse(res);
      if (res.getStatus() == Poco::Net::HTTPResponse::HTTP_NOT_FOUND) {
        return Status::notFound(describe() + " has no " + path);
      }
      if (res.getStatus() == Poco::Net::HTTPResponse::HTTP_UNAUTHORIZED ||
          res.getStatus() == Poco::Net::HTTPResponse::HTTP_FORBIDDEN) {
        return Status::permissionDenied(
            what + ": the registry refused the key (" +
            std::to_string(static_cast<int>(res.getStatus())) +
            "); set TRELLIS_REGISTRY_KEY or --registry-key-file to the registry tenant's key");
      }
      if (res.getStatus() != Poco::Net::HTTPResponse::HTTP_OK) {
        return Status::unavailable(what + ": the server answered " +
                                   std::to_string(static_cast<int>(res.getStatus())));
      }
      // A declared length beyond the cap is refused before reading a byte.
      const bool has_length = res.hasContentLength();
      const auto length = has_length ? res.getContentLength64() : 0;
      if (has_length && static_cast<uint64_t>(length) > max_bytes) {
        return Status::invalid(tooLarge(what, max_bytes));
      }
      auto body = readCapped(what, max_bytes, has_length ? static_cast<uint64_t>(length) : 0,
                             progress, [&in](char* b, size_t n) {
                               in.read(b, static_cast<std::streamsize>(n));
                               if (in.bad()) return -1L;
                               return static_cast<long>(in.gcount());
                             });
      if (deadline.expired()) return late();
      if (body && has_length && body->size() != static_cast<uint64_t>(length)) {
        return Status::unavailable(what + ": the connection closed after " +
                                   std::to_string(body->size()) + " of " + std::to_string(length) +
                                   " bytes");
      }
      return body;
    } catch (const Poco::Exception& e) {
      if (deadline.expired()) return late();
      return Status::unavailable(what + ": " + describeHttpError(e));
    }
  }
  std::string describe() const override {
    return (registry_ ? "registry " : "mirror ") + uri_.toString();
  }

 private:
  Poco::URI uri_;
  bool registry_;
  std::string key_;
  HttpTimeouts timeouts_;
};

}  // namespace

std::string archivePath(std::string_view id, std::string_view version) {
  return "packages/" + std::string(id) + "/" + std::string(version) + ".zip";
}

std::unique_ptr<Source> directorySource(fs::path dir) {
  return std::make_unique<DirectorySource>(std::move(dir));
}

Result<std::unique_ptr<Source>> httpMirrorSource(const std::string& url,
                                                 const HttpTimeouts& timeouts) {
  auto uri = parseHttpUrl("--from", url);
  if (!uri) return uri.status();
  return std::unique_ptr<Source>(
      std::make_unique<HttpSource>(std::move(*uri), false, "", timeouts));
}

Result<std::unique_ptr<Source>> registrySource(const std::string& url, std::string key,
                                               const HttpTimeouts& timeouts) {
  auto uri = parseHttpUrl("--registry", url);
  if (!uri) return uri.status();
  std::string path = uri->getPath();
  while (!path.empty() && path.back() == '/') path.pop_back();
  const std::string api = "/registry/v1";
  if (path.size() < api.size() || path.compare(path.size() - api.size(), api.size(), api) != 0) {
    uri->setPath(path + api);
  }
  return std::unique_ptr<Source>(
      std::make_unique<HttpSource>(std::move(*uri), true, std::move(key), timeouts));
}

}  // namespace trellis::cli::install
