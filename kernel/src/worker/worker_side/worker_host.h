// The worker side of the plugin boundary: a host table (every trellis_host_api slot) that
// answers from the invocation's snapshot where it can, batches effect-only calls, and
// forwards the rest to trellisd as CALL frames on the channel the invocation arrived on.
// One WorkerHost serves one loaded plugin; each channel has its own serving thread.
//
//   WorkerHost host(descriptor);
//   std::thread t([&] { host.serve(channel_fd); });  // one per channel, until EOF
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/plugin.h"

namespace trellis::kernel::worker {

class WorkerHost {
 public:
  explicit WorkerHost(const trellis_plugin* plugin);
  // Runs INVOKE frames from `fd` until EOF or SHUTDOWN; returns the exit code the worker
  // should use (0 for a clean end, 3 for a protocol violation by the host).
  int serve(int fd);

  static const trellis_host_api* api();
};

}  // namespace trellis::kernel::worker
