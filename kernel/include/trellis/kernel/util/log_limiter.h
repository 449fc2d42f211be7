// Bounds the lines one noisy source writes (refused tokens, refused certificates): at most
// `lines` per `window`; the first line written after some were left out says how many, so
// a flood costs a few lines, not a disk, and nothing is hidden without a trace.
//
//   static util::LogLimiter limiter;                       // 20 lines per 10 s
//   uint64_t left_out = 0;
//   if (limiter.allow(&left_out)) spdlog::info("refused: {}{}", why, util::leftOut(left_out));
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace trellis::kernel::util {

class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LogLimiter(uint64_t lines = 20, Clock::duration window = std::chrono::seconds(10));

  // Whether to write a line now. When it is, *left_out is how many lines were refused
  // since the last one written (0 most of the time). Thread-safe.
  bool allow(uint64_t* left_out) { return allowAt(Clock::now(), left_out); }
  bool allowAt(Clock::time_point now, uint64_t* left_out);

 private:
  const uint64_t lines_;
  const Clock::duration window_;
  std::mutex mu_;
  Clock::time_point window_start_{};
  uint64_t written_ = 0;   // in the current window
  uint64_t left_out_ = 0;  // since the last line written
};

// " (N similar lines left out)" for N > 0, else "": the suffix of the next line written.
std::string leftOut(uint64_t n);

}  // namespace trellis::kernel::util
