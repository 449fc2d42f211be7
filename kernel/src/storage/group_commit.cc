#include "trellis/kernel/storage/group_commit.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace trellis::kernel::storage {

// A caller blocked in submit(). It lives on that caller's stack, so whoever finishes it
// notifies while holding mu_: the caller cannot return (and destroy it) before that.
struct GroupCommit::Waiter {
  explicit Waiter(const Work* work) : write{work} {}
  Write write;
  bool done = false;  // its batch ended; write.status is the answer
  bool lead = false;  // it was chosen to lead the next batch
  std::condition_variable cv;
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
    w->cv.notify_one();
  }
}

Status GroupCommit::submit(const Work& work) {
  Waiter me(&work);
  std::unique_lock lock(mu_);
  ++stats_.pending;
  queue_.push_back(&me);
  promote();  // idle: that makes us the leader at once
  me.cv.wait(lock, [&] { return me.done || me.lead; });
  if (me.done) return std::move(me.write.status);

  // Lead: take what queued up while the previous batch committed, us included.
  const size_t n = std::min(queue_.size(), options_.max_batch);
  std::vector<Waiter*> batch(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  for (Waiter* w : batch) {
    if (w == &me || !w->lead) continue;
    w->lead = false;  // chosen too but not awake yet: it rides in this batch instead
    --leaders_;
  }
  promote();  // those slots can start batches for what is still queued
  lock.unlock();

  std::vector<Write*> writes;
  writes.reserve(n);
  for (Waiter* w : batch) writes.push_back(&w->write);
  run_(writes);

  lock.lock();
  ++stats_.batches;
  stats_.writes += n;
  stats_.pending -= n;
  stats_.max_batch = std::max<uint64_t>(stats_.max_batch, n);
  for (Waiter* w : batch) {
    if (w == &me) continue;
    w->done = true;
    w->cv.notify_one();
  }
  --leaders_;
  promote();
  return std::move(me.write.status);
}

GroupCommit::Stats GroupCommit::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace trellis::kernel::storage
