// The KV write path alone, without HTTP: `clients` closed-loop writers do what the
// /hello/{name} route does (get a random key, then a compare-and-set putAsync of the
// next count) against the SQLite store, on `loops` threads standing in for the event
// loops. Prints writes/s, the mean batch and the process's CPU per write, so a change to
// the commit path can be measured without wrk and the servers sharing the cores.
//
//   trellis_kv_commit_bench [--clients 32] [--loops 2] [--seconds 5] [--keys 100000]
#include <sys/resource.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "trellis/kernel/storage/kv_store.h"

namespace {

using trellis::kernel::storage::KvStore;
using trellis::kernel::storage::Scope;
namespace asio = boost::asio;

struct Options {
  int clients = 32;
  int loops = 2;
  int seconds = 5;
  int keys = 100000;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::atoi(argv[i + 1]);
    if (value <= 0) {
      std::fprintf(stderr, "%s needs a positive number\n", flag.c_str());
      std::exit(2);
    }
    if (flag == "--clients")
      o.clients = value;
    else if (flag == "--loops")
      o.loops = value;
    else if (flag == "--seconds")
      o.seconds = value;
    else if (flag == "--keys")
      o.keys = value;
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      std::exit(2);
    }
  }
  return o;
}

double cpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// One closed-loop client: read, write the next version, repeat until told to stop.
class Client {
 public:
  Client(KvStore& store, asio::io_context& loop, const Options& o, unsigned seed,
         std::atomic<bool>& stop, std::atomic<uint64_t>& writes, std::atomic<uint64_t>& conflicts)
      : store_(store),
        loop_(loop),
        keys_(o.keys),
        rng_(seed),
        stop_(stop),
        writes_(writes),
        conflicts_(conflicts) {}

  void next() {
    if (stop_.load(std::memory_order_relaxed)) return;
    const std::string key = "visits/u" + std::to_string(rng_() % keys_ + 1);
    auto current = store_.get(scope_, key);
    uint64_t count = 0, version = trellis::kernel::storage::kAbsent;
    if (current) {
      count = std::strtoull(current->value.c_str(), nullptr, 10);
      version = current->version;
    }
    in_flight_ = true;
    store_.putAsync(scope_, key, std::to_string(count + 1), version,
                    [this](trellis::Result<uint64_t> r) {
                      if (r)
                        writes_.fetch_add(1, std::memory_order_relaxed);
                      else
                        conflicts_.fetch_add(1, std::memory_order_relaxed);
                      asio::post(loop_, [this] {
                        in_flight_ = false;
                        next();
                      });
                    });
  }

  bool idle() const { return !in_flight_; }

 private:
  std::atomic<bool> in_flight_{false};
  KvStore& store_;
  asio::io_context& loop_;
  const Scope scope_{"bench", "trellis/hello"};
  const int keys_;
  std::mt19937_64 rng_;
  std::atomic<bool>& stop_;
  std::atomic<uint64_t>& writes_;
  std::atomic<uint64_t>& conflicts_;
};

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const auto dir =
      std::filesystem::temp_directory_path() / ("trellis-kv-bench-" + std::to_string(::getpid()));
  auto store = trellis::kernel::storage::openSqliteKvStore(dir);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.status().message().c_str());
    return 2;
  }
  std::vector<asio::io_context> loops(static_cast<size_t>(o.loops));
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  for (auto& l : loops) guards.emplace_back(l.get_executor());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0}, conflicts{0};
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < o.clients; ++i) {
    auto& loop = loops[static_cast<size_t>(i % o.loops)];
    clients.push_back(std::make_unique<Client>(**store, loop, o, static_cast<unsigned>(i + 1), stop,
                                               writes, conflicts));
  }
  std::vector<std::thread> threads;
  for (auto& l : loops) threads.emplace_back([&l] { l.run(); });

  const auto stats0 = (*store)->writeStats();
  const double cpu0 = cpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < clients.size(); ++i) {
    asio::post(loops[i % loops.size()], [c = clients[i].get()] { c->next(); });
  }
  std::this_thread::sleep_for(std::chrono::seconds(o.seconds));
  const uint64_t done = writes.load();
  const double cpu1 = cpuSeconds();
  const auto stats1 = (*store)->writeStats();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  for (auto& c : clients) {
    while (!c->idle()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto& g : guards) g.reset();
  for (auto& l : loops) l.stop();
  for (auto& t : threads) t.join();

  const uint64_t batches = stats1.batches - stats0.batches;
  std::printf(
      "clients %d  loops %d  keys %d  %.0f writes/s  %.0f commits/s  mean batch %.1f  "
      "cpu %.1f us/write  conflicts %llu\n",
      o.clients, o.loops, o.keys, static_cast<double>(done) / secs,
      static_cast<double>(batches) / secs,
      batches ? static_cast<double>(stats1.writes - stats0.writes) / static_cast<double>(batches)
              : 0.0,
      done ? (cpu1 - cpu0) * 1e6 / static_cast<double>(done) : 0.0,
      static_cast<unsigned long long>(conflicts.load()));
  store->reset();
  std::filesystem::remove_all(dir);
  return 0;
}
