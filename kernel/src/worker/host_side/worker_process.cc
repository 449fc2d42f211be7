#include "worker/host_side/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <thread>
#include <utility>

#include "worker/protocol.h"

namespace trellis::kernel::worker {
namespace {

// Closes the fds it holds unless released.
struct FdList {
  std::vector<int> fds;
  ~FdList() {
    for (int fd : fds) ::close(fd);
  }
};

// The whole environment a worker gets: trellisd's sanitizer settings (a sanitizer build's
// workers then report, suppress and halt as trellisd does, e.g. with the LSan suppressions
// file) and nothing else of it, so no credential or setting meant for trellisd reaches a
// plugin. Read once, at the first spawn: trellisd never changes its environment.
const std::vector<std::string>& workerEnvironment() {
  static const std::vector<std::string> env = [] {
    std::vector<std::string> kept;
    for (const char* name : {"ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"}) {
      if (const char* value = std::getenv(name)) kept.push_back(std::string(name) + "=" + value);
    }
    return kept;
  }();
  return env;
}

std::string describeExit(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  return "ended";
}

// PR_SET_PDEATHSIG fires when the *thread* that forked the worker exits, so every worker
// is spawned from this one thread, which lives as long as trellisd.
class Spawner {
 public:
  static Spawner& instance() {
    static Spawner* s = new Spawner();  // never destroyed: workers must outlive statics
    return *s;
  }
  template <typename F>
  auto run(F fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    {
      std::lock_guard lock(mu_);
      queue_.emplace_back([&task] { task(); });
    }
    cv_.notify_one();
    return result.get();
  }

 private:
  Spawner() {
    std::thread([this] {
      for (;;) {
        std::function<void()> job;
        {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [this] { return !queue_.empty(); });
          job = std::move(queue_.front());
          queue_.pop_front();
        }
        job();
      }
    }).detach();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

std::atomic<int64_t> g_live_slots{0};

// A memfd of `size` bytes mapped read-write here, then sealed so that nobody (the worker
// it is handed to) can map it writable, write it, resize it or change its seals. The
// mapping made before the seal stays writable: F_SEAL_FUTURE_WRITE, unlike F_SEAL_WRITE,
// refuses only what comes after it.
Status makeRegion(size_t size, int* fd_out, char** base_out) {
  int fd = ::memfd_create("trellis-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Status::unavailable(std::string("memfd_create: ") + std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    Status s = Status::unavailable(std::string("ftruncate: ") + std::strerror(errno));
    ::close(fd);
    return s;
  }
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    Status s = Status::unavailable(std::string("mmap: ") + std::strerror(errno));
    ::close(fd);
    return s;
  }
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) !=
      0) {
    Status s =
        Status::unavailable(std::string("sealing the snapshot region: ") + std::strerror(errno));
    ::munmap(base, size);
    ::close(fd);
    return s;
  }
  *fd_out = fd;
  *base_out = static_cast<char*>(base);
  return Status::ok();
}

}  // namespace

SnapshotArena& SnapshotArena::operator=(SnapshotArena&& o) noexcept {
  if (this != &o) {
    clear();
    if (base_) ::munmap(base_, size_);
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    slots_ = std::move(o.slots_);
    o.slots_.clear();
  }
  return *this;
}

SnapshotArena::~SnapshotArena() {
  clear();
  if (base_) ::munmap(base_, size_);
  base_ = nullptr;
  size_ = 0;
}

std::optional<uint64_t> SnapshotArena::place(size_t n, char** at) {
  // Slots start on cache lines: the worker's reads of one never share a line the host is
  // writing for the next.
  const size_t len = (n + 63) & ~size_t{63};
  if (!base_ || n == 0 || len > size_) return std::nullopt;
  size_t offset = 0;
  if (!slots_.empty()) {
    const size_t tail = slots_.front().offset;
    const size_t head = slots_.back().offset + slots_.back().length;
    if (slots_.back().offset >= tail) {  // in use: [tail, head)
      if (size_ - head >= len) {
        offset = head;
      } else if (tail >= len) {
        offset = 0;  // wraps
      } else {
        return std::nullopt;
      }
    } else {  // wrapped, in use: [tail, size) and [0, head)
      if (tail - head < len) return std::nullopt;
      offset = head;
    }
  }
  slots_.push_back({offset, len, false});
  g_live_slots.fetch_add(1, std::memory_order_relaxed);
  *at = base_ + offset;
  return offset;
}

void SnapshotArena::giveBack(uint64_t offset) {
  for (Slot& s : slots_) {
    if (s.offset == offset && !s.done) {
      s.done = true;
      g_live_slots.fetch_sub(1, std::memory_order_relaxed);
      break;
    }
  }
  while (!slots_.empty() && slots_.front().done) slots_.pop_front();
}

size_t SnapshotArena::clear() {
  size_t live = 0;
  for (const Slot& s : slots_) live += s.done ? 0 : 1;
  g_live_slots.fetch_sub(static_cast<int64_t>(live), std::memory_order_relaxed);
  slots_.clear();
  return live;
}

size_t SnapshotArena::bytesInUse() const {
  size_t n = 0;
  for (const Slot& s : slots_) n += s.length;
  return n;
}

int64_t SnapshotArena::liveSlots() {
  return g_live_slots.load(std::memory_order_relaxed);
}

// Sees a worker end while no call is routed to it (a worker is otherwise only found dead
// by the next call): one thread waits on every live worker's pidfd and kills (reaps) the
// dead one, so what it opened in the host (its egress streams) is closed at once.
class DeathWatch {
 public:
  static DeathWatch& instance() {
    static DeathWatch* w = new DeathWatch();  // never destroyed, like the Spawner
    return *w;
  }
  // False where pidfds or epoll are missing (kernel < 5.3): such a worker is found dead by
  // its next call, as before.
  bool watch(const std::shared_ptr<WorkerProcess>& p) {
    if (epoll_ < 0) return false;
    int fd = static_cast<int>(syscall(SYS_pidfd_open, p->pid(), 0));
    if (fd < 0) return false;
    std::lock_guard lock(mu_);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      return false;
    }
    watched_[fd] = p;
    return true;
  }

 private:
  DeathWatch() : epoll_(epoll_create1(EPOLL_CLOEXEC)) {
    if (epoll_ >= 0) std::thread([this] { run(); }).detach();
  }
  void run() {
    epoll_event events[16];
    for (;;) {
      int n = epoll_wait(epoll_, events, 16, -1);
      for (int i = 0; i < n; ++i) {
        std::weak_ptr<WorkerProcess> gone;
        {
          std::lock_guard lock(mu_);
          int fd = events[i].data.fd;
          epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
          ::close(fd);
          auto it = watched_.find(fd);
          if (it == watched_.end()) continue;
          gone = std::move(it->second);
          watched_.erase(it);
        }
        // Already dead (killed by trellisd, stopped) or destroyed: kill() does nothing.
        if (auto p = gone.lock()) p->kill("killed by signal 9 (Killed) while idle");
      }
    }
  }
  int epoll_;
  std::mutex mu_;
  std::map<int, std::weak_ptr<WorkerProcess>> watched_;  // pidfd -> worker
};

Result<std::shared_ptr<WorkerProcess>> WorkerProcess::spawn(const WorkerOptions& o,
                                                            const std::filesystem::path& library,
                                                            const std::filesystem::path& dir) {
  std::shared_ptr<WorkerProcess> p(new WorkerProcess());
  FdList parent_ends, child_ends;
  for (int i = 0; i < o.channels; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return Status::unavailable(std::string("socketpair: ") + std::strerror(errno));
    }
    parent_ends.fds.push_back(sv[0]);
    child_ends.fds.push_back(sv[1]);
  }

  // The worker gets the library and its folder as descriptors opened here: it opens the
  // very file trellisd checked, and it needs no search permission on the folders above
  // (it runs as an unprivileged user; a plugin folder may be trellisd's alone).
  int library_fd = ::open(library.c_str(), O_RDONLY | O_CLOEXEC);
  if (library_fd < 0) {
    return Status::unavailable("cannot open " + library.string() + ": " + std::strerror(errno));
  }
  child_ends.fds.push_back(library_fd);
  int dir_fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return Status::unavailable("cannot open " + dir.string() + ": " + std::strerror(errno));
  }
  child_ends.fds.push_back(dir_fd);

  // One snapshot region per channel, after the folder: fds 3+channels+2 … in the worker.
  std::vector<SnapshotArena> arenas;
  for (int i = 0; o.snapshot_bytes > 0 && i < o.channels; ++i) {
    int fd = -1;
    char* base = nullptr;
    if (Status s = makeRegion(o.snapshot_bytes, &fd, &base); !s) return s;
    arenas.emplace_back(base, o.snapshot_bytes);
    child_ends.fds.push_back(fd);  // trellisd keeps only its mapping
  }

  std::vector<std::string> args = {o.binary.string(),
                                   "--library",
                                   library.string(),
                                   "--channels",
                                   std::to_string(o.channels),
                                   "--parent-pid",
                                   std::to_string(::getpid()),
                                   "--plugin-dir",
                                   dir.string(),
                                   "--max-files",
                                   std::to_string(o.max_files)};
  if (!arenas.empty()) args.insert(args.end(), {"--snapshot-regions", "1"});
  if (!o.sandbox) {
    args.push_back("--no-sandbox");
  } else {
    args.insert(args.end(),
                {"--sandbox-user", o.user, "--max-memory-bytes", std::to_string(o.max_memory_bytes),
                 "--max-cpu-seconds", std::to_string(o.max_cpu_seconds)});
  }
  args.insert(args.end(), o.plugin_args.begin(), o.plugin_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : workerEnvironment()) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // The channels become 3, 4, …, then the library and its folder: first move each out of
  // the way of that range, then into place (dup2 clears close-on-exec on the copy).
  const int base = 3, high = 1000;
  const int inherited = static_cast<int>(child_ends.fds.size());
  for (int i = 0; i < inherited; ++i) {
    posix_spawn_file_actions_adddup2(&fa, child_ends.fds[static_cast<size_t>(i)], high + i);
  }
  for (int i = 0; i < inherited; ++i) {
    posix_spawn_file_actions_adddup2(&fa, high + i, base + i);
    posix_spawn_file_actions_addclose(&fa, high + i);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigfillset(&defaults);
  posix_spawnattr_setsigmask(&attr, &none);  // trellisd blocks SIGTERM in every thread
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
  pid_t pid = -1;
  int rc = Spawner::instance().run(
      [&] { return posix_spawn(&pid, o.binary.c_str(), &fa, &attr, argv.data(), envp.data()); });
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return Status::unavailable("cannot start " + o.binary.string() + ": " + std::strerror(rc));
  }
  // Only the worker holds its ends now, so a worker that dies before HELLO is seen at once
  // as the channel closing, not after the whole call timeout.
  for (int fd : child_ends.fds) ::close(fd);
  child_ends.fds.clear();
  p->pid_ = pid;
  p->fds_ = std::move(parent_ends.fds);
  parent_ends.fds.clear();
  p->busy_.assign(p->fds_.size(), false);
  for (int fd : p->fds_) p->channels_.emplace_back(fd);
  arenas.resize(p->fds_.size());  // snapshots off: empty arenas, which place nothing
  p->arenas_ = std::move(arenas);

  Frame hello;
  Status s = p->channels_[0].read(hello, std::chrono::steady_clock::now() + o.call_timeout);
  if (s && hello.type == FrameType::kRefused) {
    FrameReader r(hello.payload);
    std::string why(r.str().substr(0, 1024));
    p->kill("refused");
    return Status::unavailable(r.ok() ? why : "the worker refused to start");
  }
  if (!s || hello.type != FrameType::kHello) {
    p->kill("no HELLO");
    std::string why = p->endReason();
    return Status::unavailable("the worker did not start (" +
                               (s ? std::string("its first frame was not HELLO") : s.message()) +
                               "; " + why + ")");
  }
  FrameReader r(hello.payload);
  uint32_t protocol = r.u32();
  p->hello_.struct_size = r.u32();
  p->hello_.abi_major = r.u32();
  p->hello_.abi_minor = r.u32();
  p->hello_.id = std::string(r.str());
  p->hello_.version = std::string(r.str());
  p->hello_.landlock = std::string(r.str());
  if (!r.ok() || protocol != kProtocolVersion || p->hello_.id.size() > 256 ||
      p->hello_.version.size() > 256 || p->hello_.landlock.size() > 256) {
    p->kill("bad HELLO");
    return Status::unavailable("the worker's HELLO is malformed or speaks another protocol");
  }
  DeathWatch::instance().watch(p);
  return p;
}

WorkerProcess::~WorkerProcess() {
  kill("stopped");
  for (int fd : fds_) ::close(fd);
}

int WorkerProcess::acquire(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  for (;;) {
    if (dead()) return -1;
    for (size_t i = 0; i < busy_.size(); ++i) {
      if (!busy_[i]) {
        busy_[i] = true;
        return static_cast<int>(i);
      }
    }
    if (freed_.wait_until(lock, deadline) == std::cv_status::timeout) return -1;
  }
}

int WorkerProcess::acquireSpare() {
  std::lock_guard lock(mu_);
  if (dead() || std::count(busy_.begin(), busy_.end(), false) < 2) return -1;
  auto free = std::find(busy_.begin(), busy_.end(), false);
  *free = true;
  return static_cast<int>(free - busy_.begin());
}

void WorkerProcess::release(int channel) {
  {
    std::lock_guard lock(mu_);
    busy_[static_cast<size_t>(channel)] = false;
  }
  freed_.notify_one();
}

void WorkerProcess::kill(const std::string& reason) {
  if (dead_.exchange(true, std::memory_order_acq_rel)) {
    // Another thread (a call, the death watch) is reaping it: its reason is the one kept.
    std::unique_lock lock(mu_);
    reaped_cv_.wait(lock, [this] { return reaped_; });
    return;
  }
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    pid_t got;
    do {
      got = ::waitpid(pid_, &status, 0);
    } while (got < 0 && errno == EINTR);
    // A worker that ended on its own says how; one we killed says why we did.
    bool on_its_own = got == pid_ && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    std::lock_guard lock(mu_);
    end_reason_ = on_its_own ? describeExit(status) : reason;
  }
  // Threads waiting on other channels wake up with EOF; nobody waits for a free one.
  for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  freed_.notify_all();
  // What the worker opened in the host goes with it (outside mu_: closing a TLS stream
  // may wait for its close_notify).
  std::map<uint64_t, std::function<void()>> adopted;
  {
    std::lock_guard lock(mu_);
    adopted.swap(adopted_);
  }
  for (auto& [handle, close] : adopted) close();
  // Only now is it over for a second caller: reaped, its reason final, its handles closed.
  {
    std::lock_guard lock(mu_);
    reaped_ = true;
  }
  reaped_cv_.notify_all();
}

bool WorkerProcess::adopt(uint64_t handle, std::function<void()> close) {
  std::lock_guard lock(mu_);
  if (dead()) return false;
  adopted_[handle] = std::move(close);
  return true;
}

bool WorkerProcess::holds(uint64_t handle) const {
  std::lock_guard lock(mu_);
  return adopted_.count(handle) != 0;
}

void WorkerProcess::forget(uint64_t handle) {
  std::lock_guard lock(mu_);
  adopted_.erase(handle);
}

std::string WorkerProcess::endReason() const {
  std::unique_lock lock(mu_);
  reaped_cv_.wait(lock, [this] { return !dead() || reaped_; });
  return end_reason_;
}

}  // namespace trellis::kernel::worker
