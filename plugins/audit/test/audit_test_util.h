// What the audit plugin's integration tests share: reading its JSON and JSON Lines answers,
// and the zero-padded sequence numbers of its storage keys.
#pragma once

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

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

}  // namespace trellis::test
