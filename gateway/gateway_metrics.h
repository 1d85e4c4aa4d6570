// The gateway's metric families, registered once, and the hooks the request path calls.
// Names share the `switchyard_` prefix; labels are low-cardinality (target, rule, locality,
// outcome: all bounded by the config).
#ifndef SWITCHYARD_GATEWAY_GATEWAY_METRICS_H_
#define SWITCHYARD_GATEWAY_GATEWAY_METRICS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "backends/backend.h"
#include "gateway/decision_log.h"
#include "gateway/metrics.h"
#include "gateway/request_record.h"

namespace switchyard::gateway {

struct Config;
class Ledger;

class GatewayMetrics {
 public:
  explicit GatewayMetrics(const Config& config);

  // One dispatched request ended (any outcome, "cancelled" when the client went away): requests,
  // tokens, duration, time to first token, gateway overhead, spend and savings.
  void ObserveRequest(const RequestRecord& record);
  // A request was classified: its sensitivity level and where it may go (local, remote, denied).
  void ObserveDecision(std::string_view level, std::string_view locality) {
    decisions_.WithLabels({level, locality}).Increment();
  }
  // A tenant's or key's USD budget was found spent; `action` is reject or downgrade.
  void ObserveBudgetExhausted(std::string_view tenant, std::string_view action) {
    budget_exhausted_.WithLabels({TenantLabel(tenant), action}).Increment();
  }
  // Exports switchyard_budget_remaining_usd{tenant,window} for every configured tenant with a USD
  // limit, read from `ledger` at scrape time; replaces the previous config's set.
  void SetBudgets(const Config& config, std::shared_ptr<Ledger> ledger);
  // A request refused before dispatch (bad input, unknown model, denied by policy).
  void ObserveRejected(std::string_view rule, std::string_view outcome);

  // Exports each remote target's circuit breaker as switchyard_upstream_breaker_state{target}
  // (0 closed, 1 half-open, 2 open), read at scrape time.
  void AddBreakerStates(
      const std::map<std::string, std::shared_ptr<backends::Backend>, std::less<>>& backends);

  // Exports each remote target's upstream counters, read at scrape time:
  // switchyard_upstream_retries_total{target}, switchyard_upstream_errors_total{target,kind},
  // switchyard_upstream_retry_budget_exhausted_total{target} and
  // switchyard_upstream_implausible_usage_total{target}. Called again after a reload, it
  // points the series at the new backends.
  void SetUpstreamStats(
      const std::map<std::string, std::shared_ptr<backends::Backend>, std::less<>>& backends);

  // A request moved on from the first target of its route to `to`.
  void ObserveFallback(std::string_view from, std::string_view to) {
    fallbacks_.WithLabels({from, to}).Increment();
  }
  // A reload: the old policy version reads 0, the new one 1, and the reload is counted.
  void SetPolicyVersion(std::string_view old_version, std::string_view new_version);
  // A reload that was refused (the old config keeps serving).
  void ObserveReloadFailure() { reloads_.WithLabels({"error"}).Increment(); }

  // switchyard_decision_log_lines_total and switchyard_decision_log_dropped_total{reason}.
  DecisionLogCounters decision_log_counters() {
    return {decision_log_lines_.WithLabels({}), decision_log_dropped_.WithLabels({"overflow"}),
            decision_log_dropped_.WithLabels({"write_error"})};
  }

  MetricsRegistry& registry() { return registry_; }
  std::string Render() const { return registry_.Render(); }

 private:
  static std::string_view TenantLabel(std::string_view tenant) {
    return tenant.empty() ? "anonymous" : tenant;
  }

  const bool per_key_labels_;
  MetricsRegistry registry_;
  Family<Counter>& requests_;
  Family<Counter>& rejected_;
  Family<Counter>& tokens_prompt_;
  Family<Counter>& tokens_completion_;
  Family<Histogram>& duration_;
  Family<Gauge>& policy_info_;
  Family<Counter>& reloads_;
  Family<Counter>& fallbacks_;
  Family<Counter>& decision_log_lines_;
  Family<Counter>& decision_log_dropped_;
  // Registered by the first SetUpstreamStats.
  CallbackFamily* upstream_retries_ = nullptr;
  CallbackFamily* upstream_errors_ = nullptr;
  CallbackFamily* upstream_budget_exhausted_ = nullptr;
  CallbackFamily* upstream_implausible_usage_ = nullptr;
  Family<Counter>& decisions_;
  Family<Counter>& spend_;
  Family<Counter>& savings_;
  Family<Counter>& budget_exhausted_;
  Family<Histogram>& ttft_;
  Family<Histogram>& overhead_;
  CallbackFamily& budget_remaining_;
  std::vector<std::vector<std::string>> budget_series_;  // label values set by SetBudgets
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_GATEWAY_METRICS_H_
