// What the audit sink in fail-closed mode adds to an admin action (issue #15's target: at
// most 2 ms at p99). Two trellisd in the same run, the same config but for the audit:
//   audited   trellis/audit as the sink, on_sink_failure: block (a request record stored
//             before the action, a response record after: two durable writes)
//   plain     no audit sink at all
// Each takes the same admin action — PUT a tenant's plugin configuration, itself a durable
// registry write — one at a time over a kept-alive connection, in alternating rounds so
// both see the same machine. Prints percentiles and the difference; never fails on numbers.
//   build/release/bench/trellis_audit_admin_bench [calls per round, default 500]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace {

using trellis::test::Connection;
using trellis::test::TrellisdProcess;
using Clock = std::chrono::steady_clock;

std::string configWith(const std::string& audit_plugin, const std::string& audit) {
  std::string yaml = trellis::test::defaultTestConfig(
      "    - id: trellis/hello\n      config: {greeting: Hello}\n" + audit_plugin, audit);
  yaml.replace(yaml.find("level: debug"), 12, "level: warn");
  yaml.replace(yaml.find("access_log: @DIR@/access.log"), 28, "access_log: \"off\"");
  return yaml;
}

struct Server {
  const char* name;
  TrellisdProcess process;
  std::vector<double> ms;
};

// One round: `calls` admin actions on one connection; false if one did not succeed.
bool round(Server& s, int calls, int& n) {
  Connection c(s.process.adminPort());
  const std::string token = s.process.adminToken();
  for (int i = 0; i < calls; ++i) {
    const std::string body = R"({"greeting":"Hello )" + std::to_string(++n) + R"("})";
    const std::string raw =
        "PUT /v1/tenants/acme/plugins/trellis/hello/config HTTP/1.1\r\n"
        "Host: bench\r\nAuthorization: Bearer " +
        token +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n\r\n" + body;
    const auto start = Clock::now();
    if (!c.send(raw)) return false;
    auto reply = c.read();
    if (reply.status != 200) {
      std::fprintf(stderr, "%s: HTTP %d %s\n", s.name, reply.status, reply.body.c_str());
      return false;
    }
    s.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  return true;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  const int calls = argc > 1 ? std::atoi(argv[1]) : 500;
  Server audited{
      "audited",
      TrellisdProcess(configWith("    - id: trellis/audit\n      system: true\n",
                                 "audit:\n  sink: trellis/audit\n  on_sink_failure: block\n")),
      {}};
  Server plain{"plain", TrellisdProcess(configWith("", "")), {}};
  for (Server* s : {&audited, &plain}) {
    if (!s->process.start()) {
      std::fprintf(stderr, "%s did not start:\n%s\n", s->name, s->process.log().c_str());
      return 2;
    }
  }
  int n = 0;
  for (Server* s : {&audited, &plain}) {  // warm-up, not counted
    if (!round(*s, 100, n)) return 2;
    s->ms.clear();
  }
  for (int r = 0; r < 6; ++r) {
    for (Server* s : r % 2 ? std::vector{&plain, &audited} : std::vector{&audited, &plain}) {
      if (!round(*s, calls, n)) return 2;
    }
  }
  std::printf("admin action (PUT tenant plugin config), %zu calls each, one at a time\n",
              audited.ms.size());
  std::printf("%-8s %8s %8s %8s %8s\n", "", "p50 ms", "p90 ms", "p99 ms", "max ms");
  for (Server* s : {&audited, &plain}) {
    std::printf("%-8s %8.3f %8.3f %8.3f %8.3f\n", s->name, percentile(s->ms, 50),
                percentile(s->ms, 90), percentile(s->ms, 99), percentile(s->ms, 100));
  }
  std::printf("added by the fail-closed audit sink: %.3f ms at p50, %.3f ms at p99 (target <= 2)\n",
              percentile(audited.ms, 50) - percentile(plain.ms, 50),
              percentile(audited.ms, 99) - percentile(plain.ms, 99));
  return 0;
}
