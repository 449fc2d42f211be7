#include "trellis/marketplace/zip.h"

#include <Poco/Checksum.h>
#include <Poco/Exception.h>
#include <Poco/InflatingStream.h>
#include <Poco/MemoryStream.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <tuple>

namespace trellis::marketplace {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndOfCentralDirSig = 0x06054b50;
constexpr size_t kEndOfCentralDirSize = 22;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kMaxNameBytes = 1024;
constexpr uint16_t kHostUnix = 3;
constexpr uint32_t kFileTypeMask = 0170000;
constexpr uint32_t kRegularFile = 0100000;
constexpr uint32_t kSymlink = 0120000;
constexpr uint32_t kDirectory = 0040000;

uint16_t le16(std::string_view b, size_t at) {
  return static_cast<uint16_t>(uint8_t(b[at]) | (uint8_t(b[at + 1]) << 8));
}
uint32_t le32(std::string_view b, size_t at) {
  return uint32_t(uint8_t(b[at])) | (uint32_t(uint8_t(b[at + 1])) << 8) |
         (uint32_t(uint8_t(b[at + 2])) << 16) | (uint32_t(uint8_t(b[at + 3])) << 24);
}

Status bad(const std::string& what) {
  return Status::invalid("not a valid package archive: " + what);
}

std::string inQuotes(std::string_view name) {
  std::string out = "\"";
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace

std::optional<std::string> unsafeEntryNameReason(std::string_view p) {
  if (p.empty()) return "it is empty";
  if (p.size() > kMaxNameBytes) return "it is longer than 1024 bytes";
  if (p.find('\\') != std::string_view::npos) return "it contains a backslash";
  if (p.front() == '/') return "it is an absolute path";
  if (p.size() >= 2 && p[1] == ':' && std::isalpha(static_cast<unsigned char>(p[0]))) {
    return "it is an absolute path (drive letter)";
  }
  for (char c : p) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "it contains a control character";
  }
  size_t start = 0;
  while (true) {
    size_t slash = p.find('/', start);
    std::string_view part =
        p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part == "..") return "it contains \"..\" (escapes the package folder)";
    if (part.empty() || part == ".") return "it is not normalized (empty or \".\" segment)";
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return std::nullopt;
}

Result<ZipReader> ZipReader::open(std::string archive, const ZipLimits& limits) {
  const std::string_view b = archive;
  if (b.size() > limits.max_archive_bytes) {
    return Status::invalid("package archive is " + std::to_string(b.size()) +
                           " bytes; the limit is " + std::to_string(limits.max_archive_bytes));
  }
  if (b.size() < kEndOfCentralDirSize) return bad("too short to be a zip file");

  // The end-of-central-directory record must end the file exactly (after its comment), so
  // bytes appended after it cannot hide a second directory.
  size_t eocd = std::string_view::npos;
  size_t lowest =
      b.size() > kEndOfCentralDirSize + 0xffff ? b.size() - kEndOfCentralDirSize - 0xffff : 0;
  for (size_t at = b.size() - kEndOfCentralDirSize + 1; at-- > lowest;) {
    if (le32(b, at) == kEndOfCentralDirSig &&
        at + kEndOfCentralDirSize + le16(b, at + 20) == b.size()) {
      eocd = at;
      break;
    }
  }
  if (eocd == std::string_view::npos) return bad("no end-of-central-directory record");
  uint16_t disk = le16(b, eocd + 4), cd_disk = le16(b, eocd + 6);
  uint16_t count_here = le16(b, eocd + 8), count = le16(b, eocd + 10);
  uint32_t cd_size = le32(b, eocd + 12), cd_offset = le32(b, eocd + 16);
  if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    return bad("ZIP64 archives are not supported");
  }
  if (disk != 0 || cd_disk != 0 || count_here != count) {
    return bad("multi-disk archives are not supported");
  }
  if (count > limits.max_entries) {
    return Status::invalid("package archive has " + std::to_string(count) +
                           " entries; the limit is " + std::to_string(limits.max_entries));
  }
  if (uint64_t(cd_offset) + cd_size != eocd) {
    return bad("the central directory is not where the end record says");
  }

  std::vector<ZipEntry> entries;
  std::set<std::string, std::less<>> names;  // files
  std::set<std::string, std::less<>> dirs;   // folder entries, without the trailing '/'
  uint64_t total = 0;
  size_t at = cd_offset;
  for (uint16_t i = 0; i < count; ++i) {
    if (at + kCentralHeaderSize > eocd || le32(b, at) != kCentralHeaderSig) {
      return bad("central directory entry " + std::to_string(i) + " is damaged");
    }
    uint16_t made_by = le16(b, at + 4);
    uint16_t flags = le16(b, at + 8);
    ZipEntry e;
    e.method = le16(b, at + 10);
    e.crc32 = le32(b, at + 16);
    e.compressed_size = le32(b, at + 20);
    e.uncompressed_size = le32(b, at + 24);
    uint16_t name_len = le16(b, at + 28), extra_len = le16(b, at + 30),
             comment_len = le16(b, at + 32);
    uint32_t external = le32(b, at + 38);
    uint32_t local_offset = le32(b, at + 42);
    size_t next = at + kCentralHeaderSize + name_len + extra_len + comment_len;
    if (next > eocd) return bad("central directory entry " + std::to_string(i) + " overruns");
    e.name.assign(b.substr(at + kCentralHeaderSize, name_len));
    const std::string shown = inQuotes(e.name);

    // A folder entry ("lib/") is the one place a trailing slash is allowed.
    e.directory = !e.name.empty() && e.name.back() == '/';
    std::string_view path = e.directory ? std::string_view(e.name).substr(0, e.name.size() - 1)
                                        : std::string_view(e.name);
    if (auto why = unsafeEntryNameReason(path)) {
      return Status::invalid("package archive entry " + shown + " is refused: " + *why);
    }
    if (flags & 0x0001) return Status::invalid("package archive entry " + shown + " is encrypted");
    if (e.method != 0 && e.method != 8) {
      return Status::invalid("package archive entry " + shown + " uses compression method " +
                             std::to_string(e.method) + " (only store and deflate are allowed)");
    }
    if ((made_by >> 8) == kHostUnix) {
      uint32_t type = (external >> 16) & kFileTypeMask;
      if (type == kSymlink) {
        return Status::invalid("package archive entry " + shown +
                               " is a symbolic link; packages hold regular files only");
      }
      if (type != 0 && type != kRegularFile && type != kDirectory) {
        return Status::invalid("package archive entry " + shown +
                               " is a special file; packages hold regular files only");
      }
    }
    bool unix_dir = (made_by >> 8) == kHostUnix && ((external >> 16) & kFileTypeMask) == kDirectory;
    if (unix_dir && !e.directory) {
      return Status::invalid("package archive entry " + shown +
                             " is a folder whose name does not end in '/'");
    }
    if (e.directory && e.uncompressed_size != 0) {
      return Status::invalid("package archive entry " + shown + " is a folder with content");
    }
    if (!(e.directory ? dirs : names).insert(std::string(path)).second) {
      return Status::invalid("package archive has two entries named " + shown);
    }
    if (e.compressed_size == 0xffffffff || e.uncompressed_size == 0xffffffff ||
        local_offset == 0xffffffff) {
      return bad("entry " + shown + " needs ZIP64, which is not supported");
    }
    if (e.uncompressed_size > limits.max_entry_bytes) {
      return Status::invalid(
          "package archive entry " + shown + " is " + std::to_string(e.uncompressed_size) +
          " bytes uncompressed; the limit is " + std::to_string(limits.max_entry_bytes));
    }
    total += e.uncompressed_size;
    if (total > limits.max_total_bytes) {
      return Status::invalid("package archive inflates to more than " +
                             std::to_string(limits.max_total_bytes) + " bytes (the limit)");
    }
    if (e.uncompressed_size > limits.ratio_applies_above &&
        e.uncompressed_size / std::max<uint64_t>(e.compressed_size, 1) > limits.max_ratio) {
      return Status::invalid("package archive entry " + shown + " has a compression ratio above " +
                             std::to_string(limits.max_ratio) + ":1 (a zip bomb?)");
    }
    if (e.method == 0 && e.compressed_size != e.uncompressed_size) {
      return bad("stored entry " + shown + " has different compressed and uncompressed sizes");
    }

    // The local header must agree with the central directory on what matters.
    size_t local = local_offset;
    if (uint64_t(local) + kLocalHeaderSize > cd_offset || le32(b, local) != kLocalHeaderSig) {
      return bad("entry " + shown + " points at a damaged local header");
    }
    uint16_t local_name_len = le16(b, local + 26), local_extra_len = le16(b, local + 28);
    if (uint64_t(local) + kLocalHeaderSize + local_name_len > cd_offset ||
        b.substr(local + kLocalHeaderSize, local_name_len) != e.name) {
      return bad("entry " + shown + ": local header disagrees with the central directory");
    }
    // Another reader (an unzip tool, a later version of this one) may go by the local
    // header: it must say exactly what the central directory says. Packages never need a
    // data descriptor, whose zeroed local fields would let the two disagree.
    for (auto [field, local_value, central_value] :
         {std::tuple<const char*, uint32_t, uint32_t>{"flags", le16(b, local + 6), flags},
          {"compression method", le16(b, local + 8), e.method},
          {"CRC-32", le32(b, local + 14), e.crc32},
          {"compressed size", le32(b, local + 18), uint32_t(e.compressed_size)},
          {"uncompressed size", le32(b, local + 22), uint32_t(e.uncompressed_size)}}) {
      if (local_value != central_value) {
        return bad("entry " + shown +
                   ": the local header and the central directory disagree "
                   "on the " +
                   field + " (local " + std::to_string(local_value) + ", central " +
                   std::to_string(central_value) + ")");
      }
    }
    e.header_offset = local;
    e.data_offset = uint64_t(local) + kLocalHeaderSize + local_name_len + local_extra_len;
    if (e.data_offset + e.compressed_size > cd_offset) {
      return bad("entry " + shown + " overruns the central directory");
    }
    entries.push_back(std::move(e));
    at = next;
  }
  if (at != eocd) return bad("unexpected bytes after the central directory");

  // Entries that share bytes are a known zip-bomb construction; packages never need them.
  std::vector<const ZipEntry*> by_offset;
  by_offset.reserve(entries.size());
  for (const auto& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const ZipEntry* x, const ZipEntry* y) {
    return x->header_offset < y->header_offset;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipEntry& prev = *by_offset[i - 1];
    if (prev.data_offset + prev.compressed_size > by_offset[i]->header_offset) {
      return bad("entries " + inQuotes(prev.name) + " and " + inQuotes(by_offset[i]->name) +
                 " overlap");
    }
  }
  // A name that is both a file and a folder ("lib" and "lib/x.so", or "lib" and "lib/")
  // cannot be extracted.
  for (const auto& dir : dirs) {
    if (names.count(dir)) {
      return Status::invalid("package archive entry " + inQuotes(dir) +
                             " is both a file and a folder");
    }
  }
  for (const auto& name : names) {
    for (size_t slash = name.find('/'); slash != std::string::npos;
         slash = name.find('/', slash + 1)) {
      if (names.count(std::string_view(name).substr(0, slash))) {
        return Status::invalid("package archive entry " + inQuotes(name.substr(0, slash)) +
                               " is both a file and a folder");
      }
    }
  }
  return ZipReader(std::move(archive), std::move(entries));
}

const ZipEntry* ZipReader::find(std::string_view name) const {
  for (const auto& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

Result<std::string> ZipReader::read(const ZipEntry& e) const {
  const std::string shown = inQuotes(e.name);
  std::string_view raw = std::string_view(archive_).substr(e.data_offset, e.compressed_size);
  std::string out;
  if (e.method == 0) {
    out.assign(raw);
  } else {
    try {
      // Poco inflates zlib streams only: wrap the raw deflate data in a fake zlib header
      // and a dummy Adler-32 trailer, which STREAM_ZIP does not check (Poco::Zip does
      // the same); the CRC-32 below is the real integrity check.
      std::string framed;
      framed.reserve(raw.size() + 6);
      framed.append("\x78\x9c", 2).append(raw).append(4, ' ');
      Poco::MemoryInputStream compressed(framed.data(),
                                         static_cast<std::streamsize>(framed.size()));
      Poco::InflatingInputStream inflater(compressed, Poco::InflatingStreamBuf::STREAM_ZIP);
      // Never trust the declared size beyond using it as the cap: read one byte past it
      // to detect an entry that inflates to more than it claims.
      out.resize(e.uncompressed_size + 1);
      size_t got = 0;
      while (got < out.size()) {
        inflater.read(out.data() + got, static_cast<std::streamsize>(out.size() - got));
        std::streamsize n = inflater.gcount();
        if (n <= 0) break;
        got += static_cast<size_t>(n);
      }
      if (got > e.uncompressed_size) {
        return Status::invalid("package archive entry " + shown +
                               " inflates beyond its declared size (a zip bomb?)");
      }
      out.resize(got);
    } catch (const Poco::Exception& ex) {
      return Status::invalid("package archive entry " + shown + " is corrupt: " + ex.displayText());
    }
  }
  if (out.size() != e.uncompressed_size) {
    return Status::invalid("package archive entry " + shown + " is truncated");
  }
  Poco::Checksum crc(Poco::Checksum::TYPE_CRC32);
  crc.update(out.data(), static_cast<unsigned>(out.size()));
  if (crc.checksum() != e.crc32) {
    return Status::invalid("package archive entry " + shown + " fails its CRC check (corrupt)");
  }
  return out;
}

}  // namespace trellis::marketplace
