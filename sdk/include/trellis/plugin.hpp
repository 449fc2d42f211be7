// Header-only C++ wrapper over the C ABI in plugin.h. A plugin is a class with handler
// methods; the wrapper owns the C glue, and every exception a plugin throws is caught at
// the boundary and becomes TRELLIS_INTERNAL with the exception's message logged.
//
//   class Greeter : public trellis::Plugin {
//    public:
//     trellis::Status init(trellis::InitContext& ctx) override {
//       return ctx.route("GET", "/greet/{name}", this, &Greeter::greet);
//     }
//     trellis::Status greet(trellis::Context& ctx, const trellis::Request& req,
//                           trellis::Response& res) {
//       res.body("hi " + std::string(req.pathParam("name").value_or("?")));
//       return trellis::Status::ok();
//     }
//   };
//   TRELLIS_PLUGIN(Greeter, "acme/greeter", "1.0.0")
//
// Lifetimes follow the C ABI: string_views handed to a handler are valid only until it
// returns; Context, Request and Response objects are valid only inside the callback.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "trellis/plugin.h"
#include "trellis/status.hpp"

namespace trellis {

inline trellis_str toStr(std::string_view s) {
  return trellis_str{s.data(), s.size()};
}
inline std::string_view toView(trellis_str s) {
  return s.len == 0 ? std::string_view() : std::string_view(s.ptr, s.len);
}

namespace detail {
// The host table of this plugin library. One library = one plugin = one host table, so
// a library-wide pointer is enough; it is set in on_init before any handler can run.
inline const trellis_host_api*& hostSlot() {
  static const trellis_host_api* host = nullptr;
  return host;
}

// Converts a C status plus an optional explanation into a Status.
inline Status fromC(trellis_status s, std::string_view what) {
  if (s == TRELLIS_OK) return Status::ok();
  auto code = (s > TRELLIS_OK && s <= TRELLIS_INTERNAL) ? static_cast<StatusCode>(s)
                                                        : StatusCode::kInternal;
  return Status(code, std::string(what));
}

// As above, with the host's own message for the failed call when it has one (ABI 1.1
// last_error), e.g. `capability "kv" is not granted to this plugin by tenant acme`.
inline Status fromC(const trellis_host_api* host, const trellis_ctx* ctx, trellis_status s,
                    std::string_view fallback) {
  if (s == TRELLIS_OK) return Status::ok();
  trellis_str message{nullptr, 0};
  if (TRELLIS_HOST_HAS(host, last_error) && host->last_error(ctx, &message) == TRELLIS_OK &&
      message.len > 0) {
    return fromC(s, toView(message));
  }
  return fromC(s, fallback);
}

// Runs `fn`, turning any exception into INTERNAL and reporting it through the host.
template <typename Fn>
trellis_status guard(const trellis_host_api* host, const trellis_ctx* ctx, Fn&& fn) noexcept {
  std::string error;
  try {
    Status s = fn();
    if (s.isOk()) return TRELLIS_OK;
    if (!s.message().empty() && host && host->set_error) host->set_error(ctx, toStr(s.message()));
    return s.toC();
  } catch (const std::exception& e) {
    error = std::string("uncaught exception: ") + e.what();
  } catch (...) {
    error = "uncaught exception of unknown type";
  }
  if (host && host->set_error) host->set_error(ctx, toStr(error));
  return TRELLIS_INTERNAL;
}
}  // namespace detail

// Read-only view of the inbound request.
class Request {
 public:
  Request(const trellis_host_api* host, const trellis_ctx* ctx, const trellis_request* req)
      : host_(host), ctx_(ctx), req_(req) {}

  std::string_view method() const { return get(host_->req_method); }
  std::string_view path() const { return get(host_->req_path); }
  std::string_view query() const { return get(host_->req_query); }
  std::string_view body() const { return get(host_->req_body); }
  std::optional<std::string_view> header(std::string_view name) const {
    return lookup(host_->req_header, name);
  }
  std::optional<std::string_view> pathParam(std::string_view name) const {
    return lookup(host_->req_path_param, name);
  }
  std::optional<std::string_view> queryParam(std::string_view name) const {
    return lookup(host_->req_query_param, name);
  }
  // Calls fn(name, value) for every header, in arrival order.
  void forEachHeader(const std::function<void(std::string_view, std::string_view)>& fn) const {
    auto visit = [](void* user, trellis_str n, trellis_str v) -> int {
      (*static_cast<const std::function<void(std::string_view, std::string_view)>*>(user))(
          toView(n), toView(v));
      return 0;
    };
    host_->req_headers(ctx_, req_, visit,
                       const_cast<std::function<void(std::string_view, std::string_view)>*>(&fn));
  }

 private:
  using Getter = trellis_status (*)(const trellis_ctx*, const trellis_request*, trellis_str*);
  using Lookup = trellis_status (*)(const trellis_ctx*, const trellis_request*, trellis_str,
                                    trellis_str*);
  std::string_view get(Getter g) const {
    trellis_str out{nullptr, 0};
    return g(ctx_, req_, &out) == TRELLIS_OK ? toView(out) : std::string_view();
  }
  std::optional<std::string_view> lookup(Lookup l, std::string_view name) const {
    trellis_str out{nullptr, 0};
    if (l(ctx_, req_, toStr(name), &out) != TRELLIS_OK) return std::nullopt;
    return toView(out);
  }
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
  const trellis_request* req_;
};

// The response being built; every value is copied by the host.
class Response {
 public:
  Response(const trellis_host_api* host, const trellis_ctx* ctx, trellis_response* res)
      : host_(host), ctx_(ctx), res_(res) {}

  Status status(int code) {
    return detail::fromC(host_, ctx_, host_->res_set_status(ctx_, res_, code),
                         "invalid status code");
  }
  Status header(std::string_view name, std::string_view value) {
    return detail::fromC(host_, ctx_, host_->res_add_header(ctx_, res_, toStr(name), toStr(value)),
                         "invalid response header");
  }
  Status body(std::string_view b) {
    return detail::fromC(host_, ctx_, host_->res_set_body(ctx_, res_, toStr(b)), "cannot set body");
  }
  Status append(std::string_view chunk) {
    return detail::fromC(host_, ctx_, host_->res_append_body(ctx_, res_, toStr(chunk)),
                         "cannot append");
  }
  // Sets status, Content-Type: application/json and the body in one call.
  Status json(int code, std::string_view body_json) {
    if (auto s = status(code); !s) return s;
    if (auto s = header("Content-Type", "application/json"); !s) return s;
    return body(body_json);
  }
  // Answers with an RFC 9457 problem: `code` (400-599) and `client_detail`, which the
  // client reads (no internals). Return its Status from the handler: no error is logged.
  Status problem(int code, std::string_view client_detail) {
    if (!TRELLIS_HOST_HAS(host_, res_problem)) {  // a host older than this slot
      return Status::unimplemented("the host has no res_problem");
    }
    return detail::fromC(host_, ctx_, host_->res_problem(ctx_, res_, code, toStr(client_detail)),
                         "cannot answer with a problem");
  }

 private:
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
  trellis_response* res_;
};

struct KvEntry {
  std::string value;
  uint64_t version = 0;
};

class Context;

// The key/value store of the calling tenant and this plugin.
class Kv {
 public:
  static constexpr uint64_t kAnyVersion = TRELLIS_KV_ANY_VERSION;
  static constexpr uint64_t kAbsent = TRELLIS_KV_ABSENT;

  Kv(const trellis_host_api* host, const trellis_ctx* ctx) : host_(host), ctx_(ctx) {}

  Result<KvEntry> get(std::string_view key) const {
    trellis_buf buf{nullptr, 0};
    uint64_t version = 0;
    trellis_status s = host_->kv_get(ctx_, toStr(key), &buf, &version);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "kv get failed");
    KvEntry e{std::string(buf.ptr ? buf.ptr : "", buf.len), version};
    host_->buf_free(&buf);
    return e;
  }
  // Returns the new version; CONFLICT if `expected_version` no longer matches.
  Result<uint64_t> put(std::string_view key, std::string_view value,
                       uint64_t expected_version = kAnyVersion) const {
    uint64_t version = 0;
    trellis_status s = host_->kv_put(ctx_, toStr(key), toStr(value), expected_version, &version);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "kv put failed");
    return version;
  }
  Status remove(std::string_view key, uint64_t expected_version = kAnyVersion) const {
    return detail::fromC(host_, ctx_, host_->kv_delete(ctx_, toStr(key), expected_version),
                         "kv delete failed");
  }
  // ABI 1.2: put() without blocking the event loop (kv_put_async in plugin.h), for routes
  // not declared blocking. Return its Status from the handler; `then` runs on the event
  // loop once the write is durable (or failed), with what put() would return, and finishes
  // the response — or starts another putAsync, e.g. a compare-and-set retry. A host without
  // the slot (older than this SDK) gets put() and `then` at once instead.
  using PutThen = std::function<Status(Context&, const Request&, Response&, Result<uint64_t>)>;
  Status putAsync(const Request& req, Response& res, std::string_view key, std::string_view value,
                  uint64_t expected_version, PutThen then) const;

  // fn(key, value, version) returns false to stop.
  Status list(std::string_view prefix, std::string_view start_after, uint32_t limit,
              const std::function<bool(std::string_view, std::string_view, uint64_t)>& fn) const {
    auto visit = [](void* user, trellis_str k, trellis_str v, uint64_t version) -> int {
      auto* f =
          static_cast<const std::function<bool(std::string_view, std::string_view, uint64_t)>*>(
              user);
      return (*f)(toView(k), toView(v), version) ? 0 : 1;
    };
    using Fn = std::function<bool(std::string_view, std::string_view, uint64_t)>;
    return detail::fromC(
        host_, ctx_,
        host_->kv_list(ctx_, toStr(prefix), toStr(start_after), limit, visit, const_cast<Fn*>(&fn)),
        "kv list failed");
  }

 private:
  static trellis_status completePut(void* user, const trellis_ctx* ctx, const trellis_request* req,
                                    trellis_response* res, trellis_status status, uint64_t version);
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
};

// ABI 1.2: a host object held across calls (see trellis_handle), closed when this goes
// out of scope. The close needs a live ctx, so a Handle that must outlive its callback is
// release()d and its id() reopened with Handle(host, ctx, id) in a later callback of the
// same tenant.
class Handle {
 public:
  Handle() = default;
  Handle(const trellis_host_api* host, const trellis_ctx* ctx, trellis_handle id)
      : host_(host), ctx_(ctx), id_(id) {}
  Handle(Handle&& o) noexcept : host_(o.host_), ctx_(o.ctx_), id_(o.release()) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      host_ = o.host_;
      ctx_ = o.ctx_;
      id_ = o.release();
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }

  trellis_handle id() const { return id_; }
  explicit operator bool() const { return id_ != TRELLIS_HANDLE_NONE; }
  // Gives up ownership without closing; returns the id.
  trellis_handle release() {
    trellis_handle id = id_;
    id_ = TRELLIS_HANDLE_NONE;
    return id;
  }
  // Closes now (an unfinished operation is abandoned).
  void reset() {
    if (id_ != TRELLIS_HANDLE_NONE && TRELLIS_HOST_HAS(host_, handle_close)) {
      host_->handle_close(ctx_, id_);
    }
    id_ = TRELLIS_HANDLE_NONE;
  }

 private:
  const trellis_host_api* host_ = nullptr;
  const trellis_ctx* ctx_ = nullptr;
  trellis_handle id_ = TRELLIS_HANDLE_NONE;
};

// ABI 1.2 blob storage (capability "blobs"), scoped by the host to (tenant, plugin).
//   auto w = ctx.blobs().openWrite("backups/db.tar", "application/x-tar");
//   w->write(chunk); ... auto head_json = w->commit();   // the object appears atomically
//   auto r = ctx.blobs().openRead("backups/db.tar");  char buf[65536];
//   while (auto n = r->read(buf, sizeof buf); n && *n > 0) use(buf, *n);
class BlobWriter {
 public:
  BlobWriter(const trellis_host_api* host, const trellis_ctx* ctx, trellis_handle h)
      : host_(host), ctx_(ctx), handle_(host, ctx, h) {}
  Status write(std::string_view chunk) {
    return detail::fromC(host_, ctx_, host_->blob_write(ctx_, handle_.id(), toStr(chunk)),
                         "blob write failed");
  }
  // The head as JSON (plugin.h). Dropping the writer without commit() aborts the upload.
  Result<std::string> commit() {
    trellis_buf buf{nullptr, 0};
    trellis_status s = host_->blob_commit(ctx_, handle_.release(), &buf);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "blob commit failed");
    std::string out(buf.ptr ? buf.ptr : "", buf.len);
    host_->buf_free(&buf);
    return out;
  }

 private:
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
  Handle handle_;
};

class BlobReader {
 public:
  BlobReader(const trellis_host_api* host, const trellis_ctx* ctx, trellis_handle h)
      : host_(host), ctx_(ctx), handle_(host, ctx, h) {}
  // Bytes copied into buf; 0 at the end of the range.
  Result<size_t> read(char* buf, size_t cap) {
    size_t n = 0;
    trellis_status s = host_->blob_read(ctx_, handle_.id(), buf, cap, &n);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "blob read failed");
    return n;
  }

 private:
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
  Handle handle_;
};

class Blobs {
 public:
  Blobs(const trellis_host_api* host, const trellis_ctx* ctx) : host_(host), ctx_(ctx) {}

  // metadata_json: a JSON object of string values ("" = none).
  Result<std::unique_ptr<BlobWriter>> openWrite(std::string_view key,
                                                std::string_view content_type = "",
                                                std::string_view metadata_json = "") const {
    if (!TRELLIS_HOST_HAS(host_, blob_open_write)) return missing("blob_open_write");
    trellis_blob_write_options o{sizeof(o), toStr(content_type), toStr(metadata_json)};
    trellis_handle h = TRELLIS_HANDLE_NONE;
    trellis_status s = host_->blob_open_write(ctx_, toStr(key), &o, &h);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "cannot open blob for writing");
    return std::make_unique<BlobWriter>(host_, ctx_, h);
  }
  Result<std::unique_ptr<BlobReader>> openRead(std::string_view key, uint64_t offset = 0,
                                               uint64_t length = UINT64_MAX) const {
    if (!TRELLIS_HOST_HAS(host_, blob_open_read)) return missing("blob_open_read");
    trellis_handle h = TRELLIS_HANDLE_NONE;
    trellis_status s = host_->blob_open_read(ctx_, toStr(key), offset, length, &h);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "cannot open blob for reading");
    return std::make_unique<BlobReader>(host_, ctx_, h);
  }
  Result<std::string> head(std::string_view key) const {
    if (!TRELLIS_HOST_HAS(host_, blob_head)) return missing("blob_head");
    return json(host_->blob_head, key);
  }
  Status remove(std::string_view key) const {
    if (!TRELLIS_HOST_HAS(host_, blob_delete)) return missing("blob_delete");
    return detail::fromC(host_, ctx_, host_->blob_delete(ctx_, toStr(key)), "blob delete failed");
  }
  // {"items":[head...],"next":"<key>"|null}
  Result<std::string> list(std::string_view prefix, std::string_view start_after = "",
                           uint32_t limit = 0) const {
    if (!TRELLIS_HOST_HAS(host_, blob_list)) return missing("blob_list");
    trellis_buf buf{nullptr, 0};
    trellis_status s = host_->blob_list(ctx_, toStr(prefix), toStr(start_after), limit, &buf);
    return take(s, buf);
  }

 private:
  static Status missing(std::string_view slot) {
    return Status::unimplemented("the host does not offer " + std::string(slot) +
                                 " (needs ABI 1.2)");
  }
  template <typename Fn>
  Result<std::string> json(Fn fn, std::string_view key) const {
    trellis_buf buf{nullptr, 0};
    return take(fn(ctx_, toStr(key), &buf), buf);
  }
  Result<std::string> take(trellis_status s, trellis_buf& buf) const {
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "blob call failed");
    std::string out(buf.ptr ? buf.ptr : "", buf.len);
    host_->buf_free(&buf);
    return out;
  }
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
};

// ABI 1.2 egress HTTP (capability "egress"; destinations from the manifest's "egress" list,
// narrowed by the tenant's grant). Blocks: call it from blocking routes, jobs or events.
//   trellis::HttpRequest req{.method = "GET", .url = "https://api.example.com/v1/x"};
//   auto res = ctx.http(req);   // res->status, res->headers, res->body
struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  uint32_t connect_timeout_ms = 0;  // 0: host defaults
  uint32_t first_byte_timeout_ms = 0;
  uint32_t total_timeout_ms = 0;
  uint32_t max_redirects = 0;       // 0: a 3xx is answered as it is
  uint64_t max_response_bytes = 0;  // 0: host default
};
struct HttpResponse {
  int32_t status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// ABI 1.2 egress streams (capability "egress"): a TCP or TLS byte stream to a destination
// the manifest's "egress" rules allow ("tcp://host:port", "tls://host:port"), narrowed by
// the tenant's grant. Blocks: call it from blocking routes, jobs or events. Closed (TLS:
// close_notify first) when the Stream goes; like every handle it belongs to this plugin and
// tenant, and a Stream used past its callback needs a live ctx of the same tenant: release()
// the id and adopt it later with Stream(host, ctx, id).
//   auto s = ctx.connect({.url = "tls://logs.example.com:6514"});
//   if (!s) return s.status();
//   s->write("<134>1 2024-01-01T00:00:00Z web app - - - hello\n");
//   char buf[4096];
//   auto n = s->read(buf, sizeof buf);   // *n == 0: the peer closed
struct StreamOptions {
  std::string url;
  uint32_t connect_timeout_ms = 0;  // 0: host default (5000)
  uint32_t io_timeout_ms = 0;       // 0: host default (10000), each write or read
};

class Stream {
 public:
  Stream(const trellis_host_api* host, const trellis_ctx* ctx, trellis_handle h)
      : host_(host), ctx_(ctx), handle_(host, ctx, h) {}
  Stream(Stream&&) noexcept = default;
  Stream& operator=(Stream&&) noexcept = default;

  // All of `bytes`, or TIMEOUT / UNAVAILABLE (the stream is then closed) / QUOTA_EXCEEDED.
  Status write(std::string_view bytes) {
    return detail::fromC(host_, ctx_, host_->stream_write(ctx_, handle_.id(), toStr(bytes)),
                         "stream write failed");
  }
  // Bytes copied into buf (at least 1); 0 once the peer closed; TIMEOUT if nothing came.
  Result<size_t> read(char* buf, size_t cap) {
    size_t n = 0;
    trellis_status s = host_->stream_read(ctx_, handle_.id(), buf, cap, &n);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "stream read failed");
    return n;
  }
  trellis_handle id() const { return handle_.id(); }
  // Gives up ownership without closing; returns the id.
  trellis_handle release() { return handle_.release(); }
  // Closes now.
  void close() { handle_.reset(); }

 private:
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
  Handle handle_;
};

// ABI 1.2 scripts (capability "script"): Lua source run by the kernel in its sandbox,
// each call under a budget the kernel bounds. Top-level locals persist between calls of
// one Script. Like every handle it belongs to this plugin and tenant: release() the id to
// keep it past the callback and adopt it later with Script(host, ctx, id).
//   auto rule = ctx.loadScript("function check(r) return r.n > 5 end", {.name = "rule.lua"});
//   auto verdict = rule->call("check", R"({"n": 7})");   // "true"
//   // errors: INVALID (the script's message), NOT_FOUND, QUOTA_EXCEEDED, TIMEOUT
namespace detail {
inline Result<std::string> callScript(const trellis_host_api* host, const trellis_ctx* ctx,
                                      trellis_handle script, std::string_view function,
                                      std::string_view input_json) {
  if (!TRELLIS_HOST_HAS(host, script_call)) {
    return Status::unimplemented("the host does not offer script_call (needs ABI 1.2)");
  }
  trellis_buf out{nullptr, 0};
  trellis_status s = host->script_call(ctx, script, toStr(function), toStr(input_json), &out);
  if (s != TRELLIS_OK) {
    host->buf_free(&out);
    return fromC(host, ctx, s, "script call failed");
  }
  std::string result(out.ptr ? out.ptr : "", out.len);
  host->buf_free(&out);
  return result;
}
}  // namespace detail

struct ScriptOptions {
  std::string name;               // in messages ("rule.lua:3: ..."); "" = "script"
  uint64_t max_instructions = 0;  // 0: host default (1,000,000 per call)
  uint64_t max_memory_bytes = 0;  // 0: host default (8 MiB, the whole state)
  uint32_t max_wall_ms = 0;       // 0: host default (50 ms per call)
};

class Script {
 public:
  Script(const trellis_host_api* host, const trellis_ctx* ctx, trellis_handle h)
      : host_(host), ctx_(ctx), handle_(host, ctx, h) {}
  Script(Script&&) noexcept = default;
  Script& operator=(Script&&) noexcept = default;

  // Calls global `function` with the JSON value `input_json`; its result as JSON.
  Result<std::string> call(std::string_view function, std::string_view input_json) const {
    return detail::callScript(host_, ctx_, handle_.id(), function, input_json);
  }
  trellis_handle id() const { return handle_.id(); }
  // Gives up ownership without closing; returns the id.
  trellis_handle release() { return handle_.release(); }
  // Closes now.
  void close() { handle_.reset(); }

 private:
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
  Handle handle_;
};

// ABI 1.2: a job to schedule for the calling tenant (see trellis_job_spec).
//   ctx.schedule(trellis::Job::cron("nightly-backup", "0 3 * * *").durable());
struct Job {
  int32_t kind = TRELLIS_JOB_ONCE;
  std::string name;
  uint64_t delay_ms = 0;
  uint64_t interval_ms = 0;
  std::string expression;  // kind CRON
  std::string payload;
  uint32_t flags = 0;
  uint32_t max_attempts = 0;  // 0: host default
  uint32_t budget_ms = 0;     // 0: host default

  static Job once(std::string name, uint64_t delay_ms, std::string payload = {}) {
    Job j;
    j.kind = TRELLIS_JOB_ONCE;
    j.name = std::move(name);
    j.delay_ms = delay_ms;
    j.payload = std::move(payload);
    return j;
  }
  static Job every(std::string name, uint64_t interval_ms, std::string payload = {}) {
    Job j;
    j.kind = TRELLIS_JOB_EVERY;
    j.name = std::move(name);
    j.interval_ms = interval_ms;
    j.payload = std::move(payload);
    return j;
  }
  static Job cron(std::string name, std::string expression, std::string payload = {}) {
    Job j;
    j.kind = TRELLIS_JOB_CRON;
    j.name = std::move(name);
    j.expression = std::move(expression);
    j.payload = std::move(payload);
    return j;
  }
  // Persisted, retried with backoff up to `attempts` runs, then dead-lettered.
  Job&& durable(uint32_t attempts = 0) && {
    flags |= TRELLIS_JOB_DURABLE;
    max_attempts = attempts;
    return std::move(*this);
  }
};

// What every callback receives: who is calling and what the host offers.
class Context {
 public:
  Context(const trellis_host_api* host, const trellis_ctx* ctx) : host_(host), ctx_(ctx) {}

  // "" outside a tenant's request (init, start, stop).
  std::string_view tenant() const { return get(host_->ctx_tenant); }
  std::string_view pluginId() const { return get(host_->ctx_plugin); }
  // Id of the key that made the request ("" outside requests or before ABI 1.1).
  std::string_view principal() const {
    return TRELLIS_HOST_HAS(host_, ctx_principal) ? get(host_->ctx_principal) : std::string_view();
  }

  void log(int32_t level, std::string_view msg) const { host_->log(ctx_, level, toStr(msg)); }
  void debug(std::string_view msg) const { log(TRELLIS_LOG_DEBUG, msg); }
  void info(std::string_view msg) const { log(TRELLIS_LOG_INFO, msg); }
  void warn(std::string_view msg) const { log(TRELLIS_LOG_WARN, msg); }
  void error(std::string_view msg) const { log(TRELLIS_LOG_ERROR, msg); }

  // The plugin's configuration at a dotted path ("" = all, as JSON).
  std::optional<std::string_view> config(std::string_view path) const {
    trellis_str out{nullptr, 0};
    if (host_->config_get(ctx_, toStr(path), &out) != TRELLIS_OK) return std::nullopt;
    return toView(out);
  }

  Kv kv() const { return Kv(host_, ctx_); }

  Status publish(std::string_view topic, std::string_view payload) const {
    return detail::fromC(host_, ctx_, host_->event_publish(ctx_, toStr(topic), toStr(payload)),
                         "event publish failed");
  }
  // Appends a record to the host's audit stream (action "secret.read", resource
  // "secret/db", details a JSON object or empty; 16 KiB in all). UNIMPLEMENTED on a host
  // without the slot.
  Status auditEmit(std::string_view action, std::string_view resource,
                   std::string_view details_json = {}) const {
    if (!TRELLIS_HOST_HAS(host_, audit_emit)) return unavailableSlot("audit_emit", "1.2");
    return detail::fromC(
        host_, ctx_, host_->audit_emit(ctx_, toStr(action), toStr(resource), toStr(details_json)),
        "audit emit failed");
  }
  Status record(trellis_metric_id id, double value) const {
    return detail::fromC(host_, ctx_, host_->metric_record(ctx_, id, value),
                         "metric record failed");
  }
  uint64_t nowUnixMs() const { return host_->clock_unix_ms(ctx_); }
  uint64_t monotonicNs() const { return host_->clock_monotonic_ns(ctx_); }

  // ABI 1.1: the calling tenant's own account (capabilities "tenant.read" and
  // "tenant.keys"); JSON text as plugin.h documents. The message of a failure is the
  // host's, fit to show to that tenant. UNIMPLEMENTED on a host older than 1.1.
  Result<std::string> tenantInfo() const {
    if (!TRELLIS_HOST_HAS(host_, tenant_info)) return unavailableSlot("tenant_info");
    return takeJson([&](trellis_buf* out) { return host_->tenant_info(ctx_, out); });
  }
  Result<std::string> tenantKeys() const {
    if (!TRELLIS_HOST_HAS(host_, tenant_keys_list)) return unavailableSlot("tenant_keys_list");
    return takeJson([&](trellis_buf* out) { return host_->tenant_keys_list(ctx_, out); });
  }
  // ttl_seconds 0: the plan's longest lifetime, or none.
  Result<std::string> createTenantKey(uint64_t ttl_seconds) const {
    if (!TRELLIS_HOST_HAS(host_, tenant_key_create)) return unavailableSlot("tenant_key_create");
    return takeJson(
        [&](trellis_buf* out) { return host_->tenant_key_create(ctx_, ttl_seconds, out); });
  }
  // Swaps the key that made this request for a new one, atomically.
  Result<std::string> rotateTenantKey(uint64_t ttl_seconds) const {
    if (!TRELLIS_HOST_HAS(host_, tenant_key_rotate)) return unavailableSlot("tenant_key_rotate");
    return takeJson(
        [&](trellis_buf* out) { return host_->tenant_key_rotate(ctx_, ttl_seconds, out); });
  }
  Status revokeTenantKey(std::string_view key_id) const {
    if (!TRELLIS_HOST_HAS(host_, tenant_key_revoke)) return unavailableSlot("tenant_key_revoke");
    trellis_status s = host_->tenant_key_revoke(ctx_, toStr(key_id));
    return s == TRELLIS_OK ? Status::ok() : detail::fromC(host_, ctx_, s, "key revoke failed");
  }

  // ABI 1.2: the W3C trace context of this call ("" outside a request, service call, job
  // or event). Pass traceparent on to anything outside Trellis you call.
  std::string_view traceparent() const { return trace().first; }
  std::string_view tracestate() const { return trace().second; }

  // ABI 1.2: calls `method` of `service` (capability "service:<name>") for this call's
  // tenant and trace; the answer's bytes, or the provider's status and message.
  Result<std::string> call(std::string_view service, std::string_view method,
                           std::string_view request) const {
    if (!TRELLIS_HOST_HAS(host_, service_call)) return unavailableSlot("service_call", "1.2");
    trellis_buf buf{nullptr, 0};
    trellis_status s =
        host_->service_call(ctx_, toStr(service), toStr(method), toStr(request), &buf);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "service call failed");
    std::string out(buf.ptr ? buf.ptr : "", buf.len);
    host_->buf_free(&buf);
    return out;
  }
  // Inside a service method: the id of the calling plugin ("" elsewhere).
  std::string_view caller() const {
    return TRELLIS_HOST_HAS(host_, ctx_caller) ? get(host_->ctx_caller) : std::string_view();
  }

  // ABI 1.2: schedules (or replaces) a job for this call's tenant (capability "jobs").
  Status schedule(const Job& job) const {
    if (!TRELLIS_HOST_HAS(host_, job_schedule)) return unavailableSlot("job_schedule", "1.2");
    trellis_job_spec spec{};
    spec.struct_size = sizeof(spec);
    spec.kind = job.kind;
    spec.name = toStr(job.name);
    spec.delay_ms = job.delay_ms;
    spec.interval_ms = job.interval_ms;
    spec.cron = toStr(job.expression);
    spec.payload = toStr(job.payload);
    spec.flags = job.flags;
    spec.max_attempts = job.max_attempts;
    spec.budget_ms = job.budget_ms;
    return detail::fromC(host_, ctx_, host_->job_schedule(ctx_, &spec),
                         "cannot schedule job " + job.name);
  }
  Status cancelJob(std::string_view name) const {
    if (!TRELLIS_HOST_HAS(host_, job_cancel)) return unavailableSlot("job_cancel", "1.2");
    return detail::fromC(host_, ctx_, host_->job_cancel(ctx_, toStr(name)),
                         "cannot cancel job " + std::string(name));
  }

  // ABI 1.2 blob storage (capability "blobs").
  Blobs blobs() const { return Blobs(host_, ctx_); }

  // Usage stream: appends this plugin's own billable record (a JSON object, at most 4 KiB)
  // for the calling tenant (capability "usage.emit").
  Status emitUsage(std::string_view record_json) const {
    if (!TRELLIS_HOST_HAS(host_, usage_emit)) return unavailableSlot("usage_emit", "1.2");
    return detail::fromC(host_, ctx_, host_->usage_emit(ctx_, toStr(record_json)),
                         "usage_emit refused");
  }
  // Usage stream (system plugins): acknowledges everything up to a batch's cursor.
  Status ackUsage(std::string_view cursor) const {
    if (!TRELLIS_HOST_HAS(host_, usage_ack)) return unavailableSlot("usage_ack", "1.2");
    return detail::fromC(host_, ctx_, host_->usage_ack(ctx_, toStr(cursor)), "usage_ack refused");
  }

  // System plugins: runs `fn` with a Context for `tenant` (its storage for this plugin, its
  // grants and quotas), audited with `reason` before it runs (see trellis_tenant_fn).
  template <typename Fn>
  Status actForTenant(std::string_view tenant, std::string_view reason, Fn&& fn) const {
    if (!TRELLIS_HOST_HAS(host_, act_for_tenant)) return unavailableSlot("act_for_tenant", "1.2");
    auto thunk = [](void* user, const trellis_ctx* tenant_ctx) -> trellis_status {
      const trellis_host_api* host = detail::hostSlot();
      return detail::guard(host, tenant_ctx, [&]() -> Status {
        Context inner(host, tenant_ctx);
        return (*static_cast<std::remove_reference_t<Fn>*>(user))(inner);
      });
    };
    return detail::fromC(host_, ctx_,
                         host_->act_for_tenant(ctx_, toStr(tenant), toStr(reason), thunk,
                                               const_cast<void*>(static_cast<const void*>(&fn))),
                         "act_for_tenant " + std::string(tenant) + " failed");
  }

  // ABI 1.2: an outbound HTTP request made by the kernel (capability "egress"). The status,
  // headers and whole body (up to max_response_bytes), or the kernel's refusal, which names
  // the rule, timeout or cap at fault.
  Result<HttpResponse> http(const HttpRequest& r) const {
    if (!TRELLIS_HOST_HAS(host_, http_send)) return unavailableSlot("http_send", "1.2");
    std::vector<trellis_str> headers;
    for (const auto& [name, value] : r.headers) {
      headers.push_back(toStr(name));
      headers.push_back(toStr(value));
    }
    trellis_http_request req{};
    req.struct_size = sizeof(req);
    req.method = toStr(r.method);
    req.url = toStr(r.url);
    req.headers = headers.data();
    req.header_count = r.headers.size();
    req.body = toStr(r.body);
    req.connect_timeout_ms = r.connect_timeout_ms;
    req.first_byte_timeout_ms = r.first_byte_timeout_ms;
    req.total_timeout_ms = r.total_timeout_ms;
    req.max_redirects = r.max_redirects;
    req.max_response_bytes = r.max_response_bytes;
    trellis_handle h = TRELLIS_HANDLE_NONE;
    trellis_status s = host_->http_send(ctx_, &req, &h);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "http request failed");
    Handle response(host_, ctx_, h);
    HttpResponse out;
    host_->http_response_status(ctx_, h, &out.status);
    host_->http_response_headers(
        ctx_, h,
        [](void* user, trellis_str name, trellis_str value) {
          static_cast<HttpResponse*>(user)->headers.emplace_back(toView(name), toView(value));
          return 0;
        },
        &out);
    char buf[16384];
    size_t n = 0;
    while ((s = host_->http_response_read(ctx_, h, buf, sizeof buf, &n)) == TRELLIS_OK && n > 0) {
      out.body.append(buf, n);
    }
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "http response read failed");
    return out;
  }

  // ABI 1.2: an outbound TCP or TLS stream opened by the kernel (capability "egress"), or
  // the kernel's refusal, which names the rule, timeout or certificate problem at fault.
  Result<Stream> connect(const StreamOptions& o) const {
    if (!TRELLIS_HOST_HAS(host_, stream_connect)) return unavailableSlot("stream_connect", "1.2");
    trellis_stream_options opts{};
    opts.struct_size = sizeof(opts);
    opts.url = toStr(o.url);
    opts.connect_timeout_ms = o.connect_timeout_ms;
    opts.io_timeout_ms = o.io_timeout_ms;
    trellis_handle h = TRELLIS_HANDLE_NONE;
    trellis_status s = host_->stream_connect(ctx_, &opts, &h);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "stream connect failed");
    return Stream(host_, ctx_, h);
  }

  // ABI 1.2: compiles `source` in the kernel's Lua sandbox and runs its top level
  // (capability "script"); INVALID with the script's message for a syntax error.
  Result<Script> loadScript(std::string_view source, const ScriptOptions& o = {}) const {
    if (!TRELLIS_HOST_HAS(host_, script_load)) return unavailableSlot("script_load", "1.2");
    trellis_script_options opts{};
    opts.struct_size = sizeof(opts);
    opts.name = toStr(o.name);
    opts.max_instructions = o.max_instructions;
    opts.max_memory_bytes = o.max_memory_bytes;
    opts.max_wall_ms = o.max_wall_ms;
    trellis_handle h = TRELLIS_HANDLE_NONE;
    trellis_status s = host_->script_load(ctx_, toStr(source), &opts, &h);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "script load failed");
    return Script(host_, ctx_, h);
  }

  // A script kept by its id past the callback that loaded it (Script::release()), called
  // under this ctx, which must be of the same tenant.
  Result<std::string> callScript(trellis_handle script, std::string_view function,
                                 std::string_view input_json) const {
    return detail::callScript(host_, ctx_, script, function, input_json);
  }
  // ABI 1.2: seals `plaintext` (1 byte to 64 KiB) under the operator's seal key
  // (capability "seal"), bound to this plugin, this call's tenant ("" outside one) and
  // `label`: printable text ("tseal:v1:…") safe to store anywhere. UNAVAILABLE on a host
  // without server.seal_key_file, UNIMPLEMENTED on one older than the slot: the plugin
  // decides whether to go on unsealed.
  Result<std::string> wrapKey(std::string_view label, std::string_view plaintext) const {
    if (!TRELLIS_HOST_HAS(host_, key_wrap)) return unavailableSlot("key_wrap", "1.2");
    return sealCall(host_->key_wrap, label, plaintext, "key_wrap failed");
  }
  // Opens what wrapKey() made for the same plugin, tenant and label. INVALID, with the reason,
  // for anything else (another plugin, tenant or label, altered, another seal key).
  Result<std::string> unwrapKey(std::string_view label, std::string_view sealed) const {
    if (!TRELLIS_HOST_HAS(host_, key_unwrap)) return unavailableSlot("key_unwrap", "1.2");
    return sealCall(host_->key_unwrap, label, sealed, "key_unwrap failed");
  }
  // Releases a handle kept by its id (see Handle::release()).
  Status closeHandle(trellis_handle h) const {
    if (!TRELLIS_HOST_HAS(host_, handle_close)) return unavailableSlot("handle_close", "1.2");
    return detail::fromC(host_, ctx_, host_->handle_close(ctx_, h), "handle close failed");
  }

  const trellis_host_api* host() const { return host_; }
  const trellis_ctx* raw() const { return ctx_; }

 private:
  std::pair<std::string_view, std::string_view> trace() const {
    trellis_str parent{nullptr, 0}, state{nullptr, 0};
    if (!TRELLIS_HOST_HAS(host_, ctx_trace) ||
        host_->ctx_trace(ctx_, &parent, &state) != TRELLIS_OK) {
      return {};
    }
    return {toView(parent), toView(state)};
  }
  static Status unavailableSlot(std::string_view slot, std::string_view abi = "1.1") {
    return Status::unimplemented("the host does not offer " + std::string(slot) + " (needs ABI " +
                                 std::string(abi) + ")");
  }
  template <typename Call>
  Result<std::string> takeJson(Call call) const {
    trellis_buf buf{nullptr, 0};
    trellis_status s = call(&buf);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "tenant call failed");
    std::string out(buf.ptr ? buf.ptr : "", buf.len);
    host_->buf_free(&buf);
    return out;
  }
  using SealFn = trellis_status (*)(const trellis_ctx*, trellis_str, trellis_str, trellis_buf*);
  Result<std::string> sealCall(SealFn fn, std::string_view label, std::string_view input,
                               std::string_view fallback) const {
    trellis_buf buf{nullptr, 0};
    trellis_status s = fn(ctx_, toStr(label), toStr(input), &buf);
    if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, fallback);
    std::string out(buf.ptr ? buf.ptr : "", buf.len);
    // The host's copy may be a plaintext secret: cleared before it goes back to the heap.
    for (size_t i = 0; i < buf.len; ++i) static_cast<volatile char*>(buf.ptr)[i] = 0;
    host_->buf_free(&buf);
    return out;
  }
  using Getter = trellis_status (*)(const trellis_ctx*, trellis_str*);
  std::string_view get(Getter g) const {
    trellis_str out{nullptr, 0};
    return g(ctx_, &out) == TRELLIS_OK ? toView(out) : std::string_view();
  }
  const trellis_host_api* host_;
  const trellis_ctx* ctx_;
};

using Handler = std::function<Status(Context&, const Request&, Response&)>;
using EventHandler = std::function<void(Context&, std::string_view topic, std::string_view)>;
// A service method: the request bytes in, the response bytes (or a failure) out.
using ServiceHandler = std::function<Result<std::string>(Context&, std::string_view request)>;
// A job run: non-OK fails it (durable jobs are retried, then dead-lettered).
using JobHandler = std::function<Status(Context&, std::string_view name, std::string_view payload)>;
// A batch of usage records (JSON lines) for a system plugin; acknowledge with
// Context::ackUsage(cursor) once they are safe. Non-OK: delivered again later.
using UsageHandler = std::function<Status(Context&, std::string_view records, uint32_t count,
                                          std::string_view cursor)>;

class Plugin;

// Context during Plugin::init: additionally registers routes, subscriptions and metrics.
class InitContext : public Context {
 public:
  InitContext(const trellis_host_api* host, const trellis_ctx* ctx, Plugin* plugin)
      : Context(host, ctx), plugin_(plugin) {}

  Status route(std::string_view method, std::string_view pattern, Handler handler);
  template <typename P>
  Status route(std::string_view method, std::string_view pattern, P* self,
               Status (P::*fn)(Context&, const Request&, Response&)) {
    return route(method, pattern, [self, fn](Context& c, const Request& q, Response& r) {
      return (self->*fn)(c, q, r);
    });
  }
  Status subscribe(std::string_view topic, EventHandler handler);
  // ABI 1.2: answers `method` of `service` (listed in the manifest's "provides").
  Status provide(std::string_view service, std::string_view method, ServiceHandler handler);
  // ABI 1.2: runs this plugin's jobs.
  Status onJob(JobHandler handler);
  // System plugins: a route on the admin port under /v1/x/<namespace>/<name>/, callable by
  // admin principals with `role` ("admin", "operator", "auditor", "billing") or admin.
  Status adminRoute(std::string_view method, std::string_view pattern, std::string_view role,
                    Handler handler);
  // System plugins: receives the usage stream of every tenant (see trellis_usage_fn).
  Status onUsage(UsageHandler handler);

  Result<trellis_metric_id> counter(std::string_view name, std::string_view help) {
    return define(TRELLIS_METRIC_COUNTER, name, help);
  }
  Result<trellis_metric_id> gauge(std::string_view name, std::string_view help) {
    return define(TRELLIS_METRIC_GAUGE, name, help);
  }
  Result<trellis_metric_id> histogram(std::string_view name, std::string_view help) {
    return define(TRELLIS_METRIC_HISTOGRAM, name, help);
  }

 private:
  // The C handler of every route and admin route: `user` is the plugin's Handler.
  static trellis_status runHandler(void* user, const trellis_ctx* ctx, const trellis_request* req,
                                   trellis_response* res);
  Result<trellis_metric_id> define(int32_t kind, std::string_view name, std::string_view help) {
    trellis_metric_id id = 0;
    trellis_status s = host()->metric_define(raw(), kind, toStr(name), toStr(help), &id);
    if (s != TRELLIS_OK) return detail::fromC(host(), raw(), s, "metric define failed");
    return id;
  }
  Plugin* plugin_;
};

// Base class of a C++ plugin. One instance per loaded plugin; handlers run concurrently,
// so member state needs its own synchronisation.
class Plugin {
 public:
  virtual ~Plugin() = default;
  // Register routes, subscriptions and metrics; read configuration. Non-OK refuses.
  virtual Status init(InitContext& ctx) = 0;
  virtual Status start(Context& ctx) { return Status::ok(); }
  virtual void stop(Context& ctx) {}

 private:
  friend class InitContext;
  // Registered callbacks; their addresses are the `user` pointers the host keeps.
  std::vector<std::unique_ptr<Handler>> handlers_;
  std::vector<std::unique_ptr<EventHandler>> event_handlers_;
  std::vector<std::unique_ptr<ServiceHandler>> service_handlers_;
  std::unique_ptr<JobHandler> job_handler_;
  std::unique_ptr<UsageHandler> usage_handler_;
};

inline Status Kv::putAsync(const Request& req, Response& res, std::string_view key,
                           std::string_view value, uint64_t expected_version, PutThen then) const {
  if (!TRELLIS_HOST_HAS(host_, kv_put_async)) {
    Context c(host_, ctx_);
    return then(c, req, res, put(key, value, expected_version));
  }
  auto owned = std::make_unique<PutThen>(std::move(then));
  trellis_status s = host_->kv_put_async(ctx_, toStr(key), toStr(value), expected_version,
                                         completePut, owned.get());
  if (s != TRELLIS_OK) return detail::fromC(host_, ctx_, s, "kv put failed");
  owned.release();  // the host calls completePut exactly once, which frees it
  return Status::ok();
}

inline trellis_status Kv::completePut(void* user, const trellis_ctx* ctx,
                                      const trellis_request* req, trellis_response* res,
                                      trellis_status status, uint64_t version) {
  std::unique_ptr<PutThen> then(static_cast<PutThen*>(user));
  const trellis_host_api* host = detail::hostSlot();
  return detail::guard(host, ctx, [&] {
    Context c(host, ctx);
    Request q(host, ctx, req);
    Response r(host, ctx, res);
    Result<uint64_t> put =
        status == TRELLIS_OK ? Result<uint64_t>(version)
                             : Result<uint64_t>(detail::fromC(host, ctx, status, "kv put failed"));
    return (*then)(c, q, r, std::move(put));
  });
}

inline trellis_status InitContext::runHandler(void* user, const trellis_ctx* ctx,
                                              const trellis_request* req, trellis_response* res) {
  const trellis_host_api* host = detail::hostSlot();
  return detail::guard(host, ctx, [&] {
    Context c(host, ctx);
    Request q(host, ctx, req);
    Response r(host, ctx, res);
    return (*static_cast<Handler*>(user))(c, q, r);
  });
}

inline Status InitContext::route(std::string_view method, std::string_view pattern,
                                 Handler handler) {
  auto owned = std::make_unique<Handler>(std::move(handler));
  Status s = detail::fromC(
      host(), raw(),
      host()->route_add(raw(), toStr(method), toStr(pattern), runHandler, owned.get()),
      "cannot register route " + std::string(method) + " " + std::string(pattern));
  if (s) plugin_->handlers_.push_back(std::move(owned));
  return s;
}

inline Status InitContext::adminRoute(std::string_view method, std::string_view pattern,
                                      std::string_view role, Handler handler) {
  if (!TRELLIS_HOST_HAS(host(), admin_route_add)) {
    return Status::unimplemented("the host does not offer admin_route_add");
  }
  auto owned = std::make_unique<Handler>(std::move(handler));
  Status s = detail::fromC(
      host(), raw(),
      host()->admin_route_add(raw(), toStr(method), toStr(pattern), toStr(role), runHandler,
                              owned.get()),
      "cannot register admin route " + std::string(method) + " " + std::string(pattern));
  if (s) plugin_->handlers_.push_back(std::move(owned));
  return s;
}

inline Status InitContext::subscribe(std::string_view topic, EventHandler handler) {
  auto owned = std::make_unique<EventHandler>(std::move(handler));
  auto thunk = [](void* user, const trellis_ctx* ctx, trellis_str t, trellis_str payload) {
    auto* h = static_cast<EventHandler*>(user);
    const trellis_host_api* host = detail::hostSlot();
    (void)detail::guard(host, ctx, [&] {
      Context c(host, ctx);
      (*h)(c, toView(t), toView(payload));
      return Status::ok();
    });
  };
  Status s =
      detail::fromC(host(), raw(), host()->event_subscribe(raw(), toStr(topic), thunk, owned.get()),
                    "cannot subscribe to " + std::string(topic));
  if (s) plugin_->event_handlers_.push_back(std::move(owned));
  return s;
}

inline Status InitContext::provide(std::string_view service, std::string_view method,
                                   ServiceHandler handler) {
  if (!TRELLIS_HOST_HAS(host(), service_provide)) {
    return Status::unimplemented("the host does not offer service_provide (needs ABI 1.2)");
  }
  auto owned = std::make_unique<ServiceHandler>(std::move(handler));
  auto thunk = [](void* user, const trellis_ctx* ctx, trellis_str request,
                  trellis_service_reply* reply) -> trellis_status {
    auto* h = static_cast<ServiceHandler*>(user);
    const trellis_host_api* host = detail::hostSlot();
    return detail::guard(host, ctx, [&]() -> Status {
      Context c(host, ctx);
      Result<std::string> answer = (*h)(c, toView(request));
      if (!answer) return answer.status();
      return detail::fromC(host, ctx, host->service_reply(ctx, reply, toStr(*answer)),
                           "service reply failed");
    });
  };
  Status s = detail::fromC(
      host(), raw(),
      host()->service_provide(raw(), toStr(service), toStr(method), thunk, owned.get()),
      "cannot provide " + std::string(service) + "." + std::string(method));
  if (s) plugin_->service_handlers_.push_back(std::move(owned));
  return s;
}

inline Status InitContext::onJob(JobHandler handler) {
  if (!TRELLIS_HOST_HAS(host(), job_handler)) {
    return Status::unimplemented("the host does not offer job_handler (needs ABI 1.2)");
  }
  auto owned = std::make_unique<JobHandler>(std::move(handler));
  auto thunk = [](void* user, const trellis_ctx* ctx, trellis_str name,
                  trellis_str payload) -> trellis_status {
    auto* h = static_cast<JobHandler*>(user);
    const trellis_host_api* host = detail::hostSlot();
    return detail::guard(host, ctx, [&] {
      Context c(host, ctx);
      return (*h)(c, toView(name), toView(payload));
    });
  };
  Status s = detail::fromC(host(), raw(), host()->job_handler(raw(), thunk, owned.get()),
                           "cannot set the job handler");
  if (s) plugin_->job_handler_ = std::move(owned);
  return s;
}

inline Status InitContext::onUsage(UsageHandler handler) {
  if (!TRELLIS_HOST_HAS(host(), usage_subscribe)) {
    return Status::unimplemented("the host does not offer usage_subscribe");
  }
  auto owned = std::make_unique<UsageHandler>(std::move(handler));
  auto thunk = [](void* user, const trellis_ctx* ctx, trellis_str records, uint32_t count,
                  trellis_str cursor) -> trellis_status {
    auto* h = static_cast<UsageHandler*>(user);
    const trellis_host_api* host = detail::hostSlot();
    return detail::guard(host, ctx, [&] {
      Context c(host, ctx);
      return (*h)(c, toView(records), count, toView(cursor));
    });
  };
  Status s = detail::fromC(host(), raw(), host()->usage_subscribe(raw(), thunk, owned.get()),
                           "cannot subscribe to usage");
  if (s) plugin_->usage_handler_ = std::move(owned);
  return s;
}

namespace detail {
template <typename P>
trellis_status onInit(const trellis_host_api* host, const trellis_ctx* ctx, void** state) {
  hostSlot() = host;
  return guard(host, ctx, [&] {
    auto plugin = std::make_unique<P>();
    InitContext ic(host, ctx, plugin.get());
    Status s = plugin->init(ic);
    if (s) *state = plugin.release();
    return s;
  });
}
inline trellis_status onStart(void* state, const trellis_ctx* ctx) {
  return guard(hostSlot(), ctx, [&] {
    Context c(hostSlot(), ctx);
    return static_cast<Plugin*>(state)->start(c);
  });
}
inline void onStop(void* state, const trellis_ctx* ctx) {
  (void)guard(hostSlot(), ctx, [&] {
    Context c(hostSlot(), ctx);
    static_cast<Plugin*>(state)->stop(c);
    return Status::ok();
  });
}
inline void onDestroy(void* state) noexcept {
  try {
    delete static_cast<Plugin*>(state);
  } catch (...) {  // a throwing destructor must not cross the boundary
  }
}
}  // namespace detail

}  // namespace trellis

// Defines the plugin's entry point for class `Class` (default-constructible, derived from
// trellis::Plugin). `id` and `version` must equal the manifest's.
#define TRELLIS_PLUGIN(Class, id, version)                                            \
  extern "C" TRELLIS_PLUGIN_EXPORT const trellis_plugin* trellis_plugin_entry(void) { \
    static const trellis_plugin descriptor = {sizeof(trellis_plugin),                 \
                                              TRELLIS_ABI_MAJOR,                      \
                                              TRELLIS_ABI_MINOR,                      \
                                              id,                                     \
                                              version,                                \
                                              &::trellis::detail::onInit<Class>,      \
                                              &::trellis::detail::onStart,            \
                                              &::trellis::detail::onStop,             \
                                              &::trellis::detail::onDestroy};         \
    return &descriptor;                                                               \
  }
