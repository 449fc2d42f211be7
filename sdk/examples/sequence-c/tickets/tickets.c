/* acme/tickets: POST /tickets numbers a ticket through the "sequence" service and
 * schedules a one-shot job for it; the job logs the ticket in the trace of the request
 * that created it. */
#include <stdio.h>
#include <string.h>
#include <trellis/plugin.h>

static const trellis_host_api* host;

static trellis_status create(void* user, const trellis_ctx* ctx, const trellis_request* req,
                             trellis_response* res) {
  trellis_buf number = {NULL, 0};
  char name[64];
  trellis_job_spec job;
  (void)user;
  (void)req;
  trellis_status s = host->service_call(ctx, TRELLIS_STR("sequence"), TRELLIS_STR("next"),
                                        TRELLIS_STR("tickets"), &number);
  if (s != TRELLIS_OK) return s; /* UNAVAILABLE becomes 503 for the client */
  int len = snprintf(name, sizeof name, "ticket-%.*s", (int)number.len, number.ptr);
  host->buf_free(&number);

  memset(&job, 0, sizeof job);
  job.struct_size = sizeof job;
  job.kind = TRELLIS_JOB_ONCE;
  job.name = (trellis_str){name, (size_t)len};
  job.delay_ms = 1000;
  job.flags = TRELLIS_JOB_DURABLE; /* at least once, also across restarts */
  if ((s = host->job_schedule(ctx, &job)) != TRELLIS_OK) return s;

  host->res_set_status(ctx, res, 201);
  return host->res_set_body(ctx, res, (trellis_str){name, (size_t)len});
}

static trellis_status run(void* user, const trellis_ctx* ctx, trellis_str name,
                          trellis_str payload) {
  trellis_str trace = {"", 0};
  char line[256];
  (void)user;
  (void)payload;
  host->ctx_trace(ctx, &trace, NULL);
  int len = snprintf(line, sizeof line, "follow-up for %.*s (trace %.*s)", (int)name.len, name.ptr,
                     (int)trace.len, trace.ptr);
  host->log(ctx, TRELLIS_LOG_INFO, (trellis_str){line, (size_t)len});
  return TRELLIS_OK;
}

static trellis_status on_init(const trellis_host_api* api, const trellis_ctx* ctx, void** state) {
  trellis_status s;
  host = api;
  *state = NULL;
  if (!TRELLIS_HOST_HAS(api, service_call) || !TRELLIS_HOST_HAS(api, job_schedule)) {
    host->set_error(ctx, TRELLIS_STR("needs a host with ABI 1.2 services and jobs"));
    return TRELLIS_UNIMPLEMENTED;
  }
  if ((s = host->job_handler(ctx, run, NULL)) != TRELLIS_OK) return s;
  return host->route_add(ctx, TRELLIS_STR("POST"), TRELLIS_STR("/tickets"), create, NULL);
}

TRELLIS_PLUGIN_EXPORT const trellis_plugin* trellis_plugin_entry(void) {
  static const trellis_plugin plugin = {sizeof(trellis_plugin),
                                        TRELLIS_ABI_MAJOR,
                                        TRELLIS_ABI_MINOR,
                                        "acme/tickets",
                                        "1.0.0",
                                        on_init,
                                        NULL,
                                        NULL,
                                        NULL};
  return &plugin;
}
