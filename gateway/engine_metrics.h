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
  // Registers the families on `registry` and one set of series per local backend in `backends`
  // (a ManagedLocalBackend, found by dynamic_cast; other backends are skipped). The registry
  // must outlive this object.
  EngineMetrics(MetricsRegistry& registry,
                const std::map<std::string, std::shared_ptr<backends::Backend>, std::less<>>&
                    backends);
  // Detaches the observers (an engine may outlive the registry) and removes the callbacks.
  ~EngineMetrics();

  EngineMetrics(const EngineMetrics&) = delete;
  EngineMetrics& operator=(const EngineMetrics&) = delete;

 private:
  std::vector<CallbackFamily*> families_;  // one per EngineStats field, as kStatsMetrics
  CallbackFamily* loaded_ = nullptr;
  std::vector<std::string> targets_;
  std::vector<std::shared_ptr<EngineTimingObserver>> observers_;
};

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_ENGINE_METRICS_H_
