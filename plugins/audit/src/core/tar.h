// The evidence pack as one file: a POSIX ustar archive of a few regular files with plain
// names, written by the plugin and read back by the verifier. The reader takes hostile
// bytes: it checks every header's checksum and size, keeps files in memory (nothing is
// extracted to disk), and refuses anything but regular files with a name of
// [A-Za-z0-9._-] — no directories, links or paths.
//
//   std::string tar = tarArchive({{"records.jsonl", records}, {"public-key.pem", pem}}, now_s);
//   auto files = readTar(tar);   // Result<std::map<name, bytes>>
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::audit {

inline constexpr size_t kMaxTarEntries = 64;

std::string tarArchive(const std::vector<std::pair<std::string, std::string>>& files,
                       int64_t mtime_s);
// INVALID naming the entry (or offset) at fault.
Result<std::map<std::string, std::string>> readTar(std::string_view archive);

}  // namespace trellis::audit
