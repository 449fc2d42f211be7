// Where durable jobs live between restarts. The SQLite store keeps them in
// <data_dir>/jobs.db; each change is one transaction, so a kill -9 loses nothing that was
// acknowledged and never leaves half a job.
//
//   auto store = SqliteJobStore::open(dir / "jobs.db");
//   (*store)->put(job);  ...  auto all = (*store)->loadAll();
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <vector>

#include "services/jobs/job.h"
#include "trellis/status.hpp"

namespace soci {
class session;
}

namespace trellis::kernel::services {

class JobStore {
 public:
  virtual ~JobStore() = default;
  virtual Status put(const Job& job) = 0;  // insert or replace
  virtual Status remove(const JobKey& key) = 0;
  virtual Result<std::vector<Job>> loadAll() = 0;
};

class SqliteJobStore : public JobStore {
 public:
  static Result<std::unique_ptr<SqliteJobStore>> open(const std::filesystem::path& file);
  ~SqliteJobStore() override;

  Status put(const Job& job) override;
  Status remove(const JobKey& key) override;
  Result<std::vector<Job>> loadAll() override;

 private:
  explicit SqliteJobStore(std::unique_ptr<soci::session> sql);
  std::mutex mu_;
  std::unique_ptr<soci::session> sql_;
};

}  // namespace trellis::kernel::services
