// A native plugin served by trellis-worker processes, presented to the kernel as an
// ordinary trellis_plugin descriptor (as the Lua adapter is). A Lua plugin is served the
// same way (`library` is then its entry and options.plugin_args say how to build it; the
// worker runs the Lua adapter in place of a library). The plugin manager inits,
// starts, routes to and stops it exactly like an in-process library. Every hook and every
// callback the plugin registered becomes an INVOKE to a worker; every host call the plugin
// makes there comes back as a CALL that is served here through the real host table, under
// the real ctx, so capability checks, quotas and tenant scoping are the same in both modes.
//
// One shared worker serves the plugin, plus one per tenant listed as dedicated. A worker
// that crashes, hangs past the call timeout or breaks the protocol is killed; its
// in-flight requests are answered 502 (crash) or 504 (timeout) with problem+json, and it
// is restarted on the next call after an exponential backoff (0.5 s doubling to 60 s);
// five crashes in a row without a healthy minute in between is "crashlooping". A request
// (route + body) in flight during three crashes is answered 502 at once after that.
//
//   auto w = WorkerPlugin::open(instance, dir / "libx.so", options, {"globex"});
//   instance.worker = std::move(*w);        // descriptor() now reaches the worker
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "trellis/plugin.h"
#include "trellis/status.hpp"
#include "worker/host_side/worker_process.h"

namespace trellis::kernel::runtime {
class PluginInstance;
}

namespace trellis::kernel::worker {

// One worker slot as operators see it (admin API, `trellis plugin list`).
struct WorkerReport {
  std::string tenant;  // "" = the shared worker
  std::string state;   // starting, running, restarting, crashlooping, stopped
  int pid = 0;
  uint64_t restarts = 0;
  uint64_t crashes = 0;
  std::string last_crash;  // why the last worker ended
  double backoff_seconds = 0;
  std::string landlock;
};

class WorkerPlugin {
 public:
  // Starts the shared worker (and one per dedicated tenant) and checks what they opened
  // against the manifest, as NativeLibrary does in process.
  static Result<std::unique_ptr<WorkerPlugin>> open(runtime::PluginInstance& plugin,
                                                    const std::filesystem::path& library,
                                                    const WorkerOptions& options,
                                                    std::vector<std::string> dedicated_tenants);
  ~WorkerPlugin();
  WorkerPlugin(const WorkerPlugin&) = delete;
  WorkerPlugin& operator=(const WorkerPlugin&) = delete;

  const trellis_plugin& descriptor() const { return descriptor_; }
  // What the kernel must put in *state before on_init (C hooks carry no user pointer).
  void* hookState() { return impl_.get(); }
  std::vector<WorkerReport> report() const;

  struct Impl;  // public so the trampolines and the call server can reach it

 private:
  WorkerPlugin() = default;
  trellis_plugin descriptor_{};
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::kernel::worker
