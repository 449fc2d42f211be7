/*
 * Trellis plugin ABI, version 1.2 — the only contract between trellisd and a plugin.
 *
 * 1.0: the original table. 1.1: ctx_principal, tenant self-service (tenant_info,
 * tenant_key*) and last_error. 1.2: platform services — handles, trace context,
 * inter-plugin services, jobs and timers, egress HTTP and streams (TCP/TLS), blob storage,
 * system plugins (audit, admin routes, usage stream), asynchronous KV writes
 * (kv_put_async), Lua scripts in the kernel's sandbox (script_load, script_call) and
 * sealing under the operator's seal key (key_wrap, key_unwrap).
 *
 * A plugin is a shared library that exports exactly one symbol, `trellis_plugin_entry`,
 * returning a static descriptor. The host hands its API *in* through a table of function
 * pointers at init; the plugin links nothing of the host. Everything here is plain C99 so
 * a plugin can be written in any language with a C FFI.
 *
 *   #include <trellis/plugin.h>
 *
 *   static const trellis_host_api* host;
 *
 *   static trellis_status hello(void* user, const trellis_ctx* ctx,
 *                               const trellis_request* req, trellis_response* res) {
 *     (void)user; (void)req;
 *     host->res_set_status(ctx, res, 200);
 *     return host->res_set_body(ctx, res, TRELLIS_STR("hi\n"));
 *   }
 *
 *   static trellis_status on_init(const trellis_host_api* api, const trellis_ctx* ctx,
 *                                 void** state) {
 *     host = api; *state = NULL;
 *     return host->route_add(ctx, TRELLIS_STR("GET"), TRELLIS_STR("/hi"), hello, NULL);
 *   }
 *
 *   TRELLIS_PLUGIN_EXPORT const trellis_plugin* trellis_plugin_entry(void) {
 *     static const trellis_plugin plugin = {
 *       sizeof(trellis_plugin), TRELLIS_ABI_MAJOR, TRELLIS_ABI_MINOR,
 *       "acme/hi", "1.0.0", on_init, NULL, NULL, NULL};
 *     return &plugin;
 *   }
 *
 * Compatibility rules
 *   - Every struct that crosses the boundary begins with struct_size, abi_major, abi_minor
 *     and only ever grows at its end. A reader checks struct_size before touching a field
 *     that a later minor version appended.
 *   - The host accepts a plugin whose abi_major equals its own and whose abi_minor is not
 *     greater than its own. A NULL function slot in the host table means "not available".
 *   - Status codes may grow: a plugin must treat an unknown code like TRELLIS_INTERNAL.
 *
 * Memory, lifetime and threading, stated once here and repeated where it matters
 *   - trellis_str values passed *to* a plugin are BORROWED: valid until the callback that
 *     received them returns. Copy anything you keep.
 *   - trellis_str values passed *to* the host are copied by the host before it returns.
 *   - trellis_buf values filled *by* the host are OWNED by the plugin and must be released
 *     with host->buf_free().
 *   - A trellis_ctx is valid only during the callback that received it, on that thread.
 *     The host refuses (TRELLIS_INVALID) a ctx that is not live on the calling thread, so
 *     a plugin cannot act for a tenant other than the one it was called for.
 *   - No C++ exception and no longjmp may cross this boundary in either direction.
 *   - No pointer into host memory outlives a call, so the same plugin could later run in a
 *     separate worker process with this table backed by IPC.
 */
#ifndef TRELLIS_PLUGIN_H_
#define TRELLIS_PLUGIN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TRELLIS_ABI_MAJOR 1
#define TRELLIS_ABI_MINOR 2

#if defined(_WIN32)
#define TRELLIS_PLUGIN_EXPORT __declspec(dllexport)
#else
#define TRELLIS_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

/* ---------------------------------------------------------------------------------------
 * Basic types
 * ------------------------------------------------------------------------------------- */

/* Status of every fallible call. Stored as int32_t so its size never depends on the
 * compiler; plugins must tolerate values not listed here (treat them as INTERNAL). */
typedef int32_t trellis_status;
enum {
  TRELLIS_OK = 0,
  TRELLIS_INVALID = 1,           /* bad argument, or a call made at the wrong time */
  TRELLIS_NOT_FOUND = 2,         /* no such key, header, parameter or config entry */
  TRELLIS_PERMISSION_DENIED = 3, /* capability not granted to this plugin/tenant */
  TRELLIS_QUOTA_EXCEEDED = 4,    /* a tenant quota refused the call */
  TRELLIS_UNAVAILABLE = 5,       /* a dependency (storage, network) is down; retry later */
  TRELLIS_TIMEOUT = 6,
  TRELLIS_CONFLICT = 7,      /* compare-and-set version mismatch, duplicate route */
  TRELLIS_UNIMPLEMENTED = 8, /* the host or plugin does not offer this */
  TRELLIS_INTERNAL = 9       /* a bug; details are in the message / log */
};

/* A UTF-8 byte range, not NUL-terminated. Ownership is stated at each use. */
typedef struct trellis_str {
  const char* ptr;
  size_t len;
} trellis_str;

/* Builds a trellis_str from a string literal. */
#ifdef __cplusplus
#define TRELLIS_STR(literal) (trellis_str{(literal), sizeof(literal) - 1})
#else
#define TRELLIS_STR(literal) ((trellis_str){(literal), sizeof(literal) - 1})
#endif

/* Memory the host allocated and handed to the plugin. OWNERSHIP: the plugin's; release it
 * with host->buf_free(). Releasing an empty buffer (ptr == NULL) is a no-op. */
typedef struct trellis_buf {
  char* ptr;
  size_t len;
} trellis_buf;

/* Opaque handles. OWNERSHIP: the host's. LIFETIME: the callback that received them. */
typedef struct trellis_ctx trellis_ctx;           /* names plugin + tenant of this call */
typedef struct trellis_request trellis_request;   /* the inbound HTTP request */
typedef struct trellis_response trellis_response; /* the response being built */

/* Log levels for host->log. */
enum {
  TRELLIS_LOG_TRACE = 0,
  TRELLIS_LOG_DEBUG = 1,
  TRELLIS_LOG_INFO = 2,
  TRELLIS_LOG_WARN = 3,
  TRELLIS_LOG_ERROR = 4
};

/* Metric kinds for host->metric_define. */
enum {
  TRELLIS_METRIC_COUNTER = 0,  /* metric_record adds a non-negative amount */
  TRELLIS_METRIC_GAUGE = 1,    /* metric_record sets the value */
  TRELLIS_METRIC_HISTOGRAM = 2 /* metric_record observes one sample (seconds, bytes …) */
};
typedef uint32_t trellis_metric_id;

/* KV compare-and-set: pass as expected_version. */
#define TRELLIS_KV_ANY_VERSION UINT64_MAX /* write unconditionally */
#define TRELLIS_KV_ABSENT 0u              /* succeed only if the key does not exist */

/* ---------------------------------------------------------------------------------------
 * Callbacks the plugin implements and registers with the host
 * ------------------------------------------------------------------------------------- */

/* Route handler. THREADING: called concurrently from several host threads, for several
 * tenants; routes listed as blocking in the manifest run on the host's blocking pool,
 * the others on an event-loop thread and must not block. `user` is the pointer given to
 * route_add. Returning non-OK makes the host answer problem+json with the status's HTTP
 * code (INVALID 400, NOT_FOUND 404, PERMISSION_DENIED 403, CONFLICT 409, others 5xx);
 * the plugin's message (host->set_error) is logged (as an error for 5xx only), never sent.
 * To give the client a detail, or any 4xx/5xx such as 413, use host->res_problem. */
typedef trellis_status (*trellis_handler_fn)(void* user, const trellis_ctx* ctx,
                                             const trellis_request* req, trellis_response* res);

/* Event delivery. THREADING: the host's event thread, one event at a time per
 * subscription. `topic` and `payload` are BORROWED for the call. */
typedef void (*trellis_event_fn)(void* user, const trellis_ctx* ctx, trellis_str topic,
                                 trellis_str payload);

/* KV listing visitor. Key and value are BORROWED for the call. Return non-zero to stop. */
typedef int (*trellis_kv_visit_fn)(void* user, trellis_str key, trellis_str value,
                                   uint64_t version);

/* Header visitor for req_headers. Name and value are BORROWED. Return non-zero to stop. */
typedef int (*trellis_header_visit_fn)(void* user, trellis_str name, trellis_str value);

/* ---------------------------------------------------------------------------------------
 * ABI 1.2 types
 * ------------------------------------------------------------------------------------- */

/* A host object the plugin holds across calls (an HTTP response being read, a blob being
 * written or read, an egress stream). OWNERSHIP: the plugin's, released with
 * host->handle_close (or by the call that finishes it, e.g. blob_commit). A handle belongs
 * to the plugin and the tenant of the ctx that opened it: used by another plugin, under
 * another tenant's ctx or after release, every call answers TRELLIS_INVALID. The host
 * reclaims what a plugin leaves open when it stops. 0 is never a valid handle. */
typedef uint64_t trellis_handle;
#define TRELLIS_HANDLE_NONE ((trellis_handle)0)

/* The reply a service method builds (see trellis_service_fn). OWNERSHIP: the host's;
 * LIFETIME: the handler call. */
typedef struct trellis_service_reply trellis_service_reply;

/* A method a provider offers (registered with host->service_provide in on_init).
 * THREADING: called concurrently from any host thread that runs a consumer's call.
 * `ctx` carries the CALLER's tenant and trace context; host->ctx_caller names the calling
 * plugin. `request` is BORROWED for the call. Set the answer with host->service_reply;
 * a non-OK status reaches the caller as that status, with the message set by
 * host->set_error prefixed by the service and method. */
typedef trellis_status (*trellis_service_fn)(void* user, const trellis_ctx* ctx,
                                             trellis_str request, trellis_service_reply* reply);

/* Kinds of schedule for trellis_job_spec.kind. */
enum {
  TRELLIS_JOB_ONCE = 0,  /* once, delay_ms after scheduling */
  TRELLIS_JOB_EVERY = 1, /* every interval_ms; the first run after delay_ms (0 = interval) */
  TRELLIS_JOB_CRON = 2   /* at the times a 5-field cron expression names, in UTC */
};
/* trellis_job_spec.flags */
#define TRELLIS_JOB_DURABLE 1u /* persisted: survives restarts, retried, dead-lettered */

/* A job to schedule for the ctx's tenant. Every pointer is BORROWED for the call and
 * copied by the host. Fields may be appended; set struct_size = sizeof(trellis_job_spec). */
typedef struct trellis_job_spec {
  uint32_t struct_size;
  int32_t kind;          /* TRELLIS_JOB_ONCE, _EVERY or _CRON */
  trellis_str name;      /* 1..128 bytes of [A-Za-z0-9._:-]; unique per (tenant, plugin):
                          * scheduling an existing name replaces that job */
  uint64_t delay_ms;     /* ONCE and EVERY: time until the first run */
  uint64_t interval_ms;  /* EVERY: >= 1000 */
  trellis_str cron;      /* CRON: "minute hour day-of-month month day-of-week", UTC */
  trellis_str payload;   /* up to 64 KiB, handed to the job handler on every run */
  uint32_t flags;        /* TRELLIS_JOB_DURABLE */
  uint32_t max_attempts; /* durable: runs of one firing before it is dead-lettered
                          * (0 = host default, 5); retries back off exponentially */
  uint32_t budget_ms;    /* a run's time budget (0 = host default) */
} trellis_job_spec;

/* Runs a job (registered with host->job_handler in on_init). THREADING: a host pool
 * thread, never an event loop; one run of a given job at a time. `ctx` carries the job's
 * tenant and a span of the trace that scheduled it; `name` and `payload` are BORROWED. A non-OK
 * status fails the run: durable jobs are retried with backoff, then dead-lettered. */
typedef trellis_status (*trellis_job_fn)(void* user, const trellis_ctx* ctx, trellis_str name,
                                         trellis_str payload);

/* An outbound HTTP/1.1 request (host->http_send). Every pointer is BORROWED for the call.
 * Fields may be appended; set struct_size = sizeof(trellis_http_request). */
typedef struct trellis_http_request {
  uint32_t struct_size;
  trellis_str method;         /* "GET", "POST", … */
  trellis_str url;            /* absolute http:// or https:// URL */
  const trellis_str* headers; /* 2 * header_count strings: name, value, name, value … */
  size_t header_count;
  trellis_str body;
  uint32_t connect_timeout_ms;    /* 0 = host default */
  uint32_t first_byte_timeout_ms; /* 0 = host default */
  uint32_t total_timeout_ms;      /* 0 = host default */
  uint32_t max_redirects;         /* 0 = redirects are answered, not followed; at most 5 */
  uint64_t max_response_bytes;    /* 0 = host default; larger responses fail */
} trellis_http_request;

/* An outbound TCP or TLS byte stream (host->stream_connect). Every pointer is BORROWED for
 * the call. Fields may be appended; set struct_size = sizeof(trellis_stream_options). */
typedef struct trellis_stream_options {
  uint32_t struct_size;
  trellis_str url;             /* "tcp://host:port" or "tls://host:port"; TLS verifies the
                                * server's certificate and name against the host's CA bundle
                                * (egress.ca_file, else the system store) */
  uint32_t connect_timeout_ms; /* 0 = host default 5000: resolve + TCP + TLS handshake */
  uint32_t io_timeout_ms;      /* 0 = host default 10000: each stream_write / stream_read */
} trellis_stream_options;

/* Options for host->script_load. BORROWED for the call; may be NULL (every default).
 * Fields may be appended; set struct_size = sizeof(trellis_script_options). A budget of 0
 * means the host default; every budget is capped by the operator's for this plugin. */
typedef struct trellis_script_options {
  uint32_t struct_size;
  trellis_str name;          /* the chunk name in messages ("rule.lua"); "" = "script" */
  uint64_t max_instructions; /* VM instructions per call (default 1,000,000) */
  uint64_t max_memory_bytes; /* the script's whole state (default 8 MiB) */
  uint32_t max_wall_ms;      /* per call (default 50 ms) */
} trellis_script_options;

/* ---------------------------------------------------------------------------------------
 * System plugins: the usage stream
 * ------------------------------------------------------------------------------------- */

/* A batch of usage records for a subscribed system plugin (host->usage_subscribe).
 * THREADING: the subscription's own host thread, never an event loop; one batch at a time.
 * `records`: `count` JSON objects, one per line ("\n" after each), in journal order, which
 * keeps each tenant's records in order. Delivery is at least once: a record may come again
 * (deduplicate on its "event_id"). `cursor` names the end of this batch: pass it to
 * host->usage_ack once the records are safe on your side (inside this call or later).
 * Batches keep coming while unacknowledged ones are few; what stays unacknowledged is
 * delivered again. Returning non-OK means "not taken": the host backs off and delivers again
 * from the last acknowledged cursor. `records` and `cursor` are BORROWED for the call. */
typedef trellis_status (*trellis_usage_fn)(void* user, const trellis_ctx* ctx, trellis_str records,
                                           uint32_t count, trellis_str cursor);

/* A system plugin acting for one tenant (host->act_for_tenant). `tenant_ctx` is a ctx for
 * that tenant, live only during this call: through it the plugin reaches exactly what it
 * reaches in the tenant's own requests (its storage for (tenant, this plugin), the tenant's
 * grants and quotas) and nothing of other plugins. Return its status. */
typedef trellis_status (*trellis_tenant_fn)(void* user, const trellis_ctx* tenant_ctx);

/* Completion of host->kv_put_async. THREADING: the event loop of the request that started
 * the call. `ctx`, `req` and `res` are live for this call exactly as in a route handler:
 * set the response, call host functions, or start another asynchronous call. `status` and
 * `version` are what kv_put would have returned (last_error holds its message). Return
 * what a route handler returns. */
typedef trellis_status (*trellis_kv_put_done_fn)(void* user, const trellis_ctx* ctx,
                                                 const trellis_request* req, trellis_response* res,
                                                 trellis_status status, uint64_t version);

/* Options for host->blob_open_write. BORROWED for the call; may be NULL (defaults). */
typedef struct trellis_blob_write_options {
  uint32_t struct_size;
  trellis_str content_type;  /* "" = application/octet-stream */
  trellis_str metadata_json; /* a JSON object of string values, "" = none */
} trellis_blob_write_options;

/* ---------------------------------------------------------------------------------------
 * The host API table (provided by trellisd)
 *
 * OWNERSHIP: the host's; LIFETIME: from on_init until on_destroy returns; THREADING: every
 * function is safe to call from any thread that is inside a callback with a live ctx.
 * Append-only: abi_minor N+1 may add slots at the end, never move or remove one.
 * ------------------------------------------------------------------------------------- */
typedef struct trellis_host_api {
  uint32_t struct_size;
  uint16_t abi_major;
  uint16_t abi_minor;

  /* -- memory ----------------------------------------------------------------------- */
  /* Releases a buffer the host filled; sets buf->ptr = NULL, buf->len = 0. */
  void (*buf_free)(trellis_buf* buf);

  /* -- diagnostics ------------------------------------------------------------------ */
  /* Writes one log line tagged with plugin id and tenant. `msg` is copied. */
  void (*log)(const trellis_ctx* ctx, int32_t level, trellis_str msg);
  /* Attaches a human-readable message to the status the plugin is about to return. */
  void (*set_error)(const trellis_ctx* ctx, trellis_str msg);

  /* -- identity and configuration --------------------------------------------------- */
  /* Tenant of this call ("" during init/start/stop). `out` is BORROWED for the callback. */
  trellis_status (*ctx_tenant)(const trellis_ctx* ctx, trellis_str* out);
  /* Plugin id ("namespace/name") of this call. `out` is BORROWED for the callback. */
  trellis_status (*ctx_plugin)(const trellis_ctx* ctx, trellis_str* out);
  /* Reads the plugin's configuration from trellis.yaml. `path` is a dotted path
   * ("" = everything, "limits.max" = nested). Scalars come back as their text, maps and
   * lists as JSON. `out` is BORROWED for the callback. NOT_FOUND if the path is absent.
   * Under a tenant's ctx, that tenant's overrides of the keys the manifest's
   * "tenant_config" declares are laid over it (objects merge per key), and a change to
   * them is seen by the next call, without a restart. */
  trellis_status (*config_get)(const trellis_ctx* ctx, trellis_str path, trellis_str* out);

  /* -- routes (only during on_init) ------------------------------------------------- */
  /* Registers `handler` for `method` ("GET", "POST", …, or "*" for any) and `pattern`
   * ("/hello/{name}"; a trailing "{rest...}" matches the remainder). CONFLICT if the
   * plugin already registered the same method and pattern. `user` is kept by the host and
   * passed back untouched; it must stay valid until on_destroy. */
  trellis_status (*route_add)(const trellis_ctx* ctx, trellis_str method, trellis_str pattern,
                              trellis_handler_fn handler, void* user);

  /* -- request (read-only; all `out` values BORROWED for the handler call) ---------- */
  trellis_status (*req_method)(const trellis_ctx* ctx, const trellis_request* req,
                               trellis_str* out);
  /* Path without the query string, percent-decoding NOT applied. */
  trellis_status (*req_path)(const trellis_ctx* ctx, const trellis_request* req, trellis_str* out);
  /* Raw query string without '?', "" if none. */
  trellis_status (*req_query)(const trellis_ctx* ctx, const trellis_request* req, trellis_str* out);
  /* First value of a query parameter, percent-decoded. NOT_FOUND if absent. */
  trellis_status (*req_query_param)(const trellis_ctx* ctx, const trellis_request* req,
                                    trellis_str name, trellis_str* out);
  /* Value of a `{name}` segment of the matched route pattern, percent-decoded. */
  trellis_status (*req_path_param)(const trellis_ctx* ctx, const trellis_request* req,
                                   trellis_str name, trellis_str* out);
  /* First header with this name (case-insensitive). NOT_FOUND if absent. */
  trellis_status (*req_header)(const trellis_ctx* ctx, const trellis_request* req, trellis_str name,
                               trellis_str* out);
  /* Visits every header in arrival order. */
  trellis_status (*req_headers)(const trellis_ctx* ctx, const trellis_request* req,
                                trellis_header_visit_fn visit, void* user);
  trellis_status (*req_body)(const trellis_ctx* ctx, const trellis_request* req, trellis_str* out);

  /* -- response (every input is copied) -------------------------------------------- */
  /* 100..599; INVALID otherwise. Default is 200. */
  trellis_status (*res_set_status)(const trellis_ctx* ctx, trellis_response* res, int32_t status);
  /* Adds a header; INVALID for names/values containing CR, LF or NUL, or for headers the
   * host owns (Content-Length, Transfer-Encoding, Connection). */
  trellis_status (*res_add_header)(const trellis_ctx* ctx, trellis_response* res, trellis_str name,
                                   trellis_str value);
  trellis_status (*res_set_body)(const trellis_ctx* ctx, trellis_response* res, trellis_str body);
  trellis_status (*res_append_body)(const trellis_ctx* ctx, trellis_response* res,
                                    trellis_str chunk);

  /* -- key/value store, scoped by the host to (tenant, plugin) ---------------------- */
  /* Keys are 1..1024 arbitrary bytes; values up to 1 MiB. A tenant-less ctx (init/start)
   * gets INVALID: every piece of plugin data belongs to a tenant — except for a system
   * plugin (scope "system", granted), whose tenant-less ctx (init, start, admin routes)
   * reaches storage of its own that no tenant sees and no tenant quota counts.
   * On OK `value` is OWNED by the plugin (buf_free it); `version` may be NULL. */
  trellis_status (*kv_get)(const trellis_ctx* ctx, trellis_str key, trellis_buf* value,
                           uint64_t* version);
  /* Writes `value`. expected_version: TRELLIS_KV_ANY_VERSION, TRELLIS_KV_ABSENT, or the
   * version last read; CONFLICT if it no longer matches. `new_version` may be NULL. */
  trellis_status (*kv_put)(const trellis_ctx* ctx, trellis_str key, trellis_str value,
                           uint64_t expected_version, uint64_t* new_version);
  /* Deletes; NOT_FOUND if absent, CONFLICT on version mismatch. */
  trellis_status (*kv_delete)(const trellis_ctx* ctx, trellis_str key, uint64_t expected_version);
  /* Visits up to `limit` entries (0 = host maximum, 1000) whose key starts with `prefix`
   * and sorts after `start_after` (pass "" to begin), in byte order. */
  trellis_status (*kv_list)(const trellis_ctx* ctx, trellis_str prefix, trellis_str start_after,
                            uint32_t limit, trellis_kv_visit_fn visit, void* user);

  /* -- events ------------------------------------------------------------------------ */
  /* Publishes `payload` (any bytes, JSON by convention) on `topic` for the ctx's tenant.
   * Delivery is asynchronous and at-most-once. */
  trellis_status (*event_publish)(const trellis_ctx* ctx, trellis_str topic, trellis_str payload);
  /* Subscribes (only during on_init). `topic` is exact, or ends in ".*" for a prefix. */
  trellis_status (*event_subscribe)(const trellis_ctx* ctx, trellis_str topic, trellis_event_fn fn,
                                    void* user);

  /* -- clock ------------------------------------------------------------------------- */
  uint64_t (*clock_unix_ms)(const trellis_ctx* ctx);      /* wall clock */
  uint64_t (*clock_monotonic_ns)(const trellis_ctx* ctx); /* for durations */

  /* -- metrics (exported on the admin /metrics with a plugin="<id>" label) ----------- */
  /* Defines a metric (only during on_init). Name: [a-z_][a-z0-9_]*; the host prefixes it
   * with "trellis_plugin_". Histograms use the host's default latency buckets. */
  trellis_status (*metric_define)(const trellis_ctx* ctx, int32_t kind, trellis_str name,
                                  trellis_str help, trellis_metric_id* out);
  trellis_status (*metric_record)(const trellis_ctx* ctx, trellis_metric_id id, double value);

  /* == ABI 1.1 ======================================================================= */
  /* Id of the API key that authenticated the request ("" outside a request). BORROWED:
   * valid for the callback. An id, never the secret: fine to log and show. */
  trellis_status (*ctx_principal)(const trellis_ctx* ctx, trellis_str* out);

  /* -- tenant self-service: the calling tenant's own account, nothing else ------------ */
  /* Each needs a tenant ctx (request or event handler; INVALID otherwise) and a
   * capability: tenant_info "tenant.read", the key calls "tenant.keys". Results are JSON
   * in a buffer OWNED by the plugin (buf_free it); fields may grow, so ignore unknown ones.
   *
   * tenant_info: {"id","plan","labels":{},"quotas":{name: number},
   *   "usage":{"in_flight","admitted","rejected","storage_bytes"}}.
   * Quotas left unlimited are absent. */
  trellis_status (*tenant_info)(const trellis_ctx* ctx, trellis_buf* out_json);
  /* [{"id","created_at_ms","expires_at_ms"?,"revoked_at_ms"?,"active"}], oldest first. */
  trellis_status (*tenant_keys_list)(const trellis_ctx* ctx, trellis_buf* out_json);
  /* Creates a key for the ctx's tenant, within its plan: QUOTA_EXCEEDED if it already
   * holds max_api_keys active keys; INVALID if ttl_seconds exceeds max_key_ttl_seconds.
   * ttl_seconds 0 = the plan's max_key_ttl_seconds, or never expiring if it has none.
   * out_json: {"id","key","created_at_ms","expires_at_ms"?}; "key" is the secret, which
   * the host never shows again: hand it to the caller, never log it. */
  trellis_status (*tenant_key_create)(const trellis_ctx* ctx, uint64_t ttl_seconds,
                                      trellis_buf* out_json);
  /* Replaces the key that made this request: a new key (ttl_seconds and out_json as for
   * tenant_key_create, not counted against max_api_keys since one goes) and the calling
   * key revoked, atomically: both happen or neither. INVALID outside a request. */
  trellis_status (*tenant_key_rotate)(const trellis_ctx* ctx, uint64_t ttl_seconds,
                                      trellis_buf* out_json);
  /* Revokes one of the tenant's own keys (NOT_FOUND for any other id, whoever owns it).
   * CONFLICT if it is the tenant's last active key: a tenant cannot lock itself out. */
  trellis_status (*tenant_key_revoke)(const trellis_ctx* ctx, trellis_str key_id);

  /* -- errors ------------------------------------------------------------------------ */
  /* The message of the last host call on `ctx` that failed ("" if none). BORROWED: valid
   * until the next host call on this ctx. Messages are meant for the tenant and operator
   * (they name the quota, key or field at fault) and never hold secrets. */
  trellis_status (*last_error)(const trellis_ctx* ctx, trellis_str* out);

  /* == ABI 1.2 ======================================================================= */
  /* -- handles ----------------------------------------------------------------------- */
  /* Releases a handle (see trellis_handle); an unfinished operation behind it is
   * abandoned (a blob write is aborted). INVALID for a handle this plugin and tenant do
   * not hold. */
  trellis_status (*handle_close)(const trellis_ctx* ctx, trellis_handle handle);

  /* -- trace context (W3C Trace Context) --------------------------------------------- */
  /* The call's `traceparent` ("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>") and
   * `tracestate` ("" if none). On the data plane it continues the caller's trace when the
   * request carried a valid traceparent, else a new one; service calls, jobs and events
   * carry the trace of the call that caused them. Both BORROWED for the callback;
   * `tracestate` may be NULL. NOT_FOUND outside such a call (init, start, stop). */
  trellis_status (*ctx_trace)(const trellis_ctx* ctx, trellis_str* traceparent,
                              trellis_str* tracestate);

  /* -- inter-plugin services ---------------------------------------------------------- */
  /* Registers the handler of `method` (1..64 bytes [A-Za-z0-9._-]) of `service`, which the
   * manifest must list in "provides". Only during on_init. `user` stays the plugin's. */
  trellis_status (*service_provide)(const trellis_ctx* ctx, trellis_str service, trellis_str method,
                                    trellis_service_fn fn, void* user);
  /* Calls `method` of `service` (needs capability "service:<name>"), for the ctx's tenant
   * and trace. On OK `response` is OWNED by the plugin (buf_free it). The provider's
   * status comes back as is; UNAVAILABLE if no active provider serves the service now;
   * NOT_FOUND for a method it does not offer; INVALID past 8 nested calls. Request and
   * response are up to 1 MiB each. */
  trellis_status (*service_call)(const trellis_ctx* ctx, trellis_str service, trellis_str method,
                                 trellis_str request, trellis_buf* response);
  /* Sets the bytes a service method answers (copied). Only inside that method. */
  trellis_status (*service_reply)(const trellis_ctx* ctx, trellis_service_reply* reply,
                                  trellis_str response);
  /* Inside a service method: the plugin id of the caller. BORROWED for the callback.
   * NOT_FOUND outside a service method. */
  trellis_status (*ctx_caller)(const trellis_ctx* ctx, trellis_str* out);

  /* -- jobs and timers ---------------------------------------------------------------- */
  /* Sets the plugin's job handler. Only during on_init. */
  trellis_status (*job_handler)(const trellis_ctx* ctx, trellis_job_fn fn, void* user);
  /* Schedules a job for the ctx's tenant (needs capability "jobs" and a tenant ctx).
   * QUOTA_EXCEEDED past the tenant's max_jobs; INVALID names the field at fault.
   * A system plugin may also schedule from a tenant-less ctx (start, admin routes, its
   * own jobs): such a job is the plugin's own, counts against no tenant and runs with a
   * tenant-less ctx (its storage of its own) while the operator's system grant stands. */
  trellis_status (*job_schedule)(const trellis_ctx* ctx, const trellis_job_spec* spec);
  /* Cancels the ctx tenant's job `name` (a system plugin's own from a tenant-less ctx);
   * NOT_FOUND if there is none. */
  trellis_status (*job_cancel)(const trellis_ctx* ctx, trellis_str name);

  /* -- egress HTTP (capability "egress"; destinations allowed by manifest and grant) --- */
  /* Sends a request and waits for the response head; `*response` is a handle to read it.
   * Only where blocking is allowed (blocking routes, jobs, event handlers): INVALID on an
   * event loop. PERMISSION_DENIED names the rule that refused the destination. */
  trellis_status (*http_send)(const trellis_ctx* ctx, const trellis_http_request* request,
                              trellis_handle* response);
  trellis_status (*http_response_status)(const trellis_ctx* ctx, trellis_handle response,
                                         int32_t* status);
  /* Visits the response headers in arrival order (BORROWED for the visit). */
  trellis_status (*http_response_headers)(const trellis_ctx* ctx, trellis_handle response,
                                          trellis_header_visit_fn visit, void* user);
  /* Copies up to `cap` body bytes into `buf`; *len = 0 at the end of the body. */
  trellis_status (*http_response_read)(const trellis_ctx* ctx, trellis_handle response, char* buf,
                                       size_t cap, size_t* len);

  /* -- blob storage, scoped by the host to (tenant, plugin) (capability "blobs") ------- */
  /* Keys are 1..1024 bytes, no NUL, no ".." segment. Writes are streamed: open, write
   * chunks, then commit (atomic: the object appears whole or not at all) or handle_close
   * (abort). QUOTA_EXCEEDED at commit past the tenant's max_storage_bytes. */
  trellis_status (*blob_open_write)(const trellis_ctx* ctx, trellis_str key,
                                    const trellis_blob_write_options* options,
                                    trellis_handle* writer);
  trellis_status (*blob_write)(const trellis_ctx* ctx, trellis_handle writer, trellis_str chunk);
  /* Commits and releases the writer. `head_json` (may be NULL) is OWNED by the plugin:
   * {"key","size","sha256","content_type","metadata":{},"created_at_ms"}. */
  trellis_status (*blob_commit)(const trellis_ctx* ctx, trellis_handle writer,
                                trellis_buf* head_json);
  /* Opens bytes [offset, offset + length) (length UINT64_MAX = to the end) for reading. */
  trellis_status (*blob_open_read)(const trellis_ctx* ctx, trellis_str key, uint64_t offset,
                                   uint64_t length, trellis_handle* reader);
  /* Copies up to `cap` bytes into `buf`; *len = 0 at the end of the range. */
  trellis_status (*blob_read)(const trellis_ctx* ctx, trellis_handle reader, char* buf, size_t cap,
                              size_t* len);
  /* The object's head as JSON (see blob_commit), OWNED by the plugin. NOT_FOUND if absent. */
  trellis_status (*blob_head)(const trellis_ctx* ctx, trellis_str key, trellis_buf* head_json);
  trellis_status (*blob_delete)(const trellis_ctx* ctx, trellis_str key);
  /* Up to `limit` heads (0 = 1000) of keys starting with `prefix` after `start_after`, in
   * byte order: {"items":[head…],"next":"<key>"|null}, OWNED by the plugin. */
  trellis_status (*blob_list)(const trellis_ctx* ctx, trellis_str prefix, trellis_str start_after,
                              uint32_t limit, trellis_buf* out_json);

  /* -- errors the client may read --------------------------------------------------- */
  /* Replaces the response with an RFC 9457 problem (application/problem+json): HTTP
   * status `http_status` (400-599), its standard title, `detail` (copied; UTF-8, at most
   * 4096 bytes) and the host's request_id. Return TRELLIS_OK from the handler after it:
   * the answer is then the plugin's, and no error is logged. `detail` is shown to the
   * client, so it must hold no internals or secrets (those go to host->set_error).
   * INVALID for a status outside 400-599 or a longer detail.
   * Request handlers only. Check TRELLIS_HOST_HAS(host, res_problem) first. */
  trellis_status (*res_problem)(const trellis_ctx* ctx, trellis_response* res, int32_t http_status,
                                trellis_str detail);

  /* -- audit and admin routes (system plugins; docs/plugin-guide.md) ------------------ */
  /* Appends a record to the host's audit stream: `action` ("secret.read"; 1..128 bytes
   * [a-z0-9._-]), `resource` (what it was done to; up to 1024 bytes) and `details_json`
   * (a JSON object, or empty). The record names this plugin and the ctx's tenant, and
   * reaches the audit sink asynchronously. All three together at most 16 KiB: INVALID
   * beyond that, or for details that are not a JSON object. Any plugin may call it. */
  trellis_status (*audit_emit)(const trellis_ctx* ctx, trellis_str action, trellis_str resource,
                               trellis_str details_json);
  /* Registers `handler` for `method` and `pattern` on the ADMIN port. Only a system plugin
   * (operator-granted "scope": "system"), only during on_init, and only under
   * "/v1/x/<namespace>/<name>/" of its own id (INVALID naming the prefix otherwise).
   * `role` ("admin", "operator", "auditor" or "billing") is the admin role a caller needs
   * besides admin; the host authenticates the caller, checks the role and audits the call
   * before the handler runs. The handler runs on the host's admin pool with no tenant;
   * ctx_principal (when offered) and the request API work as on the data plane. */
  trellis_status (*admin_route_add)(const trellis_ctx* ctx, trellis_str method, trellis_str pattern,
                                    trellis_str role, trellis_handler_fn handler, void* user);

  /* -- usage stream (system plugins) ------------------------------------------------- */
  /* Subscribes to the usage records of every tenant (only during on_init; one handler per
   * plugin). PERMISSION_DENIED unless the operator granted the plugin system scope. The
   * stream starts after the plugin's last acknowledged cursor, kept across restarts and
   * upgrades. Check TRELLIS_HOST_HAS(host, usage_subscribe) first. */
  trellis_status (*usage_subscribe)(const trellis_ctx* ctx, trellis_usage_fn fn, void* user);
  /* Acknowledges every record up to and including the batch `cursor` ended (any phase,
   * any live ctx of the subscribing plugin). Durable when it returns OK. INVALID, with the
   * reason in last_error, for a cursor the host did not issue to this plugin (forged or
   * altered), one already acknowledged (replayed), or one beyond what was delivered. */
  trellis_status (*usage_ack)(const trellis_ctx* ctx, trellis_str cursor);
  /* Appends the plugin's own billable record for the ctx's tenant to the usage stream, e.g.
   * {"operation":"transit.encrypt","units":3}. `record_json`: a JSON object of at most
   * 4096 bytes (copied); the host adds event id, time, tenant, key id, plugin, request and
   * trace ids. INVALID (with the reason) for anything else; needs a tenant ctx. */
  trellis_status (*usage_emit)(const trellis_ctx* ctx, trellis_str record_json);
  /* Runs `fn` with a ctx for `tenant` (see trellis_tenant_fn). Only a system plugin, only
   * from a tenant-less ctx (start, admin routes, usage batches, ...) and not inside a
   * service method. `reason` (1..256 bytes, shown to auditors) says why: the host writes an
   * audit record (action "system.act_for_tenant") before `fn` runs, and refuses with
   * UNAVAILABLE when the audit sink cannot store it in block mode. PERMISSION_DENIED for a
   * plugin without system scope; INVALID from a tenant ctx or with a bad reason; NOT_FOUND
   * for a tenant that does not exist; UNAVAILABLE for a suspended one. Returns fn's status.
   * Native plugins in process only (a worker answers UNIMPLEMENTED). */
  trellis_status (*act_for_tenant)(const trellis_ctx* ctx, trellis_str tenant, trellis_str reason,
                                   trellis_tenant_fn fn, void* user);

  /* -- asynchronous storage (route handlers on an event loop) ------------------------ */
  /* kv_put without blocking the event loop: the write joins the tenant's next group
   * commit and this returns at once; the handler then returns TRELLIS_OK with the response
   * unfinished. Once the commit covering the write is durable (or the write failed), `done`
   * runs (see trellis_kv_put_done_fn) and finishes the response — or starts another call,
   * e.g. a compare-and-set retry. The host answers the request when a handler or
   * completion returns with no call pending; its status decides the answer as a
   * handler's does. So a request stays on no thread while its write commits, and the
   * batch a commit takes is bounded by the clients waiting, not by threads.
   * Rules: one call in flight per request (INVALID while one is pending); only in a route
   * handler or a completion of a route that runs on an event loop (INVALID in routes the
   * manifest declares blocking, jobs, events and services: use kv_put there); a handler or
   * completion that starts a call should return TRELLIS_OK — any other status answers the
   * request at once, and the completion then runs with an empty request and a response
   * nobody receives. On OK, `done` runs exactly once — with TRELLIS_UNAVAILABLE if the
   * server stops first — so it may release `user`. A refusal found before the write is
   * queued (bad key or value, capability, host-call quota) is returned here and `done`
   * never runs; the storage quota is checked in the write's own transaction and reaches
   * `done` as QUOTA_EXCEEDED. In a worker process (isolation: process) the write is made
   * at once on the worker's own thread, and `done` runs after the callback returns, as here.
   * Check TRELLIS_HOST_HAS(host, kv_put_async) first. */
  trellis_status (*kv_put_async)(const trellis_ctx* ctx, trellis_str key, trellis_str value,
                                 uint64_t expected_version, trellis_kv_put_done_fn done,
                                 void* user);

  /* -- egress streams (capability "egress"; destinations allowed by manifest and grant) */
  /* Opens a TCP or TLS byte stream to `options->url`; `*stream` is a handle that
   * handle_close releases (closing the socket; a TLS stream first sends close_notify, best
   * effort, within a short deadline). Destinations are rules of their own scheme
   * ("tcp://host:port", "tls://host:port", port or *): an https rule never allows tls://.
   * The kernel resolves the name and dials only addresses the rules allow; a loopback or
   * private address needs a grant rule naming it. Only where blocking is allowed
   * (blocking routes, jobs, event handlers; a system plugin also from a tenant-less ctx
   * after on_init): INVALID on an event loop. PERMISSION_DENIED names the rule that
   * refused the destination; TIMEOUT past connect_timeout; UNAVAILABLE for a refused
   * connection or a failed handshake (the certificate problem named). A connect counts as
   * one request against the tenant's egress_requests_per_second, and bytes written and
   * read count against egress_bytes_per_day. One call at a time per stream. In a worker
   * process (isolation: process) the stream lives in trellisd and its bytes cross the
   * boundary in pieces; the handle is the opening worker's alone. Check
   * TRELLIS_HOST_HAS(host, stream_connect) first. */
  trellis_status (*stream_connect)(const trellis_ctx* ctx, const trellis_stream_options* options,
                                   trellis_handle* stream);
  /* Writes all of `bytes` or fails: TIMEOUT past io_timeout, UNAVAILABLE if the peer closed
   * or reset. After a failure the stream is closed (later calls answer UNAVAILABLE).
   * QUOTA_EXCEEDED, before anything is written, once the tenant's egress_bytes_per_day is
   * used up. `bytes` is BORROWED for the call. */
  trellis_status (*stream_write)(const trellis_ctx* ctx, trellis_handle stream, trellis_str bytes);
  /* Waits up to io_timeout for bytes and copies up to `cap`; *len = 0 once the peer closed;
   * TIMEOUT if nothing came in time (the stream stays usable). */
  trellis_status (*stream_read)(const trellis_ctx* ctx, trellis_handle stream, char* buf,
                                size_t cap, size_t* len);

  /* -- scripts: Lua in the kernel's sandbox (capability "script") -------------------- */
  /* Compiles `source` (Lua 5.4 text, at most 1 MiB; never a binary chunk) in a sandboxed,
   * metered Lua state of its own and runs its top level; `*script` is a handle that
   * handle_close releases (or the host, when the plugin stops). The state is the kernel's
   * policy sandbox: no io, os, debug, package, require, load of binary chunks; the global
   * table `json` offers encode, decode and array. Top-level locals and globals persist
   * from call to call of the same handle, so a script may keep a small state (a window of
   * counts), bounded by its memory budget. `options` may be NULL (defaults); its budget
   * fields are capped by the operator's (plugins.enabled[].lua), so a plugin can lower
   * its scripts' budgets but never raise them. INVALID, with the script's own message
   * ("rule.lua:3: unexpected symbol near 'x'"), for a syntax error or an error of the top
   * level; QUOTA_EXCEEDED past the instruction or memory budget; TIMEOUT past the wall
   * time. A handle belongs to the plugin and the tenant of the ctx that loaded it (in a
   * worker process: to that worker). Check TRELLIS_HOST_HAS(host, script_load) first. */
  trellis_status (*script_load)(const trellis_ctx* ctx, trellis_str source,
                                const trellis_script_options* options, trellis_handle* script);
  /* Calls the global function `function` of a loaded script with one argument, the JSON
   * value `input_json` decoded (null is nil), under the script's budget; on OK
   * `*output_json` is its first result JSON-encoded ("null" for none), OWNED by the
   * plugin (buf_free it). Input and output are at most 1 MiB each. NOT_FOUND if the
   * script defines no such function; INVALID for input that is not JSON, or with the
   * script's message when it raised an error or returned something JSON cannot hold;
   * QUOTA_EXCEEDED / TIMEOUT past its budget (the message names the budget). A failed
   * call leaves the script usable. Calls on one handle run one at a time. Any thread with
   * a live ctx of the loading plugin and tenant may call it. */
  trellis_status (*script_call)(const trellis_ctx* ctx, trellis_handle script, trellis_str function,
                                trellis_str input_json, trellis_buf* output_json);

  /* -- sealing: a root of trust for the plugin's own secrets (capability "seal") ------- */
  /* Seals `plaintext` (1 byte to 64 KiB) under the host's seal key, which the operator
   * keeps outside the database (server.seal_key_file): AES-256-GCM under a key derived
   * from it, bound to this plugin's id, the ctx's tenant ("" for a tenant-less ctx) and
   * `label` (1..256 bytes, the plugin's name for the secret, e.g. "key/signing"). On OK
   * `*out` is OWNED by the plugin (buf_free it): printable text, versioned and naming the
   * seal key ("tseal:v1:<key id>:<base64url>"), safe to store anywhere the plugin likes
   * (KV, blobs). Each call seals under a fresh nonce, so two seals of one secret differ.
   * UNAVAILABLE ("no seal key is configured (server.seal_key_file)") on a host without a
   * seal key: the plugin decides whether to go on unsealed. INVALID for a bad label or
   * size. Hosts sharing one database share the seal key file, so any of them opens what
   * another sealed. In a worker process (isolation: process) the key stays in trellisd.
   * Check TRELLIS_HOST_HAS(host, key_wrap) first. */
  trellis_status (*key_wrap)(const trellis_ctx* ctx, trellis_str label, trellis_str plaintext,
                             trellis_buf* out);
  /* Opens what key_wrap sealed, for the same plugin, tenant and label; on OK `*out` is the
   * plaintext, OWNED by the plugin (wipe and buf_free it). INVALID, with the reason, for a
   * value sealed for another plugin, tenant or label, altered, damaged, or sealed under
   * another seal key (its message names both key ids): never garbage. UNAVAILABLE without
   * a seal key, as for key_wrap. */
  trellis_status (*key_unwrap)(const trellis_ctx* ctx, trellis_str label, trellis_str sealed,
                               trellis_buf* out);
} trellis_host_api;

/* True if `host` offers slot `field` (compiled against an ABI minor that has it, and not
 * NULL). Check before calling a slot newer than 1.0. */
#define TRELLIS_HOST_HAS(host, field)                                                  \
  ((host)->struct_size >= offsetof(trellis_host_api, field) + sizeof((host)->field) && \
   (host)->field != NULL)

/* ---------------------------------------------------------------------------------------
 * The plugin descriptor (provided by the plugin)
 * ------------------------------------------------------------------------------------- */
typedef struct trellis_plugin {
  uint32_t struct_size; /* sizeof(trellis_plugin) as the plugin was compiled */
  uint16_t abi_major;   /* TRELLIS_ABI_MAJOR as the plugin was compiled */
  uint16_t abi_minor;   /* TRELLIS_ABI_MINOR as the plugin was compiled */
  /* "namespace/name" and semver; must equal the manifest's id and version or the host
   * refuses to load the plugin. Static storage, NUL-terminated. */
  const char* id;
  const char* version;

  /* Called once after loading. Register routes, subscriptions and metrics here, read the
   * configuration, and store any state in *state (passed back to every hook below).
   * `host` stays valid until on_destroy returns. Non-OK refuses the plugin; a message set
   * with host->set_error is reported to the operator. Required. */
  trellis_status (*on_init)(const trellis_host_api* host, const trellis_ctx* ctx, void** state);
  /* Called once all plugins are initialized, before traffic. Optional (NULL). */
  trellis_status (*on_start)(void* state, const trellis_ctx* ctx);
  /* Called after traffic has drained; no handler runs afterwards. Optional (NULL). */
  void (*on_stop)(void* state, const trellis_ctx* ctx);
  /* Releases `state`. The library is unloaded afterwards. Optional (NULL). */
  void (*on_destroy)(void* state);
} trellis_plugin;

/* The one exported symbol. Returns a pointer to static storage; never NULL. */
typedef const trellis_plugin* (*trellis_plugin_entry_fn)(void);
#define TRELLIS_PLUGIN_ENTRY_SYMBOL "trellis_plugin_entry"

TRELLIS_PLUGIN_EXPORT const trellis_plugin* trellis_plugin_entry(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TRELLIS_PLUGIN_H_ */
