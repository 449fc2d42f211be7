// Plugin packages: one zip holding `trellis-plugin.json` (the manifest, with the SHA-256 of
// every other file in its "files" map), `trellis-plugin.sig` (the publisher's Ed25519
// signature over the manifest's canonical JSON bytes) and the files themselves.
//
//   // publisher
//   auto key = PrivateKey::loadPem("acme.pem");
//   auto built = buildPackage("build/plugins/acme-hello", *key, "acme-hello-1.2.0.zip");
//   // admin (the install command): one read of the archive, then verify, then extract
//   auto pkg = PackageArchive::open("acme-hello-1.2.0.zip");
//   if (auto s = pkg->verify(trusted_keys); !s) refuse(s);
//   if (auto s = pkg->extractTo("plugins/acme-hello"); !s) refuse(s);  // all or nothing
//
// Building is deterministic: entries sorted by name, a fixed timestamp (1980-01-01), the
// manifest stored in canonical form, so the same folder and key give the same bytes.
#pragma once

#include <Poco/JSON/Object.h>

#include <filesystem>
#include <string>
#include <vector>

#include "trellis/marketplace/ed25519.h"
#include "trellis/marketplace/zip.h"
#include "trellis/status.hpp"

namespace trellis::marketplace {

inline constexpr std::string_view kManifestFile = "trellis-plugin.json";
inline constexpr std::string_view kSignatureFile = "trellis-plugin.sig";

// trellis-plugin.sig: {"keyid": "<16 hex>", "sig": "<base64 of 64 bytes>"}
struct PackageSignature {
  std::string keyid;
  std::string sig;  // raw 64 bytes
};

struct BuiltPackage {
  std::string id;
  std::string version;
  std::string keyid;
  std::string sha256;              // of the archive: what the registry index records
  std::vector<std::string> files;  // packaged files besides manifest and signature
  uint64_t bytes = 0;
};

// The archive bytes for `plugin_dir`, signed with `key`. The folder must hold
// trellis-plugin.json (id, version, entry naming files that exist); every other regular,
// non-hidden file in the tree is packaged. A symlink anywhere is refused. The manifest's
// "files" map is replaced by the SHA-256 of every packaged file. Nothing is written.
Result<std::string> buildPackageBytes(const std::filesystem::path& plugin_dir,
                                      const PrivateKey& key, BuiltPackage* info = nullptr);

// buildPackageBytes, then writes `out` atomically (temp file + rename); an existing `out`
// is replaced only if `overwrite`.
Result<BuiltPackage> buildPackage(const std::filesystem::path& plugin_dir, const PrivateKey& key,
                                  const std::filesystem::path& out, bool overwrite = false);

// What a package says about itself, read without extracting anything.
struct PackageInfo {
  std::string id;
  std::string version;
  std::string manifest_json;       // as stored in the archive
  std::string canonical_manifest;  // the signed bytes
  Poco::JSON::Object::Ptr manifest;
  std::map<std::string, std::string> files;  // manifest "files": path -> sha256 hex
  PackageSignature signature;
  std::vector<ZipEntry> entries;
  std::string archive_sha256;
  uint64_t archive_bytes = 0;
};

class PackageArchive {
 public:
  // Reads the archive once (at most limits.max_archive_bytes) and checks its structure:
  // the zip rules of ZipReader, a manifest and a signature file that parse.
  static Result<PackageArchive> open(const std::filesystem::path& zip,
                                     const ZipLimits& limits = {});
  static Result<PackageArchive> fromBytes(std::string bytes, const ZipLimits& limits = {});

  const PackageInfo& info() const { return info_; }

  // Authenticity and integrity: the signature's key is one of `trusted` and verifies the
  // canonical manifest; every file's SHA-256 matches the manifest; no file is unlisted
  // and no listed file is missing. PERMISSION_DENIED for an untrusted key, INVALID for
  // the rest; the message names the file or key.
  Status verify(const std::vector<PublicKey>& trusted) const;

  // Writes every file into a fresh temp folder beside `dest`, checking each against the
  // manifest's hash, then renames it to `dest`, which must not exist. On any failure the
  // temp folder is removed: nothing partial is left behind. Does not check the signature:
  // call verify() first.
  Status extractTo(const std::filesystem::path& dest) const;

 private:
  PackageArchive(ZipReader zip, PackageInfo info) : zip_(std::move(zip)), info_(std::move(info)) {}
  Status checkFiles() const;

  ZipReader zip_;
  PackageInfo info_;
};

Result<PackageInfo> inspectPackage(const std::filesystem::path& zip, const ZipLimits& limits = {});
Status verifyPackage(const std::filesystem::path& zip, const std::vector<PublicKey>& trusted,
                     const ZipLimits& limits = {});
// Verifies (as PackageArchive::verify) and only then extracts (as extractTo): there is no
// way to extract an unverified package through the free functions.
Status extractPackage(const std::filesystem::path& zip, const std::filesystem::path& dest,
                      const std::vector<PublicKey>& trusted, const ZipLimits& limits = {});

}  // namespace trellis::marketplace
