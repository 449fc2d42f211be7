// One trellis-worker process as trellisd sees it: its pid, its channels (one socketpair
// each, fds 3.. in the child) and whether it is still alive. Spawned with posix_spawn
// (never a bare fork of the threaded daemon) with a clean signal mask and an environment of
// trellisd's sanitizer options only (ASAN_, LSAN_, UBSAN_ and TSAN_OPTIONS, when set).
//
//   auto p = WorkerProcess::spawn(options, library, plugin_dir);
//   int ch = p->acquire(deadline);   // -1: dead, or every channel stayed busy
//   FrameChannel& c = p->channel(ch);
//   c.send(FrameType::kInvoke, ...); c.read(frame, deadline); ...
//   p->release(ch);
//   p->kill("call timeout");          // SIGKILL, reaped; every channel reads EOF
//
// Each channel has a snapshot region (SnapshotArena): a memfd trellisd maps read-write,
// then seals (no shrink, no grow, no future write, no more seals) before the worker
// inherits it, so the worker can map it only read-only. Route snapshots are placed there.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "trellis/status.hpp"
#include "worker/protocol.h"

namespace trellis::kernel::worker {

struct WorkerOptions {
  std::filesystem::path binary;  // trellis-worker
  int channels = 4;              // concurrent calls one worker serves
  std::chrono::milliseconds call_timeout{5000};
  bool sandbox = true;
  std::string user = "nobody";
  uint64_t max_memory_bytes = 1024ull * 1024 * 1024;
  uint64_t max_files = 64;
  uint64_t max_cpu_seconds = 0;
  // Bytes of each channel's snapshot region (0: none, every request travels inline). A
  // request snapshot larger than this, or one that finds the region full, goes inline.
  uint64_t snapshot_bytes = 2ull * 1024 * 1024;
  // Snapshots smaller than this travel inline even with a region: for them the copy into
  // the socket costs no more than the copy into the region.
  uint64_t snapshot_min_bytes = 0;
  // Appended to the worker's command line: how to build a Lua plugin ("--lua", its id,
  // version, budgets and blocking routes); empty for a native library.
  std::vector<std::string> plugin_args;
};

// What the worker said in HELLO about the library it opened.
struct Hello {
  uint32_t struct_size = 0;
  uint32_t abi_major = 0;
  uint32_t abi_minor = 0;
  std::string id;
  std::string version;
  std::string landlock;  // "abi N", "absent (…)" or "off"
};

// One channel's snapshot region as trellisd holds it: a ring of slots, each placed by the
// thread holding the channel and given back when that call's RESULT is read. Slots are
// usually given back in the order placed (a channel's calls are answered in order), but
// need not be: a slot given back out of order is reclaimed when those before it are. Only
// the thread holding the channel uses it; trellisd never reads what it wrote.
class SnapshotArena {
 public:
  SnapshotArena() = default;
  SnapshotArena(char* base, size_t size) : base_(base), size_(size) {}
  SnapshotArena(SnapshotArena&& o) noexcept { *this = std::move(o); }
  SnapshotArena& operator=(SnapshotArena&& o) noexcept;
  ~SnapshotArena();  // unmaps the region (the worker's mapping is its own)

  size_t size() const { return size_; }
  // A slot of `n` bytes: its offset, or nullopt if the region is absent, too small or full
  // of slots the worker may still read. `at` is where to write it.
  std::optional<uint64_t> place(size_t n, char** at);
  // The worker will not read slot `offset` again (its RESULT came).
  void giveBack(uint64_t offset);
  // The worker is dead: nothing reads any slot any more. Returns how many were in use.
  size_t clear();
  size_t slotsInUse() const { return slots_.size(); }
  size_t bytesInUse() const;

  // Process-wide, for tests and metrics: slots placed and not given back, in every arena.
  static int64_t liveSlots();

 private:
  struct Slot {
    size_t offset, length;
    bool done;
  };
  char* base_ = nullptr;
  size_t size_ = 0;
  std::deque<Slot> slots_;  // oldest first
};

class WorkerProcess {
 public:
  // Starts the worker and waits (up to options.call_timeout) for its HELLO.
  static Result<std::shared_ptr<WorkerProcess>> spawn(const WorkerOptions& options,
                                                      const std::filesystem::path& library,
                                                      const std::filesystem::path& plugin_dir);
  ~WorkerProcess();  // kills and reaps it if still running
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  const Hello& hello() const { return hello_; }
  pid_t pid() const { return pid_; }
  int fd(int channel) const { return fds_[static_cast<size_t>(channel)]; }
  // The buffered end of a channel: only the thread that acquired it may use it.
  FrameChannel& channel(int ch) { return channels_[static_cast<size_t>(ch)]; }
  // The channel's snapshot region (size 0 when snapshots are off): same rule as channel().
  SnapshotArena& arena(int ch) { return arenas_[static_cast<size_t>(ch)]; }

  // A free channel, or -1 if the worker is dead or none freed up before `deadline`.
  int acquire(std::chrono::steady_clock::time_point deadline);
  void release(int channel);
  // A free channel to hold for long (an event loop's own, see worker_plugin.cc), only while
  // another stays free for every other caller; -1 otherwise. Given back with release().
  int acquireSpare();

  // SIGKILLs and reaps the worker (idempotent; a second caller waits until it is reaped);
  // the first reason given is kept. A worker that ends while idle is reaped at once by a
  // watch on its pidfd, so its streams close then, not at the next call routed to it.
  void kill(const std::string& reason);
  bool dead() const { return dead_.load(std::memory_order_acquire); }
  // Why it ended ("killed by signal 11 (Segmentation fault)", "exited with 3", "call
  // timeout"); "" while alive.
  std::string endReason() const;

  // Host objects this worker opened that must not outlive it (its egress streams, held in
  // the kernel's handle table). `close` runs once when the worker dies or is stopped (after
  // it is reaped, on the thread that saw it end), unless forget() came first. False if the
  // worker is already dead: nothing was adopted and the caller closes the object now.
  bool adopt(uint64_t handle, std::function<void()> close);
  // Whether `handle` was opened by this worker (and is not forgotten): a worker may use
  // only its own streams, never another worker's of the same plugin and tenant.
  bool holds(uint64_t handle) const;
  // The plugin closed it itself.
  void forget(uint64_t handle);

 private:
  WorkerProcess() = default;
  pid_t pid_ = -1;
  Hello hello_;
  std::vector<int> fds_;
  std::vector<FrameChannel> channels_;  // one per fd
  std::vector<SnapshotArena> arenas_;   // one per fd
  std::vector<bool> busy_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  std::atomic<bool> dead_{false};
  bool reaped_ = false;  // guarded by mu_: end_reason_ is final, adopted_ closed
  mutable std::condition_variable reaped_cv_;
  std::string end_reason_;
  std::map<uint64_t, std::function<void()>> adopted_;  // guarded by mu_
};

}  // namespace trellis::kernel::worker
