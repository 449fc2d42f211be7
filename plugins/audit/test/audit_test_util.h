// What the audit plugin's integration tests share: reading its JSON and JSON Lines answers,
// the zero-padded sequence numbers of its storage keys, and verifying an exported pack.
#pragma once

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {

inline Poco::JSON::Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
}

// The non-empty lines of a JSON Lines body.
inline std::vector<std::string> lines(const std::string& body) {
  std::vector<std::string> out;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// A sequence number as the plugin's storage keys spell it (20 digits).
inline std::string padded(uint64_t n) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%020llu", static_cast<unsigned long long>(n));
  return buf;
}

// Runs `trellis-audit verify` on an evidence pack (a tar, or a folder of its files); its
// exit status, and its output in `out`.
inline int verifyPackAt(const std::filesystem::path& pack, std::string* out) {
  int status = -1;
  *out =
      runCommand(std::string(TRELLIS_AUDIT_TOOL) + " verify " + pack.string() + " 2>&1", &status);
  return status;
}
// The same for the tar a log's evidence route served.
inline int verifyPack(const std::string& tar, std::string* out) {
  TempDir dir;
  writeFile(dir / "pack.tar", tar);
  return verifyPackAt(dir / "pack.tar", out);
}

}  // namespace trellis::test
