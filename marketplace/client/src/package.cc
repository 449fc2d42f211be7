#include "trellis/marketplace/package.h"

#include <Poco/DateTime.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/Path.h>
#include <Poco/Zip/Compress.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>

#include "file_io.h"
#include "trellis/marketplace/canonical_json.h"
#include "trellis/marketplace/encoding.h"

namespace trellis::marketplace {
namespace {

namespace fs = std::filesystem;
using Poco::Dynamic::Var;
using Poco::JSON::Object;

// Manifests are small; the kernel refuses anything above 1 MiB too.
constexpr uint64_t kMaxManifestBytes = 1 << 20;
constexpr uint64_t kMaxSignatureBytes = 4096;

bool isIdPart(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && c == '-');
    if (!ok) return false;
  }
  return true;
}

bool isPluginId(std::string_view id) {
  size_t slash = id.find('/');
  return slash != std::string_view::npos && isIdPart(id.substr(0, slash)) &&
         isIdPart(id.substr(slash + 1));
}

std::string inQuotes(const std::string& s) {
  return "\"" + s + "\"";
}

Result<std::string> stringField(const Object& o, const std::string& name,
                                const std::string& where) {
  if (!o.has(name)) return Status::invalid(where + ": \"" + name + "\" is required but missing");
  Var v = o.get(name);
  if (!v.isString()) return Status::invalid(where + ": \"" + name + "\" must be a string");
  return v.extract<std::string>();
}

// The minimal schema a package needs; the kernel's parser does the full validation.
Result<Object::Ptr> parseManifest(std::string_view text, const std::string& where) {
  auto v = parseJsonStrict(text, kMaxManifestBytes);
  if (!v) return Status::invalid(where + ": " + v.status().message());
  if (v->type() != typeid(Object::Ptr)) return Status::invalid(where + ": must be a JSON object");
  Object::Ptr m = v->extract<Object::Ptr>();
  auto id = stringField(*m, "id", where);
  if (!id) return id.status();
  if (!isPluginId(*id)) {
    return Status::invalid(where + ": id " + inQuotes(*id) +
                           " is not a valid plugin id (expected namespace/name)");
  }
  auto version = stringField(*m, "version", where);
  if (!version) return version.status();
  if (version->empty()) return Status::invalid(where + ": \"version\" is empty");
  if (m->has("runtime")) {
    auto runtime = stringField(*m, "runtime", where);
    if (!runtime) return runtime.status();
    if (*runtime != "native" && *runtime != "lua") {
      return Status::invalid(where + ": unknown runtime " + inQuotes(*runtime) +
                             " (known: native, lua)");
    }
  }
  return m;
}

Result<std::map<std::string, std::string>> filesMap(const Object& m, const std::string& where) {
  std::map<std::string, std::string> files;
  if (!m.has("files")) return files;
  Var v = m.get("files");
  if (v.type() != typeid(Object::Ptr)) {
    return Status::invalid(where + ": \"files\" must be an object of path -> sha256");
  }
  for (const auto& [path, hash] : *v.extract<Object::Ptr>()) {
    if (!hash.isString() || !isSha256Hex(hash.extract<std::string>())) {
      return Status::invalid(where + ": files." + inQuotes(path) +
                             " must be 64 lowercase hex characters (SHA-256)");
    }
    if (auto why = unsafeEntryNameReason(path)) {
      return Status::invalid(where + ": files." + inQuotes(path) + " is not a safe path: " + *why);
    }
    if (path == kManifestFile || path == kSignatureFile) {
      return Status::invalid(where + ": files must not list " + path);
    }
    files[path] = hash.extract<std::string>();
  }
  return files;
}

Result<PackageSignature> parseSignature(std::string_view text) {
  const std::string where(kSignatureFile);
  auto v = parseJsonStrict(text, kMaxSignatureBytes);
  if (!v) return Status::invalid(where + ": " + v.status().message());
  if (v->type() != typeid(Object::Ptr)) return Status::invalid(where + ": must be a JSON object");
  Object::Ptr o = v->extract<Object::Ptr>();
  for (const auto& [name, value] : *o) {
    if (name != "keyid" && name != "sig") {
      return Status::invalid(where + ": unknown field " + inQuotes(name) + " (known: keyid, sig)");
    }
  }
  auto keyid = stringField(*o, "keyid", where);
  if (!keyid) return keyid.status();
  auto sig = stringField(*o, "sig", where);
  if (!sig) return sig.status();
  auto raw = base64Decode(*sig);
  if (!raw) return Status::invalid(where + ": sig: " + raw.status().message());
  if (raw->size() != kEd25519SignatureBytes) {
    return Status::invalid(where + ": malformed signature: an Ed25519 signature is 64 bytes, got " +
                           std::to_string(raw->size()));
  }
  return PackageSignature{*keyid, *raw};
}

bool isHidden(const fs::path& rel) {
  for (const auto& part : rel) {
    if (!part.empty() && part.string().front() == '.') return true;
  }
  return false;
}

// Every packaged file, relative, '/'-separated, sorted; refuses symlinks and specials.
Result<std::vector<std::string>> listPluginFiles(const fs::path& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) return Status::invalid(dir.string() + ": cannot list: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return Status::invalid(dir.string() + ": cannot list: " + ec.message());
    fs::path rel = it->path().lexically_relative(dir);
    fs::file_status st = it->symlink_status(ec);
    if (isHidden(rel)) {
      if (fs::is_directory(st)) it.disable_recursion_pending();
      continue;
    }
    if (fs::is_symlink(st)) {
      return Status::invalid(it->path().string() +
                             " is a symbolic link; packages hold regular files only");
    }
    if (fs::is_directory(st)) continue;
    if (!fs::is_regular_file(st)) {
      return Status::invalid(it->path().string() + " is not a regular file");
    }
    std::string name = rel.generic_string();
    if (name == kManifestFile || name == kSignatureFile) continue;
    if (auto why = unsafeEntryNameReason(name)) {
      return Status::invalid(it->path().string() + ": cannot be packaged: " + *why);
    }
    files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

Result<std::string> buildPackageBytes(const fs::path& dir, const PrivateKey& key,
                                      BuiltPackage* info) {
  const ZipLimits limits;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::notFound(dir.string() + ": no such folder");
  const fs::path manifest_path = dir / kManifestFile;
  auto text = internal::readFileCapped(manifest_path, kMaxManifestBytes);
  if (!text) {
    if (text.status().code() == StatusCode::kNotFound) {
      return Status::invalid(dir.string() + " holds no " + std::string(kManifestFile) +
                             "; is it a plugin build folder?");
    }
    return text.status();
  }
  auto manifest = parseManifest(*text, manifest_path.string());
  if (!manifest) return manifest.status();
  Object::Ptr m = *manifest;
  const std::string id = m->getValue<std::string>("id");
  const std::string version = m->getValue<std::string>("version");

  auto files = listPluginFiles(dir);
  if (!files) return files.status();
  std::set<std::string> present(files->begin(), files->end());

  // Entry files must be in the package, or it could never load.
  if (!m->has("entry") || m->get("entry").type() != typeid(Object::Ptr) ||
      m->getObject("entry")->size() == 0) {
    return Status::invalid(manifest_path.string() + ": \"entry\" must name at least one file");
  }
  for (const auto& [platform, file] : *m->getObject("entry")) {
    if (!file.isString()) {
      return Status::invalid(manifest_path.string() + ": entry." + inQuotes(platform) +
                             " must be a string");
    }
    const std::string f = file.extract<std::string>();
    if (!present.count(f)) {
      return Status::invalid(manifest_path.string() + ": entry." + inQuotes(platform) + " names " +
                             inQuotes(f) + ", which is not in " + dir.string());
    }
  }

  Object::Ptr hashes = new Object;
  std::vector<std::pair<std::string, std::string>> contents;  // sorted by name
  uint64_t total = 0;
  for (const auto& name : *files) {
    auto bytes = internal::readFileCapped(dir / name, limits.max_entry_bytes);
    if (!bytes) return bytes.status();
    total += bytes->size();
    if (total > limits.max_total_bytes) {
      return Status::invalid(dir.string() + ": more than " +
                             std::to_string(limits.max_total_bytes) +
                             " bytes of files; installers would refuse the package");
    }
    hashes->set(name, sha256Hex(*bytes));
    contents.emplace_back(name, std::move(*bytes));
  }
  m->set("files", hashes);
  auto canonical = canonicalJson(m);
  if (!canonical) {
    return Status::invalid(manifest_path.string() + ": " + canonical.status().message());
  }
  auto sig = key.sign(*canonical);
  if (!sig) return sig.status();
  Object::Ptr sig_json = new Object;
  sig_json->set("keyid", key.keyId());
  sig_json->set("sig", base64Encode(*sig));
  auto sig_text = canonicalJson(sig_json);
  if (!sig_text) return sig_text.status();

  contents.emplace_back(std::string(kManifestFile), *canonical);
  contents.emplace_back(std::string(kSignatureFile), *sig_text);
  std::sort(contents.begin(), contents.end());

  std::ostringstream out;
  try {
    Poco::Zip::Compress zip(out, /*seekableOut=*/true);
    const Poco::DateTime fixed(1980, 1, 1, 0, 0, 0);  // the earliest DOS time: reproducible
    for (const auto& [name, bytes] : contents) {
      std::istringstream in(bytes);
      zip.addFile(in, fixed, Poco::Path(name, Poco::Path::PATH_UNIX),
                  Poco::Zip::ZipCommon::CM_DEFLATE, Poco::Zip::ZipCommon::CL_MAXIMUM);
    }
    zip.close();
  } catch (const Poco::Exception& e) {
    return Status::internal("cannot write the zip archive: " + e.displayText());
  }
  std::string archive = out.str();
  if (info) {
    info->id = id;
    info->version = version;
    info->keyid = key.keyId();
    info->sha256 = sha256Hex(archive);
    info->files = *files;
    info->bytes = archive.size();
  }
  return archive;
}

Result<BuiltPackage> buildPackage(const fs::path& dir, const PrivateKey& key, const fs::path& out,
                                  bool overwrite) {
  // An archive written into the folder would be packaged into the next build of it.
  std::error_code ec;
  fs::path abs_dir = fs::weakly_canonical(dir, ec);
  fs::path abs_out = fs::weakly_canonical(out, ec);
  auto rel = abs_out.lexically_relative(abs_dir);
  if (!ec && !rel.empty() && *rel.begin() != "..") {
    return Status::invalid(out.string() + " is inside the plugin folder " + dir.string() +
                           "; write the package somewhere else");
  }
  BuiltPackage info;
  auto bytes = buildPackageBytes(dir, key, &info);
  if (!bytes) return bytes.status();
  if (Status s = internal::writeFileAtomically(out, *bytes, 0644, overwrite); !s) return s;
  return info;
}

Result<PackageArchive> PackageArchive::open(const fs::path& zip, const ZipLimits& limits) {
  auto bytes = internal::readFileCapped(zip, limits.max_archive_bytes);
  if (!bytes) return bytes.status();
  auto pkg = fromBytes(std::move(*bytes), limits);
  if (!pkg) return Status(pkg.status().code(), zip.string() + ": " + pkg.status().message());
  return pkg;
}

Result<PackageArchive> PackageArchive::fromBytes(std::string bytes, const ZipLimits& limits) {
  PackageInfo info;
  info.archive_sha256 = sha256Hex(bytes);
  info.archive_bytes = bytes.size();
  auto zip = ZipReader::open(std::move(bytes), limits);
  if (!zip) return zip.status();
  info.entries = zip->entries();

  const ZipEntry* manifest = zip->find(kManifestFile);
  if (!manifest) return Status::invalid("the package has no " + std::string(kManifestFile));
  if (manifest->uncompressed_size > kMaxManifestBytes) {
    return Status::invalid(std::string(kManifestFile) + " is larger than 1 MiB");
  }
  const ZipEntry* signature = zip->find(kSignatureFile);
  if (!signature) {
    return Status::invalid("the package has no " + std::string(kSignatureFile) +
                           " (it is not signed)");
  }
  if (signature->uncompressed_size > kMaxSignatureBytes) {
    return Status::invalid(std::string(kSignatureFile) + " is too large");
  }
  auto manifest_text = zip->read(*manifest);
  if (!manifest_text) return manifest_text.status();
  auto parsed = parseManifest(*manifest_text, std::string(kManifestFile));
  if (!parsed) return parsed.status();
  auto canonical = canonicalJson(*parsed);
  if (!canonical)
    return Status::invalid(std::string(kManifestFile) + ": " + canonical.status().message());
  auto files = filesMap(**parsed, std::string(kManifestFile));
  if (!files) return files.status();
  auto sig_text = zip->read(*signature);
  if (!sig_text) return sig_text.status();
  auto sig = parseSignature(*sig_text);
  if (!sig) return sig.status();

  info.manifest = *parsed;
  info.id = info.manifest->getValue<std::string>("id");
  info.version = info.manifest->getValue<std::string>("version");
  info.manifest_json = std::move(*manifest_text);
  info.canonical_manifest = std::move(*canonical);
  info.files = std::move(*files);
  info.signature = std::move(*sig);
  return PackageArchive(std::move(*zip), std::move(info));
}

Status PackageArchive::checkFiles() const {
  for (const auto& e : info_.entries) {
    if (e.directory || e.name == kManifestFile || e.name == kSignatureFile) continue;
    auto it = info_.files.find(e.name);
    if (it == info_.files.end()) {
      return Status::invalid("file " + inQuotes(e.name) +
                             " is in the archive but not listed in the manifest's files");
    }
    auto bytes = zip_.read(e);
    if (!bytes) return bytes.status();
    std::string actual = sha256Hex(*bytes);
    if (actual != it->second) {
      return Status::invalid("file " + inQuotes(e.name) + " was modified: its SHA-256 is " +
                             actual + " but the manifest says " + it->second);
    }
  }
  for (const auto& [name, hash] : info_.files) {
    const ZipEntry* entry = zip_.find(name);
    if (!entry || entry->directory) {
      return Status::invalid("the manifest lists " + inQuotes(name) +
                             " but the archive does not contain it");
    }
  }
  return Status::ok();
}

Status PackageArchive::verify(const std::vector<PublicKey>& trusted) const {
  const PackageSignature& sig = info_.signature;
  const PublicKey* key = nullptr;
  std::string known;
  for (const auto& k : trusted) {
    if (k.keyId() == sig.keyid) key = &k;
    known += (known.empty() ? "" : ", ") + k.keyId();
  }
  if (!key) {
    return Status::permissionDenied(
        "package " + info_.id + " " + info_.version + " is signed by key " + sig.keyid +
        ", which is not trusted (trusted: " + (known.empty() ? std::string("none") : known) + ")");
  }
  if (Status s = verifySignature(*key, info_.canonical_manifest, sig.sig); !s) {
    return Status::invalid("package " + info_.id + " " + info_.version +
                           ": manifest signature is invalid: " + s.message());
  }
  return checkFiles();
}

Status PackageArchive::extractTo(const fs::path& dest) const {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dest, ec))) {
    return Status::conflict(dest.string() + " already exists; refusing to extract over it");
  }
  fs::path parent = dest.parent_path().empty() ? fs::path(".") : dest.parent_path();
  if (!fs::is_directory(parent, ec)) {
    return Status::notFound(parent.string() + ": no such folder");
  }
  // A private temp folder beside dest (same filesystem, so the final rename is atomic).
  std::string pattern = internal::tempSibling(dest).string() + "XXXXXX";
  if (!::mkdtemp(pattern.data())) {
    return Status::invalid(parent.string() +
                           ": cannot create a temp folder: " + internal::errnoText(errno));
  }
  const fs::path tmp = pattern;
  struct Cleanup {
    fs::path path;
    bool armed = true;
    ~Cleanup() {
      std::error_code ignored;
      if (armed) fs::remove_all(path, ignored);
    }
  } cleanup{tmp};

  if (Status s = checkFiles(); !s) return s;
  for (const auto& e : info_.entries) {
    if (e.directory) {
      fs::create_directories(tmp / e.name, ec);
      if (ec) return Status::invalid((tmp / e.name).string() + ": " + ec.message());
      continue;
    }
    auto bytes = zip_.read(e);
    if (!bytes) return bytes.status();
    // Names were checked to be relative and normalized, and everything below tmp was
    // created by us, so no path can leave tmp; O_EXCL|O_NOFOLLOW makes that doubly sure.
    fs::path file = tmp / e.name;
    fs::create_directories(file.parent_path(), ec);
    if (ec) return Status::invalid(file.parent_path().string() + ": " + ec.message());
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
      return Status::invalid(file.string() + ": cannot create: " + internal::errnoText(errno));
    size_t done = 0;
    bool ok = true;
    while (done < bytes->size()) {
      ssize_t n = ::write(fd, bytes->data() + done, bytes->size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ok = false;
        break;
      }
      done += static_cast<size_t>(n);
    }
    if (ok && ::fsync(fd) != 0) ok = false;
    int err = errno;
    if (::close(fd) != 0) ok = false;
    if (!ok) return Status::invalid(file.string() + ": cannot write: " + internal::errnoText(err));
  }
  // RENAME_NOREPLACE: a folder that appeared at dest since the check above is never
  // replaced (plain rename() would silently replace an empty one).
  if (::chmod(tmp.c_str(), 0755) != 0 ||
      ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
    int e = errno;
    if (e == EEXIST) {
      return Status::conflict(dest.string() + " already exists; refusing to extract over it");
    }
    return Status::invalid(dest.string() + ": cannot move the extracted package into place: " +
                           internal::errnoText(e));
  }
  cleanup.armed = false;
  int dir_fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);  // the rename itself is durable before we report success
    ::close(dir_fd);
  }
  return Status::ok();
}

Result<PackageInfo> inspectPackage(const fs::path& zip, const ZipLimits& limits) {
  auto pkg = PackageArchive::open(zip, limits);
  if (!pkg) return pkg.status();
  return pkg->info();
}

Status verifyPackage(const fs::path& zip, const std::vector<PublicKey>& trusted,
                     const ZipLimits& limits) {
  auto pkg = PackageArchive::open(zip, limits);
  if (!pkg) return pkg.status();
  return pkg->verify(trusted);
}

Status extractPackage(const fs::path& zip, const fs::path& dest,
                      const std::vector<PublicKey>& trusted, const ZipLimits& limits) {
  auto pkg = PackageArchive::open(zip, limits);
  if (!pkg) return pkg.status();
  if (Status s = pkg->verify(trusted); !s) return s;
  return pkg->extractTo(dest);
}

}  // namespace trellis::marketplace
