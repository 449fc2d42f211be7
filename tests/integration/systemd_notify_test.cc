// trellisd speaks systemd's readiness protocol by hand (Type=notify without libsystemd):
// started with NOTIFY_SOCKET, it sends READY=1 once serving and STOPPING=1 when it drains.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using ::testing::HasSubstr;

// A datagram socket the test listens on, standing in for systemd's notify socket.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (name[0] == '@') addr.sun_path[0] = '\0';
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0;
    timeval tv{20, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~NotifySocket() { ::close(fd_); }
  bool bound() const { return bound_; }
  // The next datagram, or "" after 20 s.
  std::string receive() {
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
};

// NOTIFY_SOCKET for the child trellisd only (it inherits the environment at fork).
void startNotifying(TrellisdProcess& server, const std::string& socket_name) {
  ::setenv("NOTIFY_SOCKET", socket_name.c_str(), 1);
  const bool started = server.start();
  ::unsetenv("NOTIFY_SOCKET");
  ASSERT_TRUE(started) << server.log();
}

TEST(SystemdNotifyTest, ReadyOnceServingAndStoppingWhenDraining) {
  TempDir dir;
  const std::string path = (dir / "notify.sock").string();
  NotifySocket socket(path);
  ASSERT_TRUE(socket.bound()) << path;
  TrellisdProcess server(defaultTestConfig());
  startNotifying(server, path);

  const std::string ready = socket.receive();
  EXPECT_THAT(ready, HasSubstr("READY=1"));
  // Ready means serving: the data plane answers.
  EXPECT_EQ(
      request(server.port(), "GET", "/hello/x", {{"Authorization", "Bearer acme-key"}}).status,
      200);
  EXPECT_EQ(server.stop(), 0);
  EXPECT_THAT(socket.receive(), HasSubstr("STOPPING=1"));
}

TEST(SystemdNotifyTest, AbstractSocketNamesWork) {
  const std::string name = "@trellis-notify-test-" + std::to_string(::getpid());
  NotifySocket socket(name);
  ASSERT_TRUE(socket.bound());
  TrellisdProcess server(defaultTestConfig());
  startNotifying(server, name);
  EXPECT_THAT(socket.receive(), HasSubstr("READY=1"));
}

}  // namespace
}  // namespace trellis::test
