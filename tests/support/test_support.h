// Helpers shared by unit and integration tests: temporary directories, a raw HTTP/1.1
// client over loopback (so tests can send malformed bytes), and a real `trellisd`
// process started from a generated config.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::test {

// A fresh directory under /tmp, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& p) const { return path_ / p; }

 private:
  std::filesystem::path path_;
};

void writeFile(const std::filesystem::path& file, const std::string& content);
std::string readFile(const std::filesystem::path& file);

// `n` bytes of every value (NUL, CR and LF included) from a fixed seed: content in which a
// lost, repeated or reordered stretch shows.
std::string randomBytes(size_t n, unsigned seed);
// "" when `got` equals `want`; otherwise both sizes and the first byte where they differ,
// a message fit for a failing assertion on a megabyte.
std::string bytesDiffer(std::string_view got, std::string_view want);

struct HttpReply {
  int status = 0;                              // 0: no parsable reply (connection closed, timeout)
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const;
};

// Sends `raw` bytes to 127.0.0.1:port and reads one response (Content-Length framed)
// or until the server closes. Times out after `timeout`.
HttpReply rawExchange(uint16_t port, const std::string& raw,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));

// A well-formed request with Connection: close.
HttpReply request(uint16_t port, const std::string& method, const std::string& target,
                  const std::map<std::string, std::string>& headers = {},
                  const std::string& body = "",
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Keeps one connection open for several requests (keep-alive tests).
class Connection {
 public:
  explicit Connection(uint16_t port);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  bool send(const std::string& raw);
  HttpReply read(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // True if the server closed the connection within `timeout`.
  bool closedByPeer(std::chrono::milliseconds timeout);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buffered_;
};

// A real trellisd child process. The config is YAML text in which "@DATA@" expands to a
// data directory and "@PLUGINS@" to the build's plugin directory; listen ports are 0 and
// the bound ports are read back from trellisd's --ready-file.
//
// Under a sanitizer build, a report in the log (trellisd's, and its plugin workers', which
// write to the same stderr) fails the current test: checked once the process is gone
// (stop(), kill(), the destructor, or the next start() after it exited by itself), over
// what that run added.
class TrellisdProcess {
 public:
  explicit TrellisdProcess(std::string config_yaml);
  ~TrellisdProcess();  // SIGTERM, then SIGKILL after 10 s
  TrellisdProcess(const TrellisdProcess&) = delete;
  TrellisdProcess& operator=(const TrellisdProcess&) = delete;

  // Starts and waits for readiness; false (with log() explaining) if it did not come up.
  // Waits for the ready file; a minute, since ASan builds starting worker processes on a
  // loaded machine are slow (a start that fails ends sooner: trellisd exits).
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Sends SIGTERM and waits; returns the exit status (or -1 on timeout).
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // SIGKILL, as a crash would: no shutdown code runs. Waits for it; start() may follow
  // (same config and data, new ports).
  void kill();
  bool running() const;

  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  uint16_t adminPort() const { return admin_port_; }
  std::string adminToken() const;
  std::string log() const;  // stdout + stderr so far (every run's; start() appends)
  const std::filesystem::path& dir() const { return dir_.path(); }
  std::filesystem::path configFile() const { return dir_ / "trellis.yaml"; }

 private:
  TempDir dir_;
  std::string config_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  uint16_t admin_port_ = 0;
  uintmax_t log_checked_ = 0;  // bytes of the log already scanned for sanitizer reports

  void checkLogForSanitizerReports();
};

// Sanitizer reports in a process's output: AddressSanitizer and LeakSanitizer errors,
// UndefinedBehaviorSanitizer's "runtime error:" lines, ThreadSanitizer warnings; each as
// the excerpt of its first lines. A deadly signal a sanitizer reports (SEGV on an unknown
// address, a stack overflow, ...) and running out of memory are left out: those are
// crashes, which a test sees anyway and some tests cause on purpose (the crash fixtures).
std::vector<std::string> sanitizerReports(std::string_view output);
// ADD_FAILURE for each report in `output` (at most a few, then their count), naming
// `source` (a log's path, a command line). Returns the number of reports.
size_t expectNoSanitizerReports(std::string_view output, const std::string& source);

// A loopback port nothing listens on right now (the kernel's choice for port 0), for
// peers that cannot be asked for port 0 and report it: a race with another process is
// theirs to retry.
uint16_t freeLoopbackPort();
// True if something accepts TCP connections on 127.0.0.1:`port`.
bool acceptsOnLoopback(uint16_t port);

// Stops a child process of the test (a peer server): `signal`, up to `grace` for it to
// exit, then SIGKILL; reaps it and sets `pid` to -1. Nothing if `pid` <= 0.
void stopChild(pid_t& pid, int signal, std::chrono::milliseconds grace);

// Polls `done` every 100 ms until it holds (true) or `limit` passes (false): for what a
// server does in the background, without a timing assumption.
bool eventually(const std::function<bool()>& done,
                std::chrono::milliseconds limit = std::chrono::seconds(30));

// Runs a shell command (built by the test, never from untrusted input) and returns its
// stdout; the exit status goes to *status (-1 if it did not exit normally). A sanitizer
// report in its stdout or stderr (the sanitized CLI's, say) fails the test.
std::string runCommand(const std::string& command, int* status);

// Runs the `trellis` CLI against `server` (its admin port and token file) with stdin
// closed; returns stdout+stderr, the exit status goes to *status.
std::string runCli(const TrellisdProcess& server, const std::string& args, int* status);

// A minimal config: both planes on port 0, the bundled plugins (or `plugins_yaml`, the
// items of plugins.enabled), tenant "acme" with key "acme-key" and tenant "globex" with key
// "globex-key", both enabling every listed plugin. `extra` is appended verbatim.
std::string defaultTestConfig(const std::string& plugins_yaml = "", const std::string& extra = "");

}  // namespace trellis::test
