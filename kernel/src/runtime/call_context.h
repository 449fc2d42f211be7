// The opaque handles of the C ABI, defined on the host side. A trellis_ctx lives on the
// stack of the kernel code that calls into a plugin and is registered as "live" on that
// thread for exactly the duration of the call (CallScope); host functions refuse any ctx
// that is not live on the calling thread, so a plugin can neither forge one nor keep one.
#pragma once

#include <deque>
#include <forward_list>
#include <string>
#include <string_view>

#include "runtime/plugin_instance.h"
#include "services/usage/usage_record.h"
#include "trellis/kernel/http/message.h"
#include "trellis/kernel/http/router.h"
#include "trellis/plugin.h"
#include "trellis/tenants/registry.h"

namespace trellis::kernel::services {
class TraceContext;
}
namespace trellis::kernel::runtime {
class PluginCall;
}

namespace trellis::kernel::runtime {

// kService: a provider answering another plugin's service_call; kJob: a job run (ABI 1.2).
enum class Phase { kInit, kStart, kStop, kRequest, kEvent, kService, kJob };

// Marks `ctx` live on this thread until destruction. Nests (an event delivered while a
// request runs on the same thread is a separate, inner scope).
class CallScope {
 public:
  explicit CallScope(const trellis_ctx* ctx);
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

  static bool isLive(const trellis_ctx* ctx);
};

// The host table every plugin receives. Static storage; never changes.
const trellis_host_api* hostApi();

}  // namespace trellis::kernel::runtime

struct trellis_ctx {
  trellis::kernel::runtime::PluginInstance* plugin = nullptr;
  const trellis::tenants::TenantView* tenant = nullptr;  // null outside tenant calls
  std::string_view principal;   // id of the key that made the request; "" otherwise
  std::string_view request_id;  // of the request being handled; "" otherwise
  const trellis::kernel::services::TraceContext* trace = nullptr;  // null outside traced calls
  trellis::kernel::runtime::Phase phase = trellis::kernel::runtime::Phase::kInit;
  std::string error;  // last message from host->set_error
  // Per-request quota on host calls (tenant's max_host_calls); see admitCall().
  uint64_t host_calls = 0;
  uint64_t max_host_calls = UINT64_MAX;
  // Inside a service method: the calling plugin's id and the reply being built.
  std::string_view caller;
  trellis_service_reply* reply = nullptr;
  // Set when a host call was refused by a tenant quota, so the data plane can answer with
  // that quota's status (429 host calls, 507 storage) instead of a generic error.
  const char* refused_quota = nullptr;
  uint64_t refused_limit = 0;
  // What the services this call used measured, for its usage record (host_calls above).
  trellis::kernel::services::usage::Counters usage;
  // A data-plane route call on an event loop, which an asynchronous host call
  // (kv_put_async) suspends and resumes (runtime/plugin_call.h); null everywhere else.
  trellis::kernel::runtime::PluginCall* suspendable = nullptr;
  // Answers made for this call alone (a tenant's merged config), lent to the plugin until
  // the call returns. A list, so earlier answers stay where they are.
  std::forward_list<std::string> lent;
  std::string_view lend(std::string s) { return lent.emplace_front(std::move(s)); }
};

struct trellis_request {
  const trellis::kernel::http::Request* http = nullptr;
  const trellis::kernel::http::RouteMatch* match = nullptr;
  std::string_view path;
  std::string_view query;
  // Decoded values handed to the plugin as borrowed views; deque keeps them in place.
  mutable std::deque<std::string> scratch;
};

struct trellis_response {
  trellis::kernel::http::Response http;
};

struct trellis_service_reply {
  std::string bytes;
};
