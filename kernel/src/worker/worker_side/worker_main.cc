// trellis-worker: runs one plugin outside trellisd: a native library, or a Lua plugin in
// its sandbox. Started by trellisd (never by hand) with the channel sockets as fds 3, 4, …,
// then the library and its folder, then (with --snapshot-regions 1) each channel's snapshot
// region, a sealed memfd it maps read-only (the seals refuse a writable mapping); it
// sandboxes itself, opens the plugin, says HELLO on the first channel and serves every
// channel on its own thread until trellisd closes them.
//
//   trellis-worker --library /plugins/acme-x/libx.so --channels 4 [sandbox options]
//   trellis-worker --library /plugins/acme-l/main.lua --lua --lua-entry main.lua
//       --plugin-id acme/l --plugin-version 1.0.0 --lua-instructions N --lua-memory-bytes N
//       --lua-wall-ms N --lua-blocking-wall-ms N [--blocking-route "GET /x"]...
//       --channels 4 [sandbox options]
//
// --library names the file for messages; the worker loads the descriptor it inherits. A
// Lua plugin's states (one per channel thread), budgets and watchdog live in this process,
// under its seccomp filter and Landlock rules: a script stuck past the call timeout is
// killed with its worker, not left holding a thread of trellisd.
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "lua/internal/budget_clock.h"
#include "lua/lua_plugin.h"
#include "worker/protocol.h"
#include "worker/worker_side/sandbox.h"
#include "worker/worker_side/worker_host.h"

namespace {

using trellis::kernel::worker::FrameType;
using trellis::kernel::worker::FrameWriter;
using trellis::kernel::worker::kProtocolVersion;

bool g_said_hello = false;

// Before HELLO, trellisd is told why (it names the reason where the plugin's state is
// shown); the message goes to stderr, which trellisd logs, as well.
[[noreturn]] void die(const std::string& why);

// A Lua plugin's entry, read whole from the descriptor trellisd opened (it checked the
// file is inside the plugin folder and small enough; the adapter checks the size again).
std::string readAll(int fd) {
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) die(std::string("cannot read the lua entry: ") + std::strerror(errno));
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > 4u * 1024 * 1024) die("the lua entry has more than 4 MiB");
  }
}

uint64_t number(const std::string& option, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0) die(option + " needs a number, not " + text);
  return v;
}

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "trellis-worker: %s\n", why.c_str());
  std::fflush(stderr);
  if (!g_said_hello) {
    FrameWriter w;
    w.str(why.substr(0, 1024));
    (void)trellis::kernel::worker::writeFrame(3, FrameType::kRefused, 0, 0, w);
  }
  _exit(2);
}

}  // namespace

#if defined(__SANITIZE_ADDRESS__)
// In AddressSanitizer builds a plugin's segfault must still end the worker by SIGSEGV, as
// trellisd reports it in release builds, not by ASan's report and exit(1). The worker gets
// trellisd's ASAN_OPTIONS, which are meant for trellisd and seldom say this, so the worker
// says it itself (ASAN_OPTIONS is applied after these defaults and may still override them).
extern "C" const char* __asan_default_options() {
  return "handle_segv=0:handle_sigbus=0:handle_sigfpe=0";
}
#endif

int main(int argc, char** argv) {
  std::string library;
  int channels = 1;
  trellis::kernel::worker::SandboxOptions sandbox;
  bool lua = false;
  bool regions = false;
  trellis::kernel::lua::LuaPlugin::Source lua_source;
  trellis::kernel::config::LuaBudget lua_budget;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("option " + arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--library") {
      library = value();
    } else if (arg == "--channels") {
      channels = std::atoi(value().c_str());
    } else if (arg == "--snapshot-regions") {
      regions = number(arg, value()) != 0;
    } else if (arg == "--lua") {
      lua = true;
    } else if (arg == "--lua-entry") {
      lua_source.entry = value();  // as the manifest names it: the chunk name in messages
    } else if (arg == "--plugin-id") {
      lua_source.id = value();
    } else if (arg == "--plugin-version") {
      lua_source.version = value();
    } else if (arg == "--lua-instructions") {
      lua_budget.instructions = number(arg, value());
    } else if (arg == "--lua-memory-bytes") {
      lua_budget.memory_bytes = number(arg, value());
    } else if (arg == "--lua-wall-ms") {
      lua_budget.wall = std::chrono::milliseconds(number(arg, value()));
    } else if (arg == "--lua-blocking-wall-ms") {
      lua_budget.blocking_wall = std::chrono::milliseconds(number(arg, value()));
    } else if (arg == "--blocking-route") {
      std::string route = value();
      size_t space = route.find(' ');
      if (space == std::string::npos) die("--blocking-route needs \"METHOD /pattern\"");
      lua_source.blocking_routes.push_back({route.substr(0, space), route.substr(space + 1)});
    } else if (!trellis::kernel::worker::parseSandboxOption(arg, value, sandbox)) {
      die("unknown option " + arg);
    }
  }
  if (library.empty() || channels < 1 || channels > 256) die("usage: --library FILE --channels N");
  if (lua && (lua_source.id.empty() || lua_source.version.empty())) {
    die("--lua needs --plugin-id and --plugin-version");
  }
  // fds 3 … 3+channels-1 are the channels, then the library and its folder (opened by
  // trellisd, which may read where this unprivileged process cannot). Anything else
  // trellisd had open without close-on-exec is closed before plugin code runs.
  const int library_fd = 3 + channels;
  sandbox.plugin_dir_fd = library_fd + 1;
  const int first_region_fd = library_fd + 2;
  const int inherited_end = first_region_fd + (regions ? channels : 0);
  if (syscall(SYS_close_range, inherited_end, ~0u, 0) != 0) die("close_range failed");
  // Each channel's snapshot region, read-only: trellisd sealed it against writable
  // mappings, so PROT_WRITE here (or an mprotect to it later) fails whoever asks. The fd
  // stays open; it gives nothing the mapping does not.
  std::vector<std::string_view> region(static_cast<size_t>(channels));
  for (int i = 0; regions && i < channels; ++i) {
    struct stat st {};
    const int fd = first_region_fd + i;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) die("snapshot region " + std::to_string(i));
    void* base = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) die(std::string("mapping a snapshot region: ") + std::strerror(errno));
    region[static_cast<size_t>(i)] =
        std::string_view(static_cast<const char*>(base), static_cast<size_t>(st.st_size));
  }

  // The Lua budget clock calibrates from /sys, which the sandbox will not let it read.
  if (lua) (void)trellis::kernel::lua::budget_clock::now();
  // Privileges go before any plugin code runs; the seccomp filter after dlopen, whose
  // loader needs calls (mmap of the file, mprotect) the filter allows anyway.
  if (std::string why = trellis::kernel::worker::dropPrivileges(sandbox); !why.empty()) die(why);

  const trellis_plugin* plugin = nullptr;
  std::unique_ptr<trellis::kernel::lua::LuaPlugin> lua_plugin;
  if (lua) {
    if (lua_source.entry.empty()) {
      lua_source.entry = std::filesystem::path(library).filename().string();
    }
    lua_source.text = readAll(library_fd);
    auto made = trellis::kernel::lua::LuaPlugin::fromSource(
        std::move(lua_source), lua_budget, nullptr,
        trellis::kernel::worker::WorkerHost::withInitCtx,
        trellis::kernel::worker::WorkerHost::noteLuaFailure);
    if (!made) die(made.status().message());
    lua_plugin = std::move(*made);
    plugin = &lua_plugin->descriptor();
  } else {
    std::string by_fd = "/proc/self/fd/" + std::to_string(library_fd);
    void* handle = dlopen(by_fd.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) die("cannot open the plugin library " + library + ": " + dlerror());
    auto entry =
        reinterpret_cast<trellis_plugin_entry_fn>(dlsym(handle, TRELLIS_PLUGIN_ENTRY_SYMBOL));
    if (!entry) die("the library exports no " TRELLIS_PLUGIN_ENTRY_SYMBOL);
    plugin = entry();
    if (!plugin) die(TRELLIS_PLUGIN_ENTRY_SYMBOL " returned NULL");
  }

  if (std::string why = trellis::kernel::worker::enterSeccomp(sandbox, channels); !why.empty()) {
    die(why);
  }
  close(library_fd);  // mapped or read by now; neither descriptor is the plugin's to use
  close(sandbox.plugin_dir_fd);

  // HELLO: what the host needs to check the descriptor against the manifest, as
  // NativeLibrary does for in-process plugins. Strings are bounded: the host refuses more.
  auto bounded = [](const char* s) { return s ? std::string(s, strnlen(s, 256)) : std::string(); };
  FrameWriter hello;
  hello.u32(kProtocolVersion).u32(plugin->struct_size).u32(plugin->abi_major);
  hello.u32(plugin->abi_minor).str(bounded(plugin->id)).str(bounded(plugin->version));
  hello.str(sandbox.landlock_status);
  if (!trellis::kernel::worker::writeFrame(3, FrameType::kHello, 0, 0, hello)) return 70;
  g_said_hello = true;

  // The Lua adapter finds its plugin in *state at on_init; a library starts with null.
  trellis::kernel::worker::WorkerHost host(plugin, lua_plugin ? lua_plugin->hookState() : nullptr);
  std::vector<std::thread> threads;
  for (int i = 1; i < channels; ++i) {
    threads.emplace_back(
        [&host, &region, i] { _exit(host.serve(3 + i, region[static_cast<size_t>(i)])); });
  }
  // Any channel ending ends the worker: the host drops all of a worker's channels at once.
  _exit(host.serve(3, region[0]));
}
