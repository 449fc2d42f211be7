#include "trellis/kernel/lua/watchdog.h"

#include <spdlog/spdlog.h>

#include <vector>

#include "lua/internal/budget_clock.h"
#include "trellis/kernel/lua/sandbox.h"

namespace trellis::kernel::lua {

namespace clock = budget_clock;

// Never destroyed: sandboxes in other static or thread-local objects may outlive any
// static, and the thread ends with the process.
Watchdog& Watchdog::instance() {
  static Watchdog* w = new Watchdog;
  return *w;
}

Watchdog::Watchdog() : thread_([this] { run(); }) {}

void Watchdog::setReporter(Reporter reporter) {
  std::lock_guard lock(mu_);
  reporter_ = std::move(reporter);
}

void Watchdog::add(Sandbox* sb) {
  std::lock_guard lock(mu_);
  sandboxes_.emplace(sb, Entry{});
}

void Watchdog::remove(Sandbox* sb) {
  std::lock_guard lock(mu_);
  auto it = sandboxes_.find(sb);
  if (it == sandboxes_.end()) return;
  if (it->second.reported_deadline != 0) stuck_.fetch_sub(1, std::memory_order_acq_rel);
  sandboxes_.erase(it);
}

void Watchdog::relabel(Sandbox* sb, std::string label) {
  std::lock_guard lock(mu_);
  sb->label_ = std::move(label);
}

void Watchdog::run() {
  for (;;) {
    std::this_thread::sleep_for(kPoll);
    scan();
  }
}

void Watchdog::scan() {
  std::vector<Report> reports;
  Reporter reporter;
  {
    std::lock_guard lock(mu_);
    const clock::Ticks now = clock::now();
    const clock::Ticks grace = clock::fromMicros(kGrace);
    for (auto& [sb, e] : sandboxes_) {
      const int64_t deadline = sb->watched_deadline_.load(std::memory_order_acquire);
      const auto late = [&](int64_t since) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(clock::toMicros(now - since));
      };
      if (e.reported_deadline != 0 && deadline != e.reported_deadline) {
        reports.push_back({sb->label_, late(e.reported_deadline), true});
        e.reported_deadline = 0;
        stuck_.fetch_sub(1, std::memory_order_acq_rel);
      }
      if (deadline != 0 && e.reported_deadline == 0 && now - deadline > grace) {
        // The call stops at its next hook, allocation or charge: a stop request names the
        // call by its deadline, so it cannot leak into the next call.
        sb->stop_requested_.store(deadline, std::memory_order_release);
        e.reported_deadline = deadline;
        stuck_.fetch_add(1, std::memory_order_acq_rel);
        noticed_.fetch_add(1, std::memory_order_acq_rel);
        reports.push_back({sb->label_, late(deadline), false});
      }
    }
    if (!reports.empty()) reporter = reporter_;
  }
  for (const Report& r : reports) {
    if (r.released) {
      spdlog::warn("lua watchdog: {} freed its thread {} ms after its deadline", r.label,
                   r.late.count());
    } else {
      spdlog::error(
          "lua watchdog: {} is still running {} ms after its wall-time deadline; asked it "
          "to stop (its thread is stuck until it does)",
          r.label, r.late.count());
    }
    if (reporter) reporter(r);
  }
}

}  // namespace trellis::kernel::lua
