#include "worker/worker_side/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <malloc.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace trellis::kernel::worker {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitized = true;
#else
constexpr bool kAddressSanitized = false;
#endif
#else
constexpr bool kAddressSanitized = false;
#endif

std::string errnoText(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

std::string setLimit(int resource, uint64_t value, const char* name) {
  rlimit l{static_cast<rlim_t>(value), static_cast<rlim_t>(value)};
  if (setrlimit(resource, &l) != 0) return errnoText(std::string("setrlimit ") + name);
  return "";
}

// Read-only access to `dir`, nothing else. Returns "" and sets *status to what happened
// ("abi N" or "absent: …"); an error only if Landlock exists but could not be applied.
std::string landlock(const std::string& dir, int dir_fd, std::string* status) {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    *status = std::string("absent (") + std::strerror(errno) + ")";
    return "";
  }
  // ABI 1 rights, plus REFER (ABI 2) when offered: handled = denied unless a rule allows.
  uint64_t handled =
      LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
      LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
      LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
      LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
      LANDLOCK_ACCESS_FS_MAKE_SYM;
#ifdef LANDLOCK_ACCESS_FS_REFER
  if (abi >= 2) handled |= LANDLOCK_ACCESS_FS_REFER;
#endif
  landlock_ruleset_attr attr{};
  attr.handled_access_fs = handled;
  int ruleset = static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0));
  if (ruleset < 0) return errnoText("landlock_create_ruleset");
  if (dir_fd >= 0 || !dir.empty()) {
    int fd = dir_fd >= 0 ? dup(dir_fd) : open(dir.c_str(), O_PATH | O_CLOEXEC | O_DIRECTORY);
    if (fd < 0) {
      close(ruleset);
      return errnoText("open " + dir);
    }
    landlock_path_beneath_attr rule{};
    rule.allowed_access = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
    rule.parent_fd = fd;
    long added = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
    close(fd);
    if (added != 0) {
      close(ruleset);
      return errnoText("landlock_add_rule");
    }
  }
  long done = syscall(SYS_landlock_restrict_self, ruleset, 0);
  close(ruleset);
  if (done != 0) return errnoText("landlock_restrict_self");
  *status = "abi " + std::to_string(abi);
  return "";
}

// True inside a user namespace whose root may not change groups (`unshare -r`, some
// rootless containers): it maps no other user to switch to, and its root is an
// unprivileged user of the host already.
bool inUserNamespaceWithoutUsers() {
  std::ifstream f("/proc/self/setgroups");
  std::string word;
  return f >> word && word == "deny";
}

}  // namespace

bool parseSandboxOption(const std::string& arg, const std::function<std::string()>& value,
                        SandboxOptions& out) {
  if (arg == "--no-sandbox") {
    out.enabled = false;
  } else if (arg == "--sandbox-user") {
    out.user = value();
  } else if (arg == "--parent-pid") {
    out.parent_pid = std::atoi(value().c_str());
  } else if (arg == "--plugin-dir") {
    out.plugin_dir = value();
  } else if (arg == "--max-memory-bytes") {
    out.max_memory_bytes = std::strtoull(value().c_str(), nullptr, 10);
  } else if (arg == "--max-files") {
    out.max_files = std::strtoull(value().c_str(), nullptr, 10);
  } else if (arg == "--max-cpu-seconds") {
    out.max_cpu_seconds = std::strtoull(value().c_str(), nullptr, 10);
  } else {
    return false;
  }
  return true;
}

std::string dropPrivileges(const SandboxOptions& o) {
  if (geteuid() == 0 && o.enabled && inUserNamespaceWithoutUsers()) {
    std::fprintf(stderr,
                 "trellis-worker: stays the root of its user namespace, which maps no user to "
                 "switch to (the rest of the sandbox applies)\n");
  } else if (geteuid() == 0 && o.enabled) {
    passwd* pw = getpwnam(o.user.c_str());
    if (!pw) return "no such user \"" + o.user + "\" to run the worker as";
    if (pw->pw_uid == 0) return "refusing to run the worker as root (user \"" + o.user + "\")";
    if (setgroups(0, nullptr) != 0) return errnoText("setgroups");
    if (setgid(pw->pw_gid) != 0) return errnoText("setgid");
    if (setuid(pw->pw_uid) != 0) return errnoText("setuid");
    if (setuid(0) == 0) return "the worker could regain root after dropping it";
  }
  // After the uid change, which clears it; then make sure the parent did not already die.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return errnoText("PR_SET_PDEATHSIG");
  if (o.parent_pid > 0 && getppid() != o.parent_pid) return "trellisd is gone";
  if (std::string e = setLimit(RLIMIT_CORE, 0, "CORE"); !e.empty()) return e;
  if (!o.enabled) return "";
  if (std::string e = setLimit(RLIMIT_NOFILE, o.max_files, "NOFILE"); !e.empty()) return e;
  // AddressSanitizer reserves terabytes of shadow address space, so an ASan build of the
  // worker cannot run under RLIMIT_AS at all; release builds always get the limit.
  if (o.max_memory_bytes && !kAddressSanitized) {
    if (std::string e = setLimit(RLIMIT_AS, o.max_memory_bytes, "AS"); !e.empty()) return e;
    // glibc gives each thread that allocates its own arena, reserving 64 MiB of address
    // space apiece: with several channel threads at work the limit would be spent on
    // reservations, not on the plugin's memory. One arena keeps the limit about the latter.
    mallopt(M_ARENA_MAX, 1);
  }
  if (o.max_cpu_seconds) {
    if (std::string e = setLimit(RLIMIT_CPU, o.max_cpu_seconds, "CPU"); !e.empty()) return e;
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errnoText("PR_SET_NO_NEW_PRIVS");
  return "";
}

std::string enterSeccomp(SandboxOptions& o, int channels) {
  (void)channels;
  if (!o.enabled) {
    o.landlock_status = "off";
    return "";
  }
  if (std::string e = landlock(o.plugin_dir, o.plugin_dir_fd, &o.landlock_status); !e.empty())
    return e;

  scmp_filter_ctx f = seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (!f) return "seccomp_init failed";
  // What a plugin's own code and the C/C++ runtime need: memory, threads, time, files (the
  // file system is Landlock's job), I/O on descriptors it already has, signals to itself.
  static const int kAllowed[] = {
      SCMP_SYS(read),
      SCMP_SYS(write),
      SCMP_SYS(readv),
      SCMP_SYS(writev),
      SCMP_SYS(pread64),
      SCMP_SYS(pwrite64),
      SCMP_SYS(preadv),
      SCMP_SYS(pwritev),
      SCMP_SYS(close),
      SCMP_SYS(fstat),
      SCMP_SYS(stat),
      SCMP_SYS(lstat),
      SCMP_SYS(newfstatat),
      SCMP_SYS(statx),
      SCMP_SYS(lseek),
      SCMP_SYS(mmap),
      SCMP_SYS(mprotect),
      SCMP_SYS(munmap),
      SCMP_SYS(mremap),
      SCMP_SYS(madvise),
      SCMP_SYS(brk),
      SCMP_SYS(rt_sigaction),
      SCMP_SYS(rt_sigprocmask),
      SCMP_SYS(rt_sigreturn),
      SCMP_SYS(sigaltstack),
      SCMP_SYS(access),
      SCMP_SYS(faccessat),
      SCMP_SYS(faccessat2),
      SCMP_SYS(open),
      SCMP_SYS(openat),
      SCMP_SYS(getdents64),
      SCMP_SYS(readlink),
      SCMP_SYS(readlinkat),
      SCMP_SYS(getcwd),
      SCMP_SYS(fcntl),
      SCMP_SYS(dup),
      SCMP_SYS(dup2),
      SCMP_SYS(dup3),
      SCMP_SYS(pipe2),
      SCMP_SYS(poll),
      SCMP_SYS(ppoll),
      SCMP_SYS(select),
      SCMP_SYS(pselect6),
      SCMP_SYS(epoll_create1),
      SCMP_SYS(epoll_ctl),
      SCMP_SYS(epoll_wait),
      SCMP_SYS(epoll_pwait),
      SCMP_SYS(eventfd2),
      SCMP_SYS(nanosleep),
      SCMP_SYS(clock_nanosleep),
      SCMP_SYS(clock_gettime),
      SCMP_SYS(clock_getres),
      SCMP_SYS(gettimeofday),
      SCMP_SYS(time),
      SCMP_SYS(getpid),
      SCMP_SYS(gettid),
      SCMP_SYS(getppid),
      SCMP_SYS(getuid),
      SCMP_SYS(geteuid),
      SCMP_SYS(getgid),
      SCMP_SYS(getegid),
      SCMP_SYS(getrandom),
      SCMP_SYS(futex),
      SCMP_SYS(set_robust_list),
      SCMP_SYS(get_robust_list),
      SCMP_SYS(rseq),
      SCMP_SYS(set_tid_address),
      SCMP_SYS(exit),
      SCMP_SYS(exit_group),
      SCMP_SYS(sched_yield),
      SCMP_SYS(sched_getaffinity),
      SCMP_SYS(arch_prctl),
      SCMP_SYS(membarrier),
      SCMP_SYS(sendmsg),
      SCMP_SYS(recvmsg),
      SCMP_SYS(sendto),
      SCMP_SYS(recvfrom),
      SCMP_SYS(shutdown),
      SCMP_SYS(getsockopt),
      SCMP_SYS(uname),
      SCMP_SYS(sysinfo),
      SCMP_SYS(getrlimit),
      SCMP_SYS(getrusage),
      SCMP_SYS(times),
      SCMP_SYS(ftruncate),
      SCMP_SYS(fsync),
      SCMP_SYS(fdatasync),
      SCMP_SYS(memfd_create),
      SCMP_SYS(timerfd_create),
      SCMP_SYS(timerfd_settime),
      SCMP_SYS(timerfd_gettime),
      SCMP_SYS(mincore),
      SCMP_SYS(restart_syscall),
      SCMP_SYS(prlimit64),
      SCMP_SYS(sched_getparam),
      SCMP_SYS(sched_getscheduler),
      SCMP_SYS(getresuid),
      SCMP_SYS(getresgid),
  };
  int rc = 0;
  for (int call : kAllowed) rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, call, 0);
  // Threads, not processes: clone only with CLONE_THREAD; clone3 says ENOSYS so glibc
  // falls back to clone, whose flags the filter can see.
  rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                         SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  rc |= seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  // Signals only to itself (abort() raises SIGABRT with tgkill).
  const auto self = static_cast<scmp_datum_t>(getpid());
  rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_EQ, self));
  rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, SCMP_A0(SCMP_CMP_EQ, self));
  // prctl, but not the calls that would loosen anything (NO_NEW_PRIVS cannot be undone).
  rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
                         SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(PR_SET_NAME)));
  rc |= seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
                         SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(PR_GET_NAME)));
  if (rc != 0) {
    seccomp_release(f);
    return "building the seccomp filter failed";
  }
  rc = seccomp_load(f);
  seccomp_release(f);
  if (rc != 0) return "loading the seccomp filter failed: " + std::string(std::strerror(-rc));
  return "";
}

}  // namespace trellis::kernel::worker
