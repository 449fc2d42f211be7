// Where the installer gets signed metadata and archives: a mirror folder (air-gapped
// sites, `trellis mirror export`), the same folder behind any static web server, or a
// Trellis registry (marketplace/registry, "Registry HTTP API" in docs/marketplace.md).
// Mirrors use this layout:
//
//   root.json  timestamp.json  index.json         the signed metadata (docs/marketplace.md)
//   roots/<N>.root.json                           root version N, for rotation (optional)
//   packages/<namespace>/<name>/<version>.zip     the archives
//
// A registry serves the same names under /registry/v1, except archives, which are at
// /registry/v1/packages/<namespace>/<name>/versions/<version>/download, and wants the
// registry tenant's key as a bearer token.
//
// Every byte a Source returns is untrusted: sizes are capped while reading, and callers
// verify the content (trust.h, VerifiedIndex::verifyPackage) before using it.
//
//   auto src = openSource("/srv/mirror");            // or "http://registry.local:8080"
//   auto bytes = (*src)->fetch("timestamp.json", 64 << 10);
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::cli::install {

// Called as bytes arrive: (received, expected; 0 if unknown).
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

class Source {
 public:
  virtual ~Source() = default;
  // The bytes at `path` (relative, '/'-separated). NOT_FOUND if the source has no such
  // file; INVALID if it holds more than `max_bytes` (reading stops there);
  // UNAVAILABLE if the source cannot be reached.
  virtual Result<std::string> fetch(const std::string& path, uint64_t max_bytes,
                                    const ProgressFn& progress = {}) const = 0;
  // "mirror /srv/m" or "registry http://…", for messages and the install policy.
  virtual std::string describe() const = 0;
};

// packages/acme/hello/1.2.0.zip
std::string archivePath(std::string_view id, std::string_view version);

// A mirror folder.
std::unique_ptr<Source> directorySource(std::filesystem::path dir);
// How long an HTTP fetch may take. `read` bounds each wait for bytes (and the connect);
// `total` bounds the whole fetch, headers included, so a server that trickles a byte now
// and then cannot hold an install forever.
struct HttpTimeouts {
  std::chrono::milliseconds read = std::chrono::seconds(30);
  std::chrono::milliseconds total = std::chrono::minutes(10);
};

// A mirror folder behind a static web server at an http:// or https:// URL (a path prefix
// is kept); https:// is verified (cli/http_session.h). INVALID for other schemes.
Result<std::unique_ptr<Source>> httpMirrorSource(const std::string& url,
                                                 const HttpTimeouts& timeouts = {});
// A Trellis registry: `url` is its trellisd (http(s)://host:port, "/registry/v1" is added
// unless the path already ends so); `key` is the registry tenant's key (never logged).
Result<std::unique_ptr<Source>> registrySource(const std::string& url, std::string key,
                                               const HttpTimeouts& timeouts = {});

}  // namespace trellis::cli::install
