#include "gateway/gateway.h"

#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gateway/log.h"
#include "gateway/status_map.h"

namespace switchyard::gateway {
namespace {

// Wraps the edge's sink: counts the request when it ends and keeps the in-flight gauge honest.
class MeteredSink : public backends::ChatSink {
 public:
  MeteredSink(std::shared_ptr<backends::ChatSink> inner, GatewayMetrics& metrics,
              std::atomic<int64_t>& in_flight, const Routed& routed)
      : inner_(std::move(inner)),
        metrics_(metrics),
        in_flight_(in_flight),
        target_(routed.decision.target),
        rule_(routed.decision.rule),
        locality_(routed.locality()),
        start_(std::chrono::steady_clock::now()) {
    in_flight_.fetch_add(1);
  }

  ~MeteredSink() override {
    // A request cancelled by its client never reaches OnDone; it still ends here.
    if (!done_) Finish("cancelled", backends::Usage{});
  }

  void OnDelta(std::string_view text) override { inner_->OnDelta(text); }

  void OnDone(const absl::Status& status, const backends::Completion& completion) override {
    Finish(status.ok() ? "ok" : MapStatus(status.code()).outcome, completion.usage);
    inner_->OnDone(status, completion);
  }

 private:
  void Finish(std::string_view outcome, const backends::Usage& usage) {
    done_ = true;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    metrics_.ObserveRequest(target_, rule_, locality_, outcome, seconds, usage);
    in_flight_.fetch_sub(1);
  }

  std::shared_ptr<backends::ChatSink> inner_;
  GatewayMetrics& metrics_;
  std::atomic<int64_t>& in_flight_;
  std::string target_;
  std::string rule_;
  std::string locality_;
  std::chrono::steady_clock::time_point start_;
  bool done_ = false;
};

// Refuses at once, through the sink like every other failure.
class FailedCall : public backends::Call {
 public:
  void Cancel() override {}
};

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
  std::unique_ptr<Gateway> gateway(new Gateway());
  gateway->metrics_ = std::make_unique<GatewayMetrics>(runtime->config);
  gateway->engine_metrics_ =
      std::make_unique<EngineMetrics>(gateway->metrics_->registry(), runtime->backends);
  gateway->runtime_ = std::move(runtime);
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
  policies::RequestFeatures features;
  features.texts.reserve(request.chat.messages.size());
  for (const backends::Message& message : request.chat.messages) {
    features.texts.push_back(message.content);
  }
  features.requested_model = request.requested_model;
  features.metadata = &request.metadata;
  routed.decision = config.policy->Classify(features);
  if (routed.decision.denied) {
    return absl::PermissionDeniedError(absl::StrCat("denied by policy rule '",
                                                    routed.decision.rule, "': ",
                                                    routed.decision.reason));
  }
  return absl::OkStatus();
}

std::unique_ptr<backends::Call> Gateway::Dispatch(const Routed& routed,
                                                  const InboundRequest& request,
                                                  std::shared_ptr<backends::ChatSink> sink) {
  auto metered = std::make_shared<MeteredSink>(std::move(sink), *metrics_, in_flight_, routed);
  const Runtime& runtime = *routed.runtime;
  const TargetConfig* target = runtime.config.FindTarget(routed.decision.target);
  auto backend = runtime.backends.find(routed.decision.target);
  // Re-checked at send time: the policy may only ever name a configured target, and the target's
  // locality must be the one the decision was made for.
  const bool locality_matches =
      target != nullptr &&
      (target->kind == TargetKind::kLocal) ==
          (routed.decision.locality == policies::Locality::kLocal);
  if (target == nullptr || backend == runtime.backends.end() || !locality_matches) {
    Log(LogLevel::kError, "refusing dispatch to target '", routed.decision.target,
        "': not a configured target of the expected locality");
    metered->OnDone(absl::InternalError("routing decision names an invalid target"), {});
    return std::make_unique<FailedCall>();
  }
  return backend->second->Start(request.chat, std::move(metered));
}

void Gateway::RecordRejected(const absl::Status& status, const policies::Decision* decision) {
  metrics_->ObserveRejected(decision != nullptr ? decision->rule : "",
                            MapStatus(status.code()).outcome);
}

}  // namespace switchyard::gateway
