// One trellis-worker process as trellisd sees it: its pid, its channels (one socketpair
// each, fds 3.. in the child) and whether it is still alive. Spawned with posix_spawn
// (never a bare fork of the threaded daemon) with a clean environment and signal mask.
//
//   auto p = WorkerProcess::spawn(options, library, plugin_dir);
//   int ch = p->acquire(deadline);   // -1: dead, or every channel stayed busy
//   FrameChannel& c = p->channel(ch);
//   c.send(FrameType::kInvoke, ...); c.read(frame, deadline); ...
//   p->release(ch);
//   p->kill("call timeout");          // SIGKILL, reaped; every channel reads EOF
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
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

  // A free channel, or -1 if the worker is dead or none freed up before `deadline`.
  int acquire(std::chrono::steady_clock::time_point deadline);
  void release(int channel);

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
