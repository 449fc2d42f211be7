#include "runtime/access_log.h"

#include <fmt/chrono.h>
#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <utility>

#include "trellis/kernel/util/json.h"

namespace trellis::kernel::runtime {

AccessLog::AccessLog(const std::string& target) {
  if (target == "off") return;
  spdlog::sink_ptr sink;
  if (target == "stdout") {
    sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  } else {
    std::filesystem::create_directories(std::filesystem::path(target).parent_path());
    sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(target);
  }
  pool_ = std::make_shared<spdlog::details::thread_pool>(8192, 1);
  // As spdlog::create_async_nb would, but on our pool: when the queue is full the oldest
  // lines go, and the logger is registered with the global level.
  logger_ = std::make_shared<spdlog::async_logger>("access", std::move(sink), pool_,
                                                   spdlog::async_overflow_policy::overrun_oldest);
  spdlog::initialize_logger(logger_);
  logger_->set_pattern("%v");
  logger_->flush_on(spdlog::level::info);
}

AccessLog::~AccessLog() {
  if (!logger_) return;
  spdlog::drop("access");
  logger_->flush();  // queued behind the last lines
  // Join the writer thread (the pool's destructor does, once it has written what was queued)
  // before the logger and its sink are freed here: else that thread could still be in the
  // sink's flush (ThreadSanitizer reported the race at trellisd's shutdown).
  pool_.reset();
  logger_.reset();
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

}  // namespace trellis::kernel::runtime
