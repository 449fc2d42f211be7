#include "runtime/access_log.h"

#include <fmt/chrono.h>
#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <utility>

#include "trellis/kernel/util/json.h"

namespace trellis::kernel::runtime {

AccessLog::AccessLog(const std::string& target) {
  if (target == "off") return;
  spdlog::init_thread_pool(8192, 1);
  if (target == "stdout") {
    logger_ = spdlog::create_async_nb<spdlog::sinks::stdout_sink_mt>("access");
  } else {
    std::filesystem::create_directories(std::filesystem::path(target).parent_path());
    logger_ = spdlog::create_async_nb<spdlog::sinks::basic_file_sink_mt>("access", target);
  }
  logger_->set_pattern("%v");
  logger_->flush_on(spdlog::level::info);
}

AccessLog::~AccessLog() {
  if (logger_) {
    logger_->flush();
    spdlog::drop("access");
  }
}

void AccessLog::record(const AccessEntry& e) {
  if (!logger_) return;
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::string line;
  line.reserve(256);
  line += "{\"ts\":\"";
  line += fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z",
                      fmt::gmtime(std::chrono::system_clock::to_time_t(now)), ms.count());
  line += '"';
  const std::pair<std::string_view, std::string_view> fields[] = {
      {"id", e.request_id}, {"plane", e.plane},   {"peer", e.peer},
      {"tenant", e.tenant}, {"method", e.method}, {"path", e.path},
      {"route", e.route},   {"plugin", e.plugin}, {"trace_id", e.trace_id}};
  for (const auto& [name, value] : fields) {
    line += ",\"";
    line += name;
    line += "\":";
    util::appendJsonString(line, value);
  }
  line += fmt::format(",\"status\":{},\"bytes\":{},\"duration_us\":{}}}", e.status, e.bytes,
                      e.duration_us);
  logger_->info(line);
}

std::string newRequestId() {
  thread_local uint64_t next = std::random_device{}() * 0x9E3779B97F4A7C15ull;
  return fmt::format("{:016x}", next++);
}

}  // namespace trellis::kernel::runtime
