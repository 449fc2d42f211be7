// The worker side of the plugin boundary: a host table (every trellis_host_api slot) that
// answers from the invocation's snapshot where it can, batches effect-only calls, and
// forwards the rest to trellisd as CALL frames on the channel the invocation arrived on.
// One WorkerHost serves one loaded plugin; each channel has its own serving thread.
//
//   WorkerHost host(descriptor);
//   std::thread t([&] { host.serve(channel_fd); });  // one per channel, until EOF
//
// A Lua plugin is served the same way: its adapter's descriptor (lua/lua_plugin.h) takes
// the library's place, with the adapter in *state before on_init.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/plugin.h"

namespace trellis::kernel::worker {

class WorkerHost {
 public:
  // `state` is what on_init finds in *state (the Lua adapter's plugin; null for a library).
  explicit WorkerHost(const trellis_plugin* plugin, void* state = nullptr);
  // Runs INVOKE frames from `fd` until EOF or SHUTDOWN; returns the exit code the worker
  // should use (0 for a clean end, 3 for a protocol violation by the host). `region` is
  // the channel's snapshot region as mapped here (read-only; empty if it has none): a
  // kRouteShared INVOKE names a slot in it.
  int serve(int fd, std::string_view region = {});

  static const trellis_host_api* api();

  // Runs `fn` with a tenant-less init-phase ctx that reaches no channel: the Lua adapter
  // builds a channel thread's state under it (it replays init there). Host calls that
  // would need trellisd fail with UNAVAILABLE; config_get answers what the first on_init
  // asked for (plugin-wide answers are kept), clock and ctx getters answer as usual.
  static void withInitCtx(const std::function<void(const trellis_ctx*)>& fn);

  // The Lua adapter's failure count (cause: 0 error, 1 instructions, 2 memory, 3 wall
  // time), sent with the current call's effects for trellisd to count.
  static void noteLuaFailure(size_t cause);
};

}  // namespace trellis::kernel::worker
