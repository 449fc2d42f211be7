// The worker's sandbox, applied to itself in this order (each step only narrows):
//   dropPrivileges: setgroups/setgid/setuid to the configured user when started as root,
//     then PR_SET_PDEATHSIG (it is cleared by the uid change, so it comes after) and a
//     getppid() check, rlimits (address space, open files, CPU seconds, no core files) and
//     PR_SET_NO_NEW_PRIVS;
//   (the plugin library is opened)
//   enterSeccomp: Landlock read-only on the plugin folder where the kernel has Landlock,
//     then a libseccomp allow-list: everything not listed fails with EPERM, notably exec,
//     process creation (threads are allowed), ptrace, socket creation, io_uring, bpf, mount.
// Each returns "" or why it failed; a worker that cannot sandbox itself does not serve.
#pragma once

#include <functional>
#include <string>

namespace trellis::kernel::worker {

struct SandboxOptions {
  bool enabled = true;
  std::string user = "nobody";          // used only when started as root
  int parent_pid = 0;                   // trellisd; the worker exits if it is not its parent
  std::string plugin_dir;               // Landlock: the only folder the plugin may read
  int plugin_dir_fd = -1;               // … opened by trellisd (O_PATH); else by name
  uint64_t max_memory_bytes = 0;        // RLIMIT_AS; 0 = unlimited
  uint64_t max_files = 64;              // RLIMIT_NOFILE
  uint64_t max_cpu_seconds = 0;         // RLIMIT_CPU; 0 = unlimited
  std::string landlock_status = "off";  // filled by enterSeccomp, reported in HELLO
};

// Parses one --sandbox-… option; false if `arg` is not one.
bool parseSandboxOption(const std::string& arg, const std::function<std::string()>& value,
                        SandboxOptions& out);

std::string dropPrivileges(const SandboxOptions& options);
std::string enterSeccomp(SandboxOptions& options, int channels);

}  // namespace trellis::kernel::worker
