// trellis/audit: the plugin object. It reads the checkpoint policy from its config, serves
// audit.v1 "write" from the sink, and exposes the logs: every log to the auditor role on
// the admin plane, a tenant's own log on the data plane.
//
// Admin plane (/v1/x/trellis/audit/…; <log> is a tenant id or "_system"):
//   GET  logs                                    (auditor) every log, its size and signed size
//   GET  logs/{log}/records?from=&limit=&format= (auditor) records: JSON Lines, or format=cef
//                                                or syslog (RFC 5424, octet-counted)
//   GET  logs/{log}/checkpoints                  (auditor) checkpoints, JSON Lines
//   GET  logs/{log}/proof/inclusion?seq=&size=   (auditor)
//   GET  logs/{log}/proof/consistency?from=&to=  (auditor)
//   POST logs/{log}/checkpoint                   (operator) sign a checkpoint now
//   GET  public-key                              (auditor) the checkpoint key, PEM
//   GET  status                                  (auditor) whether the plugin's own keys are
//                                                sealed under the host's seal key, and why not
//   POST hmac  {"tenant","value","key"?}         (auditor) the digest a sensitive value has
//                                                under the log's HMAC key `key` (a record's
//                                                "hmac_key"; default the current key)
//   GET  logs/{log}/hmac-keys                    (auditor) the log's HMAC key ids, the current
//                                                one, and how provisioning from secrets.v1 goes
//   GET  logs/{log}/retention                    (auditor) retention, legal hold, purged size
//   PUT  logs/{log}/retention {"keep":"400d"}    (operator) the log's own retention
//   PUT  logs/{log}/legal-hold {"reason":"…"}    (auditor) stops purging
//   DELETE logs/{log}/legal-hold                 (auditor) releases it
//   POST logs/{log}/purge                        (operator) purges what retention allows
//   GET  logs/{log}/purged                       (auditor) purged.json of an evidence pack
//   GET  logs/{log}/evidence                     (auditor) the evidence pack, a tar archive
//   GET  logs/{log}/rules                        (auditor) the log's review rules, their state
//   PUT  logs/{log}/rules/{name} {"source":"…"}  (operator) defines or replaces a rule
//   DELETE logs/{log}/rules/{name}               (operator) deletes it
//   POST logs/{log}/rules/dry-run {"source"|"rule","from_ms","to_ms"}
//                                                (auditor) what a rule would have raised over
//                                                stored records, raising nothing
// Data plane (the calling tenant's log only): GET /audit/v1/records, /audit/v1/checkpoints,
//   /audit/v1/proof/inclusion, /audit/v1/proof/consistency, /audit/v1/public-key,
//   /audit/v1/retention, /audit/v1/purged.
// With config "access", the usage stream's requests on the named tenants and routes become
// "data.access" records in those tenants' logs. Review rules (review_rules.h) see every
// record once it is durable and raise alerts as "review.alert" events. Its own durable jobs:
// `syslog-forward` (config syslog_url) and `retention-purge` (every purge_interval_s, default a
// day); and `hmac-keys` (every hmac_key_interval_s, default 10 s, 0 = never), which provisions
// the tenants' HMAC keys from secrets.v1 when that service is there (hmac_provisioner.h);
// and `checkpoint-timer` (every quarter checkpoint_interval_s, at least 1 s), which signs the
// logs whose oldest unsigned record is checkpoint_interval_s old, so that records followed
// by silence do not wait for the log's next record or read to be signed and mirrored.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cstdint>

#include "core/access_records.h"
#include "core/export_formats.h"
#include "core/retention.h"
#include "core/whole_number.h"
#include "hmac_provisioner.h"
#include "review_rules.h"
#include "sink.h"
#include "syslog_forwarder.h"
#include "trellis/plugin.hpp"

namespace trellis::audit {
namespace {

constexpr std::string_view kAdminPrefix = "/v1/x/trellis/audit/";

std::optional<uint64_t> number(const Request& req, std::string_view name) {
  auto v = req.queryParam(name);
  return v ? wholeNumberIn(*v) : std::nullopt;
}

Status problemFrom(Response& res, const Status& s) {
  int code = 500;
  switch (s.code()) {
    case StatusCode::kInvalid: code = 400; break;
    case StatusCode::kNotFound: code = 404; break;
    case StatusCode::kConflict: code = 409; break;
    case StatusCode::kUnavailable: code = 503; break;
    default: return s;
  }
  return res.problem(code, s.message());
}

class AuditPlugin : public Plugin {
 public:
  Status init(InitContext& ctx) override {
    SinkOptions options;
    if (Status s = wholeNumber(ctx, "checkpoint_every", 1, 1'000'000'000, options.checkpoint_every);
        !s) {
      return s;
    }
    uint64_t interval_s = static_cast<uint64_t>(options.checkpoint_interval_ms / 1000);
    if (Status s = wholeNumber(ctx, "checkpoint_interval_s", 1, 31'536'000, interval_s); !s) {
      return s;
    }
    options.checkpoint_interval_ms = static_cast<int64_t>(interval_s) * 1000;
    // A tail waits for the timer at most about a quarter interval past its due time.
    checkpoint_timer_ms_ = std::max<uint64_t>(kMinJobIntervalMs, interval_s * 1000 / 4);
    if (Status s = sensitiveFields(ctx, options.sensitive); !s) return s;
    if (Status s = retentionOptions(ctx, options); !s) return s;
    if (auto v = ctx.config("checkpoint_mirror_dir")) {
      auto mirror = CheckpointMirror::open(std::string(*v));
      if (!mirror) return mirror.status();
      options.mirror = std::move(mirror).value();
    }
    syslog_hostname_ = std::string(ctx.config("syslog_hostname").value_or("-"));
    sink_ = std::make_unique<AuditSink>(options);
    if (Status s = sink_->load(ctx); !s) return s;
    rules_ = std::make_unique<ReviewRules>(*sink_);
    if (Status s = rules_->load(ctx); !s) return s;
    if (Status s = subscribeForAccess(ctx); !s) return s;
    if (Status s = forwardToSyslog(ctx); !s) return s;
    if (Status s = wholeNumber(ctx, "purge_interval_s", 0, 31'536'000, purge_interval_s_); !s) {
      return s;
    }
    if (Status s = wholeNumber(ctx, "hmac_key_interval_s", 0, 86'400, hmac_key_interval_s_); !s) {
      return s;
    }
    if (hmac_key_interval_s_ > 0) {
      provisioner_.emplace(*sink_, static_cast<int64_t>(hmac_key_interval_s_) * 1000);
    }
    // The plugin's own jobs: shipping to syslog, purging what retention allows, HMAC keys,
    // and the checkpoint timer. Only the timer is optional: without it (a host that runs no
    // jobs) a log's tail is signed at its next record or read, as before the timer.
    {
      Status s = ctx.onJob([this](Context& c, std::string_view name, std::string_view) {
        if (name == SyslogForwarder::kJobName && forwarder_) return forwarder_->run(c, *sink_);
        if (name == kPurgeJob && purge_interval_s_ > 0) return purgeExpired(c);
        if (name == HmacProvisioner::kJobName && provisioner_) return provisioner_->run(c);
        if (name == kCheckpointJob) {
          return sink_->signOverdue(c, static_cast<int64_t>(c.nowUnixMs())).first_failure;
        }
        return Status::notFound("no job " + std::string(name));
      });
      const bool no_jobs =
          s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kUnimplemented;
      if (!s && (!no_jobs || forwarder_ || purge_interval_s_ > 0 || provisioner_)) return s;
      if (!s) no_job_handler_ = s.message();
    }

    // Rules review a record after it is durable, and never fail its write.
    Status s = ctx.provide("audit.v1", "write", [this](Context& c, std::string_view request) {
      auto written = sink_->write(c, request, static_cast<int64_t>(c.nowUnixMs()));
      if (written) rules_->review(c);
      return written;
    });
    if (s) {
      s = ctx.provide("audit.v1", "write_batch", [this](Context& c, std::string_view request) {
        auto written = sink_->writeBatch(c, request, static_cast<int64_t>(c.nowUnixMs()));
        if (written) rules_->review(c);
        return written;
      });
    }
    auto admin = [&](std::string_view method, std::string_view tail, std::string_view role,
                     Handler h) {
      if (s) s = ctx.adminRoute(method, std::string(kAdminPrefix) + std::string(tail), role, h);
    };
    auto data = [&](std::string_view tail, Handler h) {
      if (s) s = ctx.route("GET", "/audit/v1/" + std::string(tail), h);
    };
    // The log a request reads: the path's on the admin plane, the caller's own otherwise.
    auto adminLog = [](const Request& q) {
      std::string log(q.pathParam("log").value_or(""));
      return log == "_system" ? std::string() : log;
    };
    auto ownLog = [](Context& c, const Request&) { return std::string(c.tenant()); };
    using Resolver = std::function<std::string(Context&, const Request&)>;
    const Resolver admin_resolver = [adminLog](Context&, const Request& q) { return adminLog(q); };
    const Resolver data_resolver = ownLog;

    for (const auto& [resolver, is_admin] :
         {std::pair{admin_resolver, true}, std::pair{data_resolver, false}}) {
      auto records = [this, resolver, is_admin](Context& c, const Request& q, Response& r) {
        const std::string log = resolver(c, q);
        // Reading the audit log is itself audited (admin reads: by the kernel's admin gate).
        if (!is_admin) {
          if (Status s = c.auditEmit("audit.read", "audit/records", "{}"); !s) {
            c.warn("audit: cannot record this read: " + s.message());
          }
        }
        auto format = parseExportFormat(q.queryParam("format").value_or("jsonl"));
        if (!format) return problemFrom(r, format.status());
        auto out = exportRecords(
            sink_->recordsJsonl(log, number(q, "from").value_or(1),
                                std::min<uint64_t>(number(q, "limit").value_or(10000), 100000)),
            *format, syslog_hostname_);
        if (!out) return problemFrom(r, out.status());
        if (Status s = r.header("Content-Type", contentType(*format)); !s) return s;
        return r.body(*out);
      };
      auto checkpoints = [this, resolver](Context& c, const Request& q, Response& r) {
        const std::string log = resolver(c, q);
        // A reader may be the first to see that the interval passed.
        if (auto cp = sink_->checkpoint(c, log, static_cast<int64_t>(c.nowUnixMs()), false); !cp) {
          c.warn("audit: checkpoint not stored: " + cp.status().message());
        }
        if (Status s = r.header("Content-Type", "application/x-ndjson"); !s) return s;
        return r.body(sink_->checkpointsJsonl(log));
      };
      auto inclusion = [this, resolver](Context& c, const Request& q, Response& r) {
        auto seq = number(q, "seq");
        if (!seq) return r.problem(400, "seq= (a record's sequence number) is required");
        auto out = sink_->inclusionJson(resolver(c, q), *seq, number(q, "size"));
        if (!out) return problemFrom(r, out.status());
        return r.json(200, *out);
      };
      auto consistency = [this, resolver](Context& c, const Request& q, Response& r) {
        auto from = number(q, "from");
        if (!from) return r.problem(400, "from= (the older tree size) is required");
        auto out = sink_->consistencyJson(resolver(c, q), *from, number(q, "to"));
        if (!out) return problemFrom(r, out.status());
        return r.json(200, *out);
      };
      if (is_admin) {
        admin("GET", "logs/{log}/records", "auditor", records);
        admin("GET", "logs/{log}/checkpoints", "auditor", checkpoints);
        admin("GET", "logs/{log}/proof/inclusion", "auditor", inclusion);
        admin("GET", "logs/{log}/proof/consistency", "auditor", consistency);
      } else {
        data("records", records);
        data("checkpoints", checkpoints);
        data("proof/inclusion", inclusion);
        data("proof/consistency", consistency);
      }
    }
    auto public_key = [this](Context&, const Request&, Response& r) {
      if (Status s = r.header("Content-Type", "application/x-pem-file"); !s) return s;
      return r.body(sink_->publicPem());
    };
    admin("GET", "public-key", "auditor", public_key);
    data("public-key", public_key);
    admin("GET", "logs", "auditor",
          [this](Context&, const Request&, Response& r) { return r.json(200, sink_->logsJson()); });
    admin("GET", "status", "auditor", [this](Context&, const Request&, Response& r) {
      return r.json(200, sink_->keysStatusJson());
    });
    admin("POST", "logs/{log}/checkpoint", "operator",
          [this, adminLog](Context& c, const Request& q, Response& r) {
            auto cp = sink_->checkpoint(c, adminLog(q), static_cast<int64_t>(c.nowUnixMs()), true);
            if (!cp) return problemFrom(r, cp.status());
            if (!*cp) return r.problem(404, "the log has no records to sign");
            return r.json(200, (*cp)->toJson());
          });
    addRetentionRoutes(admin, data, adminLog);
    addRuleRoutes(admin, adminLog);
    admin("POST", "hmac", "auditor", [this](Context&, const Request& q, Response& r) {
      std::string tenant, value, key;
      try {
        auto o =
            Poco::JSON::Parser().parse(std::string(q.body())).extract<Poco::JSON::Object::Ptr>();
        tenant = o->optValue<std::string>("tenant", "");
        value = o->getValue<std::string>("value");
        key = o->optValue<std::string>("key", "");
      } catch (const Poco::Exception&) {
        return r.problem(400,
                         "the body is {\"tenant\": \"<id or empty>\", \"value\": \"…\", "
                         "\"key\": \"<key id, e.g. own or secrets:1; default the current one>\"}");
      }
      auto digest = sink_->hmacOf(tenant == "_system" ? "" : tenant, value, key);
      if (!digest) return problemFrom(r, digest.status());
      return r.json(200,
                    "{\"digest\":\"" + digest->digest + "\",\"key\":\"" + digest->key_id + "\"}");
    });
    admin("GET", "logs/{log}/hmac-keys", "auditor",
          [this, adminLog](Context&, const Request& q, Response& r) {
            return r.json(200, sink_->hmacKeysJson(adminLog(q)));
          });
    return s;
  }

 private:
  // Config `name`, if set, as a whole number in [min, max]; INVALID naming the key.
  static Status wholeNumber(InitContext& ctx, std::string_view name, uint64_t min, uint64_t max,
                            uint64_t& out) {
    auto v = ctx.config(name);
    if (!v) return Status::ok();
    const auto n = wholeNumberIn(*v);
    if (!n || *n < min || *n > max) {
      return Status::invalid(std::string(name) + ": expected a whole number from " +
                             std::to_string(min) + " to " + std::to_string(max) + ", got '" +
                             std::string(v->substr(0, 64)) + "'");
    }
    out = *n;
    return Status::ok();
  }

  // Config "sensitive_fields": a list of field names whose values are stored as HMACs.
  static Status sensitiveFields(InitContext& ctx, std::vector<std::string>& out) {
    auto v = ctx.config("sensitive_fields");
    if (!v) return Status::ok();
    constexpr std::string_view kShape = "sensitive_fields: expected a list of field names";
    Poco::JSON::Array::Ptr list;
    try {
      list = Poco::JSON::Parser().parse(std::string(*v)).extract<Poco::JSON::Array::Ptr>();
    } catch (const Poco::Exception&) {
      return Status::invalid(std::string(kShape));
    } catch (const std::exception&) {
      return Status::invalid(std::string(kShape));
    }
    for (size_t i = 0; i < list->size(); ++i) {
      const auto element = list->get(static_cast<unsigned>(i));
      if (!element.isString() || element.extract<std::string>().empty()) {
        return Status::invalid(std::string(kShape) + ", element " + std::to_string(i) +
                               " is not a non-empty string");
      }
      out.push_back(element.extract<std::string>());
    }
    return Status::ok();
  }

  // Config "retention" (default for every log, "365d") and "min_retention" (the least a
  // log's own retention may be, "30d").
  static Status retentionOptions(InitContext& ctx, SinkOptions& options) {
    for (auto [name, field] : {std::pair{"retention", &options.default_keep_s},
                               std::pair{"min_retention", &options.min_keep_s}}) {
      auto v = ctx.config(name);
      if (!v) continue;
      auto seconds = parseDuration(*v);
      if (!seconds || *seconds <= 0) {
        return Status::invalid(std::string(name) + ": " +
                               (seconds ? "must be more than 0s" : seconds.status().message()));
      }
      *field = *seconds;
    }
    if (options.default_keep_s < options.min_keep_s) {
      return Status::invalid("retention " + formatDuration(options.default_keep_s) +
                             " is less than min_retention " + formatDuration(options.min_keep_s));
    }
    return Status::ok();
  }

  template <typename AddAdmin, typename AddData, typename LogOf>
  void addRetentionRoutes(AddAdmin& admin, AddData& data, const LogOf& adminLog) {
    auto now = [](Context& c) { return static_cast<int64_t>(c.nowUnixMs()); };
    admin("GET", "logs/{log}/retention", "auditor",
          [this, adminLog](Context&, const Request& q, Response& r) {
            return r.json(200, sink_->retentionJson(adminLog(q)));
          });
    admin("PUT", "logs/{log}/retention", "operator",
          [this, adminLog, now](Context& c, const Request& q, Response& r) {
            auto keep = bodyMember(q, "keep");
            if (!keep) return r.problem(400, "the body is {\"keep\": \"<duration, e.g. 400d>\"}");
            auto seconds = parseDuration(*keep);
            if (!seconds) return problemFrom(r, seconds.status());
            auto out = sink_->setRetention(c, adminLog(q), *seconds, now(c));
            if (!out) return problemFrom(r, out.status());
            return r.json(200, *out);
          });
    admin("PUT", "logs/{log}/legal-hold", "auditor",
          [this, adminLog, now](Context& c, const Request& q, Response& r) {
            auto reason = bodyMember(q, "reason");
            if (!reason || reason->empty() || reason->size() > 1024) {
              return r.problem(400,
                               "the body is {\"reason\": \"<why, e.g. a case number; "
                               "1 to 1024 bytes>\"}");
            }
            auto out = sink_->setLegalHold(c, adminLog(q), *reason, now(c));
            if (!out) return problemFrom(r, out.status());
            return r.json(200, *out);
          });
    admin("DELETE", "logs/{log}/legal-hold", "auditor",
          [this, adminLog, now](Context& c, const Request& q, Response& r) {
            auto out = sink_->setLegalHold(c, adminLog(q), std::nullopt, now(c));
            if (!out) return problemFrom(r, out.status());
            return r.json(200, *out);
          });
    admin("POST", "logs/{log}/purge", "operator",
          [this, adminLog, now](Context& c, const Request& q, Response& r) {
            auto done = sink_->purge(c, adminLog(q), now(c));
            if (!done) return problemFrom(r, done.status());
            return r.json(200, "{\"purged_through\":" + std::to_string(done->purged_through) +
                                   ",\"records\":" + std::to_string(done->records) +
                                   ",\"recorded_as\":" + std::to_string(done->recorded_as) + "}");
          });
    auto purged = [this](const std::string& log, Response& r) {
      return r.json(200, sink_->purgedJson(log));
    };
    admin("GET", "logs/{log}/purged", "auditor",
          [purged, adminLog](Context&, const Request& q, Response& r) {
            return purged(adminLog(q), r);
          });
    data("purged", [purged](Context& c, const Request&, Response& r) {
      return purged(std::string(c.tenant()), r);
    });
    admin("GET", "logs/{log}/evidence", "auditor",
          [this, adminLog](Context& c, const Request& q, Response& r) {
            const std::string log = adminLog(q);
            if (Status s = r.header("Content-Type", "application/x-tar"); !s) return s;
            if (Status s = r.header("Content-Disposition", "attachment; filename=\"trellis-audit-" +
                                                               logName(log) + ".tar\"");
                !s) {
              return s;
            }
            return r.body(sink_->evidencePack(log, static_cast<int64_t>(c.nowUnixMs())));
          });
    data("retention", [this](Context& c, const Request&, Response& r) {
      return r.json(200, sink_->retentionJson(c.tenant()));
    });
  }

  // Review rules: defined and dry-run on the admin plane, per log.
  template <typename AddAdmin, typename LogOf>
  void addRuleRoutes(AddAdmin& admin, const LogOf& adminLog) {
    auto ruleLog = [adminLog](const Request& q) { return logName(adminLog(q)); };
    admin("GET", "logs/{log}/rules", "auditor",
          [this, ruleLog](Context&, const Request& q, Response& r) {
            return r.json(200, rules_->listJson(ruleLog(q)));
          });
    admin("PUT", "logs/{log}/rules/{name}", "operator",
          [this, ruleLog](Context& c, const Request& q, Response& r) {
            auto source = bodyMember(q, "source");
            if (!source)
              return r.problem(400, "the body is {\"source\": \"<Lua defining on_record>\"}");
            auto out = rules_->put(c, ruleLog(q), q.pathParam("name").value_or(""), *source,
                                   static_cast<int64_t>(c.nowUnixMs()));
            rules_->review(c);  // the change's own record
            if (!out) return problemFrom(r, out.status());
            return r.json(200, *out);
          });
    admin("DELETE", "logs/{log}/rules/{name}", "operator",
          [this, ruleLog](Context& c, const Request& q, Response& r) {
            Status s = rules_->remove(c, ruleLog(q), q.pathParam("name").value_or(""),
                                      static_cast<int64_t>(c.nowUnixMs()));
            rules_->review(c);
            if (!s) return problemFrom(r, s);
            return r.status(204);
          });
    admin("POST", "logs/{log}/rules/dry-run", "auditor",
          [this, ruleLog](Context& c, const Request& q, Response& r) {
            constexpr std::string_view kShape =
                "the body is {\"source\": \"<Lua>\"} or {\"rule\": \"<name>\"}, with optional "
                "\"from_ms\" and \"to_ms\" (Unix milliseconds)";
            const std::string log = ruleLog(q);
            std::string source;
            int64_t from_ms = 0, to_ms = INT64_MAX;
            try {
              auto o = Poco::JSON::Parser()
                           .parse(std::string(q.body()))
                           .extract<Poco::JSON::Object::Ptr>();
              if (o->has("source")) {
                source = o->getValue<std::string>("source");
              } else if (o->has("rule")) {
                auto stored = storedSource(log, o->getValue<std::string>("rule"));
                if (!stored) return problemFrom(r, stored.status());
                source = *stored;
              } else {
                return r.problem(400, std::string(kShape));
              }
              from_ms = o->optValue<int64_t>("from_ms", 0);
              to_ms = o->optValue<int64_t>("to_ms", INT64_MAX);
            } catch (const Poco::Exception&) {
              return r.problem(400, std::string(kShape));
            } catch (const std::exception&) {
              return r.problem(400, std::string(kShape));
            }
            auto out = rules_->dryRun(c, log, source, from_ms, to_ms);
            if (!out) return problemFrom(r, out.status());
            return r.json(200, *out);
          });
  }

  // The source of a stored rule, for a dry run of it.
  Result<std::string> storedSource(const std::string& log, const std::string& name) const {
    auto list =
        Poco::JSON::Parser().parse(rules_->listJson(log)).extract<Poco::JSON::Object::Ptr>();
    auto rules = list->getArray("rules");
    for (size_t i = 0; i < rules->size(); ++i) {
      auto rule = rules->getObject(static_cast<unsigned>(i));
      if (rule->getValue<std::string>("name") == name) return rule->getValue<std::string>("source");
    }
    return Status::notFound("log " + log + " has no review rule " + name);
  }

  // A string member of the request's JSON body, if the body is an object that has it.
  static std::optional<std::string> bodyMember(const Request& q, const std::string& name) {
    try {
      auto o = Poco::JSON::Parser().parse(std::string(q.body())).extract<Poco::JSON::Object::Ptr>();
      if (!o->has(name) || !o->get(name).isString()) return std::nullopt;
      return o->getValue<std::string>(name);
    } catch (const Poco::Exception&) {
      return std::nullopt;
    } catch (const std::exception&) {
      return std::nullopt;  // a body that is JSON but not an object
    }
  }

  // Config "access": record the named tenants' requests on the named routes, from the
  // usage stream (core/access_records.h). Without it the plugin does not subscribe.
  Status subscribeForAccess(InitContext& ctx) {
    auto v = ctx.config("access");
    if (!v || v->empty()) return Status::ok();
    auto rules = AccessRules::parse(*v);
    if (!rules) return rules.status();
    access_ = std::move(*rules);
    if (access_.empty()) return Status::ok();
    return ctx.onUsage(
        [this](Context& c, std::string_view records, uint32_t, std::string_view cursor) {
          return recordAccess(c, records, cursor);
        });
  }

  // A batch of usage records: the selected ones become records in their tenants' logs,
  // stored together, and the batch is acknowledged once they are (not before: at least once).
  Status recordAccess(Context& ctx, std::string_view records, std::string_view cursor) {
    std::string selected;
    size_t start = 0;
    while (start < records.size()) {
      size_t end = records.find('\n', start);
      if (end == std::string_view::npos) end = records.size();
      auto record = accessRecord(access_, records.substr(start, end - start));
      start = end + 1;
      if (!record) {
        ctx.warn("audit: skipped a usage record: " + record.status().message());
        continue;
      }
      if (!*record) continue;
      selected += **record;
      selected += '\n';
    }
    if (!selected.empty()) {
      auto written = sink_->writeBatch(ctx, selected, static_cast<int64_t>(ctx.nowUnixMs()));
      if (!written) return written.status();  // delivered again later
      rules_->review(ctx);
    }
    return ctx.ackUsage(cursor);
  }

  // Config "syslog_url" (tcp:// or tls://host:port) and "syslog_interval_s": the logs
  // are shipped there by the plugin's own durable job (syslog_forwarder.h).
  Status forwardToSyslog(InitContext& ctx) {
    auto url = ctx.config("syslog_url");
    if (!url) return Status::ok();
    if (Status s = SyslogForwarder::checkUrl(*url); !s) return s;
    if (Status s = wholeNumber(ctx, "syslog_interval_s", 1, 86'400, forward_interval_s_); !s) {
      return s;
    }
    forwarder_.emplace(ForwarderOptions{.url = std::string(*url), .hostname = syslog_hostname_});
    return Status::ok();
  }

  // The scheduled purge: every log purged as POST logs/{log}/purge would, each purge a
  // signed audit.purge record of its log. A log under legal hold is left as it is (that
  // is the hold working, not a failure); any other failure fails the run, after the
  // other logs had their turn, so the job retries it.
  Status purgeExpired(Context& c) {
    Status first = Status::ok();
    for (const std::string& tenant : sink_->logNames()) {
      auto done = sink_->purge(c, tenant, static_cast<int64_t>(c.nowUnixMs()), /*scheduled=*/true);
      if (done) {
        if (done->records > 0) {
          c.info("audit: scheduled purge of log " + logName(tenant) + ": records 1.." +
                 std::to_string(done->purged_through) + " purged, recorded as seq " +
                 std::to_string(done->recorded_as));
        }
      } else if (done.status().code() != StatusCode::kConflict) {
        c.warn("audit: scheduled purge of log " + logName(tenant) +
               " failed: " + done.status().message());
        if (first) first = done.status();
      }
    }
    return first;
  }

  // Starts (or, without syslog_url, ends) the forwarding job; scheduling it again on every
  // start keeps one job, with the interval of the current config.
  // Likewise the purge job (config purge_interval_s, 0 = none).
  Status start(Context& ctx) override {
    // Nothing to cancel: no such job, or a host that runs no jobs at all.
    auto cancel = [&ctx](std::string_view name) {
      Status s = ctx.cancelJob(name);
      const bool none = s.code() == StatusCode::kNotFound || s.code() == StatusCode::kUnavailable;
      return none ? Status::ok() : s;
    };
    if (!forwarder_) {
      if (Status s = cancel(SyslogForwarder::kJobName); !s) return s;
    } else {
      Job job = Job::every(std::string(SyslogForwarder::kJobName), forward_interval_s_ * 1000)
                    .durable(100);  // ~8 h of backoff before a dead letter
      job.budget_ms = 60'000;
      if (Status s = ctx.schedule(job); !s) return s;
    }
    // Not durable: every run looks at what is due now, so a missed run loses nothing.
    if (!provisioner_) {
      if (Status s = cancel(HmacProvisioner::kJobName); !s) return s;
    } else {
      Job job = Job::every(std::string(HmacProvisioner::kJobName), hmac_key_interval_s_ * 1000);
      job.budget_ms = 60'000;
      // secrets.v1 is optional: a host that runs no jobs keeps the own keys, as with 0.
      Status s = ctx.schedule(job);
      if (s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kUnimplemented) {
        ctx.warn("audit: HMAC keys stay the plugin's own: " + s.message());
      } else if (!s) {
        return s;
      }
    }
    if (Status s = scheduleCheckpointTimer(ctx); !s) return s;
    if (purge_interval_s_ == 0) return cancel(kPurgeJob);
    Job job = Job::every(std::string(kPurgeJob), purge_interval_s_ * 1000).durable(100);
    job.budget_ms = 600'000;  // a first purge of a large log deletes many lines
    return ctx.schedule(job);
  }

  // The checkpoint timer: not durable (every run signs what is overdue then, so a missed
  // run loses nothing). A host that runs no jobs keeps the at-next-record-or-read signing,
  // and says so once.
  Status scheduleCheckpointTimer(Context& ctx) {
    Status s = Status::unavailable(no_job_handler_);
    if (no_job_handler_.empty()) {
      Job job = Job::every(std::string(kCheckpointJob), checkpoint_timer_ms_);
      job.budget_ms = 60'000;
      s = ctx.schedule(job);
    }
    if (s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kUnimplemented) {
      ctx.warn("audit: no checkpoint timer (" + s.message() +
               "): a log's newest records are signed at its next record or read once "
               "checkpoint_interval_s has passed, not while it is idle");
      return Status::ok();
    }
    return s;
  }

  static std::string contentType(ExportFormat format) {
    switch (format) {
      case ExportFormat::kJsonLines: return "application/x-ndjson";
      case ExportFormat::kCef: return "text/plain; charset=utf-8";
      case ExportFormat::kSyslog: return "application/octet-stream";  // octet-counted frames
    }
    return "application/octet-stream";
  }

  AccessRules access_;
  std::unique_ptr<AuditSink> sink_;
  std::unique_ptr<ReviewRules> rules_;
  std::string syslog_hostname_;  // HOSTNAME of syslog exports (config syslog_hostname; "-")
  std::optional<SyslogForwarder> forwarder_;  // config syslog_url
  uint64_t forward_interval_s_ = 5;
  uint64_t purge_interval_s_ = 86'400;  // config purge_interval_s; 0: no scheduled purge
  uint64_t hmac_key_interval_s_ = 10;   // config hmac_key_interval_s; 0: own keys only
  std::optional<HmacProvisioner> provisioner_;
  static constexpr std::string_view kPurgeJob = "retention-purge";
  // Every checkpoint_timer_ms_ the logs whose oldest unsigned record is
  // checkpoint_interval_s old are signed (AuditSink::signOverdue).
  static constexpr std::string_view kCheckpointJob = "checkpoint-timer";
  static constexpr uint64_t kMinJobIntervalMs = 1000;  // the host's shortest `every`
  uint64_t checkpoint_timer_ms_ = kMinJobIntervalMs;
  std::string no_job_handler_;  // why the host cannot run the plugin's jobs ("": it can)
};

}  // namespace
}  // namespace trellis::audit

TRELLIS_PLUGIN(trellis::audit::AuditPlugin, "trellis/audit", "0.1.0")
