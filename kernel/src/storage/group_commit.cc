#include "trellis/kernel/storage/group_commit.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

namespace trellis::kernel::storage {

// A writer waiting for its batch: a caller blocked in submit(), or an asynchronous one
// (`done` set), which nobody waits for and which the commit pool leads for when its turn
// comes. Shared, so the leader that marks it done can wake it after releasing mu_ (the
// woken thread does not run straight into the lock) even if it has already seen its new
// state and returned. Leading is granted under mu_, so that a grant and a leader taking
// the waiter along into its batch cannot cross.
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
  bool async() const { return static_cast<bool>(done); }
  Write write;
  bool lead = false;  // chosen to lead the next batch; guarded by mu_
  // kDone: its batch ended and write.status is the answer. kLead: it may lead (it checks
  // `lead` under mu_, since a leader that got there first may have taken it along).
  std::atomic<int> state{kWaiting};
  static_assert(sizeof(std::atomic<int>) == sizeof(int) && std::atomic<int>::is_always_lock_free);
  // Asynchronous writers only: the work (owned here), the answer and what must outlive it.
  Work owned_work;
  Done done;
  std::shared_ptr<const void> owner;
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
  for (const auto& w : queue_) {
    if (leaders_ >= options_.max_leaders) return;
    if (w->lead) continue;
    w->lead = true;
    ++leaders_;
    if (w->async()) {
      // Nobody waits on an asynchronous writer: a pool thread leads in its place.
      CommitPool::instance().post([this, w] { leadAsync(w); });
    } else {
      w->wake(Waiter::kLead);  // it needs mu_ before it can lead, so this is safe
    }
  }
}

std::vector<std::shared_ptr<GroupCommit::Waiter>> GroupCommit::takeBatch(
    const std::shared_ptr<Waiter>& me) {
  std::vector<std::shared_ptr<Waiter>> batch;
  if (!me->lead) return batch;  // another leader took us along
  // Lead: take what queued up while the previous batch committed, us included.
  const size_t n = std::min(queue_.size(), options_.max_batch);
  for (size_t i = 0; i < n; ++i) {
    const std::shared_ptr<Waiter>& w = queue_[i];
    batch.push_back(w);
    if (w == me || !w->lead) continue;
    // Chosen too but not leading yet: it rides in this batch instead. Reset under mu_,
    // before this batch can mark it done, so it waits for that (an asynchronous one's
    // pool task then finds `lead` false and leaves).
    w->lead = false;
    w->state.store(Waiter::kWaiting, std::memory_order_relaxed);
    --leaders_;
  }
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  promote();  // those slots can start batches for what is still queued
  return batch;
}

void GroupCommit::runBatch(std::vector<std::shared_ptr<Waiter>>& batch, const Waiter* me) {
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
  // Asynchronous writers learn their outcome only after their owners are let go: a caller
  // that closes the store once its write is answered must find it closed (its files and
  // locks released), not still held by this thread for a moment. The last owner may destroy
  // this GroupCommit, so nothing of it is touched after that.
  std::vector<std::pair<Done, Status>> answers;
  std::vector<std::shared_ptr<const void>> owners;
  for (auto& w : batch) {
    if (w->async()) {
      answers.emplace_back(std::move(w->done), std::move(w->write.status));
      owners.push_back(std::move(w->owner));
    } else if (w.get() != me) {
      w->wake(Waiter::kDone);
    }
  }
  owners.clear();
  for (auto& [done, status] : answers) done(std::move(status));
}

Status GroupCommit::submit(const Work& work) {
  auto me = std::make_shared<Waiter>(&work);
  {
    std::lock_guard lock(mu_);
    ++stats_.pending;
    queue_.push_back(me);
    promote();  // idle: that makes us the leader at once
  }

  std::vector<std::shared_ptr<Waiter>> batch;
  for (;;) {
    if (me->waitWhileWaiting() == Waiter::kDone) return std::move(me->write.status);
    std::lock_guard lock(mu_);
    batch = takeBatch(me);
    if (!batch.empty()) break;
    // Another leader took us along (and reset our state): wait for its batch.
  }
  runBatch(batch, me.get());
  return std::move(me->write.status);
}

void GroupCommit::submitAsync(Work work, Done done, std::shared_ptr<const void> owner) {
  auto me = std::make_shared<Waiter>(nullptr);
  me->owned_work = std::move(work);
  me->write.work = &me->owned_work;
  me->done = std::move(done);
  me->owner = std::move(owner);
  std::lock_guard lock(mu_);
  ++stats_.pending;
  queue_.push_back(std::move(me));
  promote();
}

void GroupCommit::leadAsync(const std::shared_ptr<Waiter>& me) {
  std::vector<std::shared_ptr<Waiter>> batch;
  {
    std::lock_guard lock(mu_);
    batch = takeBatch(me);
  }
  if (!batch.empty()) runBatch(batch, me.get());
}

GroupCommit::Stats GroupCommit::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

struct CommitPool::State {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> tasks;
};

CommitPool::CommitPool() : state_(std::make_shared<State>()) {
  const unsigned threads = std::max(4u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < threads; ++i) {
    // Detached, and the pool is never destroyed: batches may still be committing while
    // the process exits, and no static destructor may pull the queue from under them.
    std::thread t([state = state_] {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock lock(state->mu);
          state->cv.wait(lock, [&] { return !state->tasks.empty(); });
          task = std::move(state->tasks.front());
          state->tasks.pop_front();
        }
        task();
      }
    });
    pthread_setname_np(t.native_handle(), "trellis-commit");
    t.detach();
  }
}

CommitPool& CommitPool::instance() {
  static CommitPool* pool = new CommitPool();  // never destroyed; see above
  return *pool;
}

void CommitPool::post(std::function<void()> task) {
  {
    std::lock_guard lock(state_->mu);
    state_->tasks.push_back(std::move(task));
  }
  state_->cv.notify_one();
}

}  // namespace trellis::kernel::storage
