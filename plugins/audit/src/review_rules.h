// Review rules: detection rules an admin writes in Lua over one log's records ("more than 5
// key creations by one principal in a minute"). The kernel runs them (ABI 1.2 script
// service: script_load/script_call) in its sandbox, each record under a budget, so a rule
// that loops, hoards memory or fails is stopped there and never holds an append.
//
// A rule defines `on_record(input)`, input = {"log", "time_ms", "record": <the stored
// record>}, and returns nil (nothing to report) or a value (a table or a string): the
// alert. Its top-level locals persist from record to record (its window) until the rule is
// changed or the plugin restarts. A rule sees only the records of its own log.
//
// Each alert is published on the event bus (topic "review.alert") and counted
// (audit_review_alerts_total); a rule stopped by its instruction or memory budget (or by its
// wall time kTimeoutsToSuspend records in a row) is suspended, reported (log,
// "review.rule_failed", audit_review_rule_failures_total) and skipped until it is replaced.
// A dry run runs a rule's source in a fresh state over stored records and returns the
// alerts it would have raised, raising nothing.
//
// Storage (the plugin's system KV): rule/<log>/<name> {"source","updated_ms","updated_by"}.
//
//   ReviewRules rules(sink);
//   rules.load(ctx);                     // on_init: every stored rule compiled
//   sink.write(ctx, record, now);        // durable first,
//   rules.review(ctx);                   // then each new record to its log's rules
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "sink.h"
#include "trellis/plugin.hpp"

namespace trellis::audit {

// What one call of a rule may use; the kernel caps it by the operator's `lua:` budget.
inline const ScriptOptions kRuleBudget{
    .max_instructions = 200'000, .max_memory_bytes = 4 * 1024 * 1024, .max_wall_ms = 50};
// A rule over its wall time this many records in a row is suspended; one over its
// instruction or memory budget at once (those do not depend on the machine's load).
inline constexpr uint32_t kTimeoutsToSuspend = 3;
inline constexpr uint64_t kMaxDryRunRecords = 100'000;

class ReviewRules {
 public:
  static constexpr std::string_view kAlertTopic = "review.alert";
  static constexpr std::string_view kFailureTopic = "review.rule_failed";

  explicit ReviewRules(AuditSink& sink) : sink_(sink) {}

  // on_init: defines the metrics, reads and compiles the stored rules (one that no longer
  // compiles is kept, marked failed, and reported).
  Status load(InitContext& ctx);

  // Compiles `source` and, if it loads, stores it as rule `name` of `log` (replacing one
  // of that name, whose state is dropped), and records the change in that log. INVALID
  // names the problem (the script's message for a syntax error); the rule JSON otherwise.
  Result<std::string> put(const Context& ctx, std::string_view log, std::string_view name,
                          std::string_view source, int64_t now_ms);
  // NOT_FOUND if there is no such rule; the deletion is recorded in the log.
  Status remove(const Context& ctx, std::string_view log, std::string_view name, int64_t now_ms);
  // {"rules":[{"name","log","state","error","evaluated","alerts","errors","updated_ms",
  // "updated_by","source"}]}
  std::string listJson(std::string_view log) const;

  // Feeds the records stored since the last review to their logs' rules. Cheap without
  // rules; one thread reviews at a time and the others leave their records to it.
  void review(const Context& ctx);

  // Runs `source` in a fresh state over `log`'s stored records with time in [from_ms,
  // to_ms): {"log","records","alerts":[{"seq","event_id","time_ms","alert"}],"truncated"}.
  // Raises nothing. INVALID if the rule does not load, or fails on a record (naming it).
  Result<std::string> dryRun(const Context& ctx, std::string_view log, std::string_view source,
                             int64_t from_ms, int64_t to_ms) const;

  static bool isRuleName(std::string_view name);
  static bool isLogName(std::string_view log);

 private:
  struct Rule {
    std::string source;
    trellis_handle script = TRELLIS_HANDLE_NONE;  // 0: not loaded (see state)
    std::string state = "active";                 // "active", "suspended", "failed"
    std::string error;                            // why suspended or failed; the last error
    std::string updated_by;
    int64_t updated_ms = 0;
    uint64_t evaluated = 0, alerts = 0, errors = 0;
    uint32_t timeouts_in_row = 0;
  };
  using Rules = std::map<std::string, std::map<std::string, Rule, std::less<>>, std::less<>>;

  void evaluate(const Context& ctx, std::string_view log, std::string_view line);
  void reportFailure(const Context& ctx, std::string_view log, std::string_view name, Rule& rule,
                     const Status& s);
  static std::string ruleJson(std::string_view log, std::string_view name, const Rule& r);
  void updateObserving();  // with mu_ held

  AuditSink& sink_;
  std::optional<trellis_metric_id> alerts_metric_, failures_metric_;
  mutable std::mutex mu_;  // guards rules_
  Rules rules_;            // log -> name -> rule
  std::mutex review_mu_;   // one reviewing thread at a time
};

}  // namespace trellis::audit
