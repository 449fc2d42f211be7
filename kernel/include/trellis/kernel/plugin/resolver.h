// Orders the enabled plugins so dependencies start first (and stop last), refusing what
// cannot run: a missing dependency, a version outside the required range, or a cycle.
// Refusal of one plugin does not refuse the others; its dependents are refused too,
// naming the dependency that failed.
//
//   auto plan = resolveStartOrder(candidates);
//   for (auto& id : plan.order) start(id);
//   for (auto& [id, why] : plan.refused) report(id, why);
#pragma once

#include <map>
#include <string>
#include <vector>

#include "trellis/kernel/plugin/manifest.h"

namespace trellis::kernel::plugin {

struct StartPlan {
  std::vector<std::string> order;              // ids, dependencies before dependents
  std::map<std::string, std::string> refused;  // id -> reason, e.g.
  // "dependency cycle: a/x -> a/y -> a/x"
  // "requires acme/db ^2.0.0 but 1.4.0 is installed"
  // "requires acme/db ^1.0.0 which is not enabled"
  // "dependency acme/db failed: <its reason>"
};

// `candidates` are the manifests of the enabled plugins that loaded so far, keyed by id.
StartPlan resolveStartOrder(const std::map<std::string, Manifest>& candidates);

}  // namespace trellis::kernel::plugin
