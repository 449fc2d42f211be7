// Durable, atomic file replacement: readers see the old content or the new, never a mix,
// and the new content is on disk before the call returns.
//
//   if (auto s = writeFileAtomically("var/ready.json", json, 0644); !s) log(s);
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::util {

// Writes `content` to a temporary file beside `file` with `mode`, fsyncs it, renames it
// over `file` and fsyncs the directory. Creates missing parent directories.
Status writeFileAtomically(const std::filesystem::path& file, std::string_view content,
                           mode_t mode);

}  // namespace trellis::kernel::util
