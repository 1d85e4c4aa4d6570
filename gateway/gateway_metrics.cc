#include "gateway/gateway_metrics.h"

#include "backends/remote/remote_call.h"
#include "gateway/budget.h"
#include "gateway/config.h"

namespace switchyard::gateway {

namespace {

std::vector<std::string> WithKey(std::vector<std::string> labels, bool per_key) {
  if (per_key) labels.push_back("key");
  return labels;
}

}  // namespace

GatewayMetrics::GatewayMetrics(const Config& config)
    : per_key_labels_(config.metrics_per_key_labels),
      requests_(registry_.AddCounter(
          "switchyard_requests_total",
          "Chat requests dispatched to a target, by tenant, rule and how they ended.",
          WithKey({"tenant", "target", "rule", "locality", "outcome"}, per_key_labels_))),
      rejected_(registry_.AddCounter(
          "switchyard_requests_rejected_total",
          "Chat requests refused before dispatch (invalid, unknown model, denied by policy).",
          {"rule", "outcome"})),
      tokens_prompt_(registry_.AddCounter("switchyard_tokens_prompt_total",
                                          "Prompt tokens of finished requests, by target.",
                                          {"target"})),
      tokens_completion_(registry_.AddCounter("switchyard_tokens_completion_total",
                                              "Completion tokens of finished requests, by target.",
                                              {"target"})),
      duration_(registry_.AddHistogram(
          "switchyard_request_duration_seconds",
          "Time from dispatch to the last byte from the target, by target and outcome.",
          {"target", "outcome"}, ExponentialBuckets(0.001, 2.5, 14))),
      policy_info_(registry_.AddGauge("switchyard_policy_info",
                                      "The policy version serving requests (1) and earlier ones (0).",
                                      {"policy_version"})),
      reloads_(registry_.AddCounter("switchyard_config_reloads_total",
                                    "Config reloads (SIGHUP or file change), by outcome.",
                                    {"outcome"})),
      fallbacks_(registry_.AddCounter(
          "switchyard_fallbacks_total",
          "Requests that moved on from their route's first target, by first and actual target.",
          {"from", "to"})),
      decision_log_lines_(registry_.AddCounter(
          "switchyard_decision_log_lines_total",
          "Records written to the decision log (written and synced).", {})),
      decision_log_dropped_(registry_.AddCounter(
          "switchyard_decision_log_dropped_total",
          "Decision log records lost: queue full (overflow) or a failed write (write_error).",
          {"reason"})),
      decisions_(registry_.AddCounter(
          "switchyard_decisions_total",
          "Classified requests by sensitivity level and where they may go (local, remote, denied).",
          {"level", "locality"})),
      spend_(registry_.AddCounter(
          "switchyard_spend_usd_total",
          "USD spent: provider-reported usage priced at the serving target's prices.",
          WithKey({"tenant", "target"}, per_key_labels_))),
      savings_(registry_.AddCounter(
          "switchyard_savings_usd_total",
          "USD saved: the same usage priced on metering.reference_target, minus the spend.",
          {"tenant", "target"})),
      budget_exhausted_(registry_.AddCounter(
          "switchyard_budget_exhausted_total",
          "Requests that found a USD budget spent, by tenant and action (reject or downgrade).",
          {"tenant", "action"})),
      ttft_(registry_.AddHistogram(
          "switchyard_time_to_first_token_seconds",
          "Time from dispatch to the first output delta of a streamed answer, by serving target.",
          {"target"},
          ExponentialBuckets(0.005, 2, 14))),
      overhead_(registry_.AddHistogram(
          "switchyard_gateway_overhead_seconds",
          "Time a request spent in the gateway outside the backend: admission (auth, parsing, "
          "classification, budgets) plus encoding streamed deltas.",
          {}, ExponentialBuckets(0.00001, 2.5, 14))),
      budget_remaining_(registry_.AddCallbackGauge(
          "switchyard_budget_remaining_usd",
          "USD left in each tenant's budget window (day or month), read at scrape time.",
          {"tenant", "window"})) {
  AddBuildInfo(registry_, SWITCHYARD_VERSION);
  // Pre-create the success series of every target so rate() sees a zero from the first scrape.
  for (const TargetConfig& target : config.targets) {
    tokens_prompt_.WithLabels({target.name});
    tokens_completion_.WithLabels({target.name});
  }
  for (const TenantConfig& tenant : config.auth.tenants) {
    for (std::string_view action : {"reject", "downgrade"}) {
      budget_exhausted_.WithLabels({tenant.name, action});
    }
  }
  policy_info_.WithLabels({config.version}).Set(1);
  reloads_.WithLabels({"ok"});
  reloads_.WithLabels({"error"});
  decision_log_lines_.WithLabels({});
  decision_log_dropped_.WithLabels({"overflow"});
  decision_log_dropped_.WithLabels({"write_error"});
}

void GatewayMetrics::ObserveRequest(const RequestRecord& record) {
  const std::string_view tenant = TenantLabel(record.tenant);
  const std::string_view target = record.target;
  const std::string_view served_by = record.served_by.empty() ? target : record.served_by;
  const backends::Usage& usage = record.usage;
  if (per_key_labels_) {
    requests_.WithLabels({tenant, target, record.rule, record.locality, record.outcome,
                          record.key_name}).Increment();
    spend_.WithLabels({tenant, served_by, record.key_name}).Increment(record.cost_usd);
  } else {
    requests_.WithLabels({tenant, target, record.rule, record.locality, record.outcome})
        .Increment();
    spend_.WithLabels({tenant, served_by}).Increment(record.cost_usd);
  }
  savings_.WithLabels({tenant, served_by}).Increment(std::max(0.0, record.savings_usd));
  tokens_prompt_.WithLabels({served_by}).Increment(static_cast<double>(usage.prompt_tokens));
  tokens_completion_.WithLabels({served_by})
      .Increment(static_cast<double>(usage.completion_tokens));
  duration_.WithLabels({target, record.outcome}).Observe(record.duration_seconds);
  // Only a stream has a first token worth timing: a unary answer from a remote target arrives
  // in one piece, so its "first token" would be the whole answer.
  if (record.stream && record.ttft_seconds >= 0) {
    ttft_.WithLabels({served_by}).Observe(record.ttft_seconds);
  }
  overhead_.WithLabels({}).Observe(record.gateway_overhead_seconds);
}

void GatewayMetrics::SetBudgets(const Config& config, std::shared_ptr<Ledger> ledger) {
  for (const std::vector<std::string>& series : budget_series_) {
    budget_remaining_.Remove({series[0], series[1]});
  }
  budget_series_.clear();
  for (const TenantConfig& tenant : config.auth.tenants) {
    const std::string id = "tenant:" + tenant.name;
    std::weak_ptr<Ledger> weak = ledger;
    if (const std::optional<double> limit = tenant.limits.usd_per_day) {
      budget_series_.push_back({tenant.name, "day"});
      budget_remaining_.Set({tenant.name, "day"}, [weak, id, limit = *limit] {
        std::shared_ptr<Ledger> ledger = weak.lock();
        return ledger == nullptr ? limit : std::max(0.0, limit - ledger->SpentToday(id));
      });
    }
    if (const std::optional<double> limit = tenant.limits.usd_per_month) {
      budget_series_.push_back({tenant.name, "month"});
      budget_remaining_.Set({tenant.name, "month"}, [weak, id, limit = *limit] {
        std::shared_ptr<Ledger> ledger = weak.lock();
        return ledger == nullptr ? limit : std::max(0.0, limit - ledger->SpentThisMonth(id));
      });
    }
  }
}

void GatewayMetrics::SetPolicyVersion(std::string_view old_version,
                                      std::string_view new_version) {
  if (old_version != new_version) policy_info_.WithLabels({old_version}).Set(0);
  policy_info_.WithLabels({new_version}).Set(1);
  reloads_.WithLabels({"ok"}).Increment();
}

void GatewayMetrics::AddBreakerStates(
    const std::map<std::string, std::shared_ptr<backends::Backend>, std::less<>>& backends) {
  CallbackFamily& states = registry_.AddCallbackGauge(
      "switchyard_upstream_breaker_state",
      "Circuit breaker of each remote target: 0 closed, 1 half-open (probing), 2 open (ejected).",
      {"target"});
  for (const auto& [name, backend] : backends) {
    auto remote = std::dynamic_pointer_cast<backends::RemoteBackend>(backend);
    if (remote == nullptr) continue;
    // Weak: a scrape must not keep a target that a reload removed alive.
    std::weak_ptr<backends::RemoteBackend> weak = remote;
    states.Set({name}, [weak] {
      std::shared_ptr<backends::RemoteBackend> target = weak.lock();
      if (target == nullptr) return 0.0;
      switch (target->breaker().state()) {
        case backends::BreakerState::kClosed:
          return 0.0;
        case backends::BreakerState::kHalfOpen:
          return 1.0;
        case backends::BreakerState::kOpen:
          return 2.0;
      }
      return 0.0;
    });
  }
}

void GatewayMetrics::SetUpstreamStats(
    const std::map<std::string, std::shared_ptr<backends::Backend>, std::less<>>& backends) {
  if (upstream_retries_ == nullptr) {
    upstream_retries_ = &registry_.AddCallbackCounter(
        "switchyard_upstream_retries_total",
        "Upstream attempts repeated after a failure, by remote target.", {"target"});
    upstream_errors_ = &registry_.AddCallbackCounter(
        "switchyard_upstream_errors_total",
        "Failed upstream attempts (retried or not), by remote target and kind: connect, timeout, "
        "rate_limited, server_error, client_error, bad_response.",
        {"target", "kind"});
    upstream_budget_exhausted_ = &registry_.AddCallbackCounter(
        "switchyard_upstream_retry_budget_exhausted_total",
        "Retries refused by a remote target's retry budget (the request failed over or ended).",
        {"target"});
    upstream_implausible_usage_ = &registry_.AddCallbackCounter(
        "switchyard_upstream_implausible_usage_total",
        "Upstream answers with a token count below zero or over 10^9, which was not believed, "
        "by remote target.",
        {"target"});
  }
  for (const auto& [name, backend] : backends) {
    auto remote = std::dynamic_pointer_cast<backends::RemoteBackend>(backend);
    if (remote == nullptr) continue;
    // Weak: a scrape must not keep a target that a reload removed alive.
    std::weak_ptr<backends::RemoteBackend> weak = remote;
    auto read = [weak](auto get) {
      return [weak, get] {
        std::shared_ptr<backends::RemoteBackend> target = weak.lock();
        return target == nullptr ? 0.0 : static_cast<double>(get(target->stats()));
      };
    };
    upstream_retries_->Set({name}, read([](const backends::UpstreamStats& s) {
                             return s.retries();
                           }));
    upstream_budget_exhausted_->Set({name}, read([](const backends::UpstreamStats& s) {
                                      return s.retry_budget_exhausted();
                                    }));
    upstream_implausible_usage_->Set({name}, read([](const backends::UpstreamStats& s) {
                                       return s.implausible_usage();
                                     }));
    for (int k = 0; k < backends::kUpstreamErrorKinds; ++k) {
      const auto kind = static_cast<backends::UpstreamErrorKind>(k);
      upstream_errors_->Set({name, backends::UpstreamErrorKindName(kind)},
                            read([kind](const backends::UpstreamStats& s) {
                              return s.errors(kind);
                            }));
    }
  }
}

void GatewayMetrics::ObserveRejected(std::string_view rule, std::string_view outcome) {
  rejected_.WithLabels({rule, outcome}).Increment();
}

}  // namespace switchyard::gateway
