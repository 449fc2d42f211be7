// Stored audit records (canonical JSON lines, record.h) in the formats SIEMs and log
// collectors read. Every value a record carries is escaped for its place, so no field can
// forge another field, another header part or another record.
//
//   ArcSight CEF (Common Event Format, rev. 25):
//     CEF:0|Trellis|trellis-audit|1|<action>|<action>|<severity>|rt=… suser=… act=… …
//   RFC 5424 syslog, facility 13 (log audit), the record itself as MSG, the fields a
//   collector indexes as structured data under SD-ID trellis@32473 (32473: the example
//   enterprise number of RFC 5612):
//     <110>1 2026-12-04T05:18:34.123Z host trellis-audit - admin.request [trellis@32473 …] {…}
//   framed for a TCP or TLS stream by octet counting (RFC 6587 §3.4.1): "<length> <message>".
//
//   auto cef = toCef(line);                         // INVALID if `line` is not a record
//   auto msg = toSyslog(line, "host-1");
//   stream << octetCounted(*msg);
#pragma once

#include <string>
#include <string_view>

#include "trellis/status.hpp"

namespace trellis::audit {

enum class ExportFormat { kJsonLines, kCef, kSyslog };

// "jsonl", "cef" or "syslog"; INVALID naming the accepted ones otherwise.
Result<ExportFormat> parseExportFormat(std::string_view name);

Result<std::string> toCef(std::string_view line);
Result<std::string> toSyslog(std::string_view line, std::string_view hostname);
std::string octetCounted(std::string_view message);

// `lines` (JSON Lines, as the log serves them) in `format`, one record per line (syslog:
// octet-counted frames, which may hold newlines).
Result<std::string> exportRecords(std::string_view lines, ExportFormat format,
                                  std::string_view hostname);

}  // namespace trellis::audit
