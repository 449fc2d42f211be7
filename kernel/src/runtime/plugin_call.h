// The call stage of one data-plane request: the route handler, run through the C ABI, and
// — when it starts an asynchronous host call (kv_put_async) — that call's completion,
// resumed on the request's event loop, and so on until a callback returns with nothing
// pending. While a call is pending the request holds no thread. The ctx, request and
// response the plugin sees are the same objects throughout, so the tenant's host-call
// quota and the usage counters span the whole call.
//
//   auto call = std::make_shared<PluginCall>(site, peer.post, {table, snapshot});
//   call->run([&](PluginCall& c, trellis_status s) { /* answer from c.response() */ });
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/call_context.h"
#include "runtime/plugin_manager.h"
#include "services/trace/trace_context.h"
#include "services/usage/usage_record.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"
#include "trellis/plugin.h"
#include "trellis/status.hpp"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::runtime {

class PluginCall : public std::enable_shared_from_this<PluginCall> {
 public:
  // What the plugin sees of the request. `target`, `tenant` and `req` must outlive the call
  // (the caller keeps them alive through `keep_alive` and by answering only in `conclude`).
  struct Site {
    const RouteTarget* target = nullptr;
    const tenants::TenantView* tenant = nullptr;
    std::string principal;
    const http::Request* req = nullptr;
    http::RouteMatch match;
    std::string_view path;
    std::string_view query;
    std::string request_id;
    services::TraceContext trace;
  };
  // Runs once, when the call has ended: `status` is what the handler or the last
  // completion returned; the response and the ctx (error, refused quota) are the call's.
  using Conclude = std::function<void(PluginCall& call, trellis_status status)>;
  using Post = std::function<void(std::function<void()>)>;

  // What an asynchronous host call came to, as a host call returns it.
  struct Outcome {
    trellis_status status = TRELLIS_OK;
    uint64_t version = 0;
    std::string error;                    // last_error in the completion
    const char* refused_quota = nullptr;  // a tenant quota that refused it (refuseQuota)
    uint64_t refused_limit = 0;
  };

  // `post` runs work on the request's event loop; null for a route that runs on the
  // blocking pool, which must not suspend. `keep_alive` holds what `site` points into.
  PluginCall(Site site, Post post, std::vector<std::shared_ptr<const void>> keep_alive);
  // A completion still owed (its resumption was dropped: the server stopped) runs here with
  // TRELLIS_UNAVAILABLE, so that it runs exactly once, as the ABI promises.
  ~PluginCall();
  PluginCall(const PluginCall&) = delete;
  PluginCall& operator=(const PluginCall&) = delete;

  // Runs the handler. `conclude` runs before this returns, or later on the event loop.
  void run(Conclude conclude);

  // For kv_put_async: OK if a call may start now, else INVALID saying why.
  Status canSuspend() const;
  // Records `done` as the completion of the call being started; the returned function
  // (callable once, from any thread) resumes the request on its event loop.
  std::function<void(Outcome)> suspend(trellis_kv_put_done_fn done, void* user);
  // For a handler the host finishes off the event loop (a route of a plugin in a worker
  // process): the request then waits on no event-loop thread. The returned function
  // (callable once, from any thread) ends the call with the handler's status; the ctx and
  // response are left as the handler left them.
  std::function<void(trellis_status)> suspendOffLoop();

  const Site& site() const { return site_; }
  const trellis_ctx& ctx() const { return ctx_; }
  http::Response& response() { return response_.http; }
  // What the call used, for its usage record.
  services::usage::Counters counters() const;

 private:
  struct Completion {
    trellis_kv_put_done_fn done = nullptr;  // null for suspendOffLoop: no plugin code to run
    void* user = nullptr;
  };
  void resume(const Outcome& outcome);
  // After a callback returned `status`: wait for the call it started, or end.
  void settle(trellis_status status);
  // Runs a completion after the answer went: an empty request, a response nobody sees.
  void runLate(Completion completion, const Outcome& outcome);

  Site site_;
  const Post post_;
  const std::vector<std::shared_ptr<const void>> keep_alive_;
  trellis_ctx ctx_;
  trellis_request request_;
  trellis_response response_;
  uint64_t lua_instructions_ = 0;
  Conclude conclude_;                  // empty once run
  std::optional<Completion> pending_;  // the completion of the call in flight
};

}  // namespace trellis::kernel::runtime
