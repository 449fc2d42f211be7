// The registry's rule for names that would confuse a reader (typosquatting), documented in
// docs/marketplace.md ("Confusable names"):
//   - skeleton: lowercase, drop '-' and '_', 0->o, 1->l, i->l, rn->m, vv->w;
//   - a new id is confusable with an existing different id if their skeletons are equal
//     (any namespace), or if they are in different namespaces and within
//     Damerau-Levenshtein distance 1 of each other (whole "namespace/name");
//   - a new namespace is confusable with an existing one if their skeletons are equal.
//
//   auto clash = confusableWith("acme/he11o", existing_ids);  // "acme/hello"
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::registry {

std::string skeleton(std::string_view name);

// Optimal string alignment distance (insert, delete, substitute, swap adjacent), capped:
// returns cap + 1 as soon as the distance is known to exceed `cap`.
size_t editDistance(std::string_view a, std::string_view b, size_t cap);

// The first existing id `id` is confusable with, if any (an equal id is not a clash).
std::optional<std::string> confusableId(std::string_view id,
                                        const std::vector<std::string>& existing_ids);

// The first existing namespace `ns` is confusable with, if any.
std::optional<std::string> confusableNamespace(std::string_view ns,
                                               const std::vector<std::string>& existing);

// "acme" of "acme/hello" ("" if there is no '/').
std::string_view namespaceOf(std::string_view id);

}  // namespace trellis::registry
