#include "gateway/gateway.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backends/sink_guard.h"
#include "gateway/log.h"
#include "gateway/redaction.h"
#include "gateway/status_map.h"
#include "gateway/token_counter.h"

namespace switchyard::gateway {
namespace {

// Wraps the edge's sink: fills in the request's record as it runs, prices it, settles its
// budget reservation and hands the record to Gateway::Finished when the request ends; keeps the
// in-flight gauge honest. Ends a stream whose running cost reaches its budget with an error.
class MeteredSink : public backends::ChatSink {
 public:
  MeteredSink(std::shared_ptr<backends::ChatSink> inner, Gateway& gateway,
              std::atomic<int64_t>& in_flight, RequestRecord record,
              std::shared_ptr<const Pricing> pricing, std::shared_ptr<Reservation> reservation,
              int64_t prompt_tokens_estimate, std::chrono::steady_clock::time_point received)
      : inner_(std::move(inner)),
        gateway_(gateway),
        in_flight_(in_flight),
        record_(std::move(record)),
        pricing_(std::move(pricing)),
        reservation_(std::move(reservation)),
        prompt_tokens_estimate_(prompt_tokens_estimate),
        start_(std::chrono::steady_clock::now()) {
    in_flight_.fetch_add(1);
    if (received != std::chrono::steady_clock::time_point{} && received < start_) {
      overhead_seconds_ = std::chrono::duration<double>(start_ - received).count();
    }
  }

  ~MeteredSink() override {
    // A request cancelled by its client never reaches OnDone; it still ends here.
    if (!done_) Finish("cancelled", EstimatedUsage());
  }

  // A fallback moved the request to another target.
  void SetServedBy(const std::string& target) { record_.served_by = target; }

  void OnDelta(std::string_view text) override {
    if (done_) return;
    if (record_.ttft_seconds < 0) record_.ttft_seconds = Elapsed();
    delta_bytes_ += text.size();
    if (reservation_ != nullptr) {
      const double running = pricing_->Cost(record_.served_by, EstimatedUsage());
      // Only a stream is cut: a whole answer is cheaper to finish than to throw away, and
      // admission bounds its overshoot.
      if (!reservation_->Running(running) && record_.stream) {
        // The budget ran out mid-stream: end it with an explicit error, never a normal end. The
        // edge cancels the backend call when it sees the error.
        const absl::Status status = absl::ResourceExhaustedError(absl::StrCat(
            "budget exhausted mid-stream for tenant '", record_.tenant, "' after ",
            absl::StrFormat("%.6f", running), " USD; the rest of the answer was not generated"));
        Finish(MapStatus(status.code()).outcome, EstimatedUsage());
        Timed([&] { inner_->OnDone(status, {}); });
        return;
      }
    }
    Timed([&] { inner_->OnDelta(text); });
  }
  void BeginBurst() override {
    if (!done_) inner_->BeginBurst();
  }
  void EndBurst() override {
    if (!done_) inner_->EndBurst();
  }

  void OnDone(const absl::Status& status, const backends::Completion& completion) override {
    if (done_) return;
    if (!completion.served_by.empty()) record_.served_by = completion.served_by;
    backends::Completion metered = completion;
    // A request that failed before any text is charged only what its backend counted (an
    // upstream that refused it bills nothing); one that failed midway, for its text too.
    const backends::Usage estimate =
        status.ok() || delta_bytes_ > 0 ? EstimatedUsage() : backends::Usage{};
    metered.usage = MeteredUsage(completion.usage, estimate);
    if (!status.ok()) {
      // The count at the failure may lag the text the client already has (Gemini counts per
      // chunk; Anthropic's comes at the end).
      metered.usage.completion_tokens =
          std::max(metered.usage.completion_tokens, estimate.completion_tokens);
    }
    Finish(status.ok() ? "ok" : MapStatus(status.code()).outcome, metered.usage);
    inner_->OnDone(status, metered);
  }

 private:
  double Elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

  template <typename F>
  void Timed(F f) {
    const auto before = std::chrono::steady_clock::now();
    f();
    overhead_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - before).count();
  }

  // What the request has used so far when the backend has not reported usage: the prompt
  // estimate and the output at four bytes per token.
  backends::Usage EstimatedUsage() const {
    return {prompt_tokens_estimate_, static_cast<int64_t>((delta_bytes_ + 3) / 4)};
  }

  // The usage charged and shown to the client: each count the backend reported, else
  // `estimate`'s. Remote backends check their upstream's counts; one that slips through
  // implausible must still not refund a budget or run a counter backwards.
  static backends::Usage MeteredUsage(const backends::Usage& reported,
                                      const backends::Usage& estimate) {
    backends::Usage usage = estimate;
    if (reported.prompt_reported && backends::PlausibleTokenCount(reported.prompt_tokens)) {
      usage.prompt_tokens = reported.prompt_tokens;
    }
    if (reported.completion_reported &&
        backends::PlausibleTokenCount(reported.completion_tokens)) {
      usage.completion_tokens = reported.completion_tokens;
    }
    return usage;
  }

  void Finish(std::string_view outcome, const backends::Usage& usage) {
    done_ = true;
    record_.outcome = std::string(outcome);
    record_.usage = usage;
    record_.duration_seconds = Elapsed();
    record_.cost_usd = pricing_->Cost(record_.served_by, usage);
    record_.savings_usd = pricing_->Savings(usage, record_.cost_usd);
    record_.gateway_overhead_seconds = overhead_seconds_;
    if (reservation_ != nullptr) {
      reservation_->Settle(record_.cost_usd, usage.prompt_tokens + usage.completion_tokens);
    }
    gateway_.Finished(record_);
    in_flight_.fetch_sub(1);
  }

  std::shared_ptr<backends::ChatSink> inner_;
  Gateway& gateway_;
  std::atomic<int64_t>& in_flight_;
  RequestRecord record_;
  const std::shared_ptr<const Pricing> pricing_;
  const std::shared_ptr<Reservation> reservation_;
  const int64_t prompt_tokens_estimate_;
  std::chrono::steady_clock::time_point start_;
  size_t delta_bytes_ = 0;
  double overhead_seconds_ = 0;
  bool done_ = false;
};

// The record of a request, before it runs or as it is refused. `decision` is null when the
// request was refused before classification.
RequestRecord RecordOf(const policies::Decision* decision, const InboundRequest& request,
                       bool include_prompts) {
  RequestRecord record;
  record.time = std::chrono::system_clock::now();
  record.request_id = request.chat.request_id;
  record.tenant = request.tenant;
  record.key_name = request.key_name;
  record.stream = request.stream;
  record.edge = request.edge;
  record.requested_model = request.requested_model;
  record.metadata = request.metadata;
  record.max_tokens = request.chat.max_tokens;
  if (include_prompts) record.messages = request.chat.messages;
  if (decision == nullptr) return record;
  record.policy_version = decision->policy_version;
  record.rule = decision->rule;
  record.level = decision->level;
  record.finding_types.reserve(decision->findings.size());
  for (const policies::Finding& finding : decision->findings) {
    record.finding_types.emplace_back(finding.type);
  }
  record.target = decision->target;
  record.served_by = decision->target;
  record.denied = decision->denied;
  if (!decision->denied) {
    record.locality = decision->locality == policies::Locality::kLocal ? "local" : "remote";
  }
  record.estimated_prompt_tokens = decision->cost.prompt_tokens;
  record.estimated_usd = decision->cost.estimated_usd;
  record.difficulty_score = decision->difficulty.score;
  record.difficulty_tier = std::string(policies::TierName(decision->difficulty.tier));
  return record;
}

// Names the target in the completion of a request sent to that one target only.
class ServedBySink : public backends::ChatSink {
 public:
  ServedBySink(std::shared_ptr<backends::ChatSink> inner, std::string target)
      : inner_(std::move(inner)), target_(std::move(target)) {}
  void OnDelta(std::string_view text) override { inner_->OnDelta(text); }
  void BeginBurst() override { inner_->BeginBurst(); }
  void EndBurst() override { inner_->EndBurst(); }
  void OnDone(const absl::Status& status, const backends::Completion& completion) override {
    backends::Completion named = completion;
    named.served_by = target_;
    inner_->OnDone(status, named);
  }

 private:
  const std::shared_ptr<backends::ChatSink> inner_;
  const std::string target_;
};

// Refuses at once, through the sink like every other failure.
class FailedCall : public backends::Call {
 public:
  void Cancel() override {}
};

// Failures worth another target: the target is down, overloaded or too slow. A request the
// target refused as invalid would fail everywhere.
bool ShouldFallBack(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded ||
         status.code() == absl::StatusCode::kResourceExhausted;
}

// Runs one request over the decision's ordered target list: the next target is tried when one
// fails before its first delta reached the client; after that a failure is final. Every attempt
// is re-checked against the policy's clearance. The outer SinkGuard gives the Call contract for
// the client's sink whatever the attempts do.
class FallbackRun : public std::enable_shared_from_this<FallbackRun> {
 public:
  FallbackRun(std::weak_ptr<const Runtime> runtime, std::shared_ptr<const Sender> sender,
              std::vector<std::string> targets, std::shared_ptr<backends::ChatSink> sink,
              GatewayMetrics& metrics, std::function<void(const std::string&)> on_attempt)
      : runtime_(std::move(runtime)),
        sender_(std::move(sender)),
        targets_(std::move(targets)),
        outer_(std::make_shared<backends::SinkGuard>(std::move(sink))),
        metrics_(metrics),
        on_attempt_(std::move(on_attempt)) {}

  // Starts the first usable target at or after `index`; reports `last_error` when none is left.
  void StartFrom(size_t index, absl::Status last_error);
  void Cancel();

 private:
  class AttemptSink : public backends::ChatSink {
   public:
    AttemptSink(std::shared_ptr<FallbackRun> run, size_t index)
        : run_(std::move(run)), index_(index) {}
    void OnDelta(std::string_view text) override {
      started_ = true;
      run_->outer_->Delta(text);
    }
    void BeginBurst() override { run_->outer_->BeginBurst(); }
    void EndBurst() override { run_->outer_->EndBurst(); }
    void OnDone(const absl::Status& status, const backends::Completion& completion) override {
      run_->retries_.fetch_add(completion.retries);
      if (!status.ok() && !started_ && ShouldFallBack(status) &&
          index_ + 1 < run_->targets_.size()) {
        run_->StartFrom(index_ + 1, status);
        return;
      }
      run_->outer_->Done(status, run_->Explained(completion, index_));
    }

   private:
    std::shared_ptr<FallbackRun> run_;
    const size_t index_;
    bool started_ = false;
  };

  // The completion as the client sees it: which target answered (or failed last), after how many
  // retries over all attempts and how many targets of the route passed over.
  backends::Completion Explained(backends::Completion completion, size_t index) const {
    completion.served_by = targets_[index];
    completion.retries = retries_.load();
    completion.fallbacks = static_cast<int32_t>(index);
    return completion;
  }

  // Weak: an attempt's sink is released on a backend thread, which must never hold the last
  // reference to the backends (a backend cannot join its own thread). The request's edge keeps
  // the runtime alive while the request runs.
  const std::weak_ptr<const Runtime> runtime_;
  const std::shared_ptr<const Sender> sender_;  // the request, redacted where the policy says
  const std::vector<std::string> targets_;
  const std::shared_ptr<backends::SinkGuard> outer_;
  GatewayMetrics& metrics_;
  // Retries reported by the attempts so far.
  std::atomic<int32_t> retries_{0};
  // The last target started, for the explanation of a request that no target could serve.
  std::atomic<int64_t> last_started_{-1};
  // Told the target of each attempt before it starts (attempts never overlap).
  const std::function<void(const std::string&)> on_attempt_;
  absl::Mutex mu_;
  std::unique_ptr<backends::Call> current_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

void FallbackRun::StartFrom(size_t index, absl::Status last_error) {
  for (; index < targets_.size(); ++index) {
    const std::string& name = targets_[index];
    // The backend is kept, not the runtime. A fallback runs on the failed attempt's backend
    // thread, and the attempt started here may finish, and the edge let go of the runtime, before
    // Start returns: the runtime's last reference, dropped here, would destroy the backend whose
    // thread this is, which cannot join itself. While no attempt runs, the edge holds the
    // runtime, so releasing it here never destroys it.
    std::shared_ptr<backends::Backend> backend;
    if (const std::shared_ptr<const Runtime> runtime = runtime_.lock(); runtime != nullptr) {
      if (auto it = runtime->backends.find(name); it != runtime->backends.end()) {
        backend = it->second;
      }
    } else {
      break;
    }
    if (backend == nullptr || !backend->Available() || !sender_->MayReceive(name)) continue;
    if (index > 0) metrics_.ObserveFallback(targets_[0], name);
    last_started_.store(static_cast<int64_t>(index));
    on_attempt_(name);
    std::unique_ptr<backends::Call> call = sender_->Start(
        *backend, name, std::make_shared<AttemptSink>(shared_from_this(), index));
    absl::MutexLock lock(&mu_);
    if (cancelled_) {
      call->Cancel();
    } else {
      current_ = std::move(call);
    }
    return;
  }
  const int64_t last = last_started_.load();
  outer_->Done(last_error, last >= 0 ? Explained({}, static_cast<size_t>(last))
                                     : backends::Completion{});
}

void FallbackRun::Cancel() {
  outer_->Cancel();
  std::unique_ptr<backends::Call> call;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    call = std::move(current_);
  }
  if (call) call->Cancel();
}

class FallbackCall : public backends::Call {
 public:
  explicit FallbackCall(std::shared_ptr<FallbackRun> run) : run_(std::move(run)) {}
  void Cancel() override { run_->Cancel(); }

 private:
  std::shared_ptr<FallbackRun> run_;
};

}  // namespace

policies::RequestFeatures FeaturesOf(const InboundRequest& request) {
  policies::RequestFeatures features;
  features.texts.reserve(request.chat.messages.size());
  for (const backends::Message& message : request.chat.messages) {
    features.texts.push_back(message.content);
  }
  features.requested_model = request.requested_model;
  features.metadata = &request.metadata;
  features.max_tokens = request.chat.max_tokens;
  return features;
}

void ApplyPrincipal(const Principal& principal, InboundRequest& request) {
  request.tenant = principal.tenant;
  request.key_name = principal.key_name;
  if (!principal.tenant.empty()) request.metadata["tenant"] = principal.tenant;
}

double Pricing::Cost(std::string_view target, const backends::Usage& usage) const {
  auto price = prices.find(target);
  if (price == prices.end()) return 0;
  // Counts are checked where they enter; a negative one here still must not price a refund.
  const auto count = [](int64_t tokens) {
    return static_cast<double>(std::max<int64_t>(0, tokens));
  };
  return (count(usage.prompt_tokens) * price->second.input_per_million +
          count(usage.completion_tokens) * price->second.output_per_million) /
         1e6;
}

double Pricing::Savings(const backends::Usage& usage, double cost_usd) const {
  if (reference_target.empty()) return 0;
  return Cost(reference_target, usage) - cost_usd;
}

namespace {

std::shared_ptr<const Pricing> PricingOf(const Config& config) {
  auto pricing = std::make_shared<Pricing>();
  for (const TargetConfig& target : config.targets) pricing->prices[target.name] = target.price;
  pricing->reference_target = config.metering.reference_target;
  return pricing;
}

// The budget scopes a request is charged to: its tenant and its key, when authenticated.
std::vector<BudgetScope> ScopesOf(const Config& config, const InboundRequest& request) {
  std::vector<BudgetScope> scopes;
  if (request.tenant.empty()) return scopes;
  const TenantConfig* tenant = config.auth.FindTenant(request.tenant);
  scopes.push_back({absl::StrCat("tenant:", request.tenant),
                    absl::StrCat("tenant '", request.tenant, "'"),
                    tenant != nullptr ? tenant->limits : Limits{}});
  if (const ApiKey* key = config.auth.FindKey(request.key_name)) {
    scopes.push_back({absl::StrCat("key:", key->name),
                      absl::StrCat("key '", key->name, "' of tenant '", key->tenant, "'"),
                      key->limits});
  }
  return scopes;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(Config config, BackendFactory factory) {
  auto runtime = std::make_shared<Runtime>();
  for (const TargetConfig& target : config.targets) {
    absl::StatusOr<std::shared_ptr<backends::Backend>> backend = factory(target, config);
    if (!backend.ok()) {
      return absl::Status(backend.status().code(),
                          absl::StrCat("target '", target.name, "': ", backend.status().message()));
    }
    runtime->backends.emplace(target.name, *std::move(backend));
  }
  runtime->config = std::move(config);
  runtime->pricing = PricingOf(runtime->config);
  std::unique_ptr<Gateway> gateway(new Gateway());
  gateway->ledger_ = Ledger::Create();
  if (!runtime->config.metering.state_file.empty()) {
    absl::StatusOr<std::unique_ptr<LedgerFile>> file =
        LedgerFile::Open(runtime->config.metering.state_file, gateway->ledger_);
    if (!file.ok()) return file.status();
    gateway->ledger_file_ = *std::move(file);
  }
  gateway->metrics_ = std::make_unique<GatewayMetrics>(runtime->config);
  gateway->metrics_->SetBudgets(runtime->config, gateway->ledger_);
  gateway->engine_metrics_ =
      std::make_unique<EngineMetrics>(gateway->metrics_->registry(), runtime->backends);
  gateway->metrics_->AddBreakerStates(runtime->backends);
  if (const DecisionLogConfig& log = runtime->config.decision_log; !log.path.empty()) {
    absl::StatusOr<std::unique_ptr<DecisionLog>> opened = DecisionLog::Open(
        log.path, log.include_prompts, gateway->metrics_->decision_log_counters());
    if (!opened.ok()) return opened.status();
    gateway->decision_log_ = *std::move(opened);
  }
  gateway->metrics_->SetUpstreamStats(runtime->backends);
  gateway->runtime_ = std::move(runtime);
  gateway->factory_ = std::move(factory);
  std::random_device random;
  gateway->id_prefix_ = (static_cast<uint64_t>(random()) << 32) ^ random();
  return gateway;
}

std::shared_ptr<const Runtime> Gateway::runtime() const {
  absl::MutexLock lock(&mu_);
  return runtime_;
}

std::string Gateway::NewRequestId() {
  return absl::StrFormat("chatcmpl-%016x%08x", id_prefix_, next_id_.fetch_add(1) & 0xffffffffu);
}

absl::Status Gateway::Route(const InboundRequest& request, Routed& routed) const {
  routed.runtime = runtime();
  const Config& config = routed.runtime->config;
  if (request.requested_model != "auto" && config.FindTarget(request.requested_model) == nullptr) {
    return absl::NotFoundError(absl::StrCat("model '", request.requested_model,
                                            "' does not exist; GET /v1/models lists the targets"));
  }
  policies::RequestFeatures features = FeaturesOf(request);
  const BackendTokenCounter counter(*routed.runtime, request.chat.messages);
  features.token_counter = &counter;
  routed.decision = config.policy->Classify(features);
  if (routed.decision.denied) {
    return absl::PermissionDeniedError(absl::StrCat("denied by policy rule '",
                                                    routed.decision.rule, "': ",
                                                    routed.decision.reason));
  }
  return absl::OkStatus();
}

absl::Status Gateway::Reload(Config config) {
  absl::MutexLock reload_lock(&reload_mu_);
  const std::shared_ptr<const Runtime> old = runtime();
  if (config.http.port != old->config.http.port || config.http.host != old->config.http.host ||
      config.grpc.port != old->config.grpc.port || config.grpc.host != old->config.grpc.host ||
      config.busy_poll_microseconds != old->config.busy_poll_microseconds ||
      config.max_body_bytes != old->config.max_body_bytes ||
      config.write_timeout_seconds != old->config.write_timeout_seconds ||
      config.max_stream_buffer_bytes != old->config.max_stream_buffer_bytes ||
      config.decision_log != old->config.decision_log) {
    Log(LogLevel::kWarning,
        "reload: listener, limit and decision_log changes take effect at the next restart");
  }
  auto next = std::make_shared<Runtime>();
  for (const TargetConfig& target : config.targets) {
    const TargetConfig* before = old->config.FindTarget(target.name);
    auto kept = old->backends.find(target.name);
    const bool unchanged = before != nullptr && kept != old->backends.end() &&
                           before->kind == target.kind && before->local == target.local &&
                           before->remote == target.remote &&
                           old->config.model_dirs == config.model_dirs;
    if (unchanged) {
      next->backends.emplace(target.name, kept->second);
      continue;
    }
    absl::StatusOr<std::shared_ptr<backends::Backend>> backend = factory_(target, config);
    if (!backend.ok()) {
      return absl::Status(backend.status().code(), absl::StrCat("target '", target.name, "': ",
                                                                backend.status().message()));
    }
    next->backends.emplace(target.name, *std::move(backend));
  }
  const std::string old_version = old->config.version;
  if (config.metering.state_file != old->config.metering.state_file) {
    Log(LogLevel::kWarning, "reload: a new metering.state_file takes effect at the next restart");
  }
  next->config = std::move(config);
  next->pricing = PricingOf(next->config);
  metrics_->SetPolicyVersion(old_version, next->config.version);
  engine_metrics_->Track(next->backends);
  metrics_->SetUpstreamStats(next->backends);
  metrics_->SetBudgets(next->config, ledger_);
  {
    absl::MutexLock lock(&mu_);
    runtime_ = std::move(next);
  }
  return absl::OkStatus();
}

absl::StatusOr<Principal> Gateway::Authenticate(std::optional<std::string_view> presented_key,
                                                std::string_view edge) {
  absl::StatusOr<Principal> principal =
      gateway::Authenticate(runtime()->config.auth, presented_key);
  if (!principal.ok()) RecordRejected(principal.status(), nullptr, nullptr, edge);
  return principal;
}

absl::Status Gateway::Admit(const InboundRequest& request, Routed& routed) {
  absl::Status status = Route(request, routed);
  const bool classified = status.ok() || status.code() == absl::StatusCode::kPermissionDenied;
  if (classified) {
    metrics_->ObserveDecision(routed.decision.level,
                              routed.decision.denied ? "denied" : routed.locality());
  }
  if (status.ok()) status = AdmitBudget(request, routed);
  if (!status.ok()) RecordRejected(status, classified ? &routed.decision : nullptr, &request);
  return status;
}

absl::Status Gateway::AdmitBudget(const InboundRequest& request, Routed& routed) {
  const Config& config = routed.runtime->config;
  std::vector<BudgetScope> scopes = ScopesOf(config, request);
  if (scopes.empty()) return absl::OkStatus();
  policies::Decision& decision = routed.decision;
  const int64_t tokens = decision.cost.prompt_tokens + decision.cost.completion_tokens;
  Admission admission = ledger_->Admit(scopes, decision.cost.estimated_usd, tokens);
  if (admission.verdict == Admission::Verdict::kAdmitted) {
    routed.reservation = std::move(admission.reservation);
    return absl::OkStatus();
  }
  if (admission.verdict == Admission::Verdict::kRateLimited) {
    return WithRetryAfter(absl::ResourceExhaustedError(admission.message),
                          admission.retry_after_seconds);
  }
  const bool downgrade = admission.on_exhausted == Limits::OnExhausted::kDowngrade;
  // A spent budget set to downgrade: the first local target this request is cleared for.
  const TargetConfig* local = nullptr;
  if (downgrade) {
    for (const TargetConfig& target : config.targets) {
      if (target.kind == TargetKind::kLocal && routed.runtime->backends.contains(target.name) &&
          config.policy->MayReceive(target.name, decision.level_rank)) {
        local = &target;
        break;
      }
    }
  }
  metrics_->ObserveBudgetExhausted(request.tenant, local != nullptr ? "downgrade" : "reject");
  if (local == nullptr) {
    return absl::ResourceExhaustedError(
        downgrade ? absl::StrCat(admission.message, "; no local target is cleared for this request")
                  : admission.message);
  }
  if (local->name != decision.target) {
    std::erase_if(decision.rejected,
                  [&](const policies::Rejection& r) { return r.target == local->name; });
    decision.rejected.push_back({decision.target, absl::StrCat("budget: ", admission.message)});
    decision.target = local->name;
    decision.targets = {local->name};
    decision.locality = policies::Locality::kLocal;
    decision.cost.estimated_usd = 0;
    for (const policies::TargetCost& cost : decision.cost.targets) {
      if (cost.target == local->name) decision.cost.estimated_usd = cost.estimated_usd;
    }
  }
  decision.reason = absl::StrCat("downgraded to '", local->name, "': ", admission.message);
  routed.budget_note = absl::StrCat("downgraded; ", admission.message);
  admission = ledger_->Admit(std::move(scopes), decision.cost.estimated_usd, tokens,
                             /*waive_usd=*/true);
  if (admission.verdict != Admission::Verdict::kAdmitted) {
    return WithRetryAfter(absl::ResourceExhaustedError(admission.message),
                          admission.retry_after_seconds);
  }
  routed.reservation = std::move(admission.reservation);
  return absl::OkStatus();
}

std::unique_ptr<backends::Call> Gateway::Dispatch(const Routed& routed,
                                                  const InboundRequest& request,
                                                  std::shared_ptr<backends::ChatSink> sink) {
  auto metered = std::make_shared<MeteredSink>(
      std::move(sink), *this, in_flight_,
      RecordOf(&routed.decision, request, decision_log_ && decision_log_->include_prompts()),
      routed.runtime->pricing, routed.reservation, routed.decision.cost.prompt_tokens,
      request.received);
  const Runtime& runtime = *routed.runtime;
  const TargetConfig* target = runtime.config.FindTarget(routed.decision.target);
  auto backend = runtime.backends.find(routed.decision.target);
  // Re-checked at send time, whatever the classifier said: the target must be configured, of the
  // locality the decision was made for, and cleared for the level it receives (after redaction
  // when the decision redacts its sends).
  const bool locality_matches =
      target != nullptr &&
      (target->kind == TargetKind::kLocal) ==
          (routed.decision.locality == policies::Locality::kLocal);
  backends::ChatRequest chat = request.chat;
  chat.stream = request.stream;
  auto sender =
      std::make_shared<const Sender>(runtime.config.policy, routed.decision, std::move(chat));
  const bool cleared = sender->MayReceive(routed.decision.target);
  if (target == nullptr || backend == runtime.backends.end() || !locality_matches || !cleared) {
    Log(LogLevel::kError, "refusing dispatch to target '", routed.decision.target,
        "': not a configured target of the expected locality cleared for level '",
        routed.decision.level, "'");
    metered->OnDone(absl::PermissionDeniedError(absl::StrCat(
                        "refused at dispatch: target '", routed.decision.target,
                        "' may not receive this request")),
                    {});
    return std::make_unique<FailedCall>();
  }
  std::vector<std::string> targets = routed.decision.targets;
  if (targets.empty() || targets[0] != routed.decision.target) {
    targets.insert(targets.begin(), routed.decision.target);
  }
  if (targets.size() == 1) {
    return sender->Start(
        *backend->second, routed.decision.target,
        std::make_shared<ServedBySink>(std::move(metered), routed.decision.target));
  }
  auto run = std::make_shared<FallbackRun>(
      routed.runtime, std::move(sender), std::move(targets), metered, *metrics_,
      [metered](const std::string& target) { metered->SetServedBy(target); });
  run->StartFrom(0, absl::UnavailableError("no target of the route is available"));
  return std::make_unique<FallbackCall>(std::move(run));
}

void Gateway::RecordRejected(const absl::Status& status, const policies::Decision* decision,
                             const InboundRequest* request, std::string_view edge) {
  const bool include_prompts = decision_log_ && decision_log_->include_prompts();
  RequestRecord record =
      request != nullptr ? RecordOf(decision, *request, include_prompts) : RequestRecord{};
  if (request == nullptr) {
    record.time = std::chrono::system_clock::now();
    record.edge = std::string(edge);
  }
  if (record.request_id.empty()) record.request_id = NewRequestId();
  record.rejected = true;
  record.denied = true;
  record.locality.clear();
  record.served_by.clear();
  record.outcome = std::string(MapStatus(status.code()).outcome);
  Finished(record);
}

void Gateway::Finished(const RequestRecord& record) {
  if (record.rejected) {
    metrics_->ObserveRejected(record.rule, record.outcome);
  } else {
    metrics_->ObserveRequest(record);
  }
  if (decision_log_) decision_log_->Append(record);
}

}  // namespace switchyard::gateway
