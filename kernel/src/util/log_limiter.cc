#include "trellis/kernel/util/log_limiter.h"

namespace trellis::kernel::util {

LogLimiter::LogLimiter(uint64_t lines, Clock::duration window) : lines_(lines), window_(window) {}

bool LogLimiter::allowAt(Clock::time_point now, uint64_t* left_out) {
  std::lock_guard lock(mu_);
  if (now - window_start_ >= window_) {
    window_start_ = now;
    written_ = 0;
  }
  if (written_ >= lines_) {
    ++left_out_;
    return false;
  }
  ++written_;
  *left_out = left_out_;
  left_out_ = 0;
  return true;
}

std::string leftOut(uint64_t n) {
  if (n == 0) return "";
  return " (" + std::to_string(n) + " similar line" + (n == 1 ? "" : "s") + " left out)";
}

}  // namespace trellis::kernel::util
