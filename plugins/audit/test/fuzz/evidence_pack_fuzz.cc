// The evidence pack as an auditor receives it: hostile bytes from whoever handed it over.
// Properties: the tar reader (core/tar.h) either names the fault or returns only plain
// names within its entry limit, and what it returns survives a rewrite unchanged; the
// verifier (core/verify.h) answers every pack with one of its exit codes and a message,
// never a crash or an escaping exception. A file "client.json" in the pack is used as the
// auditor's own kept checkpoint, so that path is explored too.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/tar.h"
#include "core/verify.h"
#include "fuzz_check.h"

namespace {

using trellis::audit::VerifyCode;

bool plainName(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return name != "." && name != "..";
}

bool knownCode(VerifyCode code) {
  switch (code) {
    case VerifyCode::kOk:
    case VerifyCode::kUsage:
    case VerifyCode::kBadPack:
    case VerifyCode::kModified:
    case VerifyCode::kDeleted:
    case VerifyCode::kInserted:
    case VerifyCode::kReordered:
    case VerifyCode::kTruncated:
    case VerifyCode::kBadSignature:
    case VerifyCode::kFork:
    case VerifyCode::kInconsistent: return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto files = trellis::audit::readTar(bytes);
  if (!files) {
    FUZZ_CHECK(!files.status().message().empty(), "a refused archive names no fault");
    return 0;
  }
  FUZZ_CHECK(files->size() <= trellis::audit::kMaxTarEntries, "more entries than the limit");
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& [name, content] : *files) {
    FUZZ_CHECK(plainName(name), "an entry name that is not plain: " + name);
    entries.emplace_back(name, content);
  }
  auto again = trellis::audit::readTar(trellis::audit::tarArchive(entries, 0));
  FUZZ_CHECK(again && *again == *files, "an archive the reader accepted does not round-trip");

  std::optional<std::string> client;
  if (auto it = files->find("client.json"); it != files->end()) client = it->second;
  const auto report = trellis::audit::verifyPackFiles(*files, client);
  FUZZ_CHECK(knownCode(report.code), "an exit code outside the verifier's list");
  FUZZ_CHECK(!report.message.empty(), "a verdict without a message");
  return 0;
}
