/* trellis/echo-c — the plain C example plugin: any method on /echo or /echo/... answers
 * with the request as JSON: {"tenant","method","path","query","headers":[[n,v],...],"body"}.
 * Credential headers (Authorization, Cookie) are redacted. GET /ping answers "ok".
 * It uses nothing but <trellis/plugin.h> and the C library. */
#include <stdio.h>
#include <string.h>
#include <trellis/plugin.h>

static const trellis_host_api* host;

typedef struct writer {
  const trellis_ctx* ctx;
  trellis_response* res;
  trellis_status status; /* first failure, sticky */
  size_t headers;        /* headers written so far, for separators */
} writer;

static void emit(writer* w, const char* p, size_t n) {
  if (w->status == TRELLIS_OK && n > 0) {
    trellis_str s = {p, n};
    w->status = host->res_append_body(w->ctx, w->res, s);
  }
}

static void emit_cstr(writer* w, const char* s) {
  emit(w, s, strlen(s));
}

/* Writes `s` as a JSON string; bytes >= 0x80 pass through (the body is not validated as
 * UTF-8 — a client sending invalid UTF-8 gets its own bytes back). */
static void emit_json_string(writer* w, trellis_str s) {
  size_t start = 0, i;
  emit(w, "\"", 1);
  for (i = 0; i < s.len; ++i) {
    unsigned char c = (unsigned char)s.ptr[i];
    char esc[8];
    if (c != '"' && c != '\\' && c >= 0x20) continue;
    emit(w, s.ptr + start, i - start);
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      emit(w, esc, 2);
    } else {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      emit(w, esc, 6);
    }
    start = i + 1;
  }
  emit(w, s.ptr + start, s.len - start);
  emit(w, "\"", 1);
}

static void emit_field(writer* w, const char* name, trellis_str value, int first) {
  if (!first) emit(w, ",", 1);
  emit(w, "\"", 1);
  emit_cstr(w, name);
  emit(w, "\":", 2);
  emit_json_string(w, value);
}

/* Credentials are never echoed, so a captured echo response leaks no key. */
static int is_credential(trellis_str name) {
  static const char* const secret[] = {"authorization", "proxy-authorization", "cookie"};
  size_t i, j;
  for (i = 0; i < sizeof secret / sizeof secret[0]; ++i) {
    if (strlen(secret[i]) != name.len) continue;
    for (j = 0; j < name.len; ++j) {
      char c = name.ptr[j];
      if ((c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c) != secret[i][j]) break;
    }
    if (j == name.len) return 1;
  }
  return 0;
}

static int emit_header(void* user, trellis_str name, trellis_str value) {
  writer* w = (writer*)user;
  if (is_credential(name)) value = TRELLIS_STR("[redacted]");
  if (w->headers++ > 0) emit(w, ",", 1);
  emit(w, "[", 1);
  emit_json_string(w, name);
  emit(w, ",", 1);
  emit_json_string(w, value);
  emit(w, "]", 1);
  return w->status != TRELLIS_OK;
}

static trellis_status echo(void* user, const trellis_ctx* ctx, const trellis_request* req,
                           trellis_response* res) {
  writer w = {ctx, res, TRELLIS_OK, 0};
  trellis_str tenant = {"", 0}, method = {"", 0}, path = {"", 0}, query = {"", 0}, body = {"", 0};
  (void)user;
  host->ctx_tenant(ctx, &tenant);
  host->req_method(ctx, req, &method);
  host->req_path(ctx, req, &path);
  host->req_query(ctx, req, &query);
  host->req_body(ctx, req, &body);

  host->res_add_header(ctx, res, TRELLIS_STR("Content-Type"), TRELLIS_STR("application/json"));
  emit(&w, "{", 1);
  emit_field(&w, "tenant", tenant, 1);
  emit_field(&w, "method", method, 0);
  emit_field(&w, "path", path, 0);
  emit_field(&w, "query", query, 0);
  emit_cstr(&w, ",\"headers\":[");
  host->req_headers(ctx, req, emit_header, &w);
  emit_cstr(&w, "],");
  emit_field(&w, "body", body, 1);
  emit(&w, "}", 1);
  return w.status;
}

/* GET /ping answers "ok": the smallest plugin round trip, used by bench/. */
static trellis_status ping(void* user, const trellis_ctx* ctx, const trellis_request* req,
                           trellis_response* res) {
  (void)user;
  (void)req;
  host->res_add_header(ctx, res, TRELLIS_STR("Content-Type"), TRELLIS_STR("text/plain"));
  return host->res_set_body(ctx, res, TRELLIS_STR("ok"));
}

static trellis_status on_init(const trellis_host_api* api, const trellis_ctx* ctx, void** state) {
  trellis_status s;
  host = api;
  *state = NULL;
  s = host->route_add(ctx, TRELLIS_STR("GET"), TRELLIS_STR("/ping"), ping, NULL);
  if (s != TRELLIS_OK) return s;
  s = host->route_add(ctx, TRELLIS_STR("*"), TRELLIS_STR("/echo"), echo, NULL);
  if (s != TRELLIS_OK) return s;
  return host->route_add(ctx, TRELLIS_STR("*"), TRELLIS_STR("/echo/{rest...}"), echo, NULL);
}

TRELLIS_PLUGIN_EXPORT const trellis_plugin* trellis_plugin_entry(void) {
  static const trellis_plugin plugin = {sizeof(trellis_plugin),
                                        TRELLIS_ABI_MAJOR,
                                        TRELLIS_ABI_MINOR,
                                        "trellis/echo-c",
                                        "1.0.0",
                                        on_init,
                                        NULL,
                                        NULL,
                                        NULL};
  return &plugin;
}
