// trellisd as a library: storage, tenants, plugins, the data plane and the admin plane,
// started and stopped in the right order. main() parses flags and waits for a signal;
// everything else lives here so tests can run it in-process too.
//
//   Application app(Config::load("config/trellis.yaml"));
//   if (Status s = app.start(); !s) die(s);
//   waitForSignal();
//   app.stop();   // stops accepting, drains in-flight requests, stops plugins
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "trellis/kernel/config/config.h"
#include "trellis/status.hpp"

namespace trellis::kernel::app {

class Application {
 public:
  explicit Application(config::Config config);
  ~Application();
  Application(const Application&) = delete;
  Application& operator=(const Application&) = delete;

  // Fails only for host-level problems (storage, ports, admin token); plugin failures are
  // reported and the host serves the rest.
  Status start();
  // Graceful: not ready → stop accepting → drain (server.drain_timeout) → stop plugins.
  void stop();

  uint16_t port() const;
  uint16_t adminPort() const;
  // SIGHUP: loads the TLS certificates and keys of both listeners again. New handshakes use
  // them; open connections keep theirs. A listener whose files do not load keeps its
  // current certificates; the failure is logged and returned.
  Status reloadTls();
  // Writes {"port":N,"admin_port":M} atomically, for supervisors and tests.
  Status writeReadyFile(const std::filesystem::path& file) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::kernel::app
