// Which audit sink and failure mode this trellisd runs with is itself audited (issue #15,
// item 5: "changing the sink is audited"). `audit:` is read from trellis.yaml at start only
// (`trellis config apply` does not touch it), so the kernel records it once per start: in the
// system log, action `audit.sink.configured`, or `audit.sink.changed` when it differs from what
// the previous start of this host stored. The last values are kept in a small file beside the
// host's data (per host: each host has its own trellis.yaml), so a restart with another sink,
// with `degrade` instead of `block`, or with no sink at all shows up in the next record.
//
//   recordAuditSinkConfig(audit, *SharedDocument::file(data_dir / "audit-sink.json"),
//                         cfg.audit);   // after the plugins started: the sink must be up
#pragma once

#include "admin/audit_stream.h"
#include "admin/shared_document.h"
#include "trellis/kernel/config/config.h"

namespace trellis::kernel::admin {

// Writes the record (not guarding an action: a sink that is down gets it from the backlog)
// and stores `current` as the last values. The Status is that of reading or storing them.
Status recordAuditSinkConfig(AuditStream& audit, SharedDocument& last,
                             const config::AuditConfig& current);

}  // namespace trellis::kernel::admin
