// The host side of egress streams for plugins: the StreamClient plus what the host adds
// around it — the tenant's egress quotas through the EgressMeter that egress HTTP uses too
// (a connect is one request against egress_requests_per_second; bytes written and read count
// against egress_bytes_per_day, and a write is refused once the day's bytes are used up),
// metrics per plugin and destination, and a log line per connect and close.
//
//   StreamService streams(std::move(client), egress_service.meter(), metrics);
//   auto s = streams.connect("acme", "acme/audit", "tls://logs.example.com:6514", policy,
//                            {}, limits);
//   streams.write(**s, "acme", "acme/audit", bytes, limits);
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "services/egress/egress_meter.h"
#include "services/stream/stream_client.h"
#include "trellis/kernel/metrics/registry.h"

namespace trellis::kernel::services::stream {

class StreamService {
 public:
  StreamService(std::unique_ptr<StreamClient> client, std::shared_ptr<egress::EgressMeter> meter,
                metrics::MetricsRegistry& metrics);

  // `limits` unset: a system plugin's tenant-less call, which no tenant quota counts
  // (`tenant` is then the label "_system"). QUOTA_EXCEEDED from the meter (the message
  // names the quota) before anything is dialled; otherwise the client's answer.
  Result<std::unique_ptr<Stream>> connect(const std::string& tenant, const std::string& plugin,
                                          std::string_view url, const egress::Policy& policy,
                                          const Timeouts& timeouts,
                                          const std::optional<egress::Limits>& limits);
  // Refused with QUOTA_EXCEEDED (egress_bytes_per_day) before anything is written once the
  // day's bytes are used up; the bytes that went out are charged. *written as Stream::write.
  Status write(Stream& stream, const std::string& tenant, const std::string& plugin,
               std::string_view bytes, const std::optional<egress::Limits>& limits,
               size_t* written);
  Result<size_t> read(Stream& stream, const std::string& tenant, const std::string& plugin,
                      char* buf, size_t cap, const std::optional<egress::Limits>& limits);

 private:
  std::unique_ptr<StreamClient> client_;
  std::shared_ptr<egress::EgressMeter> meter_;
  metrics::Family<metrics::Counter>& connects_;
  metrics::Family<metrics::Counter>& bytes_;
};

}  // namespace trellis::kernel::services::stream
