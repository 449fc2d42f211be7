#include "services/stream/stream_service.h"

#include <spdlog/spdlog.h>

namespace trellis::kernel::services::stream {

StreamService::StreamService(std::unique_ptr<StreamClient> client,
                             std::shared_ptr<egress::EgressMeter> meter,
                             metrics::MetricsRegistry& metrics)
    : client_(std::move(client)),
      meter_(std::move(meter)),
      connects_(
          metrics.counter("trellis_stream_connects_total",
                          "Outbound TCP/TLS streams plugins opened, by destination and outcome",
                          {"plugin", "destination", "outcome"})),
      bytes_(metrics.counter("trellis_stream_bytes_total",
                             "Bytes plugins wrote to (out) and read from (in) egress streams",
                             {"plugin", "destination", "direction"})) {}

Result<std::unique_ptr<Stream>> StreamService::connect(
    const std::string& tenant, const std::string& plugin, std::string_view url,
    const egress::Policy& policy, const Timeouts& timeouts,
    const std::optional<egress::Limits>& limits) {
  auto parsed = egress::parseUrl(url);
  const std::string destination = parsed ? parsed->origin() : "invalid";
  const auto started = std::chrono::steady_clock::now();
  Result<std::unique_ptr<Stream>> r = Status::internal("not dialled");
  if (Status s =
          limits ? meter_->admit(tenant, *limits, egress::EgressMeter::kRequest) : Status::ok();
      !s) {
    r = s;
  } else {
    r = client_->connect(url, policy, timeouts);
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count();
  connects_.labels({plugin, destination, r ? "ok" : std::string(statusCodeName(r.status().code()))})
      .add(1);
  if (r) {
    spdlog::info("stream tenant={} plugin={} connected to {} ({} ms)", tenant, plugin, destination,
                 ms);
  } else {
    spdlog::warn("stream tenant={} plugin={} connect to {} refused or failed after {} ms: {}",
                 tenant, plugin, destination, ms, r.status().toString());
  }
  return r;
}

Status StreamService::write(Stream& stream, const std::string& tenant, const std::string& plugin,
                            std::string_view bytes, const std::optional<egress::Limits>& limits,
                            size_t* written) {
  *written = 0;
  if (limits) {
    if (Status s = meter_->admit(tenant, *limits, egress::EgressMeter::kBytes); !s) return s;
  }
  Status s = stream.write(bytes, written);
  if (*written > 0) {
    if (limits) meter_->charge(tenant, *written);
    bytes_.labels({plugin, stream.url().origin(), "out"}).add(static_cast<double>(*written));
  }
  return s;
}

Result<size_t> StreamService::read(Stream& stream, const std::string& tenant,
                                   const std::string& plugin, char* buf, size_t cap,
                                   const std::optional<egress::Limits>& limits) {
  auto n = stream.read(buf, cap);
  if (n && *n > 0) {
    if (limits) meter_->charge(tenant, *n);
    bytes_.labels({plugin, stream.url().origin(), "in"}).add(static_cast<double>(*n));
  }
  return n;
}

}  // namespace trellis::kernel::services::stream
