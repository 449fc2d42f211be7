#include "support/test_support.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace trellis::test {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

TempDir::TempDir() {
  std::random_device rd;
  for (int i = 0; i < 100; ++i) {
    auto p = fs::temp_directory_path() / ("trellis-test-" + std::to_string(rd()));
    if (fs::create_directory(p)) {
      path_ = p;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void writeFile(const fs::path& file, const std::string& content) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

std::string readFile(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string randomBytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(gen() & 0xff);
  return out;
}

std::string bytesDiffer(std::string_view got, std::string_view want) {
  if (got == want) return "";
  const auto at = std::mismatch(got.begin(), got.end(), want.begin(), want.end());
  return std::to_string(got.size()) + " bytes where " + std::to_string(want.size()) +
         " were sent; the first difference is at byte " + std::to_string(at.first - got.begin());
}

std::string HttpReply::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

namespace {

int connectLoopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool sendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads into `buf` until `done(buf)` or EOF/timeout. Returns false on timeout.
template <typename Done>
bool readUntil(int fd, std::string& buf, Clock::time_point deadline, Done done) {
  char chunk[16384];
  while (!done(buf)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r <= 0) return false;
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return true;  // closed
    buf.append(chunk, static_cast<size_t>(n));
  }
  return true;
}

// Parses one response from the front of `buf`; returns bytes consumed, 0 if incomplete.
size_t parseReply(const std::string& buf, bool eof, HttpReply& out) {
  auto head_end = buf.find("\r\n\r\n");
  if (head_end == std::string::npos) return 0;
  std::istringstream head(buf.substr(0, head_end));
  std::string line;
  std::getline(head, line);
  HttpReply r;
  if (line.rfind("HTTP/1.", 0) != 0 || line.size() < 12) return 0;
  r.status = std::atoi(line.c_str() + 9);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    r.headers[name] = value;
  }
  size_t body_start = head_end + 4;
  auto cl = r.headers.find("content-length");
  if (cl != r.headers.end()) {
    size_t len = std::stoul(cl->second);
    if (buf.size() < body_start + len) return 0;
    r.body = buf.substr(body_start, len);
    out = std::move(r);
    return body_start + len;
  }
  if (!eof) return 0;  // framed by close
  r.body = buf.substr(body_start);
  out = std::move(r);
  return buf.size();
}

}  // namespace

HttpReply rawExchange(uint16_t port, const std::string& raw, std::chrono::milliseconds timeout) {
  Connection c(port);
  if (!c.send(raw)) return {};
  return c.read(timeout);
}

HttpReply request(uint16_t port, const std::string& method, const std::string& target,
                  const std::map<std::string, std::string>& headers, const std::string& body,
                  std::chrono::milliseconds timeout) {
  std::string raw = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& [k, v] : headers) raw += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST" || method == "PUT") {
    raw += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  raw += "Connection: close\r\n\r\n" + body;
  return rawExchange(port, raw, timeout);
}

Connection::Connection(uint16_t port) : fd_(connectLoopback(port)) {}
Connection::~Connection() {
  if (fd_ >= 0) ::close(fd_);
}
bool Connection::send(const std::string& raw) {
  return fd_ >= 0 && sendAll(fd_, raw);
}

HttpReply Connection::read(std::chrono::milliseconds timeout) {
  HttpReply reply;
  if (fd_ < 0) return reply;
  auto deadline = Clock::now() + timeout;
  bool eof = false;
  while (true) {
    if (size_t used = parseReply(buffered_, eof, reply)) {
      buffered_.erase(0, used);
      return reply;
    }
    if (eof) return {};
    size_t before = buffered_.size();
    bool in_time = readUntil(fd_, buffered_, deadline,
                             [&](const std::string& b) { return b.size() > before; });
    if (!in_time) return {};
    if (buffered_.size() == before) eof = true;
  }
}

bool Connection::closedByPeer(std::chrono::milliseconds timeout) {
  if (fd_ < 0) return true;
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, 50);
    if (r > 0) {
      char c[4096];
      ssize_t n = ::recv(fd_, c, sizeof c, 0);
      if (n <= 0) return true;
    }
  }
  return false;
}

namespace {

// Lines that open a sanitizer's report. ASan, LSan and TSan errors start "==PID==ERROR: …";
// UBSan's are "file:line:col: runtime error: …".
constexpr std::string_view kReportMarks[] = {
    "ERROR: AddressSanitizer:",           "ERROR: LeakSanitizer:",
    "WARNING: ThreadSanitizer:",          "ERROR: ThreadSanitizer:",
    "ERROR: UndefinedBehaviorSanitizer:", ": runtime error: "};

// What a sanitizer says when it catches a deadly signal ("SEGV on unknown address …",
// "stack-overflow on address …") or when memory runs out (under a worker's memory limit):
// a crash, not a finding (see sanitizerReports).
bool isCrash(std::string_view line) {
  for (std::string_view mark :
       {"Sanitizer: SEGV ", "Sanitizer: BUS ", "Sanitizer: FPE ", "Sanitizer: ILL ",
        "Sanitizer: ABRT ", "Sanitizer: TRAP ", "Sanitizer: UNKNOWN SIGNAL ",
        "Sanitizer: stack-overflow ", "Sanitizer: out of memory: "}) {
    if (line.find(mark) != std::string_view::npos) return true;
  }
  return false;
}

constexpr size_t kExcerptLines = 16;
constexpr size_t kReportsShown = 3;

}  // namespace

std::vector<std::string> sanitizerReports(std::string_view output) {
  std::vector<std::string_view> lines;
  for (size_t at = 0; at < output.size();) {
    size_t end = output.find('\n', at);
    if (end == std::string_view::npos) end = output.size();
    lines.push_back(output.substr(at, end - at));
    at = end + 1;
  }
  std::vector<std::string> reports;
  for (size_t i = 0; i < lines.size(); ++i) {
    const bool opens = std::any_of(std::begin(kReportMarks), std::end(kReportMarks),
                                   [&](std::string_view m) { return lines[i].find(m) != m.npos; });
    if (!opens || isCrash(lines[i])) continue;
    // The excerpt runs to the report's SUMMARY line, the next report, or kExcerptLines.
    std::string excerpt(lines[i]);
    size_t j = i + 1;
    for (; j < lines.size() && j - i < kExcerptLines; ++j) {
      if (lines[j].find(": runtime error: ") != std::string_view::npos ||
          lines[j].find("==ERROR: ") != std::string_view::npos ||
          lines[j].find("WARNING: ThreadSanitizer:") != std::string_view::npos) {
        break;
      }
      excerpt += '\n';
      excerpt += lines[j];
      if (lines[j].rfind("SUMMARY: ", 0) == 0) {
        ++j;
        break;
      }
    }
    reports.push_back(std::move(excerpt));
    i = j - 1;
  }
  return reports;
}

size_t expectNoSanitizerReports(std::string_view output, const std::string& source) {
  auto reports = sanitizerReports(output);
  for (size_t i = 0; i < reports.size() && i < kReportsShown; ++i) {
    ADD_FAILURE() << "sanitizer report in " << source << ":\n" << reports[i];
  }
  if (reports.size() > kReportsShown) {
    ADD_FAILURE() << reports.size() - kReportsShown << " more sanitizer reports in " << source;
  }
  return reports.size();
}

TrellisdProcess::TrellisdProcess(std::string config_yaml) : config_(std::move(config_yaml)) {
  auto replace = [&](const std::string& from, const std::string& to) {
    for (size_t pos = 0; (pos = config_.find(from, pos)) != std::string::npos;) {
      config_.replace(pos, from.size(), to);
      pos += to.size();
    }
  };
  replace("@DATA@", (dir_ / "data").string());
  replace("@PLUGINS@", TRELLIS_PLUGIN_DIR);
  replace("@FIXTURES@", TRELLIS_FIXTURE_DIR);
  replace("@DIR@", dir_.path().string());
  writeFile(configFile(), config_);
}

TrellisdProcess::~TrellisdProcess() {
  if (running()) stop(std::chrono::seconds(10));
  if (running()) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  checkLogForSanitizerReports();
}

void TrellisdProcess::checkLogForSanitizerReports() {
  const auto file = dir_ / "trellisd.log";
  std::ifstream in(file, std::ios::binary);
  if (!in) return;
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uintmax_t>(in.tellg());
  if (size <= log_checked_) return;
  in.seekg(static_cast<std::streamoff>(log_checked_));
  std::string added(size - log_checked_, '\0');
  in.read(added.data(), static_cast<std::streamsize>(added.size()));
  log_checked_ = size;
  expectNoSanitizerReports(added, file.string());
}

namespace {

// The environment trellisd gets: the test's, with UBSan printing where it found something
// (by default it prints one line), unless the test's environment says otherwise.
std::vector<std::string> childEnvironment() {
  std::vector<std::string> env;
  bool ubsan = false;
  for (char** e = environ; *e; ++e) {
    env.emplace_back(*e);
    ubsan = ubsan || env.back().rfind("UBSAN_OPTIONS=", 0) == 0;
  }
  if (!ubsan) env.emplace_back("UBSAN_OPTIONS=print_stacktrace=1");
  return env;
}

}  // namespace

bool TrellisdProcess::start(std::chrono::milliseconds timeout) {
  auto ready = dir_ / "ready.json";
  auto out = dir_ / "trellisd.log";
  fs::remove(ready);              // a restart must not read the previous run's ports
  checkLogForSanitizerReports();  // a previous run that ended by itself; then only this run's
  std::string cfg = configFile().string(), rf = ready.string(), lf = out.string();
  std::vector<std::string> env = childEnvironment();
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  char* const argv[] = {const_cast<char*>(TRELLISD_PATH),
                        const_cast<char*>("--config"),
                        cfg.data(),
                        const_cast<char*>("--ready-file"),
                        rf.data(),
                        nullptr};
  pid_ = ::fork();
  if (pid_ == 0) {
    FILE* f = std::freopen(lf.c_str(), "a", stdout);
    (void)f;
    ::dup2(::fileno(stdout), STDERR_FILENO);
    ::execve(TRELLISD_PATH, argv, envp.data());
    std::perror("exec trellisd");
    std::_Exit(127);
  }
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (!running()) return false;
    if (fs::exists(ready)) {
      // {"port":N,"admin_port":M}
      std::string j = readFile(ready);
      auto num = [&](const std::string& key) -> uint16_t {
        auto p = j.find("\"" + key + "\":");
        return p == std::string::npos
                   ? 0
                   : static_cast<uint16_t>(std::atoi(j.c_str() + p + key.size() + 3));
      };
      port_ = num("port");
      admin_port_ = num("admin_port");
      if (port_ != 0 && admin_port_ != 0) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int TrellisdProcess::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      checkLogForSanitizerReports();
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

void TrellisdProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  checkLogForSanitizerReports();  // what it reported before it was killed
}

bool TrellisdProcess::running() const {
  if (pid_ <= 0) return false;
  return ::waitpid(pid_, nullptr, WNOHANG) == 0;
}

std::string TrellisdProcess::adminToken() const {
  std::string t = readFile(dir_ / "admin.token");
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t;
}

std::string TrellisdProcess::log() const {
  return readFile(dir_ / "trellisd.log");
}

std::string runCommand(const std::string& command, int* status) {
  std::string out;
  // stderr goes through a file, to be scanned for sanitizer reports, then on to the test's.
  char err_file[] = "/tmp/trellis-test-stderr-XXXXXX";
  const int err_fd = ::mkstemp(err_file);
  if (err_fd >= 0) ::close(err_fd);
  const std::string shell = err_fd >= 0 ? "{ " + command + "\n} 2>'" + err_file + "'" : command;
  FILE* p = ::popen(shell.c_str(), "r");
  if (!p) {
    *status = -1;
    if (err_fd >= 0) ::unlink(err_file);
    return out;
  }
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = ::pclose(p);
  *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::string err;
  if (err_fd >= 0) {
    err = readFile(err_file);
    ::unlink(err_file);
    std::fwrite(err.data(), 1, err.size(), stderr);
  }
  expectNoSanitizerReports(out + err, "the output of `" + command + "`");
  return out;
}

std::string runCli(const TrellisdProcess& server, const std::string& args, int* status) {
  return runCommand(std::string(TRELLIS_CLI_PATH) + " --admin http://127.0.0.1:" +
                        std::to_string(server.adminPort()) + " --token-file " +
                        (server.dir() / "admin.token").string() + " " + args + " 2>&1 </dev/null",
                    status);
}

// TRELLIS_TEST_ISOLATION=process: every native plugin a test enables runs in a worker
// process (the conformance run of tests/CMakeLists.txt). Lua plugins ("…-lua") stay put,
// unless the value is "process+lua": then every plugin does, Lua ones too.
std::string withIsolation(const std::string& plugins) {
  const char* mode = std::getenv("TRELLIS_TEST_ISOLATION");
  if (!mode) return plugins;
  const bool lua_too = std::string(mode) == "process+lua";
  if (!lua_too && std::string(mode) != "process") return plugins;
  std::string out;
  std::istringstream lines(plugins);
  for (std::string line; std::getline(lines, line);) {
    out += line + "\n";
    auto at = line.find("- id: ");
    if (at == std::string::npos) continue;
    std::string id = line.substr(at + 6);
    bool has_isolation = plugins.find("isolation:") != std::string::npos;
    if (!lua_too && id.size() >= 4 && id.compare(id.size() - 4, 4, "-lua") == 0) continue;
    if (!has_isolation) out += std::string(at + 2, ' ') + "isolation: process\n";
  }
  return out;
}

uint16_t freeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

bool acceptsOnLoopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

void stopChild(pid_t& pid, int signal, std::chrono::milliseconds grace) {
  if (pid <= 0) return;
  ::kill(pid, signal);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) {
      pid = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  pid = -1;
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

std::string defaultTestConfig(const std::string& plugins_yaml, const std::string& extra) {
  std::string plugins = withIsolation(plugins_yaml.empty() ? "    - id: trellis/hello\n"
                                                             "      config: {greeting: Hello}\n"
                                                             "    - id: trellis/echo-c\n"
                                                           : plugins_yaml);
  // Both tenants enable every plugin the test loads.
  std::string enabled;
  std::istringstream lines(plugins);
  for (std::string line; std::getline(lines, line);) {
    auto at = line.find("- id: ");
    if (at != std::string::npos) enabled += (enabled.empty() ? "" : ", ") + line.substr(at + 6);
  }
  return "server:\n"
         "  listen: 127.0.0.1:0\n"
         "  threads: 2\n"
         "  drain_timeout_ms: 5000\n"
         "admin:\n"
         "  listen: 127.0.0.1:0\n"
         "  token_file: @DIR@/admin.token\n"
         "storage:\n"
         "  data_dir: @DATA@\n"
         "log:\n"
         "  level: debug\n"
         "  access_log: @DIR@/access.log\n"
         "plugins:\n"
         "  dirs: [@PLUGINS@, @FIXTURES@]\n"
         "  enabled:\n" +
         plugins +
         "tenants:\n"
         "  - id: acme\n"
         "    plugins: [" +
         enabled +
         "]\n"
         "    keys: [{key: acme-key}]\n"
         "  - id: globex\n"
         "    plugins: [" +
         enabled +
         "]\n"
         "    keys: [{key: globex-key}]\n" +
         extra;
}

}  // namespace trellis::test
