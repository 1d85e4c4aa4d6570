#include "gateway/engine_metrics.h"

#include <optional>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "backends/local/lazy_backend.h"

namespace switchyard::gateway {

// Feeds one target's histograms from its engine thread. Detach() makes it inert, so an engine
// that still holds it after the registry is gone observes into nothing.
class EngineTimingObserver : public backends::EngineObserver {
 public:
  EngineTimingObserver(Histogram& ttft, Histogram& inter_token)
      : ttft_(&ttft), inter_token_(&inter_token) {}

  void OnFirstToken(double seconds) override {
    absl::MutexLock lock(&mu_);
    if (ttft_ != nullptr) ttft_->Observe(seconds);
  }
  void OnNextToken(double seconds) override {
    absl::MutexLock lock(&mu_);
    if (inter_token_ != nullptr) inter_token_->Observe(seconds);
  }
  void Detach() {
    absl::MutexLock lock(&mu_);
    ttft_ = nullptr;
    inter_token_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  Histogram* ttft_ ABSL_GUARDED_BY(mu_);
  Histogram* inter_token_ ABSL_GUARDED_BY(mu_);
};

namespace {

using StatsField = double (*)(const backends::EngineStats&);

struct StatsMetric {
  const char* name;
  const char* help;
  bool counter;
  StatsField field;
};

constexpr StatsMetric kStatsMetrics[] = {
    {"switchyard_engine_queue_depth", "Requests waiting for a free slot of the local engine.",
     false, [](const backends::EngineStats& s) { return static_cast<double>(s.queue_depth); }},
    {"switchyard_engine_slots_active", "Slots of the local engine reading a prompt or generating.",
     false, [](const backends::EngineStats& s) { return static_cast<double>(s.slots_active); }},
    {"switchyard_engine_slots", "Slots of the local engine (requests decoded together).",
     false, [](const backends::EngineStats& s) { return static_cast<double>(s.slots_total); }},
    {"switchyard_engine_tokens_prompt_total",
     "Prompt tokens admitted by the local engine, KV-cache reuse included.", true,
     [](const backends::EngineStats& s) { return static_cast<double>(s.tokens_prompt_total); }},
    {"switchyard_engine_tokens_completion_total", "Tokens sampled by the local engine.", true,
     [](const backends::EngineStats& s) {
       return static_cast<double>(s.tokens_completion_total);
     }},
    {"switchyard_engine_model_bytes", "Memory held by the loaded model's weights.", false,
     [](const backends::EngineStats& s) { return static_cast<double>(s.model_size_bytes); }},
};

}  // namespace

EngineMetrics::EngineMetrics(MetricsRegistry& registry, const Backends& backends) {
  ttft_ = &registry.AddHistogram(
      "switchyard_engine_time_to_first_token_seconds",
      "Time from queueing a request in the local engine to its first completion token.",
      {"target"}, ExponentialBuckets(0.005, 2, 14));
  inter_token_ = &registry.AddHistogram(
      "switchyard_engine_inter_token_seconds",
      "Time between two completion tokens of one request in the local engine.", {"target"},
      ExponentialBuckets(0.0005, 2, 14));
  loaded_ = &registry.AddCallbackGauge(
      "switchyard_engine_loaded", "1 while the target's model is loaded, 0 otherwise.",
      {"target"});
  for (const StatsMetric& metric : kStatsMetrics) {
    families_.push_back(metric.counter
                            ? &registry.AddCallbackCounter(metric.name, metric.help, {"target"})
                            : &registry.AddCallbackGauge(metric.name, metric.help, {"target"}));
  }
  Track(backends);
}

void EngineMetrics::Track(const Backends& backends) {
  for (auto it = tracked_.begin(); it != tracked_.end();) {
    auto now = backends.find(it->first);
    if (now != backends.end() && now->second.get() == it->second.backend) {
      ++it;
      continue;
    }
    Untrack(it->first, it->second);
    it = tracked_.erase(it);
  }
  for (const auto& [name, backend] : backends) {
    auto* local = dynamic_cast<backends::ManagedLocalBackend*>(backend.get());
    if (local == nullptr || tracked_.contains(name)) continue;
    const std::string_view labels[] = {name};
    // Weak: the registry must not keep an engine (and its thread) alive.
    std::weak_ptr<backends::ManagedLocalBackend> weak(
        std::shared_ptr<backends::ManagedLocalBackend>(backend, local));
    for (size_t i = 0; i < families_.size(); ++i) {
      const StatsField field = kStatsMetrics[i].field;
      families_[i]->Set(labels, [weak, field] {
        std::shared_ptr<backends::ManagedLocalBackend> engine = weak.lock();
        return engine == nullptr ? 0.0 : field(engine->Stats());
      });
    }
    loaded_->Set(labels, [weak] {
      std::shared_ptr<backends::ManagedLocalBackend> engine = weak.lock();
      return engine != nullptr && engine->status().state == backends::ModelState::kLoaded ? 1.0
                                                                                         : 0.0;
    });
    // The histograms keep their series across a reload: a changed engine observes into the
    // same {target} series as the one it replaces.
    auto observer = std::make_shared<EngineTimingObserver>(ttft_->WithLabels(labels),
                                                           inter_token_->WithLabels(labels));
    local->SetObserver(observer);
    tracked_.emplace(name, Tracked{backend.get(), std::move(observer)});
  }
}

void EngineMetrics::Untrack(const std::string& target, Tracked& tracked) {
  tracked.observer->Detach();
  const std::string_view labels[] = {target};
  for (CallbackFamily* family : families_) family->Remove(labels);
  loaded_->Remove(labels);
}

EngineMetrics::~EngineMetrics() {
  for (auto& [target, tracked] : tracked_) Untrack(target, tracked);
}

}  // namespace switchyard::gateway
