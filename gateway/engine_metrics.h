// Per-model metrics of the local engines: queue, slots, tokens and weights read from
// EngineStats at scrape time, and time-to-first-token and inter-token histograms fed by an
// EngineObserver on each engine thread. Every series carries the label {target}.
#ifndef SWITCHYARD_GATEWAY_ENGINE_METRICS_H_
#define SWITCHYARD_GATEWAY_ENGINE_METRICS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "gateway/metrics.h"

namespace switchyard::gateway {

class EngineTimingObserver;

class EngineMetrics {
 public:
  using Backends = std::map<std::string, std::shared_ptr<backends::Backend>, std::less<>>;

  // Registers the families on `registry` and tracks `backends`. The registry must outlive this.
  EngineMetrics(MetricsRegistry& registry, const Backends& backends);
  // Detaches the observers (an engine may outlive the registry) and removes the callbacks.
  ~EngineMetrics();

  EngineMetrics(const EngineMetrics&) = delete;
  EngineMetrics& operator=(const EngineMetrics&) = delete;

  // Exports one set of series per local backend in `backends` (a ManagedLocalBackend, found by
  // dynamic_cast; other backends are skipped) and drops the series of targets no longer in it.
  // Called again after every reload: a target added or changed by the reload is exported from
  // its new engine on. Not thread-safe; the gateway calls it under its reload lock.
  void Track(const Backends& backends);

 private:
  struct Tracked {
    const backends::Backend* backend;
    std::shared_ptr<EngineTimingObserver> observer;
  };
  void Untrack(const std::string& target, Tracked& tracked);

  Family<Histogram>* ttft_ = nullptr;
  Family<Histogram>* inter_token_ = nullptr;
  std::vector<CallbackFamily*> families_;  // one per EngineStats field, as kStatsMetrics
  CallbackFamily* loaded_ = nullptr;
  std::map<std::string, Tracked, std::less<>> tracked_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_ENGINE_METRICS_H_
