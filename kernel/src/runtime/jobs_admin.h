// The admin API's view of jobs and timers (`trellis job list|run|cancel`):
//   GET    /v1/jobs[?tenant=<id>]                             every job, with its runs,
//          failures, last error, state (scheduled, running, dead) and next run
//   POST   /v1/jobs/{tenant}/{ns}/{plugin}/{job}/run           fire now (a dead-lettered job
//          is retried from scratch)
//   DELETE /v1/jobs/{tenant}/{ns}/{plugin}/{job}               cancel
#pragma once

#include <optional>
#include <string_view>

#include "services/jobs/scheduler.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"

namespace trellis::kernel::runtime {

class JobsAdmin {
 public:
  explicit JobsAdmin(services::JobScheduler& jobs);
  // An answer for our endpoints; nullopt for any other path.
  std::optional<http::Response> handle(const http::Request& req, std::string_view path);

 private:
  services::JobScheduler& jobs_;
  http::Router router_;
};

}  // namespace trellis::kernel::runtime
