/* acme/sequence: the service "sequence", method "next". The request names a counter; the
 * answer is its next value. The host runs the method with the CALLER's tenant, so each
 * tenant has its own counters, kept in this plugin's KV; a compare-and-set loop keeps
 * concurrent callers from handing out a number twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <trellis/plugin.h>

static const trellis_host_api* host;

static trellis_status next(void* user, const trellis_ctx* ctx, trellis_str request,
                           trellis_service_reply* reply) {
  char key[160], text[32];
  (void)user;
  if (request.len == 0 || request.len > 128) {
    host->set_error(ctx, TRELLIS_STR("the request must name a counter (1-128 bytes)"));
    return TRELLIS_INVALID;
  }
  int key_len = snprintf(key, sizeof key, "seq:%.*s", (int)request.len, request.ptr);
  for (int attempt = 0; attempt < 16; ++attempt) {
    trellis_buf value = {NULL, 0};
    uint64_t version = TRELLIS_KV_ABSENT;
    long current = 0;
    trellis_status s = host->kv_get(ctx, (trellis_str){key, (size_t)key_len}, &value, &version);
    if (s == TRELLIS_OK) {
      snprintf(text, sizeof text, "%.*s", (int)(value.len < 31 ? value.len : 31), value.ptr);
      current = strtol(text, NULL, 10);
      host->buf_free(&value);
    } else if (s != TRELLIS_NOT_FOUND) {
      return s;
    }
    int len = snprintf(text, sizeof text, "%ld", current + 1);
    s = host->kv_put(ctx, (trellis_str){key, (size_t)key_len}, (trellis_str){text, (size_t)len},
                     version, NULL);
    if (s == TRELLIS_CONFLICT) continue; /* another caller won; read again */
    if (s != TRELLIS_OK) return s;
    return host->service_reply(ctx, reply, (trellis_str){text, (size_t)len});
  }
  host->set_error(ctx, TRELLIS_STR("too much contention on the counter"));
  return TRELLIS_UNAVAILABLE;
}

static trellis_status on_init(const trellis_host_api* api, const trellis_ctx* ctx, void** state) {
  host = api;
  *state = NULL;
  if (!TRELLIS_HOST_HAS(api, service_provide)) return TRELLIS_UNIMPLEMENTED;
  return host->service_provide(ctx, TRELLIS_STR("sequence"), TRELLIS_STR("next"), next, NULL);
}

TRELLIS_PLUGIN_EXPORT const trellis_plugin* trellis_plugin_entry(void) {
  static const trellis_plugin plugin = {sizeof(trellis_plugin),
                                        TRELLIS_ABI_MAJOR,
                                        TRELLIS_ABI_MINOR,
                                        "acme/sequence",
                                        "1.0.0",
                                        on_init,
                                        NULL,
                                        NULL,
                                        NULL};
  return &plugin;
}
