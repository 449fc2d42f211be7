// The Lua watchdog: defence in depth behind the sandbox's budgets. Every Sandbox registers
// itself; a call publishes its deadline while it runs. One thread looks every `poll` for a
// call still running `grace` after its deadline — a host thread the budgets failed to
// free. It reports it once (the sandbox's label, how late) to the reporter the host set
// (log, metric, audit event, readiness), asks the call to stop (the hook, the allocator and
// Sandbox::charge check that request, so it stops at the first check it reaches), and
// reports it again when the thread is free.
//
//   Watchdog::instance().setReporter([&](const Watchdog::Report& r) {
//     if (!r.released) spdlog::error("{} is stuck", r.label);
//     ready = Watchdog::instance().stuck() == 0;
//   });
//
// THREADING: all members are thread-safe. The reporter runs on the watchdog's thread with
// no lock held.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace trellis::kernel::lua {

class Sandbox;

class Watchdog {
 public:
  static constexpr std::chrono::milliseconds kGrace{250};
  static constexpr std::chrono::milliseconds kPoll{50};

  struct Report {
    std::string label;                 // "policy global v3 (acme.lua)", "plugin acme/x"
    std::chrono::milliseconds late{};  // past the deadline when noticed / when freed
    bool released = false;             // false: noticed stuck; true: the thread is free
  };
  using Reporter = std::function<void(const Report&)>;

  static Watchdog& instance();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Replaces the reporter (null: only the log line). Reports already made are not repeated.
  void setReporter(Reporter reporter);
  // Calls stuck now.
  size_t stuck() const { return stuck_.load(std::memory_order_acquire); }
  // Stuck calls noticed since start.
  uint64_t noticed() const { return noticed_.load(std::memory_order_acquire); }

  // Sandbox's own bookkeeping (create, destroy, setLabel).
  void add(Sandbox* sb);
  void remove(Sandbox* sb);
  void relabel(Sandbox* sb, std::string label);

 private:
  Watchdog();
  void run();
  void scan();

  struct Entry {
    int64_t reported_deadline = 0;  // the stuck call's deadline, once reported
  };
  mutable std::mutex mu_;
  std::map<Sandbox*, Entry> sandboxes_;
  Reporter reporter_;
  std::atomic<size_t> stuck_{0};
  std::atomic<uint64_t> noticed_{0};
  std::thread thread_;
};

}  // namespace trellis::kernel::lua
