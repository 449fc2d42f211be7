#include "trellis/kernel/plugin/resolver.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <optional>
#include <set>

namespace trellis::kernel::plugin {
namespace {

using Graph = std::map<std::string, std::vector<std::string>>;  // id -> enabled deps

// Tarjan's strongly connected components; any component with more than one member (or a
// self-edge) is a cycle.
std::vector<std::vector<std::string>> cyclicComponents(const Graph& graph) {
  std::map<std::string, int> index, low;
  std::set<std::string> on_stack;
  std::vector<std::string> stack;
  std::vector<std::vector<std::string>> result;
  int next = 0;

  std::function<void(const std::string&)> visit = [&](const std::string& v) {
    index[v] = low[v] = next++;
    stack.push_back(v);
    on_stack.insert(v);
    for (const auto& w : graph.at(v)) {
      if (!index.count(w)) {
        visit(w);
        low[v] = std::min(low[v], low[w]);
      } else if (on_stack.count(w)) {
        low[v] = std::min(low[v], index[w]);
      }
    }
    if (low[v] != index[v]) return;
    std::vector<std::string> component;
    std::string w;
    do {
      w = stack.back();
      stack.pop_back();
      on_stack.erase(w);
      component.push_back(w);
    } while (w != v);
    const auto& edges = graph.at(v);
    bool self_edge = std::find(edges.begin(), edges.end(), v) != edges.end();
    if (component.size() > 1 || self_edge) result.push_back(std::move(component));
  };
  for (const auto& [id, deps] : graph) {
    if (!index.count(id)) visit(id);
  }
  return result;
}

// Shortest cycle from `start` back to itself inside `members`, found breadth-first with
// neighbours in id order so the reported path is stable: "a/x -> a/y -> a/x".
std::string cyclePath(const Graph& graph, const std::set<std::string>& members,
                      const std::string& start) {
  std::map<std::string, std::string> parent;
  std::deque<std::string> queue{start};
  std::set<std::string> seen{start};
  std::optional<std::string> last;
  while (!queue.empty() && !last) {
    std::string v = queue.front();
    queue.pop_front();
    std::vector<std::string> next = graph.at(v);
    std::sort(next.begin(), next.end());
    for (const auto& w : next) {
      if (!members.count(w)) continue;
      if (w == start) {
        last = v;
        break;
      }
      if (seen.insert(w).second) {
        parent[w] = v;
        queue.push_back(w);
      }
    }
  }
  std::vector<std::string> path{start};
  for (std::string v = *last; v != start; v = parent.at(v)) path.push_back(v);
  std::reverse(path.begin() + 1, path.end());
  std::string text;
  for (const auto& id : path) text += id + " -> ";
  return text + start;
}

}  // namespace

StartPlan resolveStartOrder(const std::map<std::string, Manifest>& candidates) {
  StartPlan plan;
  // Each service has one provider: a second plugin offering the same name is refused, so
  // which plugin answers a call never depends on start order.
  std::map<std::string, std::string> provider_of;  // service -> plugin id
  std::map<std::string, std::string> own_problem;
  for (const auto& [id, manifest] : candidates) {
    for (const auto& service : manifest.provides) {
      auto [it, fresh] = provider_of.emplace(service.name, id);
      if (!fresh && !own_problem.count(id)) {
        own_problem[id] =
            "provides service " + service.name + ", which " + it->second + " already provides";
      }
    }
  }
  // A required service is a dependency on its provider; an optional one only orders the
  // start when its provider is there.
  std::map<std::string, std::vector<std::string>> required_providers;
  Graph graph;
  for (const auto& [id, manifest] : candidates) {
    auto& edges = graph[id];
    for (const auto& dep : manifest.dependencies) {
      if (candidates.count(dep.id)) edges.push_back(dep.id);
    }
    for (const auto& need : manifest.required_services) {
      auto it = provider_of.find(need.name);
      const Manifest* provider = it == provider_of.end() ? nullptr : &candidates.at(it->second);
      const Version* offered = nullptr;
      if (provider) {
        for (const auto& p : provider->provides) {
          if (p.name == need.name) offered = &p.version;
        }
      }
      if (offered && need.range.contains(*offered)) {
        edges.push_back(it->second);
        if (!need.optional) required_providers[id].push_back(it->second);
      } else if (!need.optional && !own_problem.count(id)) {
        own_problem[id] = offered ? "requires service " + need.name + " " + need.range.text() +
                                        " but " + it->second + " provides " + offered->toString()
                                  : "requires service " + need.name + " " + need.range.text() +
                                        " which no enabled plugin provides";
      }
    }
  }

  // A plugin's own problem: being part of a cycle comes first, since nothing in the cycle
  // can ever start; then its first missing or out-of-range dependency.
  for (const auto& component : cyclicComponents(graph)) {
    std::set<std::string> members(component.begin(), component.end());
    for (const auto& id : component) {
      own_problem[id] = "dependency cycle: " + cyclePath(graph, members, id);
    }
  }
  for (const auto& [id, manifest] : candidates) {
    if (own_problem.count(id)) continue;
    for (const auto& dep : manifest.dependencies) {
      auto it = candidates.find(dep.id);
      if (it == candidates.end()) {
        own_problem[id] = "requires " + dep.id + " " + dep.range.text() + " which is not enabled";
        break;
      }
      if (!dep.range.contains(it->second.version)) {
        own_problem[id] = "requires " + dep.id + " " + dep.range.text() + " but " +
                          it->second.version.toString() + " is installed";
        break;
      }
    }
  }

  // Refusal spreads to dependents, naming the first failed dependency. Outside cycles the
  // graph is acyclic, so the recursion ends.
  std::map<std::string, std::optional<std::string>> failure;
  std::function<const std::optional<std::string>&(const std::string&)> failureOf =
      [&](const std::string& id) -> const std::optional<std::string>& {
    if (auto it = failure.find(id); it != failure.end()) return it->second;
    std::optional<std::string> why;
    if (auto it = own_problem.find(id); it != own_problem.end()) {
      why = it->second;
    } else {
      for (const auto& dep : candidates.at(id).dependencies) {
        if (const auto& dep_why = failureOf(dep.id)) {
          why = "dependency " + dep.id + " failed: " + *dep_why;
          break;
        }
      }
      for (const auto& provider : required_providers[id]) {
        if (why) break;
        if (const auto& provider_why = failureOf(provider)) {
          why = "service provider " + provider + " failed: " + *provider_why;
        }
      }
    }
    return failure[id] = std::move(why);
  };
  for (const auto& [id, manifest] : candidates) {
    if (const auto& why = failureOf(id)) plan.refused[id] = *why;
  }

  // Kahn's algorithm; among the plugins ready at the same time the smallest id goes
  // first, so the same set of plugins always starts in the same order.
  std::map<std::string, size_t> waiting_on;
  std::map<std::string, std::vector<std::string>> dependents;
  std::set<std::string> ready;
  for (const auto& [id, deps] : graph) {
    if (plan.refused.count(id)) continue;
    std::set<std::string> unique(deps.begin(), deps.end());
    waiting_on[id] = unique.size();
    for (const auto& dep : unique) dependents[dep].push_back(id);
    if (unique.empty()) ready.insert(id);
  }
  while (!ready.empty()) {
    std::string id = *ready.begin();
    ready.erase(ready.begin());
    plan.order.push_back(id);
    for (const auto& dependent : dependents[id]) {
      if (--waiting_on[dependent] == 0) ready.insert(dependent);
    }
  }
  return plan;
}

}  // namespace trellis::kernel::plugin
