// trellisd: the Trellis host. Loads the configured plugins and serves them until SIGTERM
// or SIGINT, then drains in-flight requests and stops the plugins in reverse order. SIGHUP
// reloads the listeners' TLS certificates.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "trellis/kernel/app/application.h"
#include "trellis/kernel/util/systemd_notify.h"

int main(int argc, char** argv) {
  CLI::App cli{"trellisd — the Trellis plugin host"};
  std::string config_file = "config/trellis.yaml";
  std::string ready_file;
  bool check_only = false;
  cli.add_option("-c,--config", config_file, "Configuration file")->capture_default_str();
  cli.add_option("--ready-file", ready_file,
                 "Write {\"port\":N,\"admin_port\":M} here once serving");
  cli.add_flag("--check", check_only, "Validate the configuration and exit");
  cli.set_version_flag("--version", std::string("trellisd ") + TRELLIS_VERSION + " (plugin ABI " +
                                        std::to_string(TRELLIS_ABI_MAJOR) + "." +
                                        std::to_string(TRELLIS_ABI_MINOR) + ")");
  CLI11_PARSE(cli, argc, argv);

  using trellis::kernel::config::Config;
  Config config;
  try {
    config = Config::load(config_file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trellisd: %s\n", e.what());
    return 2;
  }
  if (check_only) {
    std::printf("trellisd: %s is valid\n", config_file.c_str());
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  // Every thread started from here on inherits the blocked mask; only sigwait sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  trellis::kernel::app::Application app(std::move(config));
  if (auto s = app.start(); !s) {
    spdlog::critical("cannot start: {}", s.toString());
    app.stop();
    return 1;
  }
  if (!ready_file.empty()) {
    if (auto s = app.writeReadyFile(ready_file); !s) spdlog::error("{}", s.toString());
  }
  // systemd Type=notify (packaging/systemd/trellisd.service): ready once every listener is up.
  if (auto s = trellis::kernel::util::notifySystemd("READY=1\nSTATUS=serving"); !s) {
    spdlog::warn("{}", s.toString());
  }
  int sig = 0;
  // SIGHUP reloads TLS certificates and keys (a failure keeps the current ones and is
  // logged); SIGTERM and SIGINT stop.
  while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
    spdlog::info("received SIGHUP, reloading TLS certificates");
    (void)app.reloadTls();
  }
  spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (void)trellis::kernel::util::notifySystemd("STOPPING=1\nSTATUS=draining");
  app.stop();
  return 0;
}
