// trellis/hello — the C++ example plugin: GET /hello/{name} greets the caller and counts,
// per tenant, how often each name was greeted (in the tenant's KV store).
#include <charconv>
#include <string>
#include <string_view>
#include <trellis/plugin.hpp>

namespace {

constexpr size_t kMaxNameBytes = 64;
constexpr int kMaxCasAttempts = 16;

// JSON string body for a name we already restricted to printable ASCII.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

bool isPrintableAscii(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

class Hello : public trellis::Plugin {
 public:
  trellis::Status init(trellis::InitContext& ctx) override {
    auto greeted = ctx.counter("hello_greetings_total", "Greetings served");
    if (!greeted) return greeted.status();
    greeted_metric_ = *greeted;
    auto conflicts = ctx.counter("hello_cas_conflicts_total",
                                 "Compare-and-set writes that found the count changed and retried");
    if (!conflicts) return conflicts.status();
    conflicts_metric_ = *conflicts;
    return ctx.route("GET", "/hello/{name}", this, &Hello::greet);
  }

  trellis::Status greet(trellis::Context& ctx, const trellis::Request& req,
                        trellis::Response& res) {
    std::string_view name = req.pathParam("name").value_or("");
    if (name.empty() || name.size() > kMaxNameBytes || !isPrintableAscii(name)) {
      return res.problem(400, "name must be 1-64 printable ASCII characters");
    }
    return countVisit(ctx, req, res, std::string(name), 0);
  }

 private:
  // Increments visits/<name> with compare-and-set, so concurrent requests never lose a
  // count: read, then write without holding the event loop while the write commits; a
  // write that finds the count changed meanwhile reads again and retries.
  trellis::Status countVisit(trellis::Context& ctx, const trellis::Request& req,
                             trellis::Response& res, std::string name, int attempt) {
    const std::string key = "visits/" + name;
    trellis::Kv kv = ctx.kv();
    uint64_t count = 0, expected = trellis::Kv::kAbsent;
    auto current = kv.get(key);
    if (current) {
      std::from_chars(current->value.data(), current->value.data() + current->value.size(), count);
      expected = current->version;
    } else if (current.status().code() != trellis::StatusCode::kNotFound) {
      return current.status();
    }
    return kv.putAsync(
        req, res, key, std::to_string(count + 1), expected,
        [this, name = std::move(name), count, attempt](
            trellis::Context& ctx, const trellis::Request& req, trellis::Response& res,
            trellis::Result<uint64_t> put) mutable -> trellis::Status {
          if (put) return answer(ctx, res, name, count + 1);
          if (put.status().code() != trellis::StatusCode::kConflict) return put.status();
          (void)ctx.record(conflicts_metric_, 1);
          if (attempt + 1 >= kMaxCasAttempts) {
            return trellis::Status::conflict("too much contention on visits/" + name);
          }
          return countVisit(ctx, req, res, std::move(name), attempt + 1);
        });
  }

  trellis::Status answer(trellis::Context& ctx, trellis::Response& res, std::string_view name,
                         uint64_t visits) {
    (void)ctx.record(greeted_metric_, 1);
    // Other plugins may react to greetings; delivery is best-effort, so a full queue is
    // not the caller's problem.
    (void)ctx.publish("hello.greeted", "{\"name\":" + quote(name) + "}");
    // Read per request: a tenant may override the greeting (manifest tenant_config), and
    // a change reaches the next request without a restart.
    const std::string_view greeting = ctx.config("greeting").value_or("Hello");
    return res.json(
        200, "{\"message\":" + quote(std::string(greeting) + ", " + std::string(name) + "!") +
                 ",\"visits\":" + std::to_string(visits) + "}");
  }

  trellis_metric_id greeted_metric_ = 0;
  trellis_metric_id conflicts_metric_ = 0;
};

}  // namespace

TRELLIS_PLUGIN(Hello, "trellis/hello", "1.0.0")
