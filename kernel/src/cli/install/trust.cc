#include "cli/install/trust.h"

#include <fstream>
#include <sstream>

#include "trellis/kernel/util/file.h"
#include "trellis/marketplace/canonical_json.h"

namespace trellis::cli::install {
namespace fs = std::filesystem;
using marketplace::Root;

namespace {

Result<std::string> readSmallFile(const fs::path& file, uint64_t max_bytes) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::notFound(file.string() + ": cannot open");
  std::string out;
  out.resize(max_bytes + 1);
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<size_t>(in.gcount()));
  if (out.size() > max_bytes) {
    return Status::invalid(file.string() + " is larger than " + std::to_string(max_bytes) +
                           " bytes");
  }
  return out;
}

std::string keyList(const Root& root) {
  std::string out;
  for (const auto& id : root.root.keyids) out += (out.empty() ? "" : ", ") + id;
  return out;
}

}  // namespace

Result<uint64_t> TrustStore::lastIndexVersion() const {
  std::error_code ec;
  if (!fs::exists(lastVersionFile(), ec)) return uint64_t{0};
  auto text = readSmallFile(lastVersionFile(), 64);
  if (!text) return text.status();
  try {
    size_t used = 0;
    uint64_t v = std::stoull(*text, &used);
    if (used == 0) throw std::invalid_argument("empty");
    return v;
  } catch (const std::exception&) {
    return Status::invalid(lastVersionFile().string() + " does not hold an index version");
  }
}

Result<Root> TrustStore::pinnedRoot(const Source& source, const std::optional<fs::path>& root_file,
                                    std::vector<std::string>* notices) {
  std::error_code ec;
  if (fs::exists(rootFile(), ec)) {
    auto bytes = readSmallFile(rootFile(), kMaxRootBytes);
    if (!bytes) return bytes.status();
    auto root = Root::loadTrusted(*bytes);
    if (!root)
      return Status::invalid("pinned " + rootFile().string() + ": " + root.status().message());
    if (root_file) {
      auto given = readSmallFile(*root_file, kMaxRootBytes);
      if (!given) return given.status();
      auto a = marketplace::canonicalizeJsonText(*given);
      auto b = marketplace::canonicalizeJsonText(*bytes);
      if (!a || !b || *a != *b) {
        return Status::conflict("--root " + root_file->string() +
                                " differs from the root pinned in " + rootFile().string() +
                                "; roots change only by signed rotation (remove the pinned file "
                                "to re-pin deliberately)");
      }
    }
    return root;
  }
  Result<std::string> bytes = Status::internal("unset");
  if (root_file) {
    bytes = readSmallFile(*root_file, kMaxRootBytes);
  } else {
    bytes = source.fetch("root.json", kMaxRootBytes);
  }
  if (!bytes) return bytes.status();
  auto root = Root::loadTrusted(*bytes);
  if (!root) return Status::invalid("root.json: " + root.status().message());
  if (Status s = kernel::util::writeFileAtomically(rootFile(), *bytes, 0644); !s) return s;
  notices->push_back((root_file
                          ? "pinned the root from " + root_file->string()
                          : "trust on first use: pinned the root.json of " + source.describe()) +
                     " (version " + std::to_string(root->version) + ", root keys " +
                     keyList(*root) + ") in " + rootFile().string());
  return root;
}

Result<marketplace::VerifiedIndex> TrustStore::refresh(const Source& source,
                                                       marketplace::UnixSeconds now,
                                                       const std::optional<fs::path>& root_file,
                                                       std::vector<std::string>* notices,
                                                       MetadataFiles* files) {
  auto root = pinnedRoot(source, root_file, notices);
  if (!root) return root.status();

  // Rotation: walk roots/<v+1>.root.json while the source offers them; each one must be
  // vouched for by the root before it.
  for (;;) {
    const std::string next = "roots/" + std::to_string(root->version + 1) + ".root.json";
    auto bytes = source.fetch(next, kMaxRootBytes);
    if (!bytes) {
      if (bytes.status().code() == StatusCode::kNotFound) break;
      return bytes.status();
    }
    auto rotated = marketplace::updateRoot(*root, *bytes);
    if (!rotated) return Status::invalid(next + ": " + rotated.status().message());
    if (Status s = kernel::util::writeFileAtomically(rootFile(), *bytes, 0644); !s) return s;
    notices->push_back("root rotated to version " + std::to_string(rotated->version) +
                       " (root keys " + keyList(*rotated) + ")");
    root = std::move(rotated);
  }

  auto last = lastIndexVersion();
  if (!last) return last.status();
  auto ts = source.fetch("timestamp.json", kMaxTimestampBytes);
  if (!ts) return ts.status();
  auto index = source.fetch("index.json", marketplace::kMaxJsonBytes);
  if (!index) return index.status();
  auto verified = marketplace::verifyIndex(*root, *last, now, *ts, *index);
  if (!verified) return verified.status();
  if (files) {
    auto pinned = readSmallFile(rootFile(), kMaxRootBytes);
    if (!pinned) return pinned.status();
    *files = {std::move(*pinned), std::move(*ts), std::move(*index)};
  }
  if (verified->version() > *last) {
    if (Status s = kernel::util::writeFileAtomically(
            lastVersionFile(), std::to_string(verified->version()) + "\n", 0644);
        !s) {
      return s;
    }
  }
  return verified;
}

}  // namespace trellis::cli::install
