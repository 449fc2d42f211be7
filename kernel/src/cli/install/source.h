// Where the installer gets signed metadata and archives: a mirror directory (air-gapped
// sites, `trellis mirror export`) or a registry / static mirror over HTTP. Both use one
// layout, so a mirror folder served by any static web server is also a registry:
//
//   root.json  timestamp.json  index.json         the signed metadata (docs/marketplace.md)
//   roots/<N>.root.json                           root version N, for rotation (optional)
//   packages/<namespace>/<name>/<version>.zip     the archives
//
// Every byte a Source returns is untrusted: sizes are capped while reading, and callers
// verify the content (trust.h, VerifiedIndex::verifyPackage) before using it.
//
//   auto src = openSource("/srv/mirror");            // or "http://registry.local:8080"
//   auto bytes = (*src)->fetch("timestamp.json", 64 << 10);
#pragma once

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
// A registry or static mirror at an http:// URL (a path prefix is kept). INVALID for
// other schemes.
Result<std::unique_ptr<Source>> httpSource(const std::string& url);

}  // namespace trellis::cli::install
