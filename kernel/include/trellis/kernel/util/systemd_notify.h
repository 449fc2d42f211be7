// systemd's readiness protocol (sd_notify(3)), written by hand so trellisd needs no
// libsystemd: one datagram of "KEY=value" lines to the AF_UNIX socket named by the
// NOTIFY_SOCKET environment variable. A name starting with '@' is an abstract socket.
//
//   notifySystemd("READY=1\nSTATUS=serving");   // once every listener is bound
//   notifySystemd("STOPPING=1");                // when draining starts
//
// Without NOTIFY_SOCKET (not started by systemd with Type=notify) it does nothing.
#pragma once

#include <string_view>

#include "trellis/status.hpp"

namespace trellis::kernel::util {

// OK when sent or when NOTIFY_SOCKET is unset; UNAVAILABLE naming the socket otherwise.
Status notifySystemd(std::string_view state);

}  // namespace trellis::kernel::util
