// File helpers private to the client library (the kernel's util is not linked here).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::marketplace::internal {

// The whole of a regular file, refusing one larger than `max_bytes`.
Result<std::string> readFileCapped(const std::filesystem::path& file, uint64_t max_bytes);

// Writes `content` to a new temp file beside `file` with `mode`, fsyncs it, then moves it
// into place and fsyncs the folder: rename() when `replace`, else link() so an existing
// file is never replaced (CONFLICT). Readers see nothing or the whole file.
Status writeFileAtomically(const std::filesystem::path& file, std::string_view content, mode_t mode,
                           bool replace);

// strerror(), thread-safe.
std::string errnoText(int e);

// A uniquely named sibling path for temporary files: "<dir>/.<name>.tmp-<random>".
std::filesystem::path tempSibling(const std::filesystem::path& file);

}  // namespace trellis::marketplace::internal
