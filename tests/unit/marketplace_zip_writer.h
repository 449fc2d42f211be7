// Test helper: writes zip bytes by hand, so tests can craft archives no honest tool would
// produce (symlinks, absolute paths, duplicate names, lying sizes).
#pragma once

#include <Poco/Checksum.h>
#include <Poco/DeflatingStream.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace trellis::test {

struct RawZipEntry {
  RawZipEntry(std::string n, std::string d, bool compress = true, uint32_t mode = 0100644)
      : name(std::move(n)), data(std::move(d)), deflate(compress), unix_mode(mode) {}

  std::string name;
  std::string data;
  bool deflate = true;
  uint32_t unix_mode = 0100644;           // 0: written as made by MS-DOS, no Unix mode
  std::optional<uint32_t> declared_size;  // lie about the uncompressed size
};

inline void put16(std::string& out, uint16_t v) {
  out += char(v & 0xff);
  out += char(v >> 8);
}
inline void put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += char((v >> (8 * i)) & 0xff);
}

inline std::string rawDeflate(const std::string& data) {
  std::ostringstream out;
  Poco::DeflatingOutputStream deflater(out, Poco::DeflatingStreamBuf::STREAM_ZLIB, 9);
  deflater << data;
  deflater.close();
  std::string zlib = out.str();
  return zlib.substr(2, zlib.size() - 6);  // raw deflate: no zlib header or Adler-32
}

inline std::string writeZip(const std::vector<RawZipEntry>& entries) {
  std::string out, central;
  for (const auto& e : entries) {
    std::string body = e.deflate ? rawDeflate(e.data) : e.data;
    Poco::Checksum crc(Poco::Checksum::TYPE_CRC32);
    crc.update(e.data.data(), static_cast<unsigned>(e.data.size()));
    uint32_t size = e.declared_size.value_or(static_cast<uint32_t>(e.data.size()));
    uint32_t offset = static_cast<uint32_t>(out.size());
    uint16_t method = e.deflate ? 8 : 0;
    put32(out, 0x04034b50);
    put16(out, 20);
    put16(out, 0);
    put16(out, method);
    put16(out, 0);
    put16(out, 0x21);
    put32(out, crc.checksum());
    put32(out, static_cast<uint32_t>(body.size()));
    put32(out, size);
    put16(out, static_cast<uint16_t>(e.name.size()));
    put16(out, 0);
    out += e.name;
    out += body;

    put32(central, 0x02014b50);
    put16(central, e.unix_mode ? (3 << 8) | 20 : 20);
    put16(central, 20);
    put16(central, 0);
    put16(central, method);
    put16(central, 0);
    put16(central, 0x21);
    put32(central, crc.checksum());
    put32(central, static_cast<uint32_t>(body.size()));
    put32(central, size);
    put16(central, static_cast<uint16_t>(e.name.size()));
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put32(central, e.unix_mode << 16);
    put32(central, offset);
    central += e.name;
  }
  uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out += central;
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, static_cast<uint16_t>(entries.size()));
  put16(out, static_cast<uint16_t>(entries.size()));
  put32(out, static_cast<uint32_t>(central.size()));
  put32(out, cd_offset);
  put16(out, 0);
  return out;
}

}  // namespace trellis::test
