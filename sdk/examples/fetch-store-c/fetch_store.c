/* acme/fetch-store — blob storage and egress HTTP from plain C (ABI 1.2).
 *
 *   POST   /fs/gen/{key}?mib=N     writes N MiB of a fixed pattern as one blob, 1 MiB at a time
 *   PUT    /fs/blob/{key}          stores the request body (Content-Type kept, X-Meta = JSON)
 *   GET    /fs/blob/{key}[?offset=&length=]   answers the bytes
 *   GET    /fs/head/{key}          the head as JSON
 *   GET    /fs/digest/{key}        streams the blob back: {"size":…,"fnv1a64":"…"}
 *   DELETE /fs/blob/{key}
 *   GET    /fs/list?prefix=&after=&limit=
 *   POST   /fs/fetch               the body is a URL; GETs it through the kernel (blocking)
 *   POST   /fs/fetch-inline        the same on the event loop: the kernel refuses it
 *
 * Everything but fetch-inline is declared in blocking_routes: blob and egress calls block.
 * Failures answer a status of this plugin's choosing with host->last_error as the body, so
 * a caller sees which rule or quota refused it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <trellis/plugin.h>

static const trellis_host_api* host;

enum { kChunk = 1024 * 1024 };

static int httpStatusFor(trellis_status s) {
  switch (s) {
    case TRELLIS_INVALID: return 400;
    case TRELLIS_NOT_FOUND: return 404;
    case TRELLIS_PERMISSION_DENIED: return 403;
    case TRELLIS_TIMEOUT: return 504;
    case TRELLIS_UNAVAILABLE: return 502;
    default: return 500;
  }
}

/* Answers the kernel's message for a failed call. QUOTA_EXCEEDED is passed on unchanged, so
 * the kernel answers with the quota's own status (507 for storage, 429 for egress rates). */
static trellis_status failWith(const trellis_ctx* ctx, trellis_response* res, trellis_status s) {
  trellis_str message = {"", 0};
  char copy[1024];
  if (s == TRELLIS_QUOTA_EXCEEDED) return s;
  /* The message is borrowed until the next host call: copy it first. */
  host->last_error(ctx, &message);
  if (message.len > sizeof copy) message.len = sizeof copy;
  memcpy(copy, message.ptr, message.len);
  message.ptr = copy;
  host->res_set_status(ctx, res, httpStatusFor(s));
  host->res_add_header(ctx, res, TRELLIS_STR("Content-Type"), TRELLIS_STR("text/plain"));
  return host->res_set_body(ctx, res, message);
}

static trellis_status answerBuf(const trellis_ctx* ctx, trellis_response* res, int status,
                                trellis_buf* buf) {
  trellis_str body = {buf->ptr, buf->len};
  host->res_set_status(ctx, res, status);
  host->res_add_header(ctx, res, TRELLIS_STR("Content-Type"), TRELLIS_STR("application/json"));
  host->res_set_body(ctx, res, body);
  host->buf_free(buf);
  return TRELLIS_OK;
}

static uint64_t queryNumber(const trellis_ctx* ctx, const trellis_request* req, const char* name,
                            uint64_t fallback) {
  trellis_str v;
  char text[32];
  trellis_str n = {name, strlen(name)};
  if (host->req_query_param(ctx, req, n, &v) != TRELLIS_OK || v.len == 0 || v.len >= sizeof text) {
    return fallback;
  }
  memcpy(text, v.ptr, v.len);
  text[v.len] = '\0';
  return strtoull(text, NULL, 10);
}

static trellis_str keyOf(const trellis_ctx* ctx, const trellis_request* req) {
  trellis_str key = {"", 0};
  host->req_path_param(ctx, req, TRELLIS_STR("key"), &key);
  return key;
}

/* Byte i of the generated pattern (tests recompute it). */
static char patternByte(uint64_t i) {
  return (char)((i * 31 + (i >> 20)) & 0xff);
}

static trellis_status generate(void* user, const trellis_ctx* ctx, const trellis_request* req,
                               trellis_response* res) {
  uint64_t mib = queryNumber(ctx, req, "mib", 1), i, at = 0;
  trellis_handle w;
  trellis_buf head;
  trellis_status s;
  char* chunk = malloc(kChunk);
  (void)user;
  if (!chunk) return TRELLIS_INTERNAL;
  s = host->blob_open_write(ctx, keyOf(ctx, req), NULL, &w);
  for (i = 0; s == TRELLIS_OK && i < mib; ++i) {
    trellis_str piece = {chunk, kChunk};
    size_t k;
    for (k = 0; k < kChunk; ++k) chunk[k] = patternByte(at + k);
    at += kChunk;
    s = host->blob_write(ctx, w, piece);
  }
  free(chunk);
  if (s != TRELLIS_OK) {
    host->handle_close(ctx, w); /* releases the handle; the upload is abandoned */
    return failWith(ctx, res, s);
  }
  s = host->blob_commit(ctx, w, &head);
  return s == TRELLIS_OK ? answerBuf(ctx, res, 201, &head) : failWith(ctx, res, s);
}

static trellis_status put(void* user, const trellis_ctx* ctx, const trellis_request* req,
                          trellis_response* res) {
  trellis_blob_write_options options = {sizeof options, {"", 0}, {"", 0}};
  trellis_str body;
  trellis_handle w;
  trellis_buf head;
  trellis_status s;
  (void)user;
  host->req_header(ctx, req, TRELLIS_STR("Content-Type"), &options.content_type);
  host->req_header(ctx, req, TRELLIS_STR("X-Meta"), &options.metadata_json);
  host->req_body(ctx, req, &body);
  s = host->blob_open_write(ctx, keyOf(ctx, req), &options, &w);
  if (s != TRELLIS_OK) return failWith(ctx, res, s);
  s = host->blob_write(ctx, w, body);
  if (s != TRELLIS_OK) {
    host->handle_close(ctx, w);
    return failWith(ctx, res, s);
  }
  s = host->blob_commit(ctx, w, &head);
  return s == TRELLIS_OK ? answerBuf(ctx, res, 201, &head) : failWith(ctx, res, s);
}

static trellis_status get(void* user, const trellis_ctx* ctx, const trellis_request* req,
                          trellis_response* res) {
  uint64_t offset = queryNumber(ctx, req, "offset", 0);
  uint64_t length = queryNumber(ctx, req, "length", UINT64_MAX);
  trellis_handle r;
  char buf[65536];
  size_t n = 0;
  trellis_status s = host->blob_open_read(ctx, keyOf(ctx, req), offset, length, &r);
  (void)user;
  if (s != TRELLIS_OK) return failWith(ctx, res, s);
  host->res_set_body(ctx, res, TRELLIS_STR(""));
  while ((s = host->blob_read(ctx, r, buf, sizeof buf, &n)) == TRELLIS_OK && n > 0) {
    trellis_str piece = {buf, n};
    host->res_append_body(ctx, res, piece);
  }
  host->handle_close(ctx, r);
  return s == TRELLIS_OK ? TRELLIS_OK : failWith(ctx, res, s);
}

static trellis_status digest(void* user, const trellis_ctx* ctx, const trellis_request* req,
                             trellis_response* res) {
  trellis_handle r;
  size_t n = 0, k;
  uint64_t size = 0, hash = 1469598103934665603ull;
  char* buf = malloc(kChunk);
  char json[96];
  trellis_str out;
  trellis_status s =
      buf ? host->blob_open_read(ctx, keyOf(ctx, req), 0, UINT64_MAX, &r) : TRELLIS_INTERNAL;
  (void)user;
  while (s == TRELLIS_OK && (s = host->blob_read(ctx, r, buf, kChunk, &n)) == TRELLIS_OK && n) {
    for (k = 0; k < n; ++k) hash = (hash ^ (unsigned char)buf[k]) * 1099511628211ull;
    size += n;
  }
  free(buf);
  if (s != TRELLIS_OK) return failWith(ctx, res, s);
  host->handle_close(ctx, r);
  out.len = (size_t)snprintf(json, sizeof json, "{\"size\":%llu,\"fnv1a64\":\"%016llx\"}",
                             (unsigned long long)size, (unsigned long long)hash);
  out.ptr = json;
  host->res_add_header(ctx, res, TRELLIS_STR("Content-Type"), TRELLIS_STR("application/json"));
  return host->res_set_body(ctx, res, out);
}

static trellis_status head(void* user, const trellis_ctx* ctx, const trellis_request* req,
                           trellis_response* res) {
  trellis_buf json;
  trellis_status s = host->blob_head(ctx, keyOf(ctx, req), &json);
  (void)user;
  return s == TRELLIS_OK ? answerBuf(ctx, res, 200, &json) : failWith(ctx, res, s);
}

static trellis_status remove_(void* user, const trellis_ctx* ctx, const trellis_request* req,
                              trellis_response* res) {
  trellis_status s = host->blob_delete(ctx, keyOf(ctx, req));
  (void)user;
  if (s != TRELLIS_OK) return failWith(ctx, res, s);
  return host->res_set_status(ctx, res, 204);
}

static trellis_status list(void* user, const trellis_ctx* ctx, const trellis_request* req,
                           trellis_response* res) {
  trellis_str prefix = {"", 0}, after = {"", 0};
  trellis_buf json;
  trellis_status s;
  (void)user;
  host->req_query_param(ctx, req, TRELLIS_STR("prefix"), &prefix);
  host->req_query_param(ctx, req, TRELLIS_STR("after"), &after);
  s = host->blob_list(ctx, prefix, after, (uint32_t)queryNumber(ctx, req, "limit", 0), &json);
  return s == TRELLIS_OK ? answerBuf(ctx, res, 200, &json) : failWith(ctx, res, s);
}

static trellis_status fetch(void* user, const trellis_ctx* ctx, const trellis_request* req,
                            trellis_response* res) {
  trellis_http_request call;
  trellis_handle response;
  int32_t status = 0;
  char buf[65536];
  size_t n = 0;
  trellis_status s;
  (void)user;
  memset(&call, 0, sizeof call);
  call.struct_size = sizeof call;
  call.method = TRELLIS_STR("GET");
  host->req_body(ctx, req, &call.url);
  call.first_byte_timeout_ms = (uint32_t)queryNumber(ctx, req, "first_byte_ms", 0);
  call.max_redirects = (uint32_t)queryNumber(ctx, req, "redirects", 0);
  call.max_response_bytes = queryNumber(ctx, req, "cap", 0);
  s = host->http_send(ctx, &call, &response);
  if (s != TRELLIS_OK) return failWith(ctx, res, s);
  host->http_response_status(ctx, response, &status);
  host->res_set_status(ctx, res, status);
  host->res_set_body(ctx, res, TRELLIS_STR(""));
  while ((s = host->http_response_read(ctx, response, buf, sizeof buf, &n)) == TRELLIS_OK && n) {
    trellis_str piece = {buf, n};
    host->res_append_body(ctx, res, piece);
  }
  host->handle_close(ctx, response);
  return TRELLIS_OK;
}

static trellis_status on_init(const trellis_host_api* api, const trellis_ctx* ctx, void** state) {
  static const struct {
    const char* method;
    const char* pattern;
    trellis_handler_fn fn;
  } kRoutes[] = {
      {"POST", "/fs/gen/{key}", generate}, {"PUT", "/fs/blob/{key}", put},
      {"GET", "/fs/blob/{key}", get},      {"GET", "/fs/head/{key}", head},
      {"GET", "/fs/digest/{key}", digest}, {"DELETE", "/fs/blob/{key}", remove_},
      {"GET", "/fs/list", list},           {"POST", "/fs/fetch", fetch},
      {"POST", "/fs/fetch-inline", fetch},
  };
  size_t i;
  host = api;
  *state = NULL;
  if (!TRELLIS_HOST_HAS(api, blob_list)) return TRELLIS_UNIMPLEMENTED; /* needs ABI 1.2 */
  for (i = 0; i < sizeof kRoutes / sizeof kRoutes[0]; ++i) {
    trellis_str method = {kRoutes[i].method, strlen(kRoutes[i].method)};
    trellis_str pattern = {kRoutes[i].pattern, strlen(kRoutes[i].pattern)};
    trellis_status s = host->route_add(ctx, method, pattern, kRoutes[i].fn, NULL);
    if (s != TRELLIS_OK) return s;
  }
  return TRELLIS_OK;
}

TRELLIS_PLUGIN_EXPORT const trellis_plugin* trellis_plugin_entry(void) {
  static const trellis_plugin plugin = {sizeof(trellis_plugin),
                                        TRELLIS_ABI_MAJOR,
                                        TRELLIS_ABI_MINOR,
                                        "acme/fetch-store",
                                        "0.1.0",
                                        on_init,
                                        NULL,
                                        NULL,
                                        NULL};
  return &plugin;
}
