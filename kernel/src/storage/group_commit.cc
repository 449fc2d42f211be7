#include "trellis/kernel/storage/group_commit.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>
#include <vector>

namespace trellis::kernel::storage {

// A caller blocked in submit(). Shared, so the leader that marks it done can wake it
// after releasing mu_ (the woken thread does not run straight into the lock) even if it
// has already seen its new state and returned. Leading is granted under mu_, so that a
// grant and a leader taking the waiter along into its batch cannot cross.
struct GroupCommit::Waiter : std::enable_shared_from_this<Waiter> {
  enum : int { kWaiting, kDone, kLead };
  explicit Waiter(const Work* work) : write{work} {}
  // A bare futex: std::atomic::wait spins and yields before it sleeps, which with hundreds
  // of writers waiting for an fsync costs more CPU than the writes.
  void wake(int to) {
    state.store(to, std::memory_order_release);
    ::syscall(SYS_futex, futexWord(), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  }
  int waitWhileWaiting() {
    int s = state.load(std::memory_order_acquire);
    for (; s == kWaiting; s = state.load(std::memory_order_acquire)) {
      ::syscall(SYS_futex, futexWord(), FUTEX_WAIT_PRIVATE, kWaiting, nullptr, nullptr, 0);
    }
    return s;
  }
  int* futexWord() { return reinterpret_cast<int*>(&state); }
  Write write;
  bool lead = false;  // chosen to lead the next batch; guarded by mu_
  // kDone: its batch ended and write.status is the answer. kLead: it may lead (it checks
  // `lead` under mu_, since a leader that got there first may have taken it along).
  std::atomic<int> state{kWaiting};
  static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free);
};

namespace {

GroupCommit::Options normalized(GroupCommit::Options o) {
  o.max_leaders = std::max<size_t>(o.max_leaders, 1);
  // A leader is among the first max_leaders queued, so a batch always includes it.
  o.max_batch = std::max(o.max_batch, o.max_leaders);
  return o;
}

}  // namespace

GroupCommit::GroupCommit(RunBatch run, Options options)
    : run_(std::move(run)), options_(normalized(options)) {}

void GroupCommit::promote() {
  // Chosen leaders are always the front of the queue, so this looks at most
  // max_leaders entries past them.
  for (Waiter* w : queue_) {
    if (leaders_ >= options_.max_leaders) return;
    if (w->lead) continue;
    w->lead = true;
    ++leaders_;
    w->wake(Waiter::kLead);  // it needs mu_ before it can lead, so this is safe
  }
}

Status GroupCommit::submit(const Work& work) {
  auto me = std::make_shared<Waiter>(&work);
  {
    std::lock_guard lock(mu_);
    ++stats_.pending;
    queue_.push_back(me.get());
    promote();  // idle: that makes us the leader at once
  }

  std::vector<std::shared_ptr<Waiter>> batch;
  for (;;) {
    if (me->waitWhileWaiting() == Waiter::kDone) return std::move(me->write.status);
    std::lock_guard lock(mu_);
    if (!me->lead) continue;  // another leader took us along (and reset state): wait
    // Lead: take what queued up while the previous batch committed, us included.
    const size_t n = std::min(queue_.size(), options_.max_batch);
    for (size_t i = 0; i < n; ++i) {
      Waiter* w = queue_[i];
      batch.push_back(w->shared_from_this());
      if (w == me.get() || !w->lead) continue;
      // Chosen too but not leading yet: it rides in this batch instead. Reset under mu_,
      // before this batch can mark it done, so it waits for that.
      w->lead = false;
      w->state.store(Waiter::kWaiting, std::memory_order_relaxed);
      --leaders_;
    }
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    promote();  // those slots can start batches for what is still queued
    break;
  }

  std::vector<Write*> writes;
  writes.reserve(batch.size());
  for (auto& w : batch) writes.push_back(&w->write);
  run_(writes);

  {
    std::lock_guard lock(mu_);
    ++stats_.batches;
    stats_.writes += batch.size();
    stats_.pending -= batch.size();
    stats_.max_batch = std::max<uint64_t>(stats_.max_batch, batch.size());
    --leaders_;
    promote();
  }
  for (auto& w : batch) {
    if (w != me) w->wake(Waiter::kDone);
  }
  return std::move(me->write.status);
}

GroupCommit::Stats GroupCommit::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace trellis::kernel::storage
