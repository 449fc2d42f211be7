/* acme/greeter — GET /greeter answers "hello, <tenant>" using nothing but the C ABI. */
#include <trellis/plugin.h>

static const trellis_host_api* host;

static trellis_status greet(void* user, const trellis_ctx* ctx, const trellis_request* req,
                            trellis_response* res) {
  trellis_str tenant;
  trellis_status s;
  (void)user;
  (void)req;
  s = host->ctx_tenant(ctx, &tenant);
  if (s != TRELLIS_OK) return s;
  host->res_add_header(ctx, res, TRELLIS_STR("Content-Type"), TRELLIS_STR("text/plain"));
  host->res_set_body(ctx, res, TRELLIS_STR("hello, "));
  host->res_append_body(ctx, res, tenant);
  return host->res_append_body(ctx, res, TRELLIS_STR("\n"));
}

static trellis_status on_init(const trellis_host_api* api, const trellis_ctx* ctx, void** state) {
  host = api;
  *state = NULL;
  host->log(ctx, TRELLIS_LOG_INFO, TRELLIS_STR("greeter ready"));
  return host->route_add(ctx, TRELLIS_STR("GET"), TRELLIS_STR("/greeter"), greet, NULL);
}

TRELLIS_PLUGIN_EXPORT const trellis_plugin* trellis_plugin_entry(void) {
  static const trellis_plugin plugin = {sizeof(trellis_plugin),
                                        TRELLIS_ABI_MAJOR,
                                        TRELLIS_ABI_MINOR,
                                        "acme/greeter",
                                        "0.1.0",
                                        on_init,
                                        NULL,
                                        NULL,
                                        NULL};
  return &plugin;
}
