#include "admin/shared_document.h"

#include <soci/soci.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "trellis/kernel/util/file.h"
#include "trellis/tenants/sql_statement.h"

namespace trellis::kernel::admin {
namespace {

namespace fs = std::filesystem;
using tenants::sql::Query;

class FileDocument final : public SharedDocument {
 public:
  explicit FileDocument(fs::path path) : path_(std::move(path)), where_(path_.string()) {}

  const std::string& where() const override { return where_; }

  Result<Snapshot> read() const override {
    std::lock_guard lock(mu_);
    return readLocked();
  }

  Result<Snapshot> update(const Edit& edit) override {
    std::lock_guard lock(mu_);
    auto current = readLocked();
    if (!current) return current.status();
    auto next = edit(current->text);
    if (!next) return next.status();
    if (Status s = util::writeFileAtomically(path_, *next, 0600); !s) return s;
    return Snapshot{std::move(*next), ++version_};
  }

  void watch(int64_t, std::function<void(const Snapshot&)>) override {}

 private:
  Result<Snapshot> readLocked() const {
    std::error_code ec;
    if (!fs::exists(path_, ec)) return Snapshot{std::nullopt, version_};
    std::ifstream in(path_, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in && !in.eof()) return Status::unavailable("cannot read " + where_);
    return Snapshot{text.str(), version_};
  }

  const fs::path path_;
  const std::string where_;
  mutable std::mutex mu_;
  int64_t version_ = 0;  // this process is the file's only writer
};

class PostgresDocument final : public SharedDocument {
 public:
  PostgresDocument(std::shared_ptr<tenants::PostgresPool> pool, std::string name,
                   std::chrono::milliseconds poll_interval)
      : pool_(std::move(pool)),
        name_(std::move(name)),
        where_("PostgreSQL control document " + name_),
        poll_interval_(poll_interval) {}

  ~PostgresDocument() override {
    {
      std::lock_guard lock(poll_mu_);
      stopping_ = true;
    }
    poll_cv_.notify_all();
    if (poller_.joinable()) poller_.join();
  }

  const std::string& where() const override { return where_; }

  Result<Snapshot> read() const override {
    Snapshot out;
    Status s = pool_->transaction("reading the " + where_, "", [&](soci::session& sql) {
      out = selectRow(sql, "");
      return Status::ok();
    });
    if (!s) return s;
    return out;
  }

  Result<Snapshot> update(const Edit& edit) override {
    Snapshot out;
    Status s = pool_->transaction("writing the " + where_, "", [&](soci::session& sql) {
      // The row exists before it is locked, so two first writers queue on its lock too.
      Query(sql,
            "INSERT INTO control_documents(name, body, version) VALUES (:n, NULL, 0) "
            "ON CONFLICT (name) DO NOTHING")
          .use(name_)
          .run();
      Snapshot current = selectRow(sql, " FOR UPDATE");
      auto next = edit(current.text);
      if (!next) return next.status();
      long long version = current.version + 1;
      Query(sql, "UPDATE control_documents SET body = :b, version = :v WHERE name = :n")
          .use(*next)
          .use(version)
          .use(name_)
          .run();
      out = {std::move(*next), version};
      return Status::ok();
    });
    if (!s) return s;
    return out;
  }

  void watch(int64_t known, std::function<void(const Snapshot&)> on_change) override {
    poller_ = std::thread(
        [this, known, on_change = std::move(on_change)] { pollLoop(known, on_change); });
  }

 private:
  Snapshot selectRow(soci::session& sql, const std::string& lock) const {
    std::string body;
    soci::indicator body_ind = soci::i_null;
    long long version = 0;
    Query(sql, "SELECT body, version FROM control_documents WHERE name = :n" + lock)
        .use(name_)
        .into(body, body_ind)
        .into(version)
        .run();
    Snapshot out;
    if (body_ind == soci::i_ok) out.text = std::move(body);
    out.version = version;
    return out;
  }

  // Reads the version each interval, the text only when it moved. An outage is retried at
  // the next tick; the last text read stays in force meanwhile.
  void pollLoop(int64_t seen, const std::function<void(const Snapshot&)>& on_change) {
    std::unique_lock lock(poll_mu_);
    while (!poll_cv_.wait_for(lock, poll_interval_, [this] { return stopping_; })) {
      lock.unlock();
      auto now = read();
      if (now && now->version != seen) {
        seen = now->version;
        on_change(*now);
      }
      lock.lock();
    }
  }

  const std::shared_ptr<tenants::PostgresPool> pool_;
  const std::string name_;
  const std::string where_;
  const std::chrono::milliseconds poll_interval_;
  std::mutex poll_mu_;
  std::condition_variable poll_cv_;
  bool stopping_ = false;  // guarded by poll_mu_
  std::thread poller_;     // last: joined before the rest goes
};

}  // namespace

std::unique_ptr<SharedDocument> SharedDocument::file(fs::path path) {
  return std::make_unique<FileDocument>(std::move(path));
}

std::unique_ptr<SharedDocument> SharedDocument::postgres(
    std::shared_ptr<tenants::PostgresPool> pool, std::string name,
    std::chrono::milliseconds poll_interval) {
  return std::make_unique<PostgresDocument>(std::move(pool), std::move(name), poll_interval);
}

}  // namespace trellis::kernel::admin
