#include "cli/install/installer.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "trellis/marketplace/canonical_json.h"

namespace trellis::cli::install {
namespace fs = std::filesystem;
using marketplace::PackageArchive;

namespace {

std::string errnoText(int e) {
  char buf[256];
  return strerror_r(e, buf, sizeof buf);
}

// A fresh folder beside `dest` ("<parent>/.<name>.tmp-XXXXXX").
Result<fs::path> tempDirBeside(const fs::path& dest) {
  std::string tmpl =
      (dest.parent_path() / ("." + dest.filename().string() + ".tmp-XXXXXX")).string();
  if (!::mkdtemp(tmpl.data())) {
    return Status::unavailable(dest.parent_path().string() +
                               ": cannot create a temp folder: " + errnoText(errno));
  }
  return fs::path(tmpl);
}

Status writeNewFile(const fs::path& file, std::string_view content) {
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return Status::unavailable(file.string() + ": " + errnoText(errno));
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return Status::unavailable(file.string() + ": " + errnoText(e));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return Status::unavailable(file.string() + ": " + errnoText(errno));
  }
  return Status::ok();
}

std::string listed(std::vector<std::string> items) {
  std::sort(items.begin(), items.end());
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return "[" + out + "]";
}

std::string listed(const std::map<std::string, std::string>& deps) {
  std::vector<std::string> items;
  for (const auto& [id, range] : deps) items.push_back(id + " " + range);
  return listed(std::move(items));
}

// The plan, the confirmation and the on_plugin_install policy saw the index's summary of
// the package; the publisher signed the manifest. A registry (or a stolen index key) that
// summarises a package as asking for less than it does is caught here.
Status agreesWithIndex(const kernel::plugin::Manifest& m, const marketplace::PackageRecord& rec) {
  std::map<std::string, std::string> deps;
  for (const auto& d : m.dependencies) deps[d.id] = d.range.text();
  if (deps != rec.dependencies) {
    return Status::invalid("the signed manifest names dependencies " + listed(deps) +
                           " but the index lists " + listed(rec.dependencies) +
                           "; refusing a package the index misdescribes");
  }
  if (listed(m.capabilities) != listed(rec.capabilities)) {
    return Status::invalid("the signed manifest asks for capabilities " + listed(m.capabilities) +
                           " but the index lists " + listed(rec.capabilities) +
                           "; refusing a package the index misdescribes");
  }
  return Status::ok();
}

}  // namespace

namespace {

// The download of id@version, capped at its indexed length, then checked.
Result<std::string> download(const Source& source, const marketplace::PackageRecord& record,
                             const std::string& id, const std::string& version,
                             const ProgressFn& progress, const marketplace::ZipLimits& limits) {
  const std::string what = id + "@" + version;
  if (record.length > limits.max_archive_bytes) {
    return Status::invalid(what + ": the index names a " + std::to_string(record.length) +
                           "-byte archive, above the " + std::to_string(limits.max_archive_bytes) +
                           "-byte limit");
  }
  // The index says how long the archive is: a longer download is refused as it streams.
  auto bytes = source.fetch(archivePath(id, version), record.length, progress);
  if (!bytes) return Status(bytes.status().code(), what + ": " + bytes.status().message());
  return bytes;
}

Result<FetchedPackage> verifyBytes(const marketplace::VerifiedIndex& index,
                                   marketplace::PackageRecord record, const std::string& id,
                                   const std::string& version, std::string bytes,
                                   const marketplace::ZipLimits& limits) {
  const std::string what = id + "@" + version;
  // Hashed before parsing: the zip reader only ever sees bytes the signed index vouches for.
  if (Status s = index.verifyArchiveBytes(id, version, bytes); !s) {
    return Status(s.code(), what + ": " + s.message());
  }
  auto archive = PackageArchive::fromBytes(std::move(bytes), limits);
  if (!archive) {
    return Status(archive.status().code(),
                  what + ": refused the archive: " + archive.status().message());
  }
  if (Status s = index.verifyPackage(id, version, *archive); !s) {
    return Status(s.code(), what + ": " + s.message());
  }
  auto manifest = kernel::plugin::Manifest::parse(archive->info().manifest_json);
  if (!manifest) {
    return Status::invalid(what + ": trellis-plugin.json: " + manifest.status().message());
  }
  if (Status s = agreesWithIndex(*manifest, record); !s)
    return Status(s.code(), what + ": " + s.message());
  return FetchedPackage{id, version, std::move(record), std::move(*archive), std::move(*manifest)};
}

}  // namespace

Result<FetchedPackage> fetchArchive(const Source& source, const marketplace::VerifiedIndex& index,
                                    const std::string& id, const std::string& version,
                                    const ProgressFn& progress,
                                    const marketplace::ZipLimits& limits) {
  auto record = index.find(id, version);
  if (!record) return record.status();
  auto bytes = download(source, *record, id, version, progress, limits);
  if (!bytes) return bytes.status();
  return verifyBytes(index, std::move(*record), id, version, std::move(*bytes), limits);
}

Result<FetchedPackage> fetchVerified(const Source& source, const marketplace::VerifiedIndex& index,
                                     const std::string& id, const std::string& version,
                                     const HostFacts& host, const ProgressFn& progress,
                                     const marketplace::ZipLimits& limits) {
  auto pkg = fetchArchive(source, index, id, version, progress, limits);
  if (!pkg) return pkg;
  // The index summary was checked during resolution; the package's own manifest is what
  // trellisd will read, so it must fit too.
  if (auto why = unfitReason(pkg->manifest, host)) {
    return Status::invalid(id + "@" + version + " cannot run here: it " + *why);
  }
  return pkg;
}

Result<MirrorReport> exportMirror(const Source& source, const marketplace::VerifiedIndex& index,
                                  const MetadataFiles& metadata, const fs::path& out,
                                  const ProgressFn& progress) {
  std::error_code ec;
  if (fs::exists(out, ec)) return Status::conflict(out.string() + " already exists");
  fs::create_directories(out.parent_path().empty() ? fs::path(".") : out.parent_path(), ec);
  auto tmp = tempDirBeside(fs::absolute(out));
  if (!tmp) return tmp.status();
  auto fail = [&](Status s) -> Result<MirrorReport> {
    fs::remove_all(*tmp, ec);
    return s;
  };
  MirrorReport report;
  for (auto [name, bytes] :
       {std::pair<const char*, const std::string*>{"root.json", &metadata.root},
        {"timestamp.json", &metadata.timestamp},
        {"index.json", &metadata.index}}) {
    if (Status s = writeNewFile(*tmp / name, *bytes); !s) return fail(s);
  }
  // The rotation chain, so clients pinned to an older root can catch up from the mirror.
  auto root = marketplace::Root::loadTrusted(metadata.root);
  if (!root) return fail(root.status());
  for (uint64_t v = 2; v <= root->version; ++v) {
    const std::string name = "roots/" + std::to_string(v) + ".root.json";
    auto bytes = source.fetch(name, kMaxRootBytes);
    if (!bytes && bytes.status().code() == StatusCode::kNotFound) continue;
    if (!bytes) return fail(bytes.status());
    if (Status s = writeNewFile(*tmp / name, *bytes); !s) return fail(s);
  }
  for (const auto& [id, versions] : index.index().packages) {
    for (const auto& [version, rec] : versions) {
      auto raw = download(source, rec, id, version, progress, {});
      if (!raw) return fail(raw.status());
      auto pkg = verifyBytes(index, rec, id, version, *raw, {});
      if (!pkg) return fail(pkg.status());
      if (Status s = writeNewFile(*tmp / archivePath(id, version), *raw); !s) return fail(s);
      ++report.archives;
      report.bytes += raw->size();
    }
  }
  if (::rename(tmp->c_str(), out.c_str()) != 0) {
    return fail(Status::unavailable(out.string() + ": " + errnoText(errno)));
  }
  return report;
}

}  // namespace trellis::cli::install
