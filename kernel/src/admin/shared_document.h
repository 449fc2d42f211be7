// One small JSON document of the control plane that every host must read alike: the admin
// principals, the system grants. On one host it is a file under data_dir (mode 0600,
// replaced atomically); hosts sharing PostgreSQL keep it in a row of
// trellis.control_documents, so a token created or revoked on one host counts on all, and
// each host sees the others' changes within a poll interval.
//
//   auto doc = SharedDocument::file(data_dir / "admin-principals.json");
//   auto doc = SharedDocument::postgres(pool, "admin-principals");
//   auto now = doc->read();   // its text (nullopt: never written) and version
//   doc->update([](const std::optional<std::string>& text) -> Result<std::string> { ... });
//   doc->watch(now->version, [](const SharedDocument::Snapshot& s) { ... });  // a newer one
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "trellis/status.hpp"
#include "trellis/tenants/postgres.h"

namespace trellis::kernel::admin {

class SharedDocument {
 public:
  struct Snapshot {
    std::optional<std::string> text;  // nullopt: never written
    int64_t version = 0;              // changes with every write
  };
  // What `update` does to the current text; a failure changes nothing and is returned.
  using Edit = std::function<Result<std::string>(const std::optional<std::string>& current)>;

  virtual ~SharedDocument() = default;

  // For messages: the file's path, or "PostgreSQL control document <name>".
  virtual const std::string& where() const = 0;
  virtual Result<Snapshot> read() const = 0;
  // Writes what `edit` makes of the latest text, durably. Updates are serialised, across
  // hosts too (a row lock), so no edit is lost to another's.
  virtual Result<Snapshot> update(const Edit& edit) = 0;
  // Calls `on_change` (on a background thread) whenever the version moves past `known`:
  // another host changed the document. Files are written by this process only: nothing
  // to watch. Call at most once.
  virtual void watch(int64_t known, std::function<void(const Snapshot&)> on_change) = 0;

  static std::unique_ptr<SharedDocument> file(std::filesystem::path path);
  static std::unique_ptr<SharedDocument> postgres(
      std::shared_ptr<tenants::PostgresPool> pool, std::string name,
      std::chrono::milliseconds poll_interval = std::chrono::seconds(1));
};

}  // namespace trellis::kernel::admin
