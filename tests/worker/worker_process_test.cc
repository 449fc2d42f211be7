// The worker process and its protocol without the rest of the kernel: this test plays
// trellisd's part (spawn, HELLO, INVOKE, serving CALLs) against the real trellis-worker and
// the fixture plugins, so the sandbox, the codec and crash detection are checked directly.
#include "worker/host_side/worker_process.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "trellis/plugin.h"
#include "worker/protocol.h"

namespace trellis::kernel::worker {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

WorkerOptions options() {
  WorkerOptions o;
  o.binary = TRELLIS_WORKER_PATH;
  o.channels = 2;
  o.call_timeout = std::chrono::seconds(5);
  o.max_memory_bytes = 512ull << 20;
  return o;
}

std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::path(TRELLIS_FIXTURE_DIR) / name;
}

void writeCtx(FrameWriter& w, const std::string& tenant = "") {
  // tenant, principal, trace, caller, then the host calls made and allowed so far
  w.str(tenant).str("").u8(0).str("").str("").u8(0).str("").u64(0).u64(UINT64_MAX);
}

// What a RESULT carried: its status and the effects, decoded.
struct Result {
  Status transport;
  int32_t status = -1;
  std::string body;
  std::vector<std::string> logs;
  uint64_t host_calls = 0;  // as the worker counted them (its last effect)
};

// Runs one INVOKE on channel 0, answering route_add CALLs (recorded in `routes`) and
// refusing any other call; returns what came back.
Result invoke(WorkerProcess& p, InvokeOp op, const FrameWriter& payload,
              std::map<std::string, uint32_t>* routes = nullptr) {
  Result out;
  FrameChannel& chan = p.channel(0);
  out.transport = chan.send(FrameType::kInvoke, static_cast<uint16_t>(op), 7, payload);
  while (out.transport) {
    Frame f;
    out.transport = chan.read(f, Clock::now() + std::chrono::seconds(5));
    if (!out.transport) break;
    FrameReader r(f.payload);
    std::string_view effects = r.str();
    if (f.type == FrameType::kCall) {
      FrameWriter reply;
      if (f.op == static_cast<uint16_t>(CallOp::kRouteAdd) && routes) {
        std::string method(r.str()), pattern(r.str());
        (*routes)[method + " " + pattern] = r.u32();
        reply.i32(TRELLIS_OK).str("");
      } else {
        reply.i32(TRELLIS_UNIMPLEMENTED).str("not in this test");
      }
      out.transport = chan.send(FrameType::kReply, f.op, f.id, reply);
      continue;
    }
    EXPECT_EQ(f.type, FrameType::kResult);
    EXPECT_EQ(f.id, 7u);
    out.status = r.i32();
    EXPECT_TRUE(r.ok() && r.atEnd());
    FrameReader e(effects);
    while (e.ok() && !e.atEnd()) {
      switch (static_cast<Effect>(e.u8())) {
        case Effect::kResBody: out.body = std::string(e.str()); break;
        case Effect::kResAppend: out.body += std::string(e.str()); break;
        case Effect::kLog:
          e.i32();
          out.logs.emplace_back(e.str());
          break;
        case Effect::kResStatus: e.i32(); break;
        case Effect::kHostCalls: out.host_calls = e.u64(); break;
        case Effect::kResHeader:
          e.str();
          e.str();
          break;
        default: ADD_FAILURE() << "unexpected effect"; return out;
      }
    }
    EXPECT_TRUE(e.ok());
    break;
  }
  return out;
}

FrameWriter routeCall(uint32_t index, const std::string& method, const std::string& path,
                      const std::string& body = "") {
  FrameWriter w;
  w.u32(index);
  writeCtx(w, "acme");
  w.str(method).str(path).str("").str(body).u32(1).str("Host").str("x").u32(0);
  return w;
}

std::map<std::string, uint32_t> init(WorkerProcess& p) {
  std::map<std::string, uint32_t> routes;
  FrameWriter w;
  w.u32(0);
  writeCtx(w);
  Result r = invoke(p, InvokeOp::kInit, w, &routes);
  EXPECT_TRUE(r.transport) << r.transport.message();
  EXPECT_EQ(r.status, TRELLIS_OK);
  return routes;
}

// Ends a test that would hang (both ends of a socketpair blocked) as a failure: past
// `limit`, both ends are shut down, which wakes any blocked send or recv.
class Watchdog {
 public:
  Watchdog(int a, int b, std::chrono::seconds limit)
      : thread_([this, a, b, limit] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            fired_ = true;
            ::shutdown(a, SHUT_RDWR);
            ::shutdown(b, SHUT_RDWR);
          }
        }) {}
  ~Watchdog() { stop(); }
  // Whether it had to end the test.
  bool stop() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    return fired_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  bool fired_ = false;
  std::thread thread_;
};

// Both ends of an AF_UNIX stream socketpair (a worker channel without the worker), closed
// when it goes, whichever way the test ends; -1 each if socketpair failed (ok() says).
class SocketPair {
 public:
  SocketPair() {
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fd_) != 0) fd_[0] = fd_[1] = -1;
  }
  ~SocketPair() {
    close(0);
    close(1);
  }
  SocketPair(const SocketPair&) = delete;
  SocketPair& operator=(const SocketPair&) = delete;
  bool ok() const { return fd_[0] >= 0; }
  int operator[](int end) const { return fd_[end]; }
  // Closes one end early (its peer then reads EOF).
  void close(int end) {
    if (fd_[end] >= 0) ::close(fd_[end]);
    fd_[end] = -1;
  }

 private:
  int fd_[2];
};

TEST(WorkerProcessTest, ServesARouteAndSaysWhatItLoaded) {
  auto p = WorkerProcess::spawn(options(), fixture("crashy") / "libfixture_crashy.so",
                                fixture("crashy"));
  ASSERT_TRUE(p) << p.status().message();
  EXPECT_EQ((*p)->hello().id, "fixture/crashy");
  EXPECT_EQ((*p)->hello().version, "1.0.0");
  EXPECT_EQ((*p)->hello().abi_major, 1u);
  auto routes = init(**p);
  ASSERT_EQ(routes.count("GET /crashy/ok"), 1u);
  Result r =
      invoke(**p, InvokeOp::kRoute, routeCall(routes["GET /crashy/ok"], "GET", "/crashy/ok"));
  ASSERT_TRUE(r.transport) << r.transport.message();
  EXPECT_EQ(r.status, TRELLIS_OK);
  EXPECT_EQ(r.body, "ok " + std::to_string((*p)->pid()));
  // The poison route reads the body from the request snapshot: no round trip.
  r = invoke(**p, InvokeOp::kRoute,
             routeCall(routes["POST /crashy/poison"], "POST", "/crashy/poison", "harmless"));
  EXPECT_EQ(r.body, "fine");
  EXPECT_GE(r.host_calls, 2u);  // it read the body and set it: answered here, still counted
  if (::geteuid() == 0) {
    std::ifstream status("/proc/" + std::to_string((*p)->pid()) + "/status");
    std::string text((std::istreambuf_iterator<char>(status)), {});
    EXPECT_THAT(text, HasSubstr("Uid:\t65534"));
  }
}

TEST(WorkerProcessTest, ACrashIsSeenAsTheChannelClosingAndNamedBySignal) {
  for (const auto& [route, reason] :
       std::vector<std::pair<std::string, std::string>>{{"GET /crashy/segv", "signal 11"},
                                                        {"GET /crashy/abort", "signal 6"},
                                                        {"GET /crashy/exit", "exited with 3"}}) {
    SCOPED_TRACE(route);
    auto p = WorkerProcess::spawn(options(), fixture("crashy") / "libfixture_crashy.so",
                                  fixture("crashy"));
    ASSERT_TRUE(p) << p.status().message();
    auto routes = init(**p);
    Result r = invoke(**p, InvokeOp::kRoute, routeCall(routes[route], "GET", route.substr(4)));
    EXPECT_EQ(r.transport.code(), StatusCode::kUnavailable) << r.transport.message();
    (*p)->kill("test");
    EXPECT_THAT((*p)->endReason(), HasSubstr(reason));
  }
}

TEST(WorkerProcessTest, WhatAWorkerOpenedInTheHostIsClosedOnceWhenItEnds) {
  auto p = WorkerProcess::spawn(options(), fixture("crashy") / "libfixture_crashy.so",
                                fixture("crashy"));
  ASSERT_TRUE(p) << p.status().message();
  std::vector<uint64_t> closed;
  ASSERT_TRUE((*p)->adopt(7, [&] { closed.push_back(7); }));
  ASSERT_TRUE((*p)->adopt(9, [&] { closed.push_back(9); }));
  EXPECT_TRUE((*p)->holds(7));
  EXPECT_FALSE((*p)->holds(8));  // never its own
  (*p)->forget(9);               // the plugin closed it itself
  EXPECT_FALSE((*p)->holds(9));
  auto routes = init(**p);
  Result r =
      invoke(**p, InvokeOp::kRoute, routeCall(routes["GET /crashy/abort"], "GET", "/crashy/abort"));
  EXPECT_EQ(r.transport.code(), StatusCode::kUnavailable) << r.transport.message();
  // The death watch may have reaped it already; either way kill() returns once it has.
  (*p)->kill("its channel closed");
  EXPECT_EQ(closed, std::vector<uint64_t>{7});
  EXPECT_FALSE((*p)->holds(7));
  // Nothing is adopted by a dead worker: the caller closes it at once.
  EXPECT_FALSE((*p)->adopt(11, [&] { closed.push_back(11); }));
  (*p)->kill("again");
  EXPECT_EQ(closed, std::vector<uint64_t>{7});
}

TEST(WorkerProcessTest, AHangIsATimeout) {
  auto o = options();
  auto p = WorkerProcess::spawn(o, fixture("crashy") / "libfixture_crashy.so", fixture("crashy"));
  ASSERT_TRUE(p);
  auto routes = init(**p);
  FrameChannel& chan = (*p)->channel(0);
  ASSERT_TRUE(chan.send(FrameType::kInvoke, static_cast<uint16_t>(InvokeOp::kRoute), 1,
                        routeCall(routes["GET /crashy/hang"], "GET", "/crashy/hang")));
  Frame f;
  Status s = chan.read(f, Clock::now() + std::chrono::milliseconds(300));
  EXPECT_EQ(s.code(), StatusCode::kTimeout);
}

// trellisd pipelines INVOKEs too large for the socket buffers (request bodies that travel
// inline) on one channel, and the worker answers each with a RESULT as large: the host
// reads RESULTs while its INVOKEs wait to be written, the worker reads INVOKEs while its
// RESULT waits, so every call completes with its own body.
TEST(WorkerProcessTest, LargeInvokesPipelinedBehindLargeResultsAllComplete) {
  auto p = WorkerProcess::spawn(options(), fixture("crashy") / "libfixture_crashy.so",
                                fixture("crashy"));
  ASSERT_TRUE(p) << p.status().message();
  auto routes = init(**p);
  FrameChannel& chan = (*p)->channel(0);
  Watchdog watchdog(chan.fd(), chan.fd(), std::chrono::seconds(20));
  std::vector<std::string> bodies;
  for (int i = 0; i < 4; ++i) {
    bodies.emplace_back((3u << 20) + i, static_cast<char>('a' + i));
    ASSERT_TRUE(
        chan.send(FrameType::kInvoke, static_cast<uint16_t>(InvokeOp::kRoute), 100 + i,
                  routeCall(routes["POST /crashy/echo"], "POST", "/crashy/echo", bodies.back())));
  }
  for (int i = 0; i < 4; ++i) {
    Frame f;
    Status s = chan.read(f, Clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(s) << i << ": " << s.message();
    ASSERT_EQ(f.type, FrameType::kResult);
    EXPECT_EQ(f.id, 100u + i);
    FrameReader r(f.payload);
    FrameReader e(r.str());
    std::string body;
    while (e.ok() && !e.atEnd()) {
      const auto effect = static_cast<Effect>(e.u8());
      if (effect == Effect::kResBody) {
        body = std::string(e.str());
      } else if (effect == Effect::kHostCalls) {
        e.u64();
      } else {
        ADD_FAILURE() << "unexpected effect " << int(effect);
        break;
      }
    }
    EXPECT_EQ(r.i32(), TRELLIS_OK);
    EXPECT_TRUE(body == bodies[i]) << i << ": " << body.size() << " bytes";
  }
  EXPECT_FALSE(watchdog.stop()) << "deadlock: both ends blocked writing";
}

// A worker that stops reading (its handler hangs) while trellisd writes it an INVOKE too
// large for the socket buffer: the write is bounded by the call's deadline like the wait for
// the answer, so the call ends as a timeout instead of holding the host thread.
TEST(WorkerProcessTest, AWorkerThatStopsReadingIsATimeoutWhileTheHostWrites) {
  auto p = WorkerProcess::spawn(options(), fixture("crashy") / "libfixture_crashy.so",
                                fixture("crashy"));
  ASSERT_TRUE(p) << p.status().message();
  auto routes = init(**p);
  FrameChannel& chan = (*p)->channel(0);
  Watchdog watchdog(chan.fd(), chan.fd(), std::chrono::seconds(10));
  ASSERT_TRUE(chan.send(FrameType::kInvoke, static_cast<uint16_t>(InvokeOp::kRoute), 1,
                        routeCall(routes["GET /crashy/hang"], "GET", "/crashy/hang")));
  ASSERT_TRUE(chan.send(FrameType::kInvoke, static_cast<uint16_t>(InvokeOp::kRoute), 2,
                        routeCall(routes["POST /crashy/poison"], "POST", "/crashy/poison",
                                  std::string(4u << 20, 'x'))));
  Frame f;
  const auto before = Clock::now();
  Status s = chan.read(f, before + std::chrono::milliseconds(300));
  const auto took = Clock::now() - before;
  EXPECT_FALSE(watchdog.stop()) << "the write blocked past the deadline";
  EXPECT_EQ(s.code(), StatusCode::kTimeout) << s.message();
  EXPECT_LT(took, std::chrono::seconds(3));
}

TEST(WorkerProcessTest, TheSandboxRefusesEachForbiddenThing) {
  auto p =
      WorkerProcess::spawn(options(), fixture("hostile-native") / "libfixture_hostile_native.so",
                           fixture("hostile-native"));
  ASSERT_TRUE(p) << p.status().message();
  auto routes = init(**p);
  Result r =
      invoke(**p, InvokeOp::kRoute, routeCall(routes["GET /hostile/try"], "GET", "/hostile/try"));
  ASSERT_TRUE(r.transport) << r.transport.message();
  std::printf("landlock: %s\n%s", (*p)->hello().landlock.c_str(), r.body.c_str());
  EXPECT_THAT(r.body, HasSubstr("thread ALLOWED"));
  for (const char* forbidden :
       {"exec", "fork", "clone-process", "ptrace", "socket-inet", "socket-inet6", "socket-raw",
        "socket-netlink", "socket-unix", "io_uring", "signal-other-process"}) {
    EXPECT_THAT(r.body, HasSubstr(std::string(forbidden) + " denied")) << r.body;
  }
  if ((*p)->hello().landlock.rfind("abi", 0) == 0) {
    EXPECT_THAT(r.body, HasSubstr("read-outside-plugin-dir denied"));
    EXPECT_THAT(r.body, HasSubstr("write-tmp denied"));
  }
  // And it still serves.
  r = invoke(**p, InvokeOp::kRoute,
             routeCall(routes["GET /hostile/alive"], "GET", "/hostile/alive"));
  EXPECT_EQ(r.body, "alive");
}

TEST(WorkerProcessTest, AnInvokeForACallbackNeverRegisteredEndsTheWorker) {
  auto p = WorkerProcess::spawn(options(), fixture("crashy") / "libfixture_crashy.so",
                                fixture("crashy"));
  ASSERT_TRUE(p);
  init(**p);
  Result r = invoke(**p, InvokeOp::kRoute, routeCall(999, "GET", "/nowhere"));
  EXPECT_EQ(r.transport.code(), StatusCode::kUnavailable);
  (*p)->kill("test");
  EXPECT_EQ((*p)->endReason(), "exited with 71");
}

TEST(WorkerProcessTest, AWorkerThatEndsBeforeHelloIsRefused) {
  auto o = options();
  o.binary = "/bin/sleep";  // refuses the options and exits without a word
  o.call_timeout = std::chrono::milliseconds(300);
  auto p = WorkerProcess::spawn(o, fixture("crashy") / "libfixture_crashy.so", fixture("crashy"));
  EXPECT_FALSE(p);
  EXPECT_THAT(p.status().message(), HasSubstr("did not start"));
}

// The INVOKE of a route whose snapshot the test placed in channel 0's region, as trellisd
// does: the slot holds what follows the index in an inline route payload.
FrameWriter sharedRouteCall(WorkerProcess& p, uint32_t index, const std::string& method,
                            const std::string& path) {
  FrameWriter inline_payload = routeCall(index, method, path);
  std::string_view snapshot = std::string_view(inline_payload.data()).substr(4);
  char* at = nullptr;
  auto offset = p.arena(0).place(snapshot.size(), &at);
  EXPECT_TRUE(offset);
  FrameWriter w;
  if (!offset) return w;
  std::memcpy(at, snapshot.data(), snapshot.size());
  w.u32(index).u64(*offset).u32(static_cast<uint32_t>(snapshot.size()));
  return w;
}

TEST(WorkerProcessTest, ASnapshotInSharedMemoryStaysReadOnlyInTheWorker) {
  auto p =
      WorkerProcess::spawn(options(), fixture("hostile-native") / "libfixture_hostile_native.so",
                           fixture("hostile-native"));
  ASSERT_TRUE(p) << p.status().message();
  ASSERT_EQ((*p)->arena(0).size(), options().snapshot_bytes);
  auto routes = init(**p);
  Result r =
      invoke(**p, InvokeOp::kRouteShared,
             sharedRouteCall(**p, routes["GET /hostile/snapshot"], "GET", "/hostile/snapshot"));
  ASSERT_TRUE(r.transport) << r.transport.message();
  std::printf("%s", r.body.c_str());
  for (const char* forbidden :
       {"mprotect-snapshot-writable", "map-snapshot-writable", "write-snapshot-fd",
        "shrink-snapshot", "reseal-snapshot", "write-snapshot-proc-mem"}) {
    EXPECT_THAT(r.body, HasSubstr(std::string(forbidden) + " denied")) << r.body;
  }
  EXPECT_THAT(r.body, Not(HasSubstr("ALLOWED")));
  // The seals, not only the sandbox: one mapping per channel, each refused.
  EXPECT_THAT(r.body, HasSubstr("map-snapshot-writable denied EPERM"));
  (*p)->arena(0).clear();
  // It still serves, from a slot and inline.
  r = invoke(**p, InvokeOp::kRouteShared,
             sharedRouteCall(**p, routes["GET /hostile/alive"], "GET", "/hostile/alive"));
  EXPECT_EQ(r.body, "alive");
  r = invoke(**p, InvokeOp::kRoute,
             routeCall(routes["GET /hostile/alive"], "GET", "/hostile/alive"));
  EXPECT_EQ(r.body, "alive");
}

TEST(WorkerProcessTest, ASlotOutsideTheRegionEndsTheWorker) {
  auto p = WorkerProcess::spawn(options(), fixture("crashy") / "libfixture_crashy.so",
                                fixture("crashy"));
  ASSERT_TRUE(p);
  auto routes = init(**p);
  FrameWriter w;
  w.u32(routes["GET /crashy/ok"]).u64(options().snapshot_bytes - 8).u32(64);
  Result r = invoke(**p, InvokeOp::kRouteShared, w);
  EXPECT_EQ(r.transport.code(), StatusCode::kUnavailable);
  (*p)->kill("test");
  EXPECT_EQ((*p)->endReason(), "exited with 71");
}

TEST(WorkerProcessTest, WithoutRegionsEveryChannelHasAnEmptyArena) {
  auto o = options();
  o.snapshot_bytes = 0;
  auto p = WorkerProcess::spawn(o, fixture("crashy") / "libfixture_crashy.so", fixture("crashy"));
  ASSERT_TRUE(p) << p.status().message();
  char* at = nullptr;
  EXPECT_EQ((*p)->arena(1).size(), 0u);
  EXPECT_FALSE((*p)->arena(1).place(10, &at));
  auto routes = init(**p);
  EXPECT_EQ(invoke(**p, InvokeOp::kRoute, routeCall(routes["GET /crashy/ok"], "GET", "/crashy/ok"))
                .status,
            TRELLIS_OK);
}

// The ring: slots in order, wrapping to the start, given back in or out of order, and
// nothing placed where the worker may still read or where it does not fit.
TEST(SnapshotArenaTest, PlacesWrapsAndRefusesWhatDoesNotFit) {
  const size_t size = 4096;
  void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  const int64_t live_before = SnapshotArena::liveSlots();
  SnapshotArena a(static_cast<char*>(mem), size);  // unmaps it at the end
  char* at = nullptr;
  EXPECT_EQ(a.place(1000, &at), 0u);
  EXPECT_EQ(at, static_cast<char*>(mem));
  EXPECT_EQ(a.place(1000, &at), 1024u);  // slots start on cache lines
  EXPECT_EQ(a.place(1000, &at), 2048u);
  EXPECT_FALSE(a.place(2000, &at));  // 1024 left at the end, none at the start
  EXPECT_FALSE(a.place(5000, &at));  // larger than the region
  EXPECT_FALSE(a.place(0, &at));
  EXPECT_EQ(SnapshotArena::liveSlots(), live_before + 3);
  a.giveBack(0);
  EXPECT_EQ(a.place(1000, &at), 3072u);
  EXPECT_EQ(a.place(1000, &at), 0u);  // wraps into what slot 0 left
  EXPECT_FALSE(a.place(64, &at));     // 1024..4096 still read by the worker
  a.giveBack(2048);                   // out of order: reclaimed with 1024
  EXPECT_FALSE(a.place(64, &at));
  EXPECT_EQ(a.slotsInUse(), 4u);
  a.giveBack(1024);
  EXPECT_EQ(a.slotsInUse(), 2u);  // 3072 and 0
  EXPECT_EQ(a.place(2000, &at), 1024u);
  EXPECT_FALSE(a.place(64, &at));
  a.giveBack(1024);  // the newest: it keeps its place until the older ones go
  EXPECT_EQ(a.bytesInUse(), 4096u);
  EXPECT_EQ(SnapshotArena::liveSlots(), live_before + 2);
  EXPECT_EQ(a.clear(), 2u);  // the worker died
  EXPECT_EQ(SnapshotArena::liveSlots(), live_before);
  EXPECT_EQ(a.place(4096, &at), 0u);  // all of it, from the start
  a.giveBack(0);
  EXPECT_EQ(SnapshotArena::liveSlots(), live_before);
}

// What reading `bytes` (then EOF) from a channel gives.
Status readAfter(const std::string& bytes) {
  SocketPair sv;
  if (!sv.ok()) return Status::internal("socketpair");
  EXPECT_EQ(write(sv[0], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  sv.close(0);
  FrameChannel chan(sv[1]);
  Frame f;
  return chan.read(f, Clock::now() + std::chrono::seconds(1));
}

std::string header(uint32_t length, uint16_t type, uint64_t id = 1) {
  FrameHeader h{length, type, 0, id};
  return std::string(reinterpret_cast<const char*>(&h), sizeof h);
}

TEST(WorkerProtocolTest, LengthsFromThePeerAreChecked) {
  const auto result = static_cast<uint16_t>(FrameType::kResult);
  // A header claiming more than the limit: refused before anything is allocated.
  EXPECT_EQ(readAfter(header(kMaxFramePayload + 1, result)).code(), StatusCode::kInvalid);
  // An unknown type.
  EXPECT_EQ(readAfter(header(0, 99)).code(), StatusCode::kInvalid);
  // A truncated frame: the peer goes away mid-payload.
  EXPECT_EQ(readAfter(header(100, result) + "abc").code(), StatusCode::kUnavailable);
  EXPECT_EQ(readAfter("").code(), StatusCode::kUnavailable);

  // A string whose length runs past the payload latches the reader, never reads past it.
  FrameWriter w;
  w.u32(1000).bytes("short");
  FrameReader r(w.data());
  EXPECT_TRUE(r.str().empty());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.u64(), 0u);
}

// Frames that arrive together are read one by one from one receive; a frame that arrives in
// pieces, larger than the receive buffer, is put back together.
TEST(WorkerProtocolTest, ABufferedChannelSplitsAndJoinsFrames) {
  SocketPair sv;
  ASSERT_TRUE(sv.ok());
  FrameChannel out(sv[0]), in(sv[1]);
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(out.send(FrameType::kResult, 0, id, "frame " + std::to_string(id)));
  }
  ASSERT_TRUE(out.flush());
  Frame f;
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(in.read(f, Clock::now() + std::chrono::seconds(1)));
    EXPECT_EQ(f.id, id);
    EXPECT_EQ(f.payload, "frame " + std::to_string(id));
    EXPECT_EQ(in.frameBuffered(), id < 3);
  }
  const std::string big(300 * 1024, 'x');
  const std::string bytes =
      header(static_cast<uint32_t>(big.size()), static_cast<uint16_t>(FrameType::kCall), 9) + big;
  std::thread writer([&] {
    for (size_t at = 0; at < bytes.size(); at += 7000) {
      size_t n = std::min<size_t>(7000, bytes.size() - at);
      ASSERT_EQ(write(sv[0], bytes.data() + at, n), static_cast<ssize_t>(n));
    }
  });
  ASSERT_TRUE(in.read(f, Clock::now() + std::chrono::seconds(5)));
  writer.join();
  EXPECT_EQ(f.id, 9u);
  EXPECT_EQ(f.payload, big);
}

// A queued frame goes out when its sender waits for the answer: nothing is held back from a
// peer that waits for it.
TEST(WorkerProtocolTest, ABufferedChannelSendsWhatIsQueuedBeforeItWaits) {
  SocketPair sv;
  ASSERT_TRUE(sv.ok());
  std::thread peer([fd = sv[1]] {
    FrameChannel chan(fd);
    Frame f;
    if (chan.read(f, Clock::now() + std::chrono::seconds(5))) {
      (void)chan.send(FrameType::kReply, f.op, f.id, "re: " + f.payload);
      (void)chan.flush();
    }
  });
  FrameChannel chan(sv[0]);
  ASSERT_TRUE(chan.send(FrameType::kCall, 1, 42, "question"));
  Frame f;
  ASSERT_TRUE(chan.read(f, Clock::now() + std::chrono::seconds(5)));
  peer.join();
  EXPECT_EQ(f.type, FrameType::kReply);
  EXPECT_EQ(f.id, 42u);
  EXPECT_EQ(f.payload, "re: question");
}

// trellisd writes a large inline INVOKE behind one the worker is answering with a large
// RESULT: each frame is larger than the socket buffers, so neither write can finish before
// the other end reads. The host reads while it waits to write (the RESULT it waits for),
// the worker while it waits to write its RESULT (the INVOKE): both finish.
TEST(WorkerProtocolTest, BothEndsWritingLargeFramesAtOnceBothFinish) {
  SocketPair sv;
  ASSERT_TRUE(sv.ok());
  Watchdog watchdog(sv[0], sv[1], std::chrono::seconds(10));
  const std::string invoke(6u << 20, 'i'), result(5u << 20, 'r');
  Status worker_flushed, worker_read;
  Frame worker_got;
  std::thread worker([&, fd = sv[1]] {
    FrameChannel chan(fd);
    Frame first;  // the small INVOKE it answers with the large RESULT
    worker_read = chan.read(first, Clock::now() + std::chrono::seconds(20));
    if (!worker_read) return;
    (void)chan.send(FrameType::kResult, first.op, first.id, result);
    worker_flushed = chan.flush();  // as trellis-worker sends a RESULT
    if (worker_flushed)
      worker_read = chan.read(worker_got, Clock::now() + std::chrono::seconds(20));
  });
  FrameChannel host(sv[0]);
  ASSERT_TRUE(host.send(FrameType::kInvoke, 5, 1, "small"));
  ASSERT_TRUE(host.flush());
  // Let the worker start its RESULT, then pipeline the large INVOKE behind it.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(host.send(FrameType::kInvoke, 5, 2, invoke));
  Frame f;
  Status host_read = host.read(f, Clock::now() + std::chrono::seconds(20));
  // The read returns with its answer; what is left of the INVOKE goes with the next flush.
  Status host_flushed = host.flush(Clock::now() + std::chrono::seconds(20));
  worker.join();
  EXPECT_FALSE(watchdog.stop()) << "deadlock: both ends blocked writing";
  ASSERT_TRUE(host_read) << host_read.message();
  EXPECT_EQ(f.type, FrameType::kResult);
  EXPECT_EQ(f.id, 1u);
  EXPECT_TRUE(f.payload == result) << f.payload.size();
  EXPECT_TRUE(host_flushed) << host_flushed.message();
  EXPECT_TRUE(worker_flushed) << worker_flushed.message();
  ASSERT_TRUE(worker_read) << worker_read.message();
  EXPECT_EQ(worker_got.id, 2u);
  EXPECT_TRUE(worker_got.payload == invoke) << worker_got.payload.size();
}

// A worker that stops reading costs the call waiting on it its deadline, no more: the
// host's write of a large INVOKE is bounded like its wait for the answer.
TEST(WorkerProtocolTest, APeerThatStopsReadingCostsAReadItsDeadline) {
  SocketPair sv;
  ASSERT_TRUE(sv.ok());
  Watchdog watchdog(sv[0], sv[1], std::chrono::seconds(10));
  FrameChannel host(sv[0]);
  ASSERT_TRUE(host.send(FrameType::kInvoke, 5, 1, std::string(4u << 20, 'x')));
  Frame f;
  const auto before = Clock::now();
  Status s = host.read(f, before + std::chrono::milliseconds(300));
  const auto took = Clock::now() - before;
  EXPECT_FALSE(watchdog.stop()) << "the write blocked past the deadline";
  EXPECT_EQ(s.code(), StatusCode::kTimeout) << s.message();
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(3));
}

// A peer that writes without end and never reads: a flush reads ahead at most
// kMaxReadAhead bytes of it, then only waits, and ends at its deadline with its frame still
// queued.
TEST(WorkerProtocolTest, AFlushReadsAheadBoundedlyAndEndsAtItsDeadline) {
  SocketPair sv;
  ASSERT_TRUE(sv.ok());
  Watchdog watchdog(sv[0], sv[1], std::chrono::seconds(10));
  std::atomic<size_t> flooded{0};
  std::thread flood([&, fd = sv[1]] {
    const std::string chunk(1u << 20, 'f');
    for (;;) {
      ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      flooded += static_cast<size_t>(n);
    }
  });
  FrameChannel host(sv[0]);
  ASSERT_TRUE(host.send(FrameType::kInvoke, 5, 1, std::string(4u << 20, 'x')));
  const auto before = Clock::now();
  Status s = host.flush(before + std::chrono::milliseconds(500));
  const auto took = Clock::now() - before;
  EXPECT_EQ(s.code(), StatusCode::kTimeout) << s.message();
  EXPECT_GE(took, std::chrono::milliseconds(500));
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_NE(host.queuedSince(), Clock::time_point::max()) << "the rest stays queued";
  const size_t taken = flooded;
  EXPECT_GE(taken + (1u << 20), kMaxReadAhead);  // counted in whole 1 MiB sends
  EXPECT_LT(taken, kMaxReadAhead + (16u << 20)) << "read past its bound";
  ::shutdown(sv[0], SHUT_RDWR);
  flood.join();
  EXPECT_FALSE(watchdog.stop());
}

}  // namespace
}  // namespace trellis::kernel::worker
