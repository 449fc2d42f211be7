// The access log: one JSON object per line, written by a background thread (spdlog async)
// so a slow disk never slows a request.
//
//   {"ts":"2026-11-22T10:00:00.123Z","id":"5f0c…","plane":"data","peer":"127.0.0.1",
//    "tenant":"acme","method":"GET","path":"/hello/ann","route":"/hello/{name}",
//    "plugin":"trellis/hello","trace_id":"4bf9…","status":200,"bytes":42,"duration_us":180}
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
namespace details {
class thread_pool;
}
}  // namespace spdlog

namespace trellis::kernel::runtime {

struct AccessEntry {
  std::string_view request_id;
  std::string_view plane;
  std::string_view peer;
  std::string_view tenant;
  std::string_view method;
  std::string_view path;
  std::string_view route;
  std::string_view plugin;
  std::string_view trace_id;  // W3C trace id of the request
  unsigned status = 0;
  size_t bytes = 0;
  uint64_t duration_us = 0;
};

class AccessLog {
 public:
  // `target`: "stdout", "off", or a file path (created with its directory).
  explicit AccessLog(const std::string& target);
  ~AccessLog();
  bool enabled() const { return logger_ != nullptr; }
  void record(const AccessEntry& e);

 private:
  // Its own writer thread, not spdlog's global pool: the destructor joins it before the
  // logger goes (see there).
  std::shared_ptr<spdlog::details::thread_pool> pool_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace trellis::kernel::runtime
