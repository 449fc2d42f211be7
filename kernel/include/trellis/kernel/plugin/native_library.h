// Opens a native plugin library with Boost.DLL and performs the ABI handshake:
// the entry symbol exists, the descriptor's struct_size/abi match the host, and the
// descriptor's id and version equal the manifest's. Every refusal names the file and
// the reason ("libx.so: not a loadable shared library: <dlerror>", "ABI major 2, host
// speaks 1", "descriptor says acme/x@1.0.1 but manifest says acme/x@1.0.0", …).
#pragma once

#include <filesystem>
#include <memory>

#include "trellis/kernel/plugin/manifest.h"
#include "trellis/plugin.h"
#include "trellis/status.hpp"

namespace trellis::kernel::plugin {

// Keeps the library mapped for as long as it lives; the descriptor points into it.
class NativeLibrary {
 public:
  static Result<std::unique_ptr<NativeLibrary>> open(const std::filesystem::path& file,
                                                     const Manifest& manifest);
  // What open() decides before it runs any of the library's code (manifest runtime and
  // ABI, a regular file, an ELF shared object this host can load); also used before a
  // library is handed to a worker process.
  static Status inspect(const std::filesystem::path& file, const Manifest& manifest);
  ~NativeLibrary();
  NativeLibrary(const NativeLibrary&) = delete;
  NativeLibrary& operator=(const NativeLibrary&) = delete;

  const trellis_plugin& descriptor() const { return *descriptor_; }
  const std::filesystem::path& file() const { return file_; }

 private:
  NativeLibrary() = default;
  struct Handle;
  std::unique_ptr<Handle> handle_;
  const trellis_plugin* descriptor_ = nullptr;
  std::filesystem::path file_;
};

// Pure ABI compatibility check, for unit tests and the marketplace resolver:
// equal major and plugin minor <= host minor.
Status checkAbi(uint16_t plugin_major, uint16_t plugin_minor);

}  // namespace trellis::kernel::plugin
