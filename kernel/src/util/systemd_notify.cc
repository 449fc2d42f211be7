#include "trellis/kernel/util/systemd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace trellis::kernel::util {

Status notifySystemd(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return Status::ok();
  const std::string name(path);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // '/' for a path, '@' for the abstract namespace (a leading NUL byte); nothing else.
  if ((name[0] != '/' && name[0] != '@') || name.size() >= sizeof addr.sun_path) {
    return Status::invalid("NOTIFY_SOCKET \"" + name + "\" is not a socket path or @name");
  }
  std::memcpy(addr.sun_path, name.data(), name.size());
  if (name[0] == '@') addr.sun_path[0] = '\0';
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::unavailable(std::string("socket: ") + std::strerror(errno));
  const ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                                reinterpret_cast<const sockaddr*>(&addr), len);
  const int err = errno;
  ::close(fd);
  if (sent != static_cast<ssize_t>(state.size())) {
    return Status::unavailable("cannot notify systemd at " + name + ": " + std::strerror(err));
  }
  return Status::ok();
}

}  // namespace trellis::kernel::util
