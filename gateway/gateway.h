// The request lifecycle shared by every edge (HTTP, gRPC): validate, classify against the policy,
// dispatch to the chosen backend, meter the outcome.
#ifndef SWITCHYARD_GATEWAY_GATEWAY_H_
#define SWITCHYARD_GATEWAY_GATEWAY_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "backends/backend.h"
#include "gateway/auth.h"
#include "gateway/budget.h"
#include "gateway/config.h"
#include "gateway/decision_log.h"
#include "gateway/engine_metrics.h"
#include "gateway/gateway_metrics.h"
#include "gateway/request_record.h"
#include "policies/policy_set.h"

namespace switchyard::gateway {

// A request as the edges parse it, before routing. Wire-format neutral.
struct InboundRequest {
  std::string requested_model = "auto";
  backends::ChatRequest chat;
  std::map<std::string, std::string> metadata;
  bool stream = false;
  bool include_usage = false;  // OpenAI stream_options.include_usage
  std::string tenant;    // set by the edge from the caller's credentials, never from the body
  std::string key_name;  // the API key's configured name
  std::string edge;      // "openai", "anthropic" or "grpc"; set by the edge
  // When the edge had the whole request; the start of the gateway's own time (overhead metric).
  std::chrono::steady_clock::time_point received{};
};

// Sets the request's tenant and key from its credentials. An authenticated tenant replaces any
// caller-supplied metadata["tenant"], so policies that read it see the authenticated one.
void ApplyPrincipal(const Principal& principal, InboundRequest& request);

// Prices usage on the configured targets. Shared by a config generation's requests, which
// outlive it safely (it holds no backends).
struct Pricing {
  std::map<std::string, Price, std::less<>> prices;
  std::string reference_target;  // "" = no savings are computed

  // USD for `usage` on `target` (0 for an unknown target).
  double Cost(std::string_view target, const backends::Usage& usage) const;
  // The same usage on the reference target minus `cost_usd`; 0 without a reference target.
  double Savings(const backends::Usage& usage, double cost_usd) const;
};

// What the policy sees of a request. Views into `request`, which must outlive the result.
policies::RequestFeatures FeaturesOf(const InboundRequest& request);

// Everything one config generation needs at run time. Immutable; swapped whole, and kept alive
// by every request that started under it.
struct Runtime {
  Config config;
  std::shared_ptr<const Pricing> pricing;
  std::map<std::string, std::shared_ptr<backends::Backend>, std::less<>> backends;
};

// A routed request: the decision and the runtime it was made under.
struct Routed {
  policies::Decision decision;
  std::shared_ptr<const Runtime> runtime;
  // The request's hold on its tenant's and key's budgets (null when it is charged to none).
  std::shared_ptr<Reservation> reservation;
  // Why a spent budget changed the decision ("" when it did not); sent as x-switchyard-budget.
  std::string budget_note;
  std::string_view locality() const {
    return decision.locality == policies::Locality::kLocal ? "local" : "remote";
  }
};

// Builds the backend for one target. Injected so tests can substitute backends.
using BackendFactory = std::function<absl::StatusOr<std::shared_ptr<backends::Backend>>(
    const TargetConfig& target, const Config& config)>;

class Gateway {
 public:
  // Builds every target's backend (loading local models) and the metrics.
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(Config config, BackendFactory factory);

  // Swaps in a new config: the policy and targets change atomically for new requests, while
  // requests in flight finish under the runtime they started with. Backends of targets whose
  // settings did not change are kept (no model reload). On error nothing changes.
  absl::Status Reload(Config config);

  // Validates the requested model and classifies the request into `routed` (whose decision is
  // filled in even when the policy denies). NotFound for an unknown model, PermissionDenied when
  // the policy denies (the message is the policy's).
  absl::Status Route(const InboundRequest& request, Routed& routed) const;

  // Resolves a client's presented API key against the current config (see Authenticate in
  // auth.h); a refusal is counted in the metrics and the decision log, under `edge` (where the
  // request arrived: openai, anthropic or grpc).
  absl::StatusOr<Principal> Authenticate(std::optional<std::string_view> presented_key,
                                         std::string_view edge);

  // Route() for a request about to run, then its tenant's and key's limits: the estimated cost is
  // reserved (routed.reservation). ResourceExhausted (with a Retry-After payload for rate limits,
  // see RetryAfterSeconds) when a limit refuses; a spent budget set to `downgrade` re-routes to a
  // cleared local target instead. A refusal is also counted in the metrics.
  absl::Status Admit(const InboundRequest& request, Routed& routed);

  // Starts the routed request. The sink sees the backend's deltas and exactly one OnDone (or
  // nothing after the returned call is cancelled). Metrics are recorded when the request ends.
  std::unique_ptr<backends::Call> Dispatch(const Routed& routed, const InboundRequest& request,
                                           std::shared_ptr<backends::ChatSink> sink);

  // Records a request that ended before dispatch (bad input, denied, unknown model): builds its
  // record (rejected = true) from what is known of it and hands it to Finished. `request` is
  // null when the body could not be parsed; `edge` then names where it arrived.
  void RecordRejected(const absl::Status& status, const policies::Decision* decision,
                      const InboundRequest* request = nullptr, std::string_view edge = "");

  // Every request ends here exactly once, dispatched or not: the one place that meters it
  // (a rejected record as a rejection) and writes it to the decision log.
  void Finished(const RequestRecord& record);

  // The decision log; null when the config has none.
  DecisionLog* decision_log() { return decision_log_.get(); }

  std::shared_ptr<const Runtime> runtime() const;
  GatewayMetrics& metrics() { return *metrics_; }
  std::string NewRequestId();

  // Requests dispatched and not yet finished; the drain on shutdown waits for zero.
  int64_t in_flight() const { return in_flight_.load(); }

 private:
  Gateway() = default;
  absl::Status AdmitBudget(const InboundRequest& request, Routed& routed);

  mutable absl::Mutex mu_;
  std::shared_ptr<const Runtime> runtime_ ABSL_GUARDED_BY(mu_);
  BackendFactory factory_;
  absl::Mutex reload_mu_;  // one reload at a time
  std::unique_ptr<GatewayMetrics> metrics_;
  std::shared_ptr<Ledger> ledger_;
  std::unique_ptr<LedgerFile> ledger_file_;  // when metering.state_file is set
  // Declared after metrics_ so it detaches from the registry before the registry goes.
  std::unique_ptr<EngineMetrics> engine_metrics_;
  // After metrics_: its counters live in the registry. Fixed at start (a reload warns).
  std::unique_ptr<DecisionLog> decision_log_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> next_id_{0};
  uint64_t id_prefix_ = 0;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_GATEWAY_H_
