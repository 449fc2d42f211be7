// trellis-plugin.json (kernel/src/plugin/manifest.cc): the installer reads it out of
// downloaded packages and trellisd out of every plugin folder. Properties of a manifest the
// parser accepts: its id is valid, its version prints back and reparses equal, its ranges
// reparse from their text, its capabilities are known ones, its runtime and entries agree,
// its hashes are SHA-256 hex, and every path it names is one the package zip reader
// (marketplace/client/src/zip.cc, a separate implementation of the same rule) accepts too.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/marketplace/zip.h"

using trellis::kernel::plugin::Manifest;
using trellis::kernel::plugin::Version;
using trellis::kernel::plugin::VersionRange;

namespace {

// Zip entry names are capped at 1024 bytes; manifests do not cap paths on their own.
void checkPackagePath(const std::string& path) {
  if (path.size() > 1024) return;
  auto why = trellis::marketplace::unsafeEntryNameReason(path);
  FUZZ_CHECK(!why, "the manifest accepts path \"" + path +
                       "\", the zip reader refuses it: " + why.value_or(""));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = Manifest::parse(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!m) {
    FUZZ_CHECK(!m.status().message().empty(), "a refusal without a message");
    return 0;
  }
  FUZZ_CHECK(trellis::kernel::plugin::isValidPluginId(m->id), "accepted id " + m->id);
  auto v = Version::parse(m->version.toString());
  FUZZ_CHECK(v && *v == m->version, "version does not reparse: " + m->version.toString());
  if (m->host) FUZZ_CHECK(VersionRange::parse(m->host->text()), "host range does not reparse");
  for (const auto& dep : m->dependencies) {
    FUZZ_CHECK(trellis::kernel::plugin::isValidPluginId(dep.id), "accepted dependency " + dep.id);
    FUZZ_CHECK(VersionRange::parse(dep.range.text()), "dependency range does not reparse");
  }
  for (const auto& cap : m->capabilities) {
    FUZZ_CHECK(trellis::kernel::plugin::isKnownCapability(cap), "accepted capability " + cap);
    FUZZ_CHECK(m->hasCapability(cap), "hasCapability disagrees on " + cap);
  }
  FUZZ_CHECK(m->runtime == "native" || m->runtime == "lua", "accepted runtime " + m->runtime);
  FUZZ_CHECK(!m->entry.empty(), "accepted a manifest without an entry");
  if (m->runtime == "lua") FUZZ_CHECK(m->entry.count("lua") == 1, "lua runtime without lua entry");
  for (const auto& [platform, file] : m->entry) checkPackagePath(file);
  for (const auto& [path, sha] : m->files) {
    checkPackagePath(path);
    FUZZ_CHECK(sha.size() == 64 && sha.find_first_not_of("0123456789abcdef") == std::string::npos,
               "accepted sha256 " + sha + " for " + path);
  }
  for (const auto& route : m->blocking_routes) {
    FUZZ_CHECK(m->isBlocking(route.method, route.pattern),
               "isBlocking disagrees on " + route.method + " " + route.pattern);
  }
  (void)m->entryForThisPlatform();
  return 0;
}
