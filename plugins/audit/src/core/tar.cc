#include "core/tar.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>

namespace trellis::audit {
namespace {

constexpr size_t kBlock = 512;
// ustar header fields: offset and length.
constexpr size_t kName = 0, kNameLen = 100;
constexpr size_t kMode = 100, kUid = 108, kGid = 116, kSize = 124, kMtime = 136;
constexpr size_t kChecksum = 148, kType = 156, kMagic = 257, kVersion = 263, kPrefix = 345;

void octal(char* field, size_t len, uint64_t value) {
  std::snprintf(field, len, "%0*llo", static_cast<int>(len - 1),
                static_cast<unsigned long long>(value));
}

uint64_t headerSum(const char* h) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    // The checksum field counts as eight spaces.
    sum += (i >= kChecksum && i < kChecksum + 8) ? ' ' : static_cast<unsigned char>(h[i]);
  }
  return sum;
}

// An octal field (NUL- or space-terminated); nullopt for anything else.
std::optional<uint64_t> parseOctal(std::string_view field) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < field.size() && field[i] == ' ') ++i;
  size_t digits = 0;
  for (; i < field.size() && field[i] >= '0' && field[i] <= '7'; ++i, ++digits) {
    if (v > (UINT64_MAX >> 3)) return std::nullopt;
    v = v * 8 + static_cast<uint64_t>(field[i] - '0');
  }
  for (; i < field.size(); ++i) {
    if (field[i] != '\0' && field[i] != ' ') return std::nullopt;
  }
  if (digits == 0) return std::nullopt;
  return v;
}

bool plainName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

}  // namespace

std::string tarArchive(const std::vector<std::pair<std::string, std::string>>& files,
                       int64_t mtime_s) {
  std::string out;
  for (const auto& [name, bytes] : files) {
    char h[kBlock] = {};
    std::memcpy(h + kName, name.data(), std::min(name.size(), kNameLen));
    octal(h + kMode, 8, 0644);
    octal(h + kUid, 8, 0);
    octal(h + kGid, 8, 0);
    octal(h + kSize, 12, bytes.size());
    octal(h + kMtime, 12, static_cast<uint64_t>(std::max<int64_t>(mtime_s, 0)));
    h[kType] = '0';
    std::memcpy(h + kMagic, "ustar", 6);
    std::memcpy(h + kVersion, "00", 2);
    std::snprintf(h + kChecksum, 8, "%06llo", static_cast<unsigned long long>(headerSum(h)));
    h[kChecksum + 7] = ' ';
    out.append(h, kBlock);
    out += bytes;
    out.append((kBlock - bytes.size() % kBlock) % kBlock, '\0');
  }
  out.append(2 * kBlock, '\0');
  return out;
}

Result<std::map<std::string, std::string>> readTar(std::string_view archive) {
  std::map<std::string, std::string> files;
  size_t at = 0;
  for (;;) {
    if (at + kBlock > archive.size()) {
      return Status::invalid("not a complete tar archive: it ends at byte " +
                             std::to_string(archive.size()) + " inside a header");
    }
    const char* h = archive.data() + at;
    if (std::all_of(h, h + kBlock, [](char c) { return c == '\0'; })) return files;  // the end
    const std::string where = "tar entry at byte " + std::to_string(at);
    auto sum = parseOctal({h + kChecksum, 8});
    if (!sum || *sum != headerSum(h)) {
      return Status::invalid(where + ": bad header checksum (not a tar archive, or damaged)");
    }
    const std::string name(h + kName, strnlen(h + kName, kNameLen));
    if (h[kPrefix] != '\0' || !plainName(name)) {
      return Status::invalid(where + ": the name \"" + name.substr(0, 64) +
                             "\" is not a plain file name ([A-Za-z0-9._-])");
    }
    if (h[kType] != '0' && h[kType] != '\0') {
      return Status::invalid(where + " (" + name + "): not a regular file");
    }
    auto size = parseOctal({h + kSize, 12});
    if (!size) return Status::invalid(where + " (" + name + "): bad size field");
    at += kBlock;
    if (*size > archive.size() - at) {
      return Status::invalid(where + " (" + name + "): " + std::to_string(*size) +
                             " bytes, past the end of the archive");
    }
    if (files.size() == kMaxTarEntries) {
      return Status::invalid("more than " + std::to_string(kMaxTarEntries) +
                             " files in the archive");
    }
    if (!files.emplace(name, std::string(archive.substr(at, *size))).second) {
      return Status::invalid(where + ": \"" + name + "\" appears twice");
    }
    at += (*size + kBlock - 1) / kBlock * kBlock;
  }
}

}  // namespace trellis::audit
